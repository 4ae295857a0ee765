//! The training operations' kernels, for any CPU backend whose buffers [`HostBackend`] hands
//! over: BatchNorm with batch statistics (+ shortcut + ReLU) and the channels-last convolution,
//! forward and backward. Plain loops over the host buffers, split over rayon's threads, and
//! [`product`] for the matrix products.

use std::borrow::Cow;
use std::ops::Range;

use burn::backend::tensor::FloatTensor;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::cpu::Epilogue;
use crate::cpu::for_each_image;
use crate::cpu::gemm::product;
use crate::cpu::host::HostBackend;
use crate::cpu::im2col::{im2col, im2col_rows, kept_taps, output_size};
#[cfg(target_arch = "x86_64")]
use crate::cpu::winograd::{TileSize, Winograd, choose_for_training};

/// BatchNorm with batch statistics over the columns of `[rows, channels]` `x`, plus `shortcut`
/// where given, then ReLU where `relu`: `(y, mean, biased variance)`. See
/// [`BatchNormTrain`](crate::ops::BatchNormTrain).
pub(crate) fn bn_relu_train<B: HostBackend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    shortcut: Option<FloatTensor<B>>,
    epsilon: f64,
    relu: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [rows, channels] = dims2::<B>(&x);
    let x = &*B::values(&x);
    let (gamma, beta) = (B::values(&gamma), B::values(&beta));
    let shortcut = shortcut.as_ref().map(|s| B::values(s));
    let [sum, sum_sq] = column_sums(x, channels, |row, [sum, sum_sq]| {
        for ((s, q), &v) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(row) {
            let v = f64::from(v);
            *s += v;
            *q += v * v;
        }
    });
    let n = rows as f64;
    let mean: Vec<f32> = sum.iter().map(|&s| (s / n) as f32).collect();
    let var: Vec<f32> = sum
        .iter()
        .zip(&sum_sq)
        .map(|(&s, &q)| ((q / n) - (s / n) * (s / n)).max(0.0) as f32)
        .collect();
    // y = x·a + b with a = γ/σ, b = β − μ·a.
    let a: Vec<f32> = (0..channels)
        .map(|c| gamma[c] / (f64::from(var[c]) + epsilon).sqrt() as f32)
        .collect();
    let b: Vec<f32> = (0..channels).map(|c| beta[c] - mean[c] * a[c]).collect();
    let y = map_rows(x, channels, |r, row, out| {
        let values = out.iter_mut().zip(row).zip(a.iter().zip(&b));
        match (&shortcut, relu) {
            (None, true) => {
                values.for_each(|((out, &x), (&a, &b))| *out = (x * a + b).max(0.0));
            }
            (None, false) => values.for_each(|((out, &x), (&a, &b))| *out = x * a + b),
            (Some(shortcut), _) => {
                let shortcut = &shortcut[r * channels..(r + 1) * channels];
                for (((out, &x), (&a, &b)), &s) in values.zip(shortcut) {
                    let v = x * a + b + s;
                    *out = if relu { v.max(0.0) } else { v };
                }
            }
        }
    });
    (
        B::from_values(y, &[rows, channels]),
        B::from_values(mean, &[channels]),
        B::from_values(var, &[channels]),
    )
}

