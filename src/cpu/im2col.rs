//! im2col for channels-last images, and which kernel taps a convolution multiplies.

use std::ops::Range;

use crate::cpu::for_each_image;

/// im2col of channels-last `x`: row `p` holds, for output pixel `p` (row-major over `N, Ho, Wo`),
/// the input values under each kept tap `(ky, kx)` in that order, `C` channels each, zeros where
/// a tap falls in the padding. With `parallel`, one image per task.
pub(crate) fn im2col(
    x: &[f32],
    dims: [usize; 4],
    taps: [&Range<usize>; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    [ho, wo]: [usize; 2],
    parallel: bool,
) -> Vec<f32> {
    let row_len = taps[0].len() * taps[1].len() * dims[3];
    let per_image = ho * wo;
    let mut columns = vec![0.0; dims[0] * per_image * row_len];
    for_each_image(parallel, &mut columns, per_image * row_len, |i, out| {
        let rows = i * per_image..(i + 1) * per_image;
        im2col_rows(x, dims, taps, stride, padding, [ho, wo], rows, out);
    });
    columns
}

/// Rows `rows` of [`im2col`]'s matrix (output pixels over `N, Ho, Wo`) into `out`, which holds
/// `rows.len()` rows and need not be zeroed: every value is written. For products that take the
/// matrix a block of rows at a time, so that the block stays in cache between being gathered and
/// being multiplied instead of the whole matrix going out to memory and back.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col_rows(
    x: &[f32],
    [_, h, w, c]: [usize; 4],
    [taps_y, taps_x]: [&Range<usize>; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
    [ho, wo]: [usize; 2],
    rows: Range<usize>,
    out: &mut [f32],
) {
    let row_len = taps_y.len() * taps_x.len() * c;
    let span = taps_x.len() * c;
    for (row, global) in out.chunks_exact_mut(row_len).zip(rows) {
        let (i, p) = (global / (ho * wo), global % (ho * wo));
        let image = &x[i * h * w * c..][..h * w * c];
        let (oy, ox) = (p / wo, p % wo);
        for (t, ky) in taps_y.clone().enumerate() {
            let dst = &mut row[t * span..(t + 1) * span];
            let Some(y) = (oy * sh + ky).checked_sub(ph).filter(|&y| y < h) else {
                dst.fill(0.0);
                continue;
            };
            let x0 = ox * sw + taps_x.start;
            let first = pw.saturating_sub(x0).min(taps_x.len());
            let last = (w + pw).saturating_sub(x0).min(taps_x.len()).max(first);
            dst[..first * c].fill(0.0);
            if first < last {
                let src = (y * w + x0 + first - pw) * c;
                dst[first * c..last * c].copy_from_slice(&image[src..src + (last - first) * c]);
            }
            dst[last * c..].fill(0.0);
        }
    }
}

/// The output side of a convolution or pool along one axis,
/// `(size + padding − kernel) / stride + 1`, with `padding` the padding of both ends together.
/// Every kernel, the model's units and both pools compute their output's size here.
pub(crate) fn output_side(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + padding - kernel) / stride + 1
}

/// The output `[h, w]` of a convolution of an `input` `[h, w]` map with `padding` on each side.
pub(crate) fn output_size(
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
) -> [usize; 2] {
    [
        output_side(h, kh, sh, 2 * ph),
        output_side(w, kw, sw, 2 * pw),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix by its definition, value by value: input pixel `(oy·s + ky − p, ox·s + kx − p)`
    /// of tap `(ky, kx)` and channel `c`, or zero outside the image.
    fn reference(
        x: &[f32],
        [n, h, w, c]: [usize; 4],
        [ty, tx]: [&Range<usize>; 2],
        [sh, sw]: [usize; 2],
        [ph, pw]: [usize; 2],
        [ho, wo]: [usize; 2],
    ) -> Vec<f32> {
        let mut out = Vec::new();
        for i in 0..n {
            for (oy, ox) in (0..ho).flat_map(|oy| (0..wo).map(move |ox| (oy, ox))) {
                for (ky, kx) in ty.clone().flat_map(|ky| tx.clone().map(move |kx| (ky, kx))) {
                    let y = (oy * sh + ky).checked_sub(ph).filter(|&y| y < h);
                    let xx = (ox * sw + kx).checked_sub(pw).filter(|&v| v < w);
                    for ch in 0..c {
                        out.push(match (y, xx) {
                            (Some(y), Some(xx)) => x[((i * h + y) * w + xx) * c + ch],
                            _ => 0.0,
                        });
                    }
                }
            }
        }
        out
    }

    /// The whole matrix, and any block of rows written over a buffer full of garbage, equal the
    /// definition: padding rows and columns, strides, kept taps, several images.
    #[test]
    fn the_matrix_and_its_row_blocks_follow_the_definition() {
        for (dims, kernel, stride, pad) in [
            ([2, 7, 5, 3], [3, 3], [1, 1], [1, 1]),
            ([3, 9, 9, 2], [7, 7], [2, 2], [3, 3]),
            ([1, 6, 6, 4], [1, 1], [2, 2], [0, 0]),
            ([2, 1, 1, 3], [3, 3], [1, 1], [1, 1]),
        ] {
            let [n, h, w, c] = dims;
            let x: Vec<f32> = (0..n * h * w * c).map(|i| i as f32 + 1.0).collect();
            let out = output_size([h, w], kernel, stride, pad);
            let [ty, tx] = kept_taps([h, w], kernel, stride, pad, out);
            let want = reference(&x, dims, [&ty, &tx], stride, pad, out);
            for parallel in [false, true] {
                let whole = im2col(&x, dims, [&ty, &tx], stride, pad, out, parallel);
                assert_eq!(whole, want, "{dims:?}");
            }
            let row_len = ty.len() * tx.len() * c;
            let rows = n * out[0] * out[1];
            for block in [0..rows, 1..rows.min(4), rows / 2..rows] {
                let mut buffer = vec![f32::NAN; block.len() * row_len];
                im2col_rows(
                    &x,
                    dims,
                    [&ty, &tx],
                    stride,
                    pad,
                    out,
                    block.clone(),
                    &mut buffer,
                );
                assert_eq!(
                    buffer,
                    want[block.start * row_len..block.end * row_len],
                    "{dims:?}"
                );
            }
        }
    }
}
