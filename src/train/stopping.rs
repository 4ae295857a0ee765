//! Early stopping and reduce-on-plateau, within a phase, on validation loss (burn-train keeps
//! its `EarlyStoppingStrategy` apart from the learner for the same reason: the rule reads the
//! history, not the model). Their state, [`PhaseProgress`], is in the checkpoint, so a resumed
//! run stops and lowers its rate exactly as an uninterrupted one does.

use crate::train::checkpoint::PhaseProgress;
use crate::train::config::{Schedule, TwoPhaseConfig};

/// What one epoch's validation loss means for its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The loss is the phase's best so far: its weights may be restored later.
    pub(crate) improved: bool,
    /// The plateau schedule has just lowered the rate.
    pub(crate) lowered_rate: bool,
    /// Early stopping ends the phase here.
    pub(crate) stop: bool,
    /// The phase's best epoch (from 1): this one where nothing was measured yet.
    pub(crate) best_epoch: usize,
}

impl PhaseProgress {
    /// Takes the validation loss of `epoch` (from 1). A NaN or infinite loss is never an
    /// improvement (and never a checkpoint's best); without validation nothing improves or
    /// waits (early stopping and the plateau schedule are refused then).
    pub(crate) fn observe(
        &mut self,
        valid_loss: Option<f64>,
        epoch: usize,
        config: &TwoPhaseConfig,
    ) -> Verdict {
        let improved = valid_loss
            .filter(|l| l.is_finite())
            .filter(|&l| self.best.is_none_or(|(best, _)| l < best));
        let mut lowered_rate = false;
        if let Some(loss) = improved {
            self.best = Some((loss, epoch));
            self.plateau_wait = 0;
        } else if valid_loss.is_some() {
            self.plateau_wait += 1;
            if config.schedule == Schedule::Plateau && self.plateau_wait >= config.plateau_patience
            {
                self.lr_scale *= config.plateau_factor;
                self.plateau_wait = 0;
                lowered_rate = true;
            }
        }
        let best_epoch = self.best.map_or(epoch, |(_, e)| e);
        Verdict {
            improved: improved.is_some(),
            lowered_rate,
            stop: config.patience.is_some_and(|p| epoch - best_epoch >= p),
            best_epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keras's `EarlyStopping(patience=2)` and `ReduceLROnPlateau(factor=0.1, patience=2)` on
    /// the same losses: the best epoch, the waits, the drop and the stop.
    #[test]
    fn stops_and_lowers_the_rate_as_keras_does() {
        let config = TwoPhaseConfig::new()
            .with_patience(Some(3))
            .with_schedule(Schedule::Plateau)
            .with_plateau_patience(2)
            .with_plateau_factor(0.1);
        let mut progress = PhaseProgress::default();
        let losses = [1.0, 0.8, f64::NAN, 0.9, 0.85];
        let verdicts: Vec<Verdict> = (losses.iter().enumerate())
            .map(|(i, &l)| progress.observe(Some(l), i + 1, &config))
            .collect();
        assert_eq!(
            verdicts.iter().map(|v| v.improved).collect::<Vec<_>>(),
            [true, true, false, false, false]
        );
        assert!(verdicts[3].lowered_rate && !verdicts[4].lowered_rate);
        assert!((progress.lr_scale - 0.1).abs() < 1e-12);
        assert_eq!(verdicts[4].best_epoch, 2);
        assert!(!verdicts[3].stop && verdicts[4].stop);
    }

    #[test]
    fn without_validation_nothing_improves_or_waits() {
        let config = TwoPhaseConfig::new();
        let mut progress = PhaseProgress::default();
        let verdict = progress.observe(None, 4, &config);
        assert!(!verdict.improved && !verdict.stop && !verdict.lowered_rate);
        assert_eq!((verdict.best_epoch, progress.plateau_wait), (4, 0));
    }
}
