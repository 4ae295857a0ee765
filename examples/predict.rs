//! Classifies photos with a ResNet from an ONNX file or a saved model.
//!
//! ```sh
//! cargo run --release --example predict -- --weights NAME|FILE [--preprocess caffe|torch|unit]
//!     [--input-size N] [--classes imagenet|cifar10|FILE] [--top-k K] [--json] [--logits]
//!     [--batch-size N] [--explain DIR] [--skip-bad] IMAGE...
//! ```
//! `--explain DIR` also writes `DIR/<photo>-cam.png` for each photo: the photo beside itself under
//! the Grad-CAM heat map of its top class (where the model looked for it), the class and its score
//! written above; with `--json`, each object also gets `"cam"`, the map as rows of numbers in
//! [0, 1] at the last stage's resolution (7x7 at 224 pixels). Inputs of 32 pixels leave the last
//! stage 1x1, no map to show: that is an error, and more than 32 pixels work.
//! Photos are read and classified a batch at a time, and each batch's answers printed before the
//! next is read, so memory does not grow with the number of photos.

use std::path::{Path, PathBuf};

use clap::Parser;
use clap::builder::TypedValueParser;
use resnet_transfer::data::{Preprocess, read_image};
use resnet_transfer::explain::{CamTarget, ClassMap};
use resnet_transfer::infer::class_names_from;
use resnet_transfer::report::draw_explained_photo;
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
    /// model has classes. Without it, the names in the model's card or ONNX metadata; where
    /// there are none, ImageNet's for 1,000 classes, CIFAR-10's for 10, and `class N` otherwise.
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
    /// Also write DIR/<photo>-cam.png: the photo with the Grad-CAM heat map of its top class
    /// (where the model looked), the class and score written on it; with --json, each object
    /// gets "cam", the map's rows (and "cam_file", the picture). Needs inputs of more than 32
    /// pixels (a last stage of 2x2 or more).
    #[arg(long, value_name = "DIR")]
    explain: Option<PathBuf>,
    /// Leave out photos that cannot be read (missing, empty, cut short, not a photo, broken
    /// links), each listed on stderr with its reason, instead of stopping at the first; the run
    /// fails only when none could be read.
    #[arg(long)]
    skip_bad: bool,
    /// Never download catalog weights.
    #[arg(long)]
    offline: bool,
    /// The photos, in any format the crate reads (decoded by their content, turned upright by
    /// their EXIF orientation).
    #[arg(required = true)]
    images: Vec<PathBuf>,
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

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Sizes of 0 fail before the weights are read (and before the preprocessing line says them).
    use resnet_transfer::Error;
    if args.batch_size == 0 {
        return Err(Error::invalid_config("batch_size", "at least 1", 0).into());
    }
    if args.input_size == Some(0) {
        return Err(Error::invalid_config("input_size", "at least 1", 0).into());
    }
    // A mistyped name fails now, not after the photos before it have been classified.
    if !args.skip_bad {
        for path in &args.images {
            std::fs::metadata(path).map_err(|e| resnet_transfer::Error::io(path, e))?;
        }
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
    // What the pixels go through, said once (on stderr: stdout stays one answer per photo):
    // an ONNX file without this crate's metadata gets what its layout implies.
    let chosen = |given: bool| {
        if given {
            "as given"
        } else {
            "what the weights ask for"
        }
    };
    eprintln!(
        "predict: {} preprocessing ({}), {s}x{s} pixels ({})",
        format!("{:?}", classifier.preprocess).to_lowercase(),
        chosen(args.preprocess.is_some()),
        chosen(args.input_size.is_some()),
        s = classifier.input_size,
    );
    if let Some(dir) = &args.explain {
        // A size with no map to show, or a folder that cannot be written, fails before any photo.
        classifier.map_size()?;
        resnet_transfer::files::check_output_folder("--explain", dir)?;
        std::fs::create_dir_all(dir).map_err(|e| resnet_transfer::Error::io(dir, e))?;
    }
    // Each batch's answers printed before the next batch is read.
    // Photos of one name from different folders (cat/1.jpg, dog/1.jpg) get 1-cam.png, 1-2-cam.png.
    let mut taken = std::collections::HashMap::<String, usize>::new();
    let mut answered = 0;
    for chunk in args.images.chunks(args.batch_size) {
        let (paths, images) = read_batch(chunk, classifier.input_size, args.skip_bad)?;
        if images.is_empty() {
            continue;
        }
        let predictions = classifier.classify_pixels(&images, args.top_k)?;
        answered += predictions.len();
        let batch = (paths.as_slice(), images.as_slice(), predictions.as_slice());
        match &args.explain {
            Some(dir) => explain(&classifier, &args, dir, batch, &mut taken)?,
            None => (paths.iter().zip(&predictions)).for_each(|(p, a)| print(p, a, None, &args)),
        }
    }
    if answered == 0 {
        let count = args.images.len();
        return Err(format!("none of the {count} photos could be read (each listed above)").into());
    }
    Ok(())
}

