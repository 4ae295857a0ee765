//! Classifies photos with a ResNet from an ONNX file or a saved model.
//!
//! ```sh
//! cargo run --release --example predict -- --weights NAME|FILE [--preprocess caffe|torch|unit]
//!     [--input-size N] [--classes imagenet|cifar10|FILE] [--top-k K] [--json] [--logits] IMAGE...
//! ```

use std::path::{Path, PathBuf};

use clap::Parser;
use resnet_transfer::data::Preprocess;
use resnet_transfer::infer::default_names;
use resnet_transfer::{Classifier, weights};

#[derive(Parser)]
#[command(about = "Classify PNG or JPEG photos with a ResNet")]
struct Args {
    /// A run folder, a saved model (NAME.bpk + NAME.json), an ONNX file, or a catalog name.
    #[arg(long)]
    weights: String,
    /// Preprocessing; default: what the weights want.
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// Square input side; default: what the weights say.
    #[arg(long)]
    input_size: Option<usize>,
    /// Class names: imagenet, cifar10, or a file with one name per line.
    #[arg(long)]
    classes: Option<String>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// One JSON object per image.
    #[arg(long)]
    json: bool,
    /// Add the logits to the JSON.
    #[arg(long)]
    logits: bool,
    /// Backend: flex, ndarray or wgpu.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string())]
    backend: String,
    /// Never download catalog weights.
    #[arg(long)]
    offline: bool,
    /// The images.
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
        classifier.class_names = match classes.as_str() {
            "imagenet" => default_names(1000),
            "cifar10" => default_names(10),
            file => std::fs::read_to_string(file)
                .map_err(|e| resnet_transfer::Error::io(file, e))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        };
    }
    let paths: Vec<&Path> = args.images.iter().map(PathBuf::as_path).collect();
    let predictions = classifier.classify_files(&paths, args.top_k)?;
    for (path, prediction) in paths.iter().zip(predictions) {
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
    Ok(())
}
