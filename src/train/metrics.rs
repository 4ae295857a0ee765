//! Evaluation: accuracy (top-1 and top-5), per-class recall, precision and F1, and the confusion
//! matrix.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::{Device, Int, Tensor};

use crate::data::{ImageBatcher, ImageSet, epoch_batches};
use crate::error::Result;
use crate::infer::InferenceModel;
use crate::model::ResNet;

/// How a model does on a labelled set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Fraction of images classified right.
    pub accuracy: f64,
    /// Fraction of images whose class is among the model's five highest scores, for models of
    /// more than five classes (`None` otherwise, where it would always be 1).
    #[serde(default)]
    pub top5: Option<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// The predicted class of every image, in the set's order.
    pub predictions: Vec<usize>,
}

impl Evaluation {
    /// Builds the figures from true and predicted labels.
    pub fn from_predictions(
        labels: &[usize],
        predictions: Vec<usize>,
        loss: f64,
        classes: usize,
    ) -> Self {
        let mut confusion = vec![vec![0; classes]; classes];
        let mut right = 0;
        for (&t, &p) in labels.iter().zip(&predictions) {
            if t < classes && p < classes {
                confusion[t][p] += 1;
            }
            right += usize::from(t == p);
        }
        Self {
            loss,
            accuracy: right as f64 / labels.len().max(1) as f64,
            top5: None,
            confusion,
            predictions,
        }
    }

    /// Each class's recall, precision and F1 from the confusion matrix, as scikit-learn's
    /// `classification_report` has them; a figure whose denominator is zero (recall: no image
    /// of the class; precision: nothing predicted as it; F1: neither) is `None`, not 0.
    pub fn class_scores(&self) -> Vec<ClassScores> {
        (0..self.confusion.len())
            .map(|c| {
                let right = self.confusion[c][c] as f64;
                let images = self.confusion[c].iter().sum::<usize>();
                let predicted = self.confusion.iter().map(|row| row[c]).sum::<usize>();
                let recall = (images > 0).then(|| right / images as f64);
                let precision = (predicted > 0).then(|| right / predicted as f64);
                // 2·TP / (2·TP + FP + FN): defined (0) for a class with images that is never
                // predicted, though its precision is not.
                let (tp, wrong) = (right, (images + predicted) as f64 - 2.0 * right);
                let f1 = (images + predicted > 0).then(|| 2.0 * tp / (2.0 * tp + wrong));
                ClassScores {
                    images,
                    recall,
                    precision,
                    f1,
                }
            })
            .collect()
    }

    /// The mean of the classes' F1 scores (macro F1, scikit-learn's `f1_score(average="macro")`
    /// over the classes that have one); `None` where no class has one.
    pub fn macro_f1(&self) -> Option<f64> {
        let f1: Vec<f64> = self.class_scores().iter().filter_map(|s| s.f1).collect();
        (!f1.is_empty()).then(|| f1.iter().sum::<f64>() / f1.len() as f64)
    }

    /// Accuracy of each class (the confusion matrix's diagonal over its rows); `None` for a
    /// class with no image in the set, which has no accuracy (not 0%).
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        (self.confusion.iter().enumerate())
            .map(|(i, row)| {
                let images = row.iter().sum::<usize>();
                (images > 0).then(|| row[i] as f64 / images as f64)
            })
            .collect()
    }

    /// The most confused pair of different classes: (true, predicted, count).
    pub fn most_confused(&self) -> Option<(usize, usize, usize)> {
        let mut best = None;
        for (t, row) in self.confusion.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                if t != p && count > 0 && best.is_none_or(|(_, _, c)| count > c) {
                    best = Some((t, p, count));
                }
            }
        }
        best
    }
}

/// One class's figures in an [`Evaluation`]: see [`Evaluation::class_scores`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassScores {
    /// Images of the class in the set.
    pub images: usize,
    /// Of the class's images, the share predicted as it (its accuracy).
    pub recall: Option<f64>,
    /// Of the images predicted as the class, the share that are of it.
    pub precision: Option<f64>,
    /// The harmonic mean of precision and recall.
    pub f1: Option<f64>,
}

/// Evaluates `model` (in inference mode, folded on the CPU backends: [`ResNet::folded`]) on
/// `set`, on a CPU backend on a worker of its thread pool
/// ([`on_worker_for`](crate::device::on_worker_for)).
///
/// # Errors
///
/// For a streamed set ([`ImageSet::streamed`]), a photo file that no longer reads.
pub fn evaluate(
    model: &ResNet,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    crate::device::on_worker_for(device, || {
        let mut running = Running::new(model, batcher, device);
        running.add(set, batch_size)?;
        Ok(running.finish())
    })
}

/// [`evaluate`] on images that come a part at a time, such as a photo folder read a chunk at a
/// time ([`ImageFiles::chunks`](crate::data::ImageFiles::chunks)), so that memory holds one part
/// however many images there are. The figures are those of [`evaluate`] on all the parts put
/// together, in order.
///
/// # Errors
///
/// The first error among the parts.
pub fn evaluate_parts(
    model: &ResNet,
    parts: impl Iterator<Item = Result<ImageSet>> + Send,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    crate::device::on_worker_for(device, || {
        let mut running = Running::new(model, batcher, device);
        for part in parts {
            running.add(&part?, batch_size)?;
        }
        Ok(running.finish())
    })
}

/// An evaluation under way: the model in inference mode and what it has predicted so far.
struct Running<'a> {
    model: InferenceModel,
    batcher: ImageBatcher,
    device: &'a Device,
    tally: Tally,
}

