//! The one safe wrapper around the `gemm` crate's matrix product (the crate flex multiplies with).

/// Below this many multiply-adds a product runs on one thread (flex's own threshold).
pub(crate) const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// `lhs · rhs` for `[m, k] · [k, n]` matrices given as slices with `[row, column]` strides, into
/// a new row-major `[m, n]` matrix; split over the pool's threads where `parallel` and the
/// product has at least [`PARALLEL_PRODUCT`] multiply-adds.
///
/// `gemm` works column-major: a row-major product runs as `Cᵀ = rhsᵀ · lhsᵀ`, with `rhs` the
/// operand it packs into panels on every call. Where `rhs` is a transposed weight (an input's
/// gradient `dY · Wᵀ`, `rhs` column-major) and has many more values than `lhs` (`k >= 4m`: few
/// rows of activations, as at 32x32 pixels), that packing, a transposition of the whole weight,
/// costs more than the multiply-adds: stage 4's `[32, 2048] · [2048, 512]` ran at 15 GMAC/s.
/// There the product is made column-major, packing `lhs` instead, and transposed into place:
/// the same product at 119 GMAC/s, and a ResNet50 training step at 32x32 pixels, batch 32,
/// 11-17% faster (docs/PERFORMANCE.md).
pub(crate) fn product(
    [m, k, n]: [usize; 3],
    (lhs, [lhs_rs, lhs_cs]): (&[f32], [usize; 2]),
    (rhs, [rhs_rs, rhs_cs]): (&[f32], [usize; 2]),
    parallel: bool,
) -> Vec<f32> {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    assert!(
        m * k == 0 || last(m, k, lhs_rs, lhs_cs) < lhs.len(),
        "left operand too short"
    );
    assert!(
        k * n == 0 || last(k, n, rhs_rs, rhs_cs) < rhs.len(),
        "right operand too short"
    );
    let parallelism = if parallel && m * k * n >= PARALLEL_PRODUCT {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let column_major = rhs_rs == 1 && rhs_cs != 1 && k >= 4 * m;
    // `out`'s column and row strides.
    let (out_cs, out_rs) = if column_major { (m, 1) } else { (1, n) };
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: the asserts above keep every operand index inside its slice; `out` has room for
    // `m × n` values, all of which gemm writes (it does not read `dst` with `read_dst` false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            out_cs as isize,
            out_rs as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(m * n);
    }
    if column_major {
        transposed(&out, n, m)
    } else {
        out
    }
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix, copied in 16 x 16 blocks
/// so that both sides' cache lines are used whole.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 16;
    let mut out = vec![0.0; rows * cols];
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lhs · rhs` by a plain triple loop in f64, each operand with its `[row, column]` strides.
    fn reference(
        [m, k, n]: [usize; 3],
        (lhs, [lhs_rs, lhs_cs]): (&[f32], [usize; 2]),
        (rhs, [rhs_rs, rhs_cs]): (&[f32], [usize; 2]),
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        f64::from(lhs[i * lhs_rs + p * lhs_cs])
                            * f64::from(rhs[p * rhs_rs + j * rhs_cs])
                    })
                    .sum();
            }
        }
        out
    }

    /// Checks [`product`] against [`reference`] on values made from a salt.
    fn check(dims: [usize; 3], lhs_strides: [usize; 2], rhs_strides: [usize; 2]) {
        let [m, k, n] = dims;
        let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 1013.0 - 0.5;
        let lhs: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
        let got = product(dims, (&lhs, lhs_strides), (&rhs, rhs_strides), true);
        let want = reference(dims, (&lhs, lhs_strides), (&rhs, rhs_strides));
        let scale = want.iter().fold(0f64, |a, b| a.max(b.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * scale,
                "{dims:?} at {i}: {g} against {w}"
            );
        }
    }

    #[test]
    fn products_by_a_transposed_weight_match_the_textbook_either_way_round() {
        // An input gradient `dY · Wᵀ` with few rows (run column-major, then transposed) and
        // with many (run as it is), `W` stored `[n, k]`, and odd sizes that leave partial blocks.
        for [m, k, n] in [[32, 2048, 512], [5, 67, 19], [512, 128, 1152], [33, 17, 9]] {
            check([m, k, n], [k, 1], [1, k]);
        }
    }

    #[test]
    fn weight_gradients_match_the_textbook() {
        // `xᵀ · dY` with `x` stored `[k, m]` and `dY` `[k, n]`, over many rows and over few.
        for [m, k, n] in [
            [64, 4096, 256],
            [7, 613, 29],
            [256, 128, 1024],
            [30, 50, 40],
        ] {
            check([m, k, n], [1, m], [n, 1]);
        }
    }

    #[test]
    fn transposing_moves_every_value_once() {
        let x: Vec<f32> = (0..37 * 21).map(|i| i as f32).collect();
        let t = transposed(&x, 37, 21);
        for r in 0..37 {
            for c in 0..21 {
                assert_eq!(t[c * 37 + r], x[r * 21 + c]);
            }
        }
    }
}
