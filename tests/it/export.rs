//! ONNX export, checked by an independent runtime: models of depth 18 and 50, in torchvision's
//! and Keras's layouts, at 32 and 224 pixels, BatchNorm folded and kept, written by
//! `weights::export_onnx` and run in onnxruntime (`tests/fixtures/run_onnxruntime.py`, which also
//! passes each file through ONNX's own checker). Their logits must equal ours within 1e-4 of the
//! largest. Reading an export back gives the same model bit for bit.
//!
//! onnxruntime comes from the Python named by `RESNET_TRANSFER_PYTHON` (CI installs one in a
//! venv and sets it), else from `python3` if it has `onnxruntime`, `onnx` and `numpy`; without
//! either the runtime check is skipped with a message, except under CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::{Param, RunningState};
use burn::tensor::{Distribution, Tensor, TensorData};
use resnet_transfer::data::Preprocess;
use resnet_transfer::model::{ConvBn, StridePlacement};
use resnet_transfer::weights::{
    CARD_KEY, ExportBatchNorm, ExportOptions, ModelCard, export_onnx, import_onnx, parity_input,
};
use resnet_transfer::{Device, Error, ResNet, ResNetConfig};

fn cpu() -> Device {
    resnet_transfer::device::device("ndarray").unwrap()
}

/// Statistics and affine parameters away from the identity, so that folding them matters.
fn randomize(unit: &mut ConvBn, device: &Device) {
    let c = unit.conv.channels()[1];
    let draw = |d: Distribution| Tensor::<1>::random([c], d, device);
    unit.bn.gamma = Param::from_tensor(draw(Distribution::Uniform(0.5, 1.5)));
    unit.bn.beta = Param::from_tensor(draw(Distribution::Normal(0.0, 0.2)));
    unit.bn.running_mean = RunningState::new(draw(Distribution::Normal(0.0, 0.2)));
    unit.bn.running_var = RunningState::new(draw(Distribution::Uniform(0.5, 2.0)));
    if let Some(bias) = &mut unit.conv.bias {
        *bias = Param::from_tensor(draw(Distribution::Normal(0.0, 0.1)));
    }
}

fn units(model: &mut ResNet) -> Vec<&mut ConvBn> {
    let mut out = vec![&mut model.stem.conv];
    for block in model.stages.iter_mut().flat_map(|s| &mut s.blocks) {
        out.extend(block.convs.iter_mut());
        out.extend(block.shortcut.iter_mut());
    }
    out
}

/// A seeded narrow model of `depth` in `layout` ("torchvision" or "keras"), as a trained one
/// would be: every weight and statistic drawn.
fn model(depth: usize, layout: &str, seed: u64) -> (ResNet, ModelCard) {
    let device = cpu();
    let _rng = crate::common::rng_lock();
    device.seed(seed);
    let config = match layout {
        "keras" => ResNetConfig::new(depth)
            .with_stride_placement(StridePlacement::FirstConv)
            .with_conv_bias(true)
            .with_batch_norm_epsilon(1.001e-5),
        _ => ResNetConfig::new(depth),
    }
    .with_width(8)
    .with_num_classes(Some(5));
    let mut model = config.init(&device).unwrap();
    for unit in units(&mut model) {
        randomize(unit, &device);
    }
    let card = ModelCard {
        config,
        preprocess: if layout == "keras" {
            Preprocess::Caffe
        } else {
            Preprocess::Torch
        },
        input_size: 32,
        class_names: ["plane", "car", "bird", "cat", "deer"]
            .map(String::from)
            .to_vec(),
        source: format!("tests/it/export.rs, seed {seed}"),
    };
    (model, card)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

struct Case {
    name: String,
    model: ResNet,
    file: PathBuf,
    input: Vec<f32>,
    shape: [usize; 4],
}

#[test]
fn exports_run_in_onnxruntime_with_our_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for (seed, (depth, layout, size)) in [
        (18, "torchvision", 32),
        (18, "torchvision", 224),
        (18, "keras", 32),
        (18, "keras", 224),
        (50, "torchvision", 32),
        (50, "torchvision", 224),
        (50, "keras", 32),
        (50, "keras", 224),
    ]
    .into_iter()
    .enumerate()
    {
        let (model, mut card) = model(depth, layout, seed as u64);
        card.input_size = size;
        for batch_norm in [ExportBatchNorm::Folded, ExportBatchNorm::Kept] {
            let name = format!("{layout}-d{depth}-{size}-{batch_norm}");
            let file = tmp.path().join(format!("{name}.onnx"));
            let options = ExportOptions::default().with_batch_norm(batch_norm);
            export_onnx(&model, &card, &file, &options).unwrap();
            // A batch of 3: the file fixes no batch size.
            let shape = [3, 3, size, size];
            cases.push(Case {
                name,
                model: model.clone(),
                file,
                input: parity_input(shape),
                shape,
            });
        }
    }
    let Some(python) = crate::common::onnxruntime_python() else {
        return;
    };
    let mut jobs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let input = tmp.path().join(format!("{i}.in"));
        let bytes: Vec<u8> = case.input.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&input, bytes).unwrap();
        jobs.push(serde_json::json!({
            "model": case.file, "input": input, "shape": case.shape,
            "output": tmp.path().join(format!("{i}.out")),
        }));
    }
    let jobs_file = tmp.path().join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_string(&jobs).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run_onnxruntime.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&jobs_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnxruntime failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

    let device = cpu();
    for ((i, case), seen) in cases.iter().enumerate().zip(&report) {
        // What the runtime sees: a free batch dimension, the classes, our metadata.
        let size = case.shape[2];
        assert_eq!(
            seen["inputs"][0][1],
            serde_json::json!(["batch", 3, size, size]),
            "{}",
            case.name
        );
        assert_eq!(seen["outputs"][0][0], "logits");
        assert_eq!(seen["outputs"][0][1], serde_json::json!(["batch", 5]));
        assert_eq!(seen["shape"], serde_json::json!([3, 5]));
        assert_eq!(seen["opset"], 17);
        let metadata = &seen["metadata"];
        assert_eq!(
            metadata["class_names"],
            r#"["plane","car","bird","cat","deer"]"#
        );
        assert_eq!(metadata["input_size"], size.to_string());
        assert!(metadata[CARD_KEY].as_str().is_some());
        let ops: Vec<&str> = (seen["ops"].as_array().unwrap().iter())
            .map(|o| o.as_str().unwrap())
            .collect();
        let kept = case.name.ends_with("kept");
        assert_eq!(ops.contains(&"BatchNormalization"), kept, "{ops:?}");

        let theirs: Vec<f32> = std::fs::read(tmp.path().join(format!("{i}.out")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(case.input.clone(), case.shape), &device);
        let ours = values(case.model.forward(x));
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = (ours.iter().zip(&theirs)).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "{}: worst {worst:e} = {:e} of the largest logit {scale}",
            case.name,
            worst / scale
        );
        assert_eq!(ours.len(), theirs.len());
        assert!(worst <= 1e-4 * scale, "{}: {worst} of {scale}", case.name);
    }
}

