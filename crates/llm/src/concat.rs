//! Flattening and concatenating many tensors into one vector (the optimizer's gather).

use burn::tensor::{Tensor, backend::Backend};

/// `tensors`, each flattened row-major, one after the other. On the bf16 CUDA backend a custom
/// operation copies them (`tigerflow_cuda::concat_flat`); elsewhere it is burn's `cat`.
pub fn concat_flat<B: Backend>(tensors: Vec<Tensor<B, 2>>) -> Tensor<B, 1> {
    #[cfg(feature = "cuda")]
    let tensors = match tigerflow_cuda::concat_flat(tensors) {
        Ok(flat) => return flat,
        Err(tensors) => tensors,
    };
    Tensor::cat(
        tensors.into_iter().map(|t| t.flatten::<1>(0, 1)).collect(),
        0,
    )
}
