//! [`TwoPhaseConfig`]: everything that decides a two-phase run, saved beside every run.

use burn::config::Config;

use crate::error::{Error, Result};
use crate::model::BatchNormMode;
use crate::train::loss::ClassWeights;

/// What the unfreeze point releases.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Unfreeze {
    /// The whole backbone.
    All,
    /// Stages `k..=4` (4: the last stage only); the stem and earlier stages stay frozen.
    FromStage(usize),
}

/// How the learning rate moves within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The phase's rate throughout.
    Constant,
    /// Cosine decay from the phase's rate to zero over its epochs.
    Cosine,
    /// The phase's rate, multiplied by `plateau_factor` whenever validation loss has not improved
    /// for `plateau_patience` epochs (Keras's `ReduceLROnPlateau`).
    Plateau,
}

named_enum!(Schedule as "schedule" { Constant => "constant", Cosine => "cosine", Plateau => "plateau" });

/// The two-phase recipe: a new head on a frozen backbone, then the released backbone at a low
/// rate. Defaults follow the seed and the Keras fine-tuning guide.
#[derive(Config, Debug, PartialEq)]
pub struct TwoPhaseConfig {
    /// Epochs of phase 1 (head only).
    #[config(default = 5)]
    pub phase1_epochs: usize,
    /// Adam learning rate of phase 1.
    #[config(default = 1e-3)]
    pub phase1_lr: f64,
    /// Epochs of phase 2 (released backbone and head).
    #[config(default = 5)]
    pub phase2_epochs: usize,
    /// Adam learning rate of phase 2: low, so the expert weights are not broken.
    #[config(default = 1e-5)]
    pub phase2_lr: f64,
    /// What the unfreeze point releases.
    #[config(default = "Unfreeze::All")]
    pub unfreeze: Unfreeze,
    /// Images per batch.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Seed of shuffling, augmentation, dropout and the new head's initialization.
    #[config(default = 42)]
    pub seed: u64,
    /// Dropout before the head's Linear layer.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// What BatchNorm does in the released part of the backbone during phase 2: inference mode
    /// (statistics frozen, the Keras guide's advice) or training mode.
    #[config(default = "BatchNormMode::Inference")]
    pub batch_norm: BatchNormMode,
    /// Random crops and flips on training images (turns the phase-1 feature cache off).
    #[config(default = false)]
    pub augment: bool,
    /// Learning-rate schedule within each phase.
    #[config(default = "Schedule::Constant")]
    pub schedule: Schedule,
    /// Linear warm-up at the start of each phase, before its schedule: epoch `k` of the first
    /// `warmup_epochs` trains at `(k + 1) / (warmup_epochs + 1)` of the phase's rate (timm's and
    /// Keras's warm-up, by epoch); the schedule then runs over the phase's other epochs.
    #[config(default = 0)]
    pub warmup_epochs: usize,
    /// Adam's L2 weight decay (0 for none).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Label smoothing α of the training loss, in [0, 1): each label becomes
    /// `(1 − α)·one-hot + α/classes` (Keras's and PyTorch's `label_smoothing`; 0.1 is usual).
    #[config(default = 0.0)]
    pub label_smoothing: f64,
    /// How the classes weigh in the training loss: equally, or balanced for training sets whose
    /// classes differ in size ([`ClassWeights`]).
    #[config(default = "ClassWeights::None")]
    pub class_weights: ClassWeights,
    /// Early stopping: end a phase when validation loss has not improved for this many epochs.
    #[config(default = "None")]
    pub patience: Option<usize>,
    /// With early stopping on, end each phase with the weights of its best validation loss
    /// (Keras's `restore_best_weights`), whether or not it stopped early.
    #[config(default = true)]
    pub restore_best_weights: bool,
    /// What [`Schedule::Plateau`] multiplies the rate by.
    #[config(default = 0.1)]
    pub plateau_factor: f64,
    /// Epochs without a better validation loss before [`Schedule::Plateau`] lowers the rate.
    #[config(default = 2)]
    pub plateau_patience: usize,
    /// Compute the frozen backbone's features once in phase 1 when nothing random touches the
    /// input (no augmentation): the same result, many times faster.
    #[config(default = true)]
    pub feature_cache: bool,
}

