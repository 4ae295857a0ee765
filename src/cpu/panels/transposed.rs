//! `aᵀ · b` on the panel tiles, for row-major `a` `[k, m]` and `b` `[k, n]`: a convolution's
//! weight gradient, `columnsᵀ · dY`, whose sum runs over the pixels.
//!
//! Packing needs no transposes: a tile's 6 rows of the product are 6 neighbouring columns of
//! `a`, so its packed values at each depth (a row of `a`) are 6 values side by side, and a
//! panel's 16 columns are 16 values side by side in each row of `b`. (Read in place, a row of
//! `a` or `b` apart at each depth, the tiles ran 32-57 GMAC/s: rows 2 KiB or more apart fall
//! into the same few sets of L1.) The rows are shared out between the threads, each summing its
//! own share into its own `[m, n]`, added together at the end. The left operand (the im2col
//! matrix of a 3x3 convolution or the stem) is gathered a block of rows at a time, into cache,
//! rather than whole.
//!
//! `gemm`, which packs both operands, ran the 3x3s' and the stem's at 22-56 GMAC/s at 224x224
//! pixels, batch 8 (stage 1's 3x3s, their matrix gathered whole, at 22); these tiles at 35-61.
//! The 1x1 convolutions' stay on `gemm` (`conv_bn::weight_grad`).

use std::ops::Range;

use super::avx2::Tile;
use super::avx512::WideTile;
use super::{KC, MC, MR, NR, Pass, available, wide_available};

/// Writes rows `rows` of the left operand (`m` values each) into a buffer, every value.
pub(crate) type Gather<'a> = &'a (dyn Fn(Range<usize>, &mut [f32]) + Sync);

/// Whether [`product`] runs here for `k` rows and `n` columns of `b`: on a CPU with the
/// panel tiles, `n` in whole panels, and, where the product is split between threads, a depth
/// block of rows for each of two at least (with fewer, `gemm` splits the columns).
pub(crate) fn runs(k: usize, n: usize, split: bool) -> bool {
    available() && n.is_multiple_of(NR) && k >= threads(split).min(2) * KC
}

/// The threads a product may be split between.
fn threads(split: bool) -> usize {
    if split {
        crate::cpu::team::threads()
    } else {
        1
    }
}

/// The shares of `k` rows: one per thread, each of a depth block at least.
fn shares(k: usize, split: bool) -> Vec<Range<usize>> {
    crate::cpu::split::even_runs(k, threads(split).min(k / KC).max(1))
}

/// `aᵀ · b` into a new row-major `[m, n]`, for `a` `[k, m]` (gathered a block of rows at a
/// time by `a`) and `b` `[k, n]`; with `split`, the rows shared out between the pool's
/// threads ([`shares`]). The sums run in blocks of rows in order, one share after the other:
/// the numbers depend on the threads, not on their timing.
///
/// # Panics
///
/// If it does not [`run`](runs) here, or `b` holds fewer than `k · n` values.
pub(crate) fn product(
    k: usize,
    m: usize,
    n: usize,
    a: Gather<'_>,
    b: &[f32],
    split: bool,
) -> Vec<f32> {
    product_with(k, m, n, a, b, split, wide_available())
}

/// [`product`], with `wide` choosing the AVX-512 tile for pairs of panels (checked against the
/// CPU) or the AVX2 tile throughout: the tests run both on a CPU that has both.
fn product_with(
    k: usize,
    m: usize,
    n: usize,
    a: Gather<'_>,
    b: &[f32],
    split: bool,
    wide: bool,
) -> Vec<f32> {
    let wide = wide && wide_available();
    assert!(
        runs(k, n, split),
        "the transposed product does not run here"
    );
    assert!(b.len() >= k * n, "right operand too short");
    let shares = shares(k, split);
    let mut sums: Vec<Vec<f32>> = shares.iter().map(|_| vec![0.0; m * n]).collect();
    let tasks: Vec<_> = shares.into_iter().zip(sums.iter_mut()).collect();
    crate::cpu::team::for_each(tasks, |(rows, out)| share(rows, [m, n], a, b, out, wide));
    let mut sums = sums.into_iter();
    let mut out = sums.next().unwrap_or_else(|| vec![0.0; m * n]);
    for partial in sums {
        out.iter_mut().zip(&partial).for_each(|(o, p)| *o += p);
    }
    out
}

/// Rows `rows` of the sum into `out` (`[m, n]`, zeros), a depth block at a time: the block of
/// `b` packed into panels, then `MC` columns of `a` at a time packed into 6-row tiles, which
/// every panel passes over while they are in cache.
fn share(
    rows: Range<usize>,
    [m, n]: [usize; 2],
    a: Gather<'_>,
    b: &[f32],
    out: &mut [f32],
    wide: bool,
) {
    let kc_max = KC.min(rows.len());
    let mut block = vec![0.0; kc_max * m];
    let mut panels = vec![0.0; n * kc_max];
    let mut tiles = vec![0.0; MC.min(m).div_ceil(MR) * MR * kc_max];
    let mut k0 = rows.start;
    while k0 < rows.end {
        let kc = KC.min(rows.end - k0);
        let block = &mut block[..kc * m];
        a(k0..k0 + kc, block);
        // Panel `p` of the block: its `kc` rows of columns `16p..16p + 16`.
        let b = &b[k0 * n..(k0 + kc) * n];
        for (p, panel) in panels.chunks_exact_mut(kc * NR).take(n / NR).enumerate() {
            for (row, packed) in b.chunks_exact(n).zip(panel.chunks_exact_mut(NR)) {
                packed.copy_from_slice(&row[p * NR..(p + 1) * NR]);
            }
        }
        let pass = Pass {
            kc,
            ldc: n,
            first: k0 == rows.start,
            last: false,
            relu: false,
        };
        let mut m0 = 0;
        while m0 < m {
            let mc = MC.min(m - m0);
            // Tile `t`: columns `m0 + 6t..` of the block, 6 values per row (fewer in the last).
            for (t, tile) in tiles.chunks_mut(kc * MR).take(mc.div_ceil(MR)).enumerate() {
                let cols = m0 + t * MR..(m0 + (t + 1) * MR).min(m0 + mc);
                for (row, packed) in block.chunks_exact(m).zip(tile.chunks_mut(MR)) {
                    packed[..cols.len()].copy_from_slice(&row[cols.clone()]);
                }
            }
            // SAFETY: `tiles` holds `mc` columns' tiles of `kc` depths and `panels` the `n / 16`
            // panels of `kc` rows; rows `m0..m0 + mc` of `out` exist; `runs` checked the CPU
            // and that `n` is whole panels.
            unsafe { block_product(&tiles, &panels, [m0, mc], n, out, &pass, wide) };
            m0 += mc;
        }
        k0 += kc;
    }
}

