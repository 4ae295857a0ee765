//! The transforms of F(2x2, 3x3) and F(4x4, 3x3): the filter's `G g Gᵀ`, once per weight, and
//! the input's `Bᵀ d B` and the output's `Aᵀ m A`, lane by lane on 8 channels at a time.

use super::{L, Lanes};

/// `G` of F(2x2, 3x3): the filter transform.
pub(super) const G2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `G` of F(4x4, 3x3): the filter transform.
pub(super) const G4: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `out += coefficient · x`, skipping the zero coefficients of `G`.
pub(super) fn add_scaled(out: &mut [f32], coefficient: f32, x: &[f32]) {
    if coefficient != 0.0 {
        out.iter_mut()
            .zip(x)
            .for_each(|(o, v)| *o += coefficient * v);
    }
}

/// A 2-D transform of an `A x A` tile by a 1-D transform `f` (`A` values to `B`), applied down
/// the columns and then along the rows: `F d Fᵀ`.
#[inline(always)]
pub(super) fn transform_2d<const A: usize, const B: usize>(
    d: &[[Lanes; A]; A],
    f: impl Fn(&[Lanes; A]) -> [Lanes; B],
) -> [[Lanes; B]; B] {
    let mut columns = [[[0.0; L]; A]; B];
    for col in 0..A {
        let column: [Lanes; A] = std::array::from_fn(|a| d[a][col]);
        for (i, value) in f(&column).into_iter().enumerate() {
            columns[i][col] = value;
        }
    }
    std::array::from_fn(|i| f(&columns[i]))
}

/// `Bᵀ d` of F(2x2, 3x3), lane by lane.
#[inline(always)]
pub(super) fn input_f2(d: &[Lanes; 4]) -> [Lanes; 4] {
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
pub(super) fn output_f2(m: &[Lanes; 4]) -> [Lanes; 2] {
    let mut r = [[0.0; L]; 2];
    for l in 0..L {
        let [m0, m1, m2, m3] = [m[0][l], m[1][l], m[2][l], m[3][l]];
        r[0][l] = m0 + m1 + m2;
        r[1][l] = m1 - m2 - m3;
    }
    r
}

/// `Bᵀ d` of F(4x4, 3x3), lane by lane.
#[inline(always)]
pub(super) fn input_f4(d: &[Lanes; 6]) -> [Lanes; 6] {
    let mut r = [[0.0; L]; 6];
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `Aᵀ m` of F(4x4, 3x3), lane by lane.
#[inline(always)]
pub(super) fn output_f4(m: &[Lanes; 6]) -> [Lanes; 4] {
    let mut r = [[0.0; L]; 4];
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (sum12, diff12, sum34, diff34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        r[0][l] = m0 + sum12 + sum34;
        r[1][l] = diff12 + 2.0 * diff34;
        r[2][l] = sum12 + 4.0 * sum34;
        r[3][l] = diff12 + 8.0 * diff34 + m5;
    }
    r
}