/// `[dx, dγ, dβ, dshortcut]` of [`bn_relu_train`] from the output's gradient, the shortcut's
/// only where `shortcut`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_relu_train_backward<B: HostBackend>(
    output_grad: FloatTensor<B>,
    x: FloatTensor<B>,
    y: Option<FloatTensor<B>>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    gamma: FloatTensor<B>,
    epsilon: f64,
    shortcut: bool,
) -> [Option<FloatTensor<B>>; 4] {
    let [rows, channels] = dims2::<B>(&x);
    let (grad_values, y) = (B::values(&output_grad), y.as_ref().map(|y| B::values(y)));
    // The shortcut's gradient is the ReLU's masked gradient: made once where it is needed,
    // and the passes below read it instead of masking as they go.
    let masked = match (&y, shortcut) {
        (Some(y), true) => Some(relu_masked(&grad_values, y, channels)),
        _ => None,
    };
    let (grad, y) = match &masked {
        Some(dz) => (&dz[..], None),
        None => (&grad_values[..], y),
    };
    let x = B::values(&x);
    let (mean, var, gamma) = (B::values(&mean), B::values(&var), B::values(&gamma));
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (f64::from(v) + epsilon).sqrt()) as f32)
        .collect();
    // dz = dy where the ReLU passed its input (or everywhere without one).
    let dz_row = |r: usize, out: &mut [f32]| {
        let span = r * channels..(r + 1) * channels;
        out.copy_from_slice(&grad[span.clone()]);
        if let Some(y) = &y {
            for (d, &y) in out.iter_mut().zip(&y[span]) {
                *d = if y > 0.0 { *d } else { 0.0 };
            }
        }
    };
    let [sum_dz, sum_dz_xc] = column_sums_indexed(rows, channels, |r, [sum, sum_xc], dz| {
        dz_row(r, dz);
        let x = &x[r * channels..(r + 1) * channels];
        let columns = sum.iter_mut().zip(sum_xc.iter_mut());
        for ((s, q), ((&g, &x), &m)) in columns.zip(dz.iter().zip(x).zip(mean.iter())) {
            let g = f64::from(g);
            *s += g;
            *q += g * f64::from(x - m);
        }
    });
    let n = rows as f64;
    let d_beta: Vec<f32> = sum_dz.iter().map(|&s| s as f32).collect();
    let d_gamma: Vec<f32> = (0..channels)
        .map(|c| (sum_dz_xc[c] * f64::from(inv_std[c])) as f32)
        .collect();
    // dx = k1·dz + k2·x + k3, per channel.
    let [k1, k2, k3] = input_grad_coefficients(&gamma, &inv_std, &d_gamma, &sum_dz, &mean, n);
    let mut dx = vec![0f32; rows * channels];
    let chunk = chunk_rows(rows, channels);
    dx.par_chunks_mut(chunk * channels)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, out) in out.chunks_exact_mut(channels).enumerate() {
                let r = task * chunk + i;
                dz_row(r, out);
                let x = &x[r * channels..(r + 1) * channels];
                let k = k1.iter().zip(&k2).zip(&k3);
                for ((out, &x), ((&k1, &k2), &k3)) in out.iter_mut().zip(x).zip(k) {
                    *out = k1 * *out + k2 * x + k3;
                }
            }
        });
    let d_shortcut = shortcut.then(|| match masked {
        Some(dz) => B::from_values(dz, &[rows, channels]),
        None => output_grad.clone(),
    });
    [
        Some(B::from_values(dx, &[rows, channels])),
        Some(B::from_values(d_gamma, &[channels])),
        Some(B::from_values(d_beta, &[channels])),
        d_shortcut,
    ]
}

/// The gradient `dy` where the ReLU passed its input (`y > 0`), zero elsewhere.
fn relu_masked(dy: &[f32], y: &[f32], channels: usize) -> Vec<f32> {
    map_rows(dy, channels, |r, grad, out| {
        let y = &y[r * channels..(r + 1) * channels];
        for ((out, &g), &y) in out.iter_mut().zip(grad).zip(y) {
            *out = if y > 0.0 { g } else { 0.0 };
        }
    })
}

/// BatchNorm's input gradient in training mode as `dx = k1·dz + k2·x + k3` per channel, from
/// the batch's `n` rows: `k1 = γ/σ`, `k2 = −k1·dγ/(σ·n)`, `k3 = −k1·Σdz/n − k2·μ`.
fn input_grad_coefficients(
    gamma: &[f32],
    inv_std: &[f32],
    d_gamma: &[f32],
    sum_dz: &[f64],
    mean: &[f32],
    n: f64,
) -> [Vec<f32>; 3] {
    let channels = gamma.len();
    let k1: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
    let k2: Vec<f32> = (0..channels)
        .map(|c| (-f64::from(k1[c]) * f64::from(inv_std[c]) * f64::from(d_gamma[c]) / n) as f32)
        .collect();
    let k3: Vec<f32> = (0..channels)
        .map(|c| (-f64::from(k1[c]) * sum_dz[c] / n - f64::from(k2[c]) * f64::from(mean[c])) as f32)
        .collect();
    [k1, k2, k3]
}

/// `[rows, channels]` of a matrix (the trailing dimensions flattened).
fn dims2<B: HostBackend>(x: &FloatTensor<B>) -> [usize; 2] {
    let shape = B::dims(x);
    [shape[0], shape[1..].iter().product()]
}

/// Rows per task: a few tasks per thread, each at least 64 KiB of values.
fn chunk_rows(rows: usize, channels: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads();
    rows.div_ceil(tasks)
        .max((16 << 10) / channels.max(1))
        .max(1)
}

