//! Imports a ResNet from ONNX, prints what was detected, and saves it in Burn's record format
//! so the next load is fast.
//!
//! ```sh
//! cargo run --release --example import_onnx -- --onnx FILE|NAME --out RECORD [--check REFERENCE.json]
//! ```
//! `--check` compares the logits with a reference written by `tests/fixtures/make_onnx.py`
//! (onnxruntime's output for the generator's input formula) and prints the relative error.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use resnet_transfer::weights::{SavedModel, describe, import_onnx, parity_input};

#[derive(Parser)]
#[command(about = "Import a ResNet ONNX export into a Burn record")]
struct Args {
    /// The ONNX file, or a catalog name (found in ./weights or the cache, else downloaded).
    #[arg(long)]
    onnx: String,
    /// Where to save the record (writes OUT.bpk and OUT.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A reference JSON from tests/fixtures/make_onnx.py to compare the logits with.
    #[arg(long)]
    check: Option<PathBuf>,
    /// Never download catalog weights.
    #[arg(long)]
    offline: bool,
    /// Backend: the fastest CPU backend compiled in by default; one this build lacks says so.
    #[arg(long, default_value_t = resnet_transfer::BackendKind::default().to_string(), value_parser = clap::builder::PossibleValuesParser::new(resnet_transfer::BackendKind::ALL.map(resnet_transfer::BackendKind::name)), ignore_case = true)]
    backend: String,
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
    let start = Instant::now();
    let onnx = resnet_transfer::weights::resolve(&args.onnx, !args.offline, true)?;
    let imported = import_onnx(&onnx, &device)?;
    println!("{}", describe(&imported, &onnx));
    println!("ONNX import: {:.2} s", start.elapsed().as_secs_f64());

    if let Some(reference) = &args.check {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(reference)?)?;
        let shape: Vec<usize> = serde_json::from_value(json["input_shape"].clone())?;
        let nchw = if json["layout"] == "nhwc" {
            [shape[0], shape[3], shape[1], shape[2]]
        } else {
            [shape[0], shape[1], shape[2], shape[3]]
        };
        let input = parity_input(nchw);
        let x = Tensor::<4>::from_data(TensorData::new(input, nchw), &device);
        let theirs: Vec<f32> =
            serde_json::from_value::<Vec<Vec<f32>>>(json["logits"].clone())?.concat();
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let compare = |what: &str, ours: Vec<f32>, seconds: f64| {
            let worst = (ours.iter().zip(&theirs)).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            println!(
                "{what} logits vs onnxruntime: worst difference {worst:e}, {:e} of the largest logit ({scale}); forward {seconds:.2} s",
                worst / scale
            );
        };
        let start = Instant::now();
        let ours = imported
            .model
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()?;
        compare("module", ours, start.elapsed().as_secs_f64());
        // On the CPU backends inference runs folded (Winograd's 3x3 convolutions included):
        // what predict, evaluate and Classifier compute.
        if resnet_transfer::device::is_host(&device) {
            let start = Instant::now();
            let folded = imported.model.folded()?.forward(x)?;
            let ours = folded.into_data().try_to_vec::<f32>()?;
            compare("folded", ours, start.elapsed().as_secs_f64());
        }
    }

    if let Some(out) = &args.out {
        // A file this crate exported keeps its class names and input size.
        let card = imported.model_card(&onnx);
        let saved = SavedModel {
            model: imported.model,
            card,
        };
        let start = Instant::now();
        saved.save(out)?;
        let save = start.elapsed().as_secs_f64();
        let start = Instant::now();
        SavedModel::load(out, &device)?;
        println!(
            "record saved in {save:.2} s, loaded back in {:.2} s",
            start.elapsed().as_secs_f64()
        );
        println!("saved to {}.bpk and {}.json", out.display(), out.display());
    }
    Ok(())
}
