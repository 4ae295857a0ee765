//! Test accuracy, per-class accuracy and the confusion matrix of a saved model on CIFAR-10.
//!
//! ```sh
//! cargo run --release --example evaluate -- --model RUN_DIR_OR_FILE [--data-dir DIR] [--json]
//! ```

use std::path::PathBuf;

use clap::Parser;
use resnet_transfer::data::{Cifar10, Downloader, ImageBatcher};
use resnet_transfer::infer::default_names;
use resnet_transfer::train::evaluate;
use resnet_transfer::weights;

#[derive(Parser)]
#[command(about = "Evaluate a saved model on the CIFAR-10 test set")]
struct Args {
    /// A run folder, a saved model (NAME.bpk + NAME.json) or an ONNX file with a 10-class head.
    #[arg(long)]
    model: PathBuf,
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

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = resnet_transfer::device::device(&args.backend)?;
    let saved = weights::load(&args.model, &device)?;
    let downloader = Downloader {
        progress: !args.json,
        ..Downloader::default()
    };
    let cifar = Cifar10::find_or_download(
        args.data_dir.as_deref(),
        (!args.offline).then_some(&downloader),
    )?;
    let classes = saved.model.num_classes().unwrap_or(0);
    if classes != cifar.class_names.len() {
        return Err(format!(
            "the model has {classes} classes, CIFAR-10 has {}",
            cifar.class_names.len()
        )
        .into());
    }
    let names = if saved.card.class_names.len() == classes {
        saved.card.class_names.clone()
    } else {
        default_names(classes)
    };
    let batcher = ImageBatcher {
        preprocess: saved.card.preprocess,
        size: (saved.card.input_size != cifar.test.height()).then_some(saved.card.input_size),
        augment: None,
    };
    let eval = evaluate(
        &saved.model,
        &cifar.test,
        &batcher,
        args.batch_size,
        &device,
    );
    if args.json {
        let out = serde_json::json!({
            "accuracy": eval.accuracy,
            "loss": eval.loss,
            "per_class": names.iter().zip(eval.per_class_accuracy()).map(|(n, a)| serde_json::json!({"class": n, "accuracy": a})).collect::<Vec<_>>(),
            "confusion": eval.confusion,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "test accuracy: {:.2}% on {} images (loss {:.4})",
        100.0 * eval.accuracy,
        cifar.test.len(),
        eval.loss
    );
    for (name, acc) in names.iter().zip(eval.per_class_accuracy()) {
        println!("  {name:<12} {:>6.2}%", 100.0 * acc);
    }
    println!("\nconfusion matrix (rows: true, columns: predicted)");
    print!("{:>12}", "");
    for name in &names {
        print!(" {:>6}", &name[..name.len().min(6)]);
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
