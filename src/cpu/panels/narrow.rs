//! Convolutions of few input channels (the stem's 7x7 over 3 colours) straight from the padded
//! image: no im2col matrix, no packed block.
//!
//! Why: for the stem, im2col writes each output pixel's 147 values (7 runs of 21) and the
//! product then packs them again; with its output going out to memory, the stem ran at 43
//! GMAC/s on one thread where its product alone ran at 61-69. Here the tiles broadcast straight
//! from the image: for 12 neighbouring output pixels of one row (6 on the AVX2 tile), the values
//! under one tap lie a fixed `stride · C` values apart (6 for the stem), so each broadcast is one
//! load at a constant offset from a single pointer, as the packed tiles' are. The weight is the
//! convolution's own panels, in im2col's depth order (tap row, tap column, channel), and each
//! pixel's sum runs over the same depths in the same order as the packed product's one pass,
//! so the numbers are the same to the bit.

use std::arch::x86_64::*;

use super::{KC, MR, NR, Panels, Shared, wide_available};
use crate::cpu::Epilogue;
use crate::cpu::im2col::output_size;

/// Output pixels per tile: the wide tile's 12 rows.
const TILE: usize = 2 * MR;

/// A convolution this module runs: kernel, stride and padding, with `C` channels in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Narrow {
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) channels: usize,
}

impl Narrow {
    /// Whether this CPU and these sizes take this path: AVX2 and FMA (AVX-512 for the wide
    /// tile), whole panels (pairs of them on the wide tile), one pass deep, and a step between
    /// neighbouring pixels' values the tiles are made for (6: the stem's stride 2 over 3
    /// colours).
    pub(crate) fn runs(&self, c_out: usize) -> bool {
        let depth = self.kernel[0] * self.kernel[1] * self.channels;
        let unit = if wide_available() { 2 * NR } else { NR };
        super::available()
            && c_out.is_multiple_of(unit)
            && depth <= KC
            && self.stride[1] * self.channels == STEP
    }
}

/// Values between neighbouring output pixels' values under one tap: stride 2 over 3 channels.
const STEP: usize = 6;

/// `relu?(conv(x) + shift)` for channels-last `x` (`[N, H, W, C]`) into a new `[N, H', W',
/// C_out]` buffer, every value written; with `parallel`, blocks of output rows shared out
/// between the pool's threads.
///
/// # Panics
///
/// If `conv` does not [`run`](Narrow::runs) here, or the operands do not match.
pub(crate) fn forward(
    x: &[f32],
    dims: [usize; 4],
    conv: Narrow,
    weight: &Panels,
    epilogue: Epilogue<'_>,
    parallel: bool,
) -> Vec<f32> {
    forward_with(x, dims, conv, weight, epilogue, parallel, wide_available())
}

/// [`forward`], with `wide` choosing the AVX-512 tile (checked against the CPU) or the AVX2
/// one: the tests run both on a CPU that has both.
fn forward_with(
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    conv: Narrow,
    weight: &Panels,
    epilogue: Epilogue<'_>,
    parallel: bool,
    wide: bool,
) -> Vec<f32> {
    let wide = wide && wide_available();
    let c_out = weight.c_out;
    let [kh, kw] = conv.kernel;
    let [ph, pw] = conv.padding;
    let [ho, wo] = output_size([h, w], conv.kernel, conv.stride, conv.padding);
    assert!(
        conv.runs(c_out)
            && conv.channels == c
            && x.len() == n * h * w * c
            && weight.depth == kh * kw * c
            && epilogue.residual.is_none()
            && epilogue.shift.len() >= c_out,
        "narrow convolution: operands do not match"
    );
    // The image with its padding, zeros around: every tap of every output pixel inside it.
    let [hp, wp] = [h + 2 * ph, w + 2 * pw];
    let mut padded = vec![0.0; n * hp * wp * c];
    for (image, out) in x
        .chunks_exact(h * w * c)
        .zip(padded.chunks_exact_mut(hp * wp * c))
    {
        for (row, out) in image
            .chunks_exact(w * c)
            .zip(out.chunks_exact_mut(wp * c).skip(ph))
        {
            out[pw * c..(pw + w) * c].copy_from_slice(row);
        }
    }
    let len = n * ho * wo * c_out;
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let rows = n * ho;
    let geometry = Geometry {
        padded: &padded,
        image: [hp, wp],
        out: [ho, wo],
        conv,
    };
    let per_task = if parallel {
        rows.div_ceil(4 * crate::cpu::team::threads()).max(1)
    } else {
        rows
    };
    let target = Shared(spare.as_mut_ptr().cast::<f32>());
    let run = |rows: std::ops::Range<usize>| {
        let target = &target;
        // SAFETY: the CPU has AVX2 and FMA, and AVX-512F where `wide` (`runs`), the tasks'
        // output rows are disjoint, and every offset stays inside `padded`, the weight and
        // `out` (sizes checked above).
        unsafe { geometry.rows(rows, weight, target.0, &epilogue, wide) }
    };
    let tasks: Vec<_> = (0..rows)
        .step_by(per_task)
        .map(|r| r..(r + per_task).min(rows))
        .collect();
    if parallel {
        crate::cpu::team::for_each(tasks, run);
    } else {
        tasks.into_iter().for_each(run);
    }
    // SAFETY: the tasks cover every output row, and each wrote every pixel and channel of its
    // rows.
    unsafe { out.set_len(len) };
    out
}

