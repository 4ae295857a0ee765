//! The AVX-512 tile of the panel product: 12 rows by a pair of whole panels (32 output
//! channels), picked at run time on CPUs with AVX-512F.

use std::arch::x86_64::*;

use super::{MR, NR, Pass};

/// How the next tile's output lines are fetched: into L1, for writing (`prefetchw`), as the
/// tile will write every one of them. Measured against L1 and L2 for reading, alternated at
/// batch 8 on one thread: no clear order between the three, each about 4% faster than none.
const NEXT_HINT: i32 = _MM_HINT_ET0;

/// The AVX-512 tile: 12 rows (two packed 6-row tiles) by two whole panels (32 output
/// channels), 24 of the 32 registers as accumulators. Per depth it loads two panel rows and
/// broadcasts 12 values for 24 fused multiply-adds, where the AVX2 tile broadcasts 6 for 12:
/// fewer instructions per multiply-add, the reason onnxruntime's and oneDNN's AVX-512 kernels
/// lead on such CPUs.
pub(super) struct WideTile {
    /// The two packed tiles (rows 0-5 and 6-11), 6 values per depth each.
    pub(super) a: [*const f32; 2],
    /// The two panels' blocks, 16 values per depth each.
    pub(super) b: [*const f32; 2],
    pub(super) c: *mut f32,
    /// 32 values: both panels' shift.
    pub(super) shift: *const f32,
    /// The shortcut's values at the tile's place, or null.
    pub(super) residual: *const f32,
    /// Two streams of 16-value rows (cache lines) to fetch into cache, `prefetch_rows` each: a
    /// share of the weight the next pair of panels multiplies.
    pub(super) prefetch: [*const f32; 2],
    pub(super) prefetch_rows: usize,
    /// Whether the streams are fetched into L2 rather than L1.
    pub(super) to_l2: bool,
    /// Where the next tile of these panels stores (12 rows `ldc` apart, 32 values each), to
    /// fetch into cache while this one runs, or null.
    pub(super) next_c: *const f32,
}

impl WideTile {
    /// [`run`](Self::run) for the first `rows` rows (1 to 12), chosen at run time.
    ///
    /// # Safety
    ///
    /// As for [`run`](Self::run) with `M = rows`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn run_rows(&self, rows: usize, pass: &Pass) {
        // SAFETY: the caller's contract, for the `M` chosen.
        unsafe {
            match rows {
                12 => self.run::<12>(pass),
                11 => self.run::<11>(pass),
                10 => self.run::<10>(pass),
                9 => self.run::<9>(pass),
                8 => self.run::<8>(pass),
                7 => self.run::<7>(pass),
                6 => self.run::<6>(pass),
                5 => self.run::<5>(pass),
                4 => self.run::<4>(pass),
                3 => self.run::<3>(pass),
                2 => self.run::<2>(pass),
                _ => self.run::<1>(pass),
            }
        }
    }

    /// Multiplies, accumulates and stores the tile's first `M` rows (1 to 12): the full tile,
    /// or the rows a block has left over, which stay on the wide tile rather than falling to
    /// the AVX2 one (at batch 1, 4 to 11 rows of most products, and every product of a
    /// Winograd convolution at stage 4).
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; `1 <= M <= 12`; `a` holds the packed tiles of the first `M` rows
    /// (`a[1]` is read only where `M > 6`) of `pass.kc` depths, `b` two panel blocks of
    /// `pass.kc` rows, `shift` 32 values, and `c` (and `residual`, unless null) `M` rows
    /// `pass.ldc` apart with 32 writable values each.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn run<const M: usize>(&self, pass: &Pass) {
        // Each row's two multiply-adds are written out once per row by the macro below and
        // kept or dropped by `M`, a constant: straight-line code per `M`. Written as a loop
        // over the rows, LLVM split the depth loop into one per panel, each broadcasting every
        // value again.
        const ROWS: usize = 2 * MR;
        // SAFETY: the caller keeps every row, depth and column offset inside its slices, and
        // only rows below `M` are read or written.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            if !pass.first {
                for (i, acc) in acc.iter_mut().enumerate().take(M) {
                    let row = self.c.add(i * pass.ldc);
                    *acc = [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(NR))];
                }
            }
            let [mut a0, mut a1] = self.a;
            let [mut b0, mut b1] = self.b;
            let [mut f0, mut f1] = self.prefetch;
            // One depth: two panel rows loaded, each row's value broadcast against both.
            macro_rules! depth {
                () => {{
                    let w0 = _mm512_loadu_ps(b0);
                    let w1 = _mm512_loadu_ps(b1);
                    macro_rules! row {
                        ($i:literal) => {
                            if $i < M {
                                let x = if $i < MR {
                                    _mm512_set1_ps(*a0.add($i % MR))
                                } else {
                                    _mm512_set1_ps(*a1.add($i % MR))
                                };
                                acc[$i][0] = _mm512_fmadd_ps(x, w0, acc[$i][0]);
                                acc[$i][1] = _mm512_fmadd_ps(x, w1, acc[$i][1]);
                            }
                        };
                    }
                    row!(0);
                    row!(1);
                    row!(2);
                    row!(3);
                    row!(4);
                    row!(5);
                    row!(6);
                    row!(7);
                    row!(8);
                    row!(9);
                    row!(10);
                    row!(11);
                    a0 = a0.add(MR);
                    if M > MR {
                        a1 = a1.add(MR);
                    }
                    (b0, b1) = (b0.add(NR), b1.add(NR));
                }};
            }
            if !self.next_c.is_null() {
                for i in 0..2 * MR {
                    let row = self.next_c.wrapping_add(i * pass.ldc);
                    _mm_prefetch::<NEXT_HINT>(row.cast());
                    _mm_prefetch::<NEXT_HINT>(row.wrapping_add(NR).cast());
                }
            }
            // The depths that fetch a line of each stream first, then the rest: one loop that
            // tests every depth against the fetch's length ran batch 8 on two threads 3-4%
            // slower (234-248 ms against 227-234, alternated).
            let fetched = self.prefetch_rows.min(pass.kc);
            for _ in 0..fetched {
                if self.to_l2 {
                    _mm_prefetch::<_MM_HINT_T1>(f0.cast());
                    _mm_prefetch::<_MM_HINT_T1>(f1.cast());
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(f0.cast());
                    _mm_prefetch::<_MM_HINT_T0>(f1.cast());
                }
                (f0, f1) = (f0.wrapping_add(NR), f1.wrapping_add(NR));
                depth!();
            }
            for _ in fetched..pass.kc {
                depth!();
            }
            if pass.last {
                let shift = [
                    _mm512_loadu_ps(self.shift),
                    _mm512_loadu_ps(self.shift.add(NR)),
                ];
                let zero = _mm512_setzero_ps();
                for (i, acc) in acc.iter_mut().enumerate().take(M) {
                    for (h, v) in acc.iter_mut().enumerate() {
                        *v = _mm512_add_ps(*v, shift[h]);
                        if !self.residual.is_null() {
                            let r = _mm512_loadu_ps(self.residual.add(i * pass.ldc + h * NR));
                            *v = _mm512_add_ps(*v, r);
                        }
                        if pass.relu {
                            *v = _mm512_max_ps(*v, zero);
                        }
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(M) {
                let row = self.c.add(i * pass.ldc);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(NR), acc[1]);
            }
        }
    }
}

