//! tigerflow's CUDA kernels. The flash-attention and stream-join kernels are launched by cubecl
//! on burn's stream (`source_kernel`), which compiles them and keeps their PTX in burn's kernel
//! cache. The NF4 kernel runs on tigerflow's stream beside cuBLAS: it is compiled with NVRTC here once per GPU
//! architecture, the PTX kept on disk next to burn's kernel cache, so a second process starts
//! without compiling.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use sha2::{Digest, Sha256};

use crate::bridge::CudaTensor;
use crate::gpu::Gpu;
use crate::source_kernel::{Program, SourceKernel};

/// The flash-attention source: four kernels, `HEAD_DIM` set when compiling.
const FLASH_ATTENTION: &str = include_str!("flash_attention.cu");
/// The NF4 dequantization source: one kernel.
const NF4: &str = include_str!("nf4.cu");
/// The two one-thread kernels that order tigerflow's stream with burn's.
const STREAM_JOIN: &str = include_str!("stream_join.cu");
/// RMSNorm, rotary embeddings and SwiGLU, forward and backward: six kernels.
const LAYER_OPS: &str = include_str!("layer_ops.cu");
/// The cross-entropy's three kernels.
const CROSS_ENTROPY: &str = include_str!("cross_entropy.cu");

/// Threads per block of `nf4_dequantize` (`NF4_THREADS` in the source).
pub(crate) const NF4_THREADS: u32 = 256;

/// Threads per block of every flash-attention kernel (four warps).
pub(crate) const THREADS: u32 = 128;
/// Queries per forward block and keys per backward block.
pub(crate) const TILE: usize = 64;
/// Rows of `delta` per block of `flash_bwd_delta` (eight threads per row).
pub(crate) const DELTA_ROWS_PER_BLOCK: usize = 16;
/// Elements per block of `flash_bwd_dq`.
pub(crate) const DQ_ELEMENTS_PER_BLOCK: usize = 1024;

/// Dynamic shared memory of the forward kernel: two stages of K and V tiles in bf16 and the
/// keys' segment ids (`FWD_SMEM_BYTES` in the source).
pub(crate) fn forward_shared_bytes(head_dim: usize) -> u32 {
    (4 * TILE * head_dim * 2 + 2 * TILE * 4) as u32
}

/// Dynamic shared memory of the backward kernel: K, V, Q and dO tiles in bf16, the dSᵀ tile
/// and three per-query f32 vectors (`BWD_SMEM_BYTES` in the source).
pub(crate) fn backward_shared_bytes(head_dim: usize) -> u32 {
    (4 * TILE * head_dim * 2 + TILE * TILE * 2 + 3 * TILE * 4) as u32
}

/// The flash-attention kernels for one head dimension.
pub(crate) struct FlashKernels {
    pub forward: SourceKernel,
    pub delta: SourceKernel,
    pub backward: SourceKernel,
    pub dq: SourceKernel,
}

impl FlashKernels {
    /// The kernels for `head_dim` (one of [`HEAD_DIMS`]), which cubecl compiles on first launch.
    pub(crate) fn new(head_dim: usize) -> Self {
        let program = Program::new(FLASH_ATTENTION, &[("HEAD_DIM", head_dim)]);
        let kernel = |entry, shared| SourceKernel {
            program: program.clone(),
            entry,
            threads: THREADS,
            shared_bytes: shared as usize,
        };
        FlashKernels {
            forward: kernel("flash_fwd", forward_shared_bytes(head_dim)),
            delta: kernel("flash_bwd_delta", 0),
            backward: kernel("flash_bwd", backward_shared_bytes(head_dim)),
            dq: kernel("flash_bwd_dq", 0),
        }
    }
}

/// Head dimensions the kernels are written for.
pub(crate) const HEAD_DIMS: [usize; 2] = [64, 128];

static PTX_CACHE: OnceLock<PathBuf> = OnceLock::new();

/// Where compiled PTX is kept (set once by [`crate::configure`]); without it kernels are compiled
/// in every process.
pub(crate) fn set_ptx_cache(dir: PathBuf) {
    let _ = PTX_CACHE.set(dir);
}

/// The kernels on burn's stream around an operation on tigerflow's stream: `join_signal` before
/// it, `join_wait` after it (see `bridge::launch_ordered`).
pub(crate) struct JoinKernels {
    pub signal: SourceKernel,
    pub wait: SourceKernel,
}

