//! The transforms of F(2x2, 3x3) and F(4x4, 3x3): the filter's `G g Gᵀ`, once per weight, and
//! the input's `Bᵀ d B` and the output's `Aᵀ m A`, lane by lane on 8 or 16 channels at a time.

use super::Lanes;

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

/// A 2-D transform of an `A x A` tile by a 1-D transform `f` (`A` values to `B`), applied down
/// the columns and then along the rows: `F d Fᵀ`.
#[inline(always)]
pub(super) fn transform_2d<const A: usize, const B: usize, const L: usize>(
    d: &[[Lanes<L>; A]; A],
    f: impl Fn(&[Lanes<L>; A]) -> [Lanes<L>; B],
) -> [[Lanes<L>; B]; B] {
    let mut columns = [[[0.0; L]; A]; B];
    for col in 0..A {
        let column: [Lanes<L>; A] = std::array::from_fn(|a| d[a][col]);
        for (i, value) in f(&column).into_iter().enumerate() {
            columns[i][col] = value;
        }
    }
    std::array::from_fn(|i| f(&columns[i]))
}

/// `Bᵀ d` of F(2x2, 3x3), lane by lane.
#[inline(always)]
pub(super) fn input_f2<const L: usize>(d: &[Lanes<L>; 4]) -> [Lanes<L>; 4] {
    let mut r = [[0.0; L]; 4];
    for l in 0..L {
        let [d0, d1, d2, d3] = [d[0][l], d[1][l], d[2][l], d[3][l]];
        r[0][l] = d0 - d2;
        r[1][l] = d1 + d2;
        r[2][l] = d2 - d1;
        r[3][l] = d1 - d3;
    }
    r
}

/// `Aᵀ m` of F(2x2, 3x3), lane by lane.
#[inline(always)]
pub(super) fn output_f2<const L: usize>(m: &[Lanes<L>; 4]) -> [Lanes<L>; 2] {
    let mut r = [[0.0; L]; 2];
    for l in 0..L {
        let [m0, m1, m2, m3] = [m[0][l], m[1][l], m[2][l], m[3][l]];
        r[0][l] = m0 + m1 + m2;
        r[1][l] = m1 - m2 - m3;
    }
    r
}

/// `Bᵀ d` of F(4x4, 3x3) on the points 0, ±2/3, ±3/2 and infinity (rows scaled by 36), lane
/// by lane.
#[inline(always)]
pub(super) fn input_f4<const L: usize>(d: &[Lanes<L>; 6]) -> [Lanes<L>; 6] {
    let mut r = [[0.0; L]; 6];
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        let (near_even, near_odd) = (36.0 * d4 - 81.0 * d2, 54.0 * d1 - 24.0 * d3);
        let (far_even, far_odd) = (36.0 * d4 - 16.0 * d2, 24.0 * d1 - 54.0 * d3);
        r[0][l] = 36.0 * (d0 + d4) - 97.0 * d2;
        r[1][l] = near_even - near_odd;
        r[2][l] = near_even + near_odd;
        r[3][l] = far_even - far_odd;
        r[4][l] = far_even + far_odd;
        r[5][l] = 36.0 * (d1 + d5) - 97.0 * d3;
    }
    r
}

/// `Aᵀ m` of F(4x4, 3x3) on the points 0, ±2/3, ±3/2 and infinity (columns scaled by 27 and
/// 8), lane by lane.
#[inline(always)]
pub(super) fn output_f4<const L: usize>(m: &[Lanes<L>; 6]) -> [Lanes<L>; 4] {
    let mut r = [[0.0; L]; 4];
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (near_sum, near_diff) = (m1 + m2, m1 - m2);
        let (far_sum, far_diff) = (m3 + m4, m3 - m4);
        r[0][l] = m0 + 27.0 * near_sum + 8.0 * far_sum;
        r[1][l] = 18.0 * near_diff + 12.0 * far_diff;
        r[2][l] = 12.0 * near_sum + 18.0 * far_sum;
        r[3][l] = 8.0 * near_diff + 27.0 * far_diff + m5;
    }
    r
}
