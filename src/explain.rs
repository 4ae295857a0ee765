//! Grad-CAM: where in a photo the model looked for the class it chose (Selvaraju et al. 2017,
//! "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization").
//!
//! For a class `k` with logit `y_k` and the last stage's activations `A` (channels `A_c`, each
//! `H' x W'`), each channel is weighed by the mean of the gradient `∂y_k / ∂A_c` over its cells,
//! and the map is the ReLU of the weighted sum of the channels, scaled so its largest cell is 1.
//! The gradient is Burn's autodiff: the backbone runs once in inference mode (BatchNorm with its
//! running statistics, no dropout) on the images' own device, and only the pooling and the head
//! are differentiated, on the same backend with autodiff on, so it works on every backend the
//! crate trains on (flex, ndarray, wgpu).
//!
//! The map has the last stage's resolution: 7x7 at 224x224, 4x4 at 128, 2x2 at 64, and a single
//! cell at 32x32 (CIFAR-10's own size), where there is nothing to place; there [`grad_cam`] is
//! an [`Error::CoarseMap`]. [`report::overlay_heat_map`](crate::report::overlay_heat_map) lays a
//! map over its photo.
//!
//! ```
//! use resnet_transfer::ResNetConfig;
//! use resnet_transfer::explain::{CamTarget, grad_cam};
//!
//! let device = resnet_transfer::device::default_device()?;
//! let model = ResNetConfig::resnet18(10).with_width(8).init(&device)?;
//! let images = burn::Tensor::<4>::ones([2, 3, 96, 96], &device);
//! let maps = grad_cam(&model, images, &CamTarget::TopOne)?;
//! assert_eq!((maps[0].height, maps[0].width), (3, 3));  // 96 pixels: a 3x3 map
//! assert!(maps[0].values.iter().all(|v| (0.0..=1.0).contains(v)));
//! println!("class {} at {:.0}%, peak at {:?}", maps[0].class, 100.0 * maps[0].score, maps[0].peak());
//! # Ok::<(), resnet_transfer::Error>(())
//! ```

use burn::module::Module;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::{ResNet, check_images, pool};

/// Which class each map explains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CamTarget {
    /// Each image's most probable class.
    #[default]
    TopOne,
    /// The same class for every image.
    Class(usize),
    /// One class per image, in the images' order.
    PerImage(Vec<usize>),
}

/// One image's class activation map.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassMap {
    /// The class it explains.
    pub class: usize,
    /// That class's softmax probability for the image.
    pub score: f32,
    /// Rows of the map (the last stage's height).
    pub height: usize,
    /// Columns of the map (the last stage's width).
    pub width: usize,
    /// The map, row-major, in `[0, 1]`: largest cell 1, or all 0 where no part of the image
    /// speaks for the class (the weighted sum is nowhere positive).
    pub values: Vec<f32>,
}

impl ClassMap {
    /// The value at row `y`, column `x`.
    pub fn at(&self, y: usize, x: usize) -> f32 {
        self.values[y * self.width + x]
    }

