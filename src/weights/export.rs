//! ONNX export: a trained [`ResNet`] of any depth and layout as a standard ONNX file, for
//! onnxruntime on a server, a phone or a browser.
//!
//! The graph is the one every ResNet export has: Conv (BatchNorm folded into it, or kept as a
//! BatchNormalization node), Relu, MaxPool, Add, global pooling, Flatten and Gemm, on an NCHW
//! float32 input `images` `[batch, 3, size, size]` whose batch dimension is free, giving
//! `logits` `[batch, classes]`. Nodes and weights carry the module's own paths
//! (`stages.2.blocks.0.convs.1.conv.weight`). How to feed the model travels in the file's
//! `metadata_props`: the class names, the preprocessing (mode, input size, channel order, scale,
//! mean and std) and this crate's whole model card, which [`import_onnx`](super::import_onnx)
//! reads back.
//!
//! The messages are ONNX's own definitions (`onnx.proto`, compiled by the protobuf crate inside
//! onnx-ir, the parser the import uses), encoded by that crate.

use std::path::Path;

use burn::nn::PaddingConfig2d;
use onnx_ir::{
    AttributeProto, AttributeType, GraphProto, Message, ModelProto, NodeProto, TensorProto,
};
use onnx_ir::{TypeProto, ValueInfoProto};

use crate::data::{CAFFE_MEAN_BGR, Preprocess, TORCH_MEAN, TORCH_STD};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::folded::{fold_batch_norm, host_values};
use crate::model::{Block, ConvBn, Head, Pooling, ResNet};

use super::ModelCard;

/// The `metadata_props` key holding this crate's [`ModelCard`] as JSON.
pub const CARD_KEY: &str = "resnet_transfer.card";

/// How BatchNorm appears in an exported file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExportBatchNorm {
    /// Folded into the convolutions' weights and biases (what `torch.onnx.export` does in eval
    /// mode, and what runtimes do anyway): the smallest and fastest file.
    #[default]
    Folded,
    /// Kept as BatchNormalization nodes with their running statistics: the file holds every
    /// parameter of the model as it is, for fine-tuning elsewhere.
    Kept,
}

named_enum!(ExportBatchNorm as "batch_norm" { Folded => "folded", Kept => "kept" });

/// Options of [`export_onnx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// BatchNorm folded into the convolutions (the default) or kept as nodes.
    pub batch_norm: ExportBatchNorm,
    /// The ONNX opset, from 13 to 21 (default 17, which onnxruntime 1.14 and later run; every
    /// operator the graph uses has had its present form since opset 13, and BatchNormalization
    /// its present attributes since 15).
    pub opset: i64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            batch_norm: ExportBatchNorm::Folded,
            opset: 17,
        }
    }
}

impl ExportOptions {
    /// These options with BatchNorm `batch_norm`.
    pub fn with_batch_norm(mut self, batch_norm: ExportBatchNorm) -> Self {
        self.batch_norm = batch_norm;
        self
    }

    /// These options with opset `opset`.
    pub fn with_opset(mut self, opset: i64) -> Self {
        self.opset = opset;
        self
    }

    /// The IR version a file of this opset declares (ONNX's own table).
    fn ir_version(&self) -> Result<i64> {
        match self.opset {
            13 | 14 => Ok(7),
            15..=18 => Ok(8),
            19 | 20 => Ok(9),
            21 => Ok(10),
            other => Err(Error::invalid_config(
                "opset",
                "an opset from 13 to 21",
                other,
            )),
        }
    }
}

