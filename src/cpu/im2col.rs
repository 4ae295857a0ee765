//! im2col for channels-last images, and which kernel taps a convolution multiplies.

use std::ops::Range;

use crate::cpu::for_each_image;

/// im2col of channels-last `x`: row `p` holds, for output pixel `p` (row-major over `N, Ho, Wo`),
/// the input values under each kept tap `(ky, kx)` in that order, `C` channels each, zeros where
/// a tap falls in the padding.
pub(crate) fn im2col(
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    [taps_y, taps_x]: [&Range<usize>; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
    [ho, wo]: [usize; 2],
    parallel: bool,
) -> Vec<f32> {
    let row_len = taps_y.len() * taps_x.len() * c;
    let span = taps_x.len() * c;
    let mut columns = vec![0.0; n * ho * wo * row_len];
    for_each_image(parallel, &mut columns, ho * wo * row_len, |i, out| {
        let image = &x[i * h * w * c..][..h * w * c];
        for (p, row) in out.chunks_exact_mut(row_len).enumerate() {
            let (oy, ox) = (p / wo, p % wo);
            for (t, ky) in taps_y.clone().enumerate() {
                let dst = &mut row[t * span..(t + 1) * span];
                let Some(y) = (oy * sh + ky).checked_sub(ph).filter(|&y| y < h) else {
                    continue; // a padding row: zeros, as allocated
                };
                // The kept taps along x whose input column is inside the image, one
                // contiguous run of `C`-value pixels in both the input row and `dst`.
                let x0 = ox * sw + taps_x.start; // padded coordinate of the first tap
                let first = pw.saturating_sub(x0).min(taps_x.len());
                let last = (w + pw).saturating_sub(x0).min(taps_x.len());
                if first < last {
                    let src = (y * w + x0 + first - pw) * c;
                    dst[first * c..last * c].copy_from_slice(&image[src..src + (last - first) * c]);
                }
            }
        }
    });
    columns
}

/// The kernel taps `[rows, columns]` a convolution of an `[h, w]` map multiplies.
///
/// The taps that see an input pixel for at least one output pixel. On CIFAR-10's 1x1 maps of
/// stage 4 only a 3x3 kernel's centre does: the other eight multiply padding (89% of those
/// products), so they are left out where the weight's remaining rows (ordered ky, kx, channel)
/// stay one block; otherwise every tap is kept.
pub(crate) fn kept_taps(
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
    [ho, wo]: [usize; 2],
) -> [Range<usize>; 2] {
    let taps_y = tap_range(h, kh, sh, ph, ho);
    let taps_x = tap_range(w, kw, sw, pw, wo);
    if taps_y.len() == 1 || taps_x.len() == kw {
        [taps_y, taps_x]
    } else {
        [0..kh, 0..kw]
    }
}

/// The kernel taps along one axis that fall inside the input for at least one output position.
fn tap_range(size: usize, kernel: usize, stride: usize, pad: usize, out: usize) -> Range<usize> {
    let inside =
        |k: usize| (0..out).any(|o| (o * stride + k).checked_sub(pad).is_some_and(|i| i < size));
    let first = (0..kernel).find(|&k| inside(k)).unwrap_or(0);
    let last = (0..kernel).rev().find(|&k| inside(k)).unwrap_or(kernel - 1);
    first..last + 1
}
