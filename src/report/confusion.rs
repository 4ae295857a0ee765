//! The confusion matrix as a heat map.

use std::path::Path;

use plotters::prelude::*;

use crate::error::Result;
use crate::report::grid::fit_width;
use crate::report::{FONT, drawing_error, register_font, save_png};

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
            // Long names shortened in the middle to their margin: they ran over the cells.
            let name = names.get(r).map(String::as_str).unwrap_or("");
            let font = (FONT, 15).into_font();
            let name = fit_width(name, &font, (left - 14) as u32);
            let y = (top + r * cell + 18) as i32;
            root.draw_text(&name, &font.color(&BLACK), (8, y))
                .map_err(err)?;
        }
        for c in 0..n {
            let name = names.get(c).map(String::as_str).unwrap_or("");
            // Below the title.
            let name = fit_width(name, &(FONT, 14).into_font(), (top - 40) as u32);
            let style = (FONT, 14)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&BLACK);
            root.draw_text(
                &name,
                &style,
                ((left + c * cell + 18) as i32, top as i32 - 6),
            )
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    save_png(path, buf, w as u32, h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::decode_png as decode;

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
    fn long_class_names_stay_in_their_margins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let names: Vec<String> = [
            "a_very_long_class_name_number_one",
            "a_very_long_class_name_number_two",
            "automobile",
        ]
        .map(String::from)
        .to_vec();
        let confusion = vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 0, 1]];
        draw_confusion(&path, &confusion, &names).unwrap();
        let png = decode(&path);
        if let Ok(keep) = std::env::var("RESNET_TRANSFER_KEEP_CONFUSION") {
            png.save(keep).unwrap();
        }
        let dark = |x: u32, y: u32| png.get_pixel(x, y).0.iter().all(|&v| v < 100);
        // No text between the row names' margin and the first cell's edge: a name that ran
        // over would darken it.
        let gap = CONFUSION_LEFT as u32 - 5..CONFUSION_LEFT as u32;
        let rows = CONFUSION_TOP as u32..(CONFUSION_TOP + 3 * CONFUSION_CELL) as u32;
        assert!(
            !gap.clone().any(|x| rows.clone().any(|y| dark(x, y))),
            "row names run over"
        );
        // Column names stay below the title's line.
        let columns = CONFUSION_LEFT as u32..(CONFUSION_LEFT + 3 * CONFUSION_CELL) as u32;
        assert!(
            !columns.clone().any(|x| (30..36).any(|y| dark(x, y))),
            "column names reach the title"
        );
    }
}
