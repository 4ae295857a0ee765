//! [`Classifier`]: image files or pixels in, top-k labels out.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use rayon::prelude::*;

use crate::data::{Preprocess, read_image};
use crate::error::{Error, Result};
use crate::explain::{CamTarget, ClassMap, check_map_size, grad_cam};
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
/// backends), its preprocessing, input size and names, and how many photos go through it at a
/// time.
///
/// ```no_run
/// use resnet_transfer::{Classifier, data::read_image, device, weights};
///
/// let device = device::default_device()?;
/// let saved = weights::load("runs/photos".as_ref(), &device)?;
/// let classifier = Classifier::new(saved, &device);
/// classifier.warm_up(1)?;
/// let answers = classifier.classify_files(&["cat.jpg".as_ref()], 3)?;
/// let best = &answers[0].top_k[0];
/// println!("{} ({:.1}%), class {}", best.label, 100.0 * best.prob, best.index);
/// let photo = read_image("cat.jpg".as_ref(), classifier.input_size)?;
/// let logits = &classifier.classify_pixels(&[photo], 1)?[0].logits;
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
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
    /// Photos decoded and run together by [`classify_files`](Self::classify_files) and
    /// [`classify_batches`](Self::classify_batches): memory holds one batch of photos and its
    /// activations, however many photos there are.
    pub batch_size: usize,
    device: Device,
}