/// Every float the model holds, by name: parameters and BatchNorm statistics.
fn tensors(model: &ResNet) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    let mut model = model.clone();
    let names = std::iter::once("stem.conv".to_string())
        .chain((model.stages.iter().enumerate()).flat_map(|(s, stage)| {
            (stage.blocks.iter().enumerate()).flat_map(move |(b, block)| {
                (0..block.convs.len())
                    .map(move |c| format!("stages.{s}.blocks.{b}.convs.{c}"))
                    .chain(
                        block
                            .shortcut
                            .iter()
                            .map(move |_| format!("stages.{s}.blocks.{b}.shortcut")),
                    )
            })
        }))
        .collect::<Vec<_>>();
    for (name, unit) in names.into_iter().zip(units(&mut model)) {
        out.push((
            format!("{name}.conv.weight"),
            values(unit.conv.weight.val()),
        ));
        if let Some(bias) = &unit.conv.bias {
            out.push((format!("{name}.conv.bias"), values(bias.val())));
        }
        out.push((format!("{name}.bn.gamma"), values(unit.bn.gamma.val())));
        out.push((format!("{name}.bn.beta"), values(unit.bn.beta.val())));
        out.push((
            format!("{name}.bn.running_mean"),
            values(unit.bn.running_mean.value()),
        ));
        out.push((
            format!("{name}.bn.running_var"),
            values(unit.bn.running_var.value()),
        ));
    }
    let head = model.head.as_ref().unwrap();
    out.push((
        "head.linear.weight".into(),
        values(head.linear.weight.val()),
    ));
    out.push((
        "head.linear.bias".into(),
        values(head.linear.bias.as_ref().unwrap().val()),
    ));
    out
}

