//! [`ResNetConfig`]: the whole ResNet family from one configuration.

use burn::config::Config;
use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::model::ResNet;

/// The ResNet family, as in "Deep Residual Learning for Image Recognition" (Table 1): each
/// depth with its kind of block and its blocks per stage. The one table that building a model
/// ([`ResNetConfig::stage_sizes`]) and recognising one in an ONNX file ([`depth_of`]) read.
pub const FAMILY: [(usize, BlockKind, [usize; 4]); 5] = [
    (18, BlockKind::Basic, [2, 2, 2, 2]),
    (34, BlockKind::Basic, [3, 4, 6, 3]),
    (50, BlockKind::Bottleneck, [3, 4, 6, 3]),
    (101, BlockKind::Bottleneck, [3, 4, 23, 3]),
    (152, BlockKind::Bottleneck, [3, 8, 36, 3]),
];

/// The depths of the ResNet family: [`FAMILY`]'s first column.
pub const DEPTHS: [usize; 5] = {
    let mut depths = [0; 5];
    let mut i = 0;
    while i < FAMILY.len() {
        depths[i] = FAMILY[i].0;
        i += 1;
    }
    depths
};

/// The depth of the ResNet whose blocks are of `kind`, `sizes` per stage, if there is one.
///
/// ```
/// use resnet_transfer::model::{BlockKind, depth_of};
///
/// assert_eq!(depth_of(BlockKind::Bottleneck, &[3, 4, 6, 3]), Some(50));
/// assert_eq!(depth_of(BlockKind::Basic, &[3, 4, 6, 3]), Some(34));
/// assert_eq!(depth_of(BlockKind::Basic, &[1, 1, 1, 1]), None);
/// ```
pub fn depth_of(kind: BlockKind, sizes: &[usize]) -> Option<usize> {
    (FAMILY.iter())
        .find(|(_, k, s)| *k == kind && s.as_slice() == sizes)
        .map(|(depth, ..)| *depth)
}

/// Where a downsampling bottleneck puts its stride of 2.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum StridePlacement {
    /// On the first 1x1 convolution: ResNet v1 as in the paper, Keras, Caffe and the ONNX Model
    /// Zoo's v1 models.
    FirstConv,
    /// On the 3x3 convolution: "ResNet v1.5", as in torchvision. Slightly more accurate.
    MiddleConv,
}

/// How the last feature map becomes one vector per image.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Global average pooling (the ResNet default, Keras `pooling="avg"`).
    Average,
    /// Global max pooling (Keras `pooling="max"`).
    Max,
}

/// The two kinds of residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet18 and 34).
    Basic,
    /// 1x1, 3x3, 1x1 with a fourfold expansion (ResNet50, 101 and 152).
    Bottleneck,
}

impl BlockKind {
    /// How many times wider a block's output is than its inner width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Configuration of a ResNet: depth, stride placement, conv bias, BatchNorm epsilon, width and head.
///
/// Presets read like the field: [`ResNetConfig::resnet50`] is torchvision's layout,
/// [`ResNetConfig::keras_resnet50`] Keras's.
///
/// ```
/// use resnet_transfer::ResNetConfig;
///
/// let device = resnet_transfer::device::default_device()?;
/// let config = ResNetConfig::resnet50(10).with_width(8); // a narrow ResNet50 for a quick test
/// let model = config.init(&device)?;
/// let images = burn::Tensor::<4>::zeros([2, 3, 32, 32], &device);
/// assert_eq!(model.forward(images).dims(), [2, 10]);
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// 18, 34, 50, 101 or 152.
    pub depth: usize,
    /// Where a downsampling bottleneck puts its stride (v1 or v1.5). Basic blocks always put it
    /// on their first 3x3 convolution.
    #[config(default = "StridePlacement::MiddleConv")]
    pub stride_placement: StridePlacement,
    /// Whether convolutions carry a bias (Keras: yes; torchvision: no).
    #[config(default = false)]
    pub conv_bias: bool,
    /// BatchNorm epsilon (torchvision 1e-5, Keras 1.001e-5).
    #[config(default = 1e-5)]
    pub batch_norm_epsilon: f64,
    /// BatchNorm momentum for the running statistics, PyTorch's convention (0.1; Keras's 0.99 is
    /// 0.01 here).
    #[config(default = 0.1)]
    pub batch_norm_momentum: f64,
    /// Channels of the stem and of the first stage's inner width (64 in the real model).
    #[config(default = 64)]
    pub width: usize,
    /// Global pooling before the head.
    #[config(default = "Pooling::Average")]
    pub pooling: Pooling,
    /// Number of classes of the head; `None` builds no head (features only).
    #[config(default = "Some(1000)")]
    pub num_classes: Option<usize>,
    /// Dropout probability before the head's Linear layer (0.5, as in the seed).
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl ResNetConfig {
    /// torchvision-style ResNet18 (basic blocks).
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new(18).with_num_classes(Some(num_classes))
    }

