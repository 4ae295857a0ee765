//! The [`ResNet`] module and freezing by stage.

use burn::module::{Flag, Module, ModuleMapper, Param};
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::block::{Block, Head, Stage, Stem};
use crate::model::config::{Pooling, ResNetConfig};

/// What BatchNorm layers do while their parameters learn.
///
/// Frozen parts always run BatchNorm in inference mode. For unfrozen parts this is a choice: the
/// Keras fine-tuning guide keeps BatchNorm in inference mode (its statistics frozen) while the
/// convolutions learn, which protects ImageNet statistics from small, shifted batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BatchNormMode {
    /// Normalize with the running statistics and never update them.
    Inference,
    /// Normalize with batch statistics and update the running ones (PyTorch's `train()`).
    Training,
}

named_enum!(BatchNormMode as "batch_norm" { Inference => "inference", Training => "training" });

/// Parameter counts the way the reference frameworks report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// Learnable parameters: what PyTorch's `sum(p.numel() for p in model.parameters())` counts.
    pub learnable: usize,
    /// BatchNorm running means and variances: buffers, not parameters.
    pub batch_norm_statistics: usize,
}

impl ParamCounts {
    /// Learnable parameters plus BatchNorm statistics: what Keras's `count_params()` reports, and
    /// Burn's [`Module::num_params`].
    pub fn total(&self) -> usize {
        self.learnable + self.batch_norm_statistics
    }
}

/// A ResNet: stem, four stages, global pooling and an optional head.
///
/// The stem and the stages are the backbone; the head (Dropout, Linear) is separate and always
/// trainable. Build one with [`ResNetConfig::init`].
#[derive(Module, Debug)]
pub struct ResNet {
    /// 7x7 conv, BatchNorm, ReLU, max pool.
    pub stem: Stem,
    /// Stages 1 to 4 (indices 0 to 3).
    pub stages: Vec<Stage>,
    /// The classifier head; `None` for a features-only model.
    pub head: Option<Head>,
    /// Global pooling before the head.
    #[module(skip)]
    pub pooling: Pooling,
}

impl ResNet {
    pub(crate) fn new(config: &ResNetConfig, device: &Device) -> Self {
        let sizes = config
            .stage_sizes()
            .expect("validated by ResNetConfig::init");
        let expansion = config.block_kind().expansion();
        let mut in_channels = config.width;
        let stages = sizes
            .iter()
            .enumerate()
            .map(|(i, &blocks)| {
                let inner = config.width << i;
                let blocks = (0..blocks)
                    .map(|b| {
                        let stride = if i > 0 && b == 0 { 2 } else { 1 };
                        let block = Block::new(config, in_channels, inner, stride, device);
                        in_channels = inner * expansion;
                        block
                    })
                    .collect();
                Stage { blocks }
            })
            .collect();
        let head = config
            .num_classes
            .map(|classes| Head::new(config.feature_dim(), classes, config.dropout, device));
        Self {
            stem: Stem::new(config, device),
            stages,
            head,
            pooling: config.pooling,
        }
    }

