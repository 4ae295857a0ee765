//! One epoch of the two-phase learner: the head alone on cached features, or whole batches
//! through the model, split across replicas when there are several devices; and the phase-1
//! feature pass.

use std::time::Instant;

use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{ImageBatcher, ImageSet, epoch_batches, epoch_order, prefetched};
use crate::error::{Error, Result};
use crate::folded::FoldedResNet;
use crate::infer::InferenceModel;
use crate::model::{Head, ResNet};
use crate::train::config::TwoPhaseConfig;
use crate::train::features::CachedFeatures;
use crate::train::history::EpochRecord;
use crate::train::learner::{Run, TwoPhase};
use crate::train::loss::TrainingLoss;
use crate::train::metrics::Tally;
use crate::train::optim::PartRates;
use crate::train::{Evaluation, evaluate};

/// Batches of a streamed set decoded ahead of the one training.
const PREFETCH: usize = 2;

impl TwoPhase {
    /// One epoch of the run, then validation: the head alone on the cached features where
    /// phase 1 allows it, else whole batches through the model (in phase 1 its frozen backbone
    /// runs folded on the CPU backends, and only the head is differentiated).
    pub(super) fn epoch(
        &self,
        mut run: Run,
        train: &ImageSet,
        valid: &ImageSet,
        device: &Device,
    ) -> Result<(Run, EpochRecord)> {
        let config = &self.config;
        let epoch = run.epoch;
        let phase1 = epoch < config.phase1_epochs;
        let scale = run.progress.lr_scale;
        let lr = config.learning_rate(epoch) * scale;
        device.seed(config.seed.wrapping_add(epoch as u64));
        let shuffle = config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(epoch as u64);
        let timer = Instant::now();
        let use_cache = phase1 && config.feature_cache && !config.augment;
        let (train_loss, train_accuracy, validation);
        if use_cache {
            if run.cache.is_none() {
                // Computed once; with a run folder, perhaps read back or resumed (said there).
                if self.run_dir.is_none() {
                    self.say(
                        "computing the frozen backbone's features once (phase-1 feature cache)",
                    );
                }
                let valid_features = (!valid.is_empty())
                    .then(|| self.cached_features(&run.model, valid, "valid", device))
                    .transpose()?;
                let train_features = self.cached_features(&run.model, train, "train", device)?;
                run.cache = Some((train_features, valid_features));
            }
            let (train_f, valid_f) = run.cache.as_ref().expect("just filled");
            let mut head = run.model.head.take().ok_or_else(no_head)?;
            let rates = StepRates::new(config, epoch, scale, None);
            (head, train_loss, train_accuracy) = self.head_epoch(
                head,
                (&mut run.optim, &run.loss),
                train_f,
                train.labels(),
                shuffle,
                &rates,
                epoch,
                device,
            )?;
            validation = valid_f
                .as_ref()
                .map(|f| head_eval(&head, f, valid.labels(), config.batch_size, device))
                .transpose()?;
            run.model.head = Some(head);
        } else {
            let frozen = phase1
                .then(|| crate::folded::folded_on(&run.model, device))
                .flatten();
            // Discriminative rates for the backbone's parts in phase 2.
            let parts = (!phase1).then(|| PartRates::new(&run.model, config.stage_lr_decay));
            let rates = StepRates::new(config, epoch, scale, parts);
            (run.model, train_loss, train_accuracy) = self.full_epoch(
                run.model,
                frozen.as_ref(),
                (&mut run.optim, &run.loss),
                train,
                shuffle,
                &rates,
                epoch,
                device,
            )?;
            validation = (!valid.is_empty())
                .then(|| evaluate(&run.model, valid, &self.batcher, config.batch_size, device))
                .transpose()?;
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            phase: if phase1 { 1 } else { 2 },
            lr,
            train_loss,
            train_accuracy,
            valid_loss: validation.as_ref().map(|e| e.loss),
            valid_accuracy: validation.as_ref().map(|e| e.accuracy),
            valid_top5: validation.as_ref().and_then(|e| e.top5),
            valid_f1: validation.as_ref().and_then(Evaluation::macro_f1),
            valid_classes: validation.map_or(Vec::new(), |e| e.class_scores()),
            seconds: timer.elapsed().as_secs_f64(),
            cached_features: use_cache,
            released_from: (!phase1).then(|| config.unfreeze.first_stage(self.phase2_epoch(epoch))),
        };
        Ok((run, record))
    }

