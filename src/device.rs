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

use burn::tensor::Device;

use crate::error::{Error, Result};

pub use crate::cpu::tuning::{
    keep_pool_awake, on_pool_worker, pack_skinny_products, tune_host_allocator,
};

/// The backends this crate knows about, whether or not this build compiles them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// `burn-ndarray`: the classic pure-Rust CPU backend (cargo feature `ndarray`).
    NdArray,
    /// `burn-flex`: Burn's newer pure-Rust CPU backend, much faster on convolutions (feature `flex`).
    Flex,
    /// `burn-wgpu`: GPUs through wgpu, or CPUs through a software Vulkan driver (feature `wgpu`):
    /// the graphics API the machine offers (Vulkan, else DX12 or OpenGL; Metal on macOS), its
    /// kernels in WGSL, or in SPIR-V on Vulkan when the build has the `vulkan` feature.
    Wgpu,
    /// `burn-wgpu` pinned to Vulkan, its kernels compiled to SPIR-V by CubeCL, with cooperative
    /// matrices where the GPU has them (feature `vulkan`; NVIDIA and AMD GPUs). A machine without a
    /// Vulkan driver fails here rather than falling back to another graphics API. Not yet tested:
    /// Debian 12's software Vulkan driver crashes on the SPIR-V of Burn 0.22.1's matrix products
    /// (docs/LIBRARY.md, Backends).
    Vulkan,
    /// `burn-cuda`: NVIDIA GPUs through CUDA (feature `cuda`; its build downloads an LLVM bundle,
    /// see docs/LIBRARY.md, Backends).
    Cuda,
}

// Every backend this crate knows, compiled in or not; an unknown name is its own error, which
// lists the backends this build has.
named_enum!(BackendKind {
    NdArray => "ndarray",
    Flex => "flex",
    Wgpu => "wgpu",
    Vulkan => "vulkan",
    Cuda => "cuda",
});

impl BackendKind {
    /// Whether this build compiles the backend in.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Vulkan => cfg!(feature = "vulkan"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether the backend computes on this machine's CPU with its own kernels (ndarray, flex),
    /// as [`is_host()`](crate::device::is_host) says of a device. The GPU backends are not, even
    /// when a software Vulkan driver runs them on the CPU.
    ///
    /// ```
    /// use resnet_transfer::BackendKind;
    ///
    /// assert!(BackendKind::Flex.is_host());
    /// assert!(!BackendKind::Vulkan.is_host());
    /// ```
    pub fn is_host(self) -> bool {
        matches!(self, BackendKind::NdArray | BackendKind::Flex)
    }

    /// The backends this build compiles in, in the order of [`BackendKind::ALL`].
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The device of this backend, without autodiff (inference).
    ///
    /// For the CPU backends this also makes the `gemm` crate, which flex and the crate's own
    /// kernels on both multiply with, pack the weight of skinny products (see
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
            BackendKind::NdArray => {
                pack_skinny_products();
                Device::ndarray()
            }
            #[cfg(feature = "flex")]
            BackendKind::Flex => {
                pack_skinny_products();
                Device::flex()
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "vulkan")]
            BackendKind::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Device::cuda(0),
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

impl std::str::FromStr for BackendKind {
    type Err = Error;

    /// Parses a backend name, case-insensitively. A name whose feature is not compiled in still
    /// parses; [`BackendKind::device`] is where that is refused.
    fn from_str(name: &str) -> Result<Self> {
        BackendKind::from_name(name).ok_or_else(|| Error::UnknownBackend {
            name: name.to_string(),
            available: available_list(),
        })
    }
}

fn available_list() -> String {
    let names: Vec<&str> = BackendKind::compiled().iter().map(|b| b.name()).collect();
    if names.is_empty() {
        "no backend (enable one of the features ndarray, flex, wgpu, vulkan, cuda)".to_string()
    } else {
        names.join(", ")
    }
}

/// The inference device of [`BackendKind::default`]: the fastest CPU backend compiled in (flex,
/// else ndarray), wgpu only in a build without either.
///
/// Burn's own `Device::default()` picks a GPU backend whenever one is compiled in (wgpu with this
/// crate's `wgpu` feature, whatever the machine has, or a software Vulkan driver), so code that
/// means "the CPU unless I say otherwise" should start from this.
///
/// ```
/// let device = resnet_transfer::device::default_device().unwrap();
/// assert!(resnet_transfer::device::is_host(&device));
/// ```
///
/// # Errors
///
/// [`Error::BackendNotCompiled`] in a build with no backend at all.
pub fn default_device() -> Result<Device> {
    BackendKind::default().device()
}

/// The inference device for a backend name (`"ndarray"`, `"flex"`, `"wgpu"`, `"vulkan"` or
/// `"cuda"`).
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

/// The training devices (autodiff) for data-parallel training on backend `name`, one per index:
/// GPU `i` for wgpu and Vulkan (the `i`-th discrete GPU) and for CUDA, in Burn's numbering. The
/// CPU backends have one device, so every index is that device: replicas that take turns on it,
/// which computes the same as one device and is how the data-parallel path is checked without
/// GPUs. An empty list is the backend's default device alone.
///
/// ```
/// use resnet_transfer::device::{self, BackendKind};
///
/// let name = BackendKind::default().name();
/// let two = device::training_devices(name, &[0, 1]).unwrap();
/// assert_eq!(two.len(), 2);
/// assert!(two.iter().all(|d| d.is_autodiff()));
/// assert!(device::training_devices(name, &[0, 0]).is_err(), "an index given twice");
/// ```
///
/// # Errors
///
/// As [`device`] for the name; [`Error::InvalidConfig`] (`devices`) for an index given twice.
pub fn training_devices(name: &str, indices: &[usize]) -> Result<Vec<Device>> {
    let kind: BackendKind = name.parse()?;
    let main = kind.device()?;
    if indices.is_empty() {
        return Ok(vec![main.autodiff()]);
    }
    let mut seen = indices.to_vec();
    seen.sort_unstable();
    if let Some(pair) = seen.windows(2).find(|p| p[0] == p[1]) {
        return Err(Error::invalid_config(
            "devices",
            "each device index once",
            format!("{indices:?} (index {} twice)", pair[0]),
        ));
    }
    indices
        .iter()
        .map(|&i| Ok(kind.slot(i).device(&main)?.autodiff()))
        .collect()
}

