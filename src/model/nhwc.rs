//! The fast path: activations channels-last (`[N, H, W, C]`) and every convolution one matrix
//! product over the whole batch.
//!
//! Why: at CIFAR-10's 32x32 a ResNet50's later stages are 4x4, 2x2 and 1x1 pixels. A convolution
//! that multiplies one image at a time (as Burn's CPU backends do) runs thousands of skinny
//! matrix products, each too small for the SIMD kernels, and re-reads every weight once per
//! image. Channels-last turns a 1x1 convolution into one `[N·H·W, C_in] x [C_in, C_out]`
//! product, and a 3x3 one into the same after gathering its patches (im2col), for the batch at
//! once; BatchNorm becomes a per-column operation on that matrix. Everything is plain Burn tensor
//! operations, so it runs on every backend and autodiff differentiates it as usual: frozen
//! weights get no gradient, and nothing behind a frozen part is differentiated at all. On flex
//! the convolution and the training BatchNorm (with the ReLU and shortcut after it) are single
//! operations with their own backward instead ([`ops`](crate::ops)), held to these
//! by the tests.
//!
//! The weights are stored as the matrices the products take ([`Conv`]), so neither the forward
//! nor the backward copies a weight. [`ConvBn::forward`](super::block::ConvBn::forward) keeps
//! Burn's own `conv2d` and `BatchNorm` in channels-first layout: the reference the tests hold
//! this path to.

use std::ops::Range;

use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Slice, Tensor, TensorData, activation};

use crate::cpu::im2col::{kept_taps, output_side, output_size};
use crate::model::conv::Conv;

/// `[N, C, H, W]` to `[N, H, W, C]`.
pub(crate) fn to_nhwc(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 2, 3, 1])
}

/// `[N, H, W, C]` to `[N, C, H, W]`.
pub(crate) fn to_nchw(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 3, 1, 2])
}

/// `conv(x)` for channels-last `x`, as one matrix product over the batch: on flex, one operation
/// with its own backward ([`ops`](crate::ops)); elsewhere Burn's tensor operations.
pub(crate) fn conv(conv: &Conv, x: Tensor<4>) -> Tensor<4> {
    let fast = crate::ops::conv_nhwc(
        x.clone(),
        conv.weight.val(),
        conv.kernel,
        conv.stride,
        conv.padding,
    );
    if let Some(y) = fast {
        return match &conv.bias {
            Some(bias) => y + bias.val().unsqueeze_dims(&[0, 1, 2]),
            None => y,
        };
    }
    let [n, h, w, c] = x.dims();
    debug_assert_eq!(c, conv.channels()[0], "checked by the caller's shapes");
    let [kh, kw] = conv.kernel;
    let [sh, sw] = conv.stride;
    let [ph, pw] = conv.padding;
    let [ho, wo] = output_size([h, w], [kh, kw], [sh, sw], [ph, pw]);
    let rows = n * ho * wo;

    let [taps_y, taps_x] = kept_taps([h, w], conv.kernel, conv.stride, conv.padding, [ho, wo]);
    let taps = taps_y.len() * taps_x.len();
    let columns = if taps == 1 && ph + pw == 0 {
        let x = if sh == 1 && sw == 1 {
            x
        } else {
            x.slice([
                Slice::full(),
                Slice::new(0, Some(h as isize), sh as isize),
                Slice::new(0, Some(w as isize), sw as isize),
                Slice::full(),
            ])
        };
        x.reshape([rows, c])
    } else if c < MIN_GATHER_CHANNELS {
        // The stem's 3 channels: rows of 12 bytes are too short for a gather to copy
        // efficiently; strided views of the padded input copy rows of `kw·C` values instead.
        im2col_windows(x, [&taps_y, &taps_x], [sh, sw], [ph, pw], [ho, wo])
            .reshape([rows, taps * c])
    } else {
        // im2col as one gather: row `p*taps + t` of the gathered matrix is the input pixel
        // under tap `t` of output pixel `p` (ordered ky, kx), or an all-zero row standing for the
        // padding. Its gradient is one scatter-add back into the input.
        let zero_row = Tensor::zeros([1, c], &x.device());
        let table = Tensor::cat(vec![x.reshape([n * h * w, c]), zero_row], 0);
        let index = im2col_index([n, h, w], [&taps_y, &taps_x], [sh, sw], [ph, pw], [ho, wo]);
        let index =
            Tensor::<1, Int>::from_data(TensorData::new(index, [rows * taps]), &table.device());
        table.select(0, index).reshape([rows, taps * c])
    };
    // The weight is stored as the `[kh·kw·C_in, C_out]` matrix these columns multiply; the kept
    // taps are one block of its rows.
    let weight = conv.weight.val();
    let weight = if taps == kh * kw {
        weight
    } else {
        let first = (taps_y.start * kw + taps_x.start) * c;
        weight.narrow(0, first, taps * c)
    };
    let mut y = columns.matmul(weight);
    if let Some(bias) = &conv.bias {
        y = y + bias.val().unsqueeze_dim(0);
    }
    let c_out = conv.channels()[1];
    y.reshape([n, ho, wo, c_out])
}

