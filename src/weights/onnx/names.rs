//! The file's own names for onnx-ir's nodes and tensors, so that an error names what the user
//! sees in Netron or `onnx.load`.
//!
//! onnx-ir 0.22 renames every node to its type and a counter per type (`conv2d3`,
//! `batchnormalization7`) and every node output to `{node}_out{k}`, and keeps no map back. The
//! counters follow the file's node order, so the map is rebuilt by numbering the file's nodes the
//! way it does: the operator's type, with the kernel's dimensions for convolutions and pools
//! (`Conv` with a 2-D kernel is `conv2d`), Gemm and MatMul become `linear` where onnx-ir turns
//! them into one (taking a second number), and the Add a MatMul absorbs as its bias gets none.
//! A name is only translated when the node found has the operator onnx-ir's node has; anything
//! else keeps onnx-ir's name.

use std::collections::HashMap;
use std::str::FromStr;

use onnx_ir::{AttributeType, GraphProto, NodeProto, NodeType};

/// onnx-ir's node and tensor names, mapped to the file's.
#[derive(Debug, Default)]
pub(super) struct FileNames {
    /// onnx-ir's node name to (the file's node name, its operator).
    nodes: HashMap<String, (String, String)>,
    /// onnx-ir's tensor names (`{node}_out{k}`) to the file's.
    tensors: HashMap<String, String>,
}

impl FileNames {
    /// Numbers the nodes of `graph` as onnx-ir does.
    pub(super) fn new(graph: &GraphProto) -> Self {
        let ranks: HashMap<&str, usize> = (graph.initializer.iter())
            .map(|t| (t.name.as_str(), t.dims.len()))
            .collect();
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut number = |ty: &str| {
            let ty = ty.to_lowercase();
            let count = counters.entry(ty.clone()).or_default();
            *count += 1;
            format!("{ty}{count}")
        };
        let mut names = FileNames::default();
        let nodes = &graph.node;
        let mut i = 0;
        while i < nodes.len() {
            let node = &nodes[i];
            i += 1;
            let standard = node.domain.is_empty() || node.domain == "ai.onnx";
            let known = standard && NodeType::from_str(&node.op_type).is_ok();
            let ty = if known {
                node.op_type.clone()
            } else {
                "Custom".to_string()
            };
            // Constants are numbered after the initializers onnx-ir turns into constants too;
            // they are never where a ResNet match fails, so they keep onnx-ir's names.
            if ty == "Constant" {
                number(&ty);
                continue;
            }
            let Some((renamed, with_next)) =
                onnx_ir_name(&ty, node, nodes.get(i), &ranks, &mut number)
            else {
                // onnx-ir refuses such a node: nothing to translate.
                continue;
            };
            if with_next {
                i += 1;
            }
            names.record(renamed, node, i);
        }
        names
    }

    /// Records the file's names of a node onnx-ir calls `renamed` (the `i`-th node read) and of
    /// its outputs.
    fn record(&mut self, renamed: String, node: &NodeProto, i: usize) {
        for (k, output) in node.output.iter().enumerate() {
            self.tensors
                .insert(format!("{renamed}_out{}", k + 1), output.clone());
        }
        let shown = if node.name.is_empty() {
            match node.output.first() {
                Some(output) => format!("(unnamed, output `{output}`)"),
                None => format!("(unnamed, node {} of the graph)", i),
            }
        } else {
            node.name.clone()
        };
        self.nodes.insert(renamed, (shown, node.op_type.clone()));
    }

    /// The file's name for onnx-ir's node `name` of type `ty`, or `name` itself when the node
    /// found there is not of that type.
    pub(super) fn node(&self, name: &str, ty: &NodeType) -> String {
        let ty = ty.to_string().to_lowercase();
        match self.nodes.get(name) {
            Some((file, op))
                if ty.starts_with(&op.to_lowercase())
                    || (ty == "linear" && matches!(op.as_str(), "Gemm" | "MatMul")) =>
            {
                file.clone()
            }
            _ => name.to_string(),
        }
    }

