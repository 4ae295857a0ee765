//! The prediction grid: test images framed green when right and red when wrong.

use std::path::Path;

use plotters::style::RGBColor;

use crate::data::ImageSet;
use crate::error::Result;
use crate::report::{GridRow, Tile, class_name, draw_grid};

/// A grid of test images, each framed and captioned with its predicted class: green when right,
/// red when wrong, with the true class on a second line (`true: dog`). Takes up to `count` images, a third of them mistakes where there are any, so
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
    let chosen = choose(set, predictions, count);
    let rows = prediction_rows(set, predictions, names, &chosen)?;
    draw_grid(path, Some(PREDICTIONS_TITLE), &rows)?;
    Ok(chosen)
}

/// Up to `count` images of `set`, a third of them mistakes where there are any, so mistakes
/// show; in the set's order.
pub(crate) fn choose(set: &ImageSet, predictions: &[usize], count: usize) -> Vec<usize> {
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
    chosen
}

/// The prediction grid's rows: the `chosen` images, framed and captioned.
fn prediction_rows(
    set: &ImageSet,
    predictions: &[usize],
    names: &[String],
    chosen: &[usize],
) -> Result<Vec<GridRow>> {
    let name = |i: usize| class_name(names, i);
    let tile = |i: usize| -> Result<Tile> {
        Ok(Tile {
            rgb: set.image(i)?.into_owned(),
            height: set.height(),
            width: set.width(),
            caption: if predictions[i] == set.label(i) {
                name(predictions[i])
            } else {
                format!("{}\ntrue: {}", name(predictions[i]), name(set.label(i)))
            },
            color: if predictions[i] == set.label(i) {
                RIGHT
            } else {
                WRONG
            },
            framed: true,
        })
    };
    chosen
        .chunks(PREDICTION_COLUMNS)
        .map(|chunk| {
            Ok(GridRow {
                label: None,
                tiles: chunk.iter().map(|&i| tile(i)).collect::<Result<_>>()?,
            })
        })
        .collect()
}

const PREDICTIONS_TITLE: &str = "Predictions on test images: green right, red wrong";
const PREDICTION_COLUMNS: usize = 8;
/// The colour of a right prediction's frame and caption.
pub(crate) const RIGHT: RGBColor = RGBColor(0, 150, 0);
/// The colour of a wrong prediction's frame and caption.
pub(crate) const WRONG: RGBColor = RGBColor(220, 0, 0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::decode_png as decode;
    use crate::report::grid::{CAPTION, FRAME, Layout};

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
        let rows = prediction_rows(&set, &predictions, &names, &chosen).unwrap();
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
            let first = set.image(i).unwrap();
            assert_eq!(inside, [first[0], first[plane], first[2 * plane]]);
            let _ = w;
            // A mistake's caption names the prediction, then the true class on a second line,
            // drawn in its red; a right one names the class alone.
            let caption = &rows[r].tiles[c].caption;
            let (predicted, truth) = (&names[predictions[i]], &names[labels[i]]);
            let red_in_line = |line: usize| {
                let (x0, y0) = layout.cell(r, c);
                let top = y0 + layout.caption_y(&rows) + line * CAPTION;
                (top..top + CAPTION - 4).any(|yy| {
                    (x0..x0 + 60).any(|xx| {
                        let p = png.get_pixel(xx as u32, yy as u32).0;
                        p[0] > 150 && p[1] < 110 && p[2] < 110
                    })
                })
            };
            if wrong.contains(&i) {
                assert_eq!(caption, &format!("{predicted}\ntrue: {truth}"));
                assert!(
                    red_in_line(0) && red_in_line(1),
                    "image {i}'s two red lines"
                );
            } else {
                assert_eq!(caption, predicted);
            }
        }
    }
}
