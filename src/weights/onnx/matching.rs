//! Matching: walking an ONNX graph as a ResNet is built, from the input to the head, and
//! checking that each node is what a ResNet has there.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, TensorData};
use onnx_ir::{Argument, Node, NodeType, OnnxGraph};

use super::names::FileNames;
use super::{Imported, InputLayout, dims_of, floats, op, transpose};
use crate::error::{Error, Result};
use crate::model::Pooling;

/// One convolution and what normalizes it, as found in the graph.
pub(super) struct Unit {
    pub(super) node: String,
    pub(super) weight: TensorData,
    pub(super) bias: Option<TensorData>,
    pub(super) stride: usize,
    pub(super) norm: Norm,
}

pub(super) enum Norm {
    /// A BatchNormalization node: gamma, beta, mean, var, and its epsilon.
    Node([Vec<f32>; 4], f64),
    /// Mul by a scale, then Add a shift (tf2onnx's rewrite).
    Affine(Vec<f32>, Vec<f32>),
    /// Folded into the convolution by the exporter.
    Folded,
}

pub(super) struct Block {
    pub(super) convs: Vec<Unit>,
    pub(super) shortcut: Option<Unit>,
}

pub(super) struct Head {
    /// `[classes, features]`.
    pub(super) weight: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) classes: usize,
    pub(super) features: usize,
    pub(super) pooling: Pooling,
    pub(super) softmax: bool,
}

/// A classifier read from the graph: (`[classes, features]` weight, classes, features), bias,
/// and the tensor after it.
pub(super) type Dense<'a> = ((Vec<f32>, usize, usize), Vec<f32>, &'a str);

pub(super) struct Matcher<'a> {
    pub(super) path: &'a Path,
    pub(super) graph: &'a OnnxGraph,
    pub(super) consumers: HashMap<&'a str, Vec<usize>>,
    /// The file's own names for onnx-ir's, for errors.
    pub(super) names: FileNames,
}

impl<'a> Matcher<'a> {
    pub(super) fn new(path: &'a Path, graph: &'a OnnxGraph, names: FileNames) -> Self {
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
            names,
        }
    }

    pub(super) fn fail(&self, node: &Node, reason: impl Into<String>) -> Error {
        Error::UnsupportedGraph {
            path: self.path.to_path_buf(),
            node: self.file_name(node),
            op: op(node),
            reason: reason.into(),
        }
    }

    /// An error at the tensor onnx-ir names `tensor`, in the file's name for it.
    pub(super) fn fail_at(&self, tensor: &str, reason: impl Into<String>) -> Error {
        Error::UnsupportedGraph {
            path: self.path.to_path_buf(),
            node: self.names.tensor(tensor),
            op: "tensor".into(),
            reason: reason.into(),
        }
    }

    /// An error at the convolution of `unit`.
    pub(super) fn fail_unit(&self, unit: &Unit, reason: impl Into<String>) -> Error {
        Error::UnsupportedGraph {
            path: self.path.to_path_buf(),
            node: unit.node.clone(),
            op: "Conv".into(),
            reason: reason.into(),
        }
    }

    /// The file's own name for `node`.
    pub(super) fn file_name(&self, node: &Node) -> String {
        self.names.node(node.name(), &node.node_type())
    }

    pub(super) fn users(&self, tensor: &str) -> Vec<&'a Node> {
        let graph = self.graph;
        self.consumers
            .get(tensor)
            .map(|v| v.iter().map(|&i| &graph.nodes[i]).collect())
            .unwrap_or_default()
    }

    /// The one node reading `tensor`, skipping Identity nodes.
    pub(super) fn next(&self, tensor: &str, expected: &str) -> Result<&'a Node> {
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

    pub(super) fn constant(&self, node: &Node, arg: &Argument, what: &str) -> Result<TensorData> {
        arg.value().ok_or_else(|| {
            let hint = "weights must be stored in the file, not computed by its nodes, as an \
                            export left unoptimized computes them (torch.onnx.export with \
                            optimize=False): export with the defaults, or optimize the file \
                            first (onnxruntime's or onnxsim's optimizer)";
            self.fail(node, format!("{what} is not a constant: {hint}"))
        })
    }

    /// The constant among a binary node's two inputs, and the other (dynamic) input's name.
    pub(super) fn constant_operand(&self, node: &'a Node) -> Option<(TensorData, &'a str)> {
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

    pub(super) fn import(&self, device: &Device) -> Result<Imported> {
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

    pub(super) fn expect(&self, node: &Node, ty: NodeType, what: &str) -> Result<()> {
        if node.node_type() == ty {
            Ok(())
        } else {
            Err(self.fail(node, format!("expected {what}")))
        }
    }

    /// Skips a constant zero Pad on the spatial axes, returning its (symmetric) amount and the
    /// node after it.
    pub(super) fn skip_pad(&self, node: &'a Node) -> Result<(usize, &'a Node)> {
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
    pub(super) fn unit(
        &self,
        node: &'a Node,
        kernel: usize,
        padding: usize,
    ) -> Result<(Unit, &'a str)> {
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
        if c.groups != 1 {
            return Err(self.fail(
                node,
                format!(
                    "a grouped convolution ({} groups): the file is a ResNeXt or another \
                     variant with grouped convolutions, which this crate does not build (it \
                     builds ResNets: torchvision's resnet18 to resnet152, Keras's ResNet50 to \
                     ResNet152)",
                    c.groups
                ),
            ));
        }
        if c.kernel_size != [kernel, kernel]
            || c.stride[0] != c.stride[1]
            || c.dilation != [1, 1]
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
                node: self.file_name(node),
                weight,
                bias,
                stride: c.stride[0],
                norm,
            },
            after,
        ))
    }

    pub(super) fn norm(&self, tensor: &'a str) -> Result<(Norm, &'a str)> {
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
    pub(super) fn block(&self, input: &'a str, convs: &[&'a Node]) -> Result<(Block, &'a str)> {
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
    pub(super) fn path_to_add(&self, first: &'a Node) -> Result<(Vec<Unit>, &'a Node)> {
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
    pub(super) fn head(&self, tensor: &'a str) -> Result<Head> {
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
    pub(super) fn dense(
        &self,
        node: &'a Node,
        inputs: &[Argument],
        transposed: bool,
    ) -> Result<Dense<'a>> {
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
}

pub(super) fn out(node: &Node) -> &str {
    node.outputs()
        .first()
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

pub(super) fn pad_of(
    padding: &onnx_ir::node::padding::PaddingConfig2d,
    explicit: bool,
) -> Option<usize> {
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

pub(super) fn dims2(data: &TensorData) -> Option<[usize; 2]> {
    match dims_of(data).as_slice() {
        &[a, b] => Some([a, b]),
        _ => None,
    }
}
