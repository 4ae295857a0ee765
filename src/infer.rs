//! [`Classifier`]: image files or pixels in, top-k labels out.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::{Preprocess, read_image};
use crate::error::{Error, Result};
use crate::folded::FoldedResNet;
use crate::model::{ResNet, check_images};
use crate::weights::SavedModel;

/// One class of a prediction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scored {
    /// Class index.
    pub index: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub prob: f32,
}

/// The prediction for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most probable classes, best first.
    pub top_k: Vec<Scored>,
    /// All logits.
    pub logits: Vec<f32>,
}

/// A model ready to classify images: inference mode (folded, [`ResNet::folded`], on the CPU
/// backends), its preprocessing, input size and names.
///
/// [`ResNet::folded`]: crate::ResNet::folded
#[derive(Debug, Clone)]
pub struct Classifier {
    model: InferenceModel,
    /// The preprocessing applied to every image.
    pub preprocess: Preprocess,
    /// Images are resized to this square side.
    pub input_size: usize,
    /// Class names in label order.
    pub class_names: Vec<String>,
    device: Device,
}

impl Classifier {
    /// A classifier for a loaded model, with the preprocessing, size and names its card gives.
    /// Names missing from the card are filled in: ImageNet's for 1000 classes, CIFAR-10's for
    /// 10, `class N` otherwise.
    pub fn new(saved: SavedModel, device: &Device) -> Self {
        let classes = saved.model.num_classes().unwrap_or(0);
        let class_names = if saved.card.class_names.len() == classes {
            saved.card.class_names
        } else {
            default_names(classes)
        };
        Self {
            model: InferenceModel::new(&saved.model, device),
            preprocess: saved.card.preprocess,
            input_size: saved.card.input_size,
            class_names,
            device: device.clone(),
        }
    }

    /// Classifies image files (PNG or JPEG), resized to [`input_size`](Self::input_size).
    pub fn classify_files(&self, paths: &[&Path], top_k: usize) -> Result<Vec<Prediction>> {
        let images = paths
            .iter()
            .map(|p| read_image(p, self.input_size))
            .collect::<Result<Vec<_>>>()?;
        self.classify_pixels(&images, top_k)
    }

    /// Classifies planar RGB images of `input_size` x `input_size`.
    pub fn classify_pixels(&self, images: &[Vec<u8>], top_k: usize) -> Result<Vec<Prediction>> {
        let side = self.input_size;
        let per_image = 3 * side * side;
        let mut data = vec![0.0f32; images.len() * per_image];
        for (i, (image, out)) in images.iter().zip(data.chunks_mut(per_image)).enumerate() {
            if image.len() != per_image {
                return Err(Error::ShapeMismatch {
                    tensor: format!("images[{i}]"),
                    expected: vec![3, side, side],
                    found: vec![image.len()],
                });
            }
            self.preprocess.apply(image, out);
        }
        let n = images.len();
        let x = Tensor::<4>::from_data(TensorData::new(data, [n, 3, side, side]), &self.device);
        let logits = crate::device::on_pool_worker(|| self.model.try_forward(x))?;
        let classes = logits.dims()[1];
        let probs = softmax(logits.clone(), 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let logits = logits.into_data().try_to_vec::<f32>().unwrap_or_default();
        Ok((0..n)
            .map(|i| {
                let p = &probs[i * classes..(i + 1) * classes];
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                Prediction {
                    top_k: order
                        .into_iter()
                        .take(top_k)
                        .map(|index| Scored {
                            index,
                            label: self.class_names.get(index).cloned().unwrap_or_default(),
                            prob: p[index],
                        })
                        .collect(),
                    logits: logits[i * classes..(i + 1) * classes].to_vec(),
                }
            })
            .collect())
    }
}

/// Class names for a head of `classes` outputs when nothing better is known.
pub fn default_names(classes: usize) -> Vec<String> {
    match classes {
        1000 => crate::weights::imagenet_classes()
            .into_iter()
            .map(String::from)
            .collect(),
        10 => crate::data::cifar10::CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        n => (0..n).map(|i| format!("class {i}")).collect(),
    }
}

/// A model ready for inference on a device: folded ([`FoldedResNet`]) on the CPU backends, where
/// that is faster, the module itself elsewhere (a GPU runs the module's own kernels). What
/// [`evaluate`](crate::train::evaluate), the phase-1 feature pass and
/// [`Classifier`](crate::Classifier) run.
#[derive(Debug, Clone)]
pub(crate) struct InferenceModel {
    module: ResNet,
    fused: Option<FoldedResNet>,
}

impl InferenceModel {
    /// `model` in inference mode, folded when `device` is a CPU backend's.
    pub(crate) fn new(model: &ResNet, device: &Device) -> Self {
        let module = model.valid();
        let fused = crate::folded::folded_on(&module, device);
        Self { module, fused }
    }

    /// Logits (or features, without a head) for `[N, 3, H, W]` images.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] if the images are not `[N, 3, H, W]`.
    pub(crate) fn try_forward(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        check_images(&images)?;
        Ok(self.forward(images))
    }

    /// [`try_forward`](Self::try_forward) for images the caller has checked.
    pub(crate) fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.run(images, FoldedResNet::forward, ResNet::forward)
    }

    /// The pooled features of images the caller has checked.
    pub(crate) fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.run(images, FoldedResNet::features, ResNet::features)
    }

    /// The module itself, in inference mode.
    pub(crate) fn module(&self) -> &ResNet {
        &self.module
    }

    /// The folded path where there is one; the module where not, or where the folded path
    /// cannot read the images (a dtype it does not take).
    fn run(
        &self,
        images: Tensor<4>,
        fused: fn(&FoldedResNet, Tensor<4>) -> Result<Tensor<2>>,
        module: fn(&ResNet, Tensor<4>) -> Tensor<2>,
    ) -> Tensor<2> {
        self.fused
            .as_ref()
            .and_then(|f| fused(f, images.clone()).ok())
            .unwrap_or_else(|| module(&self.module, images))
    }
}
