//! The options both training examples (`train_cifar10`, `fine_tune`) take: the weights, the
//! recipe, early stopping and the schedule, the run folder. Included by each with `#[path]`.

use std::path::PathBuf;

use clap::Args;
use clap::builder::TypedValueParser;
use resnet_transfer::job::{FineTuneJob, JobOutcome};
use resnet_transfer::train::{ClassWeights, OptimizerKind, Schedule, TwoPhaseConfig, Unfreeze};
use resnet_transfer::weights::{ExportBatchNorm, ExportOptions, export_onnx};

/// Options of a two-phase job.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// ImageNet weights: a catalog name (see weights/README.md), an ONNX file, a saved model or a
    /// run folder.
    #[arg(long, default_value = "resnet50-v1-12")]
    pub weights: String,
    /// Backend: the fastest CPU backend compiled in by default; one this build lacks says so.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string(), value_parser = clap::builder::PossibleValuesParser::new(resnet_transfer::BackendKind::ALL.map(resnet_transfer::BackendKind::name)), ignore_case = true)]
    pub backend: String,
    /// Data parallel: train on these devices of the backend, every batch split between them
    /// (wgpu, vulkan: GPU indices, e.g. 0,1; the CPU backends have one device, which then takes
    /// turns).
    #[arg(long, value_delimiter = ',', value_name = "INDICES")]
    pub devices: Vec<usize>,
    /// Epochs with the backbone frozen (phase 1).
    #[arg(long, default_value_t = 5)]
    pub phase1_epochs: usize,
    /// Epochs after the unfreeze point (phase 2).
    #[arg(long, default_value_t = 5)]
    pub phase2_epochs: usize,
    /// Phase 1 learning rate, or `suggested`: the valley of a learning-rate sweep for
    /// phase 1 run first (as --find-lr 1 runs it).
    #[arg(long, default_value = "0.001")]
    pub phase1_lr: Rate,
    /// Phase 2 learning rate (the head's, with --stage-lr-decay): low, so the expert weights are not broken; or `suggested`,
    /// from a sweep for phase 2 on the starting model.
    #[arg(long, default_value = "0.00001")]
    pub phase2_lr: Rate,
    /// Sweep the learning rate of phase 1 or 2 before training (fastai's lr_find): the loss at
    /// rates from 1e-7 to 10, one batch each, in lr-finder-phase<N>.png and .json in --out,
    /// with the steepest descent and the valley suggested. The run then trains as given. PHASE
    /// is 1 or 2.
    #[arg(long, value_name = "PHASE", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub find_lr: Option<u8>,
    /// Learning-rate schedule within each phase.
    #[arg(long, default_value = "constant", value_parser = clap::builder::PossibleValuesParser::new(Schedule::ALL.map(Schedule::name)).map(|s| s.parse::<Schedule>().expect("a listed name")), ignore_case = true)]
    pub schedule: Schedule,
    /// Linear warm-up at the start of each phase: epoch k of the first N trains at (k + 1) / (N
    /// + 1) of the phase's rate; the schedule then runs over the phase's other epochs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_epochs: usize,
    /// With --schedule plateau: multiply the rate by this after --plateau-patience epochs
    /// without a better validation loss (default 0.1).
    #[arg(long)]
    pub plateau_factor: Option<f64>,
    /// With --schedule plateau: epochs without a better validation loss before the rate drops
    /// (default 2).
    #[arg(long)]
    pub plateau_patience: Option<usize>,
    /// Early stopping: end a phase after this many epochs without a better validation loss,
    /// keeping the weights of its best epoch.
    #[arg(long)]
    pub patience: Option<usize>,
    /// With --patience: keep the last epoch's weights instead of the best one's.
    #[arg(long)]
    pub keep_last_weights: bool,
    /// What the unfreeze point releases: all (the whole backbone), or gradual: stage 4, then
    /// stage 3, 2, and 1 with the stem, one more every --unfreeze-every epochs of phase 2
    /// (ULMFiT's gradual unfreezing).
    #[arg(long, default_value = "all", value_parser = ["all", "gradual"], ignore_case = true, conflicts_with = "unfreeze_from")]
    pub unfreeze: String,
    /// With --unfreeze gradual: epochs of phase 2 between releases (default 1).
    #[arg(long, value_name = "N")]
    pub unfreeze_every: Option<usize>,
    /// Release stages K..4 only at the unfreeze point (default: the whole backbone).
    #[arg(long, value_name = "K")]
    pub unfreeze_from: Option<usize>,
    /// Discriminative learning rates in phase 2: the head at --phase2-lr, stage 4 at F times
    /// it, stage 3 at F², ... the stem at F⁵ (fastai's slice, timm's layer decay). 1: one rate.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub stage_lr_decay: f64,
    /// The optimizer: adam, adamw (decoupled weight decay) or sgd (with --momentum).
    #[arg(long, default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(OptimizerKind::ALL.map(OptimizerKind::name)).map(|s| s.parse::<OptimizerKind>().expect("a listed name")), ignore_case = true)]
    pub optimizer: OptimizerKind,
    /// Weight decay (adam and sgd: an L2 penalty in the gradient; adamw: decoupled), never on
    /// BatchNorm's scales and shifts nor on biases.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub weight_decay: f64,
    /// With --optimizer sgd: the momentum (0 for none; default 0.9).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// With --optimizer sgd: Nesterov's momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Dropout before the new head's Linear layer, in [0, 1) (the seed's 0.5; Keras's guide
    /// uses 0.2).
    #[arg(long, value_name = "P", default_value_t = 0.5)]
    pub dropout: f64,
    /// Random crops and flips on training images (turns the phase-1 feature cache off):
    /// CIFAR-10's pad-and-crop, or for photo folders torchvision's RandomResizedCrop, flip and
    /// colour jitter from each whole photo (streamed).
    #[arg(long)]
    pub augment: bool,
    /// BatchNorm in the released backbone during phase 2: inference (statistics frozen, as the
    /// Keras guide advises) or training (batch statistics, running ones updated).
    #[arg(long, default_value = "inference", value_parser = clap::builder::PossibleValuesParser::new(resnet_transfer::BatchNormMode::ALL.map(resnet_transfer::BatchNormMode::name)).map(|s| s.parse::<resnet_transfer::BatchNormMode>().expect("a listed name")), ignore_case = true)]
    pub batch_norm: resnet_transfer::BatchNormMode,
    /// Label smoothing of the training loss, in [0, 1): each label becomes (1 - F) one-hot + F /
    /// classes (0.1 is usual). Validation and test losses stay plain cross-entropy.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// How the classes weigh in the training loss: none (equally), or balanced (each class n /
    /// (classes * n_class), as scikit-learn and Keras's class_weight), for classes of different
    /// sizes.
    #[arg(long, default_value = "none", value_parser = clap::builder::PossibleValuesParser::new(ClassWeights::ALL.map(ClassWeights::name)).map(|s| s.parse::<ClassWeights>().expect("a listed name")), ignore_case = true)]
    pub class_weights: ClassWeights,
    /// Seed of the sample, shuffling, augmentation, dropout and the new head.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue the run in --out from its last finished epoch, with the recipe it was started
    /// with (saved in its config.json and job.json): any other value of an option that decides
    /// the run (weights, input size, sample sizes, rates, optimizer, release, schedule,
    /// patience, seed...) is refused, each difference named. May change: more
    /// --phase1-epochs/--phase2-epochs than planned, --backend, --devices, --memory-budget,
    /// --cache-decoded, --quiet, --offline, --keep-checkpoints, --export-onnx,
    /// --export-batch-norm.
    #[arg(long)]
    pub resume: bool,
    /// Keep the run's checkpoint/ when it ends well (by default it is removed, as Keras's
    /// BackupAndRestore does; kept, the finished run can be resumed with more epochs).
    #[arg(long)]
    pub keep_checkpoints: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Never download data or weights.
    #[arg(long)]
    pub offline: bool,
    /// After training, also write the model as an ONNX file here (for onnxruntime and other
    /// runtimes; class names and preprocessing in its metadata). Checked before training: a
    /// folder, or a path under a file, is refused.
    #[arg(long, value_name = "FILE")]
    pub export_onnx: Option<PathBuf>,
    /// With --export-onnx: BatchNorm folded into the convolutions, or kept as nodes (default
    /// folded).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ExportBatchNorm::ALL.map(ExportBatchNorm::name)).map(|s| s.parse::<ExportBatchNorm>().expect("a listed name")), ignore_case = true)]
    pub export_batch_norm: Option<ExportBatchNorm>,
}

