//! The AVX-512 tile of the panel product: 12 rows by a pair of whole panels (32 output
//! channels), picked at run time on CPUs with AVX-512F.

use std::arch::x86_64::*;

use super::{MR, NR, Pass};

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
}

impl WideTile {
    /// Multiplies, accumulates and stores the tile.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F; `a` holds two packed tiles of `pass.kc` depths, `b` two panel
    /// blocks of `pass.kc` rows, `shift` 32 values, and `c` (and `residual`, unless null) 12
    /// rows `pass.ldc` apart with 32 writable values each.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn run(&self, pass: &Pass) {
        // SAFETY: the caller keeps every row, depth and column offset inside its slices.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; 2 * MR];
            if !pass.first {
                for (i, acc) in acc.iter_mut().enumerate() {
                    let row = self.c.add(i * pass.ldc);
                    *acc = [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(NR))];
                }
            }
            // Spelled out, as in the AVX2 tile: written as loops over the rows, LLVM split the
            // depth loop into one per panel, each broadcasting every value again.
            let [
                [mut c0l, mut c0h],
                [mut c1l, mut c1h],
                [mut c2l, mut c2h],
                [mut c3l, mut c3h],
                [mut c4l, mut c4h],
                [mut c5l, mut c5h],
                [mut c6l, mut c6h],
                [mut c7l, mut c7h],
                [mut c8l, mut c8h],
                [mut c9l, mut c9h],
                [mut c10l, mut c10h],
                [mut c11l, mut c11h],
            ] = acc;
            let [mut a0, mut a1] = self.a;
            let [mut b0, mut b1] = self.b;
            for _ in 0..pass.kc {
                let w0 = _mm512_loadu_ps(b0);
                let w1 = _mm512_loadu_ps(b1);
                let x = _mm512_set1_ps(*a0.add(0));
                c0l = _mm512_fmadd_ps(x, w0, c0l);
                c0h = _mm512_fmadd_ps(x, w1, c0h);
                let x = _mm512_set1_ps(*a0.add(1));
                c1l = _mm512_fmadd_ps(x, w0, c1l);
                c1h = _mm512_fmadd_ps(x, w1, c1h);
                let x = _mm512_set1_ps(*a0.add(2));
                c2l = _mm512_fmadd_ps(x, w0, c2l);
                c2h = _mm512_fmadd_ps(x, w1, c2h);
                let x = _mm512_set1_ps(*a0.add(3));
                c3l = _mm512_fmadd_ps(x, w0, c3l);
                c3h = _mm512_fmadd_ps(x, w1, c3h);
                let x = _mm512_set1_ps(*a0.add(4));
                c4l = _mm512_fmadd_ps(x, w0, c4l);
                c4h = _mm512_fmadd_ps(x, w1, c4h);
                let x = _mm512_set1_ps(*a0.add(5));
                c5l = _mm512_fmadd_ps(x, w0, c5l);
                c5h = _mm512_fmadd_ps(x, w1, c5h);
                let x = _mm512_set1_ps(*a1.add(0));
                c6l = _mm512_fmadd_ps(x, w0, c6l);
                c6h = _mm512_fmadd_ps(x, w1, c6h);
                let x = _mm512_set1_ps(*a1.add(1));
                c7l = _mm512_fmadd_ps(x, w0, c7l);
                c7h = _mm512_fmadd_ps(x, w1, c7h);
                let x = _mm512_set1_ps(*a1.add(2));
                c8l = _mm512_fmadd_ps(x, w0, c8l);
                c8h = _mm512_fmadd_ps(x, w1, c8h);
                let x = _mm512_set1_ps(*a1.add(3));
                c9l = _mm512_fmadd_ps(x, w0, c9l);
                c9h = _mm512_fmadd_ps(x, w1, c9h);
                let x = _mm512_set1_ps(*a1.add(4));
                c10l = _mm512_fmadd_ps(x, w0, c10l);
                c10h = _mm512_fmadd_ps(x, w1, c10h);
                let x = _mm512_set1_ps(*a1.add(5));
                c11l = _mm512_fmadd_ps(x, w0, c11l);
                c11h = _mm512_fmadd_ps(x, w1, c11h);
                (a0, a1) = (a0.add(MR), a1.add(MR));
                (b0, b1) = (b0.add(NR), b1.add(NR));
            }
            let mut acc = [
                [c0l, c0h],
                [c1l, c1h],
                [c2l, c2h],
                [c3l, c3h],
                [c4l, c4h],
                [c5l, c5h],
                [c6l, c6h],
                [c7l, c7h],
                [c8l, c8h],
                [c9l, c9h],
                [c10l, c10h],
                [c11l, c11h],
            ];
            if pass.last {
                let shift = [
                    _mm512_loadu_ps(self.shift),
                    _mm512_loadu_ps(self.shift.add(NR)),
                ];
                let zero = _mm512_setzero_ps();
                for (i, acc) in acc.iter_mut().enumerate() {
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
            for (i, acc) in acc.iter().enumerate() {
                let row = self.c.add(i * pass.ldc);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(NR), acc[1]);
            }
        }
    }
}