/// Two sets of column sums of a row-major matrix, `channels` each, in f64, as `add` accumulates
/// them from one row.
fn column_sums(
    x: &[f32],
    channels: usize,
    add: impl Fn(&[f32], [&mut [f64]; 2]) + Sync,
) -> [Vec<f64>; 2] {
    let rows = x.len() / channels.max(1);
    column_sums_indexed(rows, channels, |r, acc, _| {
        add(&x[r * channels..(r + 1) * channels], acc)
    })
}

/// As [`column_sums`], with `add` given the row's index and a scratch row of `channels` values.
fn column_sums_indexed(
    rows: usize,
    channels: usize,
    add: impl Fn(usize, [&mut [f64]; 2], &mut [f32]) + Sync,
) -> [Vec<f64>; 2] {
    let chunk = chunk_rows(rows, channels);
    let total = (0..rows.div_ceil(chunk))
        .into_par_iter()
        .map(|task| {
            let mut acc = vec![0f64; 2 * channels];
            let mut scratch = vec![0f32; channels];
            for r in task * chunk..((task + 1) * chunk).min(rows) {
                let (first, second) = acc.split_at_mut(channels);
                add(r, [first, second], &mut scratch);
            }
            acc
        })
        .reduce(
            || vec![0f64; 2 * channels],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        );
    let second = total[channels..].to_vec();
    let mut first = total;
    first.truncate(channels);
    [first, second]
}

/// A new row-major matrix, `write` filling each output row from the input row (and its index).
fn map_rows(
    x: &[f32],
    channels: usize,
    write: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let rows = x.len() / channels.max(1);
    let chunk = chunk_rows(rows, channels) * channels;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .for_each(|(task, (out, x))| {
            let rows = out.chunks_exact_mut(channels).zip(x.chunks_exact(channels));
            for (i, (out, x)) in rows.enumerate() {
                write(task * chunk / channels + i, x, out);
            }
        });
    out
}

/// The shapes of one convolution, as the products see them.
struct ConvShape {
    /// Input `[N, H, W, C]`.
    input: [usize; 4],
    /// Output `[Ho, Wo]`.
    out: [usize; 2],
    /// Output channels.
    c_out: usize,
    /// The kept taps (rows, columns) of the kernel.
    taps: [Range<usize>; 2],
    /// The weight's first row multiplied, and how many (the im2col row length).
    first: usize,
    depth: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    kernel: [usize; 2],
}

impl ConvShape {
    fn new(s: &[usize], weight: &[usize], [kh, kw, sh, sw, ph, pw]: [usize; 6]) -> Self {
        let [n, h, w, c] = [s[0], s[1], s[2], s[3]];
        let c_out = weight[1];
        let out = output_size([h, w], [kh, kw], [sh, sw], [ph, pw]);
        let taps = kept_taps([h, w], [kh, kw], [sh, sw], [ph, pw], out);
        Self {
            input: [n, h, w, c],
            out,
            c_out,
            first: (taps[0].start * kw + taps[1].start) * c,
            depth: taps[0].len() * taps[1].len() * c,
            taps,
            stride: [sh, sw],
            padding: [ph, pw],
            kernel: [kh, kw],
        }
    }

    /// The Winograd tile for this convolution and, for its input's gradient, for the
    /// convolution of the output's gradient by the flipped kernel: only for a 3x3 kernel of
    /// stride 1 whose every tap sees the map, padded by at most 2, where
    /// [`choose_for_training`] picks one for the output's map and for the input's.
    #[cfg(target_arch = "x86_64")]
    fn winograd(&self) -> Option<[TileSize; 2]> {
        let [n, h, w, c] = self.input;
        let full = self.depth == 9 * c && self.padding.iter().all(|&p| p <= 2);
        let forward = choose_for_training(self.kernel, self.stride, self.out, n)?;
        let backward = choose_for_training(self.kernel, self.stride, [h, w], n)?;
        full.then_some([forward, backward])
    }

