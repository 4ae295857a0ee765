//! Exports a trained model (a run folder, a saved model, or any weights the crate reads) as an
//! ONNX file for onnxruntime and other runtimes, and checks it by reading it back.
//!
//! ```sh
//! cargo run --release --example export_onnx -- --weights runs/cifar10 --out cifar10.onnx \
//!     [--batch-norm folded|kept] [--opset 17]
//! ```
//! The file takes `images` `[batch, 3, size, size]` (NCHW float32, any batch) and gives `logits`
//! `[batch, classes]`; its metadata holds the class names and the preprocessing.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use clap::builder::TypedValueParser;
use resnet_transfer::weights::{self, ExportBatchNorm, ExportOptions, export_onnx, parity_input};

#[derive(Parser)]
#[command(about = "Export a trained ResNet as an ONNX file")]
struct Args {
    /// The model: a run folder, a saved model (NAME.bpk + NAME.json), an ONNX file or a catalog
    /// name.
    #[arg(long)]
    weights: String,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// BatchNorm folded into the convolutions (smallest, fastest) or kept as nodes (every
    /// parameter as it is, for further training elsewhere).
    #[arg(long, default_value = "folded", value_parser = clap::builder::PossibleValuesParser::new(ExportBatchNorm::ALL.map(ExportBatchNorm::name)).map(|s| s.parse::<ExportBatchNorm>().expect("a listed name")), ignore_case = true)]
    batch_norm: ExportBatchNorm,
    /// ONNX opset, 13 to 21.
    #[arg(long, default_value_t = 17)]
    opset: i64,
    /// Never download catalog weights.
    #[arg(long)]
    offline: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // A folder or a missing parent is refused before the model is loaded, in words.
    resnet_transfer::files::check_output_file("--out", &args.out)?;
    let device = resnet_transfer::device::device("ndarray")?;
    let saved = weights::load_named(&args.weights, &device, !args.offline, true)?;
    let card = &saved.card;
    let options = ExportOptions::default()
        .with_batch_norm(args.batch_norm)
        .with_opset(args.opset);
    let start = Instant::now();
    export_onnx(&saved.model, card, &args.out, &options)?;
    let bytes = std::fs::metadata(&args.out)?.len();
    println!(
        "wrote {} ({:.1} MB, opset {}, BatchNorm {}) in {:.2} s",
        args.out.display(),
        bytes as f64 / 1e6,
        args.opset,
        args.batch_norm,
        start.elapsed().as_secs_f64()
    );
    println!(
        "input `images` [batch, 3, {s}, {s}] NCHW float32, preprocessing {}; output `logits` [batch, {}]",
        card.preprocess,
        saved.model.num_classes().unwrap_or(0),
        s = card.input_size,
    );
    if !card.class_names.is_empty() {
        println!("classes: {}", card.class_names.join(", "));
    }

    // Read back with the crate's own importer: the same logits on a fixed input. The
    // independent check (onnxruntime) is tests/it/export.rs.
    let imported = weights::import_onnx(&args.out, &device)?;
    let shape = [2, 3, card.input_size, card.input_size];
    let x = Tensor::<4>::from_data(TensorData::new(parity_input(shape), shape), &device);
    let ours = saved
        .model
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()?;
    let back = imported.model.forward(x).into_data().try_to_vec::<f32>()?;
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = (ours.iter().zip(&back)).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "read back: worst logit difference {worst:e} ({:e} of the largest)",
        worst / scale.max(f32::MIN_POSITIVE)
    );
    Ok(())
}
