//! ResNet weights from ONNX: any export of the family, matched by structure, not by names.
//!
//! The file is parsed at run time with onnx-ir (the parser burn-import and burn-onnx use). From
//! the graph's input the importer walks the network as a ResNet is built: an optional NHWC
//! Transpose, the stem (Pad, Conv 7x7/2, BatchNorm, ReLU, Pad, MaxPool 3x3/2), the residual
//! blocks (convolutions with their BatchNorms and ReLUs, projection shortcuts, Add, ReLU), and
//! the head (global pooling, Flatten/Squeeze, Gemm or MatMul+Add, an optional Softmax). BatchNorm
//! may be a BatchNormalization node, a Mul and an Add (tf2onnx), or folded into the convolution
//! by the exporter; a folded one becomes an identity BatchNorm whose shift holds the folded bias,
//! so the model stays trainable. Every tensor's shape is checked against the detected
//! configuration, and anything else stops the import with the node where matching failed.
//! `matching.rs` walks the graph; `building.rs` loads what it found into a `ResNet`.

mod building;
mod external;
mod matching;
mod names;

use std::path::Path;

use burn::tensor::{Device, TensorData};
use onnx_ir::{Message, ModelProto, Node, OnnxGraph};

use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::model::{ResNet, ResNetConfig, StridePlacement};
use crate::weights::ModelCard;
use crate::weights::export::CARD_KEY;

/// How the exported model takes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InputLayout {
    /// `[N, 3, H, W]` (PyTorch, MXNet).
    Nchw,
    /// `[N, H, W, 3]` (Keras/TensorFlow): the export starts with a Transpose to NCHW.
    Nhwc,
}

/// A ResNet read from ONNX, with what the file says about its use.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The model, in this crate's layout (NCHW input, logits out).
    pub model: ResNet,
    /// The configuration detected from the graph.
    pub config: ResNetConfig,
    /// The preprocessing the weights were trained with: caffe for Keras (NHWC) exports, torch
    /// for the others. Override it when you know better.
    pub preprocess: Preprocess,
    /// The export's input layout (the imported model always takes NCHW).
    pub layout: InputLayout,
    /// The input side fixed in the graph, if it is fixed.
    pub input_size: Option<usize>,
    /// Whether the export ends in a Softmax (Keras's top); the imported model returns the logits
    /// before it.
    pub softmax: bool,
    /// Whether BatchNorm was folded into the convolutions by the exporter.
    pub folded_batch_norm: bool,
    /// The model card this crate's [`export_onnx`](super::export_onnx) wrote into the file's
    /// metadata (class names, preprocessing, input size), when the file is such an export; its
    /// preprocessing is then [`preprocess`](Self::preprocess)'s.
    pub card: Option<ModelCard>,
}

impl Imported {
    /// The model card to save with this import: the card of a file this crate exported, as it
    /// was written (class names, input size, source), else what the import detected, with no
    /// class names and `source` naming the file.
    pub fn model_card(&self, source: &Path) -> ModelCard {
        ModelCard {
            config: self.config.clone(),
            preprocess: self.preprocess,
            input_size: (self.card.as_ref().map(|c| c.input_size))
                .or(self.input_size)
                .unwrap_or(224),
            class_names: (self.card.as_ref())
                .map(|c| c.class_names.clone())
                .unwrap_or_default(),
            source: (self.card.as_ref())
                .map(|c| c.source.clone())
                .unwrap_or_else(|| source.display().to_string()),
        }
    }
}

/// Reads a ResNet from an ONNX file onto `device`.
///
/// ```no_run
/// let device = resnet_transfer::device::default_device()?;
/// let imported = resnet_transfer::weights::import_onnx("resnet50.onnx".as_ref(), &device)?;
/// println!("depth {} width {}", imported.config.depth, imported.config.width);
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
pub fn import_onnx(path: &Path, device: &Device) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        // An empty message parses as an empty model, refused later for its missing input.
        return Err(Error::BadFormat {
            path: path.to_path_buf(),
            reason: "the file is empty (0 bytes): an interrupted copy or export?".into(),
        });
    }
    let proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| Error::BadFormat {
        path: path.to_path_buf(),
        reason: format!("not a readable ONNX model: {e}"),
    })?;
    external::check(path, &proto.graph)?;
    let graph = parse(path)?;
    let card = exported_card(path, &proto)?;
    let names = names::FileNames::new(&proto.graph);
    let matcher = matching::Matcher::new(path, &graph, names);
    let mut imported = matcher.import(device)?;
    if let Some(card) = &card {
        imported.preprocess = card.preprocess;
    }
    imported.card = card;
    Ok(imported)
}