    /// torchvision-style ResNet34 (basic blocks).
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new(34).with_num_classes(Some(num_classes))
    }

    /// torchvision-style ResNet50: v1.5 stride placement, no conv bias, BatchNorm epsilon 1e-5.
    pub fn resnet50(num_classes: usize) -> Self {
        Self::new(50).with_num_classes(Some(num_classes))
    }

    /// torchvision-style ResNet101.
    pub fn resnet101(num_classes: usize) -> Self {
        Self::new(101).with_num_classes(Some(num_classes))
    }

    /// torchvision-style ResNet152.
    pub fn resnet152(num_classes: usize) -> Self {
        Self::new(152).with_num_classes(Some(num_classes))
    }

    /// Keras `applications.ResNet50`: v1 stride placement, conv biases, BatchNorm epsilon 1.001e-5.
    pub fn keras_resnet50(num_classes: usize) -> Self {
        Self::keras(50, num_classes)
    }

    /// Keras `applications.ResNet101`.
    pub fn keras_resnet101(num_classes: usize) -> Self {
        Self::keras(101, num_classes)
    }

    /// Keras `applications.ResNet152`.
    pub fn keras_resnet152(num_classes: usize) -> Self {
        Self::keras(152, num_classes)
    }

    fn keras(depth: usize, num_classes: usize) -> Self {
        Self::new(depth)
            .with_num_classes(Some(num_classes))
            .with_stride_placement(StridePlacement::FirstConv)
            .with_conv_bias(true)
            .with_batch_norm_epsilon(1.001e-5)
            .with_batch_norm_momentum(0.01)
    }

    /// Blocks per stage for this depth.
    pub fn stage_sizes(&self) -> Result<[usize; 4]> {
        (FAMILY.iter())
            .find(|(depth, ..)| *depth == self.depth)
            .map(|(.., sizes)| *sizes)
            .ok_or_else(|| Error::InvalidConfig {
                field: "depth",
                expected: format!("one of {DEPTHS:?}"),
                found: self.depth.to_string(),
            })
    }

    /// Basic blocks for depths 18 and 34, bottlenecks from 50 up.
    pub fn block_kind(&self) -> BlockKind {
        if self.depth < 50 {
            BlockKind::Basic
        } else {
            BlockKind::Bottleneck
        }
    }

    /// Channels of the pooled features: `width * 8 * expansion` (2048 for ResNet50).
    pub fn feature_dim(&self) -> usize {
        self.width * 8 * self.block_kind().expansion()
    }

    /// Checks every field, naming the first one at fault.
    pub fn validate(&self) -> Result<()> {
        self.stage_sizes()?;
        let invalid = |field, expected: &str, found: String| {
            Err(Error::invalid_config(field, expected, found))
        };
        if self.width == 0 {
            return invalid("width", "at least 1", self.width.to_string());
        }
        if self.num_classes == Some(0) {
            return invalid("num_classes", "at least 1, or None", "0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid("dropout", "in [0, 1)", self.dropout.to_string());
        }
        if !(self.batch_norm_epsilon.is_finite() && self.batch_norm_epsilon > 0.0) {
            let found = self.batch_norm_epsilon.to_string();
            return invalid("batch_norm_epsilon", "finite and positive", found);
        }
        if !(0.0..=1.0).contains(&self.batch_norm_momentum) {
            let found = self.batch_norm_momentum.to_string();
            return invalid("batch_norm_momentum", "in [0, 1]", found);
        }
        Ok(())
    }

    /// Builds the model on `device`, after [`validate`](Self::validate).
    ///
    /// Parameters are initialized lazily (Kaiming uniform for convolutions, as Burn does), so
    /// building a full-size model only to load weights into it costs little.
    ///
    /// Building a model changes no process-wide setting; a flex device made other than through
    /// [`crate::device`] trains faster after
    /// [`pack_skinny_products`](crate::device::pack_skinny_products).
    pub fn init(&self, device: &Device) -> Result<ResNet> {
        self.validate()?;
        Ok(ResNet::new(self, device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_their_frameworks() {
        let tv = ResNetConfig::resnet50(1000);
        assert_eq!(tv.stride_placement, StridePlacement::MiddleConv);
        assert!(!tv.conv_bias);
        let keras = ResNetConfig::keras_resnet50(1000);
        assert_eq!(keras.stride_placement, StridePlacement::FirstConv);
        assert!(keras.conv_bias);
        assert_eq!(keras.batch_norm_epsilon, 1.001e-5);
        assert_eq!(ResNetConfig::resnet34(10).block_kind(), BlockKind::Basic);
        assert_eq!(
            ResNetConfig::resnet101(10).block_kind(),
            BlockKind::Bottleneck
        );
        assert_eq!(ResNetConfig::resnet50(10).feature_dim(), 2048);
        assert_eq!(ResNetConfig::resnet18(10).feature_dim(), 512);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (ResNetConfig::new(42), "depth"),
            (ResNetConfig::resnet18(10).with_width(0), "width"),
            (
                ResNetConfig::resnet18(10).with_num_classes(Some(0)),
                "num_classes",
            ),
            (ResNetConfig::resnet18(10).with_dropout(1.0), "dropout"),
            (
                ResNetConfig::resnet18(10).with_batch_norm_epsilon(0.0),
                "batch_norm_epsilon",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = ResNetConfig::keras_resnet50(10).with_num_classes(None);
        let json = serde_json::to_string(&config).unwrap();
        let back: ResNetConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}
