//! The report of a training run: curves, confusion matrix, predictions and a summary.

use std::path::Path;

use plotters::prelude::*;

use crate::data::ImageSet;
use crate::error::Result;
use crate::files::write_atomic;
use crate::report::{FONT, GridRow, Tile, draw_grid, drawing_error, register_font, save_png};
use crate::train::{Evaluation, History};

/// Picks the training and validation value of one curve from an epoch (no validation value in
/// a run without validation).
type Pick = fn(&crate::train::EpochRecord) -> (f64, Option<f64>);

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

/// The history's epochs in runs of consecutive epoch numbers (phase 1 stopped early leaves a gap
/// before phase 2).
fn consecutive(history: &History) -> Vec<&[crate::train::EpochRecord]> {
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

/// Draws the curves into an RGB buffer of [`CURVES_SIZE`]; also returns the pixel column of each
/// epoch of the history in the loss panel.
fn render_curves(path: &Path, history: &History) -> Result<(Vec<u8>, Vec<i32>)> {
    register_font();
    let (w, h) = CURVES_SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let mut epoch_x = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e| drawing_error(path, e);
        let (left, right) = root.split_horizontally(w / 2);
        let last = history.epochs.last().map_or(1, |e| e.epoch).max(1) as f64;
        let unfreeze = history.unfreeze_epoch().map(|e| e as f64 - 0.5);
        let jump = history.jump();
        // The epoch phase 2 started from, named when early stopping restored an earlier one.
        let last1 = history.epochs.iter().rev().find(|e| e.phase == 1);
        let from = history
            .phase2_start()
            .filter(|s| last1.is_some_and(|l| l.epoch != s.epoch))
            .map(|s| s.epoch);
        let runs = consecutive(history);
        let panels: [(&DrawingArea<_, _>, &str, Pick); 2] = [
            (&left, "loss", |e| (e.train_loss, e.valid_loss)),
            (&right, "accuracy (%)", |e| {
                (
                    100.0 * e.train_accuracy,
                    e.valid_accuracy.map(|a| 100.0 * a),
                )
            }),
        ];
        for (area, name, pick) in panels {
            let values: Vec<(f64, Option<f64>)> = history.epochs.iter().map(pick).collect();
            let (lo, hi) = values
                .iter()
                .flat_map(|&(a, b)| std::iter::once(a).chain(b))
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
            if epoch_x.is_empty() {
                epoch_x = (history.epochs.iter())
                    .map(|e| chart.backend_coord(&(e.epoch as f64, lo)).0)
                    .collect();
            }
            for (k, run) in runs.iter().enumerate() {
                let train: Vec<(f64, f64)> =
                    run.iter().map(|e| (e.epoch as f64, pick(e).0)).collect();
                let valid: Vec<(f64, f64)> = (run.iter())
                    .filter_map(|e| Some((e.epoch as f64, pick(e).1?)))
                    .collect();
                // One curve: its line and dots, named in the legend once (by the first run).
                for (points, colour, name) in
                    [(train, BLUE, "training"), (valid, RED, "validation")]
                {
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
                let line = vec![(u, lo - pad), (u, hi + pad)];
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        line,
                        RGBColor(MARKER[0], MARKER[1], MARKER[2]).stroke_width(2),
                    )))
                    .map_err(err)?;
                let unfreeze = match from {
                    Some(e) => format!("unfreeze (from epoch {e})"),
                    None => "unfreeze".to_string(),
                };
                let text = match (name, jump) {
                    ("accuracy (%)", Some(j)) => {
                        format!("{unfreeze}: jump {:+.1} pts", 100.0 * j)
                    }
                    _ => unfreeze,
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (u + 0.05, hi + pad * 0.4),
                        (FONT, 15),
                    )))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK.mix(0.3))
                .background_style(WHITE.mix(0.8))
                .label_font((FONT, 14))
                .position(SeriesLabelPosition::MiddleRight)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok((buf, epoch_x))
}

/// Side of a confusion-matrix cell, and the matrix's offset from the picture's left and top.
const CONFUSION_CELL: usize = 52;
const CONFUSION_LEFT: usize = 120;
const CONFUSION_TOP: usize = 110;

