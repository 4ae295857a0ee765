//! [`ImageSet`]: labelled 8-bit RGB images, held in memory as the CIFAR-10 files store them, or
//! photo files decoded when a batch needs them (streamed).

use std::borrow::Cow;
use std::path::PathBuf;

use crate::data::photo::read_image;
use crate::error::{Error, Result};

/// Labelled RGB images of one size, 8 bits per channel, each planar (channel, row, column:
/// first all red, then all green, then all blue), as CIFAR-10's files store them and as NCHW
/// tensors want them.
///
/// The pixels are held in memory ([`new`](Self::new)), or, for a set of photos larger than
/// memory, left in their files and decoded each time an image is used
/// ([`streamed`](Self::streamed): only the file list and labels are held). Either way
/// [`image`](Self::image) gives an image's pixels at the set's size, the same bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageSet {
    /// The pixels, image after image; empty for a streamed set.
    pixels: Vec<u8>,
    labels: Vec<usize>,
    height: usize,
    width: usize,
    /// The photo file of each image, when the set came from files; empty otherwise.
    files: Vec<PathBuf>,
    /// Whether the images are decoded from `files` when used rather than held.
    streamed: bool,
}

impl ImageSet {
    /// Wraps planar pixels and labels, checking that the sizes agree.
    pub fn new(pixels: Vec<u8>, labels: Vec<usize>, height: usize, width: usize) -> Result<Self> {
        let per_image = 3 * height * width;
        if per_image == 0 || pixels.len() != labels.len() * per_image {
            return Err(Error::ShapeMismatch {
                tensor: "pixels".into(),
                expected: vec![labels.len(), 3, height, width],
                found: vec![pixels.len()],
            });
        }
        Ok(Self {
            pixels,
            labels,
            height,
            width,
            files: Vec::new(),
            streamed: false,
        })
    }

    /// Photo files as a streamed set of `size` x `size` images: only the paths and labels are
    /// held, and each image is decoded ([`read_image`]) when a batch uses it. A batch with
    /// training augmentation crops from the decoded photo itself
    /// ([`ImageBatcher`](crate::data::ImageBatcher)).
    pub fn streamed(files: Vec<PathBuf>, labels: Vec<usize>, size: usize) -> Result<Self> {
        if files.len() != labels.len() || size == 0 {
            return Err(Error::ShapeMismatch {
                tensor: "files".into(),
                expected: vec![labels.len(), 3, size.max(1), size.max(1)],
                found: vec![files.len(), 3, size, size],
            });
        }
        Ok(Self {
            pixels: Vec::new(),
            labels,
            height: size,
            width: size,
            files,
            streamed: true,
        })
    }

    /// This set, with the photo file each image was read from (in order), so that it is known
    /// by its files ([`files`](Self::files)) whether it is held or streamed.
    pub fn with_files(mut self, files: Vec<PathBuf>) -> Result<Self> {
        if files.len() != self.len() {
            return Err(Error::ShapeMismatch {
                tensor: "files".into(),
                expected: vec![self.len()],
                found: vec![files.len()],
            });
        }
        self.files = files;
        Ok(self)
    }

    /// Whether the images are decoded from their files when used ([`streamed`](Self::streamed)).
    pub fn is_streamed(&self) -> bool {
        self.streamed
    }

