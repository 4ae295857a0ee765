//! Accuracy, per-class accuracy and the confusion matrix of a saved model, on the CIFAR-10 test
//! set or on a folder of your own photos (a folder per class, as `fine_tune` reads them).
//!
//! ```sh
//! cargo run --release --example evaluate -- --model RUN_DIR|FILE|NAME [--data-dir DIR] [--json]
//! cargo run --release --example evaluate -- --model RUN_DIR --images DIR [--skip-bad] [--json]
//! ```

use std::path::PathBuf;

use clap::Parser;
use resnet_transfer::data::{Cifar10, Downloader, ImageBatcher, ImageSet, read_image_folder};
use resnet_transfer::infer::default_names;
use resnet_transfer::train::evaluate;
use resnet_transfer::{Error, weights};

#[derive(Parser)]
#[command(about = "Evaluate a saved model on the CIFAR-10 test set or on a photo folder")]
struct Args {
    /// A run folder, a saved model (NAME.bpk + NAME.json), an ONNX file or a catalog name.
    #[arg(long)]
    model: String,
    /// Photos to evaluate on, DIR/<class>/<photo> with the model's class names (default:
    /// the CIFAR-10 test set).
    #[arg(long)]
    images: Option<PathBuf>,
    /// With --images: leave out files that do not decode instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Folder holding CIFAR-10; default: found or downloaded.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend: flex, ndarray or wgpu.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string())]
    backend: String,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Print one JSON object (accuracy, per_class, confusion) instead of tables.
    #[arg(long)]
    json: bool,
    /// Never download.
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

/// The images to evaluate on, with the model's label for each: a photo folder's classes are
/// matched to the model's by name.
fn images(args: &Args, names: &[String], size: usize) -> Result<ImageSet, Error> {
    let Some(dir) = &args.images else {
        let downloader = Downloader {
            progress: !args.json,
            ..Downloader::default()
        };
        let cifar = Cifar10::find_or_download(
            args.data_dir.as_deref(),
            (!args.offline).then_some(&downloader),
        )?;
        if cifar.class_names.len() != names.len() {
            return Err(Error::invalid_config(
                "num_classes",
                format!("CIFAR-10's {} classes", cifar.class_names.len()),
                names.len(),
            ));
        }
        return Ok(cifar.test);
    };
    let folder = read_image_folder(dir, size, args.skip_bad)?;
    for (path, reason) in &folder.skipped {
        eprintln!("skipped {}: {reason}", path.display());
    }
    let to_model: Vec<usize> = folder
        .class_names
        .iter()
        .map(|c| {
            names.iter().position(|n| n == c).ok_or_else(|| {
                Error::invalid_config(
                    "class_names",
                    format!("one of the model's classes {names:?}"),
                    format!("`{c}` (a folder of {})", dir.display()),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let labels = folder
        .images
        .labels()
        .iter()
        .map(|&l| to_model[l])
        .collect();
    ImageSet::new(folder.images.pixels().to_vec(), labels, size, size)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = resnet_transfer::device::device(&args.backend)?;
    let saved = weights::load_named(&args.model, &device, !args.offline, !args.json)?;
    let classes = saved.model.num_classes().unwrap_or(0);
    let names = if saved.card.class_names.len() == classes {
        saved.card.class_names.clone()
    } else {
        default_names(classes)
    };
    let test = images(&args, &names, saved.card.input_size)?;
    let batcher = ImageBatcher {
        preprocess: saved.card.preprocess,
        size: (saved.card.input_size != test.height()).then_some(saved.card.input_size),
        augment: None,
    };
    let eval = evaluate(&saved.model, &test, &batcher, args.batch_size, &device);
    if args.json {
        let out = serde_json::json!({
            "images": test.len(),
            "accuracy": eval.accuracy,
            "loss": eval.loss,
            "classes": names,
            "per_class": names.iter().zip(eval.per_class_accuracy()).map(|(n, a)| serde_json::json!({"class": n, "accuracy": a})).collect::<Vec<_>>(),
            "confusion": eval.confusion,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "accuracy: {:.2}% on {} images (loss {:.4})",
        100.0 * eval.accuracy,
        test.len(),
        eval.loss
    );
    for (name, acc) in names.iter().zip(eval.per_class_accuracy()) {
        println!("  {name:<12} {:>6.2}%", 100.0 * acc);
    }
    println!("\nconfusion matrix (rows: true, columns: predicted)");
    print!("{:>12}", "");
    for name in &names {
        print!(" {:>6}", name.chars().take(6).collect::<String>());
    }
    println!();
    for (name, row) in names.iter().zip(&eval.confusion) {
        print!("{name:>12}");
        for count in row {
            print!(" {count:>6}");
        }
        println!();
    }
    if let Some((t, p, c)) = eval.most_confused() {
        println!(
            "\nmost confused: {} taken for {} ({c} times)",
            names[t], names[p]
        );
    }
    Ok(())
}