/// Writes `model` to `path` as an ONNX file (atomically: a temporary file beside it, then a
/// rename), with `card` in its metadata: see the [module docs](self).
///
/// ```
/// use resnet_transfer::weights::{ExportOptions, ModelCard, export_onnx, import_onnx};
/// use resnet_transfer::{ResNetConfig, data::Preprocess};
///
/// let device = resnet_transfer::device::default_device()?;
/// let config = ResNetConfig::resnet18(3).with_width(8);
/// let model = config.init(&device)?;
/// let card = ModelCard {
///     config,
///     preprocess: Preprocess::Torch,
///     input_size: 32,
///     class_names: vec!["cat".into(), "dog".into(), "fox".into()],
///     source: "a doc test".into(),
/// };
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("resnet18.onnx");
/// export_onnx(&model, &card, &path, &ExportOptions::default())?;
/// let imported = import_onnx(&path, &device)?;
/// assert_eq!(imported.config.depth, 18);
/// assert_eq!(imported.card.unwrap().class_names, card.class_names);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a model without a head (`head`), an opset outside 13 to 21
/// (`opset`), or an input size of 0 (`input_size`); [`Error::BadTensor`] naming a weight that
/// cannot be read as `f32`; [`Error::Io`] naming the file or folder that cannot be written.
pub fn export_onnx(
    model: &ResNet,
    card: &ModelCard,
    path: &Path,
    options: &ExportOptions,
) -> Result<()> {
    let bytes = encode_onnx(model, card, options)?;
    write_atomic(path, &bytes)
}

/// The bytes [`export_onnx`] writes.
///
/// # Errors
///
/// As [`export_onnx`], less the file's.
pub fn encode_onnx(model: &ResNet, card: &ModelCard, options: &ExportOptions) -> Result<Vec<u8>> {
    let proto = model_proto(model, card, options)?;
    proto.write_to_bytes().map_err(|e| Error::BadTensor {
        tensor: "the ONNX model".into(),
        reason: format!("cannot be encoded: {e}"),
    })
}

fn model_proto(model: &ResNet, card: &ModelCard, options: &ExportOptions) -> Result<ModelProto> {
    let ir_version = options.ir_version()?;
    let Some(head) = &model.head else {
        return Err(Error::invalid_config(
            "head",
            "a classifier head (a model built with num_classes, or given one by with_new_head)",
            "none: a features-only model",
        ));
    };
    if card.input_size == 0 {
        return Err(Error::invalid_config("input_size", "at least 1", 0));
    }
    let mut graph = Graph {
        proto: GraphProto::new(),
        batch_norm: options.batch_norm,
    };
    graph.proto.name = format!("resnet{}", card.config.depth);
    let side = Dim::from(card.input_size);
    graph.input("images", &[Dim::Batch, Dim::Fixed(3), side, side]);
    let mut x = graph.stem(model, "images")?;
    for (s, stage) in model.stages.iter().enumerate() {
        for (b, block) in stage.blocks.iter().enumerate() {
            x = graph.block(block, &format!("stages.{s}.blocks.{b}"), x)?;
        }
    }
    let pooling = match model.pooling {
        Pooling::Average => "GlobalAveragePool",
        Pooling::Max => "GlobalMaxPool",
    };
    let pooled = graph.node(pooling, "pool", &[&x], vec![]);
    let features = graph.node("Flatten", "features", &[&pooled], vec![int("axis", 1)]);
    let classes = graph.head(head, &features)?;

    let mut proto = ModelProto::new();
    proto.ir_version = ir_version;
    proto.producer_name = "resnet-transfer".into();
    proto.producer_version = env!("CARGO_PKG_VERSION").into();
    proto.doc_string = format!(
        "ResNet{} ({} classes) exported by resnet-transfer; input `images` NCHW float32 \
         [batch, 3, {size}, {size}], {}; output `logits` [batch, {}]",
        card.config.depth,
        classes,
        preprocessing_sentence(card.preprocess),
        classes,
        size = card.input_size,
    );
    proto.opset_import.push(Default::default());
    let opset = proto.opset_import.last_mut().expect("pushed");
    opset.domain = String::new();
    opset.version = options.opset;
    for (key, value) in metadata(card, classes)? {
        proto.metadata_props.push(Default::default());
        let entry = proto.metadata_props.last_mut().expect("pushed");
        entry.key = key.into();
        entry.value = value;
    }
    *proto.graph.mut_or_insert_default() = graph.proto;
    Ok(proto)
}

