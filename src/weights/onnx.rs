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

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor, TensorData};
use onnx_ir::{Argument, Node, NodeType, OnnxGraph};

use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::model::{ConvBn, Pooling, ResNet, ResNetConfig, StridePlacement};

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
}

/// One convolution and what normalizes it, as found in the graph.
struct Unit {
    node: String,
    weight: TensorData,
    bias: Option<TensorData>,
    stride: usize,
    norm: Norm,
}

enum Norm {
    /// A BatchNormalization node: gamma, beta, mean, var, and its epsilon.
    Node([Vec<f32>; 4], f64),
    /// Mul by a scale, then Add a shift (tf2onnx's rewrite).
    Affine(Vec<f32>, Vec<f32>),
    /// Folded into the convolution by the exporter.
    Folded,
}

struct Block {
    convs: Vec<Unit>,
    shortcut: Option<Unit>,
}

struct Head {
    /// `[classes, features]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
    classes: usize,
    features: usize,
    pooling: Pooling,
    softmax: bool,
}

/// A classifier read from the graph: (`[classes, features]` weight, classes, features), bias,
/// and the tensor after it.
type Dense<'a> = ((Vec<f32>, usize, usize), Vec<f32>, &'a str);

struct Matcher<'a> {
    path: &'a Path,
    graph: &'a OnnxGraph,
    consumers: HashMap<&'a str, Vec<usize>>,
}

/// Reads a ResNet from an ONNX file onto `device`.
///
/// ```no_run
/// let device = resnet_transfer::Device::default();
/// let imported = resnet_transfer::weights::import_onnx("resnet50.onnx".as_ref(), &device)?;
/// println!("depth {} width {}", imported.config.depth, imported.config.width);
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
pub fn import_onnx(path: &Path, device: &Device) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let graph = parse(path, &bytes)?;
    let matcher = Matcher::new(path, &graph);
    matcher.import(device)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<OnnxGraph> {
    let bad = |reason: String| Error::BadFormat {
        path: path.to_path_buf(),
        reason,
    };
    // onnx-ir reports most problems as errors, but a malformed file can reach an assertion
    // inside it; neither may take the caller down.
    let parsed = std::panic::catch_unwind(|| onnx_ir::OnnxGraphBuilder::new().parse_bytes(bytes));
    match parsed {
        Ok(Ok(graph)) => Ok(graph),
        Ok(Err(e)) => Err(bad(format!("not a readable ONNX model: {e}"))),
        Err(_) => Err(bad("not a readable ONNX model (the parser gave up)".into())),
    }
}

fn op(node: &Node) -> String {
    node.node_type().to_string()
}

fn dims_of(data: &TensorData) -> Vec<usize> {
    data.shape().to_vec()
}

fn floats(data: &TensorData) -> Vec<f32> {
    data.try_to_vec_as::<f32>().unwrap_or_default()
}

