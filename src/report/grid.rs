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
    /// Text under the image; each line (`\n`) under the one before.
    pub caption: String,
    /// Colour of the caption (e.g. green for a right prediction, red for a wrong one).
    pub color: RGBColor,
    /// Draw a frame of [`color`](Self::color) around the image.
    pub framed: bool,
}

/// A row of a grid, with an optional label on its left.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRow {
    /// Text left of the row (a class name), if any.
    pub label: Option<String>,
    /// The row's images.
    pub tiles: Vec<Tile>,
}

/// Height of a caption's line, in pixels.
pub(crate) const CAPTION: usize = 20;
const GAP: usize = 6;
const TITLE: usize = 34;
/// Width of a tile's frame, in pixels.
pub(crate) const FRAME: usize = 3;
/// The longest side an image is shown at.
const MAX_SIDE: usize = 144;

/// The size an image is shown at: small images (CIFAR's 32x32) three times larger, sharp;
/// photos scaled to at most 144 pixels on their longer side.
fn display_size(tile: &Tile) -> (usize, usize) {
    let side = tile.height.max(tile.width).max(1);
    let target = if 3 * side <= MAX_SIDE {
        3 * side
    } else {
        MAX_SIDE.min(side)
    };
    let scale = |v: usize| ((v * target) as f64 / side as f64).round().max(1.0) as usize;
    (scale(tile.width), scale(tile.height))
}

/// `text`, shortened in the middle (`a_very_lo…ber_one`) to at most `max` pixels in `font`:
/// long class names ran over their neighbours' captions. The middle goes, so that names that
/// differ only at their ends stay apart.
pub(crate) fn fit_width(text: &str, font: &FontDesc<'_>, max: u32) -> String {
    let width = |t: &str| font.box_size(t).map_or(0, |(w, _)| w);
    if width(text) <= max {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (0..chars.len()).rev() {
        let head = keep.div_ceil(2);
        let tail = keep - head;
        let short: String = (chars[..head].iter())
            .chain(std::iter::once(&'…'))
            .chain(&chars[chars.len() - tail..])
            .collect();
        if width(&short) <= max {
            return short;
        }
    }
    "…".to_string()
}

/// The most lines any caption of `rows` has (at least one).
fn caption_lines(rows: &[GridRow]) -> usize {
    (rows.iter().flat_map(|r| &r.tiles))
        .map(|t| t.caption.lines().count())
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Where things go in a grid.
pub(crate) struct Layout {
    cell_w: usize,
    cell_h: usize,
    label_w: usize,
    top: usize,
    /// The PNG's width and height.
    pub size: (usize, usize),
}

impl Layout {
    pub(crate) fn new(title: bool, rows: &[GridRow]) -> Self {
        let sizes = || rows.iter().flat_map(|r| &r.tiles).map(display_size);
        let cell_w = sizes().map(|s| s.0).max().unwrap_or(96).max(80) + 2 * FRAME;
        let cell_h =
            sizes().map(|s| s.1).max().unwrap_or(96) + 2 * FRAME + caption_lines(rows) * CAPTION;
        let label_w = if rows.iter().any(|r| r.label.is_some()) {
            110
        } else {
            0
        };
        let columns = rows.iter().map(|r| r.tiles.len()).max().unwrap_or(1).max(1);
        let top = if title { TITLE } else { GAP };
        let size = (
            label_w + columns * (cell_w + GAP) + GAP,
            top + rows.len().max(1) * (cell_h + GAP),
        );
        Self {
            cell_w,
            cell_h,
            label_w,
            top,
            size,
        }
    }

    /// Where captions start, below a cell's top.
    pub(crate) fn caption_y(&self, rows: &[GridRow]) -> usize {
        self.cell_h - caption_lines(rows) * CAPTION + 2
    }

    pub(crate) fn cell(&self, r: usize, c: usize) -> (usize, usize) {
        (
            self.label_w + GAP + c * (self.cell_w + GAP),
            self.top + r * (self.cell_h + GAP),
        )
    }

    /// The image of tile (`r`, `c`) as x, y, width, height in pixels (its frame lies around).
    pub(crate) fn image_rect(&self, r: usize, c: usize, tile: &Tile) -> [usize; 4] {
        let (x, y) = self.cell(r, c);
        let (w, h) = display_size(tile);
        [x + (self.cell_w - w) / 2, y + FRAME, w, h]
    }
}

/// Draws `rows` of images under an optional title and writes the PNG to `path`. Small images
/// are shown three times larger with nearest-neighbour sampling so they stay sharp; photos are
/// scaled to at most 144 pixels on their longer side.
pub fn draw_grid(path: &Path, title: Option<&str>, rows: &[GridRow]) -> Result<()> {
    register_font();
    let mut layout = Layout::new(title.is_some(), rows);
    // At least as wide as the title, however few the images.
    if let Some(title) = title {
        let text = (FONT, 22)
            .into_font()
            .box_size(title)
            .map_or(0, |(w, _)| w as usize);
        layout.size.0 = layout.size.0.max(text + 2 * GAP);
    }
    let (width, height) = layout.size;
    let mut buf = vec![255u8; width * height * 3];

    // Pixels first, straight into the buffer; plotters then writes the text over it.
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.tiles.iter().enumerate() {
            let rect = layout.image_rect(r, c, tile);
            if tile.framed {
                let [x, y, w, h] = rect;
                let color = [tile.color.0, tile.color.1, tile.color.2];
                fill(
                    &mut buf,
                    width,
                    [x - FRAME, y - FRAME, w + 2 * FRAME, h + 2 * FRAME],
                    color,
                );
            }
            blit(&mut buf, width, tile, rect);
        }
    }
    let caption_y = layout.caption_y(rows) as i32;
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
            let y0 = layout.cell(r, 0).1 as i32;
            if let Some(label) = &row.label {
                let style = (FONT, 17).into_font().color(&BLACK);
                let y = y0 + caption_y / 2 - 8;
                root.draw_text(label, &style, (GAP as i32, y))
                    .map_err(err)?;
            }
            for (c, tile) in row.tiles.iter().enumerate() {
                let x0 = layout.cell(r, c).0 as i32;
                let font = (FONT, 15).into_font();
                let style = font.color(&tile.color);
                for (i, line) in tile.caption.lines().enumerate() {
                    let y = y0 + caption_y + (i * CAPTION) as i32;
                    let line = fit_width(line, &font, (layout.cell_w - 4) as u32);
                    root.draw_text(&line, &style, (x0 + 2, y)).map_err(err)?;
                }
            }
        }
        root.present().map_err(err)?;
    }
    save_png(path, buf, width as u32, height as u32)
}

