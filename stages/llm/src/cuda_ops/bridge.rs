//! Between burn's tensors and raw CUDA memory: the backend types a custom operation serves,
//! the conversions through burn-fusion's layer, and the join that orders a launch on
//! tigerflow's stream after burn's work and before burn reads the result.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

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
use cudarc::driver::CudaStream;
use cudarc::driver::result::{malloc_sync, memset_d8_sync};
use cudarc::driver::sys::{
    CUresult, CUstreamWaitValue_flags, CUstreamWriteValue_flags, cuStreamWaitValue32_v2,
    cuStreamWriteValue32_v2,
};

use super::kernels::join_kernels;
use super::source_kernel::{Scalar, launch as launch_in_stream};
use crate::backend::{CudaBackend, bf16};

/// The CUDA backend below burn-fusion, where tensors are buffers.
pub type Cube = CubeBackend<CudaRuntime, bf16, i32, u8>;
/// The bf16 CUDA backend tigerflow computes with (burn-fusion over [`Cube`]).
pub type Fused = CudaBackend<bf16>;
/// [`Fused`] with gradients, as training uses it.
pub type Trained = Autodiff<Fused>;

pub type CudaTensor = CubeTensor<CudaRuntime>;
/// cubecl's handle on one CUDA device, through which kernels are queued on burn's stream.
pub type Client = cubecl::client::ComputeClient<CudaRuntime>;
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
    into_contiguous(cube_float_strided(tensor))
}

/// The buffer behind a fused float tensor with whatever strides it has: for the operations that
/// read a layout other than burn's contiguous one without a copy.
pub fn cube_float_strided(tensor: FusedTensor) -> CudaTensor {
    let client = tensor.client.clone();
    client.resolve_tensor_float::<Cube>(tensor)
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

/// Runs `launch` with the device addresses of `tensors` (contiguous) on `stream`, ordered after
/// every operation burn has queued and before anything burn queues next, without the host
/// waiting for either.
///
/// cubecl computes on private non-blocking streams; without ordering, a kernel on another stream
/// read stale inputs in a prototype (cuBLAS on burn's buffers). The two streams meet through
/// flags in device memory (`kernels/stream_join.cu`): a kernel on burn's stream raises `ready`,
/// tigerflow's stream waits for it, runs the work and raises `done`, and a kernel on burn's
/// stream holds it until then. The host used to wait twice per operation instead, which cost
/// 0.5–1 ms per call on an H100. The buffers stay valid throughout: burn reuses freed memory
/// only for work it queues later on its stream, which runs after `done`.
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
    // cuBLAS calls, unlike cudarc's launches, use whatever context the thread has current.
    stream
        .context()
        .bind_to_thread()
        .expect("cubecl already opened this CUDA device");
    let (flags, n) = next_join(tensors[0].device.index);
    let (ready, done) = (flags, flags + 4);
    let kernels = join_kernels();
    let flag = |address: u64| [Scalar::U64(address), Scalar::U32(n)];
    launch_in_stream(client, kernels.signal.clone(), (1, 1, 1), &[], &flag(ready));
    // cubecl keeps launches in a host-side queue until something flushes it. The signal must
    // reach the GPU now: tigerflow's stream is about to wait for it, and any CUDA call below that
    // synchronises the device would otherwise wait forever on a kernel still in that queue (the
    // first build of this join hung so at its first step, host spinning, GPU idle).
    client
        .flush()
        .unwrap_or_else(|e| panic!("burn's CUDA stream failed: {e:?}"));
    let checked = |result: CUresult| {
        result
            .result()
            .unwrap_or_else(|e| panic!("ordering tigerflow's CUDA stream after burn's: {e}"))
    };
    // SAFETY: `ready` and `done` lie in a live allocation of this device's context (`next_join`),
    // and `stream` belongs to that context.
    unsafe {
        checked(cuStreamWaitValue32_v2(
            stream.cu_stream(),
            ready,
            n,
            CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32,
        ));
    }
    launch(&addresses)
        .unwrap_or_else(|e| panic!("launching a tigerflow CUDA operation failed: {e}"));
    // SAFETY: as above.
    unsafe {
        checked(cuStreamWriteValue32_v2(
            stream.cu_stream(),
            done,
            n,
            CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32,
        ));
    }
    launch_in_stream(client, kernels.wait.clone(), (1, 1, 1), &[], &flag(done));
    drop(resources);
}

/// The device address of this thread's two join flags on CUDA device `ordinal` (`ready`, then
/// `done` 4 bytes on) and the next sequence number. Per thread, because each thread computes on
/// its own cubecl stream; the flags are never freed, since work queued on the GPU may still read
/// them when the thread ends.
fn next_join(ordinal: usize) -> (u64, u32) {
    thread_local! {
        static JOINS: RefCell<HashMap<usize, (u64, u32)>> = RefCell::default();
    }
    JOINS.with_borrow_mut(|joins| {
        let (flags, last) = joins.entry(ordinal).or_insert_with(|| {
            // SAFETY: a plain device allocation on the thread's current context (the device's,
            // bound by the caller), zeroed before any operation reads it.
            let flags = unsafe {
                let flags = malloc_sync(8).expect("allocating 8 bytes of device memory");
                memset_d8_sync(flags, 0, 8).expect("zeroing the join flags");
                flags
            };
            (flags, 0)
        });
        *last = last.wrapping_add(1);
        (*flags, *last)
    })
}
