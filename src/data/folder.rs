//! Users' own photos: a folder per class (torchvision's `ImageFolder`, Keras's
//! `image_dataset_from_directory`), read into an [`ImageSet`] of one square size.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::data::images::ImageSet;
use crate::data::preprocess::from_interleaved;
use crate::error::{Error, Result};

/// Image file endings this crate decodes.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Reads one PNG or JPEG file as planar RGB of `size` x `size`: the short side resized to `size`
/// (bilinear, antialiased when shrinking), then the centre cropped, as torchvision's
/// `Resize(size)` + `CenterCrop(size)` and Keras's `crop_to_aspect_ratio` do, so photos keep
/// their proportions. Greyscale and RGBA photos become RGB (alpha dropped).
pub fn read_image(path: &Path, size: usize) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::Image {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    if size == 0 {
        return Err(Error::invalid_config("input_size", "at least 1", 0));
    }
    let side = size as u32;
    let img = if (img.width(), img.height()) == (side, side) {
        img
    } else {
        img.resize_to_fill(side, side, FilterType::Triangle)
    };
    Ok(from_interleaved(img.to_rgb8().as_raw(), size * size))
}

/// Photos read from a folder per class.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// The images, square, labelled by class folder.
    pub images: ImageSet,
    /// Class names: the sub-folders' names, sorted (as torchvision and Keras sort them).
    pub class_names: Vec<String>,
    /// The file each image came from, in the images' order.
    pub files: Vec<PathBuf>,
    /// Files with an image ending that did not decode, with the decoder's reason (only when
    /// reading with `skip_bad`; otherwise the first one is an error).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Reads photos in `root/<class>/<image>`: class names are the sub-folders' names, sorted; every
/// image is resized and centre-cropped to `size` x `size` ([`read_image`]). Files without a
/// PNG or JPEG ending are ignored. A file with such an ending that does not decode is an
/// [`Error::Image`] naming it, unless `skip_bad` is set: then it is left out and listed in
/// [`ImageFolder::skipped`].
///
/// ```no_run
/// let photos = resnet_transfer::data::read_image_folder("photos".as_ref(), 224, false)?;
/// println!("{} photos of {:?}", photos.images.len(), photos.class_names);
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
pub fn read_image_folder(root: &Path, size: usize, skip_bad: bool) -> Result<ImageFolder> {
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
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut found: Vec<PathBuf> = list(dir)?.into_iter().filter(|f| is_image(f)).collect();
        found.sort();
        labels.extend(std::iter::repeat_n(label, found.len()));
        files.extend(found);
    }
    // Decoding is most of the time; photos decode independently.
    let decoded: Vec<Result<Vec<u8>>> = files.par_iter().map(|f| read_image(f, size)).collect();
    let (mut pixels, mut kept_labels, mut kept_files, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((file, label), result) in files.into_iter().zip(labels).zip(decoded) {
        match result {
            Ok(rgb) => {
                pixels.extend(rgb);
                kept_labels.push(label);
                kept_files.push(file);
            }
            Err(Error::Image { path, reason }) if skip_bad => skipped.push((path, reason)),
            Err(e) => return Err(e),
        }
    }
    let class_names: Vec<String> = classes
        .iter()
        .map(|c| {
            c.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if kept_labels.is_empty() {
        return Err(Error::NotFound {
            what: "images (PNG or JPEG)".into(),
            looked_in: root.display().to_string(),
            hint: format!("The class folders ({}) hold none", class_names.join(", ")),
        });
    }
    Ok(ImageFolder {
        images: ImageSet::new(pixels, kept_labels, size, size)?,
        class_names,
        files: kept_files,
        skipped,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A wide photo whose left and right quarters are red and whose middle half is blue: the
    /// centre crop keeps only blue, a squash would keep red at the edges.
    #[test]
    fn wide_photos_are_centre_cropped_not_squashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        let img = image::RgbImage::from_fn(80, 40, |x, _| {
            if (20..60).contains(&x) {
                image::Rgb([0, 0, 255])
            } else {
                image::Rgb([255, 0, 0])
            }
        });
        img.save(&path).unwrap();
        let rgb = read_image(&path, 20).unwrap();
        let plane = 20 * 20;
        assert_eq!(rgb.len(), 3 * plane);
        // Columns 2 and 17 of the first and last rows (the outermost columns blend the bands'
        // border, which lies exactly at the crop's edges).
        for i in [2, 17, plane - 18, plane - 3] {
            assert!(rgb[i] < 10 && rgb[2 * plane + i] > 245, "pixel {i}");
        }
    }

    #[test]
    fn greyscale_and_rgba_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let grey = dir.path().join("grey.png");
        image::GrayImage::from_pixel(10, 30, image::Luma([77]))
            .save(&grey)
            .unwrap();
        assert!(read_image(&grey, 8).unwrap().iter().all(|&v| v == 77));
        let rgba = dir.path().join("rgba.png");
        image::RgbaImage::from_pixel(12, 12, image::Rgba([10, 20, 30, 0]))
            .save(&rgba)
            .unwrap();
        let rgb = read_image(&rgba, 12).unwrap();
        assert_eq!((rgb[0], rgb[144], rgb[288]), (10, 20, 30));
    }
}
