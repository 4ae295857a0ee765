//! The two-phase learner: a new head on a frozen backbone, the unfreeze point, then the released
//! backbone at a low learning rate.
//!
//! The loop is our own rather than burn-train's `Learner`, for three things that one does not
//! do: swapping what is trainable (and the optimizer) at the unfreeze point inside one run,
//! training the head on cached backbone features in phase 1, and checkpoints that carry the
//! history and phase so that a killed run resumes exactly where it stopped.

use std::path::PathBuf;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;

use crate::data::{ImageBatcher, ImageSet};
use crate::error::{Error, Result};
use crate::model::ResNet;
use crate::train::checkpoint::{CheckpointState, Checkpoints, PhaseProgress, model_file};
use crate::train::config::TwoPhaseConfig;
use crate::train::features::CachedFeatures;
use crate::train::history::{EpochRecord, History};
use crate::train::loss::TrainingLoss;

/// Runs the two-phase recipe on a model.
#[derive(Debug, Clone)]
pub struct TwoPhase {
    /// The recipe.
    pub config: TwoPhaseConfig,
    /// Preprocessing and resizing of the images (augmentation comes from the config).
    pub batcher: ImageBatcher,
    /// Where checkpoints go; `None` for no checkpoints.
    pub run_dir: Option<PathBuf>,
    /// Progress bars and lines on standard error.
    pub progress: bool,
    /// Data parallel training: the devices every batch is split across, the first the main one
    /// (it must be `fit`'s device). Empty, or one device, trains on `fit`'s device alone. See
    /// [`with_devices`](Self::with_devices).
    pub devices: Vec<Device>,
    /// The bytes phase 1's cached features may take in memory; larger ones stay in the run
    /// folder's file and are read a batch at a time (without a run folder they are held
    /// whatever their size). Default [`default_memory_budget`](crate::data::default_memory_budget).
    pub memory_budget: u64,
}

impl TwoPhase {
    /// A learner with the given recipe and batcher, no checkpoints, with progress bars.
    pub fn new(config: TwoPhaseConfig, batcher: ImageBatcher) -> Self {
        Self {
            config,
            batcher,
            run_dir: None,
            progress: true,
            devices: Vec::new(),
            memory_budget: crate::data::default_memory_budget(),
        }
    }

    /// This learner, with phase 1's cached features held in memory up to `bytes` (see
    /// [`memory_budget`](Self::memory_budget)).
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// This learner, training data parallel on `devices` (autodiff devices; the first is the
    /// main one and must be the device given to [`fit`](Self::fit)).
    ///
    /// Every training batch is split into one contiguous share per device, in order; each
    /// device runs a replica of the model (Burn's `Module::fork`) on its share, its loss weighted
    /// by the share's size, and the gradients are moved to the main device and summed there with
    /// Burn's `GradientsParams::to_device` and `GradientsAccumulator`, the two pieces of
    /// burn-train's multi-device strategy (`ExecutionStrategy::multi` with the optimizer on the
    /// main device). One optimizer step then updates the model, which every replica is forked
    /// from again at the next step: the result is the full batch's mean gradient, so one step
    /// equals one device's on the whole batch (to float rounding), with two exceptions, as in
    /// PyTorch's DDP without SyncBatchNorm: BatchNorm in training mode normalizes each share with
    /// its own statistics, and dropout draws its masks share by share. The phase-1 feature pass
    /// splits the images across the devices the same way; validation, checkpoints and the report
    /// run on the main device.
    ///
    /// Distinct devices run their replicas at once, each on a thread of its own (as burn-train
    /// gives each device a worker). The same device may appear more than once (replicas taking
    /// turns on it, on the calling thread): that is how
    /// the machinery is tested on a CPU.
    pub fn with_devices(mut self, devices: Vec<Device>) -> Self {
        self.devices = devices;
        self
    }

    /// The devices a step runs on: [`devices`](Self::devices), or `main` alone.
    pub(super) fn replicas(&self, main: &Device) -> Result<Vec<Device>> {
        match self.devices.first() {
            None => Ok(vec![main.clone()]),
            Some(first) if first == main => Ok(self.devices.clone()),
            Some(first) => Err(Error::invalid_config(
                "devices",
                format!("the training device {main:?} first"),
                format!("{first:?} first"),
            )),
        }
    }

    pub(super) fn total_epochs(&self) -> usize {
        self.config.phase1_epochs + self.config.phase2_epochs
    }

