//! [`TwoPhaseConfig`]: everything that decides a two-phase run, saved beside every run.

use burn::config::Config;

use crate::error::{Error, Result};
use crate::model::BatchNormMode;
use crate::train::loss::ClassWeights;

/// What the unfreeze point releases, and when.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Unfreeze {
    /// The whole backbone.
    All,
    /// Stages `k..=4` (4: the last stage only); the stem and earlier stages stay frozen.
    FromStage(usize),
    /// Gradual unfreezing (ULMFiT's, fastai's `freeze_to`): stage 4 at the unfreeze point, then
    /// stage 3, then 2, then 1 with the stem, one more every `n` epochs of phase 2.
    Gradual(usize),
}

impl Unfreeze {
    /// The first stage trainable in phase 2's epoch `k` (from 0): stages from it to 4 are
    /// released, and 1 releases the stem too.
    pub fn first_stage(self, k: usize) -> usize {
        match self {
            Unfreeze::All => 1,
            Unfreeze::FromStage(stage) => stage,
            Unfreeze::Gradual(every) => 4usize.saturating_sub(k / every.max(1)).max(1),
        }
    }

    /// What is released from phase 2's epoch `k` on, as a person reads it.
    pub fn describe(self, k: usize) -> String {
        match self.first_stage(k) {
            1 => "the whole backbone".to_string(),
            4 => "stage 4".to_string(),
            s => format!("stages {s} to 4"),
        }
    }
}

/// The optimizer of both phases (a fresh one at the unfreeze point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    /// Adam (Burn's arithmetic, fused on the CPU backends); `weight_decay` is an L2 penalty
    /// added to the gradient, as Keras's and PyTorch's `Adam` do.
    Adam,
    /// AdamW: Adam with decoupled weight decay (Loshchilov and Hutter), each step shrinking the
    /// weights by `lr * weight_decay` of themselves.
    AdamW,
    /// Stochastic gradient descent with momentum (`momentum`, optionally Nesterov's); weight
    /// decay as an L2 penalty, as PyTorch's `SGD`.
    Sgd,
}

named_enum!(OptimizerKind as "optimizer" { Adam => "adam", AdamW => "adamw", Sgd => "sgd" });

/// How the learning rate moves within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The phase's rate throughout.
    Constant,
    /// Cosine decay from the phase's rate to zero over its epochs.
    Cosine,
    /// One cycle (Smith; fastai's `fit_one_cycle`), step by step over the phase: a cosine rise
    /// from 1/25 of the phase's rate to the rate in the first quarter of its steps, then a
    /// cosine fall to 1/100,000 of it.
    OneCycle,
    /// The phase's rate, multiplied by `plateau_factor` whenever validation loss has not improved
    /// for `plateau_patience` epochs (Keras's `ReduceLROnPlateau`).
    Plateau,
}

named_enum!(Schedule as "schedule" {
    Constant => "constant",
    Cosine => "cosine",
    OneCycle => "one-cycle",
    Plateau => "plateau",
});

