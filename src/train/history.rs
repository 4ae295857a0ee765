//! [`History`]: per-epoch figures, the unfreeze point and the jump.

use std::path::Path;

use crate::error::Result;
use crate::files::write_atomic;

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1, over both phases.
    pub epoch: usize,
    /// 1 (head only) or 2 (released backbone).
    pub phase: u8,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (0 to 1), with dropout active.
    pub train_accuracy: f64,
    /// Validation loss; `None` in a run without validation images (nothing was measured).
    pub valid_loss: Option<f64>,
    /// Validation accuracy (0 to 1); `None` in a run without validation images.
    pub valid_accuracy: Option<f64>,
    /// Validation top-5 accuracy, for models of more than five classes.
    #[serde(default)]
    pub valid_top5: Option<f64>,
    /// Validation macro F1 ([`Evaluation::macro_f1`](crate::train::Evaluation::macro_f1)).
    #[serde(default)]
    pub valid_f1: Option<f64>,
    /// Each class's validation images, recall, precision and F1
    /// ([`Evaluation::class_scores`](crate::train::Evaluation::class_scores)); empty without
    /// validation (and in histories written before it was kept).
    #[serde(default)]
    pub valid_classes: Vec<crate::train::ClassScores>,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
    /// Whether phase 1 ran on cached backbone features.
    pub cached_features: bool,
    /// In phase 2, the first stage trainable in the epoch (stages from it to 4 were; 1 means
    /// the stem too): [`Unfreeze::first_stage`](crate::train::Unfreeze::first_stage). `None`
    /// in phase 1 and in histories written before it was kept.
    #[serde(default)]
    pub released_from: Option<usize>,
}

/// Every epoch of a run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// The epochs, in order.
    pub epochs: Vec<EpochRecord>,
    /// Epochs (from 1) whose weights early stopping restored at the end of their phase
    /// (`restore_best_weights`), one per phase at most.
    #[serde(default)]
    pub restored: Vec<usize>,
}

impl History {
    /// The first epoch of phase 2 (1-based), if phase 2 ran.
    pub fn unfreeze_epoch(&self) -> Option<usize> {
        self.epochs.iter().find(|e| e.phase == 2).map(|e| e.epoch)
    }

    /// Gradual unfreezing's later releases ([`Unfreeze::Gradual`](crate::train::Unfreeze)):
    /// each phase-2 epoch (from 1) that trained more of the backbone than the epoch before,
    /// with its first trainable stage. The unfreeze point itself is not among them.
    pub fn releases(&self) -> Vec<(usize, usize)> {
        let phase2: Vec<&EpochRecord> = self.epochs.iter().filter(|e| e.phase == 2).collect();
        phase2
            .windows(2)
            .filter_map(|w| match (w[0].released_from, w[1].released_from) {
                (Some(a), Some(b)) if b < a => Some((w[1].epoch, b)),
                _ => None,
            })
            .collect()
    }

    /// The phase-1 epoch whose weights phase 2 started from: the one early stopping restored at
    /// the end of phase 1 (`restore_best_weights`), else the last phase-1 epoch. `None` before
    /// phase 1 ran.
    pub fn phase2_start(&self) -> Option<&EpochRecord> {
        let restored = self
            .epochs
            .iter()
            .find(|e| e.phase == 1 && self.restored.contains(&e.epoch));
        restored.or_else(|| self.epochs.iter().rev().find(|e| e.phase == 1))
    }

    /// The jump: the first phase-2 epoch's validation accuracy minus that of the weights phase 2
    /// started from ([`phase2_start`](Self::phase2_start): after early stopping, the restored
    /// epoch, not the last one run). `None` unless both phases ran with validation.
    pub fn jump(&self) -> Option<f64> {
        let from = self.phase2_start()?.valid_accuracy?;
        let first2 = self.epochs.iter().find(|e| e.phase == 2)?;
        Some(first2.valid_accuracy? - from)
    }

