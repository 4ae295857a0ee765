//! Checkpoints of a two-phase run: the weights, the optimizer and what resuming needs besides
//! (the epoch, the phase, the history, early stopping's and the schedule's state), written so
//! that a kill at any moment leaves a complete checkpoint behind.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;

use crate::error::{Error, Result};
use crate::files::{save_atomic, write_atomic};
use crate::model::ResNet;
use crate::train::history::History;

/// What checkpoints remember besides the weights.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CheckpointState {
    /// The next epoch to run (0-based over both phases).
    pub(crate) next_epoch: usize,
    /// Whether the backbone was already released.
    pub(crate) unfrozen: bool,
    pub(crate) history: History,
    pub(crate) model_file: String,
    pub(crate) optimizer_file: Option<String>,
    /// Early stopping's and the schedule's state within the current phase.
    #[serde(default)]
    pub(crate) progress: PhaseProgress,
    /// The epochs of phase 1 and phase 2 the run plans now: its recipe's, or more given on a
    /// resume (the recipe itself, `config.json`, is never rewritten). `None` in checkpoints
    /// written before it was kept.
    #[serde(default)]
    pub(crate) plan: Option<[usize; 2]>,
}

/// What early stopping and reduce-on-plateau know of the current phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PhaseProgress {
    /// The phase's best validation loss so far and the epoch (from 1) that reached it.
    pub(crate) best: Option<(f64, usize)>,
    /// The checkpoint file holding the best epoch's weights, kept while early stopping may
    /// restore them.
    pub(crate) best_model_file: Option<String>,
    /// What the reduce-on-plateau schedule multiplies the phase's rate by.
    pub(crate) lr_scale: f64,
    /// Epochs without a better validation loss since the rate last dropped.
    pub(crate) plateau_wait: usize,
}

impl Default for PhaseProgress {
    fn default() -> Self {
        Self {
            best: None,
            best_model_file: None,
            lr_scale: 1.0,
            plateau_wait: 0,
        }
    }
}

pub(crate) fn record_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadFormat {
        path: path.to_path_buf(),
        reason: format!("checkpoint: {e}"),
    }
}

/// The checkpoint folder of a run.
pub(crate) struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// Checkpoints in `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `model` with the weights of the checkpoint file `file`.
    pub(crate) fn load_model(&self, model: ResNet, file: &str) -> Result<ResNet> {
        let path = self.dir.join(file);
        let record = ModuleRecord::load(&path).map_err(|e| record_error(&path, e))?;
        model
            .try_load_record(record)
            .map_err(|e| record_error(&path, e))
    }

    /// `optim` with the state of the checkpoint file `file`.
    pub(crate) fn load_optimizer(
        &self,
        optim: ModuleOptimizer,
        file: &str,
    ) -> Result<ModuleOptimizer> {
        let path = self.dir.join(file);
        optim.load(&path).map_err(|e| record_error(&path, e))
    }

    /// The last checkpoint's state, if there is one.
    pub(crate) fn read(&self) -> Result<Option<CheckpointState>> {
        let path = self.dir.join("state.json");
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::BadFormat {
                path,
                reason: format!("not a checkpoint state: {e}"),
            })
    }

    /// The files a checkpoint state needs: its model, optimizer and best epoch's weights.
    fn files_of(state: &CheckpointState) -> Vec<String> {
        std::iter::once(state.model_file.clone())
            .chain(state.optimizer_file.clone())
            .chain(state.progress.best_model_file.clone())
            .collect()
    }

    /// Writes the epoch's model and optimizer under new names, then `state.json` (the commit
    /// point, atomic), then removes the previous checkpoint's files that the new one does not
    /// need.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write(
        &self,
        model: &ResNet,
        optim: &ModuleOptimizer,
        next_epoch: usize,
        unfrozen: bool,
        history: &History,
        progress: &PhaseProgress,
        plan: [usize; 2],
    ) -> Result<()> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let previous = self.read()?;
        let model_file = model_file(next_epoch);
        let optimizer_file = format!("optimizer-e{next_epoch}.bpk");
        let path = dir.join(&model_file);
        save_atomic(&path, |p| {
            model
                .clone()
                .into_record()
                .save(p)
                .map_err(|e| record_error(&path, e))
        })?;
        let path = dir.join(&optimizer_file);
        save_atomic(&path, |p| optim.save(p).map_err(|e| record_error(&path, e)))?;
        let state = CheckpointState {
            next_epoch,
            unfrozen,
            history: history.clone(),
            model_file,
            optimizer_file: Some(optimizer_file),
            progress: progress.clone(),
            plan: Some(plan),
        };
        write_atomic(
            &dir.join("state.json"),
            &serde_json::to_vec_pretty(&state).expect("serializes"),
        )?;
        if let Some(old) = previous {
            let keep = Self::files_of(&state);
            for file in Self::files_of(&old) {
                if !keep.contains(&file) {
                    let _ = std::fs::remove_file(dir.join(file));
                }
            }
        }
        Ok(())
    }
}

/// The checkpoint file of the model after `epoch` epochs.
pub(crate) fn model_file(epoch: usize) -> String {
    format!("model-e{epoch}.bpk")
}
