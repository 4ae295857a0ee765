//! Users' own photos: a folder per class, read into an [`ImageSet`] of one square size.

use std::path::{Path, PathBuf};

use crate::data::images::ImageSet;
use crate::data::preprocess::{from_interleaved, resize};
use crate::error::{Error, Result};

/// Image file endings this crate decodes.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Reads one PNG or JPEG file as planar RGB, resized to `size` x `size` (not resized when it
/// already has that size). Returns the pixels.
pub fn read_image(path: &Path, size: usize) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::Image {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let planar = from_interleaved(rgb.as_raw(), w * h);
    Ok(resize(&planar, h, w, size))
}

/// Photos in `root/<class>/<image>`: class names are the sub-folders' names, sorted; every image
/// is resized to `size` x `size`. Files that are not PNG or JPEG by their ending are skipped.
pub fn read_image_folder(root: &Path, size: usize) -> Result<(ImageSet, Vec<String>)> {
    let mut classes: Vec<PathBuf> = list(root)?.into_iter().filter(|p| p.is_dir()).collect();
    classes.sort();
    if classes.is_empty() {
        return Err(Error::NotFound {
            what: "class folders".into(),
            looked_in: root.display().to_string(),
            hint: "Put each class's images in a folder of its own: ROOT/cat/1.jpg, ROOT/dog/2.png"
                .into(),
        });
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut files = list(dir)?;
        files.sort();
        for file in files.iter().filter(|f| is_image(f)) {
            pixels.extend(read_image(file, size)?);
            labels.push(label);
        }
    }
    let names = classes
        .iter()
        .map(|c| {
            c.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok((ImageSet::new(pixels, labels, size, size)?, names))
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    entries
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
        .collect()
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}
