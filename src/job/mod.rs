//! The whole fine-tuning job behind the `train_cifar10` and `fine_tune` examples, for any
//! labelled images: weights by catalog name or file, a new seeded head, the two phases with
//! checkpoints and resuming, the test evaluation, the saved model and the report.
//!
//! A run owns its folder: one process at a time holds it ([`files::lock_folder`]); its recipe is
//! saved when it starts and a resume must give the same ([`recipe`]); a run that ends well
//! removes its checkpoint, as Keras's `BackupAndRestore` does, unless asked to keep it.
//!
//! ```no_run
//! use resnet_transfer::data::read_image_folder;
//! use resnet_transfer::job::{FineTuneJob, JobData};
//!
//! let photos = read_image_folder("photos/train".as_ref(), 224, false)?;
//! let valid = read_image_folder("photos/valid".as_ref(), 224, false)?;
//! let data = JobData {
//!     source: "photos/".into(),
//!     class_names: photos.class_names,
//!     train: photos.images,
//!     test: valid.images.clone(),
//!     valid: valid.images,
//!     notes: Vec::new(),
//!     options: vec![("images".into(), "photos/train".into())],
//! };
//! let done = FineTuneJob::new("resnet50-v1-12", "runs/photos").with_input_size(224).run(&data)?;
//! println!("test accuracy {:.1}%", 100.0 * done.evaluation.accuracy);
//! # Ok::<(), resnet_transfer::Error>(())
//! ```

pub mod recipe;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;

use crate::data::{ImageBatcher, ImageSet};
use crate::error::{Error, Result};
use crate::files::{self, write_atomic};
use crate::model::{BatchNormMode, ResNet};
use crate::train::{Evaluation, History, TwoPhase, TwoPhaseConfig, evaluate, with_new_head};
use crate::weights::{self, ModelCard, SavedModel};

use recipe::{JobRecipe, RunFolder, read_json};

/// The images of a job, already split, with their class names.
#[derive(Debug, Clone)]
pub struct JobData {
    /// Training images (at least one).
    pub train: ImageSet,
    /// Validation images, evaluated after every epoch (early stopping, the schedule, the jump).
    /// Empty for a run without validation ([`TwoPhase::fit`]).
    pub valid: ImageSet,
    /// Images of the final evaluation, the confusion matrix and the prediction grid (at least
    /// one).
    pub test: ImageSet,
    /// Class names in label order; they go into the saved model's card and the report.
    pub class_names: Vec<String>,
    /// Where the images came from, in words (the model card and the summary say it).
    pub source: String,
    /// Lines for the summary, as (what, value).
    pub notes: Vec<(String, String)>,
    /// The options that chose these images (sample sizes, folders, shares), as (name, value):
    /// saved with the run (`job.json`) and compared when it is resumed, beside a digest of each
    /// set, so that a resumed run trains on the images it started with.
    pub options: Vec<(String, String)>,
}

