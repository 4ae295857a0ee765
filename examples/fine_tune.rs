//! Two-phase transfer learning on your own photos: a folder per class, as torchvision's
//! `ImageFolder` and Keras's `image_dataset_from_directory` read them. Class names are the
//! folder names, sorted; photos in their sub-folders count too; photos of any size and format are
//! turned upright (EXIF), resized (short side) and centre-cropped.
//!
//! ```sh
//! cargo run --release --example fine_tune -- --images DIR [--valid DIR | --valid-share 0.2]
//!     [--test DIR] [--weights NAME|FILE] [--input-size 224] [--phase1-epochs N]
//!     [--phase2-epochs M] [--skip-bad] [--out DIR] ...
//! ```
//! `--help` lists every option. The saved model (`OUT/model.bpk`) runs in `predict` and
//! `evaluate --images` with its own class names.

use std::path::{Path, PathBuf};

use clap::Parser;
use resnet_transfer::data::{ImageFiles, ImageFolder, list_image_folder, share_split};
use resnet_transfer::job::{FineTuneJob, JobData};

#[path = "shared/job_args.rs"]
mod job_args;

#[derive(Parser)]
#[command(
    about = "Two-phase transfer learning of an ImageNet ResNet on a folder per class",
    allow_negative_numbers = true
)]
struct Args {
    /// Training photos: DIR/<class>/<photo> (JPEG, PNG, WebP, BMP, GIF, TIFF; sub-folders too).
    #[arg(long)]
    images: PathBuf,
    /// Validation photos in the same layout (default: --valid-share of --images).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Share of each class of --images held out for validation, in (0, 1) (default 0.2; not
    /// with --valid).
    #[arg(long, conflicts_with = "valid")]
    valid_share: Option<f64>,
    /// Photos of the final evaluation, confusion matrix and prediction grid, in the same layout
    /// (default: the validation photos).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Square side the photos are resized and cropped to.
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    /// Leave out photos that cannot be read (cut short, empty, undecodable, broken links; listed
    /// at the end with the reason) instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Hold every photo decoded in memory (the fastest for sets that fit), whatever
    /// --memory-budget says. Without it, a set larger than the budget is streamed: only the file
    /// list is held and photos are decoded a batch at a time.
    #[arg(long, conflicts_with = "memory_budget")]
    cache_decoded: bool,
    /// The memory the decoded photos may take before they are streamed from their files, and
    /// phase 1's cached features before they stay in the run folder's file and are read a batch
    /// at a time; in bytes or with K, M, G (default: a quarter of this machine's memory).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    memory_budget: Option<u64>,
    /// Run folder: checkpoints, model, history, report.
    #[arg(long, default_value = "runs/fine_tune")]
    out: PathBuf,
    #[command(flatten)]
    job: job_args::JobArgs,
}

fn main() {
    job_args::main(|a: &Args| a.job.backend.as_str(), run);
}

/// A size in bytes: a number, optionally followed by K, M or G (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("`{s}`: the unit is K, M or G")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or a number with K, M or G)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 0.0) {
        return Err(format!("`{s}` is not a size"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is more bytes than a size can count"));
    }
    Ok(bytes as u64)
}

/// Whether the photos are streamed from their files rather than held decoded, and why, in
/// words: augmentation crops from each whole photo; otherwise the decoded size against the
/// budget.
fn choose_streaming(args: &Args, photos: usize) -> resnet_transfer::Result<(bool, String)> {
    let side = args.input_size as u64;
    let decoded = photos as u64 * 3 * side * side;
    let size = format!(
        "{photos} photo files, {} decoded at {side}x{side}",
        resnet_transfer::data::in_words(decoded)
    );
    if args.job.augment {
        if args.cache_decoded {
            return Err(resnet_transfer::Error::invalid_config(
                "cache_decoded",
                "streamed photos with --augment (its random crops come from each whole photo, \
                 which the decoded squares no longer hold)",
                "--cache-decoded",
            ));
        }
        return Ok((
            true,
            format!("{size}: streamed from their files (--augment crops each whole photo)"),
        ));
    }
    if args.cache_decoded {
        return Ok((false, format!("{size}: held in memory (--cache-decoded)")));
    }
    let budget = args
        .memory_budget
        .unwrap_or_else(resnet_transfer::data::default_memory_budget);
    let gib = resnet_transfer::data::in_words(budget);
    Ok(if decoded > budget {
        (
            true,
            format!("{size}: streamed from their files (more than the memory budget, {gib})"),
        )
    } else {
        (
            false,
            format!("{size}: held in memory (within the memory budget, {gib})"),
        )
    })
}

