//! The learning-rate finder (Smith 2017, fastai's `lr_find`): a short run whose rate grows
//! exponentially from tiny to huge, one batch per rate, and the rate where the loss fell fastest.
//!
//! It trains a copy of the model, prepared as the phase it is for prepares it (phase 1: the head
//! on the frozen backbone; phase 2: the backbone released as the recipe says), with the recipe's
//! optimizer, loss, batch size and augmentation; the model given is untouched. The losses are
//! smoothed as fastai smooths them (an exponential average, debiased), the sweep stops once the
//! smoothed loss passes four times its best (it has diverged), and two rates are suggested from
//! the smoothed curve, leaving out its first tenth and last five points as fastai does:
//! `steepest`, where it falls fastest against the log of the rate before it bottoms out, and
//! `valley`, fastai's default since 2.5, halfway along the longest stretch over which it keeps
//! falling.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;

use crate::data::{ImageBatcher, ImageSet, epoch_batches};
use crate::error::{Error, Result};
use crate::model::ResNet;
use crate::train::learner::TwoPhase;
use crate::train::loss::TrainingLoss;
use crate::train::optim::PartRates;

/// What a learning-rate sweep does.
#[derive(Debug, Clone, PartialEq)]
pub struct LrFinderConfig {
    /// The phase whose rate is sought: 1 (the head on the frozen backbone) or 2 (the backbone
    /// released as the recipe releases it).
    pub phase: usize,
    /// The first rate.
    pub start_lr: f64,
    /// The last rate, reached at the last step.
    pub end_lr: f64,
    /// Batches, one rate each (fewer where the loss diverges first).
    pub steps: usize,
}

impl LrFinderConfig {
    /// fastai's defaults: 1e-7 to 10 over 100 batches.
    pub fn new(phase: usize) -> Self {
        Self {
            phase,
            start_lr: 1e-7,
            end_lr: 10.0,
            steps: 100,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=2).contains(&self.phase) {
            return Err(Error::invalid_config("find_lr", "phase 1 or 2", self.phase));
        }
        if !(self.start_lr > 0.0 && self.end_lr > self.start_lr && self.end_lr.is_finite()) {
            let found = format!("{} to {}", self.start_lr, self.end_lr);
            return Err(Error::invalid_config("lr range", "0 < start < end", found));
        }
        if self.steps < 10 {
            return Err(Error::invalid_config("steps", "at least 10", self.steps));
        }
        Ok(())
    }

    /// The rate of step `i`.
    fn lr(&self, i: usize) -> f64 {
        let t = i as f64 / (self.steps - 1) as f64;
        self.start_lr * (self.end_lr / self.start_lr).powf(t)
    }
}

/// A learning-rate sweep: the rates, the losses and the suggestions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSweep {
    /// The phase the sweep was for.
    pub phase: usize,
    /// The rate of each step.
    pub lrs: Vec<f64>,
    /// Each step's batch loss, before its update.
    pub losses: Vec<f64>,
    /// The losses smoothed (exponential average with weight 0.98, debiased).
    pub smoothed: Vec<f64>,
    /// The rate where the smoothed loss falls fastest against the log of the rate.
    pub steepest: f64,
    /// Halfway along the longest falling stretch of the smoothed loss (fastai's valley): the
    /// rate `--phase1-lr suggested` (and 2) takes.
    pub valley: f64,
}

/// The smoothed average's weight on the past (fastai's).
const BETA: f64 = 0.98;
/// The sweep stops once the smoothed loss passes this multiple of its best.
const DIVERGED: f64 = 4.0;

