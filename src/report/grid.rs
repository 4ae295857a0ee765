//! Grids of labelled images: the dataset's "ten categories" slide and the predictions slide.

use std::path::Path;

use plotters::prelude::*;

use crate::error::Result;
use crate::report::{FONT, drawing_error, register_font, save_png};

/// One image in a grid, with its caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Planar RGB pixels (all red, then green, then blue).
    pub rgb: Vec<u8>,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Text under the image.
    pub caption: String,
    /// Colour of the caption (e.g. green for a right prediction, red for a wrong one).
    pub color: RGBColor,
}

/// A row of a grid, with an optional label on its left.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRow {
    /// Text left of the row (a class name), if any.
    pub label: Option<String>,
    /// The row's images.
    pub tiles: Vec<Tile>,
}

const SCALE: usize = 3;
const CAPTION: usize = 20;
const GAP: usize = 6;
const TITLE: usize = 34;

/// Draws `rows` of images, each scaled up 3 times with nearest-neighbour sampling so small images
/// stay sharp, under an optional title, and writes the PNG to `path`.
pub fn draw_grid(path: &Path, title: Option<&str>, rows: &[GridRow]) -> Result<()> {
    register_font();
    let cell_w = rows
        .iter()
        .flat_map(|r| &r.tiles)
        .map(|t| t.width * SCALE)
        .max()
        .unwrap_or(32 * SCALE)
        .max(80);
    let cell_h = rows
        .iter()
        .flat_map(|r| &r.tiles)
        .map(|t| t.height * SCALE)
        .max()
        .unwrap_or(32 * SCALE)
        + CAPTION;
    let label_w = if rows.iter().any(|r| r.label.is_some()) {
        110
    } else {
        0
    };
    let columns = rows.iter().map(|r| r.tiles.len()).max().unwrap_or(1).max(1);
    let top = if title.is_some() { TITLE } else { GAP };
    let width = label_w + columns * (cell_w + GAP) + GAP;
    let height = top + rows.len().max(1) * (cell_h + GAP);
    let mut buf = vec![255u8; width * height * 3];

    // Pixels first, straight into the buffer; plotters then writes the text over it.
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.tiles.iter().enumerate() {
            let x0 = label_w + GAP + c * (cell_w + GAP) + (cell_w - tile.width * SCALE) / 2;
            let y0 = top + r * (cell_h + GAP);
            blit(&mut buf, width, tile, x0, y0);
        }
    }
    {
        let backend = BitMapBackend::with_buffer(&mut buf, (width as u32, height as u32));
        let root = backend.into_drawing_area();
        let err = |e| drawing_error(path, e);
        if let Some(title) = title {
            let style = (FONT, 22).into_font().color(&BLACK);
            root.draw_text(title, &style, (GAP as i32, 6))
                .map_err(err)?;
        }
        for (r, row) in rows.iter().enumerate() {
            let y0 = (top + r * (cell_h + GAP)) as i32;
            if let Some(label) = &row.label {
                let style = (FONT, 17).into_font().color(&BLACK);
                let y = y0 + (cell_h as i32 - CAPTION as i32) / 2 - 8;
                root.draw_text(label, &style, (GAP as i32, y))
                    .map_err(err)?;
            }
            for (c, tile) in row.tiles.iter().enumerate() {
                let x0 = (label_w + GAP + c * (cell_w + GAP)) as i32;
                let style = (FONT, 15).into_font().color(&tile.color);
                let y = y0 + (cell_h - CAPTION) as i32 + 2;
                root.draw_text(&tile.caption, &style, (x0 + 2, y))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    save_png(path, buf, width as u32, height as u32)
}

fn blit(buf: &mut [u8], stride: usize, tile: &Tile, x0: usize, y0: usize) {
    let plane = tile.height * tile.width;
    for y in 0..tile.height * SCALE {
        for x in 0..tile.width * SCALE {
            let src = (y / SCALE) * tile.width + x / SCALE;
            let dst = ((y0 + y) * stride + x0 + x) * 3;
            for c in 0..3 {
                buf[dst + c] = tile.rgb[c * plane + src];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_png_has_the_images_and_the_text() {
        let tile = |v: u8, caption: &str, color| Tile {
            rgb: vec![v; 3 * 4 * 4],
            height: 4,
            width: 4,
            caption: caption.into(),
            color,
        };
        let rows = vec![
            GridRow {
                label: Some("cat".into()),
                tiles: vec![tile(0, "cat", GREEN), tile(128, "dog", RED)],
            },
            GridRow {
                label: None,
                tiles: vec![tile(50, "ship", GREEN)],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        draw_grid(&path, Some("Samples"), &rows).unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        // Somewhere there is a black image pixel, a mid-grey one, and red caption text.
        let pixels: Vec<[u8; 3]> = png.pixels().map(|p| p.0).collect();
        assert!(pixels.contains(&[0, 0, 0]));
        assert!(pixels.contains(&[128, 128, 128]));
        assert!(
            pixels.iter().any(|p| p[0] > 200 && p[1] < 80 && p[2] < 80),
            "red text"
        );
        assert!(
            pixels.iter().any(|p| p[1] > 100 && p[0] < 60 && p[2] < 60),
            "green text"
        );
    }
}
