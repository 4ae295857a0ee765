//! The ResNet family: configuration, blocks and the [`ResNet`] module with freezing by stage.

mod block;
mod config;
mod conv;
mod fused;
mod nhwc;
mod resnet;
mod train_ops;

pub use block::{Block, ConvBn, Head, Stage, Stem};
pub use config::{BlockKind, DEPTHS, Pooling, ResNetConfig, StridePlacement};
pub use conv::Conv;
pub use fused::FusedResNet;
pub(crate) use fused::{fold_batch_norm, host_values};
pub use resnet::{BatchNormMode, ParamCounts, ResNet};
pub(crate) use resnet::{check_images, check_stage};