    /// Whether the forward product runs on the panel tiles ([`panel_forward`]) rather than
    /// `gemm`: for a kernel of more than one tap (the stem and the 3x3s), whose rows are
    /// gathered a block at a time while the block is in cache, with a block of rows for every
    /// thread, and a weight of at most 4 MiB, read again for every block. Measured on one
    /// thread at 224x224, batch 8: the stem 36 -> 15 ms, stage 3's 3x3s 19 -> 15. Left to
    /// `gemm`: a 1x1 convolution, whose rows come from memory (`gemm`, which packs them, ran
    /// 1.2-1.8x faster), stage 4's 3x3s (a 9 MiB weight: 1.3x), and maps of fewer rows than
    /// that (at 32x32 pixels, stage 3's 3x3s of 128 rows ran 1.7x faster on `gemm`).
    #[cfg(target_arch = "x86_64")]
    fn gathered_on_panels(&self) -> bool {
        let taps = self.kernel[0] * self.kernel[1];
        use crate::cpu::panels::{available, row_block_each};
        available() && taps > 1 && self.depth * self.c_out <= 1 << 20 && row_block_each(self.rows())
    }

    fn rows(&self) -> usize {
        self.input[0] * self.out[0] * self.out[1]
    }

    /// Whether the input already is the im2col matrix (a 1x1, stride-1, unpadded convolution).
    fn is_pointwise(&self) -> bool {
        self.depth == self.input[3] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Rows `rows` of [`columns`](Self::columns) into `buffer`, every value written.
    fn gather(&self, x: &[f32], rows: Range<usize>, buffer: &mut [f32]) {
        let (taps, input, out) = ([&self.taps[0], &self.taps[1]], self.input, self.out);
        im2col_rows(x, input, taps, self.stride, self.padding, out, rows, buffer);
    }

    /// The im2col matrix `[rows, depth]` of `x`.
    fn columns<'a>(&self, x: &'a [f32]) -> Cow<'a, [f32]> {
        if self.is_pointwise() {
            return Cow::Borrowed(x);
        }
        let [taps_y, taps_x] = &self.taps;
        let parallel = self.rows() * self.depth >= PARALLEL_COPY;
        Cow::Owned(im2col(
            x,
            self.input,
            [taps_y, taps_x],
            self.stride,
            self.padding,
            self.out,
            parallel,
        ))
    }
}

/// Below this many values an im2col or col2im runs on one thread.
const PARALLEL_COPY: usize = 1 << 16;

/// The convolution of channels-last `x` by a `[kh·kw·C, C_out]` weight matrix: im2col, then one
/// product. `geometry` is `[kh, kw, stride_y, stride_x, pad_y, pad_x]`.
pub(crate) fn conv_nhwc<B: HostBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    geometry: [usize; 6],
) -> FloatTensor<B> {
    let shape = ConvShape::new(&B::dims(&x), &B::dims(&weight), geometry);
    let (x, weight) = (B::values(&x), B::values(&weight));
    #[cfg(target_arch = "x86_64")]
    if let Some([size, _]) = shape.winograd() {
        let [n, _, _, c] = shape.input;
        let (c_out, [ho, wo]) = (shape.c_out, shape.out);
        let winograd = Winograd::pack(&weight, c, c_out, size);
        let zeros = vec![0.0; c_out];
        let y = winograd.forward(
            &x,
            shape.input,
            shape.padding,
            Epilogue::linear(&zeros),
            true,
        );
        return B::from_values(y, &[n, ho, wo, c_out]);
    }
    let (rows, depth, c_out) = (shape.rows(), shape.depth, shape.c_out);
    let weight = &weight[shape.first * c_out..(shape.first + depth) * c_out];
    #[cfg(target_arch = "x86_64")]
    if shape.gathered_on_panels() {
        let y = panel_forward(&x, weight, &shape);
        let [n, _, _, _] = shape.input;
        let [ho, wo] = shape.out;
        return B::from_values(y, &[n, ho, wo, c_out]);
    }
    let columns = shape.columns(&x);
    let y = product(
        [rows, depth, c_out],
        (&columns, [depth, 1]),
        (weight, [c_out, 1]),
        true,
    );
    let [n, _, _, _] = shape.input;
    let [ho, wo] = shape.out;
    B::from_values(y, &[n, ho, wo, c_out])
}

