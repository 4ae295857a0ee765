//! The training curves: loss and accuracy per epoch, with the unfreeze point and the jump.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::Result;
use crate::report::{FONT, drawing_error, register_font, save_png};
use crate::train::{EpochRecord, History};

/// Picks the training and validation value of one curve from an epoch (no validation value in
/// a run without validation).
type Pick = fn(&EpochRecord) -> (f64, Option<f64>);

/// Loss and accuracy per epoch, training and validation, with the unfreeze point marked and the
/// jump written on it.
///
/// Epochs stand at their numbers in the history: after early stopping in phase 1, phase 2 starts
/// at the epoch the plan gave it, and the epochs not run leave a gap, which the lines do not
/// cross. The marker stands just before phase 2's first epoch; the jump is measured from the
/// weights phase 2 started from ([`History::jump`]), and the label names their epoch when early
/// stopping restored an earlier one than the last. A run without validation has training curves
/// only, and no jump.
pub fn draw_curves(path: &Path, history: &History) -> Result<()> {
    let (buf, _) = render_curves(path, history)?;
    save_png(path, buf, CURVES_SIZE.0, CURVES_SIZE.1)
}

/// The curves picture's width and height.
const CURVES_SIZE: (u32, u32) = (1100, 460);
/// The unfreeze marker's colour (60% black on white).
const MARKER: [u8; 3] = [102, 102, 102];
/// Gradual unfreezing's later releases' markers' colour (35% black on white).
const RELEASE_MARKER: [u8; 3] = [166, 166, 166];

/// The history's epochs in runs of consecutive epoch numbers (phase 1 stopped early leaves a gap
/// before phase 2).
fn consecutive(history: &History) -> Vec<&[EpochRecord]> {
    let epochs = &history.epochs;
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=epochs.len() {
        if i == epochs.len() || epochs[i].epoch != epochs[i - 1].epoch + 1 {
            runs.push(&epochs[start..i]);
            start = i;
        }
    }
    runs
}

/// Where phase 2 began, as both panels mark it.
struct Unfreeze {
    /// The marker's x: half an epoch before phase 2's first.
    at: f64,
    /// The marker's label, naming the epoch phase 2 started from when early stopping restored
    /// an earlier one than the last.
    label: String,
    /// The accuracy jump, in points, where validation measured it.
    jump: Option<f64>,
}

impl Unfreeze {
    fn of(history: &History) -> Option<Self> {
        let at = history.unfreeze_epoch()? as f64 - 0.5;
        let last1 = history.epochs.iter().rev().find(|e| e.phase == 1);
        let from = history
            .phase2_start()
            .filter(|s| last1.is_some_and(|l| l.epoch != s.epoch))
            .map(|s| s.epoch);
        let label = match from {
            Some(e) => format!("unfreeze (from epoch {e})"),
            None => "unfreeze".to_string(),
        };
        let jump = history.jump().map(|j| 100.0 * j);
        Some(Self { at, label, jump })
    }
}

/// Draws the curves into an RGB buffer of [`CURVES_SIZE`]; also returns the pixel column of each
/// epoch of the history in the loss panel.
fn render_curves(path: &Path, history: &History) -> Result<(Vec<u8>, Vec<i32>)> {
    register_font();
    let (w, h) = CURVES_SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let epoch_x;
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let (left, right) = root.split_horizontally(w / 2);
        let unfreeze = Unfreeze::of(history);
        epoch_x = draw_panel(
            path,
            &left,
            "loss",
            |e| (e.train_loss, e.valid_loss),
            history,
            &unfreeze,
        )?;
        let accuracy: Pick = |e| {
            (
                100.0 * e.train_accuracy,
                e.valid_accuracy.map(|a| 100.0 * a),
            )
        };
        draw_panel(path, &right, "accuracy (%)", accuracy, history, &unfreeze)?;
        root.present().map_err(|e| drawing_error(path, e))?;
    }
    Ok((buf, epoch_x))
}

