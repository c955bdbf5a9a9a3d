//! The burn backends tigerflow runs on. Everything else is generic over `Backend`; these aliases
//! are the one place where a concrete backend is chosen.

/// The CPU backend: burn-flex (pure Rust, SIMD matmul and attention). See the README section
/// "models, generation" for the measurement behind the choice.
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend (f32 compute), behind the `cuda` feature.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;

/// Re-exported so that crates choosing a backend need no direct burn dependency.
pub use burn::tensor::backend::Backend;