    /// The photo file of each image, when the set came from files (empty otherwise).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The bytes the set's pixels take decoded: what holding it in memory costs.
    pub fn decoded_bytes(&self) -> usize {
        self.len() * self.image_len()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes per image: `3 * height * width`.
    pub fn image_len(&self) -> usize {
        3 * self.height * self.width
    }

    /// The planar pixels of image `i`: borrowed from memory, or decoded from its file.
    ///
    /// # Errors
    ///
    /// For a streamed set, the file's [`Error::Image`] or [`Error::Io`] when it no longer reads
    /// (removed or changed since the set was listed).
    pub fn image(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        if self.streamed {
            return read_image(&self.files[i], self.height).map(Cow::Owned);
        }
        let n = self.image_len();
        Ok(Cow::Borrowed(&self.pixels[i * n..(i + 1) * n]))
    }

    /// Channel `c` (0 red, 1 green, 2 blue) of pixel (`y`, `x`) of image `i`.
    ///
    /// # Errors
    ///
    /// As [`image`](Self::image).
    pub fn pixel(&self, i: usize, c: usize, y: usize, x: usize) -> Result<u8> {
        Ok(self.image(i)?[(c * self.height + y) * self.width + x])
    }

    /// The label of image `i`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    /// All labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// All pixels held, image after image; empty for a streamed set.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The images at `indices`, in that order (streamed if this set is).
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::new();
        if !self.streamed {
            let n = self.image_len();
            pixels.reserve(indices.len() * n);
            for &i in indices {
                pixels.extend_from_slice(&self.pixels[i * n..(i + 1) * n]);
            }
        }
        let files = if self.files.is_empty() {
            Vec::new()
        } else {
            indices.iter().map(|&i| self.files[i].clone()).collect()
        };
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            height: self.height,
            width: self.width,
            files,
            streamed: self.streamed,
        }
    }

    /// The images at `keep` and at `other` (each in that order), consuming this set: `other`'s
    /// are copied out, then `keep`'s moved down in place where its indices rise (as
    /// [`share_split`](crate::data::share_split)'s do), so a held set's memory peaks at itself
    /// plus the `other` share, where two [`select`](Self::select)s would hold it twice over.
    ///
    /// ```
    /// use resnet_transfer::data::ImageSet;
    ///
    /// let set = ImageSet::new((0..4 * 3).collect(), vec![0, 1, 0, 1], 1, 1)?;
    /// let (train, valid) = set.into_split(&[0, 2, 3], &[1]);
    /// assert_eq!(train.pixels(), [0, 1, 2, 6, 7, 8, 9, 10, 11]);
    /// assert_eq!((train.labels(), valid.pixels()), (&[0, 0, 1][..], &[3, 4, 5][..]));
    /// # Ok::<(), resnet_transfer::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If an index is out of range, as [`select`](Self::select).
    pub fn into_split(mut self, keep: &[usize], other: &[usize]) -> (ImageSet, ImageSet) {
        let other = self.select(other);
        if self.streamed || !keep.windows(2).all(|w| w[0] < w[1]) {
            return (self.select(keep), other);
        }
        let n = self.image_len();
        for (slot, &i) in keep.iter().enumerate() {
            // `slot <= i`: the indices rise, so image `i` has not been overwritten yet.
            self.pixels.copy_within(i * n..(i + 1) * n, slot * n);
        }
        self.pixels.truncate(keep.len() * n);
        self.pixels.shrink_to_fit();
        self.labels = keep.iter().map(|&i| self.labels[i]).collect();
        if !self.files.is_empty() {
            self.files = keep.iter().map(|&i| self.files[i].clone()).collect();
        }
        (self, other)
    }

    /// Appends another set of the same image size.
    pub fn extend(&mut self, other: ImageSet) -> Result<()> {
        if self.is_empty() && self.height == 0 {
            *self = other;
            return Ok(());
        }
        if (other.height, other.width) != (self.height, self.width) {
            return Err(Error::ShapeMismatch {
                tensor: "images".into(),
                expected: vec![3, self.height, self.width],
                found: vec![3, other.height, other.width],
            });
        }
        if other.streamed != self.streamed {
            return Err(Error::invalid_config(
                "images",
                "sets both held in memory or both streamed",
                "one of each",
            ));
        }
        // The files stay known only if both sets know theirs.
        if self.files.len() == self.len() && other.files.len() == other.len() {
            self.files.extend(other.files);
        } else {
            self.files.clear();
        }
        self.pixels.extend(other.pixels);
        self.labels.extend(other.labels);
        Ok(())
    }

    /// Images per class, for classes `0..num_classes`.
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &label in &self.labels {
            if label < num_classes {
                counts[label] += 1;
            }
        }
        counts
    }

    /// Per-channel mean and standard deviation of the raw pixels (0 to 255), red, green, blue.
    ///
    /// # Errors
    ///
    /// As [`image`](Self::image), for a streamed set.
    pub fn channel_stats(&self) -> Result<([f64; 3], [f64; 3])> {
        let plane = self.height * self.width;
        let mut sum = [0u64; 3];
        let mut sum_sq = [0u64; 3];
        for i in 0..self.len() {
            let image = self.image(i)?;
            for (c, channel) in image.chunks_exact(plane).enumerate() {
                for &v in channel {
                    sum[c] += v as u64;
                    sum_sq[c] += (v as u64) * (v as u64);
                }
            }
        }
        let n = (self.len() * plane).max(1) as f64;
        let mean = sum.map(|s| s as f64 / n);
        let mut std = [0.0; 3];
        for c in 0..3 {
            std[c] = (sum_sq[c] as f64 / n - mean[c] * mean[c]).max(0.0).sqrt();
        }
        Ok((mean, std))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_images() -> ImageSet {
        let pixels: Vec<u8> = (0..24).collect(); // two 2x2 images
        ImageSet::new(pixels, vec![1, 0], 2, 2).unwrap()
    }

    /// Splitting in place gives what two selects give, for rising and for any order of indices,
    /// with the files following their images.
    #[test]
    fn into_split_is_two_selects() {
        let n = 9;
        let pixels: Vec<u8> = (0..n * 3).map(|v| v as u8).collect();
        let files: Vec<PathBuf> = (0..n).map(|i| format!("p{i}.jpg").into()).collect();
        let set = ImageSet::new(pixels, (0..n).map(|i| i % 4).collect(), 1, 1)
            .unwrap()
            .with_files(files)
            .unwrap();
        for (keep, other) in [
            (vec![0, 2, 3, 5, 8], vec![1, 4, 6, 7]),
            (vec![5, 0, 8, 3], vec![7, 1]),
            (vec![], vec![2]),
        ] {
            let (a, b) = set.clone().into_split(&keep, &other);
            assert_eq!(a, set.select(&keep), "{keep:?}");
            assert_eq!(b, set.select(&other), "{other:?}");
        }
    }

    #[test]
    fn pixels_are_planar() {
        let set = two_images();
        assert_eq!(set.pixel(0, 0, 0, 0).unwrap(), 0);
        assert_eq!(set.pixel(0, 1, 0, 0).unwrap(), 4); // green plane starts after 4 red values
        assert_eq!(set.pixel(1, 2, 1, 1).unwrap(), 23);
        assert_eq!(set.select(&[1]).image(0).unwrap(), set.image(1).unwrap());
        assert_eq!(set.class_counts(3), vec![1, 1, 0]);
    }

    #[test]
    fn sizes_must_agree() {
        assert!(ImageSet::new(vec![0; 11], vec![0], 2, 2).is_err());
    }

    #[test]
    fn channel_stats_by_hand() {
        let set = ImageSet::new(vec![0, 2, 10, 10, 5, 5], vec![0], 1, 2).unwrap();
        let (mean, std) = set.channel_stats().unwrap();
        assert_eq!(mean, [1.0, 10.0, 5.0]);
        assert_eq!(std, [1.0, 0.0, 0.0]);
    }
}
