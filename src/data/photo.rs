//! One photo file to pixels, the way a photo viewer shows it: decoded by its content (not its
//! ending), turned upright by its EXIF Orientation tag, refused when cut short, then resized on
//! its short side and centre-cropped.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::data::preprocess::{PhotoAugment, from_interleaved};
use crate::error::{Error, Result};

/// The formats [`read_image`] decodes, in words, for messages.
const FORMATS: &str = "JPEG, PNG, WebP, BMP, GIF, TIFF, PPM/PGM";

/// Reads one photo file as planar RGB of `size` x `size`.
///
/// The format comes from the file's first bytes, as Pillow finds it, so a PNG named `.jpg`
/// reads: JPEG, PNG, WebP, BMP, GIF (its first frame), TIFF and PPM/PGM, the formats
/// torchvision's loader reads. The photo is turned upright by its EXIF Orientation tag, as
/// Pillow's `ImageOps.exif_transpose` does (phones store photos as the sensor lay and tag how to
/// turn them). Then its short side is resized to `size` (bilinear, antialiased when shrinking)
/// and the centre cropped, as torchvision's `Resize(size)` + `CenterCrop(size)` and Keras's
/// `crop_to_aspect_ratio` do, so photos keep their proportions. Greyscale and RGBA photos become
/// RGB (alpha dropped).
///
/// # Errors
///
/// [`Error::Image`] naming the file when it is empty, not an image this crate reads, cut short
/// (a JPEG that never reaches its end-of-image marker, a PNG whose data stops early: Pillow's
/// "image file is truncated"), or otherwise does not decode; [`Error::Io`] when it cannot be
/// read (missing, a broken link, no permission).
pub fn read_image(path: &Path, size: usize) -> Result<Vec<u8>> {
    if size == 0 {
        return Err(Error::invalid_config("input_size", "at least 1", 0));
    }
    let img = open_upright(path)?;
    let side = size as u32;
    let ([width, height], [left, top]) = resize_and_crop(img.width(), img.height(), side);
    let img = if (img.width(), img.height()) == (width, height) {
        img
    } else {
        // The short side resized to `size` before the crop, as torchvision does: a very thin
        // picture grows long (1x100000 pixels at 224 is 224x22400000, 15 GB, and the
        // allocation aborted the process), so the resized picture is held to the decoded one's
        // limit first.
        let bytes = u64::from(width) * u64::from(height) * u64::from(img.color().bytes_per_pixel());
        image::Limits::default()
            .reserve(bytes)
            .map_err(|_| Error::Image {
                path: path.to_path_buf(),
                reason: format!(
                    "a {}x{} picture: resized to {size} on its short side it would be \
                 {width}x{height}, {} MiB, more than the {} MiB a photo may take: crop it \
                 nearer to a square first",
                    img.width(),
                    img.height(),
                    bytes.div_ceil(1 << 20),
                    image::Limits::default().max_alloc.unwrap_or(0) >> 20
                ),
            })?;
        img.resize_exact(width, height, FilterType::Triangle)
    };
    let img = if (width, height) == (side, side) {
        img
    } else {
        img.crop_imm(left, top, side, side)
    };
    Ok(from_interleaved(img.to_rgb8().as_raw(), size * size))
}

/// torchvision's `Resize(size)` + `CenterCrop(size)` geometry for a `width` x `height` photo: the
/// size it is resized to (the short side `size`, the long side `size · long / short` rounded
/// down, as torchvision's `int(...)`), and the crop's left and top offsets there (half the
/// excess, rounded half to even, as torchvision's `int(round(...))`: 7 spare pixels give an
/// offset of 4, not 3).
fn resize_and_crop(width: u32, height: u32, size: u32) -> ([u32; 2], [u32; 2]) {
    let scaled = |long: u32, short: u32| {
        (u64::from(size) * u64::from(long) / u64::from(short.max(1))) as u32
    };
    let resized = if width <= height {
        [size, scaled(height, width)]
    } else {
        [scaled(width, height), size]
    };
    let offset = |excess: u32| {
        let half = excess / 2;
        if excess % 2 == 1 && half % 2 == 1 {
            half + 1
        } else {
            half
        }
    };
    (resized, resized.map(|side| offset(side - size)))
}

/// Reads one photo file augmented for training ([`PhotoAugment`]): decoded and turned upright
/// as [`read_image`] does, then a random crop of the whole photo resized to `size` x `size`,
/// flipped and colour-jittered, drawn from `rng`. Planar RGB.
///
/// # Errors
///
/// As [`read_image`].
pub fn read_augmented(
    path: &Path,
    size: usize,
    augment: &PhotoAugment,
    rng: &mut impl rand::Rng,
) -> Result<Vec<u8>> {
    if size == 0 {
        return Err(Error::invalid_config("input_size", "at least 1", 0));
    }
    let img = open_upright(path)?.to_rgb8();
    Ok(augment.apply(&img, size, rng))
}

