//! Accuracy, per-class accuracy and the confusion matrix of a saved model, on the CIFAR-10 test
//! set or on a folder of your own photos (a folder per class, as `fine_tune` reads them).
//!
//! ```sh
//! cargo run --release --example evaluate -- --model RUN_DIR|FILE|NAME [--data-dir DIR] [--json]
//! cargo run --release --example evaluate -- --model RUN_DIR --images DIR [--skip-bad] [--json]
//! ```

use std::path::PathBuf;

use clap::Parser;
use resnet_transfer::data::{Cifar10, Downloader, ImageBatcher, ImageSet, list_image_folder};
use resnet_transfer::infer::default_names;
use resnet_transfer::train::{Evaluation, evaluate, evaluate_parts};
use resnet_transfer::{Error, weights};

#[derive(Parser)]
#[command(about = "Evaluate a saved model on the CIFAR-10 test set or on a photo folder")]
struct Args {
    /// A run folder, a saved model (NAME.bpk + NAME.json), an ONNX file or a catalog name.
    #[arg(long)]
    model: String,
    /// Photos to evaluate on, DIR/<class>/<photo> (sub-folders too), the class folders named
    /// after the model's classes, all of them or some (default: the CIFAR-10 test set).
    #[arg(long)]
    images: Option<PathBuf>,
    /// With --images: leave out photos that cannot be read (cut short, empty, undecodable,
    /// broken links), each listed with its reason, instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Folder holding CIFAR-10; default: found or downloaded.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend: the fastest CPU backend compiled in by default; one this build lacks says so.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string(), value_parser = clap::builder::PossibleValuesParser::new(resnet_transfer::BackendKind::ALL.map(resnet_transfer::BackendKind::name)), ignore_case = true)]
    backend: String,
    /// Images per batch (with --images, also the photos decoded at a time).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Print one JSON object instead of tables: images, accuracy, top5 (null for five classes
    /// or fewer), loss, classes, per_class (images, accuracy, recall, precision, f1) and
    /// confusion.
    #[arg(long)]
    json: bool,
    /// Never download.
    #[arg(long)]
    offline: bool,
}

fn main() {
    // Piped into `head` or `less`, stop quietly when the reader goes away, as Unix tools do,
    // rather than panicking on the broken pipe (Rust ignores SIGPIPE).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores SIGPIPE's default action before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    resnet_transfer::device::tune_host_allocator();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// CIFAR-10's test set, checked against the model's classes.
fn cifar_test(args: &Args, names: &[String]) -> Result<ImageSet, Error> {
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
    Ok(cifar.test)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.batch_size == 0 {
        return Err(resnet_transfer::Error::invalid_config("batch_size", "at least 1", 0).into());
    }
    let device = resnet_transfer::device::device(&args.backend)?;
    let saved = weights::load_named(&args.model, &device, !args.offline, !args.json)?;
    let classes = saved.model.num_classes().unwrap_or(0);
    let names = if saved.card.class_names.len() == classes {
        saved.card.class_names.clone()
    } else {
        default_names(classes)
    };
    let size = saved.card.input_size;
    // Photos are read at the model's size; CIFAR-10's images are resized to it.
    let batcher = ImageBatcher::new(saved.card.preprocess);
    let (eval, count) = match &args.images {
        // Photos are matched to the model's classes by name, and read a batch at a time, so
        // memory does not grow with their number.
        Some(dir) => {
            let files = list_image_folder(dir)?.with_classes(&names)?;
            if let Some(line) = files.left_out_line() {
                eprintln!("{line}");
            }
            let parts = files
                .chunks(size, args.batch_size, args.skip_bad)
                .map(|chunk| {
                    chunk.map(|folder| {
                        for (path, reason) in &folder.skipped {
                            eprintln!("skipped {}: {reason}", path.display());
                        }
                        folder.images
                    })
                });
            let eval = evaluate_parts(&saved.model, parts, &batcher, args.batch_size, &device)?;
            let count = eval.predictions.len();
            (eval, count)
        }
        None => {
            let test = cifar_test(&args, &names)?;
            let batcher = ImageBatcher {
                size: (size != test.height()).then_some(size),
                ..batcher
            };
            let eval = evaluate(&saved.model, &test, &batcher, args.batch_size, &device)?;
            (eval, test.len())
        }
    };
    if args.json {
        print_json(&eval, count, &names);
    } else {
        print_report(&eval, count, &names);
    }
    Ok(())
}

/// The evaluation as one JSON object.
fn print_json(eval: &Evaluation, count: usize, names: &[String]) {
    let per_class = names.iter().zip(eval.class_scores()).map(|(n, c)| {
        serde_json::json!({"class": n, "images": c.images, "accuracy": c.recall,
            "recall": c.recall, "precision": c.precision, "f1": c.f1})
    });
    let out = serde_json::json!({
        "images": count,
        "accuracy": eval.accuracy,
        "top5": eval.top5,
        "loss": eval.loss,
        "classes": names,
        "per_class": per_class.collect::<Vec<_>>(),
        "confusion": eval.confusion,
    });
    println!("{out}");
}

/// Classes up to which the report prints every class's row and the confusion matrix.
const MANY_CLASSES: usize = 20;

/// The evaluation as a person reads it: accuracy, per class, the confusion matrix and the most
/// confused pair.
fn print_report(eval: &Evaluation, count: usize, names: &[String]) {
    println!(
        "accuracy: {:.2}% on {} images (loss {:.4})",
        100.0 * eval.accuracy,
        count,
        eval.loss
    );
    if let Some(top5) = eval.top5 {
        println!("top-5 accuracy: {:.2}%", 100.0 * top5);
    }
    let percent = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    // With many classes (ImageNet's 1,000), the rows of classes the set neither holds nor was
    // predicted as are left out, and the confusion matrix is left to --json: printed, they were
    // megabytes of zeros.
    let many = names.len() > MANY_CLASSES;
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 32);
    println!(
        "  {:<width$} {:>7} {:>9} {:>9} {:>6}",
        "class", "images", "recall", "precision", "F1"
    );
    let mut left_out = 0;
    for (name, c) in names.iter().zip(eval.class_scores()) {
        if many && c.images == 0 && c.precision.is_none() {
            left_out += 1;
            continue;
        }
        let f1 = c.f1.map_or("-".to_string(), |f| format!("{f:.3}"));
        let (recall, precision) = (percent(c.recall), percent(c.precision));
        println!(
            "  {name:<width$} {:>7} {recall:>9} {precision:>9} {f1:>6}",
            c.images
        );
    }
    if left_out > 0 {
        println!(
            "  ({left_out} classes with no images and no predictions left out; --json has every class)"
        );
    }
    if many {
        println!(
            "\nconfusion matrix: {0} x {0}, in --json (printed only for {MANY_CLASSES} classes or fewer)",
            names.len()
        );
    } else {
        println!("\nconfusion matrix (rows: true, columns: predicted)");
        print!("{:>12}", "");
        for name in names {
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
    }
    if let Some((t, p, c)) = eval.most_confused() {
        println!(
            "\nmost confused: {} taken for {} ({c} times)",
            names[t], names[p]
        );
    }
}