/// The card in the metadata of a file this crate exported ([`CARD_KEY`]); `None` for others.
fn exported_card(path: &Path, proto: &ModelProto) -> Result<Option<ModelCard>> {
    let Some(entry) = proto.metadata_props.iter().find(|e| e.key == CARD_KEY) else {
        return Ok(None);
    };
    serde_json::from_str(&entry.value)
        .map(Some)
        .map_err(|e| Error::BadFormat {
            path: path.to_path_buf(),
            reason: format!("metadata `{CARD_KEY}` is not a model card: {e}"),
        })
}

/// Parses the file by its path, so that onnx-ir finds external data beside it.
fn parse(path: &Path) -> Result<OnnxGraph> {
    let bad = |reason: String| Error::BadFormat {
        path: path.to_path_buf(),
        reason,
    };
    // onnx-ir reports most problems as errors, but a malformed file can reach an assertion
    // inside it; neither may take the caller down.
    let parsed = std::panic::catch_unwind(|| onnx_ir::OnnxGraphBuilder::new().parse_file(path));
    match parsed {
        Ok(Ok(graph)) => Ok(graph),
        Ok(Err(e)) => Err(bad(format!("not a readable ONNX model: {e}"))),
        Err(_) => Err(bad("not a readable ONNX model (the parser gave up)".into())),
    }
}

pub(super) fn op(node: &Node) -> String {
    node.node_type().to_string()
}

pub(super) fn dims_of(data: &TensorData) -> Vec<usize> {
    data.shape().to_vec()
}

pub(super) fn floats(data: &TensorData) -> Vec<f32> {
    data.try_to_vec_as::<f32>().unwrap_or_default()
}

/// Refuses weights that are not all finite: a NaN or infinity in a file (a diverged training, a
/// damaged `.onnx.data`) would otherwise reach the predictions, and the folded path's ReLU turns
/// NaN into 0, where onnxruntime gives NaN: normal-looking answers from a broken model.
/// `tensor` names it in the error.
pub(super) fn check_finite(values: &[f32], tensor: impl FnOnce() -> String) -> Result<()> {
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(first) => Err(Error::BadTensor {
            tensor: tensor(),
            reason: format!(
                "{bad} of its {} values are not finite (NaN or infinite), the first at index \
                 {first} ({}): the file's weights are damaged or come from a training that diverged",
                values.len(),
                values[first]
            ),
        }),
    }
}

/// Where an import came from, for messages.
pub fn describe(imported: &Imported, path: &Path) -> String {
    let c = &imported.config;
    format!(
        "{}: ResNet{} ({}), width {}, {} classes, conv bias {}, BatchNorm epsilon {}{}, input {:?}{}, preprocessing {}{}",
        path.display(),
        c.depth,
        match c.stride_placement {
            StridePlacement::FirstConv => "v1",
            StridePlacement::MiddleConv => "v1.5",
        },
        c.width,
        c.num_classes.unwrap_or(0),
        if c.conv_bias { "on" } else { "off" },
        c.batch_norm_epsilon,
        if imported.folded_batch_norm {
            " (folded by the exporter)"
        } else {
            ""
        },
        imported.layout,
        imported
            .input_size
            .map(|s| format!(" {s}x{s}"))
            .unwrap_or_default(),
        imported.preprocess,
        if imported.softmax {
            ", softmax top"
        } else {
            ""
        },
    )
}

/// The input of the parity checks, `[n, c, h, w]` in NCHW: the formula
/// `((7n + 13c + 3y + 5x) mod 17) / 4 - 2`, which `tests/fixtures/make_onnx.py` also uses to
/// record onnxruntime's logits. Exact in float32, so both sides feed identical numbers.
pub fn parity_input(shape: [usize; 4]) -> Vec<f32> {
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

/// A row-major `[rows, cols]` matrix transposed.
pub(super) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut outv = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            outv[c * rows + r] = data[r * cols + c];
        }
    }
    outv
}
