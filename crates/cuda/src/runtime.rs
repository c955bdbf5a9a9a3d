//! The CUDA runtime's settings, made once per process before the first kernel runs.
//!
//! burn's CUDA backend (cubecl) compiles every kernel with NVRTC on first use and autotunes each
//! new matmul shape by compiling and timing candidate kernels; a cold training step of a small
//! model spends minutes there. cubecl can keep both the compiled kernels and the autotune results
//! on disk, but by default it caches neither kernels nor (outside a cargo project) autotune
//! results anywhere a user would look. tigerflow keeps both under its own cache directory, so
//! that the second run of a pipeline starts in seconds and `rm -r` of one folder resets it.

use std::path::Path;
use std::sync::Once;

use cubecl::Runtime;
use cubecl::config::{
    CubeClRuntimeConfig, RuntimeConfig, autotune::AutotuneLevel, cache::CacheConfig,
};
use cubecl::cuda::{CudaDevice, CudaRuntime};

/// The autotune level when neither `CUBECL_AUTOTUNE_LEVEL` nor a `cubecl.toml` says otherwise.
/// `minimal` tries the fewest candidate kernels per new matmul shape; even so a cold first step
/// compiles for minutes (docs/perf-log.md, "Training on a GPU", start-up). Other levels only compile
/// more and were not measured.
const AUTOTUNE_LEVEL: AutotuneLevel = AutotuneLevel::Minimal;

/// Sets cubecl's global configuration once, keeping every cache under `root`: a `cubecl.toml`
/// found from the current directory upward is honoured, then tigerflow fills in the kernel
/// cache, the autotune cache and the autotune level where that file left cubecl's defaults,
/// then `CUBECL_*` environment variables apply on top.
pub fn configure(root: &Path) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        crate::set_ptx_cache(root.join("tigerflow"));
        let mut config = CubeClRuntimeConfig::from_current_dir();
        if config.compilation.cache.is_none() {
            config.compilation.cache = Some(CacheConfig::File(root.join("kernels")));
        }
        if matches!(config.autotune.cache, CacheConfig::Target) {
            config.autotune.cache = CacheConfig::File(root.join("autotune"));
        }
        if matches!(config.autotune.level, AutotuneLevel::Balanced) {
            config.autotune.level = AUTOTUNE_LEVEL;
        }
        CubeClRuntimeConfig::set(config.override_from_env());
    });
}

/// Bytes of device memory that burn's allocator holds on `index` (for this thread's stream).
/// The allocator keeps what it reserved, so read after a few steps this is the peak reserved,
/// the figure to compare with `torch.cuda.max_memory_reserved()`.
pub fn reserved_bytes(index: usize) -> Option<u64> {
    CudaRuntime::client(&CudaDevice::new(index))
        .memory_usage()
        .ok()
        .map(|usage| usage.bytes_reserved)
}

/// Whether the flash-attention kernels serve bf16 attention with `head_dim` on CUDA device
/// `index` (cubecl compiles them on first launch).
pub fn has_flash_attention(index: usize, head_dim: usize) -> bool {
    crate::gpu::Gpu::of(index).flash(head_dim).is_some()
}

/// Whether the kernels of RMSNorm, rotary embeddings and SwiGLU serve bf16 tensors on CUDA
/// device `index` (cubecl compiles them on first launch).
pub fn has_layer_kernels(index: usize) -> bool {
    crate::gpu::Gpu::of(index).layer().is_some()
}

/// Whether the cross-entropy kernels serve bf16 logits on CUDA device `index`.
pub fn has_loss_kernels(index: usize) -> bool {
    crate::gpu::Gpu::of(index).loss().is_some()
}

/// Whether cuBLAS loads and serves the projections' products on CUDA device `index`.
pub fn has_cublas(index: usize) -> bool {
    crate::gpu::Gpu::of(index).blas().is_some()
}

/// The multiply-adds (`rows · in · Σ out`) from which projections that share an input take
/// cuBLAS; smaller ones stay on burn's matmul.
pub const CUBLAS_MIN_MACS: usize = crate::lora_linear::MIN_MACS;

/// Runs `f` with the projections computed on this thread taking cuBLAS whatever their size
/// (where the operation serves them at all: bf16 on an Ampere or newer device).
///
/// For tests: a model small enough for a test has products far below [`CUBLAS_MIN_MACS`], so it
/// would train through burn's matmul, not the operation every real model trains through, and
/// burn autotunes each of its many small shapes and layouts on a cold kernel cache (the tiny
/// model's training check compiled 585 kernels for 69 matmul shapes and layouts in about 17
/// minutes and was not done; docs/perf-log.md, "The operations in burn-fusion's queue").
pub fn with_every_projection_on_cublas<R>(f: impl FnOnce() -> R) -> R {
    crate::lora_linear::with_every_projection(f)
}

/// Whether NCCL's library loads (cudarc panics on its first call when it does not, so callers
/// ask first to fail with a one-line error).
pub fn nccl_loads() -> bool {
    // SAFETY: only tries to open the library by its usual names; nothing is called in it.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}