/// Where each value of the three registers [`pack_six`] stores comes from, for 8 depths of 6
/// rows held as rows 0-1, 2-3 and 4-5 side by side: `(first, second, from_third)`. Value `f`
/// of the 48 is depth `f / 6` of row `f % 6`.
const fn six_by_eight() -> [([i32; 16], [i32; 16], u16); 3] {
    let mut out = [([0; 16], [0; 16], 0); 3];
    let mut o = 0;
    while o < 3 {
        let mut j = 0;
        while j < 16 {
            let f = 16 * o + j;
            let (k, i) = ((f / 6) as i32, f % 6);
            let lane = (i % 2) as i32 * 8 + k;
            if i < 4 {
                out[o].0[j] = if i < 2 { lane } else { 16 + lane };
            } else {
                out[o].1[j] = lane;
                out[o].2 |= 1 << j;
            }
            j += 1;
        }
        o += 1;
    }
    out
}

/// Packs 6 rows, `len` values each from `rows`, into `dst` depth by depth (the 6 rows' values
/// of one depth side by side), as the tiles read them: 8 depths at a time by three pairs of
/// permutes, where a value at a time took two instructions each.
///
/// # Safety
///
/// The CPU has AVX-512F; each of `rows` points at `len` readable values and `dst` at `6 · len`
/// writable ones.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_six(rows: [*const f32; 6], len: usize, dst: *mut f32) {
    const MOVES: [([i32; 16], [i32; 16], u16); 3] = six_by_eight();
    // SAFETY: every read is inside a row's `len` values, every write inside `dst`'s `6 · len`.
    unsafe {
        let pair = |i: usize, k: usize| {
            let low = _mm256_loadu_ps(rows[i].add(k));
            let high = _mm256_loadu_ps(rows[i + 1].add(k));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castps_pd(_mm512_castps256_ps512(low)),
                _mm256_castps_pd(high),
            ))
        };
        let mut k = 0;
        while k + 8 <= len {
            let [z01, z23, z45] = [pair(0, k), pair(2, k), pair(4, k)];
            for (o, (first, second, third)) in MOVES.iter().enumerate() {
                let two =
                    _mm512_permutex2var_ps(z01, _mm512_loadu_si512(first.as_ptr().cast()), z23);
                let all = _mm512_mask_permutexvar_ps(
                    two,
                    *third,
                    _mm512_loadu_si512(second.as_ptr().cast()),
                    z45,
                );
                _mm512_storeu_ps(dst.add(6 * k + 16 * o), all);
            }
            k += 8;
        }
        for k in k..len {
            for (i, row) in rows.iter().enumerate() {
                *dst.add(6 * k + i) = *row.add(k);
            }
        }
    }
}