/// The `metadata_props` of an export: what a consumer needs to feed the model, and the names of
/// its `classes` outputs (the card's, or where it has none for them, the names `predict` falls
/// back to: ImageNet's for 1000; an ImageNet import's card has none, and its export said `[]`).
fn metadata(card: &ModelCard, classes: usize) -> Result<Vec<(&'static str, String)>> {
    let names = if card.class_names.len() == classes {
        card.class_names.clone()
    } else {
        crate::infer::default_names(classes)
    };
    let (order, scale, mean, std) = match card.preprocess {
        Preprocess::Caffe => ("BGR", "1", CAFFE_MEAN_BGR, [1.0; 3]),
        Preprocess::Torch => ("RGB", "1/255", TORCH_MEAN, TORCH_STD),
        Preprocess::Unit => ("RGB", "1/255", [0.0; 3], [1.0; 3]),
    };
    Ok(vec![
        ("class_names", json(&names)?),
        ("preprocess", card.preprocess.name().into()),
        ("preprocessing", preprocessing_sentence(card.preprocess)),
        ("input_size", card.input_size.to_string()),
        ("input_layout", "NCHW".into()),
        ("channel_order", order.into()),
        ("pixel_scale", scale.into()),
        ("mean", json(&mean)?),
        ("std", json(&std)?),
        (CARD_KEY, json(card)?),
    ])
}

/// The formula of `preprocess` in words, for the file's documentation.
fn preprocessing_sentence(preprocess: Preprocess) -> String {
    match preprocess {
        Preprocess::Caffe => {
            "pixels 0-255 in BGR order minus the ImageNet mean [103.939, 116.779, 123.68] \
             (Keras `preprocess_input`, caffe mode)"
        }
        Preprocess::Torch => {
            "pixels/255 in RGB order minus mean [0.485, 0.456, 0.406], divided by std \
             [0.229, 0.224, 0.225] (torchvision)"
        }
        Preprocess::Unit => "pixels/255 in RGB order",
    }
    .into()
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::BadTensor {
        tensor: "the model card".into(),
        reason: format!("cannot be written as JSON: {e}"),
    })
}

/// A dimension of a graph input or output.
#[derive(Clone, Copy)]
enum Dim {
    /// The free batch dimension, named `batch`.
    Batch,
    Fixed(usize),
}

impl From<usize> for Dim {
    fn from(size: usize) -> Self {
        Dim::Fixed(size)
    }
}

/// The graph being written.
struct Graph {
    proto: GraphProto,
    batch_norm: ExportBatchNorm,
}

impl Graph {
    fn input(&mut self, name: &str, dims: &[Dim]) {
        self.proto.input.push(value_info(name, dims));
    }

