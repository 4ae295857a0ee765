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
            BackendKind::Flex => Device::flex(),
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
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        let block = vec![1u8; 16 << 20];
        assert!(mapped() < before + block.len(), "16 MiB block was mmapped");
        drop(block);
    }

    #[test]
    fn default_is_compiled() {
        assert!(BackendKind::default().is_compiled());
    }
}
