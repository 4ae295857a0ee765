//! The recipe of a run: what it was started with, saved in its folder when it starts
//! (`config.json`: the [`TwoPhaseConfig`]; `job.json`: the [`JobRecipe`]), never rewritten, and
//! compared option by option when the run is resumed, so that a resumed run is the run that was
//! started and not a mix of two.
//!
//! A resume may change what does not decide the arithmetic: more epochs than planned (while
//! their phase has not ended, and not under the cosine or one-cycle schedule once it has begun, since its
//! rates follow the phase's length), the backend and devices (the machine, not the recipe), and
//! what happens around the run (progress, export, kept checkpoints).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::ImageSet;
use crate::error::{Error, RecipeChange, Result};
use crate::train::{
    CheckpointState, Checkpoints, OptimizerKind, Schedule, TwoPhaseConfig, Unfreeze,
};

/// What a run was started with besides its [`TwoPhaseConfig`]: the weights, the input size and
/// the images. Saved as `job.json` in the run folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecipe {
    /// The ImageNet weights: a catalog name as given, or the absolute path of a file or folder.
    pub weights: String,
    /// The square side the model sees.
    pub input_size: usize,
    /// The class names, in label order.
    pub class_names: Vec<String>,
    /// The options that chose the images ([`JobData::options`](super::JobData::options)), as
    /// (name, value).
    pub data: Vec<(String, String)>,
    /// The training images: their number and a digest of their pixels and labels.
    pub train_images: String,
    /// The validation images, as [`train_images`](Self::train_images).
    pub valid_images: String,
    /// The test images, as [`train_images`](Self::train_images).
    pub test_images: String,
    /// The backend the run started on (a resume may move to another: recorded, not compared).
    pub backend: String,
    /// The device indices the run started on (recorded, not compared, as the backend).
    pub devices: Vec<usize>,
}

/// A set's size and the start of the SHA-256 of its shape, labels and pixels (or, for a set
/// read from photo files, the files' contents, so that a set held in memory and the same files
/// streamed are one set): two sets with the same digest are the same images in the same order.
pub(crate) fn digest(set: &ImageSet) -> Result<String> {
    use rayon::prelude::*;
    let mut hash = Sha256::new();
    for n in [set.len(), set.height(), set.width()] {
        hash.update((n as u64).to_le_bytes());
    }
    for &label in set.labels() {
        hash.update((label as u64).to_le_bytes());
    }
    if set.files().len() == set.len() && !set.is_empty() {
        let files: Vec<[u8; 32]> = (set.files().par_iter())
            .map(|f| {
                let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
                Ok(Sha256::digest(&bytes).into())
            })
            .collect::<Result<_>>()?;
        files.iter().for_each(|f| hash.update(f));
    } else {
        hash.update(set.pixels());
    }
    let hex: String = hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{} images, sha256 {hex}", set.len()))
}

/// `value`, for a recipe that trains with SGD; "unused (optimizer adam)" otherwise.
fn sgd_only(c: &TwoPhaseConfig, value: String) -> String {
    match c.optimizer {
        OptimizerKind::Sgd => value,
        other => format!("unused (optimizer {other})"),
    }
}

/// `value`, for a recipe with the plateau schedule; "unused (schedule NAME)" otherwise.
fn plateau_only(c: &TwoPhaseConfig, value: String) -> String {
    match c.schedule {
        Schedule::Plateau => value,
        other => format!("unused (schedule {})", other.name()),
    }
}