impl TwoPhase {
    /// Sweeps the learning rate for `sweep.phase` on a copy of `model` over batches of `train`
    /// (see the [module docs](self)); `model` is untouched.
    ///
    /// ```no_run
    /// use resnet_transfer::data::{ImageBatcher, Preprocess, read_image_folder};
    /// use resnet_transfer::train::{LrFinderConfig, TwoPhase, TwoPhaseConfig, with_new_head};
    ///
    /// let device = resnet_transfer::device::training_device("flex")?;
    /// let photos = read_image_folder("photos".as_ref(), 224, false)?;
    /// let onnx = std::path::Path::new("resnet50-v1-12.onnx");
    /// let backbone = resnet_transfer::weights::load(onnx, &device.clone().inner())?;
    /// let model = with_new_head(backbone.model, photos.class_names.len(), 0.5, 42, &device);
    /// let learner = TwoPhase::new(TwoPhaseConfig::new(), ImageBatcher::new(Preprocess::Torch));
    /// let sweep = learner.find_lr(&model, &photos.images, &LrFinderConfig::new(1), &device)?;
    /// println!("phase 1: valley {:e}, steepest {:e}", sweep.valley, sweep.steepest);
    /// # Ok::<(), resnet_transfer::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a phase other than 1 or 2, a bad range, fewer than 10 steps
    /// or an invalid recipe; as [`TwoPhase::fit`] for a model without a head; and a sweep too
    /// short to suggest anything (the loss diverged within its first steps).
    pub fn find_lr(
        &self,
        model: &ResNet,
        train: &ImageSet,
        sweep: &LrFinderConfig,
        device: &Device,
    ) -> Result<LrSweep> {
        sweep.validate()?;
        self.config.validate()?;
        crate::device::on_worker_for(device, || self.sweep(model, train, sweep, device))
    }

    fn sweep(
        &self,
        model: &ResNet,
        train: &ImageSet,
        sweep: &LrFinderConfig,
        device: &Device,
    ) -> Result<LrSweep> {
        let classes = model.num_classes().ok_or_else(super::epoch::no_head)?;
        let weights = self.config.class_weights.of(train.labels(), classes);
        let loss_fn = TrainingLoss::new(self.config.label_smoothing, weights)?;
        let mut model = model.clone().fork(device).train();
        model = match sweep.phase {
            1 => model.freeze_backbone(),
            // What the unfreeze point releases (with gradual unfreezing, stage 4).
            _ => self.release(model, self.config.phase1_epochs)?,
        };
        let frozen = (sweep.phase == 1)
            .then(|| crate::folded::folded_on(&model, device))
            .flatten();
        let batcher = ImageBatcher {
            augment: self.config.augment.then(Default::default),
            ..self.batcher
        };
        let mut optim = self.optimizer(&model);
        // The rate swept is the head's; in phase 2 the backbone's parts follow it as in training.
        let parts = (sweep.phase == 2).then(|| PartRates::new(&model, self.config.stage_lr_decay));
        let (mut lrs, mut losses, mut smoothed) = (Vec::new(), Vec::new(), Vec::new());
        let (mut average, mut best) = (0.0, f64::INFINITY);
        'epochs: for round in 0u64.. {
            let seed = self.config.seed.wrapping_add(round.wrapping_mul(7919));
            let batches =
                epoch_batches(train, &batcher, self.config.batch_size, Some(seed), device);
            for batch in batches {
                let batch = batch?;
                let i = lrs.len();
                if i == sweep.steps {
                    break 'epochs;
                }
                let logits = match (&frozen, &model.head) {
                    (Some(backbone), Some(head)) => head.forward(backbone.features(batch.images)?),
                    _ => model.forward(batch.images),
                };
                let loss = loss_fn.forward(logits, batch.targets);
                let value = loss.clone().into_scalar::<f64>();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let lr = sweep.lr(i);
                model = match &parts {
                    Some(parts) => optim.step(parts.at(lr), model, grads),
                    None => optim.step(lr, model, grads),
                };
                average = BETA * average + (1.0 - BETA) * value;
                let debiased = average / (1.0 - BETA.powi(i as i32 + 1));
                lrs.push(lr);
                losses.push(value);
                smoothed.push(debiased);
                best = best.min(debiased);
                if !debiased.is_finite() || debiased > DIVERGED * best {
                    break 'epochs;
                }
            }
            if lrs.is_empty() {
                break; // No batch at all: an empty set.
            }
        }
        let (steepest, valley) = suggestions(&lrs, &smoothed).ok_or_else(|| {
            Error::invalid_config(
                "find_lr",
                "a sweep long enough to suggest a rate (the loss diverged at once, or too few images)",
                format!("{} steps", lrs.len()),
            )
        })?;
        Ok(LrSweep {
            phase: sweep.phase,
            lrs,
            losses,
            smoothed,
            steepest,
            valley,
        })
    }
}

