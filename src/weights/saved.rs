//! The crate's own saved models: Burn's record (burnpack) beside a JSON card that says how to
//! rebuild and feed the model.
//!
//! A saved model `NAME` is two files, `NAME.bpk` and `NAME.json`, each written atomically. The
//! second load of an imported ONNX model is much faster this way.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;

use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::files::{save_atomic, write_atomic};
use crate::model::{ResNet, ResNetConfig};

/// What a saved model needs besides its weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelCard {
    /// How to build the module.
    pub config: ResNetConfig,
    /// The preprocessing its weights want.
    pub preprocess: Preprocess,
    /// The square input side it was trained or exported at.
    pub input_size: usize,
    /// Class names in label order (empty when unknown).
    pub class_names: Vec<String>,
    /// Where the weights came from.
    pub source: String,
}

/// A model with its card.
#[derive(Debug, Clone)]
pub struct SavedModel {
    /// The module.
    pub model: ResNet,
    /// How to use it.
    pub card: ModelCard,
}

fn record_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadFormat {
        path: path.to_path_buf(),
        reason: format!("not a readable model record: {e}"),
    }
}

/// The `.bpk` and `.json` paths of a saved model named by `path` (with or without an ending).
pub fn saved_paths(path: &Path) -> (PathBuf, PathBuf) {
    let stem = match path.extension().and_then(|e| e.to_str()) {
        Some("bpk" | "json") => path.with_extension(""),
        _ => path.to_path_buf(),
    };
    (stem.with_extension("bpk"), stem.with_extension("json"))
}

impl SavedModel {
    /// Saves to `path.bpk` and `path.json`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (bpk, json) = saved_paths(path);
        save_atomic(&bpk, |tmp| {
            self.model
                .clone()
                .into_record()
                .save(tmp)
                .map_err(|e| record_error(&bpk, e))
        })?;
        let card = serde_json::to_vec_pretty(&self.card).expect("a card serializes");
        write_atomic(&json, &card)
    }

    /// Loads a model saved by [`save`](Self::save), from `NAME`, `NAME.bpk` or `NAME.json`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (bpk, json) = saved_paths(path);
        let text = std::fs::read(&json).map_err(|e| Error::io(&json, e))?;
        let card: ModelCard = serde_json::from_slice(&text).map_err(|e| Error::BadFormat {
            path: json.clone(),
            reason: format!("not a model card: {e}"),
        })?;
        let record = ModuleRecord::load(&bpk).map_err(|e| record_error(&bpk, e))?;
        let model = card
            .config
            .init(device)?
            .try_load_record(record)
            .map_err(|e| record_error(&bpk, e))?;
        Ok(Self { model, card })
    }
}
