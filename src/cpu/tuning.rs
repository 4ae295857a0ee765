//! Host tuning for the CPU backends: which thread runs the loops, how `gemm` packs skinny
//! products, and how glibc keeps freed memory. Each changes process-wide state, so each is an
//! explicit call (re-exported from [`crate::device`]), never a side effect of building a model.

/// Whether `RESNET_TRANSFER_TRACE_LAYERS` is set ([`env_flag`], read once): then every convolution of the folded inference path prints a line to stderr
/// with its shapes, its method (direct or Winograd's tile size, split between threads or not),
/// the pool thread that ran it and its milliseconds, as oneDNN's `ONEDNN_VERBOSE` does.
/// `benches/layer_profile.py` sums those lines per thread and layer shape.
pub(crate) fn layer_trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| env_flag("RESNET_TRANSFER_TRACE_LAYERS"))
}

/// Whether the environment variable `name` is set to anything but empty, `0`, `off`, `false` or
/// `no` (in any case): how the crate's switches read their variables.
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "off" | "false" | "no"
        )
    })
}

/// Makes the `gemm` crate, which flex multiplies with, pack the left operand of skinny products.
///
/// flex multiplies row-major matrices, which `gemm` turns into the column-major product
/// `Cᵀ = Bᵀ·Aᵀ`: a convolution's weight `[K, C_out]` becomes the left operand. `gemm` copies that
/// operand into contiguous panels only when the product has more than 96 columns, i.e. more
/// than 96 rows of activations. Below that (stage 4 of a ResNet at 32x32 has one row per image)
/// its microkernel reads the weight in place, 16 floats from each of `K` rows that lie
/// `C_out · 4` bytes apart: a multiple of 4 KiB for 1024 or more channels, so every one of those
/// reads falls in the same L1 cache set and misses. Packing from 7 columns on costs one copy of
/// the weight and removes the misses (stage 4 of a ResNet50 about twice as fast; see
/// docs/PERFORMANCE.md). The microkernel does the
/// same multiply-adds in the same order either way, so results are bit for bit the same.
///
/// Choosing flex through [`BackendKind::device`](crate::device::BackendKind::device) (or
/// [`device`](crate::device::device) and [`training_device`](crate::device::training_device))
/// calls this; building a model does not, since it sets `gemm`'s process-wide thresholds. Call
/// it yourself where you make a flex device another way (`Device::flex()`). The thresholds
/// affect only how fast products run, never their results.
pub fn pack_skinny_products() {
    gemm::set_lhs_packing_threshold_single_thread(1);
    gemm::set_lhs_packing_threshold_multi_thread(1);
}

/// Runs `work` on one of the worker threads of the CPU backends' thread pool (rayon's global
/// pool) and returns what it returns; runs it in place when already on one.
///
/// flex and ndarray split matrix products and large element-wise operations over rayon's
/// workers, one per core, and run the rest on the thread that called them. Called from any
/// other thread (such as `main`), every parallel operation is handed into the pool and the
/// caller sleeps until it is done, and while the caller then works alone, both workers spin
/// briefly before they sleep: three busy threads on two cores. Run from a worker, the caller
/// takes its own share of each operation and only one other thread competes: far fewer context
/// switches, and faster inference on few cores (docs/PERFORMANCE.md).
///
/// [`TwoPhase::fit`](crate::train::TwoPhase::fit),
/// [`evaluate`](crate::train::evaluate) and [`Classifier`](crate::Classifier) call it
/// themselves; wrap your own loops around a [`ResNet`](crate::ResNet) in it. On wgpu it changes
/// nothing but the thread that submits the work.
///
/// ```
/// let sum = resnet_transfer::device::on_pool_worker(|| (1..=4).sum::<i32>());
/// assert_eq!(sum, 10);
/// ```
pub fn on_pool_worker<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    // From outside the pool, `rayon::scope` runs its closure on a worker and blocks until it
    // returns; from a worker, it runs in place.
    rayon::scope(|_| work())
}

