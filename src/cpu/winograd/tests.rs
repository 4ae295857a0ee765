//! Both tile sizes against a direct convolution in `f64`, and where Winograd is chosen.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

/// A 3x3 convolution of stride 1 in `f64`, straight from its definition, with the shift,
/// shortcut and ReLU.
#[allow(clippy::too_many_arguments)]
fn direct(
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    weight: &[f32],
    c_out: usize,
    [ph, pw]: [usize; 2],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f64> {
    let (ho, wo) = (h + 2 * ph - 2, w + 2 * pw - 2);
    let mut out = vec![0f64; n * ho * wo * c_out];
    for i in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                let at = ((i * ho + oy) * wo + ox) * c_out;
                for co in 0..c_out {
                    let mut sum = f64::from(shift[co]);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (y, xx) = (
                                (oy + ky) as isize - ph as isize,
                                (ox + kx) as isize - pw as isize,
                            );
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let pixel = ((i * h + y as usize) * w + xx as usize) * c;
                            for ci in 0..c {
                                sum += f64::from(x[pixel + ci])
                                    * f64::from(weight[((ky * 3 + kx) * c + ci) * c_out + co]);
                            }
                        }
                    }
                    if let Some(r) = residual {
                        sum += f64::from(r[at + co]);
                    }
                    out[at + co] = if relu { sum.max(0.0) } else { sum };
                }
            }
        }
    }
    out
}

/// Both tile sizes against the definition, within 1e-4 (outputs of order 1), on maps with
/// whole and partial tiles, a single tile and a single pixel, channel counts that are not
/// multiples of 8 (or of a panel), without padding, with and without the shortcut and the
/// ReLU, on one thread and shared out, and with the transforms 8 and 16 channels at a time.
#[test]
fn both_tile_sizes_match_a_direct_convolution() {
    if !panels::available() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(7);
    // [N, H, W, C_in], C_out, padding.
    let cases = [
        ([2, 8, 8, 16], 32, [1, 1]),
        ([1, 7, 5, 5], 17, [1, 1]),
        ([3, 2, 2, 19], 16, [1, 1]),
        ([1, 1, 1, 8], 8, [1, 1]),
        ([1, 9, 11, 8], 40, [0, 0]),
        ([4, 14, 14, 64], 64, [1, 1]),
        ([2, 29, 31, 3], 24, [1, 0]),
    ];
    for (dims, c_out, padding) in cases {
        let [n, h, w, c] = dims;
        let x: Vec<f32> = (0..n * h * w * c)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let bound = (1.0 / (9.0 * c as f32)).sqrt() * 3f32.sqrt();
        let weight: Vec<f32> = (0..9 * c * c_out)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let shift: Vec<f32> = (0..c_out).map(|_| rng.random_range(-0.5..0.5)).collect();
        let (ho, wo) = (h + 2 * padding[0] - 2, w + 2 * padding[1] - 2);
        let residual: Vec<f32> = (0..n * ho * wo * c_out)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        for (shortcut, relu) in [(false, false), (true, true), (false, true)] {
            let residual = shortcut.then_some(&residual[..]);
            let want = direct(&x, dims, &weight, c_out, padding, &shift, residual, relu);
            for size in [TileSize::F2, TileSize::F4] {
                let winograd = Winograd::pack(&weight, c, c_out, size);
                let epilogue = Epilogue {
                    shift: &shift,
                    residual,
                    relu,
                };
                let one = winograd.forward(&x, dims, padding, epilogue, false);
                let shared = winograd.forward(&x, dims, padding, epilogue, true);
                // The transforms on 8 channels at a time give the same bits as on 16 (where
                // the channels and the CPU take 16).
                let narrow = winograd.forward_lanes(&x, dims, padding, epilogue, false, false);
                let same = one
                    .iter()
                    .zip(&narrow)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{size:?} {dims:?}: 8 and 16 channels at a time differ"
                );
                assert_eq!(one.len(), want.len());
                let gap = one
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
                assert!(
                    gap < 1e-4,
                    "{size:?} {dims:?} -> {c_out}, pad {padding:?}: {gap}"
                );
                let spread = one
                    .iter()
                    .zip(&shared)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    spread < 1e-6,
                    "{size:?} {dims:?}: one thread vs shared {spread}"
                );
            }
        }
    }
}

/// The rule: 3x3 kernels of stride 1 only, no tile on a 1-pixel map, a tile size only where
/// the images hold enough of its tiles; in training, enough tiles in the batch.
#[test]
fn only_3x3_convolutions_of_stride_1_on_maps_of_2_or_more() {
    if !enabled() {
        return;
    }
    assert_eq!(choose([1, 1], [1, 1], [8, 8], 8), None);
    assert_eq!(choose([3, 3], [2, 2], [8, 8], 8), None);
    assert_eq!(choose([3, 3], [1, 1], [1, 8], 8), None);
    assert!(choose([3, 3], [1, 1], [2, 2], 32).is_some());
    assert!(choose([3, 3], [1, 1], [56, 56], 1).is_some());
    if setting() == Setting::Auto {
        // One photo at 224: stage 2 (28x28, 49 tiles of 4x4) by F(4x4), stage 3 (14x14: 16
        // of 4x4, 49 of 2x2) by F(2x2), stage 4 (7x7: 4 and 16) direct; 4 photos' stage 4 (64
        // tiles of 2x2) by F(2x2).
        assert_eq!(choose([3, 3], [1, 1], [28, 28], 1), Some(TileSize::F4));
        assert_eq!(choose([3, 3], [1, 1], [14, 14], 1), Some(TileSize::F2));
        assert_eq!(choose([3, 3], [1, 1], [7, 7], 1), None);
        assert_eq!(choose([3, 3], [1, 1], [7, 7], 4), Some(TileSize::F2));
    }
    // Training: 8 images of 28x28 (392 tiles of 4x4) yes, of 14x14 (128) no.
    assert_eq!(
        choose_for_training([3, 3], [1, 1], [28, 28], 8),
        Some(TileSize::F4)
    );
    assert_eq!(choose_for_training([3, 3], [1, 1], [14, 14], 8), None);
}

/// `RESNET_TRANSFER_WINOGRAD`'s values, in any case; others are not taken for the default
/// silently.
#[test]
fn the_variables_values_are_read_in_any_case_and_others_refused() {
    assert_eq!(parse_setting("OFF"), Some(Setting::Off));
    assert_eq!(parse_setting(" 0 "), Some(Setting::Off));
    assert_eq!(parse_setting("2"), Some(Setting::Only(TileSize::F2)));
    assert_eq!(parse_setting("4"), Some(Setting::Only(TileSize::F4)));
    assert_eq!(parse_setting(""), Some(Setting::Auto));
    assert_eq!(parse_setting("Auto"), Some(Setting::Auto));
    assert_eq!(parse_setting("6"), None);
    assert_eq!(parse_setting("bogus"), None);
}