    fn bar(&self, len: usize, epoch: usize) -> ProgressBar {
        if !self.progress {
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
    ///
    /// # Errors
    ///
    /// For a streamed set, a photo file that no longer reads.
    pub fn features(&self, model: &ResNet, set: &ImageSet, device: &Device) -> Result<Tensor<2>> {
        FeaturePass::new(self, model, device).of(set, 0..set.len())
    }

    #[allow(clippy::too_many_arguments)]
    fn full_epoch(
        &self,
        mut model: ResNet,
        frozen_backbone: Option<&FoldedResNet>,
        (optim, loss): (&mut ModuleOptimizer, &TrainingLoss),
        train: &ImageSet,
        shuffle: u64,
        rates: &StepRates,
        epoch: usize,
        device: &Device,
    ) -> Result<(ResNet, f64, f64)> {
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
        let batch_list = epoch_batches(
            train,
            &batcher,
            self.config.batch_size,
            Some(shuffle),
            device,
        );
        // A streamed set's next batches are read and decoded while this one trains.
        let ahead = if train.is_streamed() { PREFETCH } else { 0 };
        model = prefetched(batch_list, ahead, |batch_list| -> Result<ResNet> {
            let mut model = model;
            // On a CPU backend each step runs with the pool's other worker held awake: a step
            // at 32x32 pixels is hundreds of short parallel operations, each of which would
            // otherwise wake it (`keep_pool_awake`).
            let host = crate::device::is_host(device);
            for (step, batch) in batch_list.enumerate() {
                let batch = batch?;
                let n = batch.targets.dims()[0];
                let mut train_step = |model: ResNet| {
                    let (grads, batch_loss, batch_right) =
                        data_parallel(&model, loss, device, replicas, n, |replica, share, on| {
                            let images = batch.images.clone().narrow(0, share.start, share.len());
                            let targets = batch.targets.clone().narrow(0, share.start, share.len());
                            let (images, targets) = (images.to_device(on), targets.to_device(on));
                            let logits = match (frozen_backbone, &replica.head) {
                                (Some(backbone), Some(head)) => {
                                    match backbone.features(images.clone()) {
                                        Ok(features) => head.forward(features),
                                        Err(_) => replica.forward(images),
                                    }
                                }
                                _ => replica.forward(images),
                            };
                            (logits, targets)
                        });
                    let model = optim.step(rates.at(step, batches), model, grads);
                    (model, batch_loss, batch_right)
                };
                let (stepped, batch_loss, batch_right) = if host {
                    crate::device::keep_pool_awake(|| train_step(model))
                } else {
                    train_step(model)
                };
                model = stepped;
                right += batch_right;
                loss_sum += batch_loss;
                seen += n;
                bar.inc(1);
                bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
            }
            Ok(model)
        })?;
        bar.finish_and_clear();
        Ok((
            model,
            loss_sum / seen.max(1) as f64,
            right as f64 / seen.max(1) as f64,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn head_epoch(
        &self,
        mut head: Head,
        (optim, loss): (&mut ModuleOptimizer, &TrainingLoss),
        features: &CachedFeatures,
        labels: &[usize],
        shuffle: u64,
        rates: &StepRates,
        epoch: usize,
        device: &Device,
    ) -> Result<(Head, f64, f64)> {
        let replicas = &self
            .replicas(device)
            .unwrap_or_else(|_| vec![device.clone()]);
        let order = epoch_order(labels.len(), Some(shuffle));
        let batches = order.len().div_ceil(self.config.batch_size);
        let bar = self.bar(batches, epoch);
        let (mut loss_sum, mut right, mut seen) = (0.0, 0usize, 0usize);
        for (step, indices) in order.chunks(self.config.batch_size).enumerate() {
            let n = indices.len();
            let batch = features.rows(indices, device)?;
            let (grads, batch_loss, batch_right) =
                data_parallel(&head, loss, device, replicas, n, |replica, share, on| {
                    let x = batch.clone().narrow(0, share.start, share.len());
                    let x = x.to_device(on);
                    let indices = &indices[share];
                    let targets = targets(indices.iter().map(|&i| labels[i]), on);
                    (replica.forward(x), targets)
                });
            right += batch_right;
            loss_sum += batch_loss;
            seen += n;
            head = optim.step(rates.at(step, batches), head, grads);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok((
            head,
            loss_sum / seen.max(1) as f64,
            right as f64 / seen.max(1) as f64,
        ))
    }
}

/// The frozen backbone's feature pass, made ready once (each replica's model folded or moved to
/// its device) for any number of ranges of images: [`TwoPhase::features`], and the run folder's
/// feature file, which computes a few dozen images at a time.
pub(super) struct FeaturePass {
    replicas: Vec<(Device, InferenceModel)>,
    main: Device,
    batcher: ImageBatcher,
    batch_size: usize,
}

impl FeaturePass {
    pub(super) fn new(learner: &TwoPhase, model: &ResNet, device: &Device) -> Self {
        let replicas = learner
            .replicas(device)
            .unwrap_or_else(|_| vec![device.clone()]);
        Self {
            replicas: (replicas.into_iter())
                .map(|replica| {
                    let inner = replica.inner();
                    let inference = InferenceModel::new(model, &inner);
                    (inner, inference)
                })
                .collect(),
            main: device.clone().inner(),
            batcher: ImageBatcher {
                augment: None,
                ..learner.batcher
            },
            batch_size: learner.config.batch_size.max(1),
        }
    }

    /// The features of images `range` of `set`, in order, on the main device (with autodiff):
    /// each device a contiguous share of the range, in batches of the recipe's size from the
    /// share's start.
    pub(super) fn of(&self, set: &ImageSet, range: std::ops::Range<usize>) -> Result<Tensor<2>> {
        let main = &self.main;
        let chunks: Vec<Vec<Tensor<2>>> = (self.replicas.iter())
            .zip(shares(range.len(), self.replicas.len()))
            .filter(|(_, share)| !share.is_empty())
            .map(|((inner, inference), share)| {
                let images: Vec<usize> =
                    (range.start + share.start..range.start + share.end).collect();
                crate::device::on_worker_for(inner, || {
                    (images.chunks(self.batch_size))
                        .map(|indices| {
                            let batch = self.batcher.batch_of(set, indices, 0, inner)?;
                            Ok(inference.features(batch.images).to_device(main))
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect::<Result<_>>()?;
        let chunks = chunks.concat();
        if chunks.is_empty() {
            return Ok(Tensor::<2>::empty([0, 0], main).autodiff());
        }
        Ok(Tensor::cat(chunks, 0).autodiff())
    }
}

/// The learning rates of an epoch's steps: the schedule's rate at each step (it moves within
/// the epoch only in [`Schedule::OneCycle`](crate::train::Schedule::OneCycle)), times the
/// plateau schedule's scale, for the head, and for the backbone's parts their share of it.
struct StepRates {
    /// The schedule's rate at the step's fraction of the epoch, before the scale.
    schedule: Box<dyn Fn(f64) -> f64>,
    scale: f64,
    parts: Option<PartRates>,
}

impl StepRates {
    fn new(config: &TwoPhaseConfig, epoch: usize, scale: f64, parts: Option<PartRates>) -> Self {
        let config = config.clone();
        Self {
            schedule: Box::new(move |fraction| config.learning_rate_at(epoch, fraction)),
            scale,
            parts,
        }
    }

    /// The rates of step `step` of `steps`.
    fn at(&self, step: usize, steps: usize) -> ModuleLearningRate {
        let lr = (self.schedule)(step as f64 / steps.max(1) as f64) * self.scale;
        match &self.parts {
            Some(parts) => parts.at(lr),
            None => lr.into(),
        }
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

/// One step's gradients of `loss` over a batch of `n` items split across `devices`, on `main`:
/// each device runs `share(replica, range, device)` (the logits and targets of its share) on a
/// replica of `module`, its mean loss weighted by the share's part of the batch, and the
/// replicas' gradients are moved to `main` and summed (Burn's `GradientsParams::to_device` and
/// `GradientsAccumulator`, as burn-train's multi-device strategy does). Returns the gradients,
/// the batch's summed loss and its number of right answers. With one device it is the plain
/// step.
///
/// Distinct devices (several GPUs) each run their replica on a thread of their own, at once, as
/// burn-train's strategy gives each device a worker; the gradients are summed in the devices'
/// order whatever order the threads end in. A device named more than once (how the CPU
/// backends, which have one device, are given several replicas) takes its turns on the calling
/// thread.
fn data_parallel<M: Module + Sync>(
    module: &M,
    loss_fn: &TrainingLoss,
    main: &Device,
    devices: &[Device],
    n: usize,
    share: impl Fn(&M, std::ops::Range<usize>, &Device) -> (Tensor<2>, Tensor<1, Int>) + Sync,
) -> (GradientsParams, f64, usize) {
    let replica_step = |device: &Device, range: std::ops::Range<usize>| {
        let len = range.len();
        let replica = if device == main {
            module.clone()
        } else {
            module.clone().fork(device)
        };
        let (logits, targets) = share(&replica, range, device);
        let right = correct(&logits, &targets);
        let loss = loss_fn.forward(logits, targets);
        let loss_sum = loss.clone().into_scalar::<f64>() * len as f64;
        let loss = if len == n {
            loss
        } else {
            loss * (len as f64 / n as f64)
        };
        let grads = GradientsParams::from_grads(loss.backward(), &replica);
        (grads, loss_sum, right)
    };
    if devices.len() == 1 {
        return replica_step(main, 0..n);
    }
    let work: Vec<(&Device, std::ops::Range<usize>)> = (devices.iter())
        .zip(shares(n, devices.len()))
        .filter(|(_, range)| !range.is_empty())
        .collect();
    let distinct =
        (work.iter().enumerate()).all(|(i, (d, _))| work[..i].iter().all(|(e, _)| e != d));
    let results: Vec<(GradientsParams, f64, usize)> = if distinct {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (work.iter().cloned())
                .map(|(device, range)| {
                    let step = &replica_step;
                    scope.spawn(move || {
                        let (grads, loss, right) = step(device, range);
                        (grads.to_device(main, module), loss, right)
                    })
                })
                .collect();
            (threads.into_iter())
                .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    } else {
        (work.iter().cloned())
            .map(|(device, range)| {
                let (grads, loss, right) = replica_step(device, range);
                (grads.to_device(main, module), loss, right)
            })
            .collect()
    };
    let mut accumulator = GradientsAccumulator::<M>::new();
    let (mut loss_sum, mut right) = (0.0, 0);
    for (grads, loss, r) in results {
        accumulator.accumulate(module, grads);
        loss_sum += loss;
        right += r;
    }
    (accumulator.grads(), loss_sum, right)
}

pub(super) fn no_head() -> Error {
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
    features: &CachedFeatures,
    labels: &[usize],
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    let head = head.valid();
    let inner = device.clone().inner();
    // Validation is plain cross-entropy, whatever the training loss (see train::loss).
    let mut tally = Tally::new(&inner);
    let order: Vec<usize> = (0..labels.len()).collect();
    for indices in order.chunks(batch_size) {
        let x = features.range(indices[0]..indices[0] + indices.len(), device)?;
        let t = targets(indices.iter().map(|&i| labels[i]), &inner);
        tally.add(head.forward(x.inner()), t);
    }
    Ok(tally.finish(head.linear.weight.dims()[1]))
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
        let labels = [0, 1, 2, 0, 1, 2, 2];
        let step = |devices: &[Device]| {
            let plain = TrainingLoss::default();
            let (grads, loss, right) =
                data_parallel(&head, &plain, &device, devices, 7, |m, r, on| {
                    // Labels made on each replica's device: an Int tensor moved from ndarray
                    // to flex keeps ndarray's i64 where flex counts in i32.
                    let y = targets(labels[r.clone()].iter().copied(), on);
                    (
                        m.forward(x.clone().narrow(0, r.start, r.len()).to_device(on)),
                        y,
                    )
                });
            let w = grads.get::<2>(head.linear.weight.id).unwrap();
            (w.into_data().try_to_vec::<f32>().unwrap(), loss, right)
        };
        let (one, loss1, right1) = step(std::slice::from_ref(&device));
        // Replicas taking turns on one device, and on two distinct devices, each on a thread
        // of its own (flex's and ndarray's stand in for two GPUs).
        let flex = crate::device::training_device("flex").unwrap();
        let splits = [
            vec![device.clone(); 2],
            vec![device.clone(); 3],
            vec![device.clone(), flex.clone()],
            vec![device.clone(), flex, device.clone()],
        ];
        for devices in splits {
            let (many, loss, right) = step(&devices);
            let gap = one
                .iter()
                .zip(&many)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(gap < 1e-6, "{devices:?}: gradient off by {gap}");
            assert!((loss - loss1).abs() < 1e-5 && right == right1);
        }
    }
}