/// Runs `work` with the other workers of the CPU backends' thread pool kept awake until it
/// returns, each running whatever parallel work `work`'s operations hand to rayon as it comes,
/// spinning between them ([`rayon::yield_now`]), rather than falling asleep after each one and
/// being woken by the next.
///
/// A ResNet training step on small images is hundreds of short parallel operations; between
/// them rayon's idle workers sleep, and waking one is a system call and a context switch on
/// each side (about 500 context switches a step at 32x32 pixels, batch 32, on 2 cores). Held
/// awake through the step, that step ran 6-23% faster (paired steps in one process, a ResNet50
/// at 32x32, batch 32; 224x224 and the head-only step unmoved; docs/PERFORMANCE.md). The
/// awake workers spin for at most 2 ms without work before they start yielding their cores
/// between checks.
///
/// Call it from a worker of the pool ([`on_pool_worker`]); elsewhere, or with one thread, it
/// runs `work` as it is. [`TwoPhase::fit`](crate::train::TwoPhase::fit) runs each training step
/// of a CPU backend under it.
///
/// ```
/// use resnet_transfer::device::{keep_pool_awake, on_pool_worker};
/// use rayon::prelude::*;
///
/// let sum: u64 = on_pool_worker(|| keep_pool_awake(|| (1..=100u64).into_par_iter().sum()));
/// assert_eq!(sum, 5050);
/// ```
pub fn keep_pool_awake<R>(work: impl FnOnce() -> R) -> R {
    super::team::with_pool_awake(work)
}

/// Makes glibc's `malloc` keep the memory a training step frees, for the next step to reuse.
///
/// A ResNet step on the CPU backends allocates and frees hundreds of tensors of a few megabytes.
/// glibc hands blocks above its mmap threshold (128 KiB at start, raised as it goes) straight
/// back to the kernel and trims its heap when the top of it is free, so the next step takes
/// page faults and zeroes fresh pages for the same sizes again. This sets `M_MMAP_THRESHOLD` to
/// 32 MiB (its largest) and `M_TRIM_THRESHOLD` to 1 GiB, and `M_ARENA_MAX` to 1: the same as
/// running with `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:glibc.malloc.arena_max=1`.
/// The page faults of a training step drop by about half and the step runs faster. One arena,
/// because with the blocks kept, each of rayon's threads kept its own heap of them (glibc gives
/// each thread an arena), and a block freed in one could not serve the next step's allocation in
/// another: at 224x224 the peak resident memory of a training step was 1.34 GB with an arena per
/// thread, 1.07-1.13 GB with one, at the same speed (the few hundred allocations of a step do
/// not contend for its lock; docs/PERFORMANCE.md).
///
/// It changes the whole process's allocator, so a library does not do it behind your back: call
/// it once at the start of `main` (the bundled examples and benches do). Returns whether the
/// settings were applied; `false` on targets without glibc, where it does nothing.
pub fn tune_host_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it takes glibc's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn tuned_allocator_serves_megabytes_from_its_heap() {
        assert!(tune_host_allocator());
        // A 16 MiB block, above glibc's starting threshold, no longer comes from its own mmap.
        // SAFETY: mallinfo2 only reads glibc's allocator statistics.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        let block = vec![1u8; 16 << 20];
        assert!(mapped() < before + block.len(), "16 MiB block was mmapped");
        drop(block);
    }

    #[test]
    fn packed_skinny_products_are_bit_for_bit_the_same() {
        // The shape of a stage-4 1x1 convolution at batch 32, its weight rows 4 KiB apart.
        let (m, k, n) = (32, 512, 1024);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let product = || crate::cpu::gemm::product([m, k, n], (&a, [k, 1]), (&b, [n, 1]), false);
        gemm::set_lhs_packing_threshold_single_thread(
            gemm::DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD,
        );
        let unpacked = product();
        pack_skinny_products();
        assert_eq!(gemm::get_lhs_packing_threshold_single_thread(), 1);
        let packed = product();
        assert!(unpacked.iter().any(|v| *v != 0.0));
        assert_eq!(packed, unpacked);
    }

    #[test]
    fn work_runs_on_a_pool_worker() {
        assert_eq!(rayon::current_thread_index(), None);
        let index = on_pool_worker(rayon::current_thread_index);
        assert!(index.is_some_and(|i| i < rayon::current_num_threads()));
        // Nested calls run in place.
        let nested = on_pool_worker(|| {
            let outer = rayon::current_thread_index();
            (outer, on_pool_worker(rayon::current_thread_index))
        });
        assert_eq!(nested.0, nested.1);
    }
}
