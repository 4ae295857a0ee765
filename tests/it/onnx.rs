//! ONNX import against real exports with seeded random weights (tests/fixtures/make_onnx.py):
//! our logits must match onnxruntime's to within 1e-4 of the largest logit's magnitude, for
//! every depth of the family and at 32 and 224 pixels.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use resnet_transfer::Error;
use resnet_transfer::data::Preprocess;
use resnet_transfer::model::StridePlacement;
use resnet_transfer::weights::{InputLayout, import_onnx, parity_input};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
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
        TensorData::new(parity_input(reference.nchw), reference.nchw),
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
    eprintln!(
        "{style}: worst error {worst:e} = {:e} of the largest logit {scale}",
        worst / scale
    );
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

/// Every depth of the family, basic and bottleneck blocks, folded and kept BatchNorm, and
/// 224-pixel inputs: detected as exported, logits within 1e-4 of onnxruntime's largest.
#[test]
fn every_depth_and_224_pixels_match_onnxruntime() {
    // (fixture, depth, width, input side, BatchNorm folded by the exporter)
    let cases = [
        ("torch-bn-d18", 18, 4, 32, false),
        ("torch-folded-d34", 34, 4, 32, true),
        ("torch-bn-d101", 101, 2, 32, false),
        ("torch-folded-d152", 152, 2, 32, true),
        ("torch-folded-d18-224", 18, 4, 224, true),
        ("torch-bn-d50-224", 50, 4, 224, false),
    ];
    for (name, depth, width, side, folded) in cases {
        let (imported, err) = parity(name);
        assert!(err < 1e-4, "{name}: relative error {err}");
        let c = &imported.config;
        assert_eq!(
            (c.depth, c.width, c.num_classes),
            (depth, width, Some(10)),
            "{name}"
        );
        assert_eq!(c.stride_placement, StridePlacement::MiddleConv, "{name}");
        assert_eq!(imported.folded_batch_norm, folded, "{name}");
        assert_eq!(imported.input_size, Some(side), "{name}");
    }
}

/// Keras's ResNet101 and ResNet152 layouts through tf2onnx, as its ResNet50 is.
#[test]
fn keras_101_and_152_match_onnxruntime() {
    for (name, depth) in [("keras-d101", 101), ("keras-d152", 152)] {
        let (imported, err) = parity(name);
        assert!(err < 1e-4, "{name}: relative error {err}");
        let c = &imported.config;
        assert_eq!((c.depth, c.width), (depth, 2), "{name}");
        assert_eq!(imported.layout, InputLayout::Nhwc);
        assert_eq!(c.stride_placement, StridePlacement::FirstConv);
        assert!(c.conv_bias && imported.softmax);
        assert_eq!(imported.preprocess, Preprocess::Caffe);
    }
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
    // The zoo's v1 layout (MXNet Gluon) at opset 7 as resnet*-v1-7, at opset 12 as the default
    // resnet50-v1-12, with basic blocks (depth 18) and at depth 101.
    let cases = [
        ("zoo-v1", 50, 4),
        ("zoo-v1-opset12", 50, 4),
        ("zoo-v1-d18", 18, 4),
        ("zoo-v1-d101", 101, 2),
    ];
    for (name, depth, width) in cases {
        let (imported, err) = parity(name);
        assert!(err < 1e-4, "{name}: relative error {err}");
        let c = &imported.config;
        assert_eq!((c.depth, c.width), (depth, width), "{name}");
        if depth >= 50 {
            // v1: a bottleneck's stride on its first 1x1 (basic blocks have one place for it).
            assert_eq!(c.stride_placement, StridePlacement::FirstConv, "{name}");
        }
        assert!(!c.conv_bias && !imported.folded_batch_norm);
        assert_eq!(imported.preprocess, Preprocess::Torch);
    }
}