/// One batch's photos, read in parallel (decoding is a good share of the time), with their
/// paths. With `skip_bad`, a photo that cannot be read is listed on stderr with its reason and
/// left out; without, the first is the error.
fn read_batch(
    paths: &[PathBuf],
    side: usize,
    skip_bad: bool,
) -> resnet_transfer::Result<(Vec<&Path>, Vec<Vec<u8>>)> {
    use rayon::prelude::*;
    let read: Vec<_> = paths.par_iter().map(|p| read_image(p, side)).collect();
    let (mut kept, mut images) = (Vec::new(), Vec::new());
    for (path, result) in paths.iter().zip(read) {
        match result {
            Ok(image) => {
                kept.push(path.as_path());
                images.push(image);
            }
            Err(e) => match e.unreadable_file() {
                Some((_, reason)) if skip_bad => eprintln!("skipped {}: {reason}", path.display()),
                _ => return Err(e),
            },
        }
    }
    Ok((kept, images))
}

/// Explains one batch's photos: each photo's Grad-CAM map for its top class, the explained
/// photo written to `dir`.
fn explain(
    classifier: &Classifier,
    args: &Args,
    dir: &Path,
    (paths, images, predictions): (&[&Path], &[Vec<u8>], &[Prediction]),
    taken: &mut std::collections::HashMap<String, usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    let side = classifier.input_size;
    let top = predictions.iter().map(|p| p.top_k[0].index).collect();
    let maps = classifier.explain_pixels(images, &CamTarget::PerImage(top))?;
    for (((path, image), prediction), map) in paths.iter().zip(images).zip(predictions).zip(&maps) {
        let stem = path
            .file_stem()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        let seen = taken.entry(stem.to_string()).or_default();
        *seen += 1;
        let out = match *seen {
            1 => dir.join(format!("{stem}-cam.png")),
            k => dir.join(format!("{stem}-{k}-cam.png")),
        };
        let best = &prediction.top_k[0];
        let caption = format!("{} {:.1}%", best.label, 100.0 * best.prob);
        draw_explained_photo(&out, image, side, side, map, &caption)?;
        print(path, prediction, Some((map, &out)), args);
    }
    Ok(())
}

fn print(path: &Path, prediction: &Prediction, cam: Option<(&ClassMap, &Path)>, args: &Args) {
    if args.json {
        let mut line = serde_json::json!({
            "image": path.display().to_string(),
            "top_k": prediction.top_k,
        });
        if args.logits {
            line["logits"] = serde_json::json!(prediction.logits);
        }
        if let Some((map, file)) = cam {
            line["cam"] = serde_json::json!(map.rows());
            line["cam_file"] = serde_json::json!(file.display().to_string());
        }
        println!("{line}");
    } else {
        println!("{}", path.display());
        if let Some((_, out)) = cam {
            println!("  heat map: {}", out.display());
        }
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