fn fill(buf: &mut [u8], stride: usize, [x0, y0, w, h]: [usize; 4], color: [u8; 3]) {
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            buf[(y * stride + x) * 3..][..3].copy_from_slice(&color);
        }
    }
}

/// Copies a planar tile into the interleaved buffer at `rect`, scaled: nearest neighbour when
/// enlarging (sharp pixels), bilinear with antialiasing when shrinking.
fn blit(buf: &mut [u8], stride: usize, tile: &Tile, [x0, y0, w, h]: [usize; 4]) {
    let rgb = if w < tile.width {
        crate::data::resize_to(&tile.rgb, tile.height, tile.width, h, w)
    } else {
        tile.rgb.clone()
    };
    let (th, tw) = if w < tile.width {
        (h, w)
    } else {
        (tile.height, tile.width)
    };
    let plane = th * tw;
    for y in 0..h {
        for x in 0..w {
            let src = (y * th / h) * tw + x * tw / w;
            let dst = ((y0 + y) * stride + x0 + x) * 3;
            for c in 0..3 {
                buf[dst + c] = rgb[c * plane + src];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_captions_are_shortened_in_the_middle_to_their_cell() {
        register_font();
        let font = (FONT, 15).into_font();
        let width = |t: &str| font.box_size(t).unwrap().0;
        assert_eq!(fit_width("cat", &font, 80), "cat");
        for name in [
            "a_very_long_class_name_number_one",
            "Straßenbahn mit sehr langem Namen und Ümlauten",
        ] {
            let short = fit_width(name, &font, 90);
            assert!(width(&short) <= 90, "{short}: {} px", width(&short));
            assert!(short.contains('…') && short.len() > 6, "{short}");
            // Both ends kept: names differing only at their ends stay apart.
            assert_eq!(short.chars().next(), name.chars().next());
            assert_eq!(short.chars().last(), name.chars().last());
        }
        // A red caption far wider than its cell draws no red beyond the cell.
        let long = "a_very_long_class_name_number_one\ntrue: a_very_long_class_name_number_two";
        let tile = |caption: &str| Tile {
            rgb: vec![90; 3 * 4 * 4],
            height: 4,
            width: 4,
            caption: caption.into(),
            color: RED,
            framed: false,
        };
        let rows = vec![GridRow {
            label: None,
            tiles: vec![tile(long), tile("x")],
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        draw_grid(&path, None, &rows).unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        let layout = Layout::new(false, &rows);
        let (second, top) = layout.cell(0, 1);
        let caption_top = (top + layout.caption_y(&rows)) as u32;
        // The second cell's caption is one "x"; anything red right of its first 12 pixels is
        // the first caption running over.
        let over = (second as u32 + 14..png.width()).any(|x| {
            (caption_top..png.height()).any(|y| {
                let p = png.get_pixel(x, y).0;
                p[0] > 200 && p[1] < 80 && p[2] < 80
            })
        });
        assert!(!over, "the long caption runs into its neighbour");
    }

    #[test]
    fn grid_png_has_the_images_and_the_text() {
        let tile = |v: u8, caption: &str, color| Tile {
            rgb: vec![v; 3 * 4 * 4],
            height: 4,
            width: 4,
            caption: caption.into(),
            color,
            framed: false,
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