/// Below this many input channels, im2col copies windows of the padded input rather than
/// gathering pixel rows: with few channels a gathered row is a handful of bytes, and copying
/// whole windows moves the same values in longer runs (measured on the stem; for 64 channels
/// and more the gather is as fast or faster; figures in docs/PERFORMANCE.md).
const MIN_GATHER_CHANNELS: usize = 16;

/// im2col through strided views: `[N, Ho, Wo, kh, kw·C]`, the input padded with zeros and each
/// output pixel's window a view (`unfold`) whose rows of `kw·C` values are contiguous in the
/// padded input. Its gradient is Burn's `unfold` backward, a sum of the windows back into the
/// input.
fn im2col_windows(
    x: Tensor<4>,
    [taps_y, taps_x]: [&Range<usize>; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
    [ho, wo]: [usize; 2],
) -> Tensor<5> {
    let [n, _, _, c] = x.dims();
    let x = x.pad([(0, 0), (ph, ph), (pw, pw), (0, 0)], PadMode::Constant(0.0));
    let (kh, kw) = (taps_y.len(), taps_x.len());
    // Only the rows and columns the kept taps reach.
    let x = x.slice([
        Slice::full(),
        Slice::from(taps_y.start..taps_y.start + (ho - 1) * sh + kh),
        Slice::from(taps_x.start..taps_x.start + (wo - 1) * sw + kw),
        Slice::full(),
    ]);
    let x = x.reshape([n, (ho - 1) * sh + kh, ((wo - 1) * sw + kw) * c]);
    let windows: Tensor<4> = x.unfold(2, kw * c, sw * c);
    let windows: Tensor<5> = windows.unfold(1, kh, sh);
    windows.permute([0, 1, 2, 4, 3])
}

/// The gather index of an im2col over `[N, H, W]` pixels: for each output pixel (row-major) and
/// each tap (ky, kx) of the given ranges, the input pixel's row, or `N·H·W` (the zero row) where
/// the tap falls in the padding.
fn im2col_index(
    [n, h, w]: [usize; 3],
    [taps_y, taps_x]: [&Range<usize>; 2],
    [sh, sw]: [usize; 2],
    [top, left]: [usize; 2],
    [ho, wo]: [usize; 2],
) -> Vec<i64> {
    let zero = (n * h * w) as i64;
    let mut index = Vec::with_capacity(n * ho * wo * taps_y.len() * taps_x.len());
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ky in taps_y.clone() {
                    for kx in taps_x.clone() {
                        let y = (oy * sh + ky).checked_sub(top).filter(|&y| y < h);
                        let x = (ox * sw + kx).checked_sub(left).filter(|&x| x < w);
                        index.push(match (y, x) {
                            (Some(y), Some(x)) => ((b * h + y) * w + x) as i64,
                            _ => zero,
                        });
                    }
                }
            }
        }
    }
    index
}