/// The confusion matrix as a heat map with counts, true classes down, predicted across: right
/// answers green and wrong ones red, each the deeper the larger its share of the true class.
pub fn draw_confusion(path: &Path, confusion: &[Vec<usize>], names: &[String]) -> Result<()> {
    register_font();
    let n = confusion.len().max(1);
    let (cell, left, top) = (CONFUSION_CELL, CONFUSION_LEFT, CONFUSION_TOP);
    // At least as wide as the title, however few the classes.
    let (w, h) = ((left + n * cell + 20).max(520), top + n * cell + 50);
    let mut buf = vec![255u8; w * h * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        let err = |e| drawing_error(path, e);
        root.draw_text(
            "Confusion matrix (rows: true class, columns: predicted)",
            &(FONT, 18).into_font().color(&BLACK),
            (10, 8),
        )
        .map_err(err)?;
        for (r, row) in confusion.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (c, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let (x0, y0) = ((left + c * cell) as i32, (top + r * cell) as i32);
                let color = if r == c {
                    RGBColor(
                        255 - (200.0 * share) as u8,
                        255 - (90.0 * share) as u8,
                        255 - (200.0 * share) as u8,
                    )
                } else {
                    RGBColor(
                        255,
                        255 - (215.0 * share.min(0.5) * 2.0) as u8,
                        255 - (215.0 * share.min(0.5) * 2.0) as u8,
                    )
                };
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    color.filled(),
                ))
                .map_err(err)?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    BLACK.mix(0.2),
                ))
                .map_err(err)?;
                root.draw_text(
                    &count.to_string(),
                    &(FONT, 15).into_font().color(&BLACK),
                    (x0 + 8, y0 + 18),
                )
                .map_err(err)?;
            }
            let name = names.get(r).map(String::as_str).unwrap_or("");
            let y = (top + r * cell + 18) as i32;
            root.draw_text(name, &(FONT, 15).into_font().color(&BLACK), (8, y))
                .map_err(err)?;
        }
        for c in 0..n {
            let name = names.get(c).map(String::as_str).unwrap_or("");
            let style = (FONT, 14)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&BLACK);
            root.draw_text(
                name,
                &style,
                ((left + c * cell + 18) as i32, top as i32 - 6),
            )
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    save_png(path, buf, w as u32, h as u32)
}

/// A grid of test images, each framed and captioned with its predicted class: green when right,
/// red when wrong. Takes up to `count` images, a third of them mistakes where there are any, so
/// mistakes show; returns the indices shown, row by row, 8 to a row.
pub fn draw_predictions(
    path: &Path,
    set: &ImageSet,
    predictions: &[usize],
    names: &[String],
    count: usize,
) -> Result<Vec<usize>> {
    if predictions.len() != set.len() {
        return Err(crate::Error::ShapeMismatch {
            tensor: "predictions".into(),
            expected: vec![set.len()],
            found: vec![predictions.len()],
        });
    }
    let wrong: Vec<usize> = (0..set.len())
        .filter(|&i| predictions[i] != set.label(i))
        .collect();
    let right: Vec<usize> = (0..set.len())
        .filter(|&i| predictions[i] == set.label(i))
        .collect();
    // Mostly right images, as the model mostly is, and a share of mistakes.
    let n_wrong = wrong
        .len()
        .min(count / 3)
        .max(count.saturating_sub(right.len()));
    let mut chosen: Vec<usize> = wrong
        .iter()
        .take(n_wrong)
        .chain(right.iter().take(count - n_wrong.min(count)))
        .copied()
        .collect();
    chosen.sort_unstable();
    let rows = prediction_rows(set, predictions, names, &chosen);
    draw_grid(path, Some(PREDICTIONS_TITLE), &rows)?;
    Ok(chosen)
}

/// Class `i`'s name, or `class i` where `names` has none.
fn class_name(names: &[String], i: usize) -> String {
    names
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("class {i}"))
}

/// The prediction grid's rows: the `chosen` images, framed and captioned.
fn prediction_rows(
    set: &ImageSet,
    predictions: &[usize],
    names: &[String],
    chosen: &[usize],
) -> Vec<GridRow> {
    let name = |i: usize| class_name(names, i);
    chosen
        .chunks(PREDICTION_COLUMNS)
        .map(|chunk| GridRow {
            label: None,
            tiles: chunk
                .iter()
                .map(|&i| Tile {
                    rgb: set.image(i).to_vec(),
                    height: set.height(),
                    width: set.width(),
                    caption: name(predictions[i]),
                    color: if predictions[i] == set.label(i) {
                        RIGHT
                    } else {
                        WRONG
                    },
                    framed: true,
                })
                .collect(),
        })
        .collect()
}