    /// Why a run that reached phase 2 has no [`jump`](Self::jump): no phase-1 epoch to measure
    /// it from, or no validation images; `None` where there is a jump or no phase 2.
    pub fn why_no_jump(&self) -> Option<&'static str> {
        if self.jump().is_some() || self.unfreeze_epoch().is_none() {
            return None;
        }
        Some(if self.phase2_start().is_none() {
            "no phase-1 epoch ran to measure it from"
        } else {
            "no validation images"
        })
    }

    /// Whether the run was validated (its epochs have validation figures).
    pub fn validated(&self) -> bool {
        self.epochs.iter().any(|e| e.valid_loss.is_some())
    }

    /// The epochs as CSV, with a header line; a figure not measured (no validation) is empty.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "epoch,phase,lr,train_loss,train_accuracy,valid_loss,valid_accuracy,valid_top5,valid_f1,seconds,cached_features,released_from\n",
        );
        let figure = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for e in &self.epochs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{:.3},{},{}\n",
                e.epoch,
                e.phase,
                e.lr,
                e.train_loss,
                e.train_accuracy,
                figure(e.valid_loss),
                figure(e.valid_accuracy),
                figure(e.valid_top5),
                figure(e.valid_f1),
                e.seconds,
                e.cached_features,
                e.released_from.map_or(String::new(), |s| s.to_string()),
            ));
        }
        out
    }

    /// Writes `history.json` and `history.csv` into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("history serializes");
        write_atomic(&dir.join("history.json"), &json)?;
        write_atomic(&dir.join("history.csv"), self.to_csv().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, phase: u8, acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            phase,
            lr: 1e-3,
            train_loss: 1.0,
            train_accuracy: acc,
            valid_loss: Some(1.0),
            valid_accuracy: Some(acc),
            seconds: 1.0,
            cached_features: phase == 1,
            released_from: (phase == 2).then_some(1),
            valid_top5: None,
            valid_f1: None,
            valid_classes: Vec::new(),
        }
    }

    #[test]
    fn jump_and_unfreeze_point() {
        let h = History {
            epochs: vec![
                record(1, 1, 0.3),
                record(2, 1, 0.4),
                record(3, 2, 0.55),
                record(4, 2, 0.6),
            ],
            restored: Vec::new(),
        };
        assert_eq!(h.unfreeze_epoch(), Some(3));
        assert!((h.jump().unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(h.to_csv().lines().count(), 5);
        assert_eq!(History::default().jump(), None);
    }

    /// Phase 1 stopped early at epoch 4 and restored epoch 2; phase 2 then ran as epochs 6 and
    /// 7 of the plan. The jump starts from epoch 2's accuracy, the weights phase 2 started from.
    #[test]
    fn after_early_stopping_the_jump_starts_from_the_restored_epoch() {
        let h = History {
            epochs: vec![
                record(1, 1, 0.3),
                record(2, 1, 0.5),
                record(3, 1, 0.4),
                record(4, 1, 0.35),
                record(6, 2, 0.7),
                record(7, 2, 0.75),
            ],
            restored: vec![2],
        };
        assert_eq!(h.unfreeze_epoch(), Some(6));
        assert_eq!(h.phase2_start().unwrap().epoch, 2);
        assert!((h.jump().unwrap() - 0.2).abs() < 1e-12, "{:?}", h.jump());
    }

    #[test]
    fn without_validation_nothing_is_reported() {
        let mut h = History {
            epochs: vec![record(1, 1, 0.3), record(2, 2, 0.5)],
            restored: Vec::new(),
        };
        for e in &mut h.epochs {
            (e.valid_loss, e.valid_accuracy) = (None, None);
        }
        assert!(!h.validated());
        assert_eq!(h.jump(), None);
        let csv = h.to_csv();
        assert!(csv.lines().nth(1).unwrap().contains(",,,"), "{csv}");
    }
}