    pub(super) fn optimizer(&self, model: &ResNet) -> ModuleOptimizer {
        super::optim::optimizer(&self.config, model)
    }

    /// Phase 2's epoch `epoch` counts from 0 (0 for any epoch before it).
    pub(super) fn phase2_epoch(&self, epoch: usize) -> usize {
        epoch.saturating_sub(self.config.phase1_epochs)
    }

    /// `model` with what phase 2 has released by `epoch` (counted over both phases) trainable,
    /// the rest frozen.
    pub(super) fn release(&self, model: ResNet, epoch: usize) -> Result<ResNet> {
        let first = self.config.unfreeze.first_stage(self.phase2_epoch(epoch));
        model.unfreeze_from(first, self.config.batch_norm)
    }

    /// Whether each phase ends with its best epoch's weights.
    fn restores_best(&self) -> bool {
        self.config.patience.is_some() && self.config.restore_best_weights
    }

    /// The weights of the phase's best epoch: the copy kept in memory, else the checkpoint file
    /// a resumed run left (then with the phase's trainable parts set again).
    fn best_weights(
        &self,
        model: &ResNet,
        kept: Option<ResNet>,
        progress: &PhaseProgress,
        unfrozen: bool,
    ) -> Result<Option<ResNet>> {
        if kept.is_some() {
            return Ok(kept);
        }
        let (Some(checkpoints), Some(file)) = (self.checkpoints(), &progress.best_model_file)
        else {
            return Ok(None);
        };
        let best = checkpoints.load_model(model.clone(), file)?;
        Ok(Some(if unfrozen {
            // At a phase's end: phase 2's last epoch, with all it released.
            self.release(best, self.total_epochs() - 1)?
        } else {
            best.freeze_backbone()
        }))
    }

    fn checkpoints(&self) -> Option<Checkpoints> {
        let dir = self.run_dir.as_ref()?.join("checkpoint");
        Some(Checkpoints::new(dir))
    }

    fn read_checkpoint(&self) -> Result<Option<CheckpointState>> {
        self.checkpoints().map_or(Ok(None), |c| c.read())
    }

    /// Trains `model` (with its new head) on `train`, validating on `valid` after every epoch.
    /// `device` must have autodiff. With a run folder, a checkpoint is written after every
    /// epoch, and a run found there is resumed from its last finished epoch.
    ///
    /// An empty `valid` trains without validation, as Keras's `fit` without `validation_data`:
    /// the history then has no validation figures (`None`) and no jump, and early stopping and
    /// the plateau schedule, which would watch them, are refused
    /// ([`TwoPhaseConfig::validate_for`]).
    ///
    /// On a CPU backend the loop runs on a worker of the thread pool its operations use
    /// ([`on_worker_for`](crate::device::on_worker_for)); elsewhere on the calling thread.
    pub fn fit(
        &self,
        model: ResNet,
        train: &ImageSet,
        valid: &ImageSet,
        device: &Device,
    ) -> Result<(ResNet, History)> {
        crate::device::on_worker_for(device, || {
            self.fit_on_this_thread(model, train, valid, device)
        })
    }

    fn fit_on_this_thread(
        &self,
        model: ResNet,
        train: &ImageSet,
        valid: &ImageSet,
        device: &Device,
    ) -> Result<(ResNet, History)> {
        self.config.validate_for(!valid.is_empty())?;
        // A device list that does not start with the training device is refused here, before
        // any work; the epochs then take it as checked.
        self.replicas(device)?;
        let mut run = self.start(model, device)?;
        let classes = run.model.num_classes().ok_or_else(super::epoch::no_head)?;
        let weights = self.config.class_weights.of(train.labels(), classes);
        run.loss = TrainingLoss::new(self.config.label_smoothing, weights)?;
        while run.epoch < self.total_epochs() {
            if run.epoch >= self.config.phase1_epochs && !run.unfrozen {
                run = self.unfreeze(run)?;
            } else if run.unfrozen {
                run = self.release_more(run)?;
            }
            let record;
            (run, record) = self.epoch(run, train, valid, device)?;
            self.report(&record);
            diverged(&record)?;
            run.history.epochs.push(record);
            run.epoch += 1;
            self.watch_validation(&mut run)?;
            self.checkpoint(&run)?;
        }
        Ok((run.model, run.history))
    }

