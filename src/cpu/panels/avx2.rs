//! The AVX2 tile of the panel product: `R` rows (up to 6) by one panel of 16 output channels,
//! with BatchNorm's shift, the shortcut and the ReLU applied as it is stored.

use std::arch::x86_64::*;

use super::{MR, NR, Pass};

/// One `R x 16` tile: `R` rows of packed `a` from `a` (6 values per depth), a panel block from
/// `b`, the output at `c`.
pub(super) struct Tile {
    pub(super) a: *const f32,
    pub(super) b: *const f32,
    pub(super) c: *mut f32,
    pub(super) shift: *const f32,
    /// The shortcut's values at the tile's place, or null.
    pub(super) residual: *const f32,
    /// Valid output channels in this panel (16 but in the last one).
    pub(super) cols: usize,
    /// Two streams of 16-value rows (cache lines) to fetch into cache, `prefetch_rows` each: a
    /// share of the weight the next step multiplies.
    pub(super) prefetch: [*const f32; 2],
    pub(super) prefetch_rows: usize,
    /// Where the next tile of this panel stores (6 rows `ldc` apart), to fetch for writing
    /// while this one runs, or null.
    pub(super) next_c: *const f32,
}

impl Tile {
    /// [`run`](Self::run) for the first `rows` rows (1 to 6), chosen at run time.
    ///
    /// # Safety
    ///
    /// As for [`run`](Self::run) with `R = rows`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn run_rows(&self, rows: usize, pass: &Pass) {
        // SAFETY: the caller's contract, for the `R` chosen.
        unsafe {
            match rows {
                6 => self.run::<6>(pass),
                5 => self.run::<5>(pass),
                4 => self.run::<4>(pass),
                3 => self.run::<3>(pass),
                2 => self.run::<2>(pass),
                _ => self.run::<1>(pass),
            }
        }
    }

    /// Multiplies, accumulates and stores the tile.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `a` holds `R` packed rows of `pass.kc` depths, `b` a panel
    /// block of `pass.kc` rows, and `c` (and `residual`, unless null) `R` rows `pass.ldc` apart
    /// with at least `cols` writable values each.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn run<const R: usize>(&self, pass: &Pass) {
        // SAFETY: the caller keeps every row, depth and column offset inside its slices; rows
        // of `c` and of the shortcut with fewer than 16 valid columns go through `staged`.
        unsafe {
            // The prefetch all at once, before the depth loop: inside it, it cost the full
            // tile, whose 12 accumulators, two panel rows and a broadcast take 15 of the 16
            // registers, a quarter of its speed.
            for j in 0..self.prefetch_rows {
                for stream in self.prefetch {
                    _mm_prefetch::<_MM_HINT_T0>(stream.wrapping_add(j * NR).cast());
                }
            }
            if !self.next_c.is_null() {
                for i in 0..MR {
                    let row = self.next_c.wrapping_add(i * pass.ldc);
                    _mm_prefetch::<_MM_HINT_ET0>(row.cast());
                    _mm_prefetch::<_MM_HINT_ET0>(row.wrapping_add(NR - 1).cast());
                }
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if !pass.first {
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = self.load(self.c.add(i * pass.ldc));
                }
            }
            if R == MR {
                // Spelled out for the full tile: written as the loop below, LLVM split it into
                // one pass over the depth per half of the panel, twice the broadcasts.
                let [[mut c00, mut c01], [mut c10, mut c11], [mut c20, mut c21]] =
                    [acc[0], acc[1], acc[2]];
                let [[mut c30, mut c31], [mut c40, mut c41], [mut c50, mut c51]] =
                    [acc[3], acc[4], acc[5]];
                let (mut a, mut b) = (self.a, self.b);
                for _ in 0..pass.kc {
                    let b0 = _mm256_loadu_ps(b);
                    let b1 = _mm256_loadu_ps(b.add(8));
                    let x = _mm256_broadcast_ss(&*a);
                    c00 = _mm256_fmadd_ps(x, b0, c00);
                    c01 = _mm256_fmadd_ps(x, b1, c01);
                    let x = _mm256_broadcast_ss(&*a.add(1));
                    c10 = _mm256_fmadd_ps(x, b0, c10);
                    c11 = _mm256_fmadd_ps(x, b1, c11);
                    let x = _mm256_broadcast_ss(&*a.add(2));
                    c20 = _mm256_fmadd_ps(x, b0, c20);
                    c21 = _mm256_fmadd_ps(x, b1, c21);
                    let x = _mm256_broadcast_ss(&*a.add(3));
                    c30 = _mm256_fmadd_ps(x, b0, c30);
                    c31 = _mm256_fmadd_ps(x, b1, c31);
                    let x = _mm256_broadcast_ss(&*a.add(4));
                    c40 = _mm256_fmadd_ps(x, b0, c40);
                    c41 = _mm256_fmadd_ps(x, b1, c41);
                    let x = _mm256_broadcast_ss(&*a.add(5));
                    c50 = _mm256_fmadd_ps(x, b0, c50);
                    c51 = _mm256_fmadd_ps(x, b1, c51);
                    a = a.add(MR);
                    b = b.add(NR);
                }
                let full = [
                    [c00, c01],
                    [c10, c11],
                    [c20, c21],
                    [c30, c31],
                    [c40, c41],
                    [c50, c51],
                ];
                acc.copy_from_slice(&full[..R]);
            } else {
                for k in 0..pass.kc {
                    let b0 = _mm256_loadu_ps(self.b.add(k * NR));
                    let b1 = _mm256_loadu_ps(self.b.add(k * NR + 8));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let a = _mm256_broadcast_ss(&*self.a.add(k * MR + i));
                        acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
                    }
                }
            }
            if pass.last {
                let shift = [
                    _mm256_loadu_ps(self.shift),
                    _mm256_loadu_ps(self.shift.add(8)),
                ];
                let zero = _mm256_setzero_ps();
                for (i, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm256_add_ps(acc[0], shift[0]);
                    acc[1] = _mm256_add_ps(acc[1], shift[1]);
                    if !self.residual.is_null() {
                        let r = self.load(self.residual.add(i * pass.ldc));
                        acc[0] = _mm256_add_ps(acc[0], r[0]);
                        acc[1] = _mm256_add_ps(acc[1], r[1]);
                    }
                    if pass.relu {
                        acc[0] = _mm256_max_ps(acc[0], zero);
                        acc[1] = _mm256_max_ps(acc[1], zero);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                self.store(self.c.add(i * pass.ldc), acc);
            }
        }
    }

    /// 16 values from `src`, of which `cols` are valid (zeros after them).
    /// (See [`WideTile`] for the AVX-512 tile.)
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; `src` points at `cols` readable values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(&self, src: *const f32) -> [__m256; 2] {
        // SAFETY: a full panel reads 16 values from `src`, a partial one `cols` into `staged`.
        unsafe {
            if self.cols == NR {
                [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8))]
            } else {
                let mut staged = [0f32; NR];
                std::ptr::copy_nonoverlapping(src, staged.as_mut_ptr(), self.cols);
                [
                    _mm256_loadu_ps(staged.as_ptr()),
                    _mm256_loadu_ps(staged.as_ptr().add(8)),
                ]
            }
        }
    }

    /// Stores the first `cols` of 16 values at `dst`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2; `dst` points at `cols` writable values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store(&self, dst: *mut f32, v: &[__m256; 2]) {
        // SAFETY: a full panel writes 16 values at `dst`, a partial one `cols` from `staged`.
        unsafe {
            if self.cols == NR {
                _mm256_storeu_ps(dst, v[0]);
                _mm256_storeu_ps(dst.add(8), v[1]);
            } else {
                let mut staged = [0f32; NR];
                _mm256_storeu_ps(staged.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(staged.as_mut_ptr().add(8), v[1]);
                std::ptr::copy_nonoverlapping(staged.as_ptr(), dst, self.cols);
            }
        }
    }
}