    /// Logits `[N, classes]` for images `[N, 3, H, W]` (the pooled features when there is no
    /// head).
    ///
    /// # Panics
    ///
    /// Like every Burn module, if the input does not have 3 channels; use
    /// [`try_forward`](Self::try_forward) for a typed error instead.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let features = self.features(images);
        match &self.head {
            Some(head) => head.forward(features),
            None => features,
        }
    }

    /// [`forward`](Self::forward), after checking the input's shape.
    pub fn try_forward(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        check_images(&images)?;
        Ok(self.forward(images))
    }

    /// The pooled embedding `[N, C]` (C = 2048 for a ResNet50): the backbone's output, for linear
    /// probes and for caching features while the backbone is frozen.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        pool(self.last_stage(images), self.pooling)
    }

    /// The last stage's activations, channels-last `[N, H', W', C]` for images `[N, 3, H, W]`:
    /// the maps global pooling turns into [`features`](Self::features), and the ones Grad-CAM
    /// ([`crate::explain`]) weighs. `H'` and `W'` are [`last_stage_size`](Self::last_stage_size).
    pub fn last_stage(&self, images: Tensor<4>) -> Tensor<4> {
        // Channels-last from the stem on: every convolution is one product over the batch.
        let x = self.stem.forward_nhwc(images);
        self.stages.iter().fold(x, |x, stage| stage.forward_nhwc(x))
    }

    /// The last stage's height and width for inputs of `[height, width]` pixels, from the
    /// strides and paddings of the stem and of every convolution: 1x1 at 32x32, 2x2 at 64x64,
    /// 7x7 at 224x224 for every ResNet this crate builds (five halvings, rounded up).
    pub fn last_stage_size(&self, [height, width]: [usize; 2]) -> [usize; 2] {
        let out = |n: usize, k: usize, s: usize, before: usize, after: usize| {
            (n + before + after).saturating_sub(k) / s.max(1) + 1
        };
        let conv = |[h, w]: [usize; 2], c: &crate::model::Conv| {
            let [kh, kw] = c.kernel;
            let ([sh, sw], [ph, pw]) = (c.stride, c.padding);
            [out(h, kh, sh, ph, ph), out(w, kw, sw, pw, pw)]
        };
        let size = conv([height, width], &self.stem.conv.conv);
        let pool = &self.stem.pool;
        let [kh, kw] = pool.kernel_size;
        let [sh, sw] = pool.stride;
        let size = match pool.padding {
            burn::nn::PaddingConfig2d::Explicit(top, left, bottom, right) => [
                out(size[0], kh, sh, top, bottom),
                out(size[1], kw, sw, left, right),
            ],
            burn::nn::PaddingConfig2d::Same => [size[0].div_ceil(sh), size[1].div_ceil(sw)],
            burn::nn::PaddingConfig2d::Valid => {
                [out(size[0], kh, sh, 0, 0), out(size[1], kw, sw, 0, 0)]
            }
        };
        let blocks = self.stages.iter().flat_map(|s| &s.blocks);
        blocks.fold(size, |size, block| {
            block.convs.iter().fold(size, |s, unit| conv(s, &unit.conv))
        })
    }

    /// Number of classes of the head, if there is one.
    pub fn num_classes(&self) -> Option<usize> {
        self.head
            .as_ref()
            .map(|h| h.linear.weight.lazy_shape().dims::<2>()[1])
    }

    /// Channels of the pooled features.
    pub fn feature_dim(&self) -> usize {
        let last = self.stages.last().and_then(|s| s.blocks.last());
        last.and_then(|b| b.convs.last())
            .map(|unit| unit.conv.channels()[1])
            .unwrap_or(0)
    }

    /// Replaces the head with a new one for `num_classes` classes (the transfer-learning step:
    /// an ImageNet model gets a CIFAR-10 head).
    pub fn with_new_head(mut self, num_classes: usize, dropout: f64, device: &Device) -> Self {
        self.head = Some(Head::new(self.feature_dim(), num_classes, dropout, device));
        self
    }

    /// Every BatchNorm of the backbone, in order: stem, then each block's convs and shortcut.
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut out = vec![&self.stem.conv.bn];
        for block in self.stages.iter().flat_map(|s| &s.blocks) {
            out.extend(block.convs.iter().map(|u| &u.bn));
            out.extend(block.shortcut.iter().map(|u| &u.bn));
        }
        out
    }

    /// Parameter counts the way torchvision and Keras report them.
    pub fn param_counts(&self) -> ParamCounts {
        let batch_norm_statistics = self
            .batch_norms()
            .iter()
            .map(|bn| 2 * bn.gamma.lazy_shape().num_elements())
            .sum::<usize>();
        ParamCounts {
            learnable: self.num_params() - batch_norm_statistics,
            batch_norm_statistics,
        }
    }

    /// Freezes the backbone (stem and stages 1 to 4): no gradient is computed or applied for its
    /// parameters, and its BatchNorm layers run in inference mode with their statistics kept.
    /// The head stays trainable.
    pub fn freeze_backbone(mut self) -> Self {
        self.stem = self.stem.freeze();
        self.stages = self.stages.into_iter().map(Module::freeze).collect();
        self
    }

    /// Releases the whole backbone; `batch_norm` says what its BatchNorm layers do meanwhile.
    pub fn unfreeze_all(self, batch_norm: BatchNormMode) -> Self {
        self.unfreeze_from(1, batch_norm)
            .expect("stage 1 always exists")
    }

    /// Releases stages `stage..=4` (stage 4 only, 3 and 4, ...; 1 releases the stem too) and
    /// freezes everything before them. `batch_norm` says what BatchNorm does in the released part.
    pub fn unfreeze_from(mut self, stage: usize, batch_norm: BatchNormMode) -> Result<Self> {
        check_stage("stage", stage, self.stages.len())?;
        let release = |part: Stage| set_batch_norm(part.unfreeze(), batch_norm);
        self.stem = if stage == 1 {
            set_batch_norm(self.stem.unfreeze(), batch_norm)
        } else {
            self.stem.freeze()
        };
        self.stages = self
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if i + 1 >= stage {
                    release(s)
                } else {
                    s.freeze()
                }
            })
            .collect();
        Ok(self)
    }
}

/// The one check of a stage number `stage` (from 1) against a network of `count` stages, for
/// the model's `unfreeze_from` and for the recipe's `Unfreeze::FromStage` (checked before
/// training starts), `field` naming the value at fault.
pub(crate) fn check_stage(field: &'static str, stage: usize, count: usize) -> Result<()> {
    if (1..=count).contains(&stage) {
        Ok(())
    } else {
        Err(Error::invalid_config(
            field,
            format!("a stage from 1 to {count}"),
            stage,
        ))
    }
}

pub(crate) fn check_images(images: &Tensor<4>) -> Result<()> {
    let dims = images.dims();
    if dims[1] != 3 || dims[0] == 0 || dims[2] == 0 || dims[3] == 0 {
        return Err(Error::ShapeMismatch {
            tensor: "images".into(),
            expected: vec![dims[0].max(1), 3, dims[2].max(1), dims[3].max(1)],
            found: dims.to_vec(),
        });
    }
    Ok(())
}

/// Global pooling of channels-last `[N, H, W, C]` to `[N, C]`.
pub(crate) fn pool(x: Tensor<4>, pooling: Pooling) -> Tensor<2> {
    let [n, h, w, c] = x.dims();
    let flat = x.reshape([n, h * w, c]);
    let pooled = match pooling {
        Pooling::Average => flat.mean_dim(1),
        Pooling::Max => flat.max_dim(1),
    };
    pooled.reshape([n, c])
}

/// Sets every training flag in a backbone part. The backbone's only flags are BatchNorm's, so
/// this is "BatchNorm in training or inference mode", leaving gradients as they are.
struct TrainingFlags(bool);

impl ModuleMapper for TrainingFlags {
    fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
        flag.with_value(self.0)
    }
}

fn set_batch_norm<M: Module>(part: M, mode: BatchNormMode) -> M {
    part.map(&mut TrainingFlags(mode == BatchNormMode::Training))
}
