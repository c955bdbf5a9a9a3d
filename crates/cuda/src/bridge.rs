//! Between burn's tensors and raw CUDA memory: the backend types a custom operation serves,
//! the queue through which an operation runs on burn-fusion's device thread, in order with
//! burn's, on the buffers of its tensors ([`queue`]), and the join that orders a launch on
//! tigerflow's stream after burn's work and before burn reads the result.

use std::any::{Any, TypeId};
use std::fmt;

use burn::backend::Autodiff;
use burn::backend::Cuda;
use burn::tensor::bf16;
use burn::tensor::{DType, Shape};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_cubecl::CubeBackend;
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionHandle, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use cubecl::cuda::CudaRuntime;
use cudarc::driver::CudaStream;
use cudarc::driver::sys::{
    CUresult, CUstreamWaitValue_flags, CUstreamWriteValue_flags, cuStreamWaitValue32_v2,
    cuStreamWriteValue32_v2,
};

use crate::gpu::Gpu;
use crate::source_kernel::{Scalar, launch as launch_in_stream};

/// The CUDA backend below burn-fusion, where tensors are buffers.
pub(crate) type Cube = CubeBackend<CudaRuntime, bf16, i32, u8>;
/// The bf16 CUDA backend tigerflow computes with (burn-fusion over [`Cube`]).
pub(crate) type Fused = Cuda<bf16, i32>;
/// [`Fused`] with gradients, as training uses it.
pub(crate) type Trained = Autodiff<Fused>;

pub(crate) type CudaTensor = CubeTensor<CudaRuntime>;
/// cubecl's handle on one CUDA device, through which kernels are queued on burn's stream.
pub(crate) type Client = cubecl::client::ComputeClient<CudaRuntime>;
pub(crate) type FusedTensor = FusionTensor<FusionCubeRuntime<CudaRuntime>>;

/// `value` as a `T` when `A` is `T`, else `value` back: how a function generic over the backend
/// reaches the one backend a custom operation exists for.
pub(crate) fn same<A: 'static, T: 'static>(value: A) -> Result<T, A> {
    if TypeId::of::<A>() != TypeId::of::<T>() {
        return Err(value);
    }
    let boxed: Box<dyn Any> = Box::new(value);
    Ok(*boxed.downcast::<T>().expect("the type ids are equal"))
}

/// The CUDA ordinal of a device of the bf16 CUDA backend (with or without autodiff).
pub(crate) fn ordinal<D: 'static>(device: &D) -> Option<usize> {
    let device: &dyn Any = device;
    device
        .downcast_ref::<cubecl::cuda::CudaDevice>()
        .map(|d| d.index)
}

/// What a queued operation computes: from its inputs' buffers (as burn holds them, with
/// whatever strides) to its outputs', in the order and of the shapes given to [`queue`].
type Compute = dyn Fn(Vec<CudaTensor>) -> Vec<CudaTensor> + Send + Sync;

/// One of tigerflow's operations in burn-fusion's queue.
struct Queued {
    ir: CustomOpIr,
    compute: Box<Compute>,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued").field("ir", &self.ir).finish()
    }
}

impl Operation<FusionCubeRuntime<CudaRuntime>> for Queued {
    fn execute(&self, handles: &mut HandleContainer<FusionHandle<FusionCubeRuntime<CudaRuntime>>>) {
        let inputs = self
            .ir
            .inputs
            .iter()
            .map(|t| {
                if t.dtype.is_float() {
                    handles.get_float_tensor::<Cube>(t)
                } else {
                    handles.get_int_tensor::<Cube>(t)
                }
            })
            .collect();
        let outputs = (self.compute)(inputs);
        assert_eq!(
            outputs.len(),
            self.ir.outputs.len(),
            "{} computed a different number of outputs than it declared",
            self.ir.id
        );
        for (ir, tensor) in self.ir.outputs.iter().zip(outputs) {
            handles.register_float_tensor::<Cube>(&ir.id, tensor);
        }
    }
}

/// Queues `compute` behind the work burn-fusion holds for `inputs`, and returns its `outputs`
/// (shape and dtype each) as tensors the caller can use at once.
///
/// burn-fusion runs its queue on a thread of its own per device. Taking a tensor's buffer out of
/// burn (`resolve_tensor_float`) waits for that thread to run everything queued before it, so
/// operations that did so for each input kept the training thread waiting for most of a
/// SmolLM2-135M step (docs/perf-log.md, "The operations in burn-fusion's queue"). Queued, an
/// operation runs on that thread in order with burn's, and the caller goes on.
pub(crate) fn queue_all(
    name: &'static str,
    inputs: Vec<FusedTensor>,
    outputs: Vec<(Shape, DType)>,
    compute: impl Fn(Vec<CudaTensor>) -> Vec<CudaTensor> + Send + Sync + 'static,
) -> Vec<FusedTensor> {
    let client = inputs
        .first()
        .expect("an operation reads a tensor")
        .client
        .clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let inputs: Vec<TensorIr> = inputs.into_iter().map(FusedTensor::into_ir).collect();
    let outputs: Vec<TensorIr> = outputs
        .into_iter()
        .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype))
        .collect();
    let ir = CustomOpIr::new(name, &inputs, &outputs);
    let operation = Queued {
        ir: ir.clone(),
        compute: Box::new(compute),
    };
    client.register(streams, OperationIr::Custom(ir), operation)
}

/// [`queue_all`] for a fixed number of inputs and outputs.
pub(crate) fn queue<const I: usize, const O: usize>(
    name: &'static str,
    inputs: [FusedTensor; I],
    outputs: [(Shape, DType); O],
    compute: impl Fn([CudaTensor; I]) -> [CudaTensor; O] + Send + Sync + 'static,
) -> [FusedTensor; O] {
    let outputs = queue_all(name, inputs.into(), outputs.into(), move |inputs| {
        compute(inputs.try_into().expect("as many inputs as queued")).into()
    });
    outputs.try_into().expect("as many outputs as declared")
}

/// The primitive of a float tensor of the bf16 CUDA backend.
pub(crate) fn primitive<const D: usize>(t: Tensor<Fused, D>) -> FusedTensor {
    t.into_primitive().tensor()
}

/// A float tensor of the bf16 CUDA backend from its primitive.
pub(crate) fn tensor<const D: usize>(t: FusedTensor) -> Tensor<Fused, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A new uninitialised contiguous tensor on `like`'s device.
pub(crate) fn empty(like: &CudaTensor, shape: impl Into<Shape>, dtype: DType) -> CudaTensor {
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
pub(crate) fn launch_ordered(
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
    let gpu = Gpu::of(tensors[0].device.index);
    let (flags, n) = gpu.next_join();
    let (ready, done) = (flags, flags + 4);
    let kernels = gpu.join_kernels();
    let flag = |address: u64| [Scalar::U64(address), Scalar::U32(n)];
    // SAFETY: `join_signal` takes no buffer and the flag's address and sequence number; its one
    // thread writes the 4-byte `ready` flag, which lies in a live allocation of this device.
    unsafe { launch_in_stream(client, kernels.signal.clone(), (1, 1, 1), &[], &flag(ready)) };
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
    // SAFETY: `ready` and `done` lie in a live allocation of this device's context (`Gpu::next_join`),
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
    // SAFETY: `join_wait` takes no buffer and the flag's address and sequence number; its one
    // thread only reads the live 4-byte `done` flag.
    unsafe { launch_in_stream(client, kernels.wait.clone(), (1, 1, 1), &[], &flag(done)) };
    drop(resources);
}
