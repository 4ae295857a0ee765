//! The end of a job: the model saved, the report drawn and written, the run marked finished.

use std::time::Instant;

use super::recipe::RunFolder;
use super::{FineTuneJob, JobData, write_json};
use crate::data::ImageBatcher;
use crate::error::{Error, Result};
use crate::explain::{CamTarget, check_map_size, grad_cam};
use crate::model::ResNet;
use crate::report::{
    draw_confusion, draw_curves, draw_explanations, draw_predictions, explanation_choice,
    write_summary,
};
use crate::train::{Evaluation, History};
use crate::weights::{ModelCard, SavedModel};

impl FineTuneJob {
    /// The model, the report and, last, `evaluation.json`, whose presence marks the run
    /// finished; then the checkpoint goes, unless kept.
    pub(super) fn finish(
        &self,
        folder: &RunFolder,
        data: &JobData,
        saved: &SavedModel,
        history: &History,
        evaluation: &Evaluation,
        started: Instant,
    ) -> Result<()> {
        saved.save(&self.out.join("model"))?;
        let mut notes = Vec::new();
        if let Some(start) = folder.config.as_ref()
            && [start.phase1_epochs, start.phase2_epochs]
                != [self.config.phase1_epochs, self.config.phase2_epochs]
        {
            notes.push((
                "epochs planned".to_string(),
                format!(
                    "{} + {} ({} + {} when the run started; more given on resume)",
                    self.config.phase1_epochs,
                    self.config.phase2_epochs,
                    start.phase1_epochs,
                    start.phase2_epochs
                ),
            ));
        }
        let report = (&saved.model, &saved.card);
        self.write_report(data, report, history, evaluation, &notes, started)?;
        write_json(&self.out.join("evaluation.json"), evaluation)?;
        // The checkpoint, and phase 1's feature files, which only a resume reads.
        for dir in [self.out.join("checkpoint"), self.out.join("features")] {
            if !self.keep_checkpoints && dir.is_dir() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
        }
        Ok(())
    }

    /// `explanations.png`: test photos right and wrong (framed as in `predictions.png`) beside
    /// their Grad-CAM maps for the predicted class; at an input size whose last stage is a single
    /// cell (32 pixels), the photos alone, under a title that says why.
    fn write_explanations(
        &self,
        data: &JobData,
        model: &ResNet,
        card: &ModelCard,
        evaluation: &Evaluation,
    ) -> Result<()> {
        let path = self.out.join("explanations.png");
        let predictions = &evaluation.predictions;
        let shown = explanation_choice(&data.test, predictions, 16);
        let side = self.input_size;
        let draw = |maps: &[_], title: Option<&str>| {
            let names = &card.class_names;
            draw_explanations(&path, &data.test, predictions, names, &shown, maps, title)
        };
        if shown.is_empty() || check_map_size(model, [side, side]).is_err() {
            let title = format!(
                "No heat maps at {side}x{side} pixels: the last stage is 1x1 (more than 32 pixels have maps)"
            );
            return draw(&[], Some(&title));
        }
        let batcher = ImageBatcher {
            preprocess: card.preprocess,
            size: (side != data.test.height()).then_some(side),
            augment: None,
        };
        // The model's own device, without autodiff.
        let device = model.stem.conv.conv.weight.val().device().inner();
        let images = batcher.batch_of(&data.test, &shown, 0, &device)?.images;
        let classes = shown.iter().map(|&i| predictions[i]).collect();
        let maps = grad_cam(model, images, &CamTarget::PerImage(classes))?;
        draw(&maps, None)
    }