/// The padded images and the sizes a tile needs to find its values.
struct Geometry<'a> {
    padded: &'a [f32],
    /// The padded image's `[H, W]`.
    image: [usize; 2],
    out: [usize; 2],
    conv: Narrow,
}

impl Geometry<'_> {
    /// Output rows `rows` (counted through the images), every pixel and channel: by the wide
    /// tile (12 pixels by a pair of panels) where `wide`, else by the AVX2 one (6 by a panel).
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA, and AVX-512F where `wide`; `out` holds `N · H' · W' · C_out`
    /// values of which no other thread writes these rows.
    unsafe fn rows(
        &self,
        rows: std::ops::Range<usize>,
        weight: &Panels,
        out: *mut f32,
        epilogue: &Epilogue<'_>,
        wide: bool,
    ) {
        let [hp, wp] = self.image;
        let [ho, wo] = self.out;
        let c = self.conv.channels;
        let [kh, kw] = self.conv.kernel;
        let [sh, sw] = self.conv.stride;
        let c_out = weight.c_out;
        let (pixels, panels) = if wide { (TILE, 2) } else { (MR, 1) };
        for row in rows {
            let (image, oy) = (row / ho, row % ho);
            let top = ((image * hp + oy * sh) * wp) * c;
            for ox in (0..wo).step_by(pixels) {
                let m = pixels.min(wo - ox);
                for p in (0..c_out / NR).step_by(panels) {
                    let tile = StridedTile {
                        a: self.padded[top + ox * sw * c..].as_ptr(),
                        runs: kh,
                        run: kw * c,
                        run_stride: wp * c,
                        b: [weight.block(p, 0), weight.block(p + panels - 1, 0)],
                        c: out.wrapping_add((row * wo + ox) * c_out + p * NR),
                        ldc: c_out,
                        shift: epilogue.shift[p * NR..].as_ptr(),
                        relu: epilogue.relu,
                    };
                    // SAFETY: the caller's contract; the tile's taps lie inside the padded
                    // image (the output size leaves every tap of every pixel in it).
                    unsafe {
                        match (wide, m) {
                            (true, 12) => tile.run::<12>(),
                            (true, 11) => tile.run::<11>(),
                            (true, 10) => tile.run::<10>(),
                            (true, 9) => tile.run::<9>(),
                            (true, 8) => tile.run::<8>(),
                            (true, 7) => tile.run::<7>(),
                            (true, 6) => tile.run::<6>(),
                            (true, 5) => tile.run::<5>(),
                            (true, 4) => tile.run::<4>(),
                            (true, 3) => tile.run::<3>(),
                            (true, 2) => tile.run::<2>(),
                            (true, _) => tile.run::<1>(),
                            (false, 6) => tile.run_avx2::<6>(),
                            (false, 5) => tile.run_avx2::<5>(),
                            (false, 4) => tile.run_avx2::<4>(),
                            (false, 3) => tile.run_avx2::<3>(),
                            (false, 2) => tile.run_avx2::<2>(),
                            (false, _) => tile.run_avx2::<1>(),
                        }
                    }
                }
            }
        }
    }
}