/// [`conv_nhwc`]'s product by the panel tiles, as the folded inference path runs it, for the
/// convolutions [`ConvShape::gathered_on_panels`] picks: the weight (its kept taps' rows)
/// packed on every call (the optimizer moves it between steps); the stem straight from the
/// image ([`narrow`](crate::cpu::panels::narrow)); the others a block of rows at a time while
/// the block is in cache.
#[cfg(target_arch = "x86_64")]
fn panel_forward(x: &[f32], weight: &[f32], shape: &ConvShape) -> Vec<f32> {
    use crate::cpu::panels::narrow::{self, Narrow};
    use crate::cpu::panels::{Panels, product_blocks};
    let (rows, depth, c_out) = (shape.rows(), shape.depth, shape.c_out);
    let panels = Panels::pack(weight, depth, c_out);
    let zeros = vec![0.0; Panels::padded_channels(c_out)];
    let epilogue = Epilogue::linear(&zeros);
    let parallel = rows * depth * c_out >= crate::cpu::gemm::PARALLEL_PRODUCT;
    let c = shape.input[3];
    let narrow = Narrow {
        kernel: shape.kernel,
        stride: shape.stride,
        padding: shape.padding,
        channels: c,
    };
    let every_tap = depth == shape.kernel[0] * shape.kernel[1] * c;
    if every_tap && narrow.runs(c_out) {
        return narrow::forward(x, shape.input, narrow, &panels, epilogue, parallel);
    }
    let gather = |block: Range<usize>, buffer: &mut [f32]| shape.gather(x, block, buffer);
    product_blocks(rows, depth, gather, &panels, 0, epilogue, parallel)
}

/// `[dx, dweight]` of [`conv_nhwc`], each only where asked for.
pub(crate) fn conv_nhwc_backward<B: HostBackend>(
    grad: FloatTensor<B>,
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    geometry: [usize; 6],
    [want_dx, want_dw]: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let shape = ConvShape::new(&B::dims(&x), &B::dims(&weight), geometry);
    let weight_rows = B::dims(&weight)[0];
    let (grad, x, weight) = (B::values(&grad), B::values(&x), B::values(&weight));
    let (rows, depth, c_out) = (shape.rows(), shape.depth, shape.c_out);
    // The two products are independent: side by side they keep both threads busy where
    // one alone is too small to split well (the late stages' products).
    let (dx, dw) = rayon::join(
        || {
            // dColumns = dY · Wᵀ, summed back onto the pixels each row was gathered from.
            want_dx.then(|| {
                #[cfg(target_arch = "x86_64")]
                if let Some([_, size]) = shape.winograd() {
                    return B::from_values(
                        input_grad_winograd(&grad, &weight, &shape, size),
                        &shape.input,
                    );
                }
                let weight = &weight[shape.first * c_out..(shape.first + depth) * c_out];
                let d_columns = product(
                    [rows, c_out, depth],
                    (&grad, [c_out, 1]),
                    (weight, [1, c_out]),
                    true,
                );
                let dx = if shape.is_pointwise() {
                    d_columns
                } else {
                    col2im(&d_columns, &shape)
                };
                B::from_values(dx, &shape.input)
            })
        },
        || {
            // dW = columnsᵀ · dY, into the kept taps' rows; the others get no gradient. The
            // columns are gathered again rather than kept from the forward: one copy pass
            // against holding a 3x3 convolution's nine-fold activations until the backward.
            want_dw.then(|| {
                let block = weight_grad(&x, &grad, &shape);
                let dw = if depth * c_out == weight.len() {
                    block
                } else {
                    let mut dw = vec![0f32; weight_rows * c_out];
                    dw[shape.first * c_out..(shape.first + depth) * c_out].copy_from_slice(&block);
                    dw
                };
                B::from_values(dw, &[weight_rows, c_out])
            })
        },
    );
    [dx, dw]
}

/// `columnsᵀ · dY`, `[depth, C_out]`. A kernel of several taps' (the stem, the 3x3s) by the
/// panel tiles where they run ([`transposed`](crate::cpu::panels::transposed)), the columns
/// gathered a block of rows at a time into cache rather than whole into memory: at 224x224,
/// batch 8, on one thread, stage 1's 3x3s 41 -> 20 ms, the stem 38 -> 27. A 1x1 convolution's
/// by `gemm` (the tiles ran them 10-30% slower: the rows come from memory, and `gemm` packs
/// them as fast), over many rows with its output's rows along the longer side, which ran
/// faster there (256 x 64 from 25,088 rows: 8.2 against 11 ms) and slower over few (2,048 x
/// 512 from 392: 15 against 6).
fn weight_grad(x: &[f32], grad: &[f32], shape: &ConvShape) -> Vec<f32> {
    let (rows, depth, c_out) = (shape.rows(), shape.depth, shape.c_out);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::panels::transposed;
        let taps = shape.kernel[0] * shape.kernel[1];
        if taps > 1 && transposed::runs(rows, c_out, true) {
            let gather = |block: Range<usize>, buffer: &mut [f32]| shape.gather(x, block, buffer);
            return transposed::product(rows, depth, c_out, &gather, grad, true);
        }
    }
    let columns = shape.columns(x);
    if depth > c_out && rows >= 4096 {
        let block = product(
            [c_out, rows, depth],
            (grad, [1, c_out]),
            (&columns, [depth, 1]),
            true,
        );
        let mut out = vec![0.0; depth * c_out];
        for (j, row) in block.chunks_exact(depth).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                out[i * c_out + j] = v;
            }
        }
        out
    } else {
        product(
            [depth, rows, c_out],
            (&columns, [1, depth]),
            (grad, [c_out, 1]),
            true,
        )
    }
}