    fn output(&mut self, name: &str, dims: &[Dim]) {
        self.proto.output.push(value_info(name, dims));
    }

    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        let mut tensor = TensorProto::new();
        tensor.name = name.into();
        tensor.dims = dims.iter().map(|&d| d as i64).collect();
        tensor.data_type = FLOAT;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensor.raw_data = bytes.into();
        self.proto.initializer.push(tensor);
    }

    /// Adds a node named `name` whose one output is the tensor `name`, and returns that name.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.node_to(op, name, inputs, name, attributes)
    }

    /// Adds a node named `name` whose one output is the tensor `output`, and returns `output`.
    fn node_to(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        let mut node = NodeProto::new();
        node.op_type = op.into();
        node.name = name.into();
        node.input = inputs.iter().map(|&i| i.into()).collect();
        node.output = vec![output.into()];
        node.attribute = attributes;
        self.proto.node.push(node);
        output.into()
    }

    fn relu(&mut self, input: &str) -> String {
        self.node("Relu", &format!("{input}.relu"), &[input], vec![])
    }

    /// A convolution and its BatchNorm, folded or kept, on `input`; returns the output tensor.
    fn unit(&mut self, unit: &ConvBn, name: &str, input: &str) -> Result<String> {
        let conv = &unit.conv;
        let [c_in, c_out] = conv.channels();
        let [kh, kw] = conv.kernel;
        let (matrix, bias) = match self.batch_norm {
            ExportBatchNorm::Folded => {
                let (weight, shift) = fold_batch_norm(unit, name)?;
                (weight, Some(shift))
            }
            ExportBatchNorm::Kept => {
                let weight = host_values(conv.weight.val(), &format!("{name}.conv.weight"))?;
                let bias = (conv.bias.as_ref())
                    .map(|b| host_values(b.val(), &format!("{name}.conv.bias")))
                    .transpose()?;
                (weight, bias)
            }
        };
        // The module's `[kh·kw·C_in, C_out]` matrix as ONNX's `[C_out, C_in, kh, kw]`.
        let mut oihw = vec![0.0; matrix.len()];
        for (row, values) in matrix.chunks_exact(c_out).enumerate() {
            let (tap, c) = (row / c_in, row % c_in);
            for (o, &w) in values.iter().enumerate() {
                oihw[(o * c_in + c) * kh * kw + tap] = w;
            }
        }
        let weight = format!("{name}.conv.weight");
        self.initializer(&weight, &[c_out, c_in, kh, kw], &oihw);
        let mut inputs = vec![input.to_string(), weight];
        if let Some(bias) = bias {
            let bias_name = format!("{name}.conv.bias");
            self.initializer(&bias_name, &[c_out], &bias);
            inputs.push(bias_name);
        }
        let [ph, pw] = conv.padding;
        let attributes = vec![
            ints("kernel_shape", &conv.kernel),
            ints("strides", &conv.stride),
            ints("pads", &[ph, pw, ph, pw]),
            ints("dilations", &[1, 1]),
            int("group", 1),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let out = self.node("Conv", &format!("{name}.conv"), &inputs, attributes);
        if self.batch_norm == ExportBatchNorm::Folded {
            return Ok(out);
        }
        let bn = &unit.bn;
        let parts = [
            ("gamma", bn.gamma.val()),
            ("beta", bn.beta.val()),
            ("running_mean", bn.running_mean.value()),
            ("running_var", bn.running_var.value()),
        ];
        let mut inputs = vec![out];
        for (part, tensor) in parts {
            let tensor_name = format!("{name}.bn.{part}");
            let values = host_values(tensor, &tensor_name)?;
            self.initializer(&tensor_name, &[c_out], &values);
            inputs.push(tensor_name);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(
            "BatchNormalization",
            &format!("{name}.bn"),
            &inputs,
            vec![
                float("epsilon", bn.epsilon as f32),
                float("momentum", 1.0 - bn.momentum as f32),
            ],
        ))
    }

    /// The stem: its convolution unit, the ReLU and the max pool; returns the pool's output.
    fn stem(&mut self, model: &ResNet, input: &str) -> Result<String> {
        let x = self.unit(&model.stem.conv, "stem.conv", input)?;
        let x = self.relu(&x);
        let pool = &model.stem.pool;
        let pads = match pool.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
            PaddingConfig2d::Valid => [0; 4],
            PaddingConfig2d::Same => {
                return Err(Error::invalid_config(
                    "stem.pool.padding",
                    "explicit or valid padding",
                    "Same",
                ));
            }
        };
        Ok(self.node(
            "MaxPool",
            "stem.pool",
            &[&x],
            vec![
                ints("kernel_shape", &pool.kernel_size),
                ints("strides", &pool.stride),
                ints("pads", &pads),
                ints("dilations", &pool.dilation),
                int("ceil_mode", pool.ceil_mode as i64),
            ],
        ))
    }

    /// One residual block named `name`: its convolutions with a ReLU between them, the shortcut
    /// (a unit, or the input itself), their sum and the last ReLU; returns the block's output.
    fn block(&mut self, block: &Block, name: &str, x: String) -> Result<String> {
        let identity = match &block.shortcut {
            Some(unit) => self.unit(unit, &format!("{name}.shortcut"), &x)?,
            None => x.clone(),
        };
        let (last, inner) = block.convs.split_last().ok_or_else(|| Error::BadTensor {
            tensor: name.to_string(),
            reason: "a residual block without convolutions".into(),
        })?;
        let mut y = x;
        for (i, unit) in inner.iter().enumerate() {
            let out = self.unit(unit, &format!("{name}.convs.{i}"), &y)?;
            y = self.relu(&out);
        }
        let y = self.unit(last, &format!("{name}.convs.{}", inner.len()), &y)?;
        let sum = self.node("Add", &format!("{name}.add"), &[&y, &identity], vec![]);
        Ok(self.relu(&sum))
    }

    /// The head: a Gemm from `features` to the graph's output `logits`; returns the classes.
    fn head(&mut self, head: &Head, features: &str) -> Result<usize> {
        // Burn's Linear keeps its weight `[features, classes]`; Gemm with transB takes
        // `[classes, features]`, as torchvision's exports have it.
        let weight = host_values(head.linear.weight.val(), "head.linear.weight")?;
        let [in_features, classes] = head.linear.weight.lazy_shape().dims::<2>();
        let mut transposed = vec![0.0; weight.len()];
        for (r, row) in weight.chunks_exact(classes).enumerate() {
            for (c, &w) in row.iter().enumerate() {
                transposed[c * in_features + r] = w;
            }
        }
        self.initializer("head.linear.weight", &[classes, in_features], &transposed);
        let mut inputs = vec![features, "head.linear.weight"];
        if let Some(bias) = &head.linear.bias {
            let bias = host_values(bias.val(), "head.linear.bias")?;
            self.initializer("head.linear.bias", &[classes], &bias);
            inputs.push("head.linear.bias");
        }
        let logits = self.node_to(
            "Gemm",
            "head.linear",
            &inputs,
            "logits",
            vec![int("transB", 1)],
        );
        self.output(&logits, &[Dim::Batch, Dim::Fixed(classes)]);
        Ok(classes)
    }
}