const PREDICTIONS_TITLE: &str = "Predictions on test images: green right, red wrong";
const PREDICTION_COLUMNS: usize = 8;
/// The colour of a right prediction's frame and caption.
const RIGHT: RGBColor = RGBColor(0, 150, 0);
/// The colour of a wrong prediction's frame and caption.
const WRONG: RGBColor = RGBColor(220, 0, 0);

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
    let from = history.phase2_start().map_or(0, |e| e.epoch);
    match (history.unfreeze_epoch(), history.jump()) {
        (Some(e), Some(j)) => s.push_str(&format!(
            "- unfreeze point: epoch {e}, from the weights of epoch {from}; the jump (first phase-2 validation accuracy minus epoch {from}'s): **{:+.2} points**\n",
            100.0 * j
        )),
        (Some(e), None) => s.push_str(&format!(
            "- unfreeze point: epoch {e}, from the weights of epoch {from}; the jump is not measured (no validation images)\n"
        )),
        _ => s.push_str("- the backbone was never released (no phase 2)\n"),
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
    s.push_str("\n| class | test accuracy |\n| --- | --- |\n");
    for (i, acc) in test.per_class_accuracy().iter().enumerate() {
        let acc = acc.map_or("no images".to_string(), |a| format!("{:.1}%", 100.0 * a));
        s.push_str(&format!("| {} | {acc} |\n", name(i)));
    }
    s.push_str(
        "\n| epoch | phase | lr | train loss | train acc | valid loss | valid acc | seconds |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for e in &history.epochs {
        let loss = e.valid_loss.map_or("-".into(), |l| format!("{l:.4}"));
        let acc = (e.valid_accuracy).map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
        s.push_str(&format!(
            "| {} | {} | {:e} | {:.4} | {:.2}% | {loss} | {acc} | {:.1}{} |\n",
            e.epoch,
            e.phase,
            e.lr,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::grid::{FRAME, Layout};
    use crate::train::EpochRecord;

    fn decode(path: &Path) -> image::RgbImage {
        image::open(path).unwrap().to_rgb8()
    }

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
            })
            .collect();
        History {
            epochs,
            restored: Vec::new(),
        }
    }

    /// Columns of the loss panel where the unfreeze marker's grey runs down most of the chart.
    fn marker_columns(png: &image::RgbImage) -> Vec<u32> {
        (0..png.width() / 2)
            .filter(|&x| {
                let grey = (0..png.height())
                    .filter(|&y| {
                        let p = png.get_pixel(x, y).0;
                        (0..3).all(|c| p[c].abs_diff(MARKER[c]) <= 8)
                    })
                    .count();
                grey > 200
            })
            .collect()
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

    /// Phase 1 stopped early after epoch 5 of 10 (best epoch 3, restored); phase 2 ran as
    /// epochs 11 to 13, as the history numbers them. The curves stand each epoch at its number,
    /// and the marker just before epoch 11, not between the 5th and 6th epochs drawn.
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

    /// A run without validation draws no validation curve: not one pure red pixel (the
    /// validation colour).
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

    #[test]
    fn confusion_cells_follow_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        // automobile (1) is taken for truck (2) 4 times in 10; truck for automobile once.
        let confusion = vec![vec![10, 0, 0], vec![0, 6, 4], vec![0, 1, 9]];
        let names: Vec<String> = ["airplane", "automobile", "truck"]
            .map(String::from)
            .to_vec();
        draw_confusion(&path, &confusion, &names).unwrap();
        let png = decode(&path);
        // A cell's colour, sampled in its lower right corner, away from the count's text.
        let cell = |r: usize, c: usize| {
            let x = CONFUSION_LEFT + c * CONFUSION_CELL + CONFUSION_CELL - 6;
            let y = CONFUSION_TOP + r * CONFUSION_CELL + CONFUSION_CELL - 6;
            png.get_pixel(x as u32, y as u32).0
        };
        for r in 0..3 {
            let [red, green, blue] = cell(r, r);
            assert!(green > red && green > blue, "diagonal {r} is green");
        }
        // Deeper green for a larger share right: 10/10 over 9/10 over 6/10.
        assert!(cell(0, 0)[0] < cell(2, 2)[0] && cell(2, 2)[0] < cell(1, 1)[0]);
        // Mistakes red, deeper for more: automobile->truck (4) over truck->automobile (1).
        let (many, few) = (cell(1, 2), cell(2, 1));
        assert!(many[0] == 255 && many[1] < few[1] && few[1] < 255);
        assert_eq!(cell(0, 1), [255, 255, 255], "no count, no colour");
    }

    #[test]
    fn exactly_the_wrong_predictions_have_red_frames() {
        let side = 8;
        let n = 20;
        let pixels: Vec<u8> = (0..n * 3 * side * side).map(|i| (i % 200) as u8).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let set = ImageSet::new(pixels, labels.clone(), side, side).unwrap();
        let wrong = [3, 7, 11];
        let predictions: Vec<usize> = (0..n)
            .map(|i| {
                if wrong.contains(&i) {
                    (labels[i] + 1) % 3
                } else {
                    labels[i]
                }
            })
            .collect();
        let names: Vec<String> = ["cat", "dog", "frog"].map(String::from).to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.png");
        let chosen = draw_predictions(&path, &set, &predictions, &names, 16).unwrap();
        assert_eq!(chosen.len(), 16);
        assert!(wrong.iter().all(|w| chosen.contains(w)), "mistakes shown");
        let png = decode(&path);
        let rows = prediction_rows(&set, &predictions, &names, &chosen);
        let layout = Layout::new(true, &rows);
        assert_eq!((png.width() as usize, png.height() as usize), layout.size);
        for (k, &i) in chosen.iter().enumerate() {
            let (r, c) = (k / PREDICTION_COLUMNS, k % PREDICTION_COLUMNS);
            let [x, y, w, h] = layout.image_rect(r, c, &rows[r].tiles[c]);
            let frame = png.get_pixel((x - FRAME + 1) as u32, (y + h / 2) as u32).0;
            let want = if wrong.contains(&i) { WRONG } else { RIGHT };
            assert_eq!(frame, [want.0, want.1, want.2], "image {i}'s frame");
            // Inside the frame, the image itself: its top-left pixel, enlarged.
            let inside = png.get_pixel(x as u32, y as u32).0;
            let plane = side * side;
            let first = set.image(i);
            assert_eq!(inside, [first[0], first[plane], first[2 * plane]]);
            let _ = w;
        }
    }
}
