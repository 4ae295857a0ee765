//! Pictures a person looks at: grids of labelled images, training curves, confusion matrices.
//!
//! Everything is drawn with `plotters` into an RGB buffer, encoded as PNG and written atomically.
//! Text uses the Ubuntu font bundled by `epaint_default_fonts`, so no system font is needed.

mod grid;
mod run;

pub use grid::{GridRow, Tile, draw_grid};
pub use run::{draw_confusion, draw_curves, draw_predictions, write_summary};

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