/// A rate or factor as a user reads it: plain (`0.001`), or in exponent form outside 1e-4 to
/// 1e6 (`1e38`, where plain printing wrote 39 digits).
fn number(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// Every field of a [`TwoPhaseConfig`] but the epochs, by name, as a user reads it.
fn config_entries(c: &TwoPhaseConfig) -> Vec<(&'static str, String)> {
    let or_none = |v: Option<usize>| v.map_or("none".to_string(), |v| v.to_string());
    vec![
        ("phase1_lr", number(c.phase1_lr)),
        ("phase2_lr", number(c.phase2_lr)),
        (
            "unfreeze",
            match c.unfreeze {
                Unfreeze::All => "the whole backbone".to_string(),
                Unfreeze::FromStage(k) => format!("from stage {k}"),
                Unfreeze::Gradual(n) => format!("gradually, a stage every {n} epochs"),
            },
        ),
        ("stage_lr_decay", number(c.stage_lr_decay)),
        ("optimizer", c.optimizer.name().to_string()),
        // Momentum is SGD's alone: with another optimizer its value decides nothing.
        ("momentum", sgd_only(c, number(c.momentum))),
        ("nesterov", sgd_only(c, c.nesterov.to_string())),
        ("batch_size", c.batch_size.to_string()),
        ("seed", c.seed.to_string()),
        ("dropout", number(c.dropout)),
        ("batch_norm", c.batch_norm.to_string()),
        ("augment", c.augment.to_string()),
        ("schedule", c.schedule.name().to_string()),
        ("warmup_epochs", c.warmup_epochs.to_string()),
        ("weight_decay", number(c.weight_decay)),
        ("label_smoothing", number(c.label_smoothing)),
        ("class_weights", c.class_weights.name().to_string()),
        ("patience", or_none(c.patience)),
        // Which weights end a phase is early stopping's choice: without it, the last ones.
        (
            "restore_best_weights",
            match (c.patience, c.restore_best_weights) {
                (Some(_), true) => "true (the best epoch's weights)".to_string(),
                (Some(_), false) => "false (the last epoch's: --keep-last-weights)".to_string(),
                (None, _) => "unused (no patience)".to_string(),
            },
        ),
        // The plateau schedule's alone, as momentum is SGD's.
        ("plateau_factor", plateau_only(c, number(c.plateau_factor))),
        (
            "plateau_patience",
            plateau_only(c, c.plateau_patience.to_string()),
        ),
        ("feature_cache", c.feature_cache.to_string()),
    ]
}

/// Every field of a [`JobRecipe`] that decides the run, by name.
fn job_entries(r: &JobRecipe) -> Vec<(String, String)> {
    let mut out = vec![
        ("weights".to_string(), r.weights.clone()),
        ("input_size".to_string(), r.input_size.to_string()),
        ("class_names".to_string(), format!("{:?}", r.class_names)),
    ];
    out.extend(r.data.iter().cloned());
    out.extend([
        ("train_images".to_string(), r.train_images.clone()),
        ("valid_images".to_string(), r.valid_images.clone()),
        ("test_images".to_string(), r.test_images.clone()),
    ]);
    out
}

/// Where a run stands, for the epochs a resume may add.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    /// Epochs done, counted in the plan's slots (after early stopping in phase 1, phase 2 starts
    /// at the slot the plan gave it): the checkpoint's next epoch, 0 without one.
    pub(crate) next_epoch: usize,
    /// Whether phase 2 ended before its planned last epoch (early stopping).
    pub(crate) phase2_stopped_early: bool,
}

impl Progress {
    pub(crate) fn of(state: Option<&CheckpointState>) -> Self {
        let Some(state) = state else {
            return Self::default();
        };
        let last = state.history.epochs.last();
        Self {
            next_epoch: state.next_epoch,
            phase2_stopped_early: last.is_some_and(|e| e.phase == 2 && e.epoch < state.next_epoch),
        }
    }
}