/// A two-phase fine-tuning run, written to a folder.
#[derive(Debug, Clone)]
pub struct FineTuneJob {
    /// The recipe.
    pub config: TwoPhaseConfig,
    /// ImageNet weights: a catalog name, an ONNX file, a saved model or a run folder
    /// ([`weights::resolve`]).
    pub weights: String,
    /// Backend name ([`crate::device::training_device`]).
    pub backend: String,
    /// Data-parallel training on these device indices of the backend
    /// ([`crate::device::training_devices`], [`TwoPhase::with_devices`]); empty for the default
    /// device alone.
    pub devices: Vec<usize>,
    /// The square side the model sees; images of another size are resized to it.
    pub input_size: usize,
    /// The run folder: checkpoints, model, history, report.
    pub out: PathBuf,
    /// Continue the run found in [`out`](Self::out), with the recipe it was started with: a job
    /// whose recipe differs (anything but more epochs than planned, the backend, the devices,
    /// [`progress`](Self::progress) and [`keep_checkpoints`](Self::keep_checkpoints)) is refused with
    /// [`Error::RecipeChanged`], naming every difference, and a finished run with
    /// [`Error::RunFinished`]. A run folder without a checkpoint (a run killed before its first
    /// epoch ended) starts over exactly as a fresh run does.
    pub resume: bool,
    /// Keep `checkpoint/` (and phase 1's `features/`) when the run ends well (by default they
    /// are removed, as Keras's `BackupAndRestore` does: the model and report hold the result). A
    /// kept checkpoint lets a finished run be resumed with more epochs.
    pub keep_checkpoints: bool,
    /// Download catalog weights that are not cached.
    pub download: bool,
    /// Progress bars and lines on standard error (as `Downloader::progress` and the downloads'
    /// `progress` arguments).
    pub progress: bool,
    /// Sweep the learning rate of this phase (1 or 2) before training ([`TwoPhase::find_lr`]),
    /// writing `lr-finder-phase<N>.png` and `.json` into the run folder.
    pub find_lr: Option<usize>,
    /// Train phase 1 (index 0) or 2 (index 1) at the rate its sweep suggests (the valley) instead
    /// of the recipe's; the sweep runs for it whether or not [`find_lr`](Self::find_lr) names
    /// it. A resumed run keeps the rate it was started with.
    pub suggested_lr: [bool; 2],
    /// The bytes phase 1's cached features may take in memory; larger ones stay in the run
    /// folder (`features/*.f32`) and are read a batch at a time
    /// ([`TwoPhase::memory_budget`]). Not part of the recipe: it may change on resume.
    pub memory_budget: u64,
}

/// What a finished job returns (and has written to its folder).
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The trained model with its card (saved as `model.bpk` + `model.json`).
    pub model: SavedModel,
    /// Every epoch.
    pub history: History,
    /// The evaluation on [`JobData::test`].
    pub evaluation: Evaluation,
}

impl FineTuneJob {
    /// A job with the default recipe, on the default backend, at 32x32, downloading weights if
    /// needed, with progress shown.
    pub fn new(weights: &str, out: impl Into<PathBuf>) -> Self {
        Self {
            config: TwoPhaseConfig::new(),
            weights: weights.to_string(),
            backend: crate::BackendKind::default().to_string(),
            devices: Vec::new(),
            input_size: 32,
            out: out.into(),
            resume: false,
            keep_checkpoints: false,
            download: true,
            progress: true,
            find_lr: None,
            suggested_lr: [false; 2],
            memory_budget: crate::data::default_memory_budget(),
        }
    }

    /// The same job at another input side.
    pub fn with_input_size(mut self, input_size: usize) -> Self {
        self.input_size = input_size;
        self
    }

    fn say(&self, line: &str) {
        if self.progress {
            eprintln!("{line}");
        }
    }

    /// Runs the job: trains, evaluates, saves the model and writes the report into
    /// [`out`](Self::out). Refuses a folder that holds a run unless [`resume`](Self::resume) is
    /// set, and a folder another process holds ([`Error::RunLocked`]).
    ///
    /// Everything the inputs alone decide is checked before the folder is touched: the recipe,
    /// the classes, a training or test set that is empty, early stopping or the plateau schedule
    /// without validation images, and `out` being a file. A resume is checked against the saved
    /// recipe before anything is written. Temporary files a killed write left in the folder are
    /// removed at the start.
    pub fn run(&self, data: &JobData) -> Result<JobOutcome> {
        let started = Instant::now();
        self.validate(data)?;
        files::check_output_folder("--out", &self.out)?;
        let devices = crate::device::training_devices(&self.backend, &self.devices)?;
        let device = devices[0].clone();
        let inference = device.clone().inner();

        // From here on this process holds the folder; what it holds is read under the lock.
        let _lock = files::lock_folder(&self.out)?;
        let recipe = self.recipe(data)?;
        let mut job = self.clone();
        job.keep_saved_rates()?;
        let folder = job.open_folder(&recipe)?;
        let (model, card) = job.starting_model(&folder, data, &inference)?;
        job.find_rates(&model, data, &card, &device)?;
        job.save_recipe(&folder, &recipe, &card)?;
        job.train(data, (model, card), (devices, &inference), &folder, started)
    }