    fn write_report(
        &self,
        data: &JobData,
        (model, card): (&ResNet, &ModelCard),
        history: &History,
        evaluation: &Evaluation,
        notes: &[(String, String)],
        started: Instant,
    ) -> Result<()> {
        let out = &self.out;
        draw_curves(&out.join("curves.png"), history)?;
        draw_confusion(
            &out.join("confusion.png"),
            &evaluation.confusion,
            &card.class_names,
        )?;
        draw_predictions(
            &out.join("predictions.png"),
            &data.test,
            &evaluation.predictions,
            &card.class_names,
            32,
        )?;
        self.write_explanations(data, model, card, evaluation)?;
        let phase_time = |p: u8| {
            let e: Vec<f64> = history
                .epochs
                .iter()
                .filter(|e| e.phase == p)
                .map(|e| e.seconds)
                .collect();
            if e.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1} s", e.iter().sum::<f64>() / e.len() as f64)
            }
        };
        let mut extra = vec![
            ("weights".to_string(), self.weights.clone()),
            ("data".to_string(), data.source.clone()),
            ("backend".to_string(), self.backend_sentence()),
            ("training loss".to_string(), self.loss_sentence()),
            ("learning rates".to_string(), self.rates_sentence()),
            ("optimizer".to_string(), self.optimizer_sentence()),
            ("mean epoch time, phase 1".to_string(), phase_time(1)),
            ("mean epoch time, phase 2".to_string(), phase_time(2)),
            (
                "total time (this sitting)".to_string(),
                format!("{:.1} s", started.elapsed().as_secs_f64()),
            ),
        ];
        extra.extend(data.notes.iter().cloned());
        extra.extend(notes.iter().cloned());
        write_summary(
            &out.join("summary.md"),
            history,
            evaluation,
            &card.class_names,
            &extra,
        )
    }

    /// The backend, and the devices where several were given: on a CPU backend, its one device
    /// taking turns as the replicas (a new user's `--devices 0,1` on flex ran so without a word).
    pub(super) fn backend_sentence(&self) -> String {
        let host = (self.backend.parse::<crate::device::BackendKind>()).is_ok_and(|b| b.is_host());
        match self.devices.as_slice() {
            [] | [_] => self.backend.clone(),
            devices if host => format!(
                "{}, devices {devices:?}: {} replicas taking turns on its one CPU device \
                 (data parallel as on GPUs: one device's numbers to float rounding, dropout \
                 drawn share by share; no faster)",
                self.backend,
                devices.len()
            ),
            devices => format!(
                "{}, devices {devices:?}, every batch split between them",
                self.backend
            ),
        }
    }

    /// Both phases' rates as the summary names them, and which a sweep suggested.
    fn rates_sentence(&self) -> String {
        let rates = [self.config.phase1_lr, self.config.phase2_lr];
        let phase = |k: usize| {
            let note = if self.suggested_lr[k] {
                " (suggested by the learning-rate finder)"
            } else {
                ""
            };
            format!(
                "phase {} {}{note}",
                k + 1,
                crate::report::summary::short_rate(rates[k])
            )
        };
        format!("{}, {}", phase(0), phase(1))
    }

    /// The optimizer, schedule and release as the summary names them: what `config.json` says,
    /// in words.
    fn optimizer_sentence(&self) -> String {
        let c = &self.config;
        let mut s = c.optimizer.name().to_string();
        if c.optimizer == crate::train::OptimizerKind::Sgd {
            s.push_str(&format!(", momentum {}", c.momentum));
            if c.nesterov {
                s.push_str(" (Nesterov)");
            }
        }
        if c.weight_decay > 0.0 {
            s.push_str(&format!(
                ", weight decay {} (not on BatchNorm and biases)",
                c.weight_decay
            ));
        }
        s.push_str(&format!(", schedule {}", c.schedule));
        if c.schedule == crate::train::Schedule::OneCycle {
            s.push_str(" (the rates above are each cycle's peak)");
        }
        if c.warmup_epochs > 0 {
            s.push_str(&format!(", {} warm-up epochs", c.warmup_epochs));
        }
        if c.stage_lr_decay != 1.0 {
            s.push_str(&format!(
                ", phase 2's rate times {} per stage from the head",
                c.stage_lr_decay
            ));
        }
        s
    }

    /// The training loss as the summary names it: cross-entropy, and the smoothing and class
    /// weights where the recipe has them.
    fn loss_sentence(&self) -> String {
        let c = &self.config;
        let mut s = "cross-entropy".to_string();
        if c.label_smoothing > 0.0 {
            s.push_str(&format!(", label smoothing {}", c.label_smoothing));
        }
        if c.class_weights != crate::train::ClassWeights::None {
            s.push_str(&format!(", {} class weights", c.class_weights));
        }
        s
    }
}