/// The epochs of one phase: the same or more than the run plans (`plan`), and more only where
/// the phase has not ended and its rates do not depend on its length.
fn epoch_change(
    phase: u8,
    plan: [usize; 2],
    given: [usize; 2],
    schedule: Schedule,
    progress: Progress,
) -> Option<RecipeChange> {
    let i = usize::from(phase - 1);
    let (planned, wanted) = (plan[i], given[i]);
    if wanted == planned {
        return None;
    }
    // Epochs are counted in slots: phase 1 takes slots 0..plan[0], phase 2 the ones after.
    let done = progress.next_epoch;
    let (begun, ended) = match phase {
        1 => (done > 0, done >= plan[0]),
        _ => (done > plan[0], progress.phase2_stopped_early),
    };
    let why = if wanted < planned {
        Some("a resumed run may run more epochs than planned, not fewer")
    } else if ended && phase == 1 {
        Some("phase 1 has ended")
    } else if ended {
        Some("phase 2 stopped early")
    } else if begun && schedule == Schedule::Cosine {
        Some("the cosine schedule's rates depend on the length of a phase that has begun")
    } else if begun && schedule == Schedule::OneCycle {
        Some("the one-cycle schedule's rates depend on the length of a phase that has begun")
    } else {
        None
    }?;
    Some(RecipeChange {
        option: format!("phase{phase}_epochs"),
        saved: planned.to_string(),
        given: wanted.to_string(),
        why: Some(why.to_string()),
    })
}

/// Every option in which the `given` recipe differs from the `saved` one, each with both values;
/// empty when the run may be resumed with the given recipe.
///
/// The epochs are compared with the run's current plan (`plan`: the recipe's, or more given on
/// an earlier resume): a phase may get more epochs while it has not ended (phase 1 has not
/// reached its last epoch, phase 2 has not stopped early), unless the cosine or one-cycle
/// schedule, whose rates follow a phase's length, has begun it. Everything else must be equal. `saved_job` is
/// `None` for a run that started before `job.json` was kept (only `config.json` is compared).
pub(crate) fn changes(
    saved: &TwoPhaseConfig,
    saved_job: Option<&JobRecipe>,
    plan: [usize; 2],
    given: &TwoPhaseConfig,
    given_job: &JobRecipe,
    progress: Progress,
) -> Vec<RecipeChange> {
    let wanted = [given.phase1_epochs, given.phase2_epochs];
    let mut out: Vec<RecipeChange> = [1, 2]
        .into_iter()
        .filter_map(|phase| epoch_change(phase, plan, wanted, saved.schedule, progress))
        .collect();
    let differ = |option: &str, a: &str, b: &str| {
        (a != b).then(|| RecipeChange {
            option: option.to_string(),
            saved: a.to_string(),
            given: b.to_string(),
            why: None,
        })
    };
    for ((name, a), (_, b)) in config_entries(saved).iter().zip(config_entries(given)) {
        out.extend(differ(name, a, &b));
    }
    if let Some(saved_job) = saved_job {
        let (a, b) = (job_entries(saved_job), job_entries(given_job));
        let mut names: Vec<&String> = a.iter().map(|(n, _)| n).collect();
        names.extend(
            b.iter()
                .map(|(n, _)| n)
                .filter(|n| !a.iter().any(|(m, _)| m == *n)),
        );
        let value = |list: &[(String, String)], name: &str| {
            (list.iter().find(|(n, _)| n == name)).map_or("-".to_string(), |(_, v)| v.clone())
        };
        for name in names {
            out.extend(differ(name, &value(&a, name), &value(&b, name)));
        }
    }
    out
}

/// What a run folder holds: its saved recipe, its checkpoint, whether it is finished.
#[derive(Debug)]
pub(crate) struct RunFolder {
    pub(crate) path: PathBuf,
    /// `config.json`, if saved.
    pub(crate) config: Option<TwoPhaseConfig>,
    /// `job.json`, if saved.
    pub(crate) job: Option<JobRecipe>,
    /// The last checkpoint's state, if there is one.
    pub(crate) checkpoint: Option<CheckpointState>,
    /// Whether the run is finished: its `evaluation.json`, the last file a run writes, is there.
    pub(crate) finished: bool,
}