/// Decodes a photo file and applies its EXIF orientation.
fn open_upright(path: &Path) -> Result<DynamicImage> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    if bytes.is_empty() {
        return Err(bad("the file is empty (0 bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let Some(format) = reader.format() else {
        return Err(bad(format!(
            "its content is none of the formats this crate reads ({FORMATS}); it starts with {}",
            hex_start(&bytes)
        )));
    };
    // zune-jpeg, outside its strict mode, paints whatever is missing of a cut JPEG grey.
    if format == ImageFormat::Jpeg && !jpeg_reaches_its_end(&bytes) {
        return Err(bad(
            "image file is truncated: the JPEG data stops before its end-of-image marker \
             (an interrupted copy or download?)"
                .into(),
        ));
    }
    let decoding = |e: image::ImageError| bad(decoder_message(e));
    let mut decoder = reader.into_decoder().map_err(decoding)?;
    let orientation = decoder.orientation().map_err(decoding)?;
    // `ImageReader::decode` holds the size a header claims to its memory limit; the decoder
    // path, the one that gives the orientation, does not, and a corrupt header claiming 100 GB
    // aborted the process.
    let (width, height) = decoder.dimensions();
    let bytes = decoder.total_bytes();
    image::Limits::default().reserve(bytes).map_err(|_| {
        bad(format!(
            "its header claims a {width}x{height} picture, {} MiB decoded, more than the \
             {} MiB a photo may take: downscale it first (or it is damaged)",
            bytes.div_ceil(1 << 20),
            image::Limits::default().max_alloc.unwrap_or(0) >> 20
        ))
    })?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decoding)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// The I/O error of reading `path`, saying so when it is a link to nothing or a folder.
fn unreadable(path: &Path, e: std::io::Error) -> Error {
    if path.is_dir() {
        return Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                "a folder, not a photo file: name the photos (DIR/*.jpg), or evaluate a \
                 folder of class folders with evaluate --images",
            ),
        );
    }
    let target = std::fs::read_link(path).ok();
    match target {
        Some(target) if e.kind() == std::io::ErrorKind::NotFound => Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!("a link to {}, which does not exist", target.display()),
            ),
        ),
        _ => Error::io(path, e),
    }
}

/// The decoder's message; running out of bytes in memory means the file was cut short.
fn decoder_message(e: image::ImageError) -> String {
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("image file is truncated ({io})")
        }
        other => other.to_string(),
    }
}

fn hex_start(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    shown.join(" ")
}