/// Which device of a backend an index of [`training_devices`] names, before Burn builds it: the
/// mapping alone, the same whatever features this build has, so that it can be checked without
/// the GPUs (or the backend) it names.
///
/// ```
/// use resnet_transfer::device::{BackendKind, DeviceSlot};
///
/// assert_eq!(BackendKind::Cuda.slot(1), DeviceSlot::Cuda(1));
/// assert_eq!(BackendKind::Wgpu.slot(1), DeviceSlot::DiscreteGpu(1));
/// assert_eq!(BackendKind::Vulkan.slot(1), DeviceSlot::VulkanGpu(1));
/// assert_eq!(BackendKind::Flex.slot(1), DeviceSlot::Host);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSlot {
    /// The CPU backends' one device: every index names it (replicas take turns on it).
    Host,
    /// wgpu's `i`-th discrete GPU (Burn's `DeviceKind::DiscreteGpu(i)`).
    DiscreteGpu(usize),
    /// The `i`-th discrete GPU on Vulkan (Burn's `Device::vulkan(DeviceKind::DiscreteGpu(i))`).
    VulkanGpu(usize),
    /// CUDA device `i` (Burn's `Device::cuda(i)`).
    Cuda(usize),
}

impl BackendKind {
    /// The device index `index` names on this backend ([`DeviceSlot`]).
    pub fn slot(self, index: usize) -> DeviceSlot {
        match self {
            BackendKind::NdArray | BackendKind::Flex => DeviceSlot::Host,
            BackendKind::Wgpu => DeviceSlot::DiscreteGpu(index),
            BackendKind::Vulkan => DeviceSlot::VulkanGpu(index),
            BackendKind::Cuda => DeviceSlot::Cuda(index),
        }
    }
}

impl DeviceSlot {
    /// Burn's device for this slot (without autodiff); `host` is the backend's own device, which
    /// [`DeviceSlot::Host`] stands for.
    fn device(self, host: &Device) -> Result<Device> {
        Ok(match self {
            DeviceSlot::Host => host.clone(),
            #[cfg(feature = "wgpu")]
            DeviceSlot::DiscreteGpu(i) => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)),
            #[cfg(feature = "vulkan")]
            DeviceSlot::VulkanGpu(i) => Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(i)),
            #[cfg(feature = "cuda")]
            DeviceSlot::Cuda(i) => Device::cuda(i),
            // A slot of a backend this build lacks: `BackendKind::device` refused it already.
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::invalid_config(
                    "devices",
                    format!(
                        "a device of a backend this build has ({})",
                        available_list()
                    ),
                    format!("{other:?}"),
                ));
            }
        })
    }
}

/// [`on_pool_worker`] where `device` is a CPU backend's, whose operations rayon's pool runs, and
/// in place elsewhere. A GPU backend's work gains nothing from the pool, and run on a worker it
/// can meet other pool work there: a worker waiting inside one job runs others, and two jobs'
/// GPU commands then interleave on one thread's stream (a wgpu test failed so, with other tests
/// sharing the pool).
pub fn on_worker_for<R: Send>(device: &Device, work: impl FnOnce() -> R + Send) -> R {
    if is_host(device) {
        on_pool_worker(work)
    } else {
        work()
    }
}

/// Whether `device` (autodiff or not) computes on this machine's CPU: ndarray's or flex's.
/// There [`ResNet::folded`](crate::ResNet::folded) runs inference faster than the module, and the
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
        let err = device("tpu").unwrap_err();
        let Error::UnknownBackend { name, available } = &err else {
            panic!("expected UnknownBackend, got {err:?}");
        };
        assert_eq!(name, "tpu");
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

    /// Every index reaches its own GPU on the GPU backends (CUDA once mapped every index to GPU
    /// 0), and the CPU backends' one device on theirs: checked on the mapping, without GPUs.
    #[test]
    fn each_index_names_its_own_device() {
        for i in [0, 1, 3] {
            assert_eq!(BackendKind::Cuda.slot(i), DeviceSlot::Cuda(i));
            assert_eq!(BackendKind::Wgpu.slot(i), DeviceSlot::DiscreteGpu(i));
            assert_eq!(BackendKind::Vulkan.slot(i), DeviceSlot::VulkanGpu(i));
            assert_eq!(BackendKind::Flex.slot(i), DeviceSlot::Host);
            assert_eq!(BackendKind::NdArray.slot(i), DeviceSlot::Host);
        }
        let cuda: Vec<DeviceSlot> = [0, 1].map(|i| BackendKind::Cuda.slot(i)).to_vec();
        assert_eq!(cuda, [DeviceSlot::Cuda(0), DeviceSlot::Cuda(1)]);
    }

    #[test]
    fn default_is_compiled() {
        assert!(BackendKind::default().is_compiled());
    }

    #[test]
    fn host_backends_are_the_cpu_ones() {
        for kind in BackendKind::compiled() {
            let device = kind.device().unwrap();
            let host = kind.is_host();
            assert_eq!(is_host(&device), host, "{kind}");
            assert_eq!(is_host(&device.autodiff()), host, "{kind} with autodiff");
        }
    }
}
