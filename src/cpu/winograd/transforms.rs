//! The transforms of F(2x2, 3x3) and F(4x4, 3x3): the filter's `G g Gᵀ`, once per weight, and
//! the input's `Bᵀ d B` and the output's `Aᵀ m A`, on 8 or 16 channels at a time.

use std::arch::x86_64::*;

/// `G` of F(2x2, 3x3): the filter transform (points 0, 1, -1 and infinity).
pub(super) const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `G` of F(4x4, 3x3) on the points 0, ±2/3, ±3/2 and infinity: the filter transform, with
/// each row divided by the factor its row of `Bᵀ` (36) and its column of `Aᵀ` (27 for ±2/3, 8
/// for ±3/2) are multiplied by, so that those two hold small integers, exact in `f32`. Applied
/// in `f64`, once per weight.
pub(super) const G4: [[f64; 3]; 6] = {
    const NEAR: f64 = 130.0 * 36.0 * 27.0;
    const FAR: f64 = 65.0 * 36.0 * 8.0;
    [
        [1.0 / 36.0, 0.0, 0.0],
        [-81.0 / NEAR, -54.0 / NEAR, -36.0 / NEAR],
        [-81.0 / NEAR, 54.0 / NEAR, -36.0 / NEAR],
        [8.0 / FAR, 12.0 / FAR, 18.0 / FAR],
        [8.0 / FAR, -12.0 / FAR, 18.0 / FAR],
        [0.0, 0.0, 1.0 / 36.0],
    ]
};

/// `out += coefficient · x` in `f64`, skipping the zero coefficients of `G`.
pub(super) fn add_scaled<T: Copy + Into<f64>>(out: &mut [f64], coefficient: f64, x: &[T]) {
    if coefficient != 0.0 {
        out.iter_mut()
            .zip(x)
            .for_each(|(o, v)| *o += coefficient * (*v).into());
    }
}

/// Values of `LANES` channels, as the transforms take them: a register of `f32`, AVX's [`Ymm`]
/// or AVX-512's [`Zmm`]. The transforms below are written once against it, so that both widths
/// run the same operations in the same order (the same bits); none is fused into a
/// multiply-add. As registers rather than arrays of `f32`, the transforms of a tile took about
/// two thirds of the time (measured in docs/PERFORMANCE.md).
pub(super) trait Value: Copy {
    /// Channels per value.
    const LANES: usize;
    /// All zeros.
    fn zero() -> Self;
    /// `LANES` values from `from`.
    ///
    /// # Safety
    ///
    /// `from` points at `LANES` readable values, and the CPU has the register's instructions.
    unsafe fn load(from: *const f32) -> Self;
    /// The `LANES` values into `to`.
    ///
    /// # Safety
    ///
    /// `to` points at `LANES` writable values, and the CPU has the register's instructions.
    unsafe fn store(self, to: *mut f32);
    /// Lane by lane `self + other`.
    fn add(self, other: Self) -> Self;
    /// Lane by lane `self - other`.
    fn sub(self, other: Self) -> Self;
    /// Lane by lane `factor · self`.
    fn scale(self, factor: f32) -> Self;
    /// Lane by lane the larger of `self` and 0.
    fn relu(self) -> Self;
}

/// An AVX register of 8 `f32`. Its methods are only called from code compiled for AVX2 and
/// FMA, into which they are inlined.
#[derive(Clone, Copy)]
pub(super) struct Ymm(__m256);

/// An AVX-512 register of 16 `f32`. Its methods are only called from code compiled for
/// AVX-512F, into which they are inlined.
#[derive(Clone, Copy)]
pub(super) struct Zmm(__m512);

