//! One folded convolution: the weight with its BatchNorm folded in, laid out once for the product
//! that multiplies it (row-major for `gemm`, panels for the AVX2/AVX-512 tile, Winograd
//! transforms for 3x3 convolutions of stride 1), and the epilogue that adds the shift and the
//! shortcut and applies the ReLU as the product's output is stored.

use std::borrow::Cow;

use burn::tensor::Tensor;

use crate::cpu::for_each_image;
use crate::cpu::gemm::{PARALLEL_PRODUCT, product};
use crate::cpu::im2col::{im2col_rows, kept_taps};
use crate::error::{Error, Result};
use crate::model::ConvBn;

/// A convolution with its BatchNorm folded in: `y = im2col(x) · weight + shift`.
#[derive(Debug, Clone)]
pub(super) struct FoldedConv {
    /// `[kh·kw·C_in, C_out]`, each column scaled by its BatchNorm's `γ/√(σ²+ε)`.
    weight: Weight,
    /// `[C_out]`: `β + (bias − μ)·γ/√(σ²+ε)`, then zeros to whole panels.
    shift: Vec<f32>,
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    /// For a 3x3 convolution of stride 1 on a CPU with the panel product: its Winograd
    /// transforms, one per tile size, each made the first time a map calls for it.
    #[cfg(target_arch = "x86_64")]
    winograd: Option<Box<[std::sync::OnceLock<crate::cpu::winograd::Winograd>; 2]>>,
}

/// A folded weight, laid out for the product that multiplies it.
#[derive(Debug, Clone)]
enum Weight {
    /// Row-major, for `gemm`.
    Plain(Vec<f32>),
    /// Packed once into panels, for the AVX2 product ([`panels`](crate::cpu::panels)).
    #[cfg(target_arch = "x86_64")]
    Panels(crate::cpu::panels::Panels),
}

/// Channels-last activations `[N, H, W, C]` in one buffer.
pub(super) struct Maps {
    pub(super) data: Vec<f32>,
    pub(super) dims: [usize; 4],
}

/// A tensor's values as `f32` on the host; `name` is the tensor's path in errors.
pub(crate) fn host_values<const D: usize>(tensor: Tensor<D>, name: &str) -> Result<Vec<f32>> {
    let data = tensor.try_into_data().map_err(|e| Error::BadTensor {
        tensor: name.to_string(),
        reason: format!("cannot be read: {e:?}"),
    })?;
    data.try_into_vec_as::<f32>().map_err(|e| Error::BadTensor {
        tensor: name.to_string(),
        reason: format!("cannot be read as f32: {e:?}"),
    })
}

/// A convolution and its BatchNorm (running statistics) folded into one weight, laid out as
/// the convolution stores it (`[kh·kw·C_in, C_out]`, each column scaled by its channel's
/// `γ/√(σ²+ε)`), and one shift per output channel, `β + (bias − μ)·γ/√(σ²+ε)`: what the fused
/// inference path multiplies with, and what an ONNX export with folded BatchNorm writes. `name`
/// is the unit's path in errors.
pub(crate) fn fold_batch_norm(unit: &ConvBn, name: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let (conv, bn) = (&unit.conv, &unit.bn);
    let values = |t: Tensor<1>, part: &str| host_values(t, &format!("{name}.{part}"));
    let mut weight = host_values(conv.weight.val(), &format!("{name}.weight"))?;
    let gamma = values(bn.gamma.val(), "bn.gamma")?;
    let beta = values(bn.beta.val(), "bn.beta")?;
    let mean = values(bn.running_mean.value(), "bn.running_mean")?;
    let var = values(bn.running_var.value(), "bn.running_var")?;
    let c_out = conv.channels()[1];
    let bias = match &conv.bias {
        Some(bias) => values(bias.val(), "bias")?,
        None => vec![0.0; c_out],
    };
    let scale: Vec<f32> = (gamma.iter().zip(&var))
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    for row in weight.chunks_exact_mut(c_out) {
        row.iter_mut().zip(&scale).for_each(|(w, s)| *w *= s);
    }
    let shift = (0..c_out)
        .map(|j| beta[j] + (bias[j] - mean[j]) * scale[j])
        .collect();
    Ok((weight, shift))
}