/// ONNX's `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let mut info = ValueInfoProto::new();
    info.name = name.into();
    let mut ty = TypeProto::new();
    let tensor = ty.mut_tensor_type();
    tensor.elem_type = FLOAT;
    let shape = tensor.shape.mut_or_insert_default();
    for d in dims {
        shape.dim.push(Default::default());
        let dim = shape.dim.last_mut().expect("pushed");
        match d {
            Dim::Batch => dim.set_dim_param("batch".into()),
            Dim::Fixed(size) => dim.set_dim_value(*size as i64),
        }
    }
    *info.type_.mut_or_insert_default() = ty;
    info
}

fn attribute(name: &str, ty: AttributeType) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = ty.into();
    a
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    let mut a = attribute(name, AttributeType::INTS);
    a.ints = values.iter().map(|&v| v as i64).collect();
    a
}

fn int(name: &str, value: i64) -> AttributeProto {
    let mut a = attribute(name, AttributeType::INT);
    a.i = value;
    a
}

fn float(name: &str, value: f32) -> AttributeProto {
    let mut a = attribute(name, AttributeType::FLOAT);
    a.f = value;
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNetConfig;

    /// A card without names for its classes (an ImageNet import's) exports the names `predict`
    /// falls back to, one per output, where it exported `[]` and a reader indexing the names by
    /// the top logit failed.
    #[test]
    fn class_names_are_one_per_output_even_without_a_cards_names() {
        let card = |names: Vec<String>| ModelCard {
            config: ResNetConfig::resnet18(1000),
            preprocess: Preprocess::Torch,
            input_size: 224,
            class_names: names,
            source: "a test".into(),
        };
        let names = |card: &ModelCard, classes: usize| -> Vec<String> {
            let meta = metadata(card, classes).unwrap();
            let (_, json) = meta.iter().find(|(k, _)| *k == "class_names").unwrap();
            serde_json::from_str(json).unwrap()
        };
        let imagenet = names(&card(Vec::new()), 1000);
        assert_eq!(imagenet, crate::infer::default_names(1000));
        assert_eq!(imagenet.len(), 1000);
        assert_eq!(
            names(&card(Vec::new()), 3),
            ["class 0", "class 1", "class 2"]
        );
        let own = vec!["cat".to_string(), "dog".to_string()];
        assert_eq!(names(&card(own.clone()), 2), own);
    }
}
