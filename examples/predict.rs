//! Classifies photos with a ResNet from an ONNX file or a saved model.
//!
//! ```sh
//! cargo run --release --example predict -- --weights NAME|FILE [--preprocess caffe|torch|unit]
//!     [--input-size N] [--classes imagenet|cifar10|FILE] [--top-k K] [--json] [--logits]
//!     [--batch-size N] IMAGE...
//! ```
//! Photos are read and classified a batch at a time, and each batch's answers printed before the
//! next is read, so memory does not grow with the number of photos.

use std::path::{Path, PathBuf};

use clap::Parser;
use clap::builder::TypedValueParser;
use resnet_transfer::data::Preprocess;
use resnet_transfer::infer::class_names_from;
use resnet_transfer::{Classifier, Prediction, weights};

#[derive(Parser)]
#[command(about = "Classify photos (JPEG, PNG, WebP, BMP, GIF, TIFF, PPM/PGM) with a ResNet")]
struct Args {
    /// A run folder, a saved model (NAME.bpk + NAME.json), an ONNX file, or a catalog name.
    #[arg(long)]
    weights: String,
    /// Preprocessing; default: what the weights want.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Preprocess::ALL.map(Preprocess::name)).map(|s| s.parse::<Preprocess>().expect("a listed name")), ignore_case = true)]
    preprocess: Option<Preprocess>,
    /// Square input side; default: what the weights say.
    #[arg(long)]
    input_size: Option<usize>,
    /// Class names: imagenet, cifar10, or a file with one name per line; as many as the
    /// model has classes.
    #[arg(long)]
    classes: Option<String>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    top_k: usize,
    /// One JSON object per image.
    #[arg(long)]
    json: bool,
    /// Add the logits to the JSON.
    #[arg(long)]
    logits: bool,
    /// Photos decoded and classified at a time.
    #[arg(long, default_value_t = resnet_transfer::infer::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Backend: the fastest CPU backend compiled in by default; one this build lacks says so.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string(), value_parser = clap::builder::PossibleValuesParser::new(resnet_transfer::BackendKind::ALL.map(resnet_transfer::BackendKind::name)), ignore_case = true)]
    backend: String,
    /// Never download catalog weights.
    #[arg(long)]
    offline: bool,
    /// The photos, in any format the crate reads (decoded by their content, turned upright by
    /// their EXIF orientation).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

fn main() {
    resnet_transfer::device::tune_host_allocator();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // A mistyped name fails now, not after the photos before it have been classified.
    for path in &args.images {
        std::fs::metadata(path).map_err(|e| resnet_transfer::Error::io(path, e))?;
    }
    let device = resnet_transfer::device::device(&args.backend)?;
    let saved = weights::load_named(&args.weights, &device, !args.offline, !args.json)?;
    let mut classifier = Classifier::new(saved, &device);
    if let Some(p) = args.preprocess {
        classifier.preprocess = p;
    }
    if let Some(s) = args.input_size {
        classifier.input_size = s;
    }
    if let Some(classes) = &args.classes {
        classifier.class_names = class_names_from(classes, classifier.num_classes())?;
    }
    if args.batch_size == 0 {
        return Err(resnet_transfer::Error::invalid_config("batch_size", "at least 1", 0).into());
    }
    classifier.batch_size = args.batch_size;
    let batches = classifier.classify_batches(&args.images, args.top_k);
    for (paths, predictions) in args.images.chunks(args.batch_size).zip(batches) {
        for (path, prediction) in paths.iter().zip(predictions?) {
            print(path, &prediction, &args);
        }
    }
    Ok(())
}

fn print(path: &Path, prediction: &Prediction, args: &Args) {
    if args.json {
        let mut line = serde_json::json!({
            "image": path.display().to_string(),
            "top_k": prediction.top_k,
        });
        if args.logits {
            line["logits"] = serde_json::json!(prediction.logits);
        }
        println!("{line}");
    } else {
        println!("{}", path.display());
        for (rank, s) in prediction.top_k.iter().enumerate() {
            println!(
                "  {:>2}. {:<28} {:>6.2}%  (class {})",
                rank + 1,
                s.label,
                100.0 * s.prob,
                s.index
            );
        }
    }
}
