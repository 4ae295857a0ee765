//! The main job: teach an ImageNet ResNet50 the ten CIFAR-10 classes in two phases, and write
//! the evidence (curves with the unfreeze point, confusion matrix, predictions, summary).
//!
//! ```sh
//! cargo run --release --example train_cifar10 -- [--data-dir DIR] [--weights FILE|NAME]
//!     [--backend B] [--train-samples 10000] [--phase1-epochs N] [--phase2-epochs M]
//!     [--batch-size B] [--input-size 32] [--out DIR] [--resume] [--quiet]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use resnet_transfer::data::{Cifar10, Downloader, ImageBatcher, stratified_split};
use resnet_transfer::report::{draw_confusion, draw_curves, draw_predictions, write_summary};
use resnet_transfer::train::{TwoPhase, TwoPhaseConfig, Unfreeze, evaluate, with_new_head};
use resnet_transfer::weights::{self, ModelCard, SavedModel, catalog};
use resnet_transfer::{Error, ResNet};

#[derive(Parser)]
#[command(about = "Two-phase transfer learning of an ImageNet ResNet on CIFAR-10")]
struct Args {
    /// Folder holding CIFAR-10 (archive or extracted, either format); default: found or downloaded.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// ImageNet weights: an ONNX file, a saved model, or a catalog name.
    #[arg(long, default_value = "resnet50-v1-12")]
    weights: String,
    /// Backend: flex, ndarray or wgpu.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string())]
    backend: String,
    /// Training images, stratified (the seed's 10,000: 1,000 per class).
    #[arg(long, default_value_t = 10_000)]
    train_samples: usize,
    /// Validation images, stratified, from the rest of the training set.
    #[arg(long, default_value_t = 2_000)]
    valid_samples: usize,
    /// Test images (default: the whole test set).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Epochs with the backbone frozen.
    #[arg(long, default_value_t = 5)]
    phase1_epochs: usize,
    /// Epochs after the unfreeze point.
    #[arg(long, default_value_t = 5)]
    phase2_epochs: usize,
    /// Phase 1 learning rate (Adam).
    #[arg(long, default_value_t = 1e-3)]
    phase1_lr: f64,
    /// Phase 2 learning rate (Adam): low, so the expert weights are not broken.
    #[arg(long, default_value_t = 1e-5)]
    phase2_lr: f64,
    /// Release stages K..4 only (default: the whole backbone).
    #[arg(long)]
    unfreeze_from: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Square input side; CIFAR's 32 or upsampled (ResNet50 transfers better at 64 to 224).
    #[arg(long, default_value_t = 32)]
    input_size: usize,
    /// Random crops and flips (turns the phase-1 feature cache off).
    #[arg(long)]
    augment: bool,
    /// Let BatchNorm update its statistics in phase 2 (the Keras guide keeps them frozen).
    #[arg(long)]
    batch_norm_train: bool,
    /// Seed of the sample, shuffling, augmentation, dropout and the new head.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run folder: checkpoints, model, history, report.
    #[arg(long, default_value = "runs/cifar10")]
    out: PathBuf,
    /// Continue the run in --out from its last finished epoch.
    #[arg(long)]
    resume: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// Never download data or weights.
    #[arg(long)]
    offline: bool,
}

