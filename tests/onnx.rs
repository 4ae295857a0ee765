//! ONNX import against real exports with seeded random weights (tests/fixtures/make_onnx.py):
//! our logits must match onnxruntime's to within 1e-4 of the largest logit's magnitude.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use resnet_transfer::Error;
use resnet_transfer::data::Preprocess;
use resnet_transfer::model::StridePlacement;
use resnet_transfer::weights::{InputLayout, import_onnx};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// The generator's input formula, in NCHW.
fn input(shape: [usize; 4]) -> Vec<f32> {
    let mut out = Vec::with_capacity(shape.iter().product());
    for n in 0..shape[0] {
        for c in 0..shape[1] {
            for y in 0..shape[2] {
                for x in 0..shape[3] {
                    out.push(((7 * n + 13 * c + 3 * y + 5 * x) % 17) as f32 * 0.25 - 2.0);
                }
            }
        }
    }
    out
}

struct Reference {
    logits: Vec<Vec<f32>>,
    nchw: [usize; 4],
}

fn reference(style: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(&format!("{style}.json"))).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shape: Vec<usize> = serde_json::from_value(json["input_shape"].clone()).unwrap();
    let nchw = match json["layout"].as_str().unwrap() {
        "nhwc" => [shape[0], shape[3], shape[1], shape[2]],
        _ => [shape[0], shape[1], shape[2], shape[3]],
    };
    Reference {
        logits: serde_json::from_value(json["logits"].clone()).unwrap(),
        nchw,
    }
}

/// Imports `style`, runs it on ndarray, and returns the worst error relative to the largest logit.
fn parity(style: &str) -> (resnet_transfer::weights::Imported, f32) {
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let imported = import_onnx(&fixture(&format!("{style}.onnx")), &device).unwrap();
    let reference = reference(style);
    let x = Tensor::<4>::from_data(
        TensorData::new(input(reference.nchw), reference.nchw),
        &device,
    );
    let ours = imported
        .model
        .forward(x)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let theirs: Vec<f32> = reference.logits.concat();
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(&theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("{style}: worst error {worst:e} = {:e} of the largest logit {scale}", worst / scale);
    (imported, worst / scale)
}

#[test]
fn torchvision_export_with_folded_batch_norm() {
    let (imported, err) = parity("torch-folded");
    assert!(err < 1e-4, "relative error {err}");
    let c = &imported.config;
    assert_eq!((c.depth, c.width, c.num_classes), (50, 4, Some(10)));
    assert_eq!(c.stride_placement, StridePlacement::MiddleConv);
    assert!(imported.folded_batch_norm && !c.conv_bias);
    assert_eq!(imported.preprocess, Preprocess::Torch);
    // The folded bias lives in BatchNorm's shift, so the model stays trainable.
    assert!(imported.model.stem.conv.conv.bias.is_none());
}

#[test]
fn torchvision_export_with_batch_norm_nodes() {
    let (imported, err) = parity("torch-bn");
    assert!(err < 1e-4, "relative error {err}");
    assert!(!imported.folded_batch_norm);
    assert_eq!(imported.config.batch_norm_epsilon, 1e-5);
    assert_eq!(imported.input_size, Some(32));
}

#[test]
fn keras_export_through_tf2onnx() {
    let (imported, err) = parity("keras");
    assert!(err < 1e-4, "relative error {err}");
    let c = &imported.config;
    assert_eq!(imported.layout, InputLayout::Nhwc);
    assert_eq!(c.stride_placement, StridePlacement::FirstConv);
    assert!(c.conv_bias);
    assert!(imported.softmax);
    assert_eq!(imported.preprocess, Preprocess::Caffe);
}

#[test]
fn model_zoo_v1_export() {
    let (imported, err) = parity("zoo-v1");
    assert!(err < 1e-4, "relative error {err}");
    assert_eq!(imported.config.stride_placement, StridePlacement::FirstConv);
    assert!(!imported.config.conv_bias);
}

#[test]
fn unsupported_and_corrupt_files_give_typed_errors() {
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let err = import_onnx(&fixture("zoo-v2.onnx"), &device).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedGraph { op, .. } if op == "BatchNormalization"),
        "{err}"
    );
    assert!(err.to_string().contains("pre-activation"), "{err}");

    let err = import_onnx(&fixture("not-resnet.onnx"), &device).unwrap_err();
    assert!(matches!(err, Error::UnsupportedGraph { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let truncated = tmp.path().join("truncated.onnx");
    let bytes = std::fs::read(fixture("torch-bn.onnx")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = import_onnx(&truncated, &device).unwrap_err();
    assert!(
        matches!(&err, Error::BadFormat { path, .. } | Error::UnsupportedGraph { path, .. } if *path == truncated),
        "{err}"
    );

    let missing = tmp.path().join("missing.onnx");
    assert!(matches!(
        import_onnx(&missing, &device),
        Err(Error::Io { .. })
    ));
}
