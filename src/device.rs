//! Choosing the backend at run time.
//!
//! In Burn 0.22 a tensor carries no backend type: the [`Device`] decides where it runs. The same
//! [`ResNet`](crate::ResNet) therefore runs on every backend this build compiles in, and a name
//! picks one:
//!
//! ```
//! use resnet_transfer::device::{self, BackendKind};
//!
//! let default = BackendKind::default();
//! let device = device::device(default.name()).unwrap();
//! let training = device::training_device(default.name()).unwrap();
//! assert!(training.is_autodiff() && !device.is_autodiff());
//! assert!(device::device("tpu").is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The backends this crate knows about, whether or not this build compiles them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// `burn-ndarray`: the classic pure-Rust CPU backend (cargo feature `ndarray`).
    NdArray,
    /// `burn-flex`: Burn's newer pure-Rust CPU backend, much faster on convolutions (feature `flex`).
    Flex,
    /// `burn-wgpu`: GPUs through wgpu, or CPUs through a software Vulkan driver (feature `wgpu`).
    Wgpu,
}

impl BackendKind {
    /// Every backend this crate knows, compiled in or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::NdArray, BackendKind::Flex, BackendKind::Wgpu];

    /// The name used on command lines and in errors: `ndarray`, `flex` or `wgpu`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NdArray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether this build compiles the backend in.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backends this build compiles in, in the order of [`BackendKind::ALL`].
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The device of this backend, without autodiff (inference).
    ///
    /// For flex this also makes its matrix products pack the weight of skinny products (see
    /// [`pack_skinny_products`]): same numbers, faster.
    pub fn device(self) -> Result<Device> {
        if !self.is_compiled() {
            return Err(Error::BackendNotCompiled {
                name: self.name().to_string(),
                available: available_list(),
            });
        }
        Ok(match self {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)] // ndarray is kept on purpose: users asked for it.
            BackendKind::NdArray => Device::ndarray(),
            #[cfg(feature = "flex")]
            BackendKind::Flex => {
                pack_skinny_products();
                Device::flex()
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_compiled() was checked above"),
        })
    }
}

