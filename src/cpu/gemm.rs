//! The one safe wrapper around the `gemm` crate's matrix product (the crate flex multiplies with).

/// Below this many multiply-adds a product runs on one thread (flex's own threshold).
pub(crate) const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// `lhs · rhs` for `[m, k] · [k, n]` matrices given as slices with `[row, column]` strides, into
/// a new row-major `[m, n]` matrix; split over the pool's threads where `parallel` and the
/// product has at least [`PARALLEL_PRODUCT`] multiply-adds.
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
    let mut out = Vec::with_capacity(m * n);
    let parallelism = if parallel && m * k * n >= PARALLEL_PRODUCT {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every operand index inside its slice; `out` has room for
    // `m × n` values, all of which gemm writes (it does not read `dst` with `read_dst` false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
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
    out
}