/// What `torch.onnx.export(model, (x,), path)` writes with its defaults since torch 2.9 (the
/// dynamo exporter): a small graph file and the weights in `NAME.onnx.data` beside it. Exports of
/// torchvision's ResNet18 and ResNet50 layouts and of Hugging Face transformers'
/// `ResNetForImageClassification` (tests/fixtures/make_onnx.py, styles torch-dynamo and
/// hf-resnet), held to onnxruntime's logits.
#[test]
fn default_torch_exports_with_external_data_match_onnxruntime() {
    for (name, depth) in [
        ("torch-dynamo-d18", 18),
        ("torch-dynamo", 50),
        ("hf-resnet", 50),
    ] {
        let graph = fixture(&format!("{name}.onnx"));
        assert!(
            fixture(&format!("{name}.onnx.data")).is_file(),
            "{name}: the fixture must keep its weights in external data"
        );
        use onnx_ir::Message;
        let proto = onnx_ir::ModelProto::parse_from_bytes(&std::fs::read(&graph).unwrap());
        let external = (proto.unwrap().graph.initializer.iter())
            .filter(|t| !t.external_data.is_empty())
            .count();
        assert!(external > 0, "{name}: no weight is in the data file");
        let (imported, err) = parity(name);
        assert!(err < 1e-4, "{name}: relative error {err}");
        assert_eq!(imported.config.depth, depth, "{name}");
        assert_eq!(imported.config.num_classes, Some(10), "{name}");
    }
}

/// A default torch export whose data file is missing, cut short, or named outside the model's
/// folder (tests/fixtures/make_external_data_errors.py): a typed error naming the tensor and
/// the file, never a panic or a parser message.
#[test]
fn broken_external_data_is_a_typed_error_naming_the_file() {
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let cases = [
        ("ext-missing.onnx", "cannot be read"),
        ("ext-short.onnx", "too short"),
        ("ext-escape.onnx", "outside the model's folder"),
    ];
    for (file, what) in cases {
        let err = import_onnx(&fixture(file), &device).unwrap_err();
        let Error::ExternalData {
            model,
            tensor,
            location,
            reason,
        } = &err
        else {
            panic!("{file}: expected an external-data error, got {err}");
        };
        assert_eq!(*model, fixture(file), "{file}");
        assert!(!tensor.is_empty(), "{file}");
        assert!(!location.as_os_str().is_empty(), "{file}");
        assert!(reason.contains(what), "{file}: {err}");
    }

    // Copied without its data file, a default export names the file it needs.
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("torch-dynamo-d18.onnx");
    std::fs::copy(fixture("torch-dynamo-d18.onnx"), &alone).unwrap();
    let message = import_onnx(&alone, &device).unwrap_err().to_string();
    assert!(message.contains("torch-dynamo-d18.onnx.data"), "{message}");

    // A data file whose weights were overwritten with NaN (a damaged copy; a training that
    // diverged writes such files too) is refused, naming a tensor: the folded path's ReLU
    // would turn the NaN into zeros and normal-looking answers. Infinity too.
    for bad in [f32::NAN, f32::INFINITY] {
        let mut data = std::fs::read(fixture("torch-dynamo-d18.onnx.data")).unwrap();
        let middle = data.len() / 2 / 4 * 4;
        for word in data[middle..middle + 256].chunks_exact_mut(4) {
            word.copy_from_slice(&bad.to_le_bytes());
        }
        std::fs::write(tmp.path().join("torch-dynamo-d18.onnx.data"), &data).unwrap();
        let err = import_onnx(&alone, &device).unwrap_err();
        let Error::BadTensor { tensor, reason } = &err else {
            panic!("{bad}: expected a bad-tensor error, got {err}");
        };
        assert!(tensor.contains("torch-dynamo-d18.onnx"), "{err}");
        assert!(
            reason.contains("64 of its") && reason.contains("not finite"),
            "{err}"
        );
    }
}

/// An empty .onnx file (an interrupted copy) is said to be empty, not "the graph has no input";
/// a TensorFlow SavedModel folder given as a model is named as one, with the conversion to
/// ONNX, not "a model not found" (both found by a new user's trial).
#[test]
fn an_empty_file_and_a_saved_model_folder_are_named_as_such() {
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("model.onnx");
    std::fs::write(&empty, b"").unwrap();
    let Err(err) = resnet_transfer::weights::load(&empty, &device) else {
        panic!("an empty file was read");
    };
    let message = err.to_string();
    assert!(
        message.contains("model.onnx") && message.contains("empty"),
        "{message}"
    );

    let saved = tmp.path().join("keras_saved");
    std::fs::create_dir(&saved).unwrap();
    std::fs::write(saved.join("saved_model.pb"), b"\x08\x01").unwrap();
    let Err(err) = resnet_transfer::weights::load(&saved, &device) else {
        panic!("a SavedModel folder was read");
    };
    let message = err.to_string();
    assert!(
        message.contains("keras_saved")
            && message.contains("SavedModel")
            && message.contains("tf2onnx"),
        "{message}"
    );
}