impl<'a> Matcher<'a> {
    fn new(path: &'a Path, graph: &'a OnnxGraph) -> Self {
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for input in node.inputs() {
                consumers.entry(input.name.as_str()).or_default().push(i);
            }
        }
        Self {
            path,
            graph,
            consumers,
        }
    }

    fn fail(&self, node: &Node, reason: impl Into<String>) -> Error {
        Error::UnsupportedGraph {
            path: self.path.to_path_buf(),
            node: node.name().to_string(),
            op: op(node),
            reason: reason.into(),
        }
    }

    fn fail_at(&self, tensor: &str, reason: impl Into<String>) -> Error {
        Error::UnsupportedGraph {
            path: self.path.to_path_buf(),
            node: tensor.to_string(),
            op: "tensor".into(),
            reason: reason.into(),
        }
    }

    fn users(&self, tensor: &str) -> Vec<&'a Node> {
        let graph = self.graph;
        self.consumers
            .get(tensor)
            .map(|v| v.iter().map(|&i| &graph.nodes[i]).collect())
            .unwrap_or_default()
    }

    /// The one node reading `tensor`, skipping Identity nodes.
    fn next(&self, tensor: &str, expected: &str) -> Result<&'a Node> {
        let users = self.users(tensor);
        match users.as_slice() {
            [node] if node.node_type() == NodeType::Identity => self.next(out(node), expected),
            [node] => Ok(node),
            [] => Err(self.fail_at(tensor, format!("expected {expected}, but nothing reads it"))),
            many => {
                let ops: Vec<String> = many.iter().map(|n| op(n)).collect();
                Err(self.fail_at(tensor, format!("expected only {expected}, found {ops:?}")))
            }
        }
    }

    fn constant(&self, node: &Node, arg: &Argument, what: &str) -> Result<TensorData> {
        arg.value()
            .ok_or_else(|| self.fail(node, format!("{what} is not a constant")))
    }

    /// The constant among a binary node's two inputs, and the other (dynamic) input's name.
    fn constant_operand(&self, node: &'a Node) -> Option<(TensorData, &'a str)> {
        let inputs = node.inputs();
        if inputs.len() != 2 {
            return None;
        }
        match (inputs[0].value(), inputs[1].value()) {
            (None, Some(c)) => Some((c, inputs[0].name.as_str())),
            (Some(c), None) => Some((c, inputs[1].name.as_str())),
            _ => None,
        }
    }

    fn import(&self, device: &Device) -> Result<Imported> {
        let input = self.graph.inputs.first().ok_or_else(|| Error::BadFormat {
            path: self.path.to_path_buf(),
            reason: "the graph has no input".into(),
        })?;
        let mut tensor: &str = &input.name;
        let mut layout = InputLayout::Nchw;
        let mut node = self.next(tensor, "the stem")?;
        if let Node::Transpose(t) = node {
            if t.config.perm != [0, 3, 1, 2] {
                return Err(self.fail(
                    node,
                    format!("a Transpose {:?} is not NHWC to NCHW", t.config.perm),
                ));
            }
            layout = InputLayout::Nhwc;
            tensor = out(node);
            node = self.next(tensor, "the stem")?;
        }
        let input_size = input.ty.static_shape().and_then(|dims| {
            let (h, w) = match layout {
                InputLayout::Nchw => (dims.get(2)?, dims.get(3)?),
                InputLayout::Nhwc => (dims.get(1)?, dims.get(2)?),
            };
            h.zip(*w).filter(|(h, w)| h == w).map(|(h, _)| h)
        });

        // The stem: [Pad] Conv 7x7/2, norm, ReLU, [Pad] MaxPool 3x3/2.
        let (pad, conv) = self.skip_pad(node)?;
        if conv.node_type() == NodeType::BatchNormalization {
            return Err(self.fail(
                conv,
                "a BatchNormalization before the first convolution: this is a pre-activation \
                 ResNet (v2), which is not supported; use a v1 or v1.5 export",
            ));
        }
        let (stem, stem_out) = self.unit(conv, 7, pad + 3)?;
        if stem.stride != 2 {
            return Err(self.fail(conv, "the stem convolution must have stride 2"));
        }
        let relu = self.next(stem_out, "the stem's ReLU")?;
        self.expect(relu, NodeType::Relu, "the stem's ReLU")?;
        let (pad, pool) = self.skip_pad(self.next(out(relu), "the stem's max pool")?)?;
        let Node::MaxPool2d(mp) = pool else {
            return Err(self.fail(pool, "expected the stem's 3x3 max pool with stride 2"));
        };
        let pool_pad = pad
            + pad_of(
                &mp.config.padding,
                mp.config.auto_pad == onnx_ir::node::padding::AutoPad::NotSet,
            )
            .unwrap_or(usize::MAX);
        if mp.config.kernel_size != [3, 3] || mp.config.strides != [2, 2] || pool_pad != 1 {
            return Err(self.fail(
                pool,
                "expected the stem's 3x3 max pool with stride 2 and padding 1",
            ));
        }
        tensor = out(pool);

        // Residual blocks, until global pooling.
        let mut blocks = Vec::new();
        let head = loop {
            let users = self.users(tensor);
            let convs: Vec<&Node> = users
                .iter()
                .copied()
                .filter(|n| n.node_type() == NodeType::Conv2d)
                .collect();
            if convs.is_empty() {
                break self.head(tensor)?;
            }
            let (block, block_out) = self.block(tensor, &convs)?;
            blocks.push(block);
            tensor = block_out;
        };
        self.build(stem, blocks, head, layout, input_size, device)
    }

    fn expect(&self, node: &Node, ty: NodeType, what: &str) -> Result<()> {
        if node.node_type() == ty {
            Ok(())
        } else {
            Err(self.fail(node, format!("expected {what}")))
        }
    }

    /// Skips a constant zero Pad on the spatial axes, returning its (symmetric) amount and the
    /// node after it.
    fn skip_pad(&self, node: &'a Node) -> Result<(usize, &'a Node)> {
        let Node::Pad(pad) = node else {
            return Ok((0, node));
        };
        let onnx_ir::node::pad::PadInput::Static(pads) = &pad.config.pads else {
            return Err(self.fail(node, "a Pad whose amount is not a constant"));
        };
        let spatial: Vec<(usize, usize)> = pads.iter().copied().filter(|p| *p != (0, 0)).collect();
        let amount = spatial.first().map(|p| p.0).unwrap_or(0);
        if spatial.len() > 2 || spatial.iter().any(|&(a, b)| a != amount || b != amount) {
            return Err(self.fail(node, format!("an asymmetric or non-spatial Pad {pads:?}")));
        }
        Ok((amount, self.next(out(node), "the node after a Pad")?))
    }

    /// A Conv with `kernel` and total padding `padding`, and what normalizes it; returns the
    /// unit and the tensor after the normalization.
    fn unit(&self, node: &'a Node, kernel: usize, padding: usize) -> Result<(Unit, &'a str)> {
        let Node::Conv2d(conv) = node else {
            return Err(self.fail(node, format!("expected a {kernel}x{kernel} convolution")));
        };
        let c = &conv.config;
        let explicit = c.auto_pad == onnx_ir::node::padding::AutoPad::NotSet;
        let same_stride_1 = !explicit
            && c.stride == [1, 1]
            && matches!(
                c.auto_pad,
                onnx_ir::node::padding::AutoPad::SameUpper
                    | onnx_ir::node::padding::AutoPad::SameLower
            );
        let pad = if same_stride_1 {
            Some(kernel / 2)
        } else {
            pad_of(&c.padding, explicit)
        };
        if c.kernel_size != [kernel, kernel]
            || c.stride[0] != c.stride[1]
            || c.dilation != [1, 1]
            || c.groups != 1
            || pad != Some(padding)
        {
            return Err(self.fail(
                node,
                format!(
                    "expected a {kernel}x{kernel} convolution with padding {padding}, found kernel {:?}, stride {:?}, padding {:?}, dilation {:?}, groups {}",
                    c.kernel_size, c.stride, c.padding, c.dilation, c.groups
                ),
            ));
        }
        let weight = self.constant(node, &conv.inputs[1], "the convolution's weight")?;
        // onnx-ir clears the names of static arguments: presence is what counts.
        let bias = match conv.inputs.get(2) {
            Some(arg) if !arg.is_optional() => {
                Some(self.constant(node, arg, "the convolution's bias")?)
            }
            _ => None,
        };
        let conv_out = out(node);
        let (norm, after) = self.norm(conv_out)?;
        Ok((
            Unit {
                node: node.name().to_string(),
                weight,
                bias,
                stride: c.stride[0],
                norm,
            },
            after,
        ))
    }

    fn norm(&self, tensor: &'a str) -> Result<(Norm, &'a str)> {
        let users = self.users(tensor);
        let [node] = users.as_slice() else {
            return Ok((Norm::Folded, tensor));
        };
        match node {
            Node::BatchNormalization(bn) => {
                let epsilon = match &bn.config {
                    onnx_ir::node::batch_norm::BatchNormConfig::Static(c) => c.epsilon,
                    onnx_ir::node::batch_norm::BatchNormConfig::Runtime(c) => c.epsilon,
                };
                let get = |i: usize, what| self.constant(node, &bn.inputs[i], what);
                let params = [
                    get(1, "scale")?,
                    get(2, "bias")?,
                    get(3, "mean")?,
                    get(4, "var")?,
                ];
                Ok((Norm::Node(params.map(|p| floats(&p)), epsilon), out(node)))
            }
            Node::Mul(_) => {
                let Some((scale, _)) = self.constant_operand(node) else {
                    return Ok((Norm::Folded, tensor));
                };
                let add =
                    self.next(out(node), "the Add of a BatchNorm rewritten as Mul and Add")?;
                let Some((shift, _)) = (add.node_type() == NodeType::Add)
                    .then(|| self.constant_operand(add))
                    .flatten()
                else {
                    return Err(self.fail(
                        add,
                        "expected the Add of a BatchNorm rewritten as Mul and Add",
                    ));
                };
                Ok((Norm::Affine(floats(&scale), floats(&shift)), out(add)))
            }
            _ => Ok((Norm::Folded, tensor)),
        }
    }

    /// A residual block starting at `input`, read by `convs` (the main path's first conv, and
    /// the projection shortcut's if there is one).
    fn block(&self, input: &'a str, convs: &[&'a Node]) -> Result<(Block, &'a str)> {
        let mut paths = Vec::new();
        for &conv in convs {
            paths.push(self.path_to_add(conv)?);
        }
        let (main, shortcut, add) = match paths.len() {
            1 => {
                let (units, add) = paths.pop().expect("one path");
                (units, None, add)
            }
            2 => {
                let (b_units, b_add) = paths.pop().expect("two paths");
                let (a_units, a_add) = paths.pop().expect("two paths");
                if a_add.name() != b_add.name() {
                    return Err(
                        self.fail(a_add, "the two branches of a block do not meet at one Add")
                    );
                }
                let (mut main, mut short) = (a_units, b_units);
                if main.len() < short.len() {
                    std::mem::swap(&mut main, &mut short);
                }
                if short.len() != 1 {
                    return Err(
                        self.fail(a_add, "a projection shortcut must be one 1x1 convolution")
                    );
                }
                (main, short.pop(), a_add)
            }
            _ => {
                return Err(self.fail(
                    convs[0],
                    "more than two convolutions read one block's input",
                ));
            }
        };
        if shortcut.is_none() && !add.inputs().iter().any(|a| a.name == input) {
            return Err(self.fail(
                add,
                "the block's Add does not add its input (identity shortcut)",
            ));
        }
        if !(2..=3).contains(&main.len()) {
            return Err(self.fail(
                add,
                format!("a residual block with {} convolutions", main.len()),
            ));
        }
        let relu = self.next(out(add), "the ReLU after a block's Add")?;
        self.expect(relu, NodeType::Relu, "the ReLU after a block's Add")?;
        Ok((
            Block {
                convs: main,
                shortcut,
            },
            out(relu),
        ))
    }

    /// Follows conv, norm, [ReLU, conv, norm]... until an Add.
    fn path_to_add(&self, first: &'a Node) -> Result<(Vec<Unit>, &'a Node)> {
        let mut units = Vec::new();
        let mut node = first;
        loop {
            let kernel = match &node {
                Node::Conv2d(c) => c.config.kernel_size[0],
                _ => return Err(self.fail(node, "expected a convolution inside a residual block")),
            };
            let (unit, after) = self.unit(node, kernel, kernel / 2)?;
            units.push(unit);
            let next = self.next(after, "a ReLU or the block's Add")?;
            match next.node_type() {
                NodeType::Add => return Ok((units, next)),
                NodeType::Relu => node = self.next(out(next), "the next convolution")?,
                _ => return Err(self.fail(next, "expected a ReLU or the block's Add")),
            }
            if units.len() > 3 {
                return Err(self.fail(node, "a residual path longer than three convolutions"));
            }
        }
    }

    /// Global pooling, flatten, the classifier, an optional Softmax.
    fn head(&self, tensor: &'a str) -> Result<Head> {
        let pool = self.next(tensor, "global pooling")?;
        let pooling = match pool {
            Node::GlobalAveragePool(_) => Pooling::Average,
            Node::GlobalMaxPool(_) => Pooling::Max,
            Node::ReduceMean(_) => Pooling::Average,
            Node::ReduceMax(_) => Pooling::Max,
            other => return Err(self.fail(other, "expected a residual block or global pooling")),
        };
        let mut node = self.next(out(pool), "the classifier")?;
        while matches!(
            node.node_type(),
            NodeType::Flatten | NodeType::Squeeze | NodeType::Reshape
        ) {
            node = self.next(out(node), "the classifier")?;
        }
        let (weight, bias, after) = match node {
            // onnx-ir coalesces Gemm (and MatMul + Add) into one Linear node; a Gemm it kept
            // (alpha or beta other than 1) is refused below as not a classifier we know.
            Node::Gemm(g)
                if g.config.alpha == 1.0 && g.config.beta == 1.0 && g.config.trans_a == 0 =>
            {
                self.dense(node, &g.inputs, g.config.trans_b != 0)?
            }
            Node::Linear(l) => self.dense(node, &l.inputs, l.config.transpose_weight)?,
            Node::MatMul(m) => {
                let w = self.constant(node, &m.inputs[1], "the classifier's weight")?;
                let [features, classes] = dims2(&w)
                    .ok_or_else(|| self.fail(node, "a classifier weight that is not 2-D"))?;
                let w = transpose(&floats(&w), features, classes);
                let after = out(node);
                let users = self.users(after);
                match users.as_slice() {
                    [add] if add.node_type() == NodeType::Add => {
                        let (bias, _) = self.constant_operand(add).ok_or_else(|| {
                            self.fail(add, "the classifier's bias is not a constant")
                        })?;
                        ((w, classes, features), floats(&bias), out(add))
                    }
                    _ => ((w, classes, features), vec![0.0; classes], after),
                }
            }
            other => return Err(self.fail(other, "expected the classifier (Gemm or MatMul)")),
        };
        let ((weight, classes, features), mut softmax) = (weight, false);
        let mut last = after;
        if let [s] = self.users(after).as_slice() {
            if s.node_type() == NodeType::Softmax {
                softmax = true;
                last = out(s);
            } else {
                return Err(self.fail(s, "expected the end of the graph after the classifier"));
            }
        }
        if !self.graph.outputs.iter().any(|o| o.name == last) {
            return Err(self.fail_at(last, "the classifier's output is not the graph's output"));
        }
        if bias.len() != classes {
            return Err(Error::ShapeMismatch {
                tensor: "head.linear.bias".into(),
                expected: vec![classes],
                found: vec![bias.len()],
            });
        }
        Ok(Head {
            weight,
            bias,
            classes,
            features,
            pooling,
            softmax,
        })
    }

    /// A dense layer's weight as `[classes, features]` and its bias (zeros when absent), from
    /// inputs `[x, weight, bias?]`; `transposed` when the weight is stored `[classes, features]`.
    fn dense(&self, node: &'a Node, inputs: &[Argument], transposed: bool) -> Result<Dense<'a>> {
        let w = self.constant(node, &inputs[1], "the classifier's weight")?;
        let [a, b] =
            dims2(&w).ok_or_else(|| self.fail(node, "a classifier weight that is not 2-D"))?;
        let w = floats(&w);
        let (w, classes, features) = if transposed {
            (w, a, b)
        } else {
            (transpose(&w, a, b), b, a)
        };
        let bias = match inputs.get(2).and_then(|arg| arg.value()) {
            Some(b) => floats(&b),
            None => vec![0.0; classes],
        };
        Ok(((w, classes, features), bias, out(node)))
    }

    fn build(
        &self,
        stem: Unit,
        blocks: Vec<Block>,
        head: Head,
        layout: InputLayout,
        input_size: Option<usize>,
        device: &Device,
    ) -> Result<Imported> {
        // Stage boundaries: where a block's output width changes.
        let mut sizes = Vec::new();
        let mut last_width = 0;
        for block in &blocks {
            let width = dims_of(&block.convs.last().expect("2 or 3 convs").weight)[0];
            if width != last_width {
                sizes.push(0);
                last_width = width;
            }
            *sizes.last_mut().expect("pushed") += 1;
        }
        let bottleneck = blocks.first().is_some_and(|b| b.convs.len() == 3);
        let depth = match (bottleneck, sizes.as_slice()) {
            (false, [2, 2, 2, 2]) => 18,
            (false, [3, 4, 6, 3]) => 34,
            (true, [3, 4, 6, 3]) => 50,
            (true, [3, 4, 23, 3]) => 101,
            (true, [3, 8, 36, 3]) => 152,
            (_, other) => {
                return Err(self.fail_at(
                    &stem.node,
                    format!(
                        "blocks per stage {other:?} ({}) match no ResNet depth",
                        if bottleneck {
                            "bottlenecks"
                        } else {
                            "basic blocks"
                        }
                    ),
                ));
            }
        };
        let placement = match blocks.get(sizes[0]).map(|b| b.convs[0].stride) {
            Some(2) if bottleneck => StridePlacement::FirstConv,
            _ => StridePlacement::MiddleConv,
        };
        let units = std::iter::once(&stem).chain(
            blocks
                .iter()
                .flat_map(|b| b.convs.iter().chain(&b.shortcut)),
        );
        let separate_norm = units.clone().all(|u| !matches!(u.norm, Norm::Folded));
        let folded = units.clone().all(|u| matches!(u.norm, Norm::Folded));
        if !separate_norm && !folded {
            return Err(self.fail_at(
                &stem.node,
                "BatchNorm is folded into some convolutions but not others",
            ));
        }
        let conv_bias = separate_norm && units.clone().any(|u| u.bias.is_some());
        let epsilon = units
            .clone()
            .find_map(|u| match u.norm {
                // Stored as float32 in the file: 1e-5 arrives as 9.99999974e-6.
                Norm::Node(_, eps) => Some((eps as f32).to_string().parse().unwrap_or(eps)),
                _ => None,
            })
            .unwrap_or(match layout {
                InputLayout::Nhwc => 1.001e-5,
                InputLayout::Nchw => 1e-5,
            });
        let width = dims_of(&stem.weight)[0];
        let config = ResNetConfig::new(depth)
            .with_stride_placement(placement)
            .with_conv_bias(conv_bias)
            .with_batch_norm_epsilon(epsilon)
            .with_width(width)
            .with_pooling(head.pooling)
            .with_num_classes(Some(head.classes));
        let mut model = config.init(device)?;
        if head.features != config.feature_dim() {
            return Err(Error::ShapeMismatch {
                tensor: "head.linear.weight".into(),
                expected: vec![config.feature_dim(), head.classes],
                found: vec![head.features, head.classes],
            });
        }

        let load = |target: &mut ConvBn, unit: &Unit, name: String| -> Result<()> {
            self.load_unit(target, unit, &name, conv_bias, epsilon, device)
        };
        load(&mut model.stem.conv, &stem, "stem.conv".into())?;
        let mut blocks = blocks.into_iter();
        for (s, stage) in model.stages.iter_mut().enumerate() {
            for (b, target) in stage.blocks.iter_mut().enumerate() {
                let source = blocks.next().expect("counted into stages");
                for (c, (t, u)) in target.convs.iter_mut().zip(&source.convs).enumerate() {
                    load(t, u, format!("stages.{s}.blocks.{b}.convs.{c}"))?;
                }
                match (&mut target.shortcut, &source.shortcut) {
                    (Some(t), Some(u)) => load(t, u, format!("stages.{s}.blocks.{b}.shortcut"))?,
                    (None, None) => {}
                    _ => {
                        return Err(self.fail_at(
                            &source.convs[0].node,
                            format!("stage {} block {b}: the shortcut is not where a ResNet{depth} has one", s + 1),
                        ));
                    }
                }
            }
        }
        let head_layer = model.head.as_mut().expect("configured with classes");
        // Burn's Linear keeps its weight as [features, classes].
        let w = transpose(&head.weight, head.classes, head.features);
        head_layer.linear.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [head.features, head.classes]),
            device,
        ));
        head_layer.linear.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(head.bias, [head.classes]),
            device,
        )));

        let preprocess = match layout {
            InputLayout::Nhwc => Preprocess::Caffe,
            InputLayout::Nchw => Preprocess::Torch,
        };
        Ok(Imported {
            model,
            config,
            preprocess,
            layout,
            input_size,
            softmax: head.softmax,
            folded_batch_norm: folded,
        })
    }

    fn load_unit(
        &self,
        target: &mut ConvBn,
        unit: &Unit,
        name: &str,
        conv_bias: bool,
        epsilon: f64,
        device: &Device,
    ) -> Result<()> {
        let expected = target.conv.dims_oihw().to_vec();
        let found = dims_of(&unit.weight);
        if expected != found {
            return Err(Error::ShapeMismatch {
                tensor: format!("{name}.conv.weight (ONNX node `{}`)", unit.node),
                expected,
                found,
            });
        }
        let channels = expected[0];
        let tensor = |data: Vec<f32>, what: &str| -> Result<Tensor<1>> {
            if data.len() != channels {
                return Err(Error::ShapeMismatch {
                    tensor: format!("{name}.{what} (ONNX node `{}`)", unit.node),
                    expected: vec![channels],
                    found: vec![data.len()],
                });
            }
            Ok(Tensor::from_data(TensorData::new(data, [channels]), device))
        };
        target.conv.set_weight_oihw(Tensor::from_data(
            unit.weight.clone().convert::<f32>(),
            device,
        ));
        let bias = unit
            .bias
            .as_ref()
            .map(floats)
            .unwrap_or_else(|| vec![0.0; channels]);
        // What the normalization adds: identity statistics where the file has none.
        let identity_var = vec![(1.0 - epsilon) as f32; channels];
        let (gamma, beta, mean, var) = match &unit.norm {
            Norm::Node([g, b, m, v], _) => (g.clone(), b.clone(), m.clone(), v.clone()),
            Norm::Affine(scale, shift) => {
                let scale = if scale.len() == 1 {
                    vec![scale[0]; channels]
                } else {
                    scale.clone()
                };
                (scale, shift.clone(), vec![0.0; channels], identity_var)
            }
            Norm::Folded => (
                vec![1.0; channels],
                bias.clone(),
                vec![0.0; channels],
                identity_var,
            ),
        };
        target.conv.bias = if conv_bias {
            Some(Param::from_tensor(tensor(bias, "conv.bias")?))
        } else {
            None
        };
        target.bn.gamma = Param::from_tensor(tensor(gamma, "bn.gamma")?);
        target.bn.beta = Param::from_tensor(tensor(beta, "bn.beta")?);
        target.bn.running_mean = RunningState::new(tensor(mean, "bn.running_mean")?);
        target.bn.running_var = RunningState::new(tensor(var, "bn.running_var")?);
        Ok(())
    }
}

fn out(node: &Node) -> &str {
    node.outputs()
        .first()
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn pad_of(padding: &onnx_ir::node::padding::PaddingConfig2d, explicit: bool) -> Option<usize> {
    use onnx_ir::node::padding::PaddingConfig2d as P;
    if !explicit {
        return None;
    }
    match *padding {
        P::Valid => Some(0),
        P::Explicit(t, l, b, r) if t == l && l == b && b == r => Some(t),
        _ => None,
    }
}

fn dims2(data: &TensorData) -> Option<[usize; 2]> {
    match dims_of(data).as_slice() {
        &[a, b] => Some([a, b]),
        _ => None,
    }
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut outv = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            outv[c * rows + r] = data[r * cols + c];
        }
    }
    outv
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