fn main() {
    resnet_transfer::device::tune_host_allocator();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn load_weights(
    args: &Args,
    device: &resnet_transfer::Device,
) -> resnet_transfer::Result<SavedModel> {
    let path = Path::new(&args.weights);
    if path.exists() {
        return weights::load(path, device);
    }
    let Some(entry) = catalog::entry(&args.weights) else {
        let names: Vec<&str> = catalog::CATALOG.iter().map(|e| e.name).collect();
        return Err(Error::NotFound {
            what: format!("weights `{}`", args.weights),
            looked_in: "the file system and the catalog".into(),
            hint: format!(
                "Give an .onnx file, a saved model, or one of: {}",
                names.join(", ")
            ),
        });
    };
    let file = entry.locate(&[Path::new("weights")], !args.offline, !args.quiet)?;
    weights::load(&file, device)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let device = resnet_transfer::device::training_device(&args.backend)?;
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(args.phase1_epochs)
        .with_phase2_epochs(args.phase2_epochs)
        .with_phase1_lr(args.phase1_lr)
        .with_phase2_lr(args.phase2_lr)
        .with_unfreeze(
            args.unfreeze_from
                .map(Unfreeze::FromStage)
                .unwrap_or(Unfreeze::All),
        )
        .with_batch_size(args.batch_size)
        .with_seed(args.seed)
        .with_augment(args.augment)
        .with_batch_norm_frozen(!args.batch_norm_train);
    config.validate()?;

    let checkpoint = args.out.join("checkpoint").join("state.json");
    let card_path = args.out.join("model-card.json");
    if checkpoint.exists() && !args.resume {
        return Err(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            args.out.display()
        )
        .into());
    }

    let downloader = Downloader {
        progress: !args.quiet,
        ..Downloader::default()
    };
    let cifar = Cifar10::find_or_download(
        args.data_dir.as_deref(),
        (!args.offline).then_some(&downloader),
    )?;
    let classes = cifar.class_names.len();
    let split = stratified_split(
        cifar.train.labels(),
        classes,
        args.train_samples,
        args.valid_samples,
        args.seed,
    )?;
    let train = cifar.train.select(&split.train);
    let valid = cifar.train.select(&split.validation);
    let test = match args.test_samples {
        Some(n) => cifar
            .test
            .select(&stratified_split(cifar.test.labels(), classes, n, 0, args.seed)?.train),
        None => cifar.test.clone(),
    };

    // A resumed run rebuilds its model from its own card; the checkpoint holds the weights.
    let (model, card): (ResNet, ModelCard) = if args.resume && card_path.exists() {
        let card: ModelCard = serde_json::from_slice(&std::fs::read(&card_path)?)?;
        (card.config.init(&device)?, card)
    } else {
        let loaded = load_weights(&args, &device.clone().inner())?;
        let model = with_new_head(
            loaded.model,
            classes,
            config.dropout,
            config.seed,
            &device.clone().inner(),
        );
        let card = ModelCard {
            config: loaded
                .card
                .config
                .clone()
                .with_num_classes(Some(classes))
                .with_dropout(config.dropout),
            preprocess: loaded.card.preprocess,
            input_size: args.input_size,
            class_names: cifar.class_names.clone(),
            source: format!(
                "{} fine-tuned on CIFAR-10 from {}",
                args.weights,
                cifar.source.display()
            ),
        };
        (model, card)
    };
    std::fs::create_dir_all(&args.out)?;
    resnet_transfer::data::download::write_atomic(&card_path, &serde_json::to_vec_pretty(&card)?)?;
    resnet_transfer::data::download::write_atomic(
        &args.out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;

    if !args.quiet {
        eprintln!(
            "ResNet{} on {} ({} training, {} validation, {} test images, {}x{} px, preprocessing {})",
            card.config.depth,
            args.backend,
            train.len(),
            valid.len(),
            test.len(),
            args.input_size,
            args.input_size,
            card.preprocess
        );
    }
    let batcher = ImageBatcher {
        preprocess: card.preprocess,
        size: (args.input_size != train.height()).then_some(args.input_size),
        augment: None,
    };
    let learner = TwoPhase {
        config: config.clone(),
        batcher,
        run_dir: Some(args.out.clone()),
        quiet: args.quiet,
    };
    let (model, history) = learner.fit(model, &train, &valid, &device)?;

    let inference = device.clone().inner();
    let evaluation = evaluate(&model, &test, &batcher, args.batch_size, &inference);
    SavedModel {
        model: model.clone(),
        card: card.clone(),
    }
    .save(&args.out.join("model"))?;
    resnet_transfer::data::download::write_atomic(
        &args.out.join("evaluation.json"),
        &serde_json::to_vec_pretty(&evaluation)?,
    )?;
    draw_curves(&args.out.join("curves.png"), &history)?;
    draw_confusion(
        &args.out.join("confusion.png"),
        &evaluation.confusion,
        &card.class_names,
    )?;
    draw_predictions(
        &args.out.join("predictions.png"),
        &test,
        &evaluation.predictions,
        &card.class_names,
        32,
    )?;
    let phase_time = |p: u8| {
        let e: Vec<f64> = history
            .epochs
            .iter()
            .filter(|e| e.phase == p)
            .map(|e| e.seconds)
            .collect();
        if e.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} s", e.iter().sum::<f64>() / e.len() as f64)
        }
    };
    let extra = vec![
        ("weights".to_string(), args.weights.clone()),
        ("backend".to_string(), args.backend.clone()),
        ("mean epoch time, phase 1".to_string(), phase_time(1)),
        ("mean epoch time, phase 2".to_string(), phase_time(2)),
        (
            "total time".to_string(),
            format!("{:.1} s", started.elapsed().as_secs_f64()),
        ),
    ];
    write_summary(
        &args.out.join("summary.md"),
        &history,
        &evaluation,
        &card.class_names,
        &extra,
    )?;

    println!("test accuracy: {:.2}%", 100.0 * evaluation.accuracy);
    match history.jump() {
        Some(j) => println!(
            "jump at the unfreeze point: {:+.2} points of validation accuracy",
            100.0 * j
        ),
        None => println!("no unfreeze point (phase 2 did not run)"),
    }
    println!(
        "report, model and history written to {}",
        args.out.display()
    );
    Ok(())
}