impl RunFolder {
    /// Reads what `path` holds (nothing, for a folder that is not there).
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let optional = |name: &str| -> Result<Option<PathBuf>> {
            let file = path.join(name);
            Ok(file.is_file().then_some(file))
        };
        let config = optional("config.json")?
            .map(|f| {
                let saved = read_json::<serde_json::Value>(&f)?;
                TwoPhaseConfig::from_saved(saved).map_err(|e| Error::BadFormat {
                    path: f.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let job = optional("job.json")?
            .map(|f| read_json::<JobRecipe>(&f))
            .transpose()?;
        let checkpoint = Checkpoints::new(path.join("checkpoint")).read()?;
        Ok(Self {
            path: path.to_path_buf(),
            finished: path.join("evaluation.json").is_file(),
            config,
            job,
            checkpoint,
        })
    }

    /// Whether a run was started here: its recipe or a checkpoint is saved.
    pub(crate) fn holds_run(&self) -> bool {
        self.config.is_some()
            || self.job.is_some()
            || self.checkpoint.is_some()
            || self.path.join("model-card.json").is_file()
    }

    /// The epochs of each phase the run plans now: the checkpoint's plan, else the recipe's.
    pub(crate) fn plan(&self) -> Option<[usize; 2]> {
        (self.checkpoint.as_ref().and_then(|s| s.plan))
            .or_else(|| (self.config.as_ref()).map(|c| [c.phase1_epochs, c.phase2_epochs]))
    }

    /// Refuses to resume with `config` and `job` a run that is finished, or whose recipe they
    /// change ([`changes`]).
    pub(crate) fn check_resume(&self, config: &TwoPhaseConfig, job: &JobRecipe) -> Result<()> {
        let progress = Progress::of(self.checkpoint.as_ref());
        let left = config.phase1_epochs + config.phase2_epochs > progress.next_epoch;
        if self.finished && !(self.checkpoint.is_some() && left) {
            return Err(Error::RunFinished {
                path: self.path.clone(),
            });
        }
        let Some(saved) = &self.config else {
            return Ok(());
        };
        let plan = self
            .plan()
            .unwrap_or([saved.phase1_epochs, saved.phase2_epochs]);
        let changes = changes(saved, self.job.as_ref(), plan, config, job, progress);
        if changes.is_empty() {
            Ok(())
        } else {
            Err(Error::RecipeChanged {
                path: self.path.clone(),
                changes,
            })
        }
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadFormat {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobRecipe {
        JobRecipe {
            weights: "resnet50-v1-12".into(),
            input_size: 32,
            class_names: vec!["cat".into(), "dog".into()],
            data: vec![("train_samples".into(), "100".into())],
            train_images: "100 images, sha256 00".into(),
            valid_images: "30 images, sha256 01".into(),
            test_images: "20 images, sha256 02".into(),
            backend: "flex".into(),
            devices: Vec::new(),
        }
    }

    /// A new field of the recipe cannot be forgotten by the comparison: every field of the
    /// saved `config.json` is compared, the epochs by their own rule.
    #[test]
    fn every_config_field_is_compared() {
        let json = serde_json::to_value(TwoPhaseConfig::new()).unwrap();
        let compared: Vec<&str> = config_entries(&TwoPhaseConfig::new())
            .iter()
            .map(|(n, _)| *n)
            .chain(["phase1_epochs", "phase2_epochs"])
            .collect();
        for field in json.as_object().unwrap().keys() {
            assert!(
                compared.contains(&field.as_str()),
                "{field} is not compared"
            );
        }
    }

    #[test]
    fn every_difference_is_named_with_both_values() {
        let saved = TwoPhaseConfig::new();
        let given = saved.clone().with_batch_size(8).with_seed(7);
        let mut other = job();
        other.input_size = 64;
        other.data[0].1 = "90".into();
        other.backend = "ndarray".into(); // the machine may change
        let found = changes(
            &saved,
            Some(&job()),
            [5, 5],
            &given,
            &other,
            Progress::default(),
        );
        let named: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|c| (c.option.as_str(), c.saved.as_str(), c.given.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("batch_size", "32", "8"),
                ("seed", "42", "7"),
                ("input_size", "32", "64"),
                ("train_samples", "100", "90"),
            ]
        );
        assert!(
            changes(
                &saved,
                Some(&job()),
                [5, 5],
                &saved,
                &job(),
                Progress::default()
            )
            .is_empty()
        );
    }

    /// What a recipe does not use is not compared: the plateau's factor and patience under
    /// another schedule, the weights early stopping restores without it, SGD's momentum under
    /// Adam. A new user's run with `--plateau-factor 0.5` and no plateau was refused on resume
    /// over the value it never used.
    #[test]
    fn values_the_recipe_does_not_use_are_not_compared() {
        let saved = TwoPhaseConfig::new()
            .with_plateau_factor(0.5)
            .with_plateau_patience(4)
            .with_restore_best_weights(false)
            .with_momentum(0.5);
        let found = |given: &TwoPhaseConfig| {
            let found = changes(
                &saved,
                Some(&job()),
                [5, 5],
                given,
                &job(),
                Progress::default(),
            );
            found.iter().map(|c| c.option.clone()).collect::<Vec<_>>()
        };
        assert!(found(&TwoPhaseConfig::new()).is_empty());
        // Where the recipe uses them, they are.
        let plateau = |c: TwoPhaseConfig| c.with_schedule(Schedule::Plateau).with_patience(Some(2));
        let saved = plateau(saved);
        let given = plateau(TwoPhaseConfig::new());
        let found = changes(
            &saved,
            Some(&job()),
            [5, 5],
            &given,
            &job(),
            Progress::default(),
        );
        let named: Vec<&str> = found.iter().map(|c| c.option.as_str()).collect();
        assert_eq!(
            named,
            ["restore_best_weights", "plateau_factor", "plateau_patience"]
        );
    }

    /// Rates read as a user wrote them: `1e38`, not 39 digits; small ones in exponent form.
    #[test]
    fn extreme_rates_are_named_in_exponent_form() {
        let saved = TwoPhaseConfig::new().with_phase1_lr(1e38);
        let given = TwoPhaseConfig::new().with_phase1_lr(1e-5);
        let found = changes(&saved, None, [5, 5], &given, &job(), Progress::default());
        let named: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|c| (c.option.as_str(), c.saved.as_str(), c.given.as_str()))
            .collect();
        assert_eq!(named, [("phase1_lr", "1e38", "1e-5")]);
        assert_eq!(number(0.001), "0.001");
    }

    #[test]
    fn epochs_may_grow_while_their_phase_runs() {
        let saved = TwoPhaseConfig::new()
            .with_phase1_epochs(3)
            .with_phase2_epochs(3);
        let more = |p1, p2| saved.clone().with_phase1_epochs(p1).with_phase2_epochs(p2);
        let at = |next_epoch, stopped| Progress {
            next_epoch,
            phase2_stopped_early: stopped,
        };
        let check = |given: &TwoPhaseConfig, progress| {
            let found = changes(&saved, None, [3, 3], given, &job(), progress);
            found.iter().map(|c| c.option.clone()).collect::<Vec<_>>()
        };
        // In phase 1: both phases may grow; fewer epochs never.
        assert!(check(&more(5, 6), at(2, false)).is_empty());
        assert_eq!(check(&more(2, 3), at(1, false)), ["phase1_epochs"]);
        // Phase 1 over: only phase 2 may grow, until it stops early.
        assert_eq!(check(&more(4, 3), at(3, false)), ["phase1_epochs"]);
        assert!(check(&more(3, 5), at(4, false)).is_empty());
        assert_eq!(check(&more(3, 5), at(6, true)), ["phase2_epochs"]);
        // The cosine and one-cycle schedules: a phase that has begun keeps its length.
        for schedule in [Schedule::Cosine, Schedule::OneCycle] {
            let shaped = saved.clone().with_schedule(schedule);
            let longer = shaped.clone().with_phase2_epochs(5);
            let found = changes(&shaped, None, [3, 3], &longer, &job(), at(4, false));
            assert!(
                found[0].why.as_ref().unwrap().contains(schedule.name()),
                "{found:?}"
            );
            let found = changes(&shaped, None, [3, 3], &longer, &job(), at(2, false));
            assert!(found.is_empty(), "phase 2 has not begun: {found:?}");
        }
    }
}