impl TwoPhaseConfig {
    /// Checks every field, naming the first one at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, expected: &str, found: String| {
            Err(Error::invalid_config(field, expected, found))
        };
        if self.batch_size == 0 {
            return invalid("batch_size", "at least 1", "0".into());
        }
        for (field, lr) in [("phase1_lr", self.phase1_lr), ("phase2_lr", self.phase2_lr)] {
            if !(lr.is_finite() && lr > 0.0) {
                return invalid(field, "finite and positive", lr.to_string());
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid("dropout", "in [0, 1)", self.dropout.to_string());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            let found = self.label_smoothing.to_string();
            return invalid("label_smoothing", "in [0, 1)", found);
        }
        if let Unfreeze::FromStage(k) = self.unfreeze {
            // Every ResNet of the family has four stages.
            crate::model::check_stage("unfreeze", k, 4)?;
        }
        if self.patience == Some(0) {
            return invalid("patience", "at least 1 epoch", "0".into());
        }
        if !(self.plateau_factor > 0.0 && self.plateau_factor < 1.0) {
            return invalid(
                "plateau_factor",
                "in (0, 1)",
                self.plateau_factor.to_string(),
            );
        }
        if self.plateau_patience == 0 {
            return invalid("plateau_patience", "at least 1 epoch", "0".into());
        }
        if self.phase1_epochs + self.phase2_epochs == 0 {
            return invalid(
                "phase1_epochs",
                "at least one epoch in all",
                "0 and 0".into(),
            );
        }
        Ok(())
    }

    /// [`validate`](Self::validate), and for a run without validation images
    /// (`has_validation` false) the refusal of what watches the validation loss: early stopping
    /// (`patience`) and [`Schedule::Plateau`]. As in Keras, training runs without validation; what
    /// would watch it is refused rather than left to never fire.
    pub fn validate_for(&self, has_validation: bool) -> Result<()> {
        self.validate()?;
        if has_validation {
            return Ok(());
        }
        if let Some(p) = self.patience {
            return Err(Error::NeedsValidation {
                field: "patience",
                found: p.to_string(),
            });
        }
        if self.schedule == Schedule::Plateau {
            return Err(Error::NeedsValidation {
                field: "schedule",
                found: self.schedule.name().into(),
            });
        }
        Ok(())
    }

    /// The learning rate of `epoch` (0-based, counted over both phases) before any
    /// reduce-on-plateau step, which depends on the validation losses and which the learner
    /// applies on top.
    pub fn learning_rate(&self, epoch: usize) -> f64 {
        let (base, start, len) = if epoch < self.phase1_epochs {
            (self.phase1_lr, 0, self.phase1_epochs)
        } else {
            (self.phase2_lr, self.phase1_epochs, self.phase2_epochs)
        };
        let k = epoch - start;
        let warmup = self.warmup_epochs.min(len);
        if k < warmup {
            return base * (k + 1) as f64 / (warmup + 1) as f64;
        }
        match self.schedule {
            Schedule::Constant | Schedule::Plateau => base,
            Schedule::Cosine => {
                let t = (k - warmup) as f64 / (len - warmup).max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two warm-up epochs at a third and two thirds of the rate, then the phase's schedule over
    /// its other epochs, in each phase.
    #[test]
    fn warm_up_rises_linearly_then_the_schedule_runs() {
        let c = TwoPhaseConfig::new()
            .with_phase1_epochs(4)
            .with_phase2_epochs(4)
            .with_warmup_epochs(2)
            .with_schedule(Schedule::Cosine);
        let rates: Vec<f64> = (0..8).map(|e| c.learning_rate(e)).collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs().max(1e-300);
        assert!(
            close(rates[0], 1e-3 / 3.0) && close(rates[1], 2e-3 / 3.0),
            "{rates:?}"
        );
        assert!(
            close(rates[2], 1e-3) && close(rates[3], 0.5e-3),
            "cosine from its top: {rates:?}"
        );
        assert!(
            close(rates[4], 1e-5 / 3.0) && close(rates[6], 1e-5),
            "again in phase 2: {rates:?}"
        );
        let plain = TwoPhaseConfig::new().with_phase1_epochs(4);
        assert!(
            (0..4).all(|e| plain.learning_rate(e) == 1e-3),
            "no warm-up by default"
        );
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = TwoPhaseConfig::new();
        assert_eq!(c.phase2_lr, 1e-5);
        assert_eq!(c.dropout, 0.5);
        assert_eq!(c.batch_norm, BatchNormMode::Inference);
        c.validate().unwrap();
        assert!(
            TwoPhaseConfig::new()
                .with_unfreeze(Unfreeze::FromStage(5))
                .validate()
                .is_err()
        );
        assert!(TwoPhaseConfig::new().with_batch_size(0).validate().is_err());
        let err = TwoPhaseConfig::new().with_patience(Some(0)).validate();
        assert!(err.unwrap_err().to_string().contains("patience"));
        let err = TwoPhaseConfig::new().with_plateau_factor(1.5).validate();
        assert!(err.unwrap_err().to_string().contains("plateau_factor"));
        for k in Schedule::ALL {
            assert_eq!(k.name().parse::<Schedule>().unwrap(), k);
        }
        assert!("step".parse::<Schedule>().is_err());
    }

    #[test]
    fn without_validation_what_watches_it_is_refused() {
        let c = TwoPhaseConfig::new();
        c.validate_for(false).unwrap();
        let err = c.clone().with_patience(Some(2)).validate_for(false);
        assert!(matches!(
            err,
            Err(Error::NeedsValidation {
                field: "patience",
                ..
            })
        ));
        let plateau = c.with_schedule(Schedule::Plateau);
        let err = plateau.validate_for(false).unwrap_err();
        assert!(err.to_string().contains("schedule"), "{err}");
        plateau.validate_for(true).unwrap();
    }

    #[test]
    fn cosine_schedule_decays_within_each_phase() {
        let c = TwoPhaseConfig::new()
            .with_phase1_epochs(2)
            .with_phase2_epochs(2)
            .with_schedule(Schedule::Cosine);
        assert_eq!(c.learning_rate(0), 1e-3);
        assert!((c.learning_rate(1) - 0.5e-3).abs() < 1e-12);
        assert_eq!(c.learning_rate(2), 1e-5);
        assert_eq!(TwoPhaseConfig::new().learning_rate(7), 1e-5);
    }
}
