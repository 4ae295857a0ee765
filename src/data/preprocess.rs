//! Preprocessing that belongs to the weights, resizing and training augmentation.
//!
//! Images arrive as planar 8-bit RGB (see [`ImageSet`](crate::data::ImageSet)) and leave as
//! float32 NCHW in the layout and scale the weights were trained with.

use image::imageops::FilterType;
use rand::{Rng, RngExt};

/// The ImageNet mean in BGR order, as Keras's `preprocess_input` subtracts it (caffe mode).
pub const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
/// The ImageNet mean of torchvision's weights, RGB, on a 0 to 1 scale.
pub const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The ImageNet standard deviation of torchvision's weights, RGB, on a 0 to 1 scale.
pub const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How pixels become model inputs. Each set of weights wants its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    /// Keras `preprocess_input` for ResNet50: RGB to BGR, minus the ImageNet mean, no scaling.
    Caffe,
    /// torchvision and the ONNX Model Zoo: /255, minus the mean, divided by the std, RGB.
    Torch,
    /// /255 only, RGB.
    Unit,
}

impl Preprocess {
    /// Writes the model input for one planar RGB image into `out` (same length, CHW).
    pub fn apply(self, rgb: &[u8], out: &mut [f32]) {
        debug_assert_eq!(rgb.len(), out.len());
        let plane = rgb.len() / 3;
        for c in 0..3 {
            let dst = &mut out[c * plane..(c + 1) * plane];
            let (src_c, scale, shift) = match self {
                // Output channel c is BGR's c, which is RGB's 2 - c.
                Preprocess::Caffe => (2 - c, 1.0, -CAFFE_MEAN_BGR[c]),
                Preprocess::Torch => {
                    let inv = 1.0 / TORCH_STD[c];
                    (c, inv / 255.0, -TORCH_MEAN[c] * inv)
                }
                Preprocess::Unit => (c, 1.0 / 255.0, 0.0),
            };
            let src = &rgb[src_c * plane..(src_c + 1) * plane];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as f32 * scale + shift;
            }
        }
    }
}

named_enum!(Preprocess as "preprocess" { Caffe => "caffe", Torch => "torch", Unit => "unit" });

/// Resizes a planar RGB image to `size` x `size` with bilinear interpolation (half-pixel
/// centres, as `tf.image.resize` and `torch.nn.functional.interpolate` upsample). An image
/// already of that size is returned as it is.
pub fn resize(rgb: &[u8], height: usize, width: usize, size: usize) -> Vec<u8> {
    resize_to(rgb, height, width, size, size)
}

/// [`resize`] to `out_height` x `out_width`.
pub(crate) fn resize_to(
    rgb: &[u8],
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
) -> Vec<u8> {
    if (height, width) == (out_height, out_width) {
        return rgb.to_vec();
    }
    let plane = height * width;
    let mut interleaved = Vec::with_capacity(rgb.len());
    for i in 0..plane {
        interleaved.extend([rgb[i], rgb[plane + i], rgb[2 * plane + i]]);
    }
    let img = image::RgbImage::from_raw(width as u32, height as u32, interleaved)
        .expect("the buffer matches the size");
    let (w, h) = (out_width as u32, out_height as u32);
    let resized = image::imageops::resize(&img, w, h, FilterType::Triangle);
    from_interleaved(resized.as_raw(), out_height * out_width)
}

/// Planar from interleaved RGB.
pub(crate) fn from_interleaved(rgb: &[u8], plane: usize) -> Vec<u8> {
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        out[i] = px[0];
        out[plane + i] = px[1];
        out[2 * plane + i] = px[2];
    }
    out
}

/// Training augmentation: a random crop after zero padding, and a random horizontal flip (the
/// standard CIFAR recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Zero padding on each side before cropping back to the original size (4 for CIFAR).
    pub pad: usize,
    /// Flip horizontally with probability 0.5.
    pub flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self { pad: 4, flip: true }
    }
}

