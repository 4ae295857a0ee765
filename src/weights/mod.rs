//! Weights: the catalog of known ImageNet weights, import from ONNX, and the crate's own saved
//! models.

pub mod catalog;
mod export;
mod onnx;
mod saved;

pub use catalog::{CATALOG, WeightsEntry};
pub use export::{CARD_KEY, ExportBatchNorm, ExportOptions, encode_onnx, export_onnx};
pub use onnx::{Imported, InputLayout, describe, import_onnx, parity_input};
pub use saved::{ModelCard, SavedModel, saved_paths};

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Resolves what a user names as weights: an existing file or folder is taken as it is; otherwise
/// `name_or_path` must be a [`catalog`] name, whose file is looked for in `./weights` and the
/// cache folder ([`catalog::weights_dir`]) and, when `download` is set and the entry is published
/// online, downloaded there with its checksum checked. Offline, the error says which file to put
/// where; an unknown name, which names there are.
///
/// ```
/// use resnet_transfer::weights;
///
/// let err = weights::resolve("no-such-weights", false, false).unwrap_err();
/// assert!(err.to_string().contains("resnet50-v1-12"));
/// ```
pub fn resolve(name_or_path: &str, download: bool, progress: bool) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.exists() || saved_paths(path).0.is_file() {
        return Ok(path.to_path_buf());
    }
    let Some(entry) = catalog::entry(name_or_path) else {
        let names: Vec<&str> = CATALOG.iter().map(|e| e.name).collect();
        return Err(Error::NotFound {
            what: format!("weights `{name_or_path}`"),
            looked_in: "the file system and the catalog of known weights".into(),
            hint: format!(
                "Give an .onnx file, a saved model, a run folder, or one of: {}",
                names.join(", ")
            ),
        });
    };
    entry.locate(&[Path::new("weights")], download, progress)
}

/// [`resolve`]s `name_or_path`, then [`load`]s it: what every example does with `--weights`.
pub fn load_named(
    name_or_path: &str,
    device: &Device,
    download: bool,
    progress: bool,
) -> Result<SavedModel> {
    load(&resolve(name_or_path, download, progress)?, device)
}

/// Loads a model from an ONNX file, a saved model (`NAME`, `NAME.bpk`, `NAME.json`), or a run
/// folder holding `model.bpk`. An ONNX model's card says what the import detected.
pub fn load(path: &Path, device: &Device) -> Result<SavedModel> {
    if path.extension().and_then(|e| e.to_str()) == Some("onnx") {
        let imported = import_onnx(path, device)?;
        let card = imported.model_card(path);
        return Ok(SavedModel {
            model: imported.model,
            card,
        });
    }
    if path.join("saved_model.pb").is_file() {
        return Err(Error::BadFormat {
            path: path.to_path_buf(),
            reason: "a TensorFlow SavedModel, which this crate does not read: convert it to \
                     ONNX first (`python -m tf2onnx.convert --saved-model DIR --output \
                     model.onnx`) and give the .onnx file"
                .into(),
        });
    }
    let path = if path.is_dir() {
        path.join("model")
    } else {
        path.to_path_buf()
    };
    let (bpk, _) = saved_paths(&path);
    let run = path.parent().unwrap_or(Path::new("."));
    if !bpk.is_file() && run.join("checkpoint").join("state.json").is_file() {
        return Err(Error::NotFound {
            what: "a trained model".into(),
            looked_in: path.display().to_string(),
            hint: format!(
                "{} holds a run that has not finished (it has a checkpoint, no model yet): \
                 if it was interrupted, continue it with --resume and the options it was \
                 started with; if it stopped on an error (a loss that was not a number), train \
                 again into another --out, with a lower rate",
                run.display()
            ),
        });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let graph = name.as_deref().and_then(|n| n.strip_suffix(".data"));
    if let Some(graph) = graph.filter(|g| g.ends_with(".onnx") && path.is_file()) {
        return Err(Error::BadFormat {
            path: path.to_path_buf(),
            reason: format!(
                "the external data of an ONNX file (the weights `torch.onnx.export` writes \
                 beside the graph), not a model: give {graph}, which reads this file"
            ),
        });
    }
    if !bpk.is_file() {
        return Err(Error::NotFound {
            what: "a model".into(),
            looked_in: path.display().to_string(),
            hint: "Give an .onnx file, a saved model (NAME.bpk with NAME.json) or a run folder"
                .into(),
        });
    }
    SavedModel::load(&path, device)
}

/// The 1000 ImageNet class names, in the order every ImageNet model's outputs use.
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("imagenet_classes.txt").lines().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights file `torch.onnx.export` writes beside the graph, given where the model is
    /// expected: a format error naming the .onnx file to give, not "a model not found".
    #[test]
    fn an_onnx_files_external_data_given_as_the_model_names_the_graph() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("resnet18.onnx.data");
        std::fs::write(&data, [0u8; 64]).unwrap();
        let device = crate::device::default_device().unwrap();
        let Err(err) = load(&data, &device) else {
            panic!("the external data was loaded as a model")
        };
        assert!(
            matches!(&err, Error::BadFormat { path, reason }
                if path == &data && reason.contains("give resnet18.onnx")),
            "{err}"
        );
    }
}
