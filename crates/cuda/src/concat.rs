//! Many small tensors into one vector with one device-to-device copy each, queued on
//! tigerflow's stream in one ordered launch (`bridge::launch_ordered`). burn's `cat` runs one
//! kernel per part through burn-fusion; the optimizer concatenates every adapter tensor's
//! gradient (448 at 7B) once per step, which made it 3–4× slower than PyTorch's (docs/perf-log.md,
//! "The fast GPU path").

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_cubecl::kernel::into_contiguous;
use cudarc::driver::result::memcpy_dtod_async;

use crate::bridge::{
    CudaTensor, Fused, FusedTensor, empty, launch_ordered, primitive, queue_all, same, tensor,
};
use crate::gpu::Gpu;

/// `tensors` flattened and concatenated, by copies on the bf16 CUDA backend; on any other
/// backend, or for parts of different dtypes, the tensors come back untouched.
pub fn concat_flat<B: Backend>(
    tensors: Vec<Tensor<B, 2>>,
) -> Result<Tensor<B, 1>, Vec<Tensor<B, 2>>> {
    let Some(first) = tensors.first() else {
        return Err(tensors);
    };
    let dtype = first.dtype();
    if tensors.iter().any(|t| t.dtype() != dtype) {
        return Err(tensors);
    }
    let parts: Vec<FusedTensor> = same::<_, Vec<Tensor<Fused, 2>>>(tensors)?
        .into_iter()
        .map(primitive)
        .collect();
    let elements = parts.iter().map(|p| p.shape.num_elements()).sum::<usize>();
    let spec = vec![([elements].into(), dtype)];
    let out = queue_all("concat_flat", parts, spec, move |parts| {
        let parts: Vec<CudaTensor> = parts.into_iter().map(into_contiguous).collect();
        let out = empty(&parts[0], [elements], dtype);
        let stream = Gpu::of(out.device.index).stream().clone();
        let mut tensors: Vec<&CudaTensor> = parts.iter().collect();
        tensors.push(&out);
        launch_ordered(&stream, &tensors, |addresses| {
            let (destination, sources) = addresses.split_last().expect("the output is last");
            let mut offset = 0;
            for (part, &source) in parts.iter().zip(sources) {
                let bytes = part.meta.shape().num_elements() * dtype.size();
                // SAFETY: both ranges lie inside live buffers: `source` holds `bytes`, and the
                // output was allocated for the sum of every part's bytes.
                unsafe {
                    memcpy_dtod_async(destination + offset, source, bytes, stream.cu_stream())?
                };
                offset += bytes as u64;
            }
            Ok(())
        });
        vec![out]
    })
    .pop()
    .expect("the vector queued");
    Ok(same(tensor::<1>(out)).unwrap_or_else(|_| unreachable!("B is Fused")))
}
