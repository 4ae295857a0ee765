//! The report of a training run: curves, confusion matrix, predictions and a summary.

use std::path::Path;

use plotters::prelude::*;

use crate::data::ImageSet;
use crate::error::Result;
use crate::files::write_atomic;
use crate::report::{FONT, GridRow, Tile, draw_grid, drawing_error, register_font, save_png};
use crate::train::{Evaluation, History};

/// Picks the training and validation value of one curve from an epoch.
type Pick = fn(&crate::train::EpochRecord) -> (f64, f64);

/// Loss and accuracy per epoch, training and validation, with the unfreeze point marked and the
/// jump written on it.
pub fn draw_curves(path: &Path, history: &History) -> Result<()> {
    let (buf, _) = render_curves(path, history)?;
    save_png(path, buf, CURVES_SIZE.0, CURVES_SIZE.1)
}

/// The curves picture's width and height.
const CURVES_SIZE: (u32, u32) = (1100, 460);
/// The unfreeze marker's colour (60% black on white).
const MARKER: [u8; 3] = [102, 102, 102];

/// Draws the curves into an RGB buffer of [`CURVES_SIZE`]; also returns the pixel column of each
/// epoch in the loss panel.
fn render_curves(path: &Path, history: &History) -> Result<(Vec<u8>, Vec<i32>)> {
    register_font();
    let (w, h) = CURVES_SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let mut epoch_x = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e| drawing_error(path, e);
        let (left, right) = root.split_horizontally(w / 2);
        let epochs = history.epochs.len().max(1) as f64;
        let unfreeze = history.unfreeze_epoch().map(|e| e as f64 - 0.5);
        let jump = history.jump();
        let panels: [(&DrawingArea<_, _>, &str, Pick); 2] = [
            (&left, "loss", |e| (e.train_loss, e.valid_loss)),
            (&right, "accuracy (%)", |e| {
                (100.0 * e.train_accuracy, 100.0 * e.valid_accuracy)
            }),
        ];
        for (area, name, pick) in panels {
            let values: Vec<(f64, f64)> = history.epochs.iter().map(pick).collect();
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(a, b)| {
                    (lo.min(a).min(b), hi.max(a).max(b))
                });
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FONT, 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.5..epochs + 0.5, (lo - pad)..(hi + pad))
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
            let x = |i: usize| (i + 1) as f64;
            if epoch_x.is_empty() {
                epoch_x = (0..values.len())
                    .map(|i| chart.backend_coord(&(x(i), lo)).0)
                    .collect();
            }
            let train: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (x(i), v.0))
                .collect();
            let valid: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (x(i), v.1))
                .collect();
            chart
                .draw_series(LineSeries::new(train.clone(), BLUE.stroke_width(2)))
                .map_err(err)?
                .label("training")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
            chart
                .draw_series(train.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(valid.clone(), RED.stroke_width(2)))
                .map_err(err)?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
            chart
                .draw_series(valid.iter().map(|&p| Circle::new(p, 3, RED.filled())))
                .map_err(err)?;
            if let Some(u) = unfreeze {
                let line = vec![(u, lo - pad), (u, hi + pad)];
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        line,
                        RGBColor(MARKER[0], MARKER[1], MARKER[2]).stroke_width(2),
                    )))
                    .map_err(err)?;
                let text = match (name, jump) {
                    ("accuracy (%)", Some(j)) => format!("unfreeze: jump {:+.1} pts", 100.0 * j),
                    _ => "unfreeze".to_string(),
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
    match (history.unfreeze_epoch(), history.jump()) {
        (Some(e), Some(j)) => s.push_str(&format!(
            "- unfreeze point: epoch {e}; the jump (first phase-2 minus last phase-1 validation accuracy): **{:+.2} points**\n",
            100.0 * j
        )),
        _ => s.push_str("- the backbone was never released (no phase 2)\n"),
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
        s.push_str(&format!("| {} | {:.1}% |\n", name(i), 100.0 * acc));
    }
    s.push_str(
        "\n| epoch | phase | lr | train loss | train acc | valid loss | valid acc | seconds |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for e in &history.epochs {
        s.push_str(&format!(
            "| {} | {} | {:e} | {:.4} | {:.2}% | {:.4} | {:.2}% | {:.1}{} |\n",
            e.epoch,
            e.phase,
            e.lr,
            e.train_loss,
            100.0 * e.train_accuracy,
            e.valid_loss,
            100.0 * e.valid_accuracy,
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
                valid_loss: 2.1 - 0.2 * i as f64,
                valid_accuracy: 0.08 * i as f64 + 0.1 * f64::from(phase - 1),
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
