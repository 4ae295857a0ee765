//! Preprocessing that belongs to the weights, resizing and training augmentation.
//!
//! Images arrive as planar 8-bit RGB (see [`ImageSet`](crate::data::ImageSet)) and leave as
//! float32 NCHW in the layout and scale the weights were trained with.

use image::imageops::FilterType;
use rand::seq::SliceRandom;
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

/// Training augmentation of photos decoded from their files (a streamed set), torchvision's
/// standard training transform and timm's colour jitter: a random crop of the decoded photo
/// (`RandomResizedCrop`: `scale` of its area, aspect ratio in `ratio`, drawn log-uniformly),
/// resized to the input size, flipped horizontally with probability 0.5, and its brightness,
/// contrast and saturation each scaled by a factor in `[1 - jitter, 1 + jitter]`, in a random
/// order (`ColorJitter(jitter, jitter, jitter)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoAugment {
    /// Shares of the photo's area a crop may take (torchvision: 0.08 to 1).
    pub scale: (f64, f64),
    /// Aspect ratios (width over height) a crop may have (torchvision: 3/4 to 4/3).
    pub ratio: (f64, f64),
    /// Colour jitter's strength (timm's default 0.4; 0 for none).
    pub jitter: f64,
}

impl Default for PhotoAugment {
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            jitter: 0.4,
        }
    }
}

impl PhotoAugment {
    /// The crop of a `width` x `height` photo, `(x, y, w, h)`: ten tries at a random area and
    /// aspect ratio that fit, else the centre crop of the whole photo at the nearest allowed
    /// ratio, as torchvision's `RandomResizedCrop.get_params` does.
    pub fn crop(&self, width: u32, height: u32, rng: &mut impl Rng) -> (u32, u32, u32, u32) {
        let area = width as f64 * height as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale.0..=self.scale.1);
            let ratio = rng.random_range(log_lo..=log_hi).exp();
            let w = (target * ratio).sqrt().round() as u32;
            let h = (target / ratio).sqrt().round() as u32;
            if (1..=width).contains(&w) && (1..=height).contains(&h) {
                let x = rng.random_range(0..=width - w);
                let y = rng.random_range(0..=height - h);
                return (x, y, w, h);
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0 {
            (
                width,
                ((width as f64 / self.ratio.0).round() as u32).clamp(1, height),
            )
        } else if in_ratio > self.ratio.1 {
            (
                ((height as f64 * self.ratio.1).round() as u32).clamp(1, width),
                height,
            )
        } else {
            (width, height)
        };
        ((width - w) / 2, (height - h) / 2, w, h)
    }

    /// Augments a decoded photo (interleaved RGB) into planar RGB of `size` x `size`.
    pub fn apply(&self, photo: &image::RgbImage, size: usize, rng: &mut impl Rng) -> Vec<u8> {
        use image::imageops::{self, FilterType};
        let (x, y, w, h) = self.crop(photo.width(), photo.height(), rng);
        let crop = imageops::crop_imm(photo, x, y, w, h).to_image();
        let side = size as u32;
        let mut out = imageops::resize(&crop, side, side, FilterType::Triangle);
        if rng.random_bool(0.5) {
            imageops::flip_horizontal_in_place(&mut out);
        }
        if self.jitter > 0.0 {
            let mut order = [0, 1, 2];
            order.shuffle(rng);
            for which in order {
                let factor = rng.random_range(1.0 - self.jitter..=1.0 + self.jitter) as f32;
                jitter(&mut out, which, factor);
            }
        }
        from_interleaved(out.as_raw(), size * size)
    }
}

/// ITU-R 601 luma of an RGB pixel, as Pillow's and torchvision's greyscale.
fn luma(p: &[u8]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// One of colour jitter's three adjustments by `factor`, as torchvision blends them: 0
/// brightness (with black), 1 contrast (with the photo's mean grey), 2 saturation (with each
/// pixel's grey).
fn jitter(img: &mut image::RgbImage, which: usize, factor: f32) {
    let raw: &mut [u8] = img;
    let mean = if which == 1 {
        let n = (raw.len() / 3).max(1) as f32;
        raw.chunks_exact(3).map(luma).sum::<f32>() / n
    } else {
        0.0
    };
    for p in raw.chunks_exact_mut(3) {
        let grey = match which {
            0 => 0.0,
            1 => mean,
            _ => luma(p),
        };
        for v in p.iter_mut() {
            *v = (grey + factor * (*v as f32 - grey))
                .round()
                .clamp(0.0, 255.0) as u8;
        }
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

    /// Crops follow torchvision's bounds: each within the photo, its area 8% to 100% of the
    /// photo's and its ratio 3/4 to 4/3 (to rounding), seeded; a photo too narrow for any try
    /// falls back to the centre at the nearest ratio.
    #[test]
    fn random_resized_crops_keep_torchvisions_bounds() {
        let aug = PhotoAugment::default();
        let (w, h) = (640u32, 480u32);
        let mut areas = Vec::new();
        for seed in 0..400 {
            let (x, y, cw, ch) = aug.crop(w, h, &mut rand::rngs::StdRng::seed_from_u64(seed));
            assert!(x + cw <= w && y + ch <= h && cw > 0 && ch > 0);
            let share = (cw * ch) as f64 / (w * h) as f64;
            let ratio = cw as f64 / ch as f64;
            assert!((0.075..=1.0).contains(&share), "{share}");
            assert!((0.74..=1.35).contains(&ratio), "{ratio}");
            areas.push(share);
        }
        assert!(areas.iter().any(|&a| a < 0.2) && areas.iter().any(|&a| a > 0.8));
        let again = aug.crop(w, h, &mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(
            again,
            aug.crop(w, h, &mut rand::rngs::StdRng::seed_from_u64(7))
        );
        // A strip 1000x10: no try fits at ratio <= 4/3 and area >= 8%, so the centre 13x10.
        let strip = PhotoAugment {
            scale: (0.9, 1.0),
            ..aug
        };
        assert_eq!(
            strip.crop(1000, 10, &mut rand::rngs::StdRng::seed_from_u64(1)),
            (493, 0, 13, 10)
        );
    }

    /// Jitter's three blends by hand: brightness scales, contrast moves from the mean grey,
    /// saturation from each pixel's grey (a grey pixel stays); a factor of 1 changes nothing.
    #[test]
    fn colour_jitter_blends_as_torchvision() {
        let img = image::RgbImage::from_raw(2, 1, vec![100, 50, 0, 200, 200, 200]).unwrap();
        let mut b = img.clone();
        jitter(&mut b, 0, 1.2);
        assert_eq!(b.as_raw(), &vec![120, 60, 0, 240, 240, 240]);
        let mut s = img.clone();
        jitter(&mut s, 2, 0.0);
        let grey = (0.299f32 * 100.0 + 0.587 * 50.0).round() as u8;
        assert_eq!(s.as_raw(), &vec![grey, grey, grey, 200, 200, 200]);
        let mut c = img.clone();
        jitter(&mut c, 1, 1.0);
        assert_eq!(c, img);
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