/// [`Value`] for a register type by its load, store, add, sub, mul, max and broadcast.
macro_rules! register_value {
    ($name:ident, $lanes:literal, $zero:ident, $load:ident, $store:ident, $add:ident, $sub:ident, $mul:ident, $max:ident, $set1:ident) => {
        impl Value for $name {
            const LANES: usize = $lanes;
            #[inline(always)]
            fn zero() -> Self {
                // SAFETY: only called where the CPU has the register (see the type).
                Self(unsafe { $zero() })
            }
            #[inline(always)]
            unsafe fn load(from: *const f32) -> Self {
                // SAFETY: the caller's readable values and CPU.
                Self(unsafe { $load(from) })
            }
            #[inline(always)]
            unsafe fn store(self, to: *mut f32) {
                // SAFETY: the caller's writable values and CPU.
                unsafe { $store(to, self.0) }
            }
            #[inline(always)]
            fn add(self, other: Self) -> Self {
                // SAFETY: as for `zero`.
                Self(unsafe { $add(self.0, other.0) })
            }
            #[inline(always)]
            fn sub(self, other: Self) -> Self {
                // SAFETY: as for `zero`.
                Self(unsafe { $sub(self.0, other.0) })
            }
            #[inline(always)]
            fn scale(self, factor: f32) -> Self {
                // SAFETY: as for `zero`.
                Self(unsafe { $mul($set1(factor), self.0) })
            }
            #[inline(always)]
            fn relu(self) -> Self {
                // SAFETY: as for `zero`.
                Self(unsafe { $max(self.0, $zero()) })
            }
        }
    };
}

register_value!(
    Ymm,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_mul_ps,
    _mm256_max_ps,
    _mm256_set1_ps
);
register_value!(
    Zmm,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_mul_ps,
    _mm512_max_ps,
    _mm512_set1_ps
);

/// The 1-D transforms of one tile size, `A` inputs and `M` outputs a side: called as the
/// type's functions (not passed as function values, whose `Fn::call` shims were left out of line
/// and kept the register operations in them from being inlined).
pub(super) trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ d`.
    fn input<V: Value>(d: &[V; A]) -> [V; A];
    /// `Aᵀ m`.
    fn output<V: Value>(m: &[V; A]) -> [V; M];
}

/// F(2x2, 3x3).
pub(super) struct F2;

impl Transforms<4, 2> for F2 {
    #[inline(always)]
    fn input<V: Value>(d: &[V; 4]) -> [V; 4] {
        let [d0, d1, d2, d3] = *d;
        [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
    }

    #[inline(always)]
    fn output<V: Value>(m: &[V; 4]) -> [V; 2] {
        let [m0, m1, m2, m3] = *m;
        [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
    }
}

/// F(4x4, 3x3) on the points 0, ±2/3, ±3/2 and infinity: `Bᵀ`'s rows scaled by 36, `Aᵀ`'s
/// columns by 27 and 8.
pub(super) struct F4;

impl Transforms<6, 4> for F4 {
    #[inline(always)]
    fn input<V: Value>(d: &[V; 6]) -> [V; 6] {
        let [d0, d1, d2, d3, d4, d5] = *d;
        let (near_even, near_odd) = (
            d4.scale(36.0).sub(d2.scale(81.0)),
            d1.scale(54.0).sub(d3.scale(24.0)),
        );
        let (far_even, far_odd) = (
            d4.scale(36.0).sub(d2.scale(16.0)),
            d1.scale(24.0).sub(d3.scale(54.0)),
        );
        [
            d0.add(d4).scale(36.0).sub(d2.scale(97.0)),
            near_even.sub(near_odd),
            near_even.add(near_odd),
            far_even.sub(far_odd),
            far_even.add(far_odd),
            d1.add(d5).scale(36.0).sub(d3.scale(97.0)),
        ]
    }

    #[inline(always)]
    fn output<V: Value>(m: &[V; 6]) -> [V; 4] {
        let [m0, m1, m2, m3, m4, m5] = *m;
        let (near_sum, near_diff) = (m1.add(m2), m1.sub(m2));
        let (far_sum, far_diff) = (m3.add(m4), m3.sub(m4));
        [
            m0.add(near_sum.scale(27.0)).add(far_sum.scale(8.0)),
            near_diff.scale(18.0).add(far_diff.scale(12.0)),
            near_sum.scale(12.0).add(far_sum.scale(18.0)),
            near_diff.scale(8.0).add(far_diff.scale(27.0)).add(m5),
        ]
    }
}
