//! Weights: the catalog of known ImageNet weights, import from ONNX, and the crate's own saved
//! models.

pub mod catalog;
mod onnx;
mod saved;

pub use catalog::{CATALOG, WeightsEntry};
pub use onnx::{Imported, InputLayout, describe, import_onnx, parity_input};
pub use saved::{ModelCard, SavedModel, saved_paths};

use std::path::Path;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Loads a model from an ONNX file, a saved model (`NAME`, `NAME.bpk`, `NAME.json`), or a run
/// folder holding `model.bpk`. An ONNX model's card says what the import detected.
pub fn load(path: &Path, device: &Device) -> Result<SavedModel> {
    if path.extension().and_then(|e| e.to_str()) == Some("onnx") {
        let imported = import_onnx(path, device)?;
        let card = ModelCard {
            config: imported.config.clone(),
            preprocess: imported.preprocess,
            input_size: imported.input_size.unwrap_or(224),
            class_names: Vec::new(),
            source: path.display().to_string(),
        };
        return Ok(SavedModel {
            model: imported.model,
            card,
        });
    }
    let path = if path.is_dir() {
        path.join("model")
    } else {
        path.to_path_buf()
    };
    let (bpk, _) = saved_paths(&path);
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