/// A BatchNorm whose running variance is at or below minus its epsilon (a damaged file) is
/// refused, naming the tensor, the channel and the file: onnxruntime gives NaN logits for it,
/// and the folded path would have given normal-looking ones. The file is torchvision's export
/// with BatchNorm nodes, one variance overwritten by the `onnx` package as a user would.
#[test]
fn a_negative_batch_norm_variance_is_refused() {
    let Some(python) = crate::common::onnxruntime_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let damaged = tmp.path().join("negative-var.onnx");
    let script = r#"
import sys, onnx, numpy as np
from onnx import numpy_helper
model = onnx.load(sys.argv[1])
inits = {i.name: i for i in model.graph.initializer}
bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
var = inits[bn.input[4]]
values = numpy_helper.to_array(var).copy()
values[2] = -3.0
var.CopyFrom(numpy_helper.from_array(values, var.name))
onnx.save(model, sys.argv[2])
"#;
    let made = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(fixture("torch-bn-d18.onnx"))
        .arg(&damaged)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let err = import_onnx(&damaged, &device).unwrap_err();
    let Error::BadTensor { tensor, reason } = &err else {
        panic!("expected a bad-tensor error, got {err}");
    };
    assert!(
        tensor.contains("bn.running_var") && tensor.contains("negative-var.onnx"),
        "{err}"
    );
    assert!(
        reason.contains("-3") && reason.contains("channel 2"),
        "{err}"
    );
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

    // torchvision's wide ResNet50 layout (bottlenecks twice as wide inside) at width 2: named
    // as such, where a shape mismatch deep in stage 1 was all it said.
    let err = import_onnx(&fixture("torch-wide.onnx"), &device).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedGraph { op, reason, .. } if op == "Conv"
            && reason.contains("4 channels wide inside for 8 out")
            && reason.contains("wide_resnet50_2")),
        "{err}"
    );

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