/// The steepest and valley rates of a sweep's smoothed losses, leaving out the first tenth and
/// the last five points as fastai does; `None` where fewer than 3 points remain.
pub fn suggestions(lrs: &[f64], smoothed: &[f64]) -> Option<(f64, f64)> {
    let n = lrs.len().min(smoothed.len());
    let (start, end) = (n / 10, n.saturating_sub(5));
    if end < start + 3 {
        return None;
    }
    let (lrs, losses) = (&lrs[start..end], &smoothed[start..end]);
    // Steepest: the most negative slope against the log of the rate, at the slope's first point,
    // up to where the loss bottoms out (past it, a spike's average decaying would look steep).
    let bottom = (0..losses.len()).min_by(|&a, &b| losses[a].total_cmp(&losses[b]))?;
    let slope = |i: usize| (losses[i + 1] - losses[i]) / (lrs[i + 1].ln() - lrs[i].ln());
    let steepest = (0..bottom.max(1).min(losses.len() - 1))
        .min_by(|&a, &b| slope(a).total_cmp(&slope(b)))
        .map(|i| lrs[i])?;
    Some((steepest, lrs[valley_index(losses)]))
}

/// fastai's valley: the longest run of points over which the loss keeps falling (a longest
/// decreasing subsequence), and the point halfway along it (fastai's `start + ⌊s⌋ + ⌊s/2⌋`
/// with `s` a third of its length).
fn valley_index(losses: &[f64]) -> usize {
    let n = losses.len();
    let mut longest = vec![1usize; n];
    // As fastai computes it: `start` is one before the run's first point (so -1 for a run from
    // the first point).
    let (mut start, mut end) = (0isize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && longest[i] < longest[j] + 1 {
                longest[i] = longest[j] + 1;
            }
            if longest[end] < longest[i] {
                end = i;
                start = end as isize - longest[end] as isize;
            }
        }
    }
    let sections = (end as isize - start) as f64 / 3.0;
    let index = start + sections as isize + (sections / 2.0) as isize;
    index.clamp(0, n as isize - 1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loss curve flat (with noise, as a real one), then falling fastest around 1e-3, then
    /// rising: both suggestions land on the fall, before the minimum.
    #[test]
    fn suggestions_fall_on_the_descent() {
        let lrs: Vec<f64> = (0..100)
            .map(|i| 1e-7 * 1e8f64.powf(i as f64 / 99.0))
            .collect();
        let losses: Vec<f64> = (lrs.iter())
            .map(|&lr| {
                let x = lr.log10();
                // Flat at 2.3 until 1e-4, a sigmoid fall centred on 1e-3 to 0.5, a rise past 1e-1.
                0.5 + 1.8 / (1.0 + (3.0 * (x + 3.0)).exp())
                    + if x > -1.0 { 4.0 * (x + 1.0) } else { 0.0 }
            })
            .enumerate()
            .map(|(i, loss)| loss + 0.02 * (i % 2) as f64)
            .collect();
        let (steepest, valley) = suggestions(&lrs, &losses).unwrap();
        assert!(
            (steepest.log10() + 3.0).abs() < 0.2,
            "steepest {steepest:e}"
        );
        assert!(valley > 1e-4 && valley < 1e-2, "valley {valley:e}");
        assert!(suggestions(&lrs[..7], &losses[..7]).is_none(), "too short");
    }

    #[test]
    fn valley_is_halfway_along_the_longest_fall() {
        // Falls from index 2 to 11 (10 points), then rises.
        let losses = [
            5.0, 5.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 3.0, 4.0,
        ];
        let i = valley_index(&losses);
        // fastai's index: start 1 (one before the run), a third of 10 is 3: 1 + 3 + 1.
        assert_eq!(i, 5);
    }

    #[test]
    fn rates_grow_exponentially_from_start_to_end() {
        let sweep = LrFinderConfig::new(1);
        assert!((sweep.lr(0) - 1e-7).abs() < 1e-20);
        assert!((sweep.lr(99) - 10.0).abs() < 1e-9);
        assert!((sweep.lr(1) / sweep.lr(0) - sweep.lr(50) / sweep.lr(49)).abs() < 1e-9);
        assert!(
            LrFinderConfig {
                phase: 3,
                ..sweep.clone()
            }
            .validate()
            .is_err()
        );
        assert!(LrFinderConfig { steps: 5, ..sweep }.validate().is_err());
    }
}
