//! [`ImageSet`]: labelled 8-bit RGB images in memory, stored as the CIFAR-10 files store them.

use crate::error::{Error, Result};

/// Labelled RGB images of one size, 8 bits per channel, each stored planar (channel, row,
/// column: first all red, then all green, then all blue), as CIFAR-10's files store them and as
/// NCHW tensors want them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageSet {
    pixels: Vec<u8>,
    labels: Vec<usize>,
    height: usize,
    width: usize,
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
        })
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

    /// The planar pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Channel `c` (0 red, 1 green, 2 blue) of pixel (`y`, `x`) of image `i`.
    pub fn pixel(&self, i: usize, c: usize, y: usize, x: usize) -> u8 {
        self.image(i)[(c * self.height + y) * self.width + x]
    }

    /// The label of image `i`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    /// All labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// All pixels, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            height: self.height,
            width: self.width,
        }
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
    pub fn channel_stats(&self) -> ([f64; 3], [f64; 3]) {
        let plane = self.height * self.width;
        let mut sum = [0u64; 3];
        let mut sum_sq = [0u64; 3];
        for image in self.pixels.chunks_exact(3 * plane) {
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
        (mean, std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_images() -> ImageSet {
        let pixels: Vec<u8> = (0..24).collect(); // two 2x2 images
        ImageSet::new(pixels, vec![1, 0], 2, 2).unwrap()
    }

    #[test]
    fn pixels_are_planar() {
        let set = two_images();
        assert_eq!(set.pixel(0, 0, 0, 0), 0);
        assert_eq!(set.pixel(0, 1, 0, 0), 4); // green plane starts after 4 red values
        assert_eq!(set.pixel(1, 2, 1, 1), 23);
        assert_eq!(set.select(&[1]).image(0), set.image(1));
        assert_eq!(set.class_counts(3), vec![1, 1, 0]);
    }

    #[test]
    fn sizes_must_agree() {
        assert!(ImageSet::new(vec![0; 11], vec![0], 2, 2).is_err());
    }

    #[test]
    fn channel_stats_by_hand() {
        let set = ImageSet::new(vec![0, 2, 10, 10, 5, 5], vec![0], 1, 2).unwrap();
        let (mean, std) = set.channel_stats();
        assert_eq!(mean, [1.0, 10.0, 5.0]);
        assert_eq!(std, [1.0, 0.0, 0.0]);
    }
}