/// The input's gradient of a 3x3 convolution of stride 1 by Winograd's transforms: the
/// convolution of the output's gradient, padded by `2 − padding`, by the kernel flipped in both
/// directions with its input and output channels swapped.
#[cfg(target_arch = "x86_64")]
fn input_grad_winograd(
    grad: &[f32],
    weight: &[f32],
    shape: &ConvShape,
    size: TileSize,
) -> Vec<f32> {
    let [_, _, _, c] = shape.input;
    let (n, c_out, [ho, wo]) = (shape.input[0], shape.c_out, shape.out);
    let mut flipped = vec![0f32; weight.len()];
    flipped
        .par_chunks_mut(c_out * c)
        .enumerate()
        .for_each(|(k, tap)| {
            // Tap (ky, kx) of the flipped kernel is tap (2 − ky, 2 − kx) of the weight, transposed.
            let source = &weight[(8 - k) * c * c_out..][..c * c_out];
            for (co, row) in tap.chunks_exact_mut(c).enumerate() {
                for (ci, value) in row.iter_mut().enumerate() {
                    *value = source[ci * c_out + co];
                }
            }
        });
    let winograd = Winograd::pack(&flipped, c_out, c, size);
    let padding = shape.padding.map(|p| 2 - p);
    let zeros = vec![0.0; c];
    winograd.forward(
        grad,
        [n, ho, wo, c_out],
        padding,
        Epilogue::linear(&zeros),
        true,
    )
}

