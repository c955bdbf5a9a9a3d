//! tigerflow's own CUDA operations, for the places where burn's generic kernels cost the most
//! (BENCHMARKS.md, "The fast GPU path"). Each is a custom operation on burn's CUDA backend with a
//! hand-written backward pass; the plain burn implementation next to its caller is the
//! reference it is tested against.
//!
//! tigerflow's own attention kernels are launched by cubecl in order with burn's
//! (`source_kernel`). cuBLAS, the NF4 kernel beside it and the optimizer's device copies run on a
//! stream of tigerflow's own, since cubecl does not expose its streams; the two streams are
//! ordered through flags in device memory, not by the host waiting (see `bridge`). Each such
//! operation still leaves the GPU idle for a few microseconds while the streams hand over, which
//! is why those operations are coarse (every projection reading one input, base and adapter
//! products together; every adapter tensor in one gather).

mod bridge;
mod concat;
mod flash_attention;
mod gemm;
mod kernels;
mod lora_linear;
mod source_kernel;

pub use concat::concat_flat;
pub use flash_attention::flash_attention;
pub use kernels::{HEAD_DIMS, flash_kernels, set_ptx_cache};
pub use lora_linear::{MIN_MACS, lora_linears};

/// Whether cuBLAS loads on CUDA device `ordinal` (starting it there on first use).
pub fn has_cublas(ordinal: usize) -> bool {
    gemm::blas(ordinal).is_some()
}
