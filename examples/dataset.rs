//! Finds or downloads CIFAR-10, prints per split the images per class and the per-channel mean
//! and standard deviation of the raw pixels, and optionally draws a grid of samples per class.
//!
//! ```sh
//! cargo run --release --example dataset -- [--data-dir DIR] [--json] [--grid FILE.png]
//! ```

use std::path::PathBuf;

use clap::Parser;
use plotters::style::BLACK;
use resnet_transfer::data::{Cifar10, Downloader, ImageSet};
use resnet_transfer::report::{GridRow, Tile, draw_grid};

#[derive(Parser)]
#[command(about = "CIFAR-10: counts, pixel statistics and a grid of samples per class")]
struct Args {
    /// Folder holding CIFAR-10 (archive, extracted folder, or a parent of one); also where it is
    /// downloaded when nothing is found. Default: the crate's cache folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Write a PNG with a row of sample images per class.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Samples per class in the grid.
    #[arg(long, default_value_t = 10)]
    per_class: usize,
    /// Never download; fail with a message saying where to put the files.
    #[arg(long)]
    offline: bool,
}

fn split_summary(set: &ImageSet, classes: usize) -> resnet_transfer::Result<serde_json::Value> {
    let (mean, std) = set.channel_stats()?;
    Ok(serde_json::json!({
        "count": set.len(),
        "per_class": set.class_counts(classes),
        "mean_rgb": mean,
        "std_rgb": std,
    }))
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> resnet_transfer::Result<()> {
    let downloader = Downloader {
        progress: !args.json,
        ..Downloader::default()
    };
    let download = (!args.offline).then_some(&downloader);
    let cifar = Cifar10::find_or_download(args.data_dir.as_deref(), download)?;
    let classes = cifar.class_names.len();
    let splits = [("train", &cifar.train), ("test", &cifar.test)];

    if args.json {
        let mut out = serde_json::Map::new();
        for (name, set) in splits {
            out.insert(name.into(), split_summary(set, classes)?);
        }
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!("CIFAR-10 from {}", cifar.source.display());
        for (name, set) in splits {
            let (mean, std) = set.channel_stats()?;
            println!("\n{name}: {} images", set.len());
            for (class, count) in cifar.class_names.iter().zip(set.class_counts(classes)) {
                println!("  {class:<12} {count:>6}");
            }
            println!(
                "  mean RGB     {:.3} {:.3} {:.3}",
                mean[0], mean[1], mean[2]
            );
            println!("  std RGB      {:.3} {:.3} {:.3}", std[0], std[1], std[2]);
        }
    }

    if let Some(path) = &args.grid {
        let rows: Vec<GridRow> = cifar
            .class_names
            .iter()
            .enumerate()
            .map(|(class, name)| {
                Ok(GridRow {
                    label: Some(name.clone()),
                    tiles: (0..cifar.train.len())
                        .filter(|&i| cifar.train.label(i) == class)
                        .take(args.per_class)
                        .map(|i| {
                            Ok(Tile {
                                rgb: cifar.train.image(i)?.into_owned(),
                                height: cifar.train.height(),
                                width: cifar.train.width(),
                                caption: String::new(),
                                color: BLACK,
                                framed: false,
                            })
                        })
                        .collect::<resnet_transfer::Result<_>>()?,
                })
            })
            .collect::<resnet_transfer::Result<_>>()?;
        draw_grid(path, Some("Samples of each class"), &rows)?;
        if !args.json {
            println!("\ngrid of samples written to {}", path.display());
        }
    }
    Ok(())
}
