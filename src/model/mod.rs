//! The ResNet family: configuration, blocks and the [`ResNet`] module with freezing by stage.

mod block;
mod config;
mod conv;
mod nhwc;
mod resnet;

pub use block::{Block, ConvBn, Head, Stage, Stem};
pub use config::{BlockKind, DEPTHS, FAMILY, Pooling, ResNetConfig, StridePlacement, depth_of};
pub use conv::Conv;
pub use resnet::{BatchNormMode, ParamCounts, ResNet};
pub(crate) use resnet::{check_images, check_stage, pool};
