//! The two-phase learner: a new head on a frozen backbone, the unfreeze point, then the released
//! backbone at a low learning rate.
//!
//! The loop is our own rather than burn-train's `Learner`, for three things that one does not
//! do: swapping what is trainable (and the optimizer) at the unfreeze point inside one run,
//! training the head on cached backbone features in phase 1, and checkpoints that carry the
//! history and phase so that a killed run resumes exactly where it stopped.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{ImageBatcher, ImageSet, epoch_batches, epoch_order};
use crate::error::{Error, Result};
use crate::folded::FoldedResNet;
use crate::infer::InferenceModel;
use crate::model::{Head, ResNet};
use crate::train::adam::FusedAdamConfig;
use crate::train::checkpoint::{CheckpointState, Checkpoints, PhaseProgress, model_file};
use crate::train::config::{Schedule, TwoPhaseConfig, Unfreeze};
use crate::train::history::{EpochRecord, History};

/// Runs the two-phase recipe on a model.
#[derive(Debug, Clone)]
pub struct TwoPhase {
    /// The recipe.
    pub config: TwoPhaseConfig,
    /// Preprocessing and resizing of the images (augmentation comes from the config).
    pub batcher: ImageBatcher,
    /// Where checkpoints go; `None` for no checkpoints.
    pub run_dir: Option<PathBuf>,
    /// No progress bars.
    pub quiet: bool,
    /// Data parallel training: the devices every batch is split across, the first the main one
    /// (it must be `fit`'s device). Empty, or one device, trains on `fit`'s device alone. See
    /// [`with_devices`](Self::with_devices).
    pub devices: Vec<Device>,
}

