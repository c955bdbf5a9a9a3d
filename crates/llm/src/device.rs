//! Where a model computes: the `device` key of a stage, `--device` on the command line, and the
//! one function that turns it into a concrete burn backend.
//!
//! Everything that computes is generic over `Backend`; callers describe their work as an
//! [`OnBackend`] task and [`run_on`] instantiates it for the chosen device and precision, so the
//! choice of backends lives in this file and `backend.rs` only.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

/// Why work cannot run on a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}; fix: use \"cpu\", \"cuda\" or \"cuda:N\"")]
    Unknown(String),
    #[error(
        "device {0} needs a build with CUDA; fix: rebuild with `cargo build --release --features cuda` or use \"cpu\""
    )]
    NeedsCudaBuild(DeviceSpec),
    /// burn fixes a device's float type with its first tensor, for the whole process.
    #[error(
        "device {spec} already computes in {fixed} in this process, not {wanted}; fix: give every stage on {spec} the same `bf16` setting"
    )]
    Precision {
        spec: DeviceSpec,
        fixed: String,
        wanted: String,
    },
}

/// A parsed device name: `"cpu"`, `"cuda"` (device 0) or `"cuda:N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        match text {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(other.to_owned())),
        }
    }

    /// The float type computations use on this device when `bf16` is requested or not. The CPU
    /// backend always computes in f32: burn-flex has no fast bf16 matmul.
    pub fn dtype(self, bf16: bool) -> &'static str {
        match (self, bf16) {
            (DeviceSpec::Cuda(_), true) => "bf16",
            _ => "f32",
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Where compiled GPU kernels and autotune results are kept, under tigerflow's cache directory.
pub fn gpu_cache_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("cubecl")
}

/// Prepares the CUDA runtime once per process, before its first kernel: a failed operation on
/// one of burn's device threads is kept for [`crate::failure::check`], and compiled kernels and
/// autotune results are cached under [`gpu_cache_dir`] of `cache_dir`.
#[cfg(feature = "cuda")]
pub fn configure_cuda(cache_dir: &Path) {
    crate::failure::watch();
    tigerflow_cuda::configure(&gpu_cache_dir(cache_dir));
}

/// Device memory held by burn's allocator on `spec` (see `tigerflow_cuda::reserved_bytes`); `None` on the
/// CPU, where the process's resident size is the figure to look at.
pub fn reserved_bytes(spec: DeviceSpec) -> Option<u64> {
    match spec {
        DeviceSpec::Cpu => None,
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => tigerflow_cuda::reserved_bytes(index),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => None,
    }
}

/// Work that runs on whichever backend [`run_on`] picks.
pub trait OnBackend {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on `spec`, in bf16 where the device supports it and `bf16` is set. CUDA kernels
/// and autotune results are cached under `cache_dir` (see [`configure_cuda`]). Fails with a one-line
/// message when the device needs a feature this build lacks.
pub fn run_on<T: OnBackend>(
    spec: DeviceSpec,
    bf16: bool,
    cache_dir: &Path,
    task: T,
) -> Result<T::Output, DeviceError> {
    match spec {
        DeviceSpec::Cpu => {
            let _ = (bf16, cache_dir);
            Ok(task.run::<crate::backend::CpuBackend>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => {
            use crate::backend::{CudaBackend, bf16 as Bf16};
            configure_cuda(cache_dir);
            let device = burn::backend::cuda::CudaDevice::new(index);
            if bf16 {
                same_precision::<CudaBackend<Bf16>>(spec, &device)?;
                Ok(task.run::<CudaBackend<Bf16>>(device))
            } else {
                same_precision::<CudaBackend<f32>>(spec, &device)?;
                Ok(task.run::<CudaBackend<f32>>(device))
            }
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(DeviceError::NeedsCudaBuild(spec)),
    }
}

/// burn fixes a device's float type with its first tensor, for the whole process: a second task
/// asking for another precision on the same device would silently get the first one's.
#[cfg(feature = "cuda")]
fn same_precision<B: Backend>(spec: DeviceSpec, device: &B::Device) -> Result<(), DeviceError> {
    use burn::tensor::{DType, Element, get_device_settings};
    let wanted = <B::FloatElem as Element>::dtype();
    let fixed: DType = get_device_settings::<B>(device).float_dtype.into();
    if wanted == fixed {
        Ok(())
    } else {
        Err(DeviceError::Precision {
            spec,
            fixed: format!("{fixed:?}"),
            wanted: format!("{wanted:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert!(
            DeviceSpec::parse("gpu")
                .unwrap_err()
                .to_string()
                .contains("cuda:N")
        );
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
    }

    #[test]
    fn cpu_computes_in_f32_even_when_bf16_is_asked() {
        assert_eq!(DeviceSpec::Cpu.dtype(true), "f32");
        assert_eq!(DeviceSpec::Cuda(0).dtype(true), "bf16");
        assert_eq!(DeviceSpec::Cuda(0).dtype(false), "f32");
    }

    struct Name;
    impl OnBackend for Name {
        type Output = String;
        fn run<B: Backend>(self, device: B::Device) -> String {
            B::name(&device)
        }
    }

    #[test]
    fn runs_a_task_on_the_cpu() {
        let name = run_on(DeviceSpec::Cpu, true, Path::new("."), Name).unwrap();
        assert!(!name.is_empty());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = run_on(DeviceSpec::Cuda(1), true, Path::new("."), Name)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cuda:1") && err.contains("--features cuda"),
            "{err}"
        );
    }
}