impl JobArgs {
    /// The job these options describe, writing to `out` at `input_size`.
    pub fn job(&self, out: PathBuf, input_size: usize) -> FineTuneJob {
        let defaults = TwoPhaseConfig::new();
        let config = TwoPhaseConfig::new()
            .with_phase1_epochs(self.phase1_epochs)
            .with_phase2_epochs(self.phase2_epochs)
            .with_phase1_lr(self.phase1_lr.or(TwoPhaseConfig::new().phase1_lr))
            .with_phase2_lr(self.phase2_lr.or(TwoPhaseConfig::new().phase2_lr))
            .with_schedule(self.schedule)
            .with_warmup_epochs(self.warmup_epochs)
            .with_plateau_factor(self.plateau_factor.unwrap_or(defaults.plateau_factor))
            .with_plateau_patience(self.plateau_patience.unwrap_or(defaults.plateau_patience))
            .with_patience(self.patience)
            .with_restore_best_weights(!self.keep_last_weights)
            .with_unfreeze(
                match (
                    self.unfreeze.to_ascii_lowercase().as_str(),
                    self.unfreeze_from,
                ) {
                    (_, Some(stage)) => Unfreeze::FromStage(stage),
                    ("gradual", None) => Unfreeze::Gradual(self.unfreeze_every.unwrap_or(1)),
                    _ => Unfreeze::All,
                },
            )
            .with_stage_lr_decay(self.stage_lr_decay)
            .with_optimizer(self.optimizer)
            .with_weight_decay(self.weight_decay)
            .with_momentum(self.momentum.unwrap_or(defaults.momentum))
            .with_nesterov(self.nesterov)
            .with_batch_size(self.batch_size)
            .with_dropout(self.dropout)
            .with_seed(self.seed)
            .with_augment(self.augment)
            .with_batch_norm(self.batch_norm)
            .with_label_smoothing(self.label_smoothing)
            .with_class_weights(self.class_weights);
        FineTuneJob {
            config,
            weights: self.weights.clone(),
            backend: self.backend.clone(),
            devices: self.devices.clone(),
            input_size,
            out,
            resume: self.resume,
            keep_checkpoints: self.keep_checkpoints,
            download: !self.offline,
            progress: !self.quiet,
            find_lr: self.find_lr.map(usize::from),
            suggested_lr: [self.phase1_lr, self.phase2_lr].map(|r| matches!(r, Rate::Suggested)),
            memory_budget: resnet_transfer::data::default_memory_budget(),
        }
    }