impl TwoPhase {
    /// A learner with the given recipe and batcher, no checkpoints, with progress bars.
    pub fn new(config: TwoPhaseConfig, batcher: ImageBatcher) -> Self {
        Self {
            config,
            batcher,
            run_dir: None,
            quiet: false,
            devices: Vec::new(),
        }
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
    /// The same device may appear more than once (replicas taking turns on it): that is how
    /// the machinery is tested on a CPU.
    pub fn with_devices(mut self, devices: Vec<Device>) -> Self {
        self.devices = devices;
        self
    }

    /// The devices a step runs on: [`devices`](Self::devices), or `main` alone.
    fn replicas(&self, main: &Device) -> Result<Vec<Device>> {
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

    fn total_epochs(&self) -> usize {
        self.config.phase1_epochs + self.config.phase2_epochs
    }

    fn optimizer(&self) -> ModuleOptimizer {
        // Burn's Adam arithmetic (its defaults, its records), fused on the CPU backends.
        FusedAdamConfig::new()
            .with_weight_decay(self.config.weight_decay as f32)
            .init()
    }

    fn release(&self, model: ResNet) -> Result<ResNet> {
        let mode = self.config.batch_norm;
        match self.config.unfreeze {
            Unfreeze::All => Ok(model.unfreeze_all(mode)),
            Unfreeze::FromStage(k) => model.unfreeze_from(k, mode),
        }
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
            self.release(best)?
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
    /// The loop runs on a worker of the CPU backends' thread pool
    /// ([`on_pool_worker`](crate::device::on_pool_worker)).
    pub fn fit(
        &self,
        model: ResNet,
        train: &ImageSet,
        valid: &ImageSet,
        device: &Device,
    ) -> Result<(ResNet, History)> {
        crate::device::on_pool_worker(|| self.fit_on_this_thread(model, train, valid, device))
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
        let config = &self.config;
        // `fork` keeps tensors as they were; `train` turns autodiff on for the parameters.
        let mut model = model.fork(device).train();
        let mut history = History::default();
        let mut start = 0;
        let mut unfrozen = false;
        let mut optim = self.optimizer();
        let mut progress = PhaseProgress::default();

        if let (Some(checkpoints), Some(state)) = (self.checkpoints(), self.read_checkpoint()?) {
            model = checkpoints.load_model(model, &state.model_file)?;
            if let Some(file) = &state.optimizer_file {
                optim = checkpoints.load_optimizer(optim, file)?;
            }
            start = state.next_epoch;
            unfrozen = state.unfrozen;
            history = state.history;
            progress = state.progress;
            self.say(&format!(
                "resuming at epoch {} of {}",
                start + 1,
                self.total_epochs()
            ));
        }
        model = if unfrozen {
            self.release(model)?
        } else {
            model.freeze_backbone()
        };

        let mut cache: Option<(Tensor<2>, Option<Tensor<2>>)> = None;
        // The best epoch's weights, kept in memory while early stopping may restore them.
        let mut best_model: Option<ResNet> = None;
        let mut epoch = start;
        while epoch < self.total_epochs() {
            let phase1 = epoch < config.phase1_epochs;
            if !phase1 && !unfrozen {
                model = self.release(model)?;
                optim = self.optimizer();
                unfrozen = true;
                progress = PhaseProgress::default();
                best_model = None;
                self.say(&format!(
                    "unfreeze point: epoch {} releases {}",
                    epoch + 1,
                    match config.unfreeze {
                        Unfreeze::All => "the whole backbone".to_string(),
                        Unfreeze::FromStage(k) => format!("stages {k} to 4"),
                    }
                ));
            }
            let lr = config.learning_rate(epoch) * progress.lr_scale;
            device.seed(config.seed.wrapping_add(epoch as u64));
            let shuffle = config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as u64);
            let timer = Instant::now();
            let use_cache = phase1 && config.feature_cache && !config.augment;
            let (train_loss, train_accuracy, valid_loss, valid_accuracy);
            if use_cache {
                if cache.is_none() {
                    self.say(
                        "computing the frozen backbone's features once (phase-1 feature cache)",
                    );
                    cache = Some((
                        self.features(&model, train, device),
                        (!valid.is_empty()).then(|| self.features(&model, valid, device)),
                    ));
                }
                let (train_f, valid_f) = cache.as_ref().expect("just filled");
                let mut head = model.head.take().ok_or_else(no_head)?;
                (head, train_loss, train_accuracy) = self.head_epoch(
                    head,
                    &mut optim,
                    train_f,
                    train.labels(),
                    shuffle,
                    lr,
                    epoch,
                    device,
                );
                (valid_loss, valid_accuracy) = valid_f
                    .as_ref()
                    .map(|f| head_eval(&head, f, valid.labels(), config.batch_size, device))
                    .unzip();
                model.head = Some(head);
            } else {
                // In phase 1 the whole backbone is frozen: on a CPU backend its forward runs
                // folded, untracked, and only the head is differentiated.
                let frozen = phase1
                    .then(|| crate::folded::folded_on(&model, device))
                    .flatten();
                (model, train_loss, train_accuracy) = self.full_epoch(
                    model,
                    frozen.as_ref(),
                    &mut optim,
                    train,
                    shuffle,
                    lr,
                    epoch,
                    device,
                );
                (valid_loss, valid_accuracy) = (!valid.is_empty())
                    .then(|| {
                        let batcher = &self.batcher;
                        let e = crate::train::evaluate(
                            &model,
                            valid,
                            batcher,
                            config.batch_size,
                            device,
                        );
                        (e.loss, e.accuracy)
                    })
                    .unzip();
            }
            let record = EpochRecord {
                epoch: epoch + 1,
                phase: if phase1 { 1 } else { 2 },
                lr,
                train_loss,
                train_accuracy,
                valid_loss,
                valid_accuracy,
                seconds: timer.elapsed().as_secs_f64(),
                cached_features: use_cache,
            };
            let validation = match (valid_loss, valid_accuracy) {
                (Some(loss), Some(acc)) => format!("valid loss {loss:.4} acc {:.2}%", 100.0 * acc),
                _ => "no validation".to_string(),
            };
            self.say(&format!(
                "epoch {}/{} (phase {}): train loss {:.4} acc {:.2}%, {validation}, {:.1} s",
                record.epoch,
                self.total_epochs(),
                record.phase,
                train_loss,
                100.0 * train_accuracy,
                record.seconds
            ));
            history.epochs.push(record);
            epoch += 1;

            // Early stopping and reduce-on-plateau, within the phase, on validation loss.
            // A NaN or infinite loss is never an improvement (and never a checkpoint's best);
            // without validation nothing improves or waits (both are refused then).
            let improved = valid_loss
                .filter(|l| l.is_finite())
                .filter(|&l| progress.best.is_none_or(|(best, _)| l < best));
            if let Some(valid_loss) = improved {
                progress.best = Some((valid_loss, epoch));
                progress.plateau_wait = 0;
                if self.restores_best() {
                    best_model = Some(model.clone());
                    progress.best_model_file = Some(model_file(epoch));
                }
            } else if valid_loss.is_some() {
                progress.plateau_wait += 1;
                if config.schedule == Schedule::Plateau
                    && progress.plateau_wait >= config.plateau_patience
                {
                    progress.lr_scale *= config.plateau_factor;
                    progress.plateau_wait = 0;
                    self.say(&format!(
                        "validation loss on a plateau: learning rate x{}",
                        config.plateau_factor
                    ));
                }
            }
            let phase_end = if phase1 {
                config.phase1_epochs
            } else {
                self.total_epochs()
            };
            let best_epoch = progress.best.map_or(epoch, |(_, e)| e);
            if config.patience.is_some_and(|p| epoch - best_epoch >= p) {
                self.say(&format!(
                    "early stop: no better validation loss for {} epochs",
                    epoch - best_epoch
                ));
                epoch = phase_end;
            }
            let ends_off_best = best_epoch != record_epoch(&history);
            if epoch == phase_end
                && self.restores_best()
                && ends_off_best
                && let Some(best) =
                    self.best_weights(&model, best_model.take(), &progress, unfrozen)?
            {
                model = best;
                history.restored.push(best_epoch);
                self.say(&format!("restored the weights of epoch {best_epoch}"));
            }
            if let (Some(checkpoints), Some(run)) = (self.checkpoints(), &self.run_dir) {
                let plan = [config.phase1_epochs, config.phase2_epochs];
                checkpoints.write(&model, &optim, epoch, unfrozen, &history, &progress, plan)?;
                history.save(run)?;
            }
        }
        Ok((model, history))
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    fn bar(&self, len: usize, epoch: usize) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches, eta {eta} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.total_epochs()));
        bar
    }

