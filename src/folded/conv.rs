//! One folded convolution: the weight with its BatchNorm folded in, laid out once for the product
//! that multiplies it (row-major for `gemm`, panels for the AVX2/AVX-512 tile, Winograd
//! transforms for 3x3 convolutions of stride 1), and the epilogue that adds the shift and the
//! shortcut and applies the ReLU as the product's output is stored.

use std::borrow::Cow;

use burn::tensor::Tensor;

use crate::cpu::gemm::{PARALLEL_PRODUCT, product};
use crate::cpu::im2col::{im2col_rows, kept_taps, output_size};
use crate::cpu::{Epilogue, for_each_image};
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
    /// The images of the whole forward these maps are a share of: Winograd's tile size is
    /// chosen by it, so that every share of a batch takes the same path and the numbers do not
    /// depend on how many threads share the batch out.
    pub(super) batch: usize,
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
        let residual = residual.map(|r| &r.data[..]);
        self.forward_with(x, Epilogue::relu(&self.shift, residual), parallel)
    }

    /// `relu(conv(x) + shift + shortcut)` written over `shortcut`'s own buffer, where the
    /// product runs in one pass (a 1x1 convolution of stride 1 as deep as one depth block: the
    /// bottleneck's expansion through stage 3); else as [`forward`](Self::forward) into a new
    /// one.
    pub(super) fn forward_onto(&self, x: &Maps, mut shortcut: Maps, parallel: bool) -> Maps {
        #[cfg(target_arch = "x86_64")]
        if let Weight::Panels(panels) = &self.weight {
            use crate::cpu::panels::{one_pass, product_onto};
            let [n, h, w, c] = x.dims;
            let direct = self.kernel == [1, 1] && self.padding == [0, 0] && self.stride == [1, 1];
            if direct && one_pass(c) && shortcut.dims == [n, h, w, self.channels[1]] {
                let start = crate::cpu::tuning::layer_trace().then(std::time::Instant::now);
                let c_out = self.channels[1];
                let parallel = parallel && n * h * w * c * c_out >= PARALLEL_PRODUCT;
                let data = &mut shortcut.data;
                product_onto(&x.data, c, panels, 0, data, &self.shift, true, parallel);
                self.trace(x, [h, w], "direct onto the shortcut", parallel, start);
                return shortcut;
            }
        }
        self.forward(x, Some(&shortcut), parallel)
    }

    /// `conv(x) + shift`, no ReLU: a shortcut's projection, which its block adds later.
    pub(super) fn forward_linear(&self, x: &Maps, parallel: bool) -> Maps {
        self.forward_with(x, Epilogue::linear(&self.shift), parallel)
    }

    fn forward_with(&self, x: &Maps, epilogue: Epilogue<'_>, parallel: bool) -> Maps {
        let start = crate::cpu::tuning::layer_trace().then(std::time::Instant::now);
        let [n, h, w, _] = x.dims;
        let out = output_size([h, w], self.kernel, self.stride, self.padding);
        let dims = [n, out[0], out[1], self.channels[1]];
        #[cfg(target_arch = "x86_64")]
        let winograd = self.winograd_forward(x, out, epilogue, parallel);
        #[cfg(not(target_arch = "x86_64"))]
        let winograd: Option<(Vec<f32>, usize)> = None;
        let (data, tile) = match winograd {
            Some((data, tile)) => (data, Some(tile)),
            None => (self.product_forward(x, out, epilogue, parallel), None),
        };
        if start.is_some() {
            let method = tile.map_or("direct".to_string(), |t| {
                format!("winograd F({t}x{t}, 3x3)")
            });
            self.trace(x, out, &method, parallel, start);
        }
        Maps {
            data,
            dims,
            batch: x.batch,
        }
    }

    /// Prints the layer trace's line for this convolution of `x` to `out` pixels by `method`,
    /// begun at `start` (`RESNET_TRANSFER_TRACE_LAYERS`; nothing without a start).
    fn trace(
        &self,
        x: &Maps,
        out: [usize; 2],
        method: &str,
        parallel: bool,
        start: Option<std::time::Instant>,
    ) {
        let Some(start) = start else { return };
        let [n, h, w, c] = x.dims;
        let [kh, kw] = self.kernel;
        // `n` is the images this call ran: a thread's share of the batch, or the images left
        // over, split between the threads (" split").
        let thread = rayon::current_thread_index().map_or("-".to_string(), |i| i.to_string());
        eprintln!(
            "resnet_transfer layer: conv {kh}x{kw}/{} {n}x{h}x{w}x{c} -> {}x{}x{} {method}{} thread {thread} {:.3} ms",
            self.stride[0],
            out[0],
            out[1],
            self.channels[1],
            if parallel { " split" } else { "" },
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    /// By Winograd's transforms, where this convolution has them and its output map is large
    /// enough for a tile size to pay; the transforms are made the first time a size is chosen.
    /// Returns the output and the tile's output side.
    #[cfg(target_arch = "x86_64")]
    /// How many of Winograd's transforms (one per tile size) this convolution holds ready.
    #[cfg(test)]
    pub(super) fn transforms_made(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        return (self.winograd.iter().flat_map(|cells| cells.iter()))
            .filter(|cell| cell.get().is_some())
            .count();
        #[cfg(not(target_arch = "x86_64"))]
        0
    }

    fn winograd_forward(
        &self,
        x: &Maps,
        out: [usize; 2],
        epilogue: Epilogue<'_>,
        parallel: bool,
    ) -> Option<(Vec<f32>, usize)> {
        use crate::cpu::winograd::{Winograd, choose};
        let (Weight::Panels(panels), Some(transforms)) = (&self.weight, &self.winograd) else {
            return None;
        };
        let size = choose(self.kernel, self.stride, out, x.batch)?;
        let [c, c_out] = [x.dims[3], self.channels[1]];
        // Made outside the cell's lock, and kept by the first thread to finish: `pack` runs on
        // rayon, and a thread waiting there may take another share of the batch (or another
        // caller's forward) that comes here for the same cell. Inside `get_or_init` that
        // reentered the lock, and the first forward of 14 photos on 8 threads hung. Two threads
        // may make the same transforms; both are the same numbers.
        let cell = &transforms[size.index()];
        if cell.get().is_none() {
            let _ = cell.set(Winograd::pack(&panels.unpack(), c, c_out, size));
        }
        let winograd = cell.get().expect("set above, here or by another thread");
        let data = winograd.forward(&x.data, x.dims, self.padding, epilogue, parallel);
        Some((data, size.output()))
    }

    /// By the im2col product: a block of rows at a time, gathered while the product runs, on one
    /// thread or each thread its share of the rows; where there are too few rows for that, the
    /// whole matrix at once (or the maps themselves, for a 1x1 convolution of stride 1).
    fn product_forward(
        &self,
        x: &Maps,
        [ho, wo]: [usize; 2],
        epilogue: Epilogue<'_>,
        parallel: bool,
    ) -> Vec<f32> {
        let [n, h, w, c] = x.dims;
        let rows = n * ho * wo;
        // As the module's path does: taps that only ever see padding are left out.
        let [taps_y, taps_x] = kept_taps([h, w], self.kernel, self.stride, self.padding, [ho, wo]);
        let depth = taps_y.len() * taps_x.len() * c;
        let first = (taps_y.start * self.kernel[1] + taps_x.start) * c;
        let direct = depth == c && self.padding == [0, 0] && self.stride == [1, 1];
        let gather = |block: std::ops::Range<usize>, buffer: &mut [f32]| {
            let taps = [&taps_y, &taps_x];
            let (stride, padding) = (self.stride, self.padding);
            im2col_rows(
                &x.data,
                x.dims,
                taps,
                stride,
                padding,
                [ho, wo],
                block,
                buffer,
            )
        };
        // Few channels in (the stem): straight from the padded image.
        #[cfg(target_arch = "x86_64")]
        if let Weight::Panels(panels) = &self.weight {
            use crate::cpu::panels::narrow::{self, Narrow};
            let narrow = Narrow {
                kernel: self.kernel,
                stride: self.stride,
                padding: self.padding,
                channels: c,
            };
            let every_tap = depth == self.kernel[0] * self.kernel[1] * c;
            if every_tap && epilogue.residual.is_none() && narrow.runs(self.channels[1]) {
                return narrow::forward(&x.data, x.dims, narrow, panels, epilogue, parallel);
            }
        }
        // Gathered a block at a time, on one thread or split by rows; a product with too few
        // rows for that (stage 4 of one photo) is gathered whole and split by panels below.
        #[cfg(target_arch = "x86_64")]
        if let (Weight::Panels(panels), false) = (&self.weight, direct) {
            use crate::cpu::panels::{product_blocks, row_block_each};
            if !parallel || row_block_each(rows) {
                return product_blocks(rows, depth, gather, panels, first, epilogue, parallel);
            }
        }
        let columns = if direct {
            Cow::Borrowed(&x.data[..])
        } else {
            // The whole matrix, in runs of rows shared between the threads when the product
            // is split between them (a few runs each, so a single image's is split too).
            let mut columns = vec![0.0; rows * depth];
            let run = rows.div_ceil(4 * crate::cpu::team::threads()).max(1);
            for_each_image(parallel, &mut columns, run * depth, |i, out| {
                gather(i * run..(i * run + out.len() / depth), out)
            });
            Cow::Owned(columns)
        };
        let c_out = self.channels[1];
        let parallel = parallel && rows * depth * c_out >= PARALLEL_PRODUCT;
        let weight = match &self.weight {
            Weight::Plain(weight) => &weight[first * c_out..(first + depth) * c_out],
            #[cfg(target_arch = "x86_64")]
            Weight::Panels(panels) => {
                use crate::cpu::panels::product_vec;
                return product_vec(&columns, depth, panels, first, rows, epilogue, parallel);
            }
        };
        let mut out = product(
            [rows, depth, c_out],
            (&columns, [depth, 1]),
            (weight, [c_out, 1]),
            parallel,
        );
        let shift = &epilogue.shift[..c_out];
        Epilogue { shift, ..epilogue }.apply(&mut out, rows, parallel);
        out
    }
}