impl FoldedConv {
    /// Folds a convolution and its BatchNorm (running statistics) into one weight and shift.
    /// With `panels`, the weight is packed for the AVX2 product (the caller has checked the
    /// CPU has it), and with `winograd` too, a 3x3 convolution of stride 1 runs by Winograd's
    /// transforms where its map is large enough.
    pub(super) fn fold(unit: &ConvBn, name: &str, panels: bool, winograd: bool) -> Result<Self> {
        let (weight, mut shift) = fold_batch_norm(unit, name)?;
        let (conv, channels) = (&unit.conv, unit.conv.channels());
        let c_out = channels[1];
        let depth = weight.len() / c_out;
        #[cfg(target_arch = "x86_64")]
        let weight = if panels {
            shift.resize(crate::cpu::panels::Panels::padded_channels(c_out), 0.0);
            Weight::Panels(crate::cpu::panels::Panels::pack(&weight, depth, c_out))
        } else {
            Weight::Plain(weight)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let weight = {
            let _ = (panels, winograd);
            Weight::Plain(weight)
        };
        #[cfg(target_arch = "x86_64")]
        let winograd = (panels && winograd && conv.kernel == [3, 3] && conv.stride == [1, 1])
            .then(Default::default);
        Ok(Self {
            weight,
            shift,
            channels,
            kernel: conv.kernel,
            stride: conv.stride,
            padding: conv.padding,
            #[cfg(target_arch = "x86_64")]
            winograd,
        })
    }

    /// `relu(conv(x) + shift [+ residual])`; with `parallel`, on every thread of the pool.
    pub(super) fn forward(&self, x: &Maps, residual: Option<&Maps>, parallel: bool) -> Maps {
        self.forward_with(x, Epilogue::Relu(residual), parallel)
    }

    pub(super) fn forward_with(&self, x: &Maps, epilogue: Epilogue, parallel: bool) -> Maps {
        let [n, h, w, c] = x.dims;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.padding;
        let [ho, wo] = [(h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1];
        let rows = n * ho * wo;
        // As the module's path does: taps that only ever see padding are left out.
        let [taps_y, taps_x] = kept_taps([h, w], self.kernel, self.stride, self.padding, [ho, wo]);
        let depth = taps_y.len() * taps_x.len() * c;
        let first = (taps_y.start * kw + taps_x.start) * c;
        let direct = depth == c && ph + pw == 0 && sh == 1 && sw == 1;
        let gather = |block: std::ops::Range<usize>, buffer: &mut [f32]| {
            let taps = [&taps_y, &taps_x];
            im2col_rows(
                &x.data,
                x.dims,
                taps,
                self.stride,
                self.padding,
                [ho, wo],
                block,
                buffer,
            )
        };
        #[cfg(target_arch = "x86_64")]
        if let (Weight::Panels(panels), Some(transforms)) = (&self.weight, &self.winograd) {
            use crate::cpu::winograd::{Winograd, choose};
            if let Some(size) = choose(self.kernel, self.stride, [ho, wo]) {
                let c_out = self.channels[1];
                let winograd = transforms[size.index()]
                    .get_or_init(|| Winograd::pack(&panels.unpack(), c, c_out, size));
                let (residual, relu) = match epilogue {
                    Epilogue::Relu(residual) => (residual.map(|r| &r.data[..]), true),
                    Epilogue::Linear => (None, false),
                };
                let out = winograd.forward(
                    &x.data,
                    x.dims,
                    self.padding,
                    &self.shift,
                    residual,
                    relu,
                    parallel,
                );
                return Maps {
                    data: out,
                    dims: [n, ho, wo, c_out],
                };
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let (Weight::Panels(panels), false, false) = (&self.weight, direct, parallel) {
            // One thread's share: the matrix gathered and multiplied a block of rows at a time.
            let (residual, relu) = match epilogue {
                Epilogue::Relu(residual) => (residual.map(|r| &r.data[..]), true),
                Epilogue::Linear => (None, false),
            };
            let (shift, c_out) = (&self.shift, self.channels[1]);
            let out = crate::cpu::panels::product_blocks(
                rows, depth, gather, panels, first, shift, residual, relu,
            );
            return Maps {
                data: out,
                dims: [n, ho, wo, c_out],
            };
        }
        let columns = if direct {
            Cow::Borrowed(&x.data[..])
        } else {
            // The whole matrix, one image per task when the product is split between threads.
            let mut columns = vec![0.0; rows * depth];
            for_each_image(parallel, &mut columns, ho * wo * depth, |i, out| {
                gather(i * ho * wo..(i + 1) * ho * wo, out)
            });
            Cow::Owned(columns)
        };
        let c_out = self.channels[1];
        let parallel = parallel && rows * depth * c_out >= PARALLEL_PRODUCT;
        let weight = match &self.weight {
            Weight::Plain(weight) => &weight[first * c_out..(first + depth) * c_out],
            #[cfg(target_arch = "x86_64")]
            Weight::Panels(panels) => {
                let (residual, relu) = match epilogue {
                    Epilogue::Relu(residual) => (residual.map(|r| &r.data[..]), true),
                    Epilogue::Linear => (None, false),
                };
                let (shift, a) = (&self.shift, &columns[..]);
                let out = crate::cpu::panels::product_vec(
                    a, depth, panels, first, rows, shift, residual, relu, parallel,
                );
                return Maps {
                    data: out,
                    dims: [n, ho, wo, c_out],
                };
            }
        };
        let mut out = product(
            [rows, depth, c_out],
            (&columns, [depth, 1]),
            (weight, [c_out, 1]),
            parallel,
        );
        epilogue.apply(&mut out, &self.shift[..c_out], rows, parallel);
        Maps {
            data: out,
            dims: [n, ho, wo, c_out],
        }
    }
}

/// What follows a product: add the shift, and the shortcut where there is one, then ReLU.
pub(super) enum Epilogue<'a> {
    Relu(Option<&'a Maps>),
    Linear,
}

impl Epilogue<'_> {
    fn apply(&self, out: &mut [f32], shift: &[f32], rows: usize, parallel: bool) {
        let c = shift.len();
        // About 16 chunks per pass, whole rows each.
        let per_chunk = rows.div_ceil(16).max(1) * c;
        let run = |r: usize, chunk: &mut [f32]| {
            let start = r * per_chunk;
            match self {
                Epilogue::Relu(None) => {
                    for row in chunk.chunks_exact_mut(c) {
                        for (v, s) in row.iter_mut().zip(shift) {
                            *v = (*v + s).max(0.0);
                        }
                    }
                }
                Epilogue::Relu(Some(residual)) => {
                    let residual = &residual.data[start..start + chunk.len()];
                    for (row, res) in chunk.chunks_exact_mut(c).zip(residual.chunks_exact(c)) {
                        for ((v, s), r) in row.iter_mut().zip(shift).zip(res) {
                            *v = (*v + s + r).max(0.0);
                        }
                    }
                }
                Epilogue::Linear => {
                    for row in chunk.chunks_exact_mut(c) {
                        row.iter_mut().zip(shift).for_each(|(v, s)| *v += s);
                    }
                }
            }
        };
        for_each_image(parallel, out, per_chunk, run);
    }
}