    /// The frozen backbone's pooled features of every image of `set`, in order, on `device`;
    /// with [`devices`](Self::devices), each device computes a contiguous share of the images.
    pub fn features(&self, model: &ResNet, set: &ImageSet, device: &Device) -> Tensor<2> {
        let replicas = self
            .replicas(device)
            .unwrap_or_else(|_| vec![device.clone()]);
        let plain = ImageBatcher {
            augment: None,
            ..self.batcher
        };
        let main = device.clone().inner();
        let indices: Vec<usize> = if replicas.len() > 1 {
            (0..set.len()).collect()
        } else {
            Vec::new()
        };
        let chunks: Vec<Tensor<2>> = (replicas.iter())
            .zip(shares(set.len(), replicas.len()))
            .filter(|(_, share)| !share.is_empty())
            .flat_map(|(replica, share)| {
                let inner = replica.clone().inner();
                let inference = InferenceModel::new(model, &inner);
                // One device takes the set as it is; several, a copy of their share each.
                let part = if share.len() == set.len() {
                    std::borrow::Cow::Borrowed(set)
                } else {
                    std::borrow::Cow::Owned(set.select(&indices[share]))
                };
                crate::device::on_pool_worker(|| {
                    epoch_batches(&part, &plain, self.config.batch_size, None, &inner)
                        .map(|b| inference.features(b.images).to_device(&main))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        Tensor::cat(chunks, 0).autodiff()
    }

    #[allow(clippy::too_many_arguments)]
    fn full_epoch(
        &self,
        mut model: ResNet,
        frozen_backbone: Option<&FoldedResNet>,
        optim: &mut ModuleOptimizer,
        train: &ImageSet,
        shuffle: u64,
        lr: f64,
        epoch: usize,
        device: &Device,
    ) -> (ResNet, f64, f64) {
        let batcher = ImageBatcher {
            augment: self.config.augment.then(Default::default),
            ..self.batcher
        };
        let replicas = &self
            .replicas(device)
            .unwrap_or_else(|_| vec![device.clone()]);
        let batches = train.len().div_ceil(self.config.batch_size);
        let bar = self.bar(batches, epoch);
        let (mut loss_sum, mut right, mut seen) = (0.0, 0usize, 0usize);
        for batch in epoch_batches(
            train,
            &batcher,
            self.config.batch_size,
            Some(shuffle),
            device,
        ) {
            let n = batch.targets.dims()[0];
            let (grads, batch_loss, batch_right) =
                data_parallel(&model, device, replicas, n, |replica, share, on| {
                    let images = batch.images.clone().narrow(0, share.start, share.len());
                    let targets = batch.targets.clone().narrow(0, share.start, share.len());
                    let (images, targets) = (images.to_device(on), targets.to_device(on));
                    let logits = match (frozen_backbone, &replica.head) {
                        (Some(backbone), Some(head)) => match backbone.features(images.clone()) {
                            Ok(features) => head.forward(features),
                            Err(_) => replica.forward(images),
                        },
                        _ => replica.forward(images),
                    };
                    (logits, targets)
                });
            right += batch_right;
            loss_sum += batch_loss;
            seen += n;
            model = optim.step(lr, model, grads);
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
        }
        bar.finish_and_clear();
        (
            model,
            loss_sum / seen.max(1) as f64,
            right as f64 / seen.max(1) as f64,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn head_epoch(
        &self,
        mut head: Head,
        optim: &mut ModuleOptimizer,
        features: &Tensor<2>,
        labels: &[usize],
        shuffle: u64,
        lr: f64,
        epoch: usize,
        device: &Device,
    ) -> (Head, f64, f64) {
        let replicas = &self
            .replicas(device)
            .unwrap_or_else(|_| vec![device.clone()]);
        let order = epoch_order(labels.len(), Some(shuffle));
        let bar = self.bar(order.len().div_ceil(self.config.batch_size), epoch);
        let (mut loss_sum, mut right, mut seen) = (0.0, 0usize, 0usize);
        for indices in order.chunks(self.config.batch_size) {
            let n = indices.len();
            let (grads, batch_loss, batch_right) =
                data_parallel(&head, device, replicas, n, |replica, share, on| {
                    let indices = &indices[share];
                    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                    let idx =
                        Tensor::<1, Int>::from_data(TensorData::new(idx, [indices.len()]), device);
                    let x = features.clone().select(0, idx).to_device(on);
                    let targets = targets(indices.iter().map(|&i| labels[i]), on);
                    (replica.forward(x), targets)
                });
            right += batch_right;
            loss_sum += batch_loss;
            seen += n;
            head = optim.step(lr, head, grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        (
            head,
            loss_sum / seen.max(1) as f64,
            right as f64 / seen.max(1) as f64,
        )
    }
}

/// `n` items split into `k` contiguous shares, in order, as evenly as they go (the first
/// `n % k` one larger).
fn shares(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let k = k.max(1);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = n / k + usize::from(i < n % k);
            start += len;
            start - len..start
        })
        .collect()
}

/// One step's gradients over a batch of `n` items split across `devices`, on `main`: each
/// device runs `share(replica, range, device)` (the logits and targets of its share) on a
/// replica of `module`, its mean loss weighted by the share's part of the batch, and the
/// replicas' gradients are moved to `main` and summed (Burn's `GradientsParams::to_device` and
/// `GradientsAccumulator`, as burn-train's multi-device strategy does). Returns the gradients,
/// the batch's summed loss and its number of right answers. With one device it is the plain
/// step.
fn data_parallel<M: Module>(
    module: &M,
    main: &Device,
    devices: &[Device],
    n: usize,
    mut share: impl FnMut(&M, std::ops::Range<usize>, &Device) -> (Tensor<2>, Tensor<1, Int>),
) -> (GradientsParams, f64, usize) {
    let mut accumulator = GradientsAccumulator::<M>::new();
    let (mut loss_sum, mut right) = (0.0, 0);
    for (device, range) in devices.iter().zip(shares(n, devices.len())) {
        if range.is_empty() {
            continue;
        }
        let len = range.len();
        let replica = if device == main {
            module.clone()
        } else {
            module.clone().fork(device)
        };
        let (logits, targets) = share(&replica, range, device);
        right += correct(&logits, &targets);
        let loss = CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, targets);
        loss_sum += loss.clone().into_scalar::<f64>() * len as f64;
        let loss = if len == n {
            loss
        } else {
            loss * (len as f64 / n as f64)
        };
        let grads = GradientsParams::from_grads(loss.backward(), &replica);
        if devices.len() == 1 {
            return (grads, loss_sum, right);
        }
        accumulator.accumulate(module, grads.to_device(main, module));
    }
    (accumulator.grads(), loss_sum, right)
}

/// The number of the last finished epoch (from 1), 0 before any.
fn record_epoch(history: &History) -> usize {
    history.epochs.last().map_or(0, |e| e.epoch)
}

fn no_head() -> Error {
    Error::InvalidConfig {
        field: "num_classes",
        expected: "a model with a head to train".into(),
        found: "None".into(),
    }
}

fn targets(labels: impl Iterator<Item = usize>, device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = labels.map(|l| l as i64).collect();
    let n = labels.len();
    Tensor::from_data(TensorData::new(labels, [n]), device)
}

fn correct(logits: &Tensor<2>, targets: &Tensor<1, Int>) -> usize {
    let n = targets.dims()[0];
    let predicted = logits.clone().argmax(1).reshape([n]);
    predicted
        .equal(targets.clone())
        .int()
        .sum()
        .into_scalar::<i64>() as usize
}

fn head_eval(
    head: &Head,
    features: &Tensor<2>,
    labels: &[usize],
    batch_size: usize,
    device: &Device,
) -> (f64, f64) {
    let head = head.valid();
    let inner = device.clone().inner();
    let loss_fn = CrossEntropyLossConfig::new().init(&inner);
    let features = features.clone().inner();
    let (mut loss_sum, mut right) = (0.0, 0usize);
    let order: Vec<usize> = (0..labels.len()).collect();
    for indices in order.chunks(batch_size) {
        let n = indices.len();
        let x = features.clone().narrow(0, indices[0], n);
        let t = targets(indices.iter().map(|&i| labels[i]), &inner);
        let logits = head.forward(x);
        right += correct(&logits, &t);
        loss_sum += loss_fn.forward(logits, t).into_scalar::<f64>() * n as f64;
    }
    let n = labels.len().max(1) as f64;
    (loss_sum / n, right as f64 / n)
}

/// A new model for transfer learning: `backbone`'s weights with a new, seeded head for
/// `num_classes` classes and the recipe's dropout.
pub fn with_new_head(
    backbone: ResNet,
    num_classes: usize,
    dropout: f64,
    seed: u64,
    device: &Device,
) -> ResNet {
    device.seed(seed);
    backbone.with_new_head(num_classes, dropout, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shares_cover_the_batch_in_order() {
        assert_eq!(shares(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(shares(1, 2), vec![0..1, 1..1]);
        assert_eq!(shares(4, 1), vec![0..4]);
    }

    /// The gradients themselves, not only what Adam makes of them (which hardly sees a scale):
    /// replicas' weighted, summed gradients are the whole batch's mean gradient, for splits
    /// into 2 and 3 unequal shares.
    #[test]
    fn replica_gradients_sum_to_the_batchs_mean_gradient() {
        let device = crate::device::training_device("ndarray").unwrap();
        device.seed(3);
        let head = Head::new(6, 3, 0.0, &device);
        let x = Tensor::<2>::random([7, 6], Distribution::Normal(0.0, 1.0), &device);
        let y = targets([0, 1, 2, 0, 1, 2, 2].into_iter(), &device);
        let step = |devices: &[Device]| {
            let (grads, loss, right) = data_parallel(&head, &device, devices, 7, |m, r, on| {
                let (x, y) = (x.clone(), y.clone());
                let rows = |t: Tensor<2>| t.narrow(0, r.start, r.len());
                (
                    m.forward(rows(x)),
                    y.narrow(0, r.start, r.len()).to_device(on),
                )
            });
            let w = grads.get::<2>(head.linear.weight.id).unwrap();
            (w.into_data().try_to_vec::<f32>().unwrap(), loss, right)
        };
        let (one, loss1, right1) = step(std::slice::from_ref(&device));
        for k in [2, 3] {
            let (many, loss, right) = step(&vec![device.clone(); k]);
            let gap = one
                .iter()
                .zip(&many)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(gap < 1e-6, "{k} replicas: gradient off by {gap}");
            assert!((loss - loss1).abs() < 1e-5 && right == right1);
        }
    }
}