/// The adjoint of [`im2col`]: each row's values added back onto the input pixels they were
/// copied from (padding taps dropped), per image on the pool's threads.
fn col2im(columns: &[f32], shape: &ConvShape) -> Vec<f32> {
    let [n, h, w, c] = shape.input;
    let [ho, wo] = shape.out;
    let [sh, sw] = shape.stride;
    let [ph, pw] = shape.padding;
    let [taps_y, taps_x] = &shape.taps;
    let (depth, span) = (shape.depth, taps_x.len() * c);
    let mut dx = vec![0f32; n * h * w * c];
    let parallel = columns.len() >= PARALLEL_COPY;
    for_each_image(parallel, &mut dx, h * w * c, |i, image| {
        let rows = &columns[i * ho * wo * depth..(i + 1) * ho * wo * depth];
        for (p, row) in rows.chunks_exact(depth).enumerate() {
            let (oy, ox) = (p / wo, p % wo);
            for (t, ky) in taps_y.clone().enumerate() {
                let Some(y) = (oy * sh + ky).checked_sub(ph).filter(|&y| y < h) else {
                    continue;
                };
                let x0 = ox * sw + taps_x.start;
                let first = pw.saturating_sub(x0).min(taps_x.len());
                let last = (w + pw).saturating_sub(x0).min(taps_x.len());
                if first < last {
                    let src = &row[t * span + first * c..t * span + last * c];
                    let dst = (y * w + x0 + first - pw) * c;
                    for (d, s) in image[dst..dst + src.len()].iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weight gradient of the stem and of a 3x3 convolution (pairs of panels, and pairs
    /// and a lone panel), taken on the panel tiles from columns gathered a block at a time and
    /// with the rows split between threads, against `gemm` on the whole im2col matrix.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn weight_gradient_on_the_tiles_matches_gemm() {
        use crate::cpu::panels::{available, transposed};
        if !available() {
            return;
        }
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1013) as f32 / 506.5 - 1.0;
        // (input [N, H, W, C], C_out, geometry [kh, kw, sy, sx, py, px])
        let cases = [
            ([2, 32, 32, 3], 64, [7, 7, 2, 2, 3, 3]),
            ([4, 12, 12, 16], 32, [3, 3, 1, 1, 1, 1]),
            ([5, 12, 11, 8], 48, [3, 3, 1, 1, 1, 1]),
        ];
        for (input, c_out, geometry) in cases {
            let [kh, kw, ..] = geometry;
            let shape = ConvShape::new(&input, &[kh * kw * input[3], c_out], geometry);
            let rows = shape.rows();
            assert!(
                transposed::runs(rows, c_out, true),
                "{input:?}: not on the tiles"
            );
            let x: Vec<f32> = (0..input.iter().product()).map(|i| value(i, 1)).collect();
            let grad: Vec<f32> = (0..rows * c_out).map(|i| value(i, 2)).collect();
            let got = weight_grad(&x, &grad, &shape);
            let columns = shape.columns(&x);
            let want = product(
                [shape.depth, rows, c_out],
                (&columns, [1, shape.depth]),
                (&grad, [c_out, 1]),
                false,
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{input:?} value {i}: {g} against {w}"
                );
            }
        }
    }

    /// BatchNorm's training-mode input gradient as `k1·dz + k2·x + k3` against its textbook form
    /// in `f64`, `dx = γ/σ · (dz − mean(dz) − x̂·mean(dz·x̂))` with `x̂ = (x − μ)/σ` (Ioffe and
    /// Szegedy 2015), on values whose columns have different means and spreads.
    #[test]
    fn input_gradient_coefficients_give_the_textbook_gradient() {
        let (rows, channels) = (37, 5);
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1013) as f64 / 506.5 - 1.0;
        let x: Vec<f32> = (0..rows * channels)
            .map(|i| (value(i, 1) * (1.0 + (i % channels) as f64) + (i % channels) as f64) as f32)
            .collect();
        let dz: Vec<f32> = (0..rows * channels).map(|i| value(i, 2) as f32).collect();
        let gamma: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.3).collect();
        let epsilon = 1e-5;
        let column = |v: &[f32], c: usize| -> Vec<f64> {
            (0..rows).map(|r| f64::from(v[r * channels + c])).collect()
        };
        let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (mut mean, mut inv_std, mut sum_dz, mut d_gamma) = (vec![], vec![], vec![], vec![]);
        let mut want = vec![0f64; rows * channels];
        for c in 0..channels {
            let (xc, dzc) = (column(&x, c), column(&dz, c));
            let mu = mean_of(&xc);
            let var = mean_of(&xc.iter().map(|v| (v - mu) * (v - mu)).collect::<Vec<_>>());
            let sigma = (var + epsilon).sqrt();
            let x_hat: Vec<f64> = xc.iter().map(|v| (v - mu) / sigma).collect();
            let dz_x_hat: Vec<f64> = dzc.iter().zip(&x_hat).map(|(d, h)| d * h).collect();
            let (mean_dz, mean_dz_x_hat) = (mean_of(&dzc), mean_of(&dz_x_hat));
            for r in 0..rows {
                want[r * channels + c] =
                    f64::from(gamma[c]) / sigma * (dzc[r] - mean_dz - x_hat[r] * mean_dz_x_hat);
            }
            mean.push(mu as f32);
            inv_std.push((1.0 / sigma) as f32);
            sum_dz.push(dzc.iter().sum::<f64>());
            d_gamma.push(dz_x_hat.iter().sum::<f64>() as f32);
        }
        let [k1, k2, k3] =
            input_grad_coefficients(&gamma, &inv_std, &d_gamma, &sum_dz, &mean, rows as f64);
        for r in 0..rows {
            for c in 0..channels {
                let i = r * channels + c;
                let got = f64::from(k1[c] * dz[i] + k2[c] * x[i] + k3[c]);
                assert!(
                    (got - want[i]).abs() < 1e-5,
                    "({r}, {c}): {got} vs {}",
                    want[i]
                );
            }
        }
    }

    /// The shortcut's gradient passes where the ReLU did, and only there.
    #[test]
    fn relu_mask_keeps_the_gradient_where_the_output_is_positive() {
        let dy = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
        let y = [0.5, 0.0, -1.0, 2.0, 1e-7, 3.0];
        assert_eq!(relu_masked(&dy, &y, 3), vec![1.0, 0.0, 0.0, 4.0, 5.0, -6.0]);
    }
}