#[test]
fn saved_record_loads_back_bit_identical_and_classifies() {
    use resnet_transfer::Classifier;
    use resnet_transfer::weights::{self, ModelCard, SavedModel};

    let device = resnet_transfer::device::device("ndarray").unwrap();
    let imported = import_onnx(&fixture("torch-bn.onnx"), &device).unwrap();
    let card = ModelCard {
        config: imported.config.clone(),
        preprocess: imported.preprocess,
        input_size: 32,
        class_names: (0..10).map(|i| format!("c{i}")).collect(),
        source: "torch-bn.onnx".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let saved = SavedModel {
        model: imported.model.clone(),
        card: card.clone(),
    };
    saved.save(&run.join("model")).unwrap();
    // A run folder loads too.
    let loaded = weights::load(&run, &device).unwrap();
    assert_eq!(loaded.card, card);
    let x = Tensor::<4>::from_data(
        TensorData::new(parity_input([2, 3, 32, 32]), [2, 3, 32, 32]),
        &device,
    );
    let a = imported.model.forward(x.clone()).into_data();
    let b = loaded.model.forward(x).into_data();
    assert_eq!(a, b, "bit-identical after a save and a load");

    let classifier = Classifier::new(loaded, &device);
    let image: Vec<u8> = (0..3 * 32 * 32).map(|i| (i * 7 % 256) as u8).collect();
    let predictions = classifier
        .classify_pixels(&[image.clone(), image], 3)
        .unwrap();
    assert_eq!(predictions.len(), 2);
    let top = &predictions[0].top_k;
    assert_eq!(top.len(), 3);
    assert!(top[0].prob >= top[1].prob && top[1].prob >= top[2].prob);
    assert_eq!(top[0].label, format!("c{}", top[0].index));
    let sum: f32 = predictions[0].logits.iter().map(|l| l.exp()).sum();
    let p0 = predictions[0].logits[top[0].index].exp() / sum;
    assert!((p0 - top[0].prob).abs() < 1e-5);
    assert!(classifier.classify_pixels(&[vec![0; 10]], 1).is_err());

    // A corrupt record is a typed error naming the file.
    std::fs::write(run.join("model.bpk"), b"garbage").unwrap();
    let err = weights::load(&run, &device).unwrap_err();
    assert!(
        matches!(&err, Error::BadFormat { path, .. } if path.ends_with("model.bpk")),
        "{err}"
    );
}

/// The names every node and tensor of a fixture has in the file.
fn names_in(file: &str) -> Vec<String> {
    use onnx_ir::{Message, ModelProto};
    let proto = ModelProto::parse_from_bytes(&std::fs::read(fixture(file)).unwrap()).unwrap();
    (proto.graph.node.iter())
        .flat_map(|n| std::iter::once(n.name.clone()).chain(n.output.iter().cloned()))
        .collect()
}

#[test]
fn errors_name_nodes_as_the_file_does() {
    let device = resnet_transfer::device::device("ndarray").unwrap();
    for file in ["zoo-v2.onnx", "not-resnet.onnx"] {
        let err = import_onnx(&fixture(file), &device).unwrap_err();
        let Error::UnsupportedGraph { node, .. } = &err else {
            panic!("{file}: {err}");
        };
        eprintln!("{file}: {err}");
        assert!(
            names_in(file).contains(node),
            "{file}: `{node}` is not the file's: {err}"
        );
    }
}

/// Full-size ResNet50s (width 64, 1000 classes) whose weights look trained
/// (tests/fixtures/make_trained_like.py: per-channel scales, filters with a DC response,
/// BatchNorm statistics measured on photo-like images, gammas from 0 to 8, caffe inputs to +-150
/// for Keras), exported as torchvision does (BatchNorm folded and kept) and as tf2onnx does from
/// Keras, at 32 and 224 pixels, through the folded path a deployed model runs (Winograd's 3x3
/// convolutions included): logits within 1e-4 of onnxruntime's, relative to the largest, and
/// within 1e-5 of the same network computed in float64 (onnxruntime is within 3.5e-6 of it).
/// Generates about 600 MB of ONNX files in a temporary folder; about 100 s on 2 cores.
#[test]
fn full_size_trained_like_exports_match_onnxruntime_through_the_folded_path() {
    let Some(python) = crate::common::onnxruntime_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_trained_like.py");
    let made = std::process::Command::new(&python)
        .arg(&script)
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "make_trained_like.py failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let device = resnet_transfer::device::device("ndarray").unwrap();
    for style in ["torch-folded", "torch-bn", "keras"] {
        for size in [32, 224] {
            let name = format!("{style}-{size}");
            let file = |ext: &str| tmp.path().join(format!("{name}.{ext}"));
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(file("json")).unwrap()).unwrap();
            let shape: [usize; 4] = serde_json::from_value(json["input_shape"].clone()).unwrap();
            let theirs: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(json["logits"].clone())
                .unwrap()
                .concat();
            let exact: Vec<f64> = serde_json::from_value::<Vec<Vec<f64>>>(json["exact"].clone())
                .unwrap()
                .concat();
            let input: Vec<f32> = (std::fs::read(file("in")).unwrap().chunks_exact(4))
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let imported = import_onnx(&file("onnx"), &device).unwrap();
            assert_eq!(imported.config.width, 64, "{name}");
            assert_eq!(
                imported.folded_batch_norm,
                style == "torch-folded",
                "{name}"
            );
            let x = Tensor::<4>::from_data(TensorData::new(input, shape), &device);
            let x = match imported.layout {
                InputLayout::Nhwc => x.permute([0, 3, 1, 2]),
                InputLayout::Nchw => x,
            };
            let ours = (imported.model.folded().unwrap().forward(x).unwrap())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{name}");
            let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));
            let worst = |other: &mut dyn Iterator<Item = f64>| {
                (ours.iter().zip(other)).fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()))
                    / scale
            };
            let to_ort = worst(&mut theirs.iter().map(|v| f64::from(*v)));
            let to_exact = worst(&mut exact.iter().copied());
            eprintln!(
                "{name}: {to_ort:.3e} of the largest logit ({scale:.4}) from onnxruntime's, \
                 {to_exact:.3e} from float64's"
            );
            assert!(
                to_ort <= 1e-4,
                "{name}: {to_ort:e} from onnxruntime's logits"
            );
            assert!(
                to_exact <= 1e-5,
                "{name}: {to_exact:e} from the float64 logits"
            );
        }
    }
}