/// Packs 6 rows, `len` values each from `rows`, into `dst` depth by depth (the 6 rows' values
/// of one depth side by side), as the tiles read them: 8 depths at a time by an 8x8 transpose
/// (rows 6 and 7 zero), where a value at a time took two instructions each.
///
/// # Safety
///
/// The CPU has AVX2; each of `rows` points at `len` readable values and `dst` at `6 · len`
/// writable ones.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_six(rows: [*const f32; 6], len: usize, dst: *mut f32) {
    // SAFETY: every read is inside a row's `len` values, every write inside `dst`'s `6 · len`:
    // each depth's 8-value store is followed by the next depth's, which overwrites its last
    // two values, and the last depth of a group stores only its first 6.
    unsafe {
        let zero = _mm256_setzero_ps();
        let six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        let mut k = 0;
        while k + 8 <= len {
            let r: [__m256; 6] = std::array::from_fn(|i| _mm256_loadu_ps(rows[i].add(k)));
            // Pairs of rows interleaved: (0, 1), (2, 3), (4, 5), depths 0-1 and 4-5 low, 2-3
            // and 6-7 high.
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            // Rows 0-3 and rows 4-5 (then zeros) of depths d and d + 4, for d = 0..4.
            let first = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            let last = [
                _mm256_shuffle_ps::<0x44>(t4, zero),
                _mm256_shuffle_ps::<0xEE>(t4, zero),
                _mm256_shuffle_ps::<0x44>(t5, zero),
                _mm256_shuffle_ps::<0xEE>(t5, zero),
            ];
            let column = |d: usize| {
                if d < 4 {
                    _mm256_permute2f128_ps::<0x20>(first[d], last[d])
                } else {
                    _mm256_permute2f128_ps::<0x31>(first[d - 4], last[d - 4])
                }
            };
            let out = dst.add(6 * k);
            for d in 0..7 {
                _mm256_storeu_ps(out.add(6 * d), column(d));
            }
            _mm256_maskstore_ps(out.add(42), six, column(7));
            k += 8;
        }
        for k in k..len {
            for (i, row) in rows.iter().enumerate() {
                *dst.add(6 * k + i) = *row.add(k);
            }
        }
    }
}
