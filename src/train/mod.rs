//! Training: the two-phase freeze/unfreeze learner, its configuration, history and metrics.

mod adam;
mod checkpoint;
mod config;
mod epoch;
mod features;
mod history;
mod learner;
mod loss;
mod lr_find;
mod metrics;
mod optim;
mod stopping;

pub(crate) use checkpoint::{CheckpointState, Checkpoints};

pub use adam::{FusedAdam, FusedAdamConfig};
pub use config::{OptimizerKind, Schedule, TwoPhaseConfig, Unfreeze};
pub use history::{EpochRecord, History};
pub use learner::{TwoPhase, with_new_head};
pub use loss::{ClassWeights, TrainingLoss};
pub use lr_find::{LrFinderConfig, LrSweep, suggestions};
pub use metrics::{ClassScores, Evaluation, evaluate, evaluate_parts};
