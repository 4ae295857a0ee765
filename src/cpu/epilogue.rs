//! What follows a convolution's product, as every kernel applies it: BatchNorm's shift per output
//! channel, the block's shortcut where one is added, and the ReLU.

use super::for_each_image;

/// `y = relu?(x + shift [+ residual])` for each value `x` of a product's `[rows, C_out]` output:
/// what the panel product and Winograd apply as they store each tile, and [`Epilogue::apply`]
/// after a plain product.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// BatchNorm's shift (with the convolution's bias folded in), one per output channel; the
    /// panel kernels read it padded to whole panels.
    pub(crate) shift: &'a [f32],
    /// The shortcut's values, laid out as the output, where the block adds it here.
    pub(crate) residual: Option<&'a [f32]>,
    /// Whether the ReLU follows.
    pub(crate) relu: bool,
}

impl<'a> Epilogue<'a> {
    /// The shift alone: a shortcut's own unit, whose output the block adds later.
    pub(crate) fn linear(shift: &'a [f32]) -> Self {
        Self {
            shift,
            residual: None,
            relu: false,
        }
    }

    /// The shift, the shortcut where there is one, then the ReLU: a block's inner units and its
    /// last one.
    pub(crate) fn relu(shift: &'a [f32], residual: Option<&'a [f32]>) -> Self {
        Self {
            shift,
            residual,
            relu: true,
        }
    }

    /// The same epilogue for rows `rows` of the output alone (the shortcut's part of them),
    /// with `c_out` values per row.
    pub(crate) fn rows(&self, rows: std::ops::Range<usize>, c_out: usize) -> Self {
        Self {
            residual: (self.residual).map(|r| &r[rows.start * c_out..rows.end * c_out]),
            ..*self
        }
    }

    /// Applies the epilogue in place to `out`, `[rows, C_out]` with `C_out` the shift's length,
    /// about 16 chunks of whole rows at a time, on the pool's threads when `parallel`.
    pub(crate) fn apply(&self, out: &mut [f32], rows: usize, parallel: bool) {
        let c = self.shift.len();
        let per_chunk = rows.div_ceil(16).max(1) * c;
        let run = |r: usize, chunk: &mut [f32]| {
            let start = r * per_chunk;
            let residual = (self.residual).map(|res| &res[start..start + chunk.len()]);
            for (i, row) in chunk.chunks_exact_mut(c).enumerate() {
                let res = residual.map(|res| &res[i * c..(i + 1) * c]);
                for (j, (v, s)) in row.iter_mut().zip(self.shift).enumerate() {
                    let y = *v + s + res.map_or(0.0, |res| res[j]);
                    *v = if self.relu { y.max(0.0) } else { y };
                }
            }
        };
        for_each_image(parallel, out, per_chunk, run);
    }
}