impl Augment {
    /// Applies the augmentation to a planar RGB image, drawing from `rng`.
    pub fn apply(&self, rgb: &[u8], height: usize, width: usize, rng: &mut impl Rng) -> Vec<u8> {
        let dy = rng.random_range(0..=2 * self.pad) as isize - self.pad as isize;
        let dx = rng.random_range(0..=2 * self.pad) as isize - self.pad as isize;
        let flip = self.flip && rng.random_bool(0.5);
        let mut out = vec![0u8; rgb.len()];
        let plane = height * width;
        for c in 0..3 {
            for y in 0..height {
                let sy = y as isize + dy;
                if sy < 0 || sy >= height as isize {
                    continue;
                }
                for x in 0..width {
                    let sx = if flip { width - 1 - x } else { x } as isize + dx;
                    if sx < 0 || sx >= width as isize {
                        continue;
                    }
                    out[c * plane + y * width + x] =
                        rgb[c * plane + sy as usize * width + sx as usize];
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// One pixel per channel plane of a 1x2 image: red (10, 20), green (30, 40), blue (50, 60).
    const RGB: [u8; 6] = [10, 20, 30, 40, 50, 60];

    #[test]
    fn caffe_is_bgr_minus_mean_by_hand() {
        let mut out = [0.0; 6];
        Preprocess::Caffe.apply(&RGB, &mut out);
        // First output plane is blue: 50 - 103.939, 60 - 103.939.
        assert_eq!(out[0], 50.0 - 103.939);
        assert_eq!(out[1], 60.0 - 103.939);
        assert_eq!(out[2], 30.0 - 116.779);
        assert_eq!(out[4], 10.0 - 123.68);
        assert_eq!(out[5], 20.0 - 123.68);
    }

    #[test]
    fn torch_and_unit_by_hand() {
        let mut out = [0.0; 6];
        Preprocess::Torch.apply(&RGB, &mut out);
        let want = (10.0 / 255.0 - 0.485) / 0.229;
        assert!((out[0] - want).abs() < 1e-6, "{} vs {want}", out[0]);
        let want = (60.0 / 255.0 - 0.406) / 0.225;
        assert!((out[5] - want).abs() < 1e-6);
        Preprocess::Unit.apply(&RGB, &mut out);
        assert!((out[3] - 40.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn names_parse() {
        for p in Preprocess::ALL {
            assert_eq!(p.name().parse::<Preprocess>().unwrap(), p);
        }
        assert!("imagenet".parse::<Preprocess>().is_err());
    }

    #[test]
    fn resize_keeps_same_size_and_upsamples_constant() {
        let img: Vec<u8> = (0..12).collect(); // 2x2
        assert_eq!(resize(&img, 2, 2, 2), img);
        let flat = vec![7u8; 3 * 4];
        assert!(resize(&flat, 2, 2, 5).iter().all(|&v| v == 7));
        assert_eq!(resize(&flat, 2, 2, 5).len(), 75);
    }

    #[test]
    fn augment_is_seeded_and_moves_pixels() {
        let img: Vec<u8> = (0..3 * 8 * 8).map(|v| (v % 251) as u8 + 1).collect();
        let aug = Augment::default();
        let a = aug.apply(&img, 8, 8, &mut rand::rngs::StdRng::seed_from_u64(1));
        let b = aug.apply(&img, 8, 8, &mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        let none = Augment {
            pad: 0,
            flip: false,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(none.apply(&img, 8, 8, &mut rng), img);
        let flip_only = Augment { pad: 0, flip: true };
        let outs: Vec<Vec<u8>> = (0..8)
            .map(|s| flip_only.apply(&img, 8, 8, &mut rand::rngs::StdRng::seed_from_u64(s)))
            .collect();
        assert!(outs.contains(&img) && outs.iter().any(|o| o[0] == img[7]));
    }
}