    /// The run at its start: `model` fresh, or where the run folder's checkpoint left it, with
    /// the parts of its phase trainable.
    fn start(&self, model: ResNet, device: &Device) -> Result<Run> {
        // `fork` keeps tensors as they were; `train` turns autodiff on for the parameters.
        let mut model = model.fork(device).train();
        let state = self.read_checkpoint()?;
        let checkpoints = self.checkpoints();
        if let (Some(checkpoints), Some(state)) = (&checkpoints, &state) {
            model = checkpoints.load_model(model, &state.model_file)?;
        }
        // The optimizer's groups are made of the loaded model's parameters.
        let mut run = Run {
            optim: self.optimizer(&model),
            model,
            history: History::default(),
            epoch: 0,
            unfrozen: false,
            progress: PhaseProgress::default(),
            best_model: None,
            cache: None,
            loss: TrainingLoss::default(),
        };
        if let (Some(checkpoints), Some(state)) = (checkpoints, state) {
            if let Some(file) = &state.optimizer_file {
                run.optim = checkpoints.load_optimizer(run.optim, file)?;
            }
            run.epoch = state.next_epoch;
            run.unfrozen = state.unfrozen;
            run.history = state.history;
            run.progress = state.progress;
            self.say(&format!(
                "resuming at epoch {} of {}",
                run.epoch + 1,
                self.total_epochs()
            ));
        }
        run.model = if run.unfrozen {
            self.release(run.model, run.epoch)?
        } else {
            run.model.freeze_backbone()
        };
        Ok(run)
    }

    /// Gradual unfreezing's later releases: at the epochs where [`Unfreeze::first_stage`](crate::train::Unfreeze::first_stage)
    /// moves, one more stage trainable. The optimizer goes on: the stages released before keep
    /// their moments, the new one starts its own.
    fn release_more(&self, mut run: Run) -> Result<Run> {
        let k = self.phase2_epoch(run.epoch);
        let unfreeze = self.config.unfreeze;
        if k == 0 || unfreeze.first_stage(k) == unfreeze.first_stage(k - 1) {
            return Ok(run);
        }
        run.model = self.release(run.model, run.epoch)?;
        self.say(&format!(
            "gradual unfreezing: epoch {} releases {}",
            run.epoch + 1,
            unfreeze.describe(k)
        ));
        Ok(run)
    }

    /// The unfreeze point: the backbone (or its last stages) released, with a fresh optimizer
    /// and a fresh watch on validation for phase 2.
    fn unfreeze(&self, mut run: Run) -> Result<Run> {
        run.cache = None;
        self.remove_feature_files();
        run.model = self.release(run.model, run.epoch)?;
        run.optim = self.optimizer(&run.model);
        run.unfrozen = true;
        run.progress = PhaseProgress::default();
        run.best_model = None;
        self.say(&format!(
            "unfreeze point: epoch {} releases {}",
            run.epoch + 1,
            self.config.unfreeze.describe(self.phase2_epoch(run.epoch))
        ));
        Ok(run)
    }

    /// Early stopping and reduce-on-plateau after an epoch ([`PhaseProgress::observe`]): the
    /// best epoch's weights kept, the rate lowered, the phase ended, and at a phase's end the
    /// best epoch's weights restored.
    fn watch_validation(&self, run: &mut Run) -> Result<()> {
        let config = &self.config;
        let epoch = run.epoch;
        let valid_loss = run.history.epochs.last().and_then(|e| e.valid_loss);
        let verdict = run.progress.observe(valid_loss, epoch, config);
        if verdict.improved && self.restores_best() {
            run.best_model = Some(run.model.clone());
            run.progress.best_model_file = Some(model_file(epoch));
        }
        if verdict.lowered_rate {
            self.say(&format!(
                "validation loss on a plateau: learning rate x{}",
                config.plateau_factor
            ));
        }
        let phase1 = epoch <= config.phase1_epochs;
        let phase_end = if phase1 {
            config.phase1_epochs
        } else {
            self.total_epochs()
        };
        if verdict.stop {
            self.say(&format!(
                "early stop: no better validation loss for {} epochs",
                epoch - verdict.best_epoch
            ));
            run.epoch = phase_end;
        }
        let ends_off_best = verdict.best_epoch != record_epoch(&run.history);
        if run.epoch == phase_end
            && self.restores_best()
            && ends_off_best
            && let Some(best) = self.best_weights(
                &run.model,
                run.best_model.take(),
                &run.progress,
                run.unfrozen,
            )?
        {
            run.model = best;
            run.history.restored.push(verdict.best_epoch);
            self.say(&format!(
                "restored the weights of epoch {}",
                verdict.best_epoch
            ));
        }
        Ok(())
    }

