//! The CPU kernel layer: plain loops over host buffers, split over rayon's threads, and one safe
//! wrapper around `gemm` for the products. The network (`model/`) calls into it: the folded
//! inference path, and the training operations that flex and ndarray both run through
//! ([`host::HostBackend`] hands these kernels either backend's buffers). All of the crate's
//! `unsafe` code is here.

// Without a CPU backend the training kernels have no caller.
#![cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]

pub(crate) mod conv_bn;
mod epilogue;
pub(crate) mod gemm;
pub(crate) mod host;
pub(crate) mod im2col;
#[cfg(target_arch = "x86_64")]
pub(crate) mod panels;
pub(crate) mod pool;
pub(crate) mod split;
pub(crate) mod team;
pub(crate) mod tuning;
#[cfg(target_arch = "x86_64")]
pub(crate) mod winograd;

pub(crate) use epilogue::Epilogue;

/// `f(i, chunk)` for each `len`-long chunk `i` of `data` (an image, or a run of rows), on the
/// pool's threads when `parallel` (by the [`team`] the calling thread leads, if any).
pub(crate) fn for_each_image<T: Send>(
    parallel: bool,
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    if parallel {
        team::for_each(data.chunks_mut(len).enumerate().collect(), |(i, c)| f(i, c));
    } else {
        data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}
