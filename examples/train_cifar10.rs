//! The main job: teach an ImageNet ResNet50 the ten CIFAR-10 classes in two phases, and write
//! the evidence (curves with the unfreeze point, confusion matrix, predictions, summary).
//!
//! ```sh
//! cargo run --release --example train_cifar10 -- [--data-dir DIR] [--weights NAME|FILE]
//!     [--train-samples N] [--valid-samples N] [--phase1-epochs N] [--phase2-epochs M]
//!     [--input-size 32] [--schedule constant|cosine|plateau] [--patience N] [--out DIR] ...
//! ```
//! `--help` lists every option.

use std::path::PathBuf;

use clap::Parser;
use resnet_transfer::data::{Cifar10, Downloader, sample_sizes, stratified_split};
use resnet_transfer::job::JobData;

#[path = "shared/job_args.rs"]
mod job_args;

#[derive(Parser)]
#[command(
    about = "Two-phase transfer learning of an ImageNet ResNet on CIFAR-10",
    allow_negative_numbers = true
)]
struct Args {
    /// Folder holding CIFAR-10 (archive or extracted, either format); default: found or downloaded.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training images, stratified [default: 10,000 (1,000 per class), fewer on a smaller set].
    #[arg(long)]
    train_samples: Option<usize>,
    /// Validation images, stratified, from the rest of the training set [default: a fifth of
    /// the images used, at most 2,000; beside --train-samples, at most what is left, and a
    /// --train-samples that leaves none is refused]. 0 trains without validation (no early
    /// stopping, no plateau schedule, no jump).
    #[arg(long)]
    valid_samples: Option<usize>,
    /// Test images, stratified (default: the whole test set).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Square input side: CIFAR's 32, or upsampled (ResNet50 transfers better at 64 to 224).
    #[arg(long, default_value_t = 32)]
    input_size: usize,
    /// Run folder: checkpoints, model, history, report.
    #[arg(long, default_value = "runs/cifar10")]
    out: PathBuf,
    #[command(flatten)]
    job: job_args::JobArgs,
}

fn main() {
    job_args::main(|a: &Args| a.job.backend.as_str(), run);
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    args.job.check_options(args.input_size)?;
    args.job.check_outputs(&args.out)?;
    // An empty test set would evaluate to nothing; an empty validation set (0) is a run without
    // validation, which the job allows.
    if args.test_samples == Some(0) {
        return Err(resnet_transfer::Error::invalid_config(
            "test_samples",
            "at least 1 (the test images are evaluated at the end; leave it out for all)",
            0,
        )
        .into());
    }
    let downloader = Downloader {
        progress: !args.job.quiet,
        ..Downloader::default()
    };
    let cifar = Cifar10::find_or_download(
        args.data_dir.as_deref(),
        (!args.job.offline).then_some(&downloader),
    )?;
    let classes = cifar.class_names.len();
    let labels = cifar.train.labels();
    let (train_n, valid_n) = sample_sizes(labels, classes, args.train_samples, args.valid_samples)?;
    let seed = args.job.seed;
    let split = stratified_split(labels, classes, train_n, valid_n, seed)?;
    let test = match args.test_samples {
        Some(n) => {
            let pick = stratified_split(cifar.test.labels(), classes, n, 0, seed)?;
            cifar.test.select(&pick.train)
        }
        None => cifar.test.clone(),
    };
    let test_n = test.len();
    let data = JobData {
        train: cifar.train.select(&split.train),
        valid: cifar.train.select(&split.validation),
        test,
        class_names: cifar.class_names.clone(),
        source: format!("CIFAR-10 from {}", cifar.source.display()),
        notes: Vec::new(),
        options: vec![
            ("train_samples".into(), train_n.to_string()),
            ("valid_samples".into(), valid_n.to_string()),
            ("test_samples".into(), test_n.to_string()),
        ],
    };
    let outcome = args.job.job(args.out.clone(), args.input_size).run(&data)?;
    args.job.finish(&outcome, &args.out)?;
    Ok(())
}
