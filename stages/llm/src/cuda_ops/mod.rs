//! tigerflow's own CUDA operations, for the places where burn's generic kernels cost the most
//! (BENCHMARKS.md, "The fast GPU path"). Each is a custom operation on burn's CUDA backend with a
//! hand-written backward pass; the plain burn implementation next to its caller is the
//! reference it is tested against.
//!
//! The kernels run on a stream of tigerflow's own: cubecl does not expose its streams, so every
//! operation waits for burn's queued work before it starts and for its own work before it
//! returns (see `bridge`). Counting the host and GPU work that no longer overlap, that cost
//! 0.5–1 ms per call on an H100, which is why the operations are coarse (a whole attention, not
//! a single product; every projection reading one input, base and adapter products together;
//! every adapter tensor in one gather).

mod bridge;
mod concat;
mod flash_attention;
mod gemm;
mod kernels;
mod lora_linear;

pub use concat::concat_flat;
pub use flash_attention::flash_attention;
pub use kernels::{HEAD_DIMS, flash_kernels, set_ptx_cache};
pub use lora_linear::{MIN_MACS, lora_linears};

/// Whether cuBLAS loads on CUDA device `ordinal` (starting it there on first use).
pub fn has_cublas(ordinal: usize) -> bool {
    gemm::blas(ordinal).is_some()
}