impl JoinKernels {
    /// The stream-join kernels, which cubecl compiles on first launch.
    pub(crate) fn new() -> Self {
        let program = Program::new(STREAM_JOIN, &[]);
        let kernel = |entry| SourceKernel {
            program: program.clone(),
            entry,
            threads: 1,
            shared_bytes: 0,
        };
        JoinKernels {
            signal: kernel("join_signal"),
            wait: kernel("join_wait"),
        }
    }
}

/// Threads per block of every kernel in `layer_ops.cu` and `cross_entropy.cu` (`THREADS`
/// there).
pub(crate) const LAYER_THREADS: u32 = 256;

/// One entry of a source whose kernels all run [`LAYER_THREADS`] threads and no dynamic shared
/// memory.
fn plain_kernel(program: &Arc<Program>, entry: &'static str) -> SourceKernel {
    SourceKernel {
        program: program.clone(),
        entry,
        threads: LAYER_THREADS,
        shared_bytes: 0,
    }
}

/// The kernels around a decoder layer's projections (`layer_ops.cu`).
pub(crate) struct LayerKernels {
    pub rms_norm_fwd: SourceKernel,
    pub rms_norm_bwd: SourceKernel,
    pub rotary_fwd: SourceKernel,
    pub rotary_bwd: SourceKernel,
    pub swiglu_fwd: SourceKernel,
    pub swiglu_bwd: SourceKernel,
    pub dropout: SourceKernel,
}

impl LayerKernels {
    /// The layer kernels of `t`'s device, for an operation whose `supported` check found them
    /// there.
    pub(crate) fn of(t: &CudaTensor) -> &'static Self {
        Gpu::of(t.device.index)
            .layer()
            .expect("checked by `supported`")
    }

    /// The layer kernels, which cubecl compiles on first launch.
    pub(crate) fn new() -> Self {
        let program = Program::new(LAYER_OPS, &[]);
        let kernel = |entry| plain_kernel(&program, entry);
        LayerKernels {
            rms_norm_fwd: kernel("rms_norm_fwd"),
            rms_norm_bwd: kernel("rms_norm_bwd"),
            rotary_fwd: kernel("rotary_fwd"),
            rotary_bwd: kernel("rotary_bwd"),
            swiglu_fwd: kernel("swiglu_fwd"),
            swiglu_bwd: kernel("swiglu_bwd"),
            dropout: kernel("dropout"),
        }
    }
}

/// The cross-entropy kernels (`cross_entropy.cu`).
pub(crate) struct LossKernels {
    pub forward: SourceKernel,
    pub sum: SourceKernel,
    pub backward: SourceKernel,
}

impl LossKernels {
    /// The cross-entropy kernels, which cubecl compiles on first launch.
    pub(crate) fn new() -> Self {
        let program = Program::new(CROSS_ENTROPY, &[]);
        LossKernels {
            forward: plain_kernel(&program, "ce_fwd"),
            sum: plain_kernel(&program, "ce_sum"),
            backward: plain_kernel(&program, "ce_bwd"),
        }
    }
}

/// The NF4 dequantization kernel, compiled for `arch` (or read from the PTX cache) and loaded
/// into `context`.
pub(crate) fn nf4_kernel(context: &Arc<CudaContext>, arch: &str) -> CudaFunction {
    context
        .load_module(ptx(NF4, arch))
        .and_then(|module| module.load_function("nf4_dequantize"))
        .unwrap_or_else(|e| panic!("loading the NF4 kernel for {arch}: {e}"))
}

/// PTX for `source` on `arch`, from the disk cache when present.
fn ptx(source: &str, arch: &str) -> Ptx {
    let options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    let cached = PTX_CACHE.get().map(|dir| cache_file(dir, source, &options));
    if let Some(text) = cached
        .as_deref()
        .and_then(|f| std::fs::read_to_string(f).ok())
    {
        return Ptx::from_src(text);
    }
    let compiled = compile_ptx_with_opts(
        source,
        CompileOptions {
            options,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("NVRTC could not compile tigerflow's kernels for {arch}: {e}"));
    if let Some(file) = cached {
        // A cache that cannot be written only costs the next process a compilation.
        let _ = std::fs::create_dir_all(file.parent().expect("a file in a folder"))
            .and_then(|()| std::fs::write(&file, compiled.to_src()));
    }
    compiled
}

/// The cache file of one compilation: named after the source and every option.
fn cache_file(dir: &Path, source: &str, options: &[String]) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(source);
    for option in options {
        hash.update([0]);
        hash.update(option);
    }
    let digest: String = hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("{digest}.ptx"))
}