/// Reads a photo folder (held or streamed, as `stream` says); its classes must be `classes` when
/// given (a validation or test folder).
fn read(
    files: &ImageFiles,
    stream: bool,
    args: &Args,
    classes: Option<&[String]>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> resnet_transfer::Result<ImageFolder> {
    let dir = &files.root;
    let folder = if stream {
        files.stream(args.input_size, args.skip_bad)?
    } else {
        files.read(args.input_size, args.skip_bad)?
    };
    if let Some(classes) = classes.filter(|c| *c != folder.class_names.as_slice()) {
        return Err(resnet_transfer::Error::invalid_config(
            "class_names",
            format!("the classes of --images {classes:?}"),
            format!("{:?} in {}", folder.class_names, dir.display()),
        ));
    }
    skipped.extend(folder.skipped.iter().cloned());
    Ok(folder)
}

/// The share of each class held out for validation when neither --valid-share nor --valid is
/// given.
const DEFAULT_VALID_SHARE: f64 = 0.2;

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    args.job.check_options(args.input_size)?;
    // Validation is how the jump at the unfreeze point is measured: fine_tune holds some out.
    let valid_share = args.valid_share.unwrap_or(DEFAULT_VALID_SHARE);
    if !(valid_share > 0.0 && valid_share < 1.0) {
        return Err(resnet_transfer::Error::invalid_config(
            "valid_share",
            "in (0, 1) (fine_tune always validates; give --valid DIR for photos of your own)",
            valid_share,
        )
        .into());
    }
    args.job.check_outputs(&args.out)?;
    let mut skipped = Vec::new();
    // Listed first, so that their number decides whether they are held or streamed.
    let listed = list_image_folder(&args.images)?;
    let valid_files = args.valid.as_deref().map(list_image_folder).transpose()?;
    let test_files = args.test.as_deref().map(list_image_folder).transpose()?;
    let count = [Some(&listed), valid_files.as_ref(), test_files.as_ref()]
        .into_iter()
        .flatten()
        .map(ImageFiles::len)
        .sum();
    // Files that are not photos are left out, as torchvision does; said, so that a phone's
    // HEIC photos do not vanish without a word.
    let lists = [
        ("--images", Some(&listed)),
        ("--valid", valid_files.as_ref()),
        ("--test", test_files.as_ref()),
    ];
    for (option, files) in lists {
        if let Some(line) = files.and_then(ImageFiles::left_out_line) {
            eprintln!(
                "{option}: {line}; convert photos in other formats (HEIC, AVIF) to JPEG or PNG \
                 to train on them"
            );
        }
    }
    let (stream, kept) = choose_streaming(&args, count)?;
    if !args.job.quiet {
        eprintln!("{kept}");
    }
    let photos = read(&listed, stream, &args, None, &mut skipped)?;
    let classes = photos.class_names;
    let (train, valid) = match &valid_files {
        Some(files) => (
            photos.images,
            read(files, stream, &args, Some(&classes), &mut skipped)?.images,
        ),
        None => {
            let labels = photos.images.labels();
            let split = share_split(labels, classes.len(), valid_share, args.job.seed)?;
            if split.validation.is_empty() {
                return Err(resnet_transfer::Error::invalid_config(
                    "valid_share",
                    "a share that leaves validation photos (or give --valid DIR)",
                    valid_share,
                )
                .into());
            }
            // Split in place: the held photos are not copied whole a second time.
            photos.images.into_split(&split.train, &split.validation)
        }
    };
    let test = match &test_files {
        Some(files) => read(files, stream, &args, Some(&classes), &mut skipped)?.images,
        None => valid.clone(),
    };
    let mut notes = vec![
        (
            "evaluated on".to_string(),
            match &args.test {
                Some(dir) => dir.display().to_string(),
                None => "the validation photos".to_string(),
            },
        ),
        ("photos".to_string(), kept),
    ];
    if args.skip_bad {
        notes.push((
            "files skipped (unreadable)".to_string(),
            skipped.len().to_string(),
        ));
    }
    let options = recipe_options(&args);
    let data = JobData {
        train,
        valid,
        test,
        class_names: classes,
        source: args.images.display().to_string(),
        notes,
        options,
    };
    let job = FineTuneJob {
        memory_budget: args
            .memory_budget
            .unwrap_or_else(resnet_transfer::data::default_memory_budget),
        ..args.job.job(args.out.clone(), args.input_size)
    };
    let outcome = job.run(&data)?;
    if !skipped.is_empty() {
        println!("skipped {} files that could not be read:", skipped.len());
        for (path, reason) in &skipped {
            println!("  {}: {reason}", path.display());
        }
    }
    args.job.finish(&outcome, &args.out)?;
    Ok(())
}

/// What chose the photos, for the run's recipe (a resume with other folders is refused):
/// folders by their absolute paths.
fn recipe_options(args: &Args) -> Vec<(String, String)> {
    let folder = |dir: &Path| {
        std::fs::canonicalize(dir)
            .map_or_else(|_| dir.display().to_string(), |p| p.display().to_string())
    };
    let valid_share = match args.valid {
        Some(_) => "-".to_string(),
        None => args.valid_share.unwrap_or(DEFAULT_VALID_SHARE).to_string(),
    };
    vec![
        ("images".to_string(), folder(&args.images)),
        (
            "valid".to_string(),
            args.valid.as_deref().map_or("-".into(), folder),
        ),
        ("valid_share".to_string(), valid_share),
        (
            "test".to_string(),
            args.test.as_deref().map_or("-".into(), folder),
        ),
    ]
}