    /// Checks before anything is read that the options make sense together: the input side is
    /// at least 1, and each option that only works with another (`--plateau-factor` with
    /// `--schedule plateau`, `--momentum` with `--optimizer sgd`, ...) comes with it. Given
    /// alone, such an option was accepted and did nothing, and a resumed run was then refused
    /// over its value.
    pub fn check_options(&self, input_size: usize) -> resnet_transfer::Result<()> {
        use resnet_transfer::Error;
        if input_size == 0 {
            return Err(Error::invalid_config("input_size", "at least 1", 0));
        }
        let plateau = self.schedule == Schedule::Plateau;
        let gradual = self.unfreeze.eq_ignore_ascii_case("gradual") && self.unfreeze_from.is_none();
        let sgd = self.optimizer == OptimizerKind::Sgd;
        let alone = [
            (
                "plateau_factor",
                self.plateau_factor.map(|v| v.to_string()),
                plateau,
                "--schedule plateau",
            ),
            (
                "plateau_patience",
                self.plateau_patience.map(|v| v.to_string()),
                plateau,
                "--schedule plateau",
            ),
            (
                "keep_last_weights",
                self.keep_last_weights.then(|| "true".to_string()),
                self.patience.is_some(),
                "--patience",
            ),
            (
                "unfreeze_every",
                self.unfreeze_every.map(|v| v.to_string()),
                gradual,
                "--unfreeze gradual",
            ),
            (
                "momentum",
                self.momentum.map(|v| v.to_string()),
                sgd,
                "--optimizer sgd",
            ),
            (
                "export_batch_norm",
                self.export_batch_norm.map(|v| v.to_string()),
                self.export_onnx.is_some(),
                "--export-onnx",
            ),
        ];
        for (field, given, needed, with) in alone {
            if let (Some(value), false) = (given, needed) {
                return Err(Error::invalid_config(
                    field,
                    format!("only with {with}"),
                    value,
                ));
            }
        }
        Ok(())
    }

