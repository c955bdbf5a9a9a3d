//! Between burn's tensors and raw CUDA memory: the backend types a custom operation serves,
//! the conversions through burn-fusion's layer, and the host synchronisation that orders a
//! launch on tigerflow's stream after burn's work and before burn reads the result.

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::stream::OperationStreams;
use burn_fusion::{FusionTensor, NoOp};
use burn_ir::BackendIr;
use burn_ir::{InitOperationIr, OperationIr};
use cubecl::cuda::CudaRuntime;
use cubecl::future::block_on;
use cudarc::driver::CudaStream;

use crate::backend::{CudaBackend, bf16};

/// The CUDA backend below burn-fusion, where tensors are buffers.
pub type Cube = CubeBackend<CudaRuntime, bf16, i32, u8>;
/// The bf16 CUDA backend tigerflow computes with (burn-fusion over [`Cube`]).
pub type Fused = CudaBackend<bf16>;
/// [`Fused`] with gradients, as training uses it.
pub type Trained = Autodiff<Fused>;

pub type CudaTensor = CubeTensor<CudaRuntime>;
type FusedTensor = FusionTensor<FusionCubeRuntime<CudaRuntime>>;

/// `value` as a `T` when `A` is `T`, else `value` back: how a function generic over the backend
/// reaches the one backend a custom operation exists for.
pub fn same<A: 'static, T: 'static>(value: A) -> Result<T, A> {
    if TypeId::of::<A>() != TypeId::of::<T>() {
        return Err(value);
    }
    let boxed: Box<dyn Any> = Box::new(value);
    Ok(*boxed.downcast::<T>().expect("the type ids are equal"))
}

/// The CUDA ordinal of a device of the bf16 CUDA backend (with or without autodiff).
pub fn ordinal<D: 'static>(device: &D) -> Option<usize> {
    let device: &dyn Any = device;
    device
        .downcast_ref::<cubecl::cuda::CudaDevice>()
        .map(|d| d.index)
}

/// The contiguous buffer behind a fused float tensor (running whatever fusion still queues for it).
pub fn cube_float(tensor: FusedTensor) -> CudaTensor {
    let client = tensor.client.clone();
    into_contiguous(client.resolve_tensor_float::<Cube>(tensor))
}

/// The contiguous buffer behind a fused int tensor.
pub fn cube_int(tensor: FusedTensor) -> CudaTensor {
    let client = tensor.client.clone();
    into_contiguous(client.resolve_tensor_int::<Cube>(tensor))
}

/// Hands a buffer back to burn-fusion as a new tensor.
pub fn fused(tensor: CudaTensor) -> FusedTensor {
    let client = burn_fusion::get_client::<Cube>(&tensor.device);
    let shape = tensor.meta.shape().clone();
    let dtype = tensor.dtype;
    let handle = <Cube as BackendIr>::float_tensor_handle(tensor);
    let init = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
    client
        .register(
            OperationStreams::default(),
            OperationIr::Init(init),
            NoOp::<Cube>::new(),
        )
        .remove(0)
}

/// A new uninitialised contiguous tensor on `like`'s device.
pub fn empty(like: &CudaTensor, shape: impl Into<Shape>, dtype: DType) -> CudaTensor {
    let shape = shape.into();
    let handle = like.client.empty(shape.num_elements() * dtype.size());
    CudaTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        dtype,
    )
}

/// Runs `launch` with the device addresses of `tensors` (contiguous), on `stream`, after every
/// operation burn has queued and before anything burn queues next.
///
/// cubecl computes on private non-blocking streams; without this, a kernel on another stream
/// read stale inputs in a prototype (cuBLAS on burn's buffers). The resources stay borrowed
/// until the kernels are done, so burn cannot reuse their memory meanwhile.
pub fn launch_ordered(
    stream: &CudaStream,
    tensors: &[&CudaTensor],
    launch: impl FnOnce(&[u64]) -> Result<(), Box<dyn std::error::Error>>,
) {
    let client = &tensors[0].client;
    let resources: Vec<_> = tensors
        .iter()
        .map(|t| {
            client
                .get_resource(t.handle.clone())
                .expect("a live tensor's buffer is resident")
        })
        .collect();
    let addresses: Vec<u64> = resources.iter().map(|r| r.resource().ptr).collect();
    block_on(client.sync()).expect("burn's queued GPU work failed");
    // cuBLAS calls, unlike cudarc's launches, use whatever context the thread has current.
    stream
        .context()
        .bind_to_thread()
        .expect("cubecl already opened this CUDA device");
    launch(&addresses)
        .unwrap_or_else(|e| panic!("launching a tigerflow CUDA operation failed: {e}"));
    stream
        .synchronize()
        .expect("a tigerflow CUDA operation failed");
    drop(resources);
}