    /// The rest of [`run`](Self::run), once the recipe is settled: fit, evaluate, finish.
    fn train(
        &self,
        data: &JobData,
        (model, card): (ResNet, ModelCard),
        (devices, inference): (Vec<Device>, &Device),
        folder: &RunFolder,
        started: Instant,
    ) -> Result<JobOutcome> {
        let device = devices[0].clone();
        self.say(&format!(
            "ResNet{} on {} ({} training, {} validation, {} test images of {} classes, {}x{} px, preprocessing {})",
            card.config.depth,
            self.backend_sentence(),
            data.train.len(),
            data.valid.len(),
            data.test.len(),
            data.class_names.len(),
            self.input_size,
            self.input_size,
            card.preprocess
        ));

        let learner = self.learner(&card, data, devices);
        let batcher = learner.batcher;
        let (model, history) = learner.fit(model, &data.train, &data.valid, &device)?;
        let test_batcher = ImageBatcher {
            size: (self.input_size != data.test.height()).then_some(self.input_size),
            ..batcher
        };
        let evaluation = evaluate(
            &model,
            &data.test,
            &test_batcher,
            self.config.batch_size,
            inference,
        )?;
        let saved = SavedModel { model, card };
        self.finish(folder, data, &saved, &history, &evaluation, started)?;
        Ok(JobOutcome {
            model: saved,
            history,
            evaluation,
        })
    }

    /// The learner this job trains with: the card's preprocessing, images resized to the input
    /// size, checkpoints in the run folder, data parallel over `devices` where there are several.
    fn learner(&self, card: &ModelCard, data: &JobData, devices: Vec<Device>) -> TwoPhase {
        TwoPhase {
            config: self.config.clone(),
            batcher: ImageBatcher {
                preprocess: card.preprocess,
                size: (self.input_size != data.train.height()).then_some(self.input_size),
                augment: None,
            },
            run_dir: Some(self.out.clone()),
            progress: self.progress,
            memory_budget: self.memory_budget,
            devices: if devices.len() > 1 {
                devices
            } else {
                Vec::new()
            },
        }
    }

    /// A resumed run whose rates were suggested keeps the rates it started with (its
    /// `config.json`), rather than sweeping again.
    fn keep_saved_rates(&mut self) -> Result<()> {
        if !(self.resume && self.suggested_lr.contains(&true)) {
            return Ok(());
        }
        if let Some(saved) = RunFolder::read(&self.out)?.config {
            if self.suggested_lr[0] {
                self.config.phase1_lr = saved.phase1_lr;
            }
            if self.suggested_lr[1] {
                self.config.phase2_lr = saved.phase2_lr;
            }
            self.suggested_lr = [false; 2];
        }
        Ok(())
    }

    /// The learning-rate sweeps this job asks for ([`find_lr`](Self::find_lr), and the phases
    /// whose rate is [`suggested_lr`](Self::suggested_lr)), on a copy of `model`: each writes
    /// `lr-finder-phase<N>.png` and `.json`, and a suggested rate becomes the recipe's.
    fn find_rates(
        &mut self,
        model: &ResNet,
        data: &JobData,
        card: &ModelCard,
        device: &Device,
    ) -> Result<()> {
        for phase in [1, 2] {
            let suggested = self.suggested_lr[phase - 1];
            if !(suggested || self.find_lr == Some(phase)) {
                continue;
            }
            let epochs = [self.config.phase1_epochs, self.config.phase2_epochs][phase - 1];
            let name = format!("lr-finder-phase{phase}");
            if epochs == 0 {
                self.say(&format!(
                    "no learning-rate sweep for phase {phase}: it has no epochs"
                ));
                self.suggested_lr[phase - 1] = false;
                continue;
            }
            if !suggested && self.resume && self.out.join(format!("{name}.json")).is_file() {
                self.say(&format!(
                    "the run's {name}.png is kept: a resumed run does not sweep again"
                ));
                continue;
            }
            let learner = TwoPhase {
                run_dir: None,
                ..self.learner(card, data, Vec::new())
            };
            let sweep = crate::train::LrFinderConfig::new(phase);
            let found = learner.find_lr(model, &data.train, &sweep, device)?;
            crate::report::draw_lr_finder(&self.out.join(format!("{name}.png")), &found)?;
            write_json(&self.out.join(format!("{name}.json")), &found)?;
            self.say(&format!(
                "learning-rate finder, phase {phase}: steepest {:.1e}, valley {:.1e} ({name}.png)",
                found.steepest, found.valley
            ));
            if suggested {
                match phase {
                    1 => self.config.phase1_lr = found.valley,
                    _ => self.config.phase2_lr = found.valley,
                }
                // Rounded for reading: a resume takes `suggested` again, which keeps the
                // exact rate (config.json), where the rounded one differs from it.
                self.say(&format!(
                    "phase {phase} trains at the suggested {:.1e} (a --resume keeps it: give \
                     --phase{phase}-lr suggested again)",
                    found.valley
                ));
            }
        }
        Ok(())
    }