    /// Checks before training, writing nothing, that --export-onnx names a file that can be
    /// written (not a folder, in a folder that takes files) and that --out can be a folder, so a
    /// long run does not end in an error it could have given at once.
    pub fn check_outputs(&self, out: &std::path::Path) -> resnet_transfer::Result<()> {
        resnet_transfer::files::check_output_folder("--out", out)?;
        match &self.export_onnx {
            Some(file) => resnet_transfer::files::check_output_file("--export-onnx", file),
            None => Ok(()),
        }
    }

    /// Ends a job the way both examples do: the ONNX export if asked for, then the report.
    pub fn finish(
        &self,
        outcome: &JobOutcome,
        out: &std::path::Path,
    ) -> resnet_transfer::Result<()> {
        if let Some(file) = &self.export_onnx {
            let batch_norm = self.export_batch_norm.unwrap_or_default();
            let options = ExportOptions::default().with_batch_norm(batch_norm);
            export_onnx(&outcome.model.model, &outcome.model.card, file, &options)?;
            println!(
                "ONNX export (BatchNorm {batch_norm}) written to {}",
                file.display()
            );
        }
        report(outcome, out);
        Ok(())
    }
}

/// The examples' `main`: glibc tuned for training, Burn's default device pinned to the run's
/// backend, then `run` on the parsed options, its error printed and the exit status 1 on
/// failure. A recipe value refused by its field's name (`stage_lr_decay`) also names the option
/// of `C` that set it (`--stage-lr-decay`).
pub fn main<C: clap::Parser>(
    backend: impl FnOnce(&C) -> &str,
    run: impl FnOnce(C) -> Result<(), Box<dyn std::error::Error>>,
) {
    resnet_transfer::device::tune_host_allocator();
    let args = C::parse();
    // Burn loads an optimizer's saved state onto `Device::default()` (ModuleOptimizer::
    // load_record), which is the GPU whenever wgpu is compiled in: a CPU run resumed would send
    // its optimizer state through the GPU, or fail on a machine without a GPU driver. Burn
    // reads BURN_DEVICE for that default; set here, before any thread starts.
    let name = backend(&args).to_ascii_lowercase();
    if std::env::var_os("BURN_DEVICE").is_none() && (name == "flex" || name == "ndarray") {
        // SAFETY: no other thread exists yet to read the environment meanwhile.
        unsafe { std::env::set_var("BURN_DEVICE", &name) };
    }
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        if let Some(flag) = option_of(&*e, &C::command()) {
            eprintln!("(the option {flag})");
        }
        std::process::exit(1);
    }
}

/// The option of `command` that sets the configuration field an [`InvalidConfig`] error names,
/// if it has one.
///
/// [`InvalidConfig`]: resnet_transfer::Error::InvalidConfig
fn option_of(error: &(dyn std::error::Error + 'static), command: &clap::Command) -> Option<String> {
    let resnet_transfer::Error::InvalidConfig { field, .. } = error.downcast_ref()? else {
        return None;
    };
    let flag = field.replace('_', "-");
    command
        .get_arguments()
        .any(|a| a.get_long() == Some(flag.as_str()))
        .then(|| format!("--{flag}"))
}

/// Prints what a finished job wrote, the way both examples end.
pub fn report(outcome: &JobOutcome, out: &std::path::Path) {
    println!("test accuracy: {:.2}%", 100.0 * outcome.evaluation.accuracy);
    let history = &outcome.history;
    match (history.jump(), history.unfreeze_epoch()) {
        (Some(j), _) => println!(
            "jump at the unfreeze point: {:+.2} points of validation accuracy (from epoch {})",
            100.0 * j,
            history.phase2_start().map_or(0, |e| e.epoch)
        ),
        (None, Some(_)) => println!(
            "jump at the unfreeze point: not measured ({})",
            history.why_no_jump().unwrap_or("no validation")
        ),
        (None, None) => println!("no unfreeze point (phase 2 did not run)"),
    }
    println!("report, model and history written to {}", out.display());
}

/// A learning rate given on the command line: a number, or `suggested` (by a sweep).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This rate.
    Given(f64),
    /// The valley of a learning-rate sweep for the phase.
    Suggested,
}

impl Rate {
    /// The rate given, or `placeholder` until a sweep suggests one.
    pub fn or(self, placeholder: f64) -> f64 {
        match self {
            Rate::Given(lr) => lr,
            Rate::Suggested => placeholder,
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("suggested") {
            return Ok(Rate::Suggested);
        }
        s.trim()
            .parse()
            .map(Rate::Given)
            .map_err(|_| format!("`{s}` is neither a number nor `suggested`"))
    }
}
