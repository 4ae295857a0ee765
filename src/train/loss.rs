//! The loss a training step minimizes: cross-entropy, with label smoothing and class weights
//! where the recipe asks for them.
//!
//! Validation and test losses stay plain cross-entropy, so that runs with and without these
//! options compare on the same figure (Keras's `class_weight` also weighs training only).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// How the classes of the training set weigh in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClassWeights {
    /// Every image counts the same.
    None,
    /// Each class weighs `n / (classes · n_c)` for `n` training images, `n_c` of the class:
    /// scikit-learn's `compute_class_weight("balanced")`, the weights Keras's `class_weight`
    /// takes, so a class with half the images counts twice as much per image.
    Balanced,
}

named_enum!(ClassWeights as "class_weights" { None => "none", Balanced => "balanced" });

impl ClassWeights {
    /// The weight of each of `classes` classes for a training set with these `labels`; `None`
    /// for equal weights. A class without training images weighs 0 (it never meets the loss).
    pub fn of(self, labels: &[usize], classes: usize) -> Option<Vec<f32>> {
        match self {
            ClassWeights::None => None,
            ClassWeights::Balanced => {
                let mut counts = vec![0usize; classes];
                for &label in labels.iter().filter(|&&l| l < classes) {
                    counts[label] += 1;
                }
                let n = labels.len() as f64;
                let weight = |count: usize| match count {
                    0 => 0.0,
                    c => (n / (classes as f64 * c as f64)) as f32,
                };
                Some(counts.into_iter().map(weight).collect())
            }
        }
    }
}

/// Cross-entropy of each image against its label smoothed by `smoothing`
/// (`(1 − α)·one-hot + α/classes`, as Keras's and PyTorch's `label_smoothing`), times its
/// class's weight, averaged over the batch (Keras's `class_weight`: the weighted sum over the
/// batch's size, so a batch split between replicas sums to the same loss).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingLoss {
    /// Label smoothing α, in [0, 1).
    pub smoothing: f64,
    /// Each class's weight; `None` for equal weights.
    pub weights: Option<Vec<f32>>,
}

impl TrainingLoss {
    /// The loss with `smoothing` (checked to lie in [0, 1)) and `weights`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `label_smoothing` outside [0, 1).
    pub fn new(smoothing: f64, weights: Option<Vec<f32>>) -> Result<Self> {
        if !(0.0..1.0).contains(&smoothing) {
            return Err(Error::invalid_config(
                "label_smoothing",
                "in [0, 1)",
                smoothing,
            ));
        }
        Ok(Self { smoothing, weights })
    }