#[test]
fn an_export_reads_back_as_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let device = cpu();
    for (depth, layout) in [(18, "torchvision"), (50, "keras")] {
        let (model, card) = model(depth, layout, 11);
        // Kept BatchNorm: every parameter and statistic comes back bit for bit, with the card.
        let kept = tmp.path().join(format!("{layout}-kept.onnx"));
        let options = ExportOptions::default().with_batch_norm(ExportBatchNorm::Kept);
        export_onnx(&model, &card, &kept, &options).unwrap();
        let imported = import_onnx(&kept, &device).unwrap();
        let expected = ResNetConfig {
            dropout: imported.config.dropout,
            ..card.config.clone()
        };
        assert_eq!(imported.config, expected, "{layout}");
        assert_eq!(imported.card.as_ref(), Some(&card));
        assert_eq!(imported.preprocess, card.preprocess);
        assert_eq!(imported.input_size, Some(32));
        assert!(!imported.folded_batch_norm);
        // Loaded as weights, the export keeps its card: a model trained on breeds is not read
        // back with ImageNet's or CIFAR-10's names.
        let loaded = resnet_transfer::weights::load(&kept, &device).unwrap().card;
        assert_eq!(loaded.class_names, card.class_names, "{layout}");
        assert_eq!(loaded.input_size, card.input_size, "{layout}");
        assert_eq!(loaded.source, card.source, "{layout}");
        for ((name, a), (_, b)) in tensors(&model).iter().zip(tensors(&imported.model)) {
            let same =
                a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{layout}: {name} differs after the round trip");
        }

        // Folded: the file's weights come back as they are, so exporting the import again
        // writes the same graph.
        let folded = tmp.path().join(format!("{layout}-folded.onnx"));
        export_onnx(&model, &card, &folded, &ExportOptions::default()).unwrap();
        let imported = import_onnx(&folded, &device).unwrap();
        assert!(imported.folded_batch_norm);
        let again = tmp.path().join(format!("{layout}-again.onnx"));
        export_onnx(&imported.model, &card, &again, &ExportOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(&folded).unwrap(),
            std::fs::read(&again).unwrap(),
            "{layout}: a folded export, imported and exported again"
        );
        let x = Tensor::<4>::from_data(
            TensorData::new(parity_input([2, 3, 32, 32]), [2, 3, 32, 32]),
            &device,
        );
        let a = values(model.forward(x.clone()));
        let b = values(imported.model.forward(x));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{layout}: folded model off by {worst} of {scale}"
        );
    }
}

#[test]
fn bad_exports_are_typed_errors_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, card) = model(18, "torchvision", 3);
    let path = tmp.path().join("model.onnx");

    let mut headless = model.clone();
    headless.head = None;
    let err = export_onnx(&headless, &card, &path, &ExportOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig { field: "head", .. }),
        "{err}"
    );

    let err = export_onnx(
        &model,
        &card,
        &path,
        &ExportOptions::default().with_opset(11),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig { field: "opset", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("13 to 21"), "{err}");

    // A folder where the file's folder should be: the error names it.
    let blocked = tmp.path().join("a-file");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let err = export_onnx(
        &model,
        &card,
        &blocked.join("model.onnx"),
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.starts_with(&blocked)),
        "{err}"
    );

    // Nothing was written by the failures; a good export leaves only its file.
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(), ["a-file"]);
    export_onnx(&model, &card, &path, &ExportOptions::default()).unwrap();
    assert_eq!(listing(), ["a-file", "model.onnx"]);
    "kept".parse::<ExportBatchNorm>().unwrap();
    let err = "half".parse::<ExportBatchNorm>().unwrap_err();
    assert!(err.to_string().contains("folded or kept"), "{err}");
}

/// An export edited so one convolution is not what a ResNet has there: the import's error names
/// that node by the file's name, not onnx-ir's renamed one (`conv2d9`).
#[test]
fn import_errors_name_nodes_as_the_file_does() {
    use onnx_ir::{Message, ModelProto};

    let tmp = tempfile::tempdir().unwrap();
    let (model, card) = model(18, "torchvision", 5);
    let bytes =
        resnet_transfer::weights::encode_onnx(&model, &card, &ExportOptions::default()).unwrap();
    let mut proto = ModelProto::parse_from_bytes(&bytes).unwrap();
    let target = "stages.1.blocks.1.convs.1.conv";
    let node = (proto.graph.mut_or_insert_default().node.iter_mut())
        .find(|n| n.name == target)
        .unwrap();
    let dilations = node
        .attribute
        .iter_mut()
        .find(|a| a.name == "dilations")
        .unwrap();
    dilations.ints = vec![2, 2];
    let pads = node
        .attribute
        .iter_mut()
        .find(|a| a.name == "pads")
        .unwrap();
    pads.ints = vec![2, 2, 2, 2];
    let path = tmp.path().join("dilated.onnx");
    std::fs::write(&path, proto.write_to_bytes().unwrap()).unwrap();
    let err = import_onnx(&path, &cpu()).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedGraph { node, op, .. } if node == target && op == "Conv2d"),
        "{err}"
    );
    assert!(err.to_string().contains("dilation [2, 2]"), "{err}");
}

/// `import_onnx --out` on the crate's own export saves a model that keeps the export's class
/// names (it used to save none, and `predict` then printed CIFAR-10's).
#[test]
fn import_example_keeps_an_exports_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, card) = model(18, "torchvision", 5);
    let file = tmp.path().join("breeds.onnx");
    export_onnx(&model, &card, &file, &ExportOptions::default()).unwrap();
    let out = tmp.path().join("breeds");
    let status = Command::new(crate::common::example("import_onnx"))
        .arg("--onnx")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .args(["--backend", "ndarray"])
        .status()
        .unwrap();
    assert!(status.success());
    let saved = resnet_transfer::weights::SavedModel::load(&out, &cpu()).unwrap();
    assert_eq!(saved.card.class_names, card.class_names);
    assert_eq!(saved.card.input_size, card.input_size);
}