impl Default for BackendKind {
    /// The fastest CPU backend compiled in: flex, else ndarray, else wgpu.
    fn default() -> Self {
        [BackendKind::Flex, BackendKind::NdArray, BackendKind::Wgpu]
            .into_iter()
            .find(|b| b.is_compiled())
            .unwrap_or(BackendKind::Flex)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    /// Parses a backend name, case-insensitively. A name whose feature is not compiled in still
    /// parses; [`BackendKind::device`] is where that is refused.
    fn from_str(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        BackendKind::ALL
            .into_iter()
            .find(|b| b.name() == lower)
            .ok_or_else(|| Error::UnknownBackend {
                name: name.to_string(),
                available: available_list(),
            })
    }
}

fn available_list() -> String {
    let names: Vec<&str> = BackendKind::compiled().iter().map(|b| b.name()).collect();
    if names.is_empty() {
        "no backend (enable one of the features ndarray, flex, wgpu)".to_string()
    } else {
        names.join(", ")
    }
}

/// The inference device for a backend name (`"ndarray"`, `"flex"` or `"wgpu"`).
///
/// An unknown name, or one whose cargo feature this build lacks, is a typed error that lists the
/// backends this build has.
pub fn device(name: &str) -> Result<Device> {
    name.parse::<BackendKind>()?.device()
}

/// The training device for a backend name: the same backend with autodiff on.
pub fn training_device(name: &str) -> Result<Device> {
    Ok(device(name)?.autodiff())
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
/// the weight and removes the misses: stage 4 of a ResNet50 inference at batch 32 took 13-14 ms
/// instead of 25 (measured in alternating runs on README's machine). The microkernel does the
/// same multiply-adds in the same order either way, so results are bit for bit the same.
///
/// [`BackendKind::device`] calls this for flex, [`ResNetConfig::init`](crate::ResNetConfig::init)
/// for any device and [`ResNet::fused`](crate::ResNet::fused) for its own products; it sets `gemm`'s process-wide thresholds, which affect only how fast products
/// run.
pub fn pack_skinny_products() {
    gemm::set_lhs_packing_threshold_single_thread(1);
    gemm::set_lhs_packing_threshold_multi_thread(1);
}

/// Whether `device` (autodiff or not) computes on this machine's CPU: ndarray's or flex's.
/// There [`ResNet::fused`](crate::ResNet::fused) runs inference faster than the module, and the
/// crate's own inference uses it.
///
/// ```
/// use resnet_transfer::device::{self, BackendKind};
///
/// assert!(device::is_host(&BackendKind::default().device().unwrap().autodiff()));
/// ```
pub fn is_host(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Runs `work` on one of the worker threads of the CPU backends' thread pool (rayon's global
/// pool) and returns what it returns; runs it in place when already on one.
///
/// flex and ndarray split matrix products and large element-wise operations over rayon's
/// workers, one per core, and run the rest on the thread that called them. Called from any
/// other thread (such as `main`), every parallel operation is handed into the pool and the
/// caller sleeps until it is done, and while the caller then works alone, both workers spin
/// briefly before they sleep: three busy threads on two cores. Run from a worker, the caller
/// takes its own share of each operation and only one other thread competes. On README's
/// 2-core machine, 60 ResNet50 inferences at batch 32 on flex took 8,400 context switches
/// instead of 44,000 and each inference 5-12% less time (three alternating pairs of runs); a
/// training step showed no clear change either way.
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

/// Makes glibc's `malloc` keep the memory a training step frees, for the next step to reuse.
///
/// A ResNet step on the CPU backends allocates and frees hundreds of tensors of a few megabytes.
/// glibc hands blocks above its mmap threshold (128 KiB at start, raised as it goes) straight
/// back to the kernel and trims its heap when the top of it is free, so the next step takes
/// page faults and zeroes fresh pages for the same sizes again. This sets `M_MMAP_THRESHOLD` to
/// 32 MiB (its largest) and `M_TRIM_THRESHOLD` to 1 GiB: the same as running with
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824`.
/// On the 2-core machine of README's Performance section it halved the page faults of a
/// ResNet50 training step (flex, 32x32, batch 32) and made the step about 10% faster, with the
/// same peak resident memory.
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

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(" FLEX ".parse::<BackendKind>().unwrap(), BackendKind::Flex);
    }

    #[test]
    fn unknown_backend_lists_what_is_compiled() {
        let err = device("cuda").unwrap_err();
        let Error::UnknownBackend { name, available } = &err else {
            panic!("expected UnknownBackend, got {err:?}");
        };
        assert_eq!(name, "cuda");
        for kind in BackendKind::compiled() {
            assert!(available.contains(kind.name()), "{err}");
        }
    }

    #[test]
    fn backend_not_compiled_is_a_typed_error() {
        for kind in BackendKind::ALL {
            match device(kind.name()) {
                Ok(dev) => {
                    assert!(kind.is_compiled());
                    assert!(!dev.is_autodiff());
                    assert!(training_device(kind.name()).unwrap().is_autodiff());
                }
                Err(Error::BackendNotCompiled { name, available }) => {
                    assert!(!kind.is_compiled());
                    assert_eq!(name, kind.name());
                    assert!(!available.contains(kind.name()));
                }
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    }

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

    #[test]
    fn default_is_compiled() {
        assert!(BackendKind::default().is_compiled());
    }

    #[test]
    fn host_backends_are_the_cpu_ones() {
        for kind in BackendKind::compiled() {
            let device = kind.device().unwrap();
            let host = kind != BackendKind::Wgpu;
            assert_eq!(is_host(&device), host, "{kind}");
            assert_eq!(is_host(&device.autodiff()), host, "{kind} with autodiff");
        }
    }
}