    /// Refuses, before anything is read or written, a job that cannot run.
    fn validate(&self, data: &JobData) -> Result<()> {
        self.config.validate_for(!data.valid.is_empty())?;
        if self.input_size == 0 {
            return Err(Error::invalid_config("input_size", "at least 1", 0));
        }
        if data.class_names.len() < 2 {
            return Err(Error::invalid_config(
                "class_names",
                "at least two classes",
                format!("{:?}", data.class_names),
            ));
        }
        for (field, set) in [("train", &data.train), ("test", &data.test)] {
            if set.is_empty() {
                return Err(Error::invalid_config(
                    field,
                    "at least one image",
                    "an empty set",
                ));
            }
        }
        // A class without a training image is one the model can never learn (and balanced class
        // weights would give it no weight): refused by name, as a split can leave one so.
        let counts = data.train.class_counts(data.class_names.len());
        let missing: Vec<String> = (data.class_names.iter().zip(&counts))
            .filter(|&(_, &count)| count == 0)
            .map(|(name, _)| name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid_config(
                "train",
                "at least one training image of every class (give the class more images, hold out a smaller share for validation, or give --valid DIR)",
                format!("none of {}", crate::names::abridged(&missing, 10)),
            ));
        }
        Ok(())
    }

    /// The run folder as this job finds it (the caller holds its lock): a run there is refused
    /// unless resumed, a resume must keep the run's recipe, and temporaries a kill left go.
    fn open_folder(&self, recipe: &JobRecipe) -> Result<RunFolder> {
        let folder = RunFolder::read(&self.out)?;
        if folder.holds_run() && !self.resume {
            return Err(Error::RunExists {
                path: self.out.clone(),
            });
        }
        if self.resume {
            folder.check_resume(&self.config, recipe)?;
        }
        for dir in [self.out.clone(), self.out.join("checkpoint")] {
            for file in files::remove_temporaries(&dir)? {
                self.say(&format!(
                    "removed {}, left by a write that was killed",
                    file.display()
                ));
            }
        }
        if let Some(saved) = &folder.job
            && (&saved.backend, &saved.devices) != (&self.backend, &self.devices)
        {
            self.say(&format!(
                "the run started on {} {:?} and continues on {} {:?}",
                saved.backend, saved.devices, self.backend, self.devices
            ));
        }
        Ok(folder)
    }

    /// The model the run trains and its card: the architecture of a checkpointed run (the
    /// checkpoint then holds the weights), else the ImageNet weights with a new seeded head.
    fn starting_model(
        &self,
        folder: &RunFolder,
        data: &JobData,
        inference: &Device,
    ) -> Result<(ResNet, ModelCard)> {
        if folder.checkpoint.is_some() {
            let card: ModelCard = read_json(&self.out.join("model-card.json"))?;
            if card.class_names != data.class_names {
                return Err(Error::invalid_config(
                    "class_names",
                    format!("the run's classes {:?}", card.class_names),
                    format!("{:?}", data.class_names),
                ));
            }
            return Ok((card.config.init(inference)?, card));
        }
        if self.resume {
            self.say(&format!(
                "{} holds no checkpoint yet: training starts at the first epoch (a feature pass it began goes on)",
                self.out.display()
            ));
        }
        let classes = data.class_names.len();
        let loaded = weights::load_named(&self.weights, inference, self.download, self.progress)?;
        if self.config.batch_norm == BatchNormMode::Training && holds_no_statistics(&loaded.model) {
            // Printed even with --quiet: the run trains another network than the user thinks.
            eprintln!(
                "warning: the BatchNorm layers of {} hold no statistics (an ONNX export with \
                 BatchNorm folded into the convolutions, as torch.onnx.export does by default, \
                 or into a Mul and an Add, as tf2onnx does): \
                 with --batch-norm training, batch statistics normalise away the folded scales \
                 and phase 2 starts from another network than the one exported. Keep \
                 --batch-norm inference, or export with BatchNorm kept \
                 (torch.onnx.export(..., dynamo=False, training=torch.onnx.TrainingMode.PRESERVE))",
                self.weights
            );
        }
        let model = with_new_head(
            loaded.model,
            classes,
            self.config.dropout,
            self.config.seed,
            inference,
        );
        let card = ModelCard {
            config: (loaded.card.config.clone())
                .with_num_classes(Some(classes))
                .with_dropout(self.config.dropout),
            preprocess: loaded.card.preprocess,
            input_size: self.input_size,
            class_names: data.class_names.clone(),
            source: format!("{} fine-tuned on {}", self.weights, data.source),
        };
        Ok((model, card))
    }

    /// The recipe, written when the run starts and never again: a resume was checked against
    /// it (a file missing here, from a kill between these writes, is added). The card last: a
    /// run killed once it is written has its whole recipe saved.
    fn save_recipe(&self, folder: &RunFolder, recipe: &JobRecipe, card: &ModelCard) -> Result<()> {
        if folder.job.is_none() {
            write_json(&self.out.join("job.json"), recipe)?;
        }
        if folder.config.is_none() {
            write_json(&self.out.join("config.json"), &self.config)?;
        }
        let card_path = self.out.join("model-card.json");
        if !card_path.is_file() {
            write_json(&card_path, card)?;
        }
        Ok(())
    }

    /// What this job saves as its recipe besides its config (`job.json`).
    fn recipe(&self, data: &JobData) -> Result<JobRecipe> {
        let weights = absolute(&self.weights);
        Ok(JobRecipe {
            weights,
            input_size: self.input_size,
            class_names: data.class_names.clone(),
            data: data.options.clone(),
            train_images: recipe::digest(&data.train)?,
            valid_images: recipe::digest(&data.valid)?,
            test_images: recipe::digest(&data.test)?,
            backend: self.backend.clone(),
            devices: self.devices.clone(),
        })
    }
}