/// `pool(x)` for channels-last `x` whose values are all `>= 0` (the output of a ReLU), as the
/// maximum of the window's shifted views.
///
/// For non-negative inputs, padding with zeros gives the same maximum as Burn's padding with
/// minus infinity (every window holds at least one pixel), and where it picks a padding zero
/// over a pixel that is also zero, the ReLU below passes no gradient either way. The maximum of
/// shifted views is a few whole-tensor passes where Burn's `max_pool2d` walks every window.
/// Dilated, `Same`-padded or ceil-mode pools take Burn's own path. On the CPU backends an
/// evenly padded pool is one operation each way instead ([`ops`](crate::ops)), whose maximum
/// is over the window's pixels only (the same for these inputs), held to Burn's `max_pool2d`
/// by the tests.
pub(crate) fn max_pool_non_negative(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [n, h, w, c] = x.dims();
    let [kh, kw] = pool.kernel_size;
    let [sh, sw] = pool.stride;
    let pads = match pool.padding {
        PaddingConfig2d::Valid => Some([0; 4]),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
        PaddingConfig2d::Same => None,
    };
    let Some([top, left, bottom, right]) = pads.filter(|p| {
        pool.dilation == [1, 1] && !pool.ceil_mode && p[0].max(p[2]) < kh && p[1].max(p[3]) < kw
    }) else {
        return to_nhwc(pool.forward(to_nchw(x)));
    };
    if top == bottom && left == right {
        let fast = crate::ops::max_pool_nhwc(x.clone(), [kh, kw], [sh, sw], [top, left]);
        if let Some(y) = fast {
            return y;
        }
    }
    let ho = output_side(h, kh, sh, top + bottom);
    let wo = output_side(w, kw, sw, left + right);
    let x = x.pad(
        [(0, 0), (top, bottom), (left, right), (0, 0)],
        PadMode::Constant(0.0),
    );
    let shifted = |ky: usize, kx: usize| {
        x.clone().slice([
            Slice::full(),
            Slice::new(
                ky as isize,
                Some((ky + (ho - 1) * sh + 1) as isize),
                sh as isize,
            ),
            Slice::new(
                kx as isize,
                Some((kx + (wo - 1) * sw + 1) as isize),
                sw as isize,
            ),
            Slice::full(),
        ])
    };
    let taps = (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx)));
    let max = taps
        .map(|(ky, kx)| shifted(ky, kx))
        .reduce(Tensor::max_pair)
        .expect("a pool has at least one tap");
    debug_assert_eq!(max.dims(), [n, ho, wo, c]);
    max
}

/// BatchNorm over the last axis of channels-last `x`, with the layer's own rule for when it
/// uses (and updates) batch statistics: on an autodiff device with its training flag set.
pub(crate) fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_then(bn, x, None, false)
}

/// [`batch_norm`], plus `shortcut` where given, then a ReLU where `relu`. In training on flex
/// all of it is one operation with its own backward ([`ops`](crate::ops));
/// elsewhere they are Burn's tensor operations.
pub(crate) fn batch_norm_then(
    bn: &BatchNorm,
    x: Tensor<4>,
    shortcut: Option<Tensor<4>>,
    relu: bool,
) -> Tensor<4> {
    let dims = x.dims();
    let c = dims[3];
    let rows = x.reshape([dims[0] * dims[1] * dims[2], c]);
    let device = rows.device();
    let y = if device.is_autodiff() && bn.training.is_enabled() {
        let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
            let running = state.value_sync().to_device(&device);
            let batch = batch.detach();
            state.update(
                (running.mul_scalar(1.0 - bn.momentum) + batch.mul_scalar(bn.momentum)).detach(),
            );
        };
        let params = [bn.gamma.val(), bn.beta.val()];
        let flat_shortcut = shortcut
            .clone()
            .map(|s| s.reshape([dims[0] * dims[1] * dims[2], c]));
        let fast =
            crate::ops::batch_norm_train(rows.clone(), params, flat_shortcut, bn.epsilon, relu);
        match fast {
            Some((y, mean, var)) => {
                update(&bn.running_mean, mean);
                update(&bn.running_var, var);
                return y.reshape(dims);
            }
            None => {
                // Batch statistics are column reductions of the `[N·H·W, C]` matrix: no
                // transposes.
                let mean = rows.clone().mean_dim(0);
                let centered = rows - mean.clone();
                let var = centered.clone().powi_scalar(2).mean_dim(0);
                let inv_std = var.clone().add_scalar(bn.epsilon).sqrt().recip();
                let y = centered * (inv_std * bn.gamma.val().unsqueeze_dim(0))
                    + bn.beta.val().unsqueeze_dim(0);
                update(&bn.running_mean, mean.reshape([c]));
                update(&bn.running_var, var.reshape([c]));
                y
            }
        }
    } else {
        let mean = bn.running_mean.value().to_device(&device);
        let var = bn.running_var.value().to_device(&device);
        let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
        let shift = bn.beta.val() - mean * scale.clone();
        rows * scale.unsqueeze_dim(0) + shift.unsqueeze_dim(0)
    };
    let y = match shortcut {
        Some(shortcut) => y.reshape(dims) + shortcut,
        None => y.reshape(dims),
    };
    if relu { activation::relu(y) } else { y }
}