/// The two-phase recipe: a new head on a frozen backbone, then the released backbone at a low
/// rate. Defaults follow the seed and the Keras fine-tuning guide.
///
/// Steered: stage 4 released at the unfreeze point and one more stage every 2 epochs, each
/// stage at half its neighbour's rate, AdamW with weight decay, one cycle per phase.
///
/// ```
/// use resnet_transfer::train::{OptimizerKind, Schedule, TwoPhaseConfig, Unfreeze};
///
/// let config = TwoPhaseConfig::new()
///     .with_phase1_epochs(3)
///     .with_phase2_epochs(8)
///     .with_unfreeze(Unfreeze::Gradual(2))
///     .with_stage_lr_decay(0.5)
///     .with_optimizer(OptimizerKind::AdamW)
///     .with_weight_decay(0.05)
///     .with_schedule(Schedule::OneCycle);
/// config.validate()?;
/// // Phase 2's epochs 0-1 train stage 4, 2-3 stages 3-4, ... from 6 on everything.
/// assert_eq!(config.unfreeze.first_stage(2), 3);
/// assert_eq!(config.unfreeze.first_stage(6), 1);
/// // One cycle starts each phase at 1/25 of its rate and peaks a quarter of the way in.
/// assert!((config.learning_rate(0) - 1e-3 / 25.0).abs() < 1e-12);
/// assert!((config.learning_rate_at(0, 0.75) - 1e-3).abs() < 1e-12);
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
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
    /// The optimizer.
    #[config(default = "OptimizerKind::Adam")]
    pub optimizer: OptimizerKind,
    /// Weight decay (0 for none), as [`OptimizerKind`] applies it; never to BatchNorm's scales
    /// and shifts nor to biases (timm's rule: no decay for parameters of one dimension).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Momentum of [`OptimizerKind::Sgd`].
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Nesterov's momentum for [`OptimizerKind::Sgd`].
    #[config(default = false)]
    pub nesterov: bool,
    /// Discriminative learning rates (fastai's `slice`, timm's layer decay): in phase 2 the
    /// head learns at the phase's rate, stage 4 at `stage_lr_decay` times it, stage 3 at its
    /// square, and so on to the stem at its fifth power. 1 for one rate throughout.
    #[config(default = 1.0)]
    pub stage_lr_decay: f64,
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
        match self.unfreeze {
            // Every ResNet of the family has four stages.
            Unfreeze::FromStage(k) => crate::model::check_stage("unfreeze_from", k, 4)?,
            Unfreeze::Gradual(0) => {
                return invalid(
                    "unfreeze_every",
                    "a release every 1 epoch or more",
                    "0".into(),
                );
            }
            _ => {}
        }
        if !(self.stage_lr_decay > 0.0 && self.stage_lr_decay <= 1.0) {
            let found = self.stage_lr_decay.to_string();
            return invalid("stage_lr_decay", "in (0, 1]", found);
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            let found = self.weight_decay.to_string();
            return invalid("weight_decay", "finite and 0 or more", found);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return invalid("momentum", "in [0, 1)", self.momentum.to_string());
        }
        if self.nesterov && !(self.optimizer == OptimizerKind::Sgd && self.momentum > 0.0) {
            // As PyTorch's SGD: "Nesterov momentum requires a momentum".
            let expected = "only with optimizer sgd and a momentum above 0";
            return invalid("nesterov", expected, "true".into());
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

    /// The learning rate of `epoch` (0-based, counted over both phases) at its first step,
    /// before any reduce-on-plateau step, which depends on the validation losses and which the
    /// learner applies on top. [`learning_rate_at`](Self::learning_rate_at) gives it step by step.
    pub fn learning_rate(&self, epoch: usize) -> f64 {
        self.learning_rate_at(epoch, 0.0)
    }

    /// The learning rate at `fraction` (in [0, 1)) of `epoch`'s steps: the same for the whole
    /// epoch but in [`Schedule::OneCycle`], which moves step by step.
    pub fn learning_rate_at(&self, epoch: usize, fraction: f64) -> f64 {
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
                base * cosine(1.0, 0.0, t)
            }
            Schedule::OneCycle => {
                let t = (k - warmup) as f64 + fraction.clamp(0.0, 1.0);
                let t = t / (len - warmup).max(1) as f64;
                const RISE: f64 = 0.25;
                if t < RISE {
                    base * cosine(1.0 / 25.0, 1.0, t / RISE)
                } else {
                    base * cosine(1.0, 1e-5, (t - RISE) / (1.0 - RISE))
                }
            }
        }
    }
}

impl TwoPhaseConfig {
    /// The recipe saved as `saved` (a run folder's `config.json`), each field it lacks, being
    /// written before the field existed, taking its default: what the runs of that time did.
    pub(crate) fn from_saved(saved: serde_json::Value) -> serde_json::Result<Self> {
        let mut merged = serde_json::to_value(TwoPhaseConfig::new())?;
        match (merged.as_object_mut(), saved) {
            (Some(fields), serde_json::Value::Object(saved)) => {
                fields.extend(saved);
                serde_json::from_value(merged)
            }
            (_, other) => serde_json::from_value(other),
        }
    }
}