/// Weights given as a path (a file, or a saved model's `NAME` without its endings), by the
/// absolute path of its folder, so that a resume from another working folder names the same
/// weights the same way; a catalog name as it is.
fn absolute(weights: &str) -> String {
    let path = Path::new(weights);
    if let Ok(full) = std::fs::canonicalize(path) {
        return full.display().to_string();
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => std::fs::canonicalize(dir)
            .map_or_else(
                |_| weights.to_string(),
                |d| d.join(name).display().to_string(),
            ),
        _ => weights.to_string(),
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::BadFormat {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &json)
}

/// Whether `model`'s stem BatchNorm holds no running statistics (mean 0 and a variance that
/// makes its scale 1, in every channel): what an import gives where the exporter folded
/// BatchNorm into the convolutions (or into a Mul and an Add), and no trained network holds.
fn holds_no_statistics(model: &ResNet) -> bool {
    let bn = &model.stem.conv.bn;
    let values =
        |tensor: burn::tensor::Tensor<1>| tensor.into_data().iter::<f64>().collect::<Vec<_>>();
    let unit = |v: &f64| (v + bn.epsilon - 1.0).abs() <= 1e-6;
    values(bn.running_mean.value()).iter().all(|&m| m == 0.0)
        && values(bn.running_var.value()).iter().all(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exports with BatchNorm folded into the convolutions (torch's default exporter) or into a
    /// Mul and an Add (tf2onnx's Keras) hold no statistics; one with BatchNorm kept does.
    #[test]
    fn folded_exports_are_told_from_kept_ones() {
        let device = crate::device::default_device().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
        for (file, folded) in [
            ("torch-folded.onnx", true),
            ("keras.onnx", true),
            ("torch-bn.onnx", false),
        ] {
            let model = weights::load(&fixtures.join(file), &device).unwrap().model;
            assert_eq!(holds_no_statistics(&model), folded, "{file}");
        }
    }
}