    /// The map as a list of rows (what `predict --json` prints as `"cam"`).
    pub fn rows(&self) -> Vec<Vec<f32>> {
        self.values
            .chunks(self.width.max(1))
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// The (row, column) of the largest value, the first such in row-major order.
    pub fn peak(&self) -> (usize, usize) {
        let best = (self.values.iter().enumerate()).fold((0, f32::NEG_INFINITY), |b, (i, &v)| {
            if v > b.1 { (i, v) } else { b }
        });
        (best.0 / self.width.max(1), best.0 % self.width.max(1))
    }
}

/// The Grad-CAM map of each image `[N, 3, H, W]` (preprocessed as the model wants, on any
/// device) for the class `target` names, at the last stage's resolution.
///
/// # Errors
///
/// [`Error::ShapeMismatch`] if the images are not `[N, 3, H, W]` or a
/// [`CamTarget::PerImage`] list does not have one class per image; [`Error::InvalidConfig`]
/// (`head`) for a model without a head, (`class`) for a class the head does not have;
/// [`Error::CoarseMap`] where the last stage is a single cell (inputs under 33 pixels a side).
pub fn grad_cam(model: &ResNet, images: Tensor<4>, target: &CamTarget) -> Result<Vec<ClassMap>> {
    check_images(&images)?;
    let [n, _, height, width] = images.dims();
    let Some(head) = &model.head else {
        return Err(Error::invalid_config(
            "head",
            "a model with a classifier head (Grad-CAM explains a class)",
            "a features-only model",
        ));
    };
    let classes = model.num_classes().unwrap_or(0);
    check_target(target, n, classes)?;
    let [map_height, map_width] = check_map_size(model, [height, width])?;

    // The backbone in inference mode, on the images' device without autodiff.
    let images = images.inner();
    let maps = {
        let module = model.valid();
        let device = images.device();
        crate::device::on_worker_for(&device, || module.last_stage(images))
    };
    debug_assert_eq!(maps.dims()[1..3], [map_height, map_width]);
    let weights = class_gradients(maps.clone(), model.pooling, &head.linear, target)?;
    let (chosen, probs, grads) = weights;
    // Each channel weighed by its mean gradient; the ReLU of the sum over channels.
    let alpha = grads.mean_dim(1).mean_dim(2);
    let cam = relu((maps * alpha).sum_dim(3));
    let cam = cam.into_data().convert::<f32>().try_to_vec::<f32>();
    let cam = cam.map_err(|e| Error::BadTensor {
        tensor: "grad-cam".into(),
        reason: format!("{e:?}"),
    })?;
    let cells = map_height * map_width;
    Ok((0..n)
        .map(|i| {
            let mut values = cam[i * cells..][..cells].to_vec();
            let max = values.iter().copied().fold(0.0f32, f32::max);
            if max > 0.0 {
                values
                    .iter_mut()
                    .for_each(|v| *v = (*v / max).clamp(0.0, 1.0));
            }
            ClassMap {
                class: chosen[i],
                score: probs[i * classes + chosen[i]],
                height: map_height,
                width: map_width,
                values,
            }
        })
        .collect())
}

/// The last stage's size for `input` (`[height, width]`), or [`Error::CoarseMap`] where it is
/// a single cell: the check [`grad_cam`] makes, for callers that want it before any work.
pub fn check_map_size(model: &ResNet, input: [usize; 2]) -> Result<[usize; 2]> {
    let map = model.last_stage_size(input);
    if map[0] * map[1] > 1 {
        return Ok(map);
    }
    Err(Error::CoarseMap {
        height: input[0],
        width: input[1],
        map_height: map[0],
        map_width: map[1],
    })
}

fn check_target(target: &CamTarget, n: usize, classes: usize) -> Result<()> {
    let wrong = match target {
        CamTarget::TopOne => None,
        CamTarget::Class(k) => Some(*k).filter(|&k| k >= classes),
        CamTarget::PerImage(list) if list.len() != n => {
            return Err(Error::ShapeMismatch {
                tensor: "classes (one per image)".into(),
                expected: vec![n],
                found: vec![list.len()],
            });
        }
        CamTarget::PerImage(list) => list.iter().copied().find(|&k| k >= classes),
    };
    match wrong {
        Some(k) => Err(Error::invalid_config(
            "class",
            format!(
                "a class of the model's head (0 to {})",
                classes.saturating_sub(1)
            ),
            k,
        )),
        None => Ok(()),
    }
}

/// The classes explained, the softmax probabilities `[N·K]`, and the gradient of each image's
/// chosen logit with respect to the last stage's activations `maps` (`[N, H', W', C]`, plain).
/// Only pooling and the head's Linear run with autodiff (dropout is the identity in inference).
fn class_gradients(
    maps: Tensor<4>,
    pooling: crate::model::Pooling,
    linear: &burn::nn::Linear,
    target: &CamTarget,
) -> Result<(Vec<usize>, Vec<f32>, Tensor<4>)> {
    let leaf = maps.autodiff().require_grad();
    let pooled = pool(leaf.clone(), pooling);
    let mut logits = pooled.matmul(linear.weight.val().inner().autodiff());
    if let Some(bias) = &linear.bias {
        logits = logits + bias.val().inner().autodiff().unsqueeze_dim(0);
    }
    let [n, classes] = logits.dims();
    let probs = softmax(logits.clone().inner(), 1)
        .into_data()
        .convert::<f32>();
    let probs = probs.try_to_vec::<f32>().map_err(|e| Error::BadTensor {
        tensor: "logits".into(),
        reason: format!("{e:?}"),
    })?;
    let chosen: Vec<usize> = match target {
        CamTarget::TopOne => probs
            .chunks(classes)
            .map(|p| (0..classes).fold(0, |b, k| if p[k] > p[b] { k } else { b }))
            .collect(),
        CamTarget::Class(k) => vec![*k; n],
        CamTarget::PerImage(list) => list.clone(),
    };
    let mut mask = vec![0.0f32; n * classes];
    chosen
        .iter()
        .enumerate()
        .for_each(|(i, &k)| mask[i * classes + k] = 1.0);
    let device = logits.device();
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, classes]), &device);
    // Images do not mix, so the gradient of the sum is each image's own.
    let grads = (logits * mask).sum().backward();
    let grad = leaf.grad(&grads).ok_or_else(|| Error::BadTensor {
        tensor: "last stage".into(),
        reason: "autodiff returned no gradient for it".into(),
    })?;
    Ok((chosen, probs, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNetConfig;
    use crate::model::Pooling;
    use burn::tensor::Distribution;

    fn images(n: usize, side: usize, device: &burn::tensor::Device) -> Tensor<4> {
        Tensor::random([n, 3, side, side], Distribution::Normal(0.0, 1.0), device)
    }

    /// With global average pooling and a Linear head, the gradient of logit `k` with respect to
    /// cell (y, x) of channel c is `W[c, k] / (H'·W')` wherever it is: Grad-CAM is then CAM
    /// (Zhou et al. 2016), `relu(Σ_c W[c, k] A_c)`, which this computes without autodiff.
    #[test]
    fn with_average_pooling_the_map_is_the_heads_weighted_sum() {
        let device = crate::device::device("ndarray").unwrap();
        device.seed(11);
        let model = ResNetConfig::resnet18(5)
            .with_width(4)
            .init(&device)
            .unwrap();
        let x = images(3, 96, &device);
        // Σ_c W[c, k] A_c for every class k: `[N·3·3, K]`.
        let a = model.valid().last_stage(x.clone()); // [N, 3, 3, C]
        let c = a.dims()[3];
        let w = model.head.as_ref().unwrap().linear.weight.val(); // [C, K]
        let sums = a.reshape([9 * 3, c]).matmul(w);
        let sums = sums.into_data().try_to_vec::<f32>().unwrap();
        let sum = |i: usize, cell: usize, k: usize| sums[(i * 9 + cell) * 5 + k];
        // For each image, the class with the largest positive cell (a map not all zero), and one
        // whose sum is nowhere positive where there is one (a map all zero).
        let best = |i: usize| {
            let top = |k: usize| (0..9).map(|cell| sum(i, cell, k)).fold(f32::MIN, f32::max);
            (0..5).fold(0, |b, k| if top(k) > top(b) { k } else { b })
        };
        let classes: Vec<usize> = (0..3).map(best).collect();
        let maps = grad_cam(&model, x.clone(), &CamTarget::PerImage(classes.clone())).unwrap();
        for (i, map) in maps.iter().enumerate() {
            assert_eq!((map.class, map.height, map.width), (classes[i], 3, 3));
            let want: Vec<f32> = (0..9)
                .map(|cell| sum(i, cell, classes[i]).max(0.0))
                .collect();
            let max = want.iter().copied().fold(0.0, f32::max);
            assert!(max > 0.0, "image {i}: a map that is not all zero");
            for (got, want) in map.values.iter().zip(&want) {
                assert!((got - want / max).abs() < 1e-5, "{got} vs {}", want / max);
            }
            assert!(map.values.contains(&1.0));
        }
        let nowhere = (0..5).find(|&k| (0..9).all(|cell| sum(0, cell, k) <= 0.0));
        if let Some(k) = nowhere {
            let map = &grad_cam(&model, x, &CamTarget::Class(k)).unwrap()[0];
            assert!(map.values.iter().all(|&v| v == 0.0), "{map:?}");
        }
    }

    /// Top-1 picks the most probable class, whose score is its softmax probability; the model
    /// in training mode (on an autodiff device, dropout set) gives the inference-mode maps.
    #[test]
    fn top_one_is_the_predicted_class_and_training_mode_changes_nothing() {
        let device = crate::device::device("ndarray").unwrap();
        device.seed(12);
        let config = ResNetConfig::resnet18(4).with_width(4).with_dropout(0.5);
        let model = config.init(&device).unwrap();
        let x = images(2, 64, &device);
        let maps = grad_cam(&model, x.clone(), &CamTarget::TopOne).unwrap();
        let probs = softmax(model.valid().forward(x.clone()), 1);
        let probs = probs.into_data().try_to_vec::<f32>().unwrap();
        for (i, map) in maps.iter().enumerate() {
            let p = &probs[i * 4..][..4];
            let top = (0..4).fold(0, |b, k| if p[k] > p[b] { k } else { b });
            assert_eq!(map.class, top);
            assert!((map.score - p[top]).abs() < 1e-5);
            assert_eq!((map.height, map.width), (2, 2));
        }
        let training = model.fork(&device.clone().autodiff()).train();
        let again = grad_cam(&training, x, &CamTarget::TopOne).unwrap();
        for (a, b) in maps.iter().zip(&again) {
            assert_eq!(a.class, b.class);
            let gap = (a.values.iter().zip(&b.values)).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(gap < 1e-5, "training mode moved the map by {gap}");
        }
    }

    /// Max pooling sends the gradient to each channel's largest cell only; the map is still a
    /// map in [0, 1].
    #[test]
    fn max_pooling_gives_a_map_too() {
        let device = crate::device::device("flex").unwrap();
        device.seed(13);
        let config = ResNetConfig::resnet18(3)
            .with_width(4)
            .with_pooling(Pooling::Max);
        let model = config.init(&device).unwrap();
        let maps = grad_cam(&model, images(2, 128, &device), &CamTarget::TopOne).unwrap();
        for map in &maps {
            assert_eq!((map.height, map.width), (4, 4));
            assert!(map.values.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let device = crate::device::device("ndarray").unwrap();
        device.seed(14);
        let model = ResNetConfig::resnet50(3)
            .with_width(4)
            .init(&device)
            .unwrap();
        let err = grad_cam(&model, images(1, 32, &device), &CamTarget::TopOne).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::CoarseMap {
                    height: 32,
                    width: 32,
                    map_height: 1,
                    map_width: 1
                }
            ) && text.contains("32x32")
                && text.contains("1x1")
                && text.contains("more than 32x32"),
            "{text}"
        );
        assert_eq!(model.last_stage_size([64, 64]), [2, 2]);
        assert_eq!(
            model.last_stage_size([33, 33]),
            [2, 2],
            "the first size with a map"
        );
        assert_eq!(model.last_stage_size([224, 224]), [7, 7]);
        assert_eq!(model.last_stage_size([33, 65]), [2, 3]);
        let x = || images(2, 64, &device);
        let err = grad_cam(&model, x(), &CamTarget::Class(3)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "class", .. }),
            "{err}"
        );
        let err = grad_cam(&model, x(), &CamTarget::PerImage(vec![0])).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let headless = ResNetConfig::resnet18(3).with_width(4);
        let headless = ResNet {
            head: None,
            ..headless.init(&device).unwrap()
        };
        let err = grad_cam(&headless, x(), &CamTarget::TopOne).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "head", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_map_reads_as_rows_and_has_a_peak() {
        let map = ClassMap {
            class: 0,
            score: 0.5,
            height: 2,
            width: 3,
            values: vec![0.0, 0.2, 0.1, 0.3, 1.0, 0.4],
        };
        assert_eq!(map.rows(), vec![vec![0.0, 0.2, 0.1], vec![0.3, 1.0, 0.4]]);
        assert_eq!(map.peak(), (1, 1));
        assert_eq!(map.at(0, 2), 0.1);
    }
}