/// Half a cosine from `from` (at `t` = 0) to `to` (at 1).
fn cosine(from: f64, to: f64, t: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
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

    /// One cycle, step by step over a phase: from 1/25 of the rate, up to it at a quarter of
    /// the phase's steps, down to 1/100,000 of it at the end; in each phase, after its warm-up.
    #[test]
    fn one_cycle_rises_to_the_rate_then_falls() {
        let c = TwoPhaseConfig::new()
            .with_phase1_epochs(4)
            .with_phase2_epochs(3)
            .with_warmup_epochs(1)
            .with_schedule(Schedule::OneCycle);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
        assert!(close(c.learning_rate(1), 1e-3 / 25.0), "after the warm-up");
        // Phase 1's cycle runs over epochs 1 to 3: its peak a quarter in, at 0.75 of epoch 1.
        assert!(close(c.learning_rate_at(1, 0.75), 1e-3));
        let steps: Vec<f64> = (4..12)
            .map(|i| c.learning_rate_at(1 + i / 4, (i % 4) as f64 / 4.0))
            .collect();
        assert!(steps.windows(2).all(|w| w[1] < w[0]), "falls: {steps:?}");
        assert!(c.learning_rate_at(3, 0.999) < 1e-3 * 1e-3);
        assert!(close(c.learning_rate(5), 1e-5 / 25.0), "again in phase 2");
        assert_eq!("One-Cycle".parse::<Schedule>().unwrap(), Schedule::OneCycle);
    }

    /// Gradual unfreezing releases stage 4, then 3, 2 and 1 (with the stem), one every `n`
    /// epochs, and stays at 1; the other choices do not move.
    #[test]
    fn gradual_unfreezing_moves_one_stage_every_n_epochs() {
        let first = |u: Unfreeze| (0..10).map(|k| u.first_stage(k)).collect::<Vec<_>>();
        assert_eq!(first(Unfreeze::Gradual(1)), [4, 3, 2, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(first(Unfreeze::Gradual(3)), [4, 4, 4, 3, 3, 3, 2, 2, 2, 1]);
        assert_eq!(first(Unfreeze::FromStage(3)), [3; 10]);
        assert_eq!(first(Unfreeze::All), [1; 10]);
        let err = TwoPhaseConfig::new()
            .with_unfreeze(Unfreeze::Gradual(0))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("unfreeze_every"), "{err}");
        for (config, field) in [
            (
                TwoPhaseConfig::new().with_stage_lr_decay(0.0),
                "stage_lr_decay",
            ),
            (
                TwoPhaseConfig::new().with_stage_lr_decay(1.5),
                "stage_lr_decay",
            ),
            (TwoPhaseConfig::new().with_momentum(1.0), "momentum"),
            (TwoPhaseConfig::new().with_nesterov(true), "nesterov"),
            (
                (TwoPhaseConfig::new().with_optimizer(OptimizerKind::Sgd))
                    .with_nesterov(true)
                    .with_momentum(0.0),
                "nesterov",
            ),
            (
                TwoPhaseConfig::new().with_weight_decay(-1.0),
                "weight_decay",
            ),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    /// A `config.json` written before the optimizer, momentum, Nesterov and stage-rate fields
    /// existed reads with their defaults, so older runs still resume.
    #[test]
    fn an_older_config_reads_with_the_new_fields_defaulted() {
        let mut json = serde_json::to_value(TwoPhaseConfig::new().with_seed(9)).unwrap();
        let fields = json.as_object_mut().unwrap();
        for new in ["optimizer", "momentum", "nesterov", "stage_lr_decay"] {
            assert!(fields.remove(new).is_some(), "{new}");
        }
        assert!(serde_json::from_value::<TwoPhaseConfig>(json.clone()).is_err());
        let read = TwoPhaseConfig::from_saved(json).unwrap();
        assert_eq!(read, TwoPhaseConfig::new().with_seed(9));
        assert!(TwoPhaseConfig::from_saved(serde_json::json!([1, 2])).is_err());
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
