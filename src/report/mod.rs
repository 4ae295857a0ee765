//! The report of a run, and pictures a person looks at: training curves (`curves.rs`), the
//! confusion matrix (`confusion.rs`), grids of labelled images (`grid.rs`) such as the prediction
//! grid (`predictions.rs`), heat maps over photos (`heat.rs`: Grad-CAM's explained photos and
//! `explanations.png`), and `summary.md` (`summary.rs`).
//!
//! Everything is drawn with `plotters` into an RGB buffer, encoded as PNG and written atomically.
//! Text uses the Ubuntu font bundled by `epaint_default_fonts`, so no system font is needed.

mod confusion;
mod curves;
mod grid;
mod heat;
mod lr_finder;
mod predictions;
pub(crate) mod summary;

pub use confusion::draw_confusion;
pub use curves::draw_curves;
pub use grid::{GridRow, Tile, draw_grid};
pub use heat::{
    draw_explained_photo, draw_explanations, explanation_choice, heat_color, overlay_heat_map,
    upsample,
};
pub use lr_finder::draw_lr_finder;
pub use predictions::draw_predictions;
pub use summary::write_summary;

use std::path::Path;
use std::sync::Once;

use crate::error::{Error, Result};
use crate::files::write_atomic;

/// The font family every drawing uses.
pub(crate) const FONT: &str = "sans-serif";

/// Registers the bundled font with plotters, once per process.
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(
            FONT,
            plotters::style::FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .map_err(|_| ())
        .expect("the bundled font parses");
    });
}

/// Encodes an RGB buffer as PNG and writes it atomically.
pub(crate) fn save_png(path: &Path, rgb: Vec<u8>, width: u32, height: u32) -> Result<()> {
    let image = image::RgbImage::from_raw(width, height, rgb).expect("buffer matches the size");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &png)
}

/// Turns a plotters drawing error into the crate's error, naming the file being drawn.
pub(crate) fn drawing_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: format!("drawing failed: {e}"),
    }
}

/// Class `i`'s name, or `class i` where `names` has none.
pub(crate) fn class_name(names: &[String], i: usize) -> String {
    names
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("class {i}"))
}

/// Reads back a PNG the tests drew.
#[cfg(test)]
pub(crate) fn decode_png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}