/// One depth block of the output rows `m0..m0 + mc`: `out += tilesᵀ · panels` (or `=`, on
/// the first block), pairs of panels (one panel at a time without AVX-512) over the tiles.
///
/// # Safety
///
/// The CPU has AVX2 and FMA, and AVX-512F where `wide`; `tiles` holds `mc` rows' 6-row
/// tiles of `pass.kc` depths one after the other, `panels` `n / 16` panels of `pass.kc` rows,
/// and `out` `[m0 + mc, n]` at least, with `n` a multiple of 16.
#[target_feature(enable = "avx2,fma")]
unsafe fn block_product(
    tiles: &[f32],
    panels: &[f32],
    [m0, mc]: [usize; 2],
    n: usize,
    out: &mut [f32],
    pass: &Pass,
    wide: bool,
) {
    let zeros = [0.0f32; 2 * NR];
    let (a, b, c) = (tiles.as_ptr(), panels.as_ptr(), out.as_mut_ptr());
    let (tile, panel) = (MR * pass.kc, NR * pass.kc);
    let mut p = 0;
    while p < n / NR {
        if wide && p + 2 <= n / NR {
            let mut r = 0;
            while r < mc {
                let rows = (2 * MR).min(mc - r);
                // SAFETY: tiles `r / 6` (and the next, formed but not read where `rows <= 6`)
                // and panels `p`, `p + 1` lie in their buffers; rows `m0 + r..` of `out` and
                // columns `16p..16p + 32` inside it; AVX-512F was checked.
                unsafe {
                    let tile = WideTile {
                        a: [a.add(r / MR * tile), a.wrapping_add((r / MR + 1) * tile)],
                        b: [b.add(p * panel), b.add((p + 1) * panel)],
                        c: c.add((m0 + r) * n + p * NR),
                        shift: zeros.as_ptr(),
                        residual: std::ptr::null(),
                        prefetch: [std::ptr::null(); 2],
                        prefetch_rows: 0,
                        to_l2: false,
                        next_c: std::ptr::null(),
                    };
                    tile.run_rows(rows, pass)
                }
                r += rows;
            }
            p += 2;
        } else {
            let mut r = 0;
            while r < mc {
                let rows = MR.min(mc - r);
                // SAFETY: tile `r / 6` and panel `p` lie in their buffers; rows `m0 + r..` of
                // `out` and columns `16p..16p + 16` inside it.
                unsafe {
                    let tile = Tile {
                        a: a.add(r / MR * tile),
                        b: b.add(p * panel),
                        c: c.add((m0 + r) * n + p * NR),
                        shift: zeros.as_ptr(),
                        residual: std::ptr::null(),
                        cols: NR,
                        prefetch: [std::ptr::null(); 2],
                        prefetch_rows: 0,
                        next_c: std::ptr::null(),
                    };
                    tile.run_rows(rows, pass)
                }
                r += rows;
            }
            p += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `aᵀ · b` in `f64`, the textbook way.
    fn reference(k: usize, m: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for r in 0..k {
            for i in 0..m {
                for j in 0..n {
                    out[i * n + j] += f64::from(a[r * m + i]) * f64::from(b[r * n + j]);
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}: value {i} is {g}, want {w}"
            );
        }
    }

    /// Every tile shape (12 rows and fewer, pairs and a lone panel, depth blocks whole and
    /// cut), on the AVX-512 tile and the AVX2 one, split or not, gathered or whole.
    #[test]
    fn matches_the_textbook_product() {
        if !available() {
            return;
        }
        for (k, m, n) in [
            (3 * KC + 17, 29, 48),
            (KC, 12, 32),
            (2 * KC + 1, 7, 16),
            (2 * KC, MC + 54, 64),
        ] {
            let (a, b) = (values(k * m, 7), values(k * n, 11));
            let want = reference(k, m, n, &a, &b);
            let gather = |rows: Range<usize>, buffer: &mut [f32]| {
                buffer.copy_from_slice(&a[rows.start * m..rows.end * m]);
            };
            for (split, wide) in [(false, false), (false, true), (true, false), (true, true)] {
                if !runs(k, n, split) {
                    continue;
                }
                let what = format!("{k}x{m}x{n}, split {split}, wide {wide}");
                let got = product_with(k, m, n, &gather, &b, split, wide);
                assert_close(&got, &want, &what);
            }
        }
    }
}
