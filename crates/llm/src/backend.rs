//! The burn backends tigerflow runs on. Everything else is generic over `Backend`; these aliases
//! and `device::run_on` are the one place where a concrete backend is chosen.

/// The CPU backend: burn-flex (pure Rust, SIMD matmul and attention). See docs/architecture.md,
/// "The CPU backend: burn-flex", for the measurement behind the choice.
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend computing in `F` (`f32` or [`bf16`]), behind the `cuda` feature.
#[cfg(feature = "cuda")]
pub type CudaBackend<F = f32> = burn::backend::Cuda<F, i32>;

#[cfg(feature = "cuda")]
pub use burn::tensor::bf16;

/// Re-exported so that crates choosing a backend need no direct burn dependency.
pub use burn::tensor::backend::Backend;