    /// The run folder's checkpoint and history, after every epoch.
    fn checkpoint(&self, run: &Run) -> Result<()> {
        if let (Some(checkpoints), Some(dir)) = (self.checkpoints(), &self.run_dir) {
            let plan = [self.config.phase1_epochs, self.config.phase2_epochs];
            checkpoints.write(
                &run.model,
                &run.optim,
                run.epoch,
                run.unfrozen,
                &run.history,
                &run.progress,
                plan,
            )?;
            run.history.save(dir)?;
        }
        Ok(())
    }

    /// One line per epoch on standard error.
    fn report(&self, record: &EpochRecord) {
        let validation = match (record.valid_loss, record.valid_accuracy) {
            (Some(loss), Some(acc)) => format!("valid loss {loss:.4} acc {:.2}%", 100.0 * acc),
            _ => "no validation".to_string(),
        };
        self.say(&format!(
            "epoch {}/{} (phase {}): train loss {:.4} acc {:.2}%, {validation}, {:.1} s",
            record.epoch,
            self.total_epochs(),
            record.phase,
            record.train_loss,
            100.0 * record.train_accuracy,
            record.seconds
        ));
    }

    pub(super) fn say(&self, line: &str) {
        if self.progress {
            eprintln!("{line}");
        }
    }
}

/// Where a fit stands between epochs: what the loop carries, and what a checkpoint restores.
pub(super) struct Run {
    pub(super) model: ResNet,
    pub(super) optim: ModuleOptimizer,
    pub(super) history: History,
    /// Epochs finished (the next epoch's index, from 0).
    pub(super) epoch: usize,
    pub(super) unfrozen: bool,
    pub(super) progress: PhaseProgress,
    /// The best epoch's weights, kept in memory while early stopping may restore them.
    pub(super) best_model: Option<ResNet>,
    /// Phase 1's features of the training and validation images, computed once.
    pub(super) cache: Option<(CachedFeatures, Option<CachedFeatures>)>,
    /// What the steps minimize: from the recipe and the training set's labels.
    pub(super) loss: TrainingLoss,
}

/// [`Error::Diverged`] if the epoch's training or validation loss is not finite.
fn diverged(record: &EpochRecord) -> Result<()> {
    let losses = [
        ("training", Some(record.train_loss)),
        ("validation", record.valid_loss),
    ];
    match losses
        .into_iter()
        .find(|(_, l)| l.is_some_and(|l| !l.is_finite()))
    {
        Some((which, Some(value))) => Err(Error::Diverged {
            epoch: record.epoch,
            phase: record.phase,
            lr: record.lr,
            which,
            value,
        }),
        _ => Ok(()),
    }
}

/// The number of the last finished epoch (from 1), 0 before any.
fn record_epoch(history: &History) -> usize {
    history.epochs.last().map_or(0, |e| e.epoch)
}

/// A new model for transfer learning: `backbone`'s weights with a new, seeded head for
/// `num_classes` classes and the recipe's dropout.
///
/// The head is drawn with Burn's initializer (Linear: uniform in `±1/√in_features`, as
/// PyTorch's `nn.Linear`) on the host's CPU backend ([`default_device`]), seeded with `seed`,
/// and then moved to `device`: each backend's generator draws its own numbers, and so the same
/// seed gives the same head, and the same run, on every backend.
///
/// [`default_device`]: crate::device::default_device
pub fn with_new_head(
    backbone: ResNet,
    num_classes: usize,
    dropout: f64,
    seed: u64,
    device: &Device,
) -> ResNet {
    let host = crate::device::default_device().unwrap_or_else(|_| device.clone().inner());
    host.seed(seed);
    let head = crate::model::Head::new(backbone.feature_dim(), num_classes, dropout, &host);
    // Burn initializes parameters lazily, on the device they are on when first used: drawn
    // here, on the host, before the move.
    let _ = head.linear.weight.val();
    if let Some(bias) = &head.linear.bias {
        let _ = bias.val();
    }
    device.seed(seed);
    ResNet {
        head: Some(head.to_device(device)),
        ..backbone
    }
}
