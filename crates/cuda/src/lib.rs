//! tigerflow's own CUDA operations, for the places where burn's generic kernels cost the most
//! (docs/perf-log.md, "The fast GPU path"). Each is a custom operation on burn's CUDA backend with a
//! hand-written backward pass; the plain burn implementation next to its caller in
//! `tigerflow-llm` is the reference it is tested against (`tests/`, on a GPU).
//!
//! Every operation takes burn tensors of any backend and returns its inputs untouched when it
//! does not serve them (another backend, another dtype, a device without the kernels), so the
//! caller falls back to burn's operations: `match tigerflow_cuda::rms_norm(x, w, eps) { Ok(y) =>
//! y, Err((x, w)) => reference(x, w, eps) }`.
//!
//! The crate is empty without its `cuda` feature, so that a CPU-only workspace build does not
//! compile cubecl's CUDA runtime.
//!
//! Every operation is queued in burn-fusion's queue (`bridge::queue`) and runs on its device
//! thread, so the thread that builds the model's graph never waits for a buffer.
//!
//! tigerflow's own attention kernels, those of the small operations around the projections
//! (RMSNorm, rotary embeddings, SwiGLU, dropout) and the cross-entropy's are launched by cubecl in order with burn's
//! (`source_kernel`). cuBLAS, the NF4 kernel beside it and the optimizer's device copies run on a
//! stream of tigerflow's own, since cubecl does not expose its streams; the two streams are
//! ordered through flags in device memory, not by the host waiting (see `bridge`). Each such
//! operation still leaves the GPU idle for a few microseconds while the streams hand over, which
//! is why those operations are coarse (every projection reading one input, base and adapter
//! products together; every adapter tensor in one gather).

#![cfg(feature = "cuda")]
// The one crate with unsafe code: raw device memory, kernel launches, cuBLAS and driver calls.
// Each unsafe function states its contract (`# Safety`), each unsafe block why it holds.
#![allow(unsafe_code)]

mod bridge;
mod concat;
mod cross_entropy;
mod dropout;
mod flash_attention;
mod gemm;
mod gpu;
mod kernels;
mod lora_linear;
mod rms_norm;
mod rotary;
mod runtime;
mod source_kernel;
mod swiglu;

pub use concat::concat_flat;
pub use cross_entropy::nll_sum;
pub use dropout::{dropout, seed_dropout};
pub use flash_attention::flash_attention;
use kernels::set_ptx_cache;
pub use lora_linear::{FrozenWeight, LoraOperands, Projection, lora_linears};
pub use rms_norm::rms_norm;
pub use rotary::rotary;
pub use runtime::{
    CUBLAS_MIN_MACS, configure, has_cublas, has_flash_attention, has_layer_kernels,
    has_loss_kernels, nccl_loads, reserved_bytes, with_every_projection_on_cublas,
};
pub use swiglu::swiglu;