/// A tile (12 output pixels by 32 channels, or 6 by 16 on AVX2) reading its pixels' values
/// straight from the padded image: `runs` runs of `run` values, `run_stride` apart, each
/// pixel's [`STEP`] values after the one before.
struct StridedTile {
    a: *const f32,
    runs: usize,
    run: usize,
    run_stride: usize,
    /// The two panels, from their first row (the AVX2 tile reads the first only).
    b: [*const f32; 2],
    c: *mut f32,
    ldc: usize,
    /// The shift of the tile's channels (32, or 16 on the AVX2 tile).
    shift: *const f32,
    relu: bool,
}

impl StridedTile {
    /// Multiplies and stores the first `M` pixels (1 to 12).
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; `a` holds the runs for `M` pixels, each panel `runs · run` rows,
    /// `c` `M` rows `ldc` apart of 32 writable values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const M: usize>(&self) {
        // SAFETY: the caller's contract, as above.
        unsafe {
            // The next tile's output lines, for writing: the stem's output goes out to memory.
            for i in 0..TILE {
                let next = self.c.wrapping_add((M + i) * self.ldc);
                _mm_prefetch::<_MM_HINT_ET0>(next.cast());
                _mm_prefetch::<_MM_HINT_ET0>(next.wrapping_add(NR).cast());
            }
            let mut acc = [[_mm512_setzero_ps(); 2]; TILE];
            let [mut b0, mut b1] = self.b;
            let mut start = self.a;
            for _ in 0..self.runs {
                let mut a = start;
                for _ in 0..self.run {
                    let w0 = _mm512_loadu_ps(b0);
                    let w1 = _mm512_loadu_ps(b1);
                    macro_rules! pixel {
                        ($i:literal) => {
                            if $i < M {
                                let x = _mm512_set1_ps(*a.add($i * STEP));
                                acc[$i][0] = _mm512_fmadd_ps(x, w0, acc[$i][0]);
                                acc[$i][1] = _mm512_fmadd_ps(x, w1, acc[$i][1]);
                            }
                        };
                    }
                    pixel!(0);
                    pixel!(1);
                    pixel!(2);
                    pixel!(3);
                    pixel!(4);
                    pixel!(5);
                    pixel!(6);
                    pixel!(7);
                    pixel!(8);
                    pixel!(9);
                    pixel!(10);
                    pixel!(11);
                    a = a.add(1);
                    (b0, b1) = (b0.add(NR), b1.add(NR));
                }
                start = start.add(self.run_stride);
            }
            let shift = [
                _mm512_loadu_ps(self.shift),
                _mm512_loadu_ps(self.shift.add(NR)),
            ];
            let zero = _mm512_setzero_ps();
            for (i, acc) in acc.iter().enumerate().take(M) {
                let row = self.c.add(i * self.ldc);
                for (h, v) in acc.iter().enumerate() {
                    let mut v = _mm512_add_ps(*v, shift[h]);
                    if self.relu {
                        v = _mm512_max_ps(v, zero);
                    }
                    _mm512_storeu_ps(row.add(h * NR), v);
                }
            }
        }
    }

    /// [`run`](Self::run) on the AVX2 tile: the first `M` pixels (1 to 6) by one panel
    /// (`b[0]`), two registers of 8 channels.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; as for [`run`](Self::run), with 16 values per row of `c`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn run_avx2<const M: usize>(&self) {
        // SAFETY: the caller's contract, as above.
        unsafe {
            for i in 0..MR {
                _mm_prefetch::<_MM_HINT_ET0>(self.c.wrapping_add((M + i) * self.ldc).cast());
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            let mut b = self.b[0];
            let mut start = self.a;
            for _ in 0..self.runs {
                let mut a = start;
                for _ in 0..self.run {
                    let w0 = _mm256_loadu_ps(b);
                    let w1 = _mm256_loadu_ps(b.add(8));
                    macro_rules! pixel {
                        ($i:literal) => {
                            if $i < M {
                                let x = _mm256_broadcast_ss(&*a.add($i * STEP));
                                acc[$i][0] = _mm256_fmadd_ps(x, w0, acc[$i][0]);
                                acc[$i][1] = _mm256_fmadd_ps(x, w1, acc[$i][1]);
                            }
                        };
                    }
                    pixel!(0);
                    pixel!(1);
                    pixel!(2);
                    pixel!(3);
                    pixel!(4);
                    pixel!(5);
                    a = a.add(1);
                    b = b.add(NR);
                }
                start = start.add(self.run_stride);
            }
            let shift = [
                _mm256_loadu_ps(self.shift),
                _mm256_loadu_ps(self.shift.add(8)),
            ];
            let zero = _mm256_setzero_ps();
            for (i, acc) in acc.iter().enumerate().take(M) {
                let row = self.c.add(i * self.ldc);
                for (h, v) in acc.iter().enumerate() {
                    let mut v = _mm256_add_ps(*v, shift[h]);
                    if self.relu {
                        v = _mm256_max_ps(v, zero);
                    }
                    _mm256_storeu_ps(row.add(h * 8), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use super::*;
    use crate::cpu::im2col::{im2col, kept_taps};

    /// The path it replaces, to the bit: im2col, then the packed product, for the stem's 7x7
    /// of stride 2 over 3 channels, on images whose rows leave partial tiles (7, 12 and 16
    /// pixels wide), 32 and 64 channels out, with and without the ReLU, on the AVX2 and (where
    /// the CPU has it) the AVX-512 tile, on one thread and split between three.
    #[test]
    fn the_stem_straight_from_the_image_matches_im2col_and_the_packed_product() {
        if !super::super::available() {
            return;
        }
        let value =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1013) as f32 / 506.5 - 1.0;
        let conv = Narrow {
            kernel: [7, 7],
            stride: [2, 2],
            padding: [3, 3],
            channels: 3,
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build();
        let pool = pool.expect("a pool of 3 threads");
        for (dims, c_out) in [
            ([2, 13, 14, 3], 64),
            ([1, 32, 32, 3], 32),
            ([3, 9, 23, 3], 64),
        ] {
            let [n, h, w, c] = dims;
            let x: Vec<f32> = (0..n * h * w * c).map(|i| value(i, 1)).collect();
            let depth = 7 * 7 * c;
            let weight: Vec<f32> = (0..depth * c_out).map(|i| value(i, 2) * 0.2).collect();
            let panels = Panels::pack(&weight, depth, c_out);
            let shift: Vec<f32> = (0..c_out).map(|i| value(i, 3)).collect();
            let out = output_size([h, w], conv.kernel, conv.stride, conv.padding);
            let taps = kept_taps([h, w], conv.kernel, conv.stride, conv.padding, out);
            assert_eq!(taps, [0..7, 0..7], "every tap kept: im2col's depth order");
            let taps = [&taps[0], &taps[1]];
            let columns = im2col(&x, dims, taps, conv.stride, conv.padding, out, false);
            let rows = n * out[0] * out[1];
            for (relu, wide) in [(false, false), (true, false), (false, true), (true, true)] {
                if wide && !wide_available() {
                    continue;
                }
                let epilogue = Epilogue {
                    shift: &shift,
                    residual: None,
                    relu,
                };
                let mut want = vec![MaybeUninit::new(f32::NAN); rows * c_out];
                let product = super::super::product_with;
                product(
                    &columns, depth, &panels, 0, &mut want, epilogue, false, wide, false,
                );
                // SAFETY: written in full by the product (NaN before).
                let want: Vec<f32> = want.iter().map(|v| unsafe { v.assume_init() }).collect();
                let run = |split| forward_with(&x, dims, conv, &panels, epilogue, split, wide);
                let split = pool.install(|| crate::cpu::team::with_team(|| run(true)));
                for got in [run(false), split] {
                    assert_eq!(got.len(), want.len());
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{dims:?} -> {c_out}, relu {relu}, wide {wide}: other bits"
                    );
                }
            }
        }
    }
}