/// One panel: a curve's training and validation values per epoch, the unfreeze marker (with the
/// jump on the accuracy panel) and the legend. Returns each epoch's pixel column.
fn draw_panel(
    path: &Path,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    name: &str,
    pick: Pick,
    history: &History,
    unfreeze: &Option<Unfreeze>,
) -> Result<Vec<i32>> {
    let err = |e| drawing_error(path, e);
    let last = history.epochs.last().map_or(1, |e| e.epoch).max(1) as f64;
    let (lo, hi) = (history.epochs.iter().map(pick))
        .flat_map(|(a, b)| std::iter::once(a).chain(b))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(name, (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..last + 0.5, (lo - pad)..(hi + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (k, run) in consecutive(history).iter().enumerate() {
        let train: Vec<(f64, f64)> = run.iter().map(|e| (e.epoch as f64, pick(e).0)).collect();
        let valid: Vec<(f64, f64)> = (run.iter())
            .filter_map(|e| Some((e.epoch as f64, pick(e).1?)))
            .collect();
        // One curve: its line and dots, named in the legend once (by the first run).
        for (points, colour, name) in [(train, BLUE, "training"), (valid, RED, "validation")] {
            if points.is_empty() {
                continue;
            }
            let line = chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(err)?;
            if k == 0 {
                line.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            }
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(err)?;
        }
    }
    if let Some(u) = unfreeze {
        let label = match (name, u.jump) {
            ("accuracy (%)", Some(j)) => format!("{}: jump {j:+.1} pts", u.label),
            _ => u.label.clone(),
        };
        draw_marker(
            &mut chart,
            (u.at, MARKER),
            [lo - pad, hi + pad, hi + pad * 0.4],
            label,
        )
        .map_err(err)?;
    }
    // Gradual unfreezing: each later release, lighter, labelled lower than the unfreeze point,
    // each label a line above the one before: releases an epoch apart (`--unfreeze-every 1`)
    // had their labels printed over each other.
    let line = {
        let (_, height) = chart.plotting_area().dim_in_pixel();
        18.0 * (hi - lo + 2.0 * pad) / f64::from(height.max(1))
    };
    for (k, (epoch, stage)) in history.releases().into_iter().enumerate() {
        let label = match stage {
            1 => "+ stage 1, stem".to_string(),
            s => format!("+ stage {s}"),
        };
        let at = (epoch as f64 - 0.5, RELEASE_MARKER);
        let label_y = lo + pad * 0.2 + k as f64 * line;
        draw_marker(&mut chart, at, [lo - pad, hi + pad, label_y], label).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE.mix(0.8))
        .label_font((FONT, 14))
        .position(SeriesLabelPosition::MiddleRight)
        .draw()
        .map_err(err)?;
    Ok((history.epochs.iter())
        .map(|e| chart.backend_coord(&(e.epoch as f64, lo)).0)
        .collect())
}

/// A release's marker: a grey line at `x` from `bottom` to `top` in `colour`, its label at
/// `label_y` just beside it, on the side with room, on a white box: the lines of releases an
/// epoch apart and the curves ran through the labels' text.
fn draw_marker<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    (x, colour): (f64, [u8; 3]),
    [bottom, top, label_y]: [f64; 3],
    label: String,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let grey = RGBColor(colour[0], colour[1], colour[2]);
    let line = PathElement::new(vec![(x, bottom), (x, top)], grey.stroke_width(2));
    chart.draw_series(std::iter::once(line))?;
    let font = (FONT, 15).into_font();
    let (w, h) = font
        .box_size(&label)
        .map_or((8 * label.len() as u32, 15), |s| s);
    let (w, h) = (w as i32 + 6, h as i32 + 4);
    // Right of the line in the chart's left half, else left of it: a phase 2 that starts near
    // the last epoch (phase 1 stopped early) had its "jump" cut off at the right edge.
    let epochs = chart.x_range();
    let left = if x <= (epochs.start + epochs.end) / 2.0 {
        3
    } else {
        -3 - w
    };
    let label = EmptyElement::at((x, label_y))
        + Rectangle::new([(left, 0), (left + w, h)], WHITE.mix(0.9).filled())
        + Text::new(label, (left + 3, 2), font.color(&BLACK));
    chart.draw_series(std::iter::once(label))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::decode_png as decode;

    fn history(phases: &[u8]) -> History {
        let epochs = phases
            .iter()
            .enumerate()
            .map(|(i, &phase)| EpochRecord {
                epoch: i + 1,
                phase,
                lr: 1e-3,
                train_loss: 2.0 - 0.2 * i as f64,
                train_accuracy: 0.1 * i as f64,
                valid_loss: Some(2.1 - 0.2 * i as f64),
                valid_accuracy: Some(0.08 * i as f64 + 0.1 * f64::from(phase - 1)),
                seconds: 1.0,
                cached_features: phase == 1,
                released_from: (phase == 2).then_some(1),
                valid_top5: None,
                valid_f1: None,
                valid_classes: Vec::new(),
            })
            .collect();
        History {
            epochs,
            restored: Vec::new(),
        }
    }

    /// Columns of the loss panel where the unfreeze marker's grey runs down most of the chart.
    fn marker_columns(png: &image::RgbImage) -> Vec<u32> {
        columns_of(png, MARKER)
    }

    /// Columns of the loss panel where `colour` runs down most of the chart.
    fn columns_of(png: &image::RgbImage, colour: [u8; 3]) -> Vec<u32> {
        (0..png.width() / 2)
            .filter(|&x| {
                let grey = (0..png.height())
                    .filter(|&y| {
                        let p = png.get_pixel(x, y).0;
                        (0..3).all(|c| p[c].abs_diff(colour[c]) <= 8)
                    })
                    .count();
                grey > 200
            })
            .collect()
    }

    /// Gradual unfreezing's later releases are marked, lighter, between the epochs before and
    /// at each release; a run without them has no such marks.
    #[test]
    fn gradual_releases_are_marked_at_their_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = history(&[1, 1, 2, 2, 2, 2]);
        for (e, stage) in h.epochs[2..].iter_mut().zip([4, 3, 2, 1]) {
            e.released_from = Some(stage);
        }
        assert_eq!(h.releases(), vec![(4, 3), (5, 2), (6, 1)]);
        let path = dir.path().join("curves.png");
        let (_, epoch_x) = render_curves(&path, &h).unwrap();
        draw_curves(&path, &h).unwrap();
        let png = decode(&path);
        let light = columns_of(&png, RELEASE_MARKER);
        for e in [4usize, 5, 6] {
            let (before, at) = (epoch_x[e - 2] as u32, epoch_x[e - 1] as u32);
            assert!(
                light.iter().any(|&x| x > before && x < at),
                "no release mark between epochs {} and {e}: {light:?}",
                e - 1
            );
        }
        assert!(
            !marker_columns(&png).is_empty(),
            "the unfreeze point is still marked"
        );
        // The three labels, one per release an epoch apart, stand on three lines, not on one:
        // the dark text in the loss panel's lowest 40%, below the legend and right of epoch 3,
        // spans three lines.
        let columns = epoch_x[2] as u32 + 4..epoch_x[5] as u32;
        let dark_rows: Vec<u32> = (png.height() * 6 / 10..png.height())
            .filter(|&y| {
                let dark = (columns.clone())
                    .filter(|&x| png.get_pixel(x, y).0.iter().all(|&c| c < 80))
                    .count();
                // Text, not the axis line under the chart.
                dark > 0 && dark < columns.len() / 2
            })
            .take_while(|&y| y < png.height() - 48)
            .collect();
        let extent = dark_rows.last().zip(dark_rows.first()).map(|(b, t)| b - t);
        assert!(
            extent.is_some_and(|e| e >= 30),
            "release labels on rows {dark_rows:?}"
        );
        draw_curves(&path, &history(&[1, 1, 2, 2])).unwrap();
        assert!(columns_of(&decode(&path), RELEASE_MARKER).is_empty());
    }

    #[test]
    fn the_unfreeze_marker_sits_between_the_phases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let run = history(&[1, 1, 1, 2, 2, 2]);
        draw_curves(&path, &run).unwrap();
        let png = decode(&path);
        let (_, epoch_x) = render_curves(&path, &run).unwrap();
        assert_eq!(epoch_x.len(), 6);
        // Each epoch's training point is drawn in its column.
        for &x in &epoch_x {
            let blue = (0..png.height()).any(|y| png.get_pixel(x as u32, y).0 == [0, 0, 255]);
            assert!(blue, "no training point in column {x}");
        }
        let columns = marker_columns(&png);
        assert!(!columns.is_empty(), "no unfreeze marker");
        let middle = (epoch_x[2] + epoch_x[3]) as f64 / 2.0;
        for &x in &columns {
            assert!(
                (x as f64 - middle).abs() <= 2.0,
                "marker at column {x}, epochs 3 and 4 at {} and {}",
                epoch_x[2],
                epoch_x[3]
            );
        }
        // Phase 1 alone: no marker.
        draw_curves(&path, &history(&[1, 1, 1])).unwrap();
        assert!(marker_columns(&decode(&path)).is_empty());
    }

    #[test]
    fn after_early_stopping_epochs_stand_at_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let mut run = history(&[1, 1, 1, 1, 1, 2, 2, 2]);
        for (k, e) in run.epochs.iter_mut().enumerate().skip(5) {
            e.epoch = 11 + k - 5;
        }
        run.restored = vec![3];
        draw_curves(&path, &run).unwrap();
        let (_, epoch_x) = render_curves(&path, &run).unwrap();
        // One epoch's width in pixels, from epochs 1 and 2; epoch 11 lies ten of them right of 1.
        let step = (epoch_x[1] - epoch_x[0]) as f64;
        assert!((epoch_x[5] as f64 - (epoch_x[0] as f64 + 10.0 * step)).abs() <= 1.5);
        let columns = marker_columns(&decode(&path));
        assert!(!columns.is_empty(), "no unfreeze marker");
        let want = epoch_x[5] as f64 - step / 2.0;
        for &x in &columns {
            assert!((x as f64 - want).abs() <= 2.0, "marker at {x}, want {want}");
        }
    }

    #[test]
    fn without_validation_no_validation_curve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let mut run = history(&[1, 1, 2, 2]);
        for e in &mut run.epochs {
            (e.valid_loss, e.valid_accuracy) = (None, None);
        }
        draw_curves(&path, &run).unwrap();
        let png = decode(&path);
        assert!(
            png.pixels().all(|p| p.0 != [255, 0, 0]),
            "a validation curve"
        );
        assert!(
            !marker_columns(&png).is_empty(),
            "the unfreeze point is still marked"
        );
    }
}