/// Photos per batch of a new [`Classifier`]: a ResNet50 at 224 pixels takes about 12 MB of
/// activations per photo on the CPU, so a batch of 32 about 0.4 GB.
pub const DEFAULT_BATCH_SIZE: usize = 32;

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
            batch_size: DEFAULT_BATCH_SIZE,
            device: device.clone(),
        }
    }

    /// Runs `batch` blank photos through the model once, so that a service's first answers
    /// take no longer than the rest. On the CPU backends, the first call at a batch size makes
    /// the Winograd transforms of the 3x3 weights that its tile size needs; they are kept, for
    /// every later call of this classifier (share it across threads by `Arc`: a clone is a
    /// deep copy). A new user's ResNet50 at 224 pixels
    /// took 40-65 ms for its first photo against about 20 for the next ones, and 135 ms for its
    /// first batch of 2 against 49.
    ///
    /// Warm up with the batch sizes the service will run: `warm_up(1)` for one photo a call,
    /// [`batch_size`](Self::batch_size) for [`classify_files`](Self::classify_files)' full
    /// batches. A warmed classifier gives the same answers as a cold one, to the bit.
    ///
    /// ```no_run
    /// # let device = resnet_transfer::device::default_device()?;
    /// # let saved = resnet_transfer::weights::load("runs/photos".as_ref(), &device)?;
    /// let classifier = resnet_transfer::Classifier::new(saved, &device);
    /// classifier.warm_up(1)?;
    /// # Ok::<(), resnet_transfer::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a batch of 0.
    pub fn warm_up(&self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::invalid_config("batch", "at least 1", 0));
        }
        let blank = vec![0u8; 3 * self.input_size * self.input_size];
        self.classify_pixels(&vec![blank; batch], 0).map(drop)
    }

    /// The number of classes the model tells apart (0 for a model without a head).
    pub fn num_classes(&self) -> usize {
        self.model.module().num_classes().unwrap_or(0)
    }

    /// Classifies photo files ([`read_image`]: any format it reads, upright, resized to
    /// [`input_size`](Self::input_size)), [`batch_size`](Self::batch_size) at a time.
    ///
    /// # Errors
    ///
    /// The first photo that cannot be read, named ([`Error::Image`] or [`Error::Io`]).
    pub fn classify_files(&self, paths: &[&Path], top_k: usize) -> Result<Vec<Prediction>> {
        let mut all = Vec::with_capacity(paths.len());
        for batch in self.classify_batches(paths, top_k) {
            all.extend(batch?);
        }
        Ok(all)
    }

    /// Classifies photo files as [`classify_files`](Self::classify_files) does, yielding each
    /// batch's predictions (in the files' order) as soon as it has run, so that a caller can
    /// print them and let them go: only one batch of photos is ever decoded at a time. The
    /// first error ends the iteration.
    ///
    /// ```no_run
    /// # let device = resnet_transfer::device::default_device()?;
    /// # let saved = resnet_transfer::weights::load("runs/photos".as_ref(), &device)?;
    /// # let photos: Vec<std::path::PathBuf> = Vec::new();
    /// let classifier = resnet_transfer::Classifier::new(saved, &device);
    /// let batches = classifier.classify_batches(&photos, 1);
    /// for (batch, files) in batches.zip(photos.chunks(classifier.batch_size)) {
    ///     for (file, prediction) in files.iter().zip(batch?) {
    ///         println!("{}: {}", file.display(), prediction.top_k[0].label);
    ///     }
    /// }
    /// # Ok::<(), resnet_transfer::Error>(())
    /// ```
    pub fn classify_batches<'a, P: AsRef<Path> + Sync>(
        &'a self,
        paths: &'a [P],
        top_k: usize,
    ) -> impl Iterator<Item = Result<Vec<Prediction>>> + 'a {
        let mut failed = false;
        paths
            .chunks(self.batch_size.max(1))
            .map_while(move |batch| {
                if failed {
                    return None;
                }
                // Photos decode independently, and decoding is a good share of the time.
                let images = batch
                    .par_iter()
                    .map(|p| read_image(p.as_ref(), self.input_size))
                    .collect::<Result<Vec<_>>>();
                let predictions = images.and_then(|images| self.classify_pixels(&images, top_k));
                failed = predictions.is_err();
                Some(predictions)
            })
    }

    /// Grad-CAM maps ([`grad_cam`](crate::explain::grad_cam)) of planar RGB images of
    /// `input_size` x `input_size`, for the classes `target` names (`CamTarget::TopOne`: each
    /// image's most probable class).
    ///
    /// ```no_run
    /// use resnet_transfer::explain::CamTarget;
    /// # let device = resnet_transfer::device::default_device()?;
    /// # let saved = resnet_transfer::weights::load("runs/photos".as_ref(), &device)?;
    /// let classifier = resnet_transfer::Classifier::new(saved, &device);
    /// let photo = resnet_transfer::data::read_image("cat.jpg".as_ref(), classifier.input_size)?;
    /// let map = &classifier.explain_pixels(&[photo], &CamTarget::TopOne)?[0];
    /// println!("{} seen most at cell {:?}", classifier.class_names[map.class], map.peak());
    /// # Ok::<(), resnet_transfer::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`grad_cam`](crate::explain::grad_cam): [`Error::CoarseMap`] where
    /// [`input_size`](Self::input_size) leaves the last stage a single cell (32 pixels and
    /// under); [`Error::ShapeMismatch`] for an image of the wrong size.
    pub fn explain_pixels(&self, images: &[Vec<u8>], target: &CamTarget) -> Result<Vec<ClassMap>> {
        let x = self.input_tensor(images)?;
        grad_cam(self.model.module(), x, target)
    }

    /// The last stage's size at [`input_size`](Self::input_size), or [`Error::CoarseMap`] where
    /// it is a single cell: whether [`explain_pixels`](Self::explain_pixels) can work, asked
    /// before any photo is read.
    pub fn map_size(&self) -> Result<[usize; 2]> {
        check_map_size(self.model.module(), [self.input_size, self.input_size])
    }

    /// Planar RGB images of `input_size`, preprocessed, as the model's input `[N, 3, S, S]`.
    fn input_tensor(&self, images: &[Vec<u8>]) -> Result<Tensor<4>> {
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
        let dims = [images.len(), 3, side, side];
        Ok(Tensor::from_data(TensorData::new(data, dims), &self.device))
    }

    /// Classifies planar RGB images of `input_size` x `input_size`.
    pub fn classify_pixels(&self, images: &[Vec<u8>], top_k: usize) -> Result<Vec<Prediction>> {
        let n = images.len();
        let x = self.input_tensor(images)?;
        let device = x.device();
        let logits = crate::device::on_worker_for(&device, || self.model.try_forward(x))?;
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

/// Class names for a model of `classes` classes from what a user names: `imagenet` (ImageNet's
/// 1000), `cifar10` (CIFAR-10's 10), or a text file with one name per line (blank lines and the
/// spaces around names left out), as `predict --classes` takes them.
///
/// # Errors
///
/// When the list does not hold exactly one name per class: [`Error::BadFormat`] naming the file
/// with both counts, or [`Error::InvalidConfig`] for a named list. Names put against the wrong
/// classes would label every prediction wrongly without a sign. [`Error::Io`] when the file
/// cannot be read.
pub fn class_names_from(source: &str, classes: usize) -> Result<Vec<String>> {
    let names = match source {
        "imagenet" => default_names(1000),
        "cifar10" => default_names(10),
        file => std::fs::read_to_string(file)
            .map_err(|e| Error::io(file, e))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    };
    if names.len() == classes {
        return Ok(names);
    }
    Err(match source {
        "imagenet" | "cifar10" => Error::invalid_config(
            "classes",
            format!("a list of {classes} names, one per class of the model"),
            format!("`{source}` ({} names)", names.len()),
        ),
        file => Error::BadFormat {
            path: file.into(),
            reason: format!(
                "holds {} class names (one per non-blank line), but the model has {classes} \
                 classes",
                names.len()
            ),
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNetConfig;
    use crate::weights::ModelCard;

    fn classifier(classes: usize) -> Classifier {
        let device = crate::device::device("ndarray").unwrap();
        device.seed(3);
        let config = ResNetConfig::resnet18(classes).with_width(4);
        let card = ModelCard {
            config: config.clone(),
            preprocess: Preprocess::Torch,
            input_size: 16,
            class_names: Vec::new(),
            source: "a seeded ResNet18 of width 4".into(),
        };
        let model = config.init(&device).unwrap();
        Classifier::new(SavedModel { model, card }, &device)
    }

    /// `warm_up` makes what the first call at its batch size would make (Winograd's transforms,
    /// on a CPU with the panel product), so that call makes nothing more, and changes no answer.
    #[test]
    fn warm_up_makes_what_the_first_call_would_and_changes_no_answer() {
        let device = crate::device::device("ndarray").unwrap();
        device.seed(5);
        let config = ResNetConfig::resnet18(3).with_width(16);
        let card = ModelCard {
            config: config.clone(),
            preprocess: Preprocess::Torch,
            input_size: 64,
            class_names: Vec::new(),
            source: "a seeded ResNet18 of width 16".into(),
        };
        let saved = SavedModel {
            model: config.init(&device).unwrap(),
            card,
        };
        // LIBRARY tells services to share one warmed classifier by `Arc` across threads.
        fn shared_across_threads<T: Send + Sync>() {}
        shared_across_threads::<Classifier>();
        let cold = Classifier::new(saved.clone(), &device);
        let warm = Classifier::new(saved, &device);
        let made = |c: &Classifier| c.model.fused.as_ref().map_or(0, |f| f.transforms_made());
        assert_eq!(made(&warm), 0);
        assert!(matches!(warm.warm_up(0), Err(Error::InvalidConfig { .. })));
        warm.warm_up(4).unwrap();
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::panels::available() {
            assert!(made(&warm) > 0, "warm_up made no transform");
        }
        let ready = made(&warm);
        let photos: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                (0..3 * 64 * 64)
                    .map(|j| ((31 * i + 7 * j) % 256) as u8)
                    .collect()
            })
            .collect();
        let warmed = warm.classify_pixels(&photos, 1).unwrap();
        assert_eq!(made(&warm), ready, "the first call after warm_up made more");
        let first = cold.classify_pixels(&photos, 1).unwrap();
        assert_eq!(
            made(&cold),
            ready,
            "warm_up made other transforms than a call"
        );
        for (a, b) in warmed.iter().zip(&first) {
            assert_eq!(a.logits, b.logits);
        }
    }

    /// More photos than a batch: batches of the set size, in order, with the answers of one
    /// photo at a time.
    #[test]
    fn photos_run_a_batch_at_a_time_with_the_answers_of_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<std::path::PathBuf> = (0..7u8)
            .map(|i| {
                let path = dir.path().join(format!("{i}.png"));
                image::RgbImage::from_fn(20, 16, |x, y| {
                    image::Rgb([i * 30, (x * 12) as u8, (y * 15) as u8])
                })
                .save(&path)
                .unwrap();
                path
            })
            .collect();
        let mut classifier = classifier(4);
        classifier.batch_size = 3;
        let batches: Vec<Vec<Prediction>> = classifier
            .classify_batches(&paths, 2)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let together = classifier.classify_files(&refs, 2).unwrap();
        classifier.batch_size = 1;
        let alone = classifier.classify_files(&refs, 2).unwrap();
        assert_eq!(together.len(), 7);
        for (a, b) in batches
            .concat()
            .iter()
            .zip(&alone)
            .chain(together.iter().zip(&alone))
        {
            assert_eq!(
                a.top_k.iter().map(|s| s.index).collect::<Vec<_>>(),
                b.top_k.iter().map(|s| s.index).collect::<Vec<_>>()
            );
            for (x, y) in a.logits.iter().zip(&b.logits) {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
            }
        }
        // A bad photo in the second batch: the first batch's answers, then its error.
        std::fs::write(&paths[4], b"not a photo").unwrap();
        classifier.batch_size = 3;
        let results: Vec<_> = classifier.classify_batches(&paths, 2).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert!(
            matches!(&results[1], Err(Error::Image { path, .. }) if *path == paths[4]),
            "{:?}",
            results[1]
        );
    }

    /// A phone photo stored turned, with its EXIF tag, gets the logits of the same photo stored
    /// upright (within JPEG noise), through the whole path from file to model; turned the wrong
    /// way, it gets logits 150 times further off.
    #[test]
    fn an_exif_turned_photo_gets_the_upright_photos_logits() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/orientation");
        let tmp = tempfile::tempdir().unwrap();
        let wrong = tmp.path().join("wrong.png");
        // Orientation 6 wants a quarter turn clockwise; this is a quarter turn the other way.
        image::open(dir.join("orientation-6.jpg"))
            .unwrap()
            .rotate270()
            .save(&wrong)
            .unwrap();
        let files = ["upright.jpg", "orientation-6.jpg", "orientation-8.jpg"].map(|f| dir.join(f));
        let mut paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
        paths.push(&wrong);
        let mut classifier = classifier(10);
        classifier.input_size = 48;
        let predictions = classifier.classify_files(&paths, 1).unwrap();
        let off = |p: &Prediction| {
            (predictions[0].logits.iter().zip(&p.logits))
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        };
        let wrong_way = off(&predictions[3]);
        for (file, turned) in files[1..].iter().zip(&predictions[1..3]) {
            assert!(
                off(turned) < wrong_way / 20.0,
                "{file:?}: {} against {wrong_way}",
                off(turned)
            );
        }
    }

    #[test]
    fn class_names_must_be_one_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("names.txt");
        std::fs::write(&file, "cat\n\n  dog \nbird\n").unwrap();
        let spec = file.to_str().unwrap();
        assert_eq!(class_names_from(spec, 3).unwrap(), ["cat", "dog", "bird"]);
        let err = class_names_from(spec, 10).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, Error::BadFormat { path, .. } if *path == file)
                && message.contains("holds 3 class names")
                && message.contains("has 10 classes"),
            "{message}"
        );
        assert_eq!(class_names_from("cifar10", 10).unwrap()[0], "airplane");
        let err = class_names_from("imagenet", 10).unwrap_err().to_string();
        assert!(
            err.contains("1000 names") && err.contains("10 names"),
            "{err}"
        );
        assert_eq!(classifier(5).num_classes(), 5);
    }
}