    /// The batch's mean loss, `[1]`, for `logits` `[N, classes]` and `targets` `[N]`.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        let device = logits.device();
        let smoothing = (self.smoothing > 0.0).then_some(self.smoothing as f32);
        let Some(weights) = &self.weights else {
            // Burn's own cross-entropy: the plain loss, bit for bit as before these options.
            return CrossEntropyLossConfig::new()
                .with_smoothing(smoothing)
                .init(&device)
                .forward(logits, targets);
        };
        let [n, classes] = logits.dims();
        let alpha = self.smoothing as f32;
        let one_hot = Tensor::<2>::zeros([n, classes], &device).scatter(
            1,
            targets.clone().reshape([n, 1]),
            Tensor::ones([n, 1], &device),
            IndexingUpdateOp::Add,
        );
        let smoothed = one_hot * (1.0 - alpha) + alpha / classes as f32;
        let per_image = (log_softmax(logits, 1) * smoothed).sum_dim(1).reshape([n]);
        let weights = Tensor::<1>::from_data(TensorData::new(weights.clone(), [classes]), &device);
        (per_image * weights.gather(0, targets)).mean().neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(l: &TrainingLoss, logits: &[[f32; 3]], targets: &[i64]) -> f64 {
        let device = crate::device::device("ndarray").unwrap();
        let n = targets.len();
        let flat: Vec<f32> = logits.iter().flatten().copied().collect();
        let logits = Tensor::<2>::from_data(TensorData::new(flat, [n, 3]), &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets.to_vec(), [n]), &device);
        l.forward(logits, targets).into_scalar::<f64>()
    }

    /// The same loss written out in `f64`: each image's `−Σ_c t_c log p_c` times its class's
    /// weight, averaged over the batch.
    fn by_hand(alpha: f64, weights: &[f64], logits: &[[f32; 3]], targets: &[i64]) -> f64 {
        let total: f64 = (logits.iter().zip(targets))
            .map(|(row, &t)| {
                let max = row.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
                let z: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
                let log_p = |c: usize| f64::from(row[c]) - max - z.ln();
                let target =
                    |c: usize| f64::from(u8::from(c as i64 == t)) * (1.0 - alpha) + alpha / 3.0;
                -weights[t as usize] * (0..3).map(|c| target(c) * log_p(c)).sum::<f64>()
            })
            .sum();
        total / targets.len() as f64
    }

    const LOGITS: [[f32; 3]; 5] = [
        [2.0, -1.0, 0.5],
        [0.1, 0.2, 0.3],
        [-3.0, 4.0, 1.0],
        [1.5, 1.5, -2.0],
        [0.0, -0.5, 2.5],
    ];
    const TARGETS: [i64; 5] = [0, 2, 1, 1, 0];

    #[test]
    fn smoothing_and_weights_give_the_loss_written_out() {
        for alpha in [0.0, 0.1, 0.3] {
            for weights in [None, Some(vec![0.5f32, 2.0, 1.25])] {
                let w64: Vec<f64> = (weights.clone())
                    .map_or(vec![1.0; 3], |w| w.iter().map(|&v| f64::from(v)).collect());
                let l = TrainingLoss::new(alpha, weights).unwrap();
                let (got, want) = (
                    loss(&l, &LOGITS, &TARGETS),
                    by_hand(alpha, &w64, &LOGITS, &TARGETS),
                );
                assert!(
                    (got - want).abs() < 1e-5,
                    "α {alpha}, {w64:?}: {got} vs {want}"
                );
            }
        }
        assert!(TrainingLoss::new(1.0, None).is_err());
        assert!(TrainingLoss::new(-0.1, None).is_err());
    }

    /// Weighted, a batch split into shares, each share's mean loss weighted by its part of the
    /// batch, sums to the whole batch's loss: what data parallel training relies on.
    #[test]
    fn weighted_shares_sum_to_the_batchs_loss() {
        let l = TrainingLoss::new(0.1, Some(vec![0.5, 2.0, 1.25])).unwrap();
        let whole = loss(&l, &LOGITS, &TARGETS);
        let parts = loss(&l, &LOGITS[..2], &TARGETS[..2]) * 2.0 / 5.0
            + loss(&l, &LOGITS[2..], &TARGETS[2..]) * 3.0 / 5.0;
        assert!((whole - parts).abs() < 1e-6, "{whole} vs {parts}");
    }

    #[test]
    fn balanced_weights_follow_scikit_learn() {
        // sklearn: compute_class_weight("balanced", classes=[0,1,2,3], y=[0,0,0,0,0,0,1,1,2,2]) is
        // 10 / (4 · [6, 2, 2, 0]); class 3, absent, weighs 0 here.
        let labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2];
        let w = ClassWeights::Balanced.of(&labels, 4).unwrap();
        let want = [10.0 / 24.0, 10.0 / 8.0, 10.0 / 8.0, 0.0];
        assert!(
            w.iter()
                .zip(want)
                .all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6),
            "{w:?}"
        );
        assert_eq!(ClassWeights::None.of(&labels, 4), None);
        assert_eq!(
            "Balanced".parse::<ClassWeights>().unwrap(),
            ClassWeights::Balanced
        );
    }
}
