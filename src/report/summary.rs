//! `summary.md`: the run's figures on one screen.

use std::path::Path;

use crate::error::Result;
use crate::files::write_atomic;
use crate::report::class_name;
use crate::train::{Evaluation, History};

/// `summary.md`: the numbers a person wants on one screen.
pub fn write_summary(
    path: &Path,
    history: &History,
    test: &Evaluation,
    names: &[String],
    extra: &[(String, String)],
) -> Result<()> {
    let name = |i: usize| class_name(names, i);
    let mut s = String::from("# Two-phase transfer learning: summary\n\n");
    s.push_str(&format!(
        "- test accuracy: **{:.2}%** (loss {:.4})\n",
        100.0 * test.accuracy,
        test.loss
    ));
    if let Some(top5) = test.top5 {
        s.push_str(&format!("- top-5 accuracy: {:.2}%\n", 100.0 * top5));
    }
    let from = history.phase2_start().map_or(0, |e| e.epoch);
    match (history.unfreeze_epoch(), history.jump()) {
        (Some(e), Some(j)) => s.push_str(&format!(
            "- unfreeze point: epoch {e}, from the weights of epoch {from}; the jump (first phase-2 validation accuracy minus epoch {from}'s): **{:+.2} points**\n",
            100.0 * j
        )),
        (Some(e), None) if from == 0 => s.push_str(&format!(
            "- unfreeze point: epoch {e}, from the starting weights (no phase-1 epoch); the jump is not measured\n"
        )),
        (Some(e), None) => s.push_str(&format!(
            "- unfreeze point: epoch {e}, from the weights of epoch {from}; the jump is not measured ({})\n",
            history.why_no_jump().unwrap_or("no validation images")
        )),
        _ => s.push_str("- the backbone was never released (no phase 2)\n"),
    }
    for &epoch in &history.restored {
        let phase = history
            .epochs
            .iter()
            .find(|e| e.epoch == epoch)
            .map_or(0, |e| e.phase);
        s.push_str(&format!(
            "- early stopping: phase {phase} ended with the weights of its best epoch, {epoch}\n"
        ));
    }
    let releases = history.releases();
    if !releases.is_empty() {
        let steps: Vec<String> = releases
            .iter()
            .map(|&(e, stage)| match stage {
                1 => format!("the whole backbone at epoch {e}"),
                s => format!("stages {s} to 4 at epoch {e}"),
            })
            .collect();
        s.push_str(&format!(
            "- gradual unfreezing: stage 4 at the unfreeze point, then {}\n",
            steps.join(", ")
        ));
    }
    if !history.validated() {
        s.push_str(
            "- validation: none (no validation images); the table's validation columns are empty\n",
        );
    }
    if let Some((t, p, c)) = test.most_confused() {
        s.push_str(&format!(
            "- most confused pair: **{}** taken for **{}** ({c} times)\n",
            name(t),
            name(p)
        ));
    }
    for (k, v) in extra {
        s.push_str(&format!("- {k}: {v}\n"));
    }
    s.push_str(&class_table(test, names));
    s.push_str(
        "\n| epoch | phase | lr | train loss | train acc | valid loss | valid acc | seconds |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for e in &history.epochs {
        let loss = e.valid_loss.map_or("-".into(), |l| format!("{l:.4}"));
        let acc = (e.valid_accuracy).map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
        let phase = match e.released_from {
            Some(4) => format!("{} (stage 4)", e.phase),
            Some(stage) if stage > 1 => format!("{} (stages {stage}-4)", e.phase),
            _ => e.phase.to_string(),
        };
        s.push_str(&format!(
            "| {} | {phase} | {} | {:.4} | {:.2}% | {loss} | {acc} | {:.1}{} |\n",
            e.epoch,
            short_rate(e.lr),
            e.train_loss,
            100.0 * e.train_accuracy,
            e.seconds,
            if e.cached_features {
                " (cached features)"
            } else {
                ""
            }
        ));
    }
    write_atomic(path, s.as_bytes())
}

/// Each class's test figures: images, accuracy (its recall), precision and F1; `-` where a
/// figure has no denominator (no image of the class, nothing predicted as it).
fn class_table(test: &Evaluation, names: &[String]) -> String {
    let percent = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let mut s = String::from(
        "\n| class | test images | accuracy (recall) | precision | F1 |\n| --- | --- | --- | --- | --- |\n",
    );
    for (i, c) in test.class_scores().iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            class_name(names, i),
            c.images,
            percent(c.recall),
            percent(c.precision),
            c.f1.map_or("-".to_string(), |f| format!("{f:.3}")),
        ));
    }
    s
}

/// A learning rate in three significant digits, as a person writes it: `1e-3`, `8.5e-3`,
/// `1.79e-2` (not `1.7886495290574348e-2`).
pub(crate) fn short_rate(lr: f64) -> String {
    let text = format!("{lr:.2e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_read_as_a_person_writes_them() {
        assert_eq!(super::short_rate(1e-3), "1e-3");
        assert_eq!(super::short_rate(1e-5), "1e-5");
        assert_eq!(super::short_rate(0.008497534359086439), "8.5e-3");
        assert_eq!(super::short_rate(1.7886495290574348e-2), "1.79e-2");
    }
}
