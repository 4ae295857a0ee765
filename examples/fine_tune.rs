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
use resnet_transfer::data::{ImageFolder, read_image_folder, share_split};
use resnet_transfer::job::JobData;

#[path = "shared/job_args.rs"]
mod job_args;

#[derive(Parser)]
#[command(about = "Two-phase transfer learning of an ImageNet ResNet on a folder per class")]
struct Args {
    /// Training photos: DIR/<class>/<photo> (JPEG, PNG, WebP, BMP, GIF, TIFF; sub-folders too).
    #[arg(long)]
    images: PathBuf,
    /// Validation photos in the same layout (default: --valid-share of --images).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Share of each class of --images held out for validation when --valid is not given.
    #[arg(long, default_value_t = 0.2)]
    valid_share: f64,
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
    /// Run folder: checkpoints, model, history, report.
    #[arg(long, default_value = "runs/fine_tune")]
    out: PathBuf,
    #[command(flatten)]
    job: job_args::JobArgs,
}

fn main() {
    job_args::main::<Args>(|| run(Args::parse()));
}

/// Reads a photo folder; its classes must be `classes` when given (a validation or test folder).
fn read(
    dir: &Path,
    args: &Args,
    classes: Option<&[String]>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> resnet_transfer::Result<ImageFolder> {
    let folder = read_image_folder(dir, args.input_size, args.skip_bad)?;
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

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    args.job.check_outputs(&args.out)?;
    let mut skipped = Vec::new();
    let photos = read(&args.images, &args, None, &mut skipped)?;
    let classes = photos.class_names.clone();
    let (train, valid) = match &args.valid {
        Some(dir) => (
            photos.images,
            read(dir, &args, Some(&classes), &mut skipped)?.images,
        ),
        None => {
            let labels = photos.images.labels();
            let split = share_split(labels, classes.len(), args.valid_share, args.job.seed)?;
            if split.validation.is_empty() {
                return Err(resnet_transfer::Error::invalid_config(
                    "valid_share",
                    "a share that leaves validation photos (or give --valid DIR)",
                    args.valid_share,
                )
                .into());
            }
            let set = &photos.images;
            (set.select(&split.train), set.select(&split.validation))
        }
    };
    let test = match &args.test {
        Some(dir) => read(dir, &args, Some(&classes), &mut skipped)?.images,
        None => valid.clone(),
    };
    let mut notes = vec![(
        "evaluated on".to_string(),
        match &args.test {
            Some(dir) => dir.display().to_string(),
            None => "the validation photos".to_string(),
        },
    )];
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
    let outcome = args.job.job(args.out.clone(), args.input_size).run(&data)?;
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
        None => args.valid_share.to_string(),
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
