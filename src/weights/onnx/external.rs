//! Weights stored beside the graph: ONNX's external data.
//!
//! `torch.onnx.export` with its defaults (the dynamo exporter, torch 2.9 and later) writes a small
//! graph file and the weights to `NAME.onnx.data` beside it; each initializer names its file
//! (`location`, relative to the model's folder), `offset` and `length`. onnx-ir reads them given
//! the model's path; this module checks them first, so that a missing or short data file, or a
//! location outside the model's folder, is an [`Error::ExternalData`] naming the tensor and the
//! file rather than a parser message.

use std::path::{Component, Path, PathBuf};

use onnx_ir::{GraphProto, TensorProto};

use crate::error::{Error, Result};

/// Checks every initializer of `graph` that lives in external data, for the model file `model`.
pub(super) fn check(model: &Path, graph: &GraphProto) -> Result<()> {
    let folder = model.parent().unwrap_or(Path::new("."));
    graph
        .initializer
        .iter()
        .filter(|t| !t.external_data.is_empty())
        .try_for_each(|tensor| check_tensor(model, folder, tensor))
}

fn check_tensor(model: &Path, folder: &Path, tensor: &TensorProto) -> Result<()> {
    let entry = |key: &str| {
        (tensor.external_data.iter())
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
    };
    let location = PathBuf::from(entry("location").unwrap_or_default());
    let fail = |reason: String| Error::ExternalData {
        model: model.to_path_buf(),
        tensor: tensor.name.clone(),
        location: location.clone(),
        reason,
    };
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| fail(format!("has `{key}` {v:?}, not a byte count")))
            })
            .transpose()
    };
    if location.as_os_str().is_empty() {
        return Err(fail("has no `location`".into()));
    }
    let escapes = location.is_absolute()
        || (location.components()).any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    let outside = || {
        fail(format!(
            "points outside the model's folder {} (a model's data must lie in its folder)",
            folder.display()
        ))
    };
    if escapes {
        return Err(outside());
    }
    let file = folder.join(&location);
    let len = match std::fs::metadata(&file) {
        Ok(meta) => meta.len(),
        Err(e) => {
            return Err(fail(format!(
                "cannot be read at {}: {e}; keep the data file beside the model under the name \
                 the model gives it",
                file.display()
            )));
        }
    };
    // A link inside the folder may still lead out of it.
    if let (Ok(base), Ok(real)) = (folder.canonicalize(), file.canonicalize())
        && !real.starts_with(base)
    {
        return Err(outside());
    }
    let offset = number("offset")?.unwrap_or(0);
    let needed = number("length")?.or_else(|| implied_length(tensor));
    if let Some(needed) = needed {
        let end = offset.saturating_add(needed);
        if end > len {
            return Err(fail(format!(
                "is too short: {} holds {len} bytes, the tensor needs bytes {offset}..{end} \
                 (a partial copy or download?)",
                file.display()
            )));
        }
    }
    Ok(())
}

/// The bytes a tensor's shape and type imply, for the types a ResNet's weights use.
fn implied_length(tensor: &TensorProto) -> Option<u64> {
    let element = match tensor.data_type {
        2 | 3 | 9 => 1,       // uint8, int8, bool
        4 | 5 | 10 | 16 => 2, // uint16, int16, float16, bfloat16
        1 | 6 | 12 => 4,      // float, int32, uint32
        7 | 11 | 13 => 8,     // int64, double, uint64
        _ => return None,
    };
    (tensor.dims.iter()).try_fold(element, |n: u64, &d| n.checked_mul(u64::try_from(d).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x3 float tensor stored at `location`, with the given entries.
    fn graph(entries: &[(&str, &str)]) -> GraphProto {
        let mut t = TensorProto::new();
        t.name = "conv1.weight".into();
        t.data_type = 1;
        t.dims = vec![2, 3];
        for (key, value) in entries {
            t.external_data.push(Default::default());
            let entry = t.external_data.last_mut().unwrap();
            entry.key = key.to_string();
            entry.value = value.to_string();
        }
        let mut graph = GraphProto::new();
        graph.initializer.push(t);
        graph
    }

    fn reason(model: &Path, entries: &[(&str, &str)]) -> String {
        match check(model, &graph(entries)) {
            Err(Error::ExternalData { tensor, reason, .. }) => {
                assert_eq!(tensor, "conv1.weight");
                reason
            }
            other => panic!("expected an external-data error, got {other:?}"),
        }
    }

    #[test]
    fn data_beside_the_model_passes_and_every_fault_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(dir.path().join("m.onnx.data"), [0u8; 32]).unwrap();
        check(&model, &graph(&[("location", "m.onnx.data")])).unwrap();
        check(
            &model,
            &graph(&[("location", "m.onnx.data"), ("offset", "8")]),
        )
        .unwrap();

        let short = reason(&model, &[("location", "m.onnx.data"), ("offset", "16")]);
        assert!(
            short.contains("too short") && short.contains("16..40"),
            "{short}"
        );
        let short = reason(&model, &[("location", "m.onnx.data"), ("length", "64")]);
        assert!(short.contains("holds 32 bytes"), "{short}");
        let missing = reason(&model, &[("location", "gone.data")]);
        assert!(missing.contains("gone.data"), "{missing}");
        for escape in ["../../etc/passwd", "/etc/passwd", "sub/../../x"] {
            let outside = reason(&model, &[("location", escape)]);
            assert!(
                outside.contains("outside the model's folder"),
                "{escape}: {outside}"
            );
        }
        let bad = reason(&model, &[("location", "m.onnx.data"), ("offset", "-1")]);
        assert!(bad.contains("offset"), "{bad}");
        assert!(reason(&model, &[("offset", "0")]).contains("no `location`"));
    }

    #[cfg(unix)]
    #[test]
    fn a_link_out_of_the_folder_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), [0u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("w.data"))
            .unwrap();
        let found = reason(&dir.path().join("m.onnx"), &[("location", "w.data")]);
        assert!(found.contains("outside"), "{found}");
    }
}
