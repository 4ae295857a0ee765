//! # resnet-transfer
//!
//! Photo recognition by transfer learning, in pure Rust on [Burn](https://burn.dev): an
//! ImageNet-trained ResNet learns new classes (CIFAR-10's ten, or your own) in two phases, first
//! a new head on a frozen backbone, then the released backbone at a low learning rate.
//!
//! ```
//! use resnet_transfer::{BatchNormMode, ResNetConfig};
//!
//! let device = resnet_transfer::device::default_device()?;
//! // A narrow ResNet50 (width 8 instead of 64) keeps this example fast.
//! let model = ResNetConfig::resnet50(10).with_width(8).init(&device)?;
//! let logits = model.forward(burn::Tensor::<4>::zeros([1, 3, 32, 32], &device));
//! assert_eq!(logits.dims(), [1, 10]);
//!
//! // Phase 1: only the head learns. Phase 2: stages 3 and 4 learn too, BatchNorm kept frozen.
//! let model = model.freeze_backbone();
//! let model = model.unfreeze_from(3, BatchNormMode::Inference)?;
//! # Ok::<(), resnet_transfer::Error>(())
//! ```

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

#[macro_use]
mod names;

mod cpu;
pub mod data;
pub mod device;
pub mod download;
pub mod error;
pub mod explain;
pub mod files;
pub mod folded;
pub mod infer;
pub mod job;
pub mod model;
mod ops;
pub mod report;
pub mod train;
pub mod weights;

pub use burn::tensor::Device;
pub use device::BackendKind;
pub use error::{Error, Result};
pub use folded::FoldedResNet;
pub use infer::{Classifier, Prediction};
pub use model::{BatchNormMode, ResNet, ResNetConfig};