impl<'a> Running<'a> {
    fn new(model: &ResNet, batcher: &ImageBatcher, device: &'a Device) -> Self {
        Self {
            model: InferenceModel::new(model, device),
            batcher: ImageBatcher {
                augment: None,
                ..*batcher
            },
            device,
            tally: Tally::new(device),
        }
    }

    fn add(&mut self, set: &ImageSet, batch_size: usize) -> Result<()> {
        for batch in epoch_batches(set, &self.batcher, batch_size, None, self.device) {
            let batch = batch?;
            let logits = self.model.forward(batch.images);
            self.tally.add(logits, batch.targets);
        }
        Ok(())
    }

    fn finish(self) -> Evaluation {
        let classes = self.model.module().num_classes().unwrap_or(0);
        self.tally.finish(classes)
    }
}

/// The figures of an evaluation gathered batch by batch from the logits and the labels: the
/// loss (plain cross-entropy), the predictions and the top-5 hits.
pub(crate) struct Tally {
    loss_fn: CrossEntropyLoss,
    labels: Vec<usize>,
    predictions: Vec<usize>,
    loss_sum: f64,
    /// Images whose class is among the five highest scores.
    top5: usize,
}

impl Tally {
    /// An empty tally, its loss computed on `device`.
    pub(crate) fn new(device: &Device) -> Self {
        Self {
            loss_fn: CrossEntropyLossConfig::new().init(device),
            labels: Vec::new(),
            predictions: Vec::new(),
            loss_sum: 0.0,
            top5: 0,
        }
    }

    /// One batch's logits and their classes.
    pub(crate) fn add(&mut self, logits: Tensor<2>, targets: Tensor<1, Int>) {
        let n = targets.dims()[0];
        self.loss_sum += self
            .loss_fn
            .forward(logits.clone(), targets.clone())
            .into_scalar::<f64>()
            * n as f64;
        let targets = targets.into_data();
        let scores = logits.into_data().convert::<f32>();
        let scores = scores.as_slice::<f32>().expect("converted to f32");
        let classes = scores.len() / n.max(1);
        for (row, target) in scores.chunks_exact(classes).zip(targets.iter::<i64>()) {
            // The first highest score, as argmax picks it.
            let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            self.predictions.push(best);
            let score = row
                .get(target as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            self.top5 += usize::from(row.iter().filter(|&&s| s > score).count() < 5);
            self.labels.push(target as usize);
        }
    }

    /// The evaluation of everything added, for a model of `classes` classes.
    pub(crate) fn finish(self, classes: usize) -> Evaluation {
        let images = self.labels.len().max(1) as f64;
        let mut evaluation = Evaluation::from_predictions(
            &self.labels,
            self.predictions,
            self.loss_sum / images,
            classes,
        );
        evaluation.top5 = (classes > 5).then(|| self.top5 as f64 / images);
        evaluation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_by_hand() {
        let e = Evaluation::from_predictions(&[0, 0, 1, 1, 2], vec![0, 1, 1, 1, 1], 0.5, 3);
        assert_eq!(
            e.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![0, 1, 0]]
        );
        assert!((e.accuracy - 0.6).abs() < 1e-12);
        assert_eq!(
            e.per_class_accuracy(),
            vec![Some(0.5), Some(1.0), Some(0.0)]
        );
        // A class absent from the set has no accuracy, not 0%.
        let e = Evaluation::from_predictions(&[0, 0], vec![0, 1], 0.5, 3);
        assert_eq!(e.per_class_accuracy(), vec![Some(0.5), None, None]);
        assert_eq!(e.most_confused(), Some((0, 1, 1)));
    }

    /// Precision, recall and F1 as scikit-learn's classification_report gives them for the same
    /// labels (y_true [0, 0, 1, 1, 2, 2, 2], y_pred [0, 1, 1, 1, 2, 0, 1]): class 0 precision
    /// 0.5, recall 0.5, F1 0.5; class 1 0.5, 1.0, 0.667; class 2 1.0, 0.333, 0.5.
    #[test]
    fn class_scores_match_scikit_learn() {
        let e =
            Evaluation::from_predictions(&[0, 0, 1, 1, 2, 2, 2], vec![0, 1, 1, 1, 2, 0, 1], 0.0, 4);
        let s = e.class_scores();
        let want = [
            (0.5, 0.5, 0.5),
            (0.5, 1.0, 2.0 / 3.0),
            (1.0, 1.0 / 3.0, 0.5),
        ];
        for (c, (p, r, f)) in want.into_iter().enumerate() {
            let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-9);
            assert!(
                close(s[c].precision, p) && close(s[c].recall, r) && close(s[c].f1, f),
                "{c}: {:?}",
                s[c]
            );
        }
        // scikit-learn's f1_score(average="macro") over the classes that have a figure.
        let macro_f1 = e.macro_f1().unwrap();
        assert!((macro_f1 - (0.5 + 2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        // Class 3: no image and never predicted: no figure at all, not 0.
        assert_eq!(
            (s[3].images, s[3].precision, s[3].recall, s[3].f1),
            (0, None, None, None)
        );
        // A class with images, never predicted: no precision, but recall 0 and F1 0, as
        // scikit-learn reports them.
        let e = Evaluation::from_predictions(&[0, 1, 1], vec![0, 0, 0], 0.0, 2);
        let s = e.class_scores();
        assert_eq!(
            (s[1].precision, s[1].recall, s[1].f1),
            (None, Some(0.0), Some(0.0))
        );
    }
}
