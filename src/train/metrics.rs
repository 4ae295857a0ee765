//! Evaluation: accuracy, per-class accuracy and the confusion matrix.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::Device;

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
            confusion,
            predictions,
        }
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

/// Evaluates `model` (in inference mode, folded on the CPU backends: [`ResNet::folded`]) on
/// `set`, on a worker of the CPU backends' thread
/// pool ([`on_pool_worker`](crate::device::on_pool_worker)).
pub fn evaluate(
    model: &ResNet,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    crate::device::on_pool_worker(|| evaluate_here(model, set, batcher, batch_size, device))
}

fn evaluate_here(
    model: &ResNet,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    let mut running = Running::new(model, batcher, device);
    running.add(set, batch_size);
    running.finish()
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
    crate::device::on_pool_worker(|| {
        let mut running = Running::new(model, batcher, device);
        for part in parts {
            running.add(&part?, batch_size);
        }
        Ok(running.finish())
    })
}

/// An evaluation under way: the model in inference mode and what it has predicted so far.
struct Running<'a> {
    model: InferenceModel,
    batcher: ImageBatcher,
    loss_fn: CrossEntropyLoss,
    device: &'a Device,
    labels: Vec<usize>,
    predictions: Vec<usize>,
    loss_sum: f64,
}

impl<'a> Running<'a> {
    fn new(model: &ResNet, batcher: &ImageBatcher, device: &'a Device) -> Self {
        Self {
            model: InferenceModel::new(model, device),
            batcher: ImageBatcher {
                augment: None,
                ..*batcher
            },
            loss_fn: CrossEntropyLossConfig::new().init(device),
            device,
            labels: Vec::new(),
            predictions: Vec::new(),
            loss_sum: 0.0,
        }
    }

    fn add(&mut self, set: &ImageSet, batch_size: usize) {
        for batch in epoch_batches(set, &self.batcher, batch_size, None, self.device) {
            let n = batch.targets.dims()[0];
            let logits = self.model.forward(batch.images);
            self.loss_sum += self
                .loss_fn
                .forward(logits.clone(), batch.targets)
                .into_scalar::<f64>()
                * n as f64;
            let argmax = logits.argmax(1).into_data();
            self.predictions
                .extend(argmax.iter::<i64>().map(|v| v as usize));
        }
        self.labels.extend_from_slice(set.labels());
    }

    fn finish(self) -> Evaluation {
        let classes = self.model.module().num_classes().unwrap_or(0);
        Evaluation::from_predictions(
            &self.labels,
            self.predictions,
            self.loss_sum / self.labels.len().max(1) as f64,
            classes,
        )
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
}
