//! The report of a training run: curves, confusion matrix, predictions and a summary.

use std::path::Path;

use plotters::prelude::*;

use crate::data::ImageSet;
use crate::data::download::write_atomic;
use crate::error::Result;
use crate::report::{FONT, GridRow, Tile, draw_grid, drawing_error, register_font, save_png};
use crate::train::{Evaluation, History};

/// Picks the training and validation value of one curve from an epoch.
type Pick = fn(&crate::train::EpochRecord) -> (f64, f64);

/// Loss and accuracy per epoch, training and validation, with the unfreeze point marked and the
/// jump written on it.
pub fn draw_curves(path: &Path, history: &History) -> Result<()> {
    register_font();
    let (w, h) = (1100u32, 460u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
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
                .label_style((FONT, 14))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(err)?;
            let x = |i: usize| (i + 1) as f64;
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
                        BLACK.mix(0.6).stroke_width(2),
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
    save_png(path, buf, w, h)
}

/// The confusion matrix as a heat map with counts, true classes down, predicted across.
pub fn draw_confusion(path: &Path, confusion: &[Vec<usize>], names: &[String]) -> Result<()> {
    register_font();
    let n = confusion.len().max(1);
    let cell = 52usize;
    let (left, top) = (120usize, 110usize);
    let (w, h) = (left + n * cell + 20, top + n * cell + 50);
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

/// A grid of test images, each captioned with its predicted class: green when right, red when
/// wrong. Takes the first `count` images, mixing in every wrong one it can so mistakes show.
pub fn draw_predictions(
    path: &Path,
    set: &ImageSet,
    predictions: &[usize],
    names: &[String],
    count: usize,
) -> Result<()> {
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
    let columns = 8;
    let name = |i: usize| {
        names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    let rows: Vec<GridRow> = chosen
        .chunks(columns)
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
                        RGBColor(0, 150, 0)
                    } else {
                        RED
                    },
                })
                .collect(),
        })
        .collect();
    draw_grid(
        path,
        Some("Predictions on test images: green right, red wrong"),
        &rows,
    )
}

/// `summary.md`: the numbers a person wants on one screen.
pub fn write_summary(
    path: &Path,
    history: &History,
    test: &Evaluation,
    names: &[String],
    extra: &[(String, String)],
) -> Result<()> {
    let name = |i: usize| {
        names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
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