    /// The file's name for onnx-ir's tensor `name` (graph inputs keep theirs).
    pub(super) fn tensor(&self, name: &str) -> String {
        self.tensors
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

/// The name onnx-ir gives a node of type `ty` (`number` counts each type as onnx-ir does), and
/// whether it takes in the `next` node too (a MatMul's bias Add, which becomes its Linear's
/// bias); `None` for a convolution or pool whose kernel rank cannot be read, which onnx-ir
/// refuses.
fn onnx_ir_name(
    ty: &str,
    node: &NodeProto,
    next: Option<&NodeProto>,
    ranks: &HashMap<&str, usize>,
    number: &mut impl FnMut(&str) -> String,
) -> Option<(String, bool)> {
    Some(match ty {
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool" => {
            let d = kernel_dims(node, ranks)?;
            (number(&format!("{ty}{d}d")), false)
        }
        "Gemm" => {
            let gemm = number("Gemm");
            if straight_linear(node) {
                (number("Linear"), false)
            } else {
                (gemm, false)
            }
        }
        "MatMul" => {
            let matmul = number("MatMul");
            let weight = node.input.get(1).and_then(|w| ranks.get(w.as_str()));
            if node.input.len() == 2 && weight == Some(&2) {
                // The Add right after it that adds a constant vector to its output becomes the
                // Linear's bias.
                let bias = next.is_some_and(|add| {
                    add.op_type == "Add"
                        && add.input.len() == 2
                        && node.output.first().is_some_and(|o| add.input.contains(o))
                        && add.input.iter().any(|a| ranks.get(a.as_str()) == Some(&1))
                });
                (number("Linear"), bias)
            } else {
                (matmul, false)
            }
        }
        _ => (number(ty), false),
    })
}

/// The spatial dimensions of a convolution's or pool's kernel: its `kernel_shape` attribute,
/// else its weight's rank less 2 (as onnx-ir reads it).
fn kernel_dims(node: &NodeProto, ranks: &HashMap<&str, usize>) -> Option<usize> {
    if let Some(attr) = node.attribute.iter().find(|a| a.name == "kernel_shape") {
        return Some(attr.ints.len());
    }
    if matches!(node.op_type.as_str(), "Conv" | "ConvTranspose") {
        let weight = node.input.get(1)?;
        return ranks.get(weight.as_str())?.checked_sub(2);
    }
    None
}

/// onnx-ir's test for a Gemm it turns into a Linear: alpha and beta 1, transB 1, all given,
/// and transA not 1.
fn straight_linear(node: &NodeProto) -> bool {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let float_is = |name: &str, v: f32| {
        attr(name).is_some_and(|a| a.type_.enum_value() == Ok(AttributeType::FLOAT) && a.f == v)
    };
    let int_is = |name: &str, v: i64| {
        attr(name).is_some_and(|a| a.type_.enum_value() == Ok(AttributeType::INT) && a.i == v)
    };
    !int_is("transA", 1) && float_is("alpha", 1.0) && float_is("beta", 1.0) && int_is("transB", 1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use onnx_ir::{Message, ModelProto};

    use super::*;

    /// Every node onnx-ir reads from real exports (torch's two exporters, BatchNorm kept and
    /// folded, Keras through tf2onnx, Hugging Face's, the Model Zoo's) maps to a node the file
    /// has, of the operator onnx-ir's node has, and no two onnx-ir nodes to the same one.
    #[test]
    fn onnx_irs_nodes_map_to_the_files_nodes_of_their_operator() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
        for file in [
            "torch-bn.onnx",
            "torch-folded.onnx",
            "torch-dynamo.onnx",
            "keras.onnx",
            "hf-resnet.onnx",
            "zoo-v1.onnx",
            "zoo-v2.onnx",
        ] {
            let path = fixtures.join(file);
            let proto = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
            let names = FileNames::new(&proto.graph);
            let ops: HashMap<&str, &str> = (proto.graph.node.iter())
                .map(|n| (n.name.as_str(), n.op_type.as_str()))
                .collect();
            let graph = onnx_ir::OnnxGraphBuilder::new().parse_file(&path).unwrap();
            let mut seen = HashSet::new();
            let mut translated = 0;
            for node in &graph.nodes {
                let ty = node.node_type();
                let file_name = names.node(node.name(), &ty);
                if file_name == node.name() {
                    continue; // Kept: a constant, or a node whose operator differs.
                }
                translated += 1;
                assert!(
                    seen.insert(file_name.clone()),
                    "{file}: `{file_name}` twice"
                );
                if let Some(op) = ops.get(file_name.as_str()) {
                    let ty = ty.to_string().to_lowercase();
                    let agrees = ty.starts_with(&op.to_lowercase())
                        || (ty == "linear" && matches!(*op, "Gemm" | "MatMul"));
                    assert!(
                        agrees,
                        "{file}: {} ({ty}) named `{file_name}`, a {op}",
                        node.name()
                    );
                } else {
                    assert!(file_name.starts_with("(unnamed"), "{file}: `{file_name}`");
                }
            }
            let convs = (proto.graph.node.iter())
                .filter(|n| n.op_type == "Conv")
                .count();
            assert!(
                translated >= convs,
                "{file}: {translated} of {convs} convolutions named"
            );
        }
    }
}