/// Whether a JPEG's data reaches its end-of-image marker (EOI), walked as a decoder reads it:
/// segment by segment, each scan's entropy-coded data to the marker that ends it. What follows
/// the EOI does not matter (phones' motion photos append a video there), and so a complete JPEG
/// is told from a cut one however its tail looks. libjpeg under Pillow refuses the same files.
fn jpeg_reaches_its_end(data: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if data.get(..2) != Some(&[0xFF, SOI]) {
        return false;
    }
    let mut i = 2;
    loop {
        // Bytes that are not a marker are skipped, as libjpeg skips "extraneous bytes"; a marker
        // may be preceded by any number of 0xFF fill bytes.
        let Some(ff) = data[i..].iter().position(|&b| b == 0xFF) else {
            return false;
        };
        i += ff;
        while data.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = data.get(i) else {
            return false;
        };
        i += 1;
        match code {
            EOI => return true,
            // Markers without a length: TEM, restarts, a stray SOI, and a stuffed 0xFF00.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {
                let Some(len) = data.get(i..i + 2) else {
                    return false;
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if len < 2 || i + len > data.len() {
                    return false;
                }
                i += len;
                if code == SOS {
                    // The scan runs to the first marker that is neither a stuffed 0xFF00 nor a
                    // restart marker.
                    loop {
                        let Some(ff) = data[i..].iter().position(|&b| b == 0xFF) else {
                            return false;
                        };
                        let mut j = i + ff + 1;
                        while data.get(j) == Some(&0xFF) {
                            j += 1;
                        }
                        match data.get(j) {
                            None => return false,
                            Some(0x00 | 0xD0..=0xD7) => i = j + 1,
                            Some(_) => {
                                i += ff;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resize and the crop offsets are torchvision 0.29's: each row's expected figures were
    /// read off `transforms.functional._compute_resized_output_size` and `center_crop` applied
    /// to an image of its own pixel coordinates (odd excesses round half to even: 7 spare rows
    /// give 4, 15 give 8, 1 gives 0).
    #[test]
    fn resize_and_crop_follow_torchvision() {
        let torchvision = [
            ([56, 63, 56], [56, 63], [0, 4]),
            ([65, 80, 65], [65, 80], [0, 8]),
            ([2000, 1500, 224], [298, 224], [37, 0]),
            ([480, 640, 224], [224, 298], [0, 37]),
            ([300, 224, 224], [300, 224], [38, 0]),
            ([224, 401, 224], [224, 401], [0, 88]),
            ([16, 12, 224], [298, 224], [37, 0]),
            ([97, 61, 32], [50, 32], [9, 0]),
            ([225, 224, 224], [225, 224], [0, 0]),
            ([1001, 999, 224], [224, 224], [0, 0]),
            ([63, 56, 56], [63, 56], [4, 0]),
            ([4032, 3024, 224], [298, 224], [37, 0]),
            ([12, 16, 7], [7, 9], [0, 1]),
        ];
        for ([w, h, size], resized, offsets) in torchvision {
            assert_eq!(
                resize_and_crop(w, h, size),
                (resized, offsets),
                "{w}x{h} to {size}"
            );
        }
    }

    /// A photo whose short side is already the size is only cropped, at torchvision's offset:
    /// each row of a 56x63 photo holds its own row number, and the crop's first row is 4.
    #[test]
    fn an_odd_excess_is_cropped_as_torchvision_crops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tall.png");
        image::RgbImage::from_fn(56, 63, |_, y| image::Rgb([y as u8, 0, 0]))
            .save(&path)
            .unwrap();
        let rgb = read_image(&path, 56).unwrap();
        assert_eq!((rgb[0], rgb[55 * 56]), (4, 59));
    }

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

    /// The walk over a JPEG encoded here: complete, cut anywhere after its header, and with
    /// bytes after its end; and a scan whose data holds stuffed bytes and restart markers.
    #[test]
    fn a_jpeg_is_complete_only_up_to_its_end_marker() {
        let img = image::RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x * y) % 256) as u8])
        });
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        assert!(jpeg_reaches_its_end(&jpeg));
        for cut in [2, 20, jpeg.len() / 2, jpeg.len() - 2, jpeg.len() - 1] {
            assert!(!jpeg_reaches_its_end(&jpeg[..cut]), "cut at {cut}");
        }
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"\0\0\0\x18ftypmp42\xff\xd8\xff");
        assert!(jpeg_reaches_its_end(&trailer));
        let scan = [
            0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF,
            0xFF, 0xD9,
        ];
        assert!(jpeg_reaches_its_end(&scan));
        assert!(!jpeg_reaches_its_end(&scan[..12]));
    }

    /// A BMP whose header claims 520 million rows (found by tests/it/fuzz.rs): refused, not an
    /// allocation of 100 GB that aborts the process.
    #[test]
    fn a_header_claiming_a_huge_picture_is_refused() {
        let mut bmp = Vec::new();
        image::RgbImage::from_pixel(64, 48, image::Rgb([9, 9, 9]))
            .write_to(&mut Cursor::new(&mut bmp), ImageFormat::Bmp)
            .unwrap();
        bmp[22..26].copy_from_slice(&(-520_093_648i32).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.bmp");
        std::fs::write(&path, &bmp).unwrap();
        let err = read_image(&path, 8).unwrap_err();
        assert!(
            matches!(&err, Error::Image { reason, .. } if reason.contains("64x520093648")
                && reason.contains("512 MiB a photo may take: downscale it")),
            "{err}"
        );
    }

    /// A picture one pixel high and 100000 wide (475 bytes as a PNG) grows to 224x22400000 when
    /// its short side is resized to 224: refused, naming the sizes, not a 15 GB allocation that
    /// aborts the process; one 1x400 still reads.
    #[test]
    fn a_very_thin_picture_whose_resize_would_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let line = |width: u32, name: &str| {
            let path = dir.path().join(name);
            image::GrayImage::from_pixel(width, 1, image::Luma([200]))
                .save(&path)
                .unwrap();
            path
        };
        let err = read_image(&line(100_000, "line.png"), 224).unwrap_err();
        assert!(
            matches!(&err, Error::Image { reason, .. } if reason.contains("100000x1")
                && reason.contains("22400000x224")
                && reason.contains("512 MiB a photo may take")),
            "{err}"
        );
        let pixels = read_image(&line(400, "short.png"), 224).unwrap();
        assert_eq!(pixels.len(), 3 * 224 * 224);
    }

    /// A folder given where a photo is expected says so, not only "Is a directory".
    #[test]
    fn a_folder_given_as_a_photo_says_it_is_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_image(dir.path(), 8).unwrap_err();
        assert!(
            matches!(&err, Error::Io { .. }) && err.to_string().contains("a folder, not a photo"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_is_an_image_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jpg");
        std::fs::write(&path, b"").unwrap();
        let err = read_image(&path, 8).unwrap_err();
        assert!(
            matches!(&err, Error::Image { path: p, reason } if *p == path && reason.contains("empty")),
            "{err}"
        );
    }
}
