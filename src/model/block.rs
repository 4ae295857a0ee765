//! The parts a ResNet is made of: conv+BatchNorm units, residual blocks, stages, stem and head.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::model::config::{BlockKind, ResNetConfig, StridePlacement};
use crate::model::conv::Conv;
use crate::model::nhwc;

/// A convolution followed by its BatchNorm: the unit every ResNet layer is built from, and the
/// unit the ONNX importer fills.
#[derive(Module, Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv,
    /// Its BatchNorm.
    pub bn: BatchNorm,
}

impl ConvBn {
    pub(crate) fn new(
        config: &ResNetConfig,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let conv = Conv::new(channels, kernel, stride, config.conv_bias, device);
        let bn = BatchNormConfig::new(channels[1])
            .with_epsilon(config.batch_norm_epsilon)
            .with_momentum(config.batch_norm_momentum)
            .init(device);
        Self { conv, bn }
    }

    /// `bn(conv(x))` for `[N, C, H, W]`, without activation, through Burn's own `conv2d` and
    /// `BatchNorm`: the plain reference the fast path is tested against.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }

    /// `bn(conv(x))` for channels-last `[N, H, W, C]`: the same numbers as
    /// [`forward`](Self::forward), computed as one matrix product over the batch.
    pub fn forward_nhwc(&self, x: Tensor<4>) -> Tensor<4> {
        nhwc::batch_norm(&self.bn, nhwc::conv(&self.conv, x))
    }

    /// `relu(bn(conv(x)))` for channels-last `[N, H, W, C]`.
    pub fn forward_nhwc_relu(&self, x: Tensor<4>) -> Tensor<4> {
        nhwc::batch_norm_then(&self.bn, nhwc::conv(&self.conv, x), None, true)
    }

    /// `relu(bn(conv(x)) + shortcut)` for channels-last `[N, H, W, C]`: a residual block's last
    /// unit.
    pub fn forward_nhwc_add_relu(&self, x: Tensor<4>, shortcut: Tensor<4>) -> Tensor<4> {
        nhwc::batch_norm_then(&self.bn, nhwc::conv(&self.conv, x), Some(shortcut), true)
    }
}

/// A residual block: two 3x3 convolutions (basic) or 1x1, 3x3, 1x1 (bottleneck), each with its
/// BatchNorm, ReLU between them, and a shortcut added before the last ReLU.
#[derive(Module, Debug)]
pub struct Block {
    /// The block's convolutions in order: 2 for a basic block, 3 for a bottleneck.
    pub convs: Vec<ConvBn>,
    /// The projection shortcut (1x1 conv + BatchNorm) where the shape changes; identity otherwise.
    pub shortcut: Option<ConvBn>,
}

impl Block {
    pub(crate) fn new(
        config: &ResNetConfig,
        in_channels: usize,
        inner: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let kind = config.block_kind();
        let out_channels = inner * kind.expansion();
        let convs = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(config, [in_channels, inner], 3, stride, device),
                ConvBn::new(config, [inner, inner], 3, 1, device),
            ],
            BlockKind::Bottleneck => {
                let (s1, s3) = match config.stride_placement {
                    StridePlacement::FirstConv => (stride, 1),
                    StridePlacement::MiddleConv => (1, stride),
                };
                vec![
                    ConvBn::new(config, [in_channels, inner], 1, s1, device),
                    ConvBn::new(config, [inner, inner], 3, s3, device),
                    ConvBn::new(config, [inner, out_channels], 1, 1, device),
                ]
            }
        };
        let shortcut = (stride != 1 || in_channels != out_channels)
            .then(|| ConvBn::new(config, [in_channels, out_channels], 1, stride, device));
        Self { convs, shortcut }
    }

    /// Applies the block to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        nhwc::to_nchw(self.forward_nhwc(nhwc::to_nhwc(x)))
    }

    /// Applies the block to channels-last `[N, H, W, C]` (the layout the model runs in).
    pub fn forward_nhwc(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.shortcut {
            Some(shortcut) => shortcut.forward_nhwc(x.clone()),
            None => x.clone(),
        };
        let (last, inner) = self.convs.split_last().expect("a block has convolutions");
        let y = inner.iter().fold(x, |y, unit| unit.forward_nhwc_relu(y));
        last.forward_nhwc_add_relu(y, identity)
    }
}

/// A stage: blocks at one resolution, the first of which may downsample.
#[derive(Module, Debug)]
pub struct Stage {
    /// The stage's residual blocks.
    pub blocks: Vec<Block>,
}

impl Stage {
    /// Applies every block in turn to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        nhwc::to_nchw(self.forward_nhwc(nhwc::to_nhwc(x)))
    }

    /// Applies every block in turn to channels-last `[N, H, W, C]`.
    pub fn forward_nhwc(&self, x: Tensor<4>) -> Tensor<4> {
        self.blocks.iter().fold(x, |x, block| block.forward_nhwc(x))
    }
}

/// The stem: 7x7 conv with stride 2, BatchNorm, ReLU, 3x3 max pool with stride 2.
///
/// Keras pads explicitly with zeros before the max pool; after a ReLU that is the same as
/// padding with minus infinity, so one layout serves both frameworks.
#[derive(Module, Debug)]
pub struct Stem {
    /// The 7x7 convolution and its BatchNorm.
    pub conv: ConvBn,
    /// The 3x3 max pool.
    pub pool: MaxPool2d,
}

impl Stem {
    pub(crate) fn new(config: &ResNetConfig, device: &Device) -> Self {
        Self {
            conv: ConvBn::new(config, [3, config.width], 7, 2, device),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
        }
    }

    /// Applies the stem to `[N, 3, H, W]` images through Burn's own `conv2d`, `BatchNorm` and
    /// `max_pool2d`: the plain reference [`forward_nhwc`](Self::forward_nhwc) is tested against.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool.forward(relu(self.conv.forward(x)))
    }

    /// Applies the stem to `[N, 3, H, W]` images, giving channels-last `[N, H', W', C]`: the
    /// convolution as one matrix product over the batch, the pool as the maximum of shifted
    /// views (the same numbers as [`forward`](Self::forward), in the layout the stages take).
    pub fn forward_nhwc(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv.forward_nhwc_relu(nhwc::to_nhwc(x));
        nhwc::max_pool_non_negative(&self.pool, x)
    }
}

/// The classifier head on pooled features: Dropout, then Linear to the classes.
#[derive(Module, Debug)]
pub struct Head {
    /// Dropout (active only while training).
    pub dropout: Dropout,
    /// The final Linear layer.
    pub linear: Linear,
}

impl Head {
    /// A new, randomly initialized head.
    pub fn new(in_features: usize, num_classes: usize, dropout: f64, device: &Device) -> Self {
        Self {
            dropout: DropoutConfig::new(dropout).init(),
            linear: LinearConfig::new(in_features, num_classes).init(device),
        }
    }

    /// Logits `[N, classes]` from pooled features `[N, C]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.linear.forward(self.dropout.forward(features))
    }
}
