//! What tigerflow keeps for one CUDA device, in one place: its context, the stream that cuBLAS
//! and the NF4 kernel run on, the cuBLAS handle bound to that stream, the kernels of
//! tigerflow's sources, and the join flags of each of cubecl's streams (see `bridge`).
//!
//! burn's tensors carry only a device ordinal, so an operation finds its device's state by that
//! ordinal ([`Gpu::of`]): the one process-wide table of this crate. Devices live as long as the
//! process (CUDA's primary contexts do), so each state is made once and never freed.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use cubecl::stream_id::StreamId;
use cudarc::cublas::CudaBlas;
use cudarc::driver::result::{malloc_sync, memset_d8_sync};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};

use crate::kernels::{FlashKernels, HEAD_DIMS, JoinKernels, LayerKernels, LossKernels, nf4_kernel};

/// One CUDA device's state.
pub(crate) struct Gpu {
    ordinal: usize,
    context: Arc<CudaContext>,
    /// Compute capability, major version.
    major: i32,
    /// The NVRTC architecture name (`sm_90`).
    arch: String,
    /// The stream every operation of tigerflow's own on this device runs on (cubecl keeps its
    /// streams private).
    stream: Arc<CudaStream>,
    /// `None` when the cuBLAS library cannot be loaded.
    blas: OnceLock<Option<Arc<CudaBlas>>>,
    /// By head dimension; `None` where the GPU cannot run them.
    flash: Mutex<HashMap<usize, Option<Arc<FlashKernels>>>>,
    join: JoinKernels,
    layer: LayerKernels,
    loss: LossKernels,
    nf4: OnceLock<CudaFunction>,
    /// Per cubecl stream: the join flags' device address and the last sequence number.
    joins: Mutex<HashMap<StreamId, (u64, u32)>>,
}

impl Gpu {
    /// CUDA device `ordinal`'s state, made on first use (burn has opened the device by then).
    pub(crate) fn of(ordinal: usize) -> &'static Gpu {
        static GPUS: LazyLock<Mutex<HashMap<usize, &'static Gpu>>> = LazyLock::new(Mutex::default);
        let mut gpus = GPUS.lock().unwrap_or_else(|e| e.into_inner());
        gpus.entry(ordinal)
            .or_insert_with(|| Box::leak(Box::new(Gpu::open(ordinal))))
    }

    fn open(ordinal: usize) -> Gpu {
        let context = CudaContext::new(ordinal).expect("cubecl already opened this CUDA device");
        let (major, minor) = context
            .compute_capability()
            .expect("a CUDA device reports its compute capability");
        let stream = context
            .new_stream()
            .expect("a stream on a device cubecl already opened");
        Gpu {
            ordinal,
            context,
            major,
            arch: format!("sm_{major}{minor}"),
            stream,
            blas: OnceLock::new(),
            flash: Mutex::default(),
            join: JoinKernels::new(),
            layer: LayerKernels::new(),
            loss: LossKernels::new(),
            nf4: OnceLock::new(),
            joins: Mutex::default(),
        }
    }

    /// The stream tigerflow's cuBLAS products, NF4 kernel and copies run on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Whether this is an Ampere GPU or newer (sm_80): the plain kernels' bf16 conversions and
    /// cuBLAS's bf16 products need it.
    pub(crate) fn ampere(&self) -> bool {
        self.major >= 8
    }

    /// The cuBLAS handle, bound to [`Gpu::stream`]; `None` when the cuBLAS library cannot be
    /// loaded (the caller falls back to burn's matmul).
    pub(crate) fn blas(&self) -> Option<&Arc<CudaBlas>> {
        self.blas
            .get_or_init(|| {
                // SAFETY: only probes whether the shared library opens.
                if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                    return None;
                }
                let handle = CudaBlas::new(self.stream.clone()).unwrap_or_else(|e| {
                    panic!(
                        "cuBLAS could not start on CUDA device {}: {e}",
                        self.ordinal
                    )
                });
                Some(Arc::new(handle))
            })
            .as_ref()
    }

    /// The flash-attention kernels for `head_dim`; `None` for other head dimensions than
    /// [`HEAD_DIMS`] and on GPUs older than Hopper (the kernels use sm_90's vector atomics).
    pub(crate) fn flash(&self, head_dim: usize) -> Option<Arc<FlashKernels>> {
        if !HEAD_DIMS.contains(&head_dim) {
            return None;
        }
        let mut flash = self.flash.lock().unwrap_or_else(|e| e.into_inner());
        flash
            .entry(head_dim)
            .or_insert_with(|| (self.major >= 9).then(|| Arc::new(FlashKernels::new(head_dim))))
            .clone()
    }

    /// The kernels around a decoder layer's projections; `None` on GPUs older than Ampere.
    pub(crate) fn layer(&self) -> Option<&LayerKernels> {
        self.ampere().then_some(&self.layer)
    }

    /// The cross-entropy kernels; `None` on GPUs older than Ampere.
    pub(crate) fn loss(&self) -> Option<&LossKernels> {
        self.ampere().then_some(&self.loss)
    }

    /// The stream-join kernels.
    pub(crate) fn join_kernels(&self) -> &JoinKernels {
        &self.join
    }

    /// The NF4 dequantization kernel, compiled on first use.
    pub(crate) fn nf4(&self) -> &CudaFunction {
        self.nf4
            .get_or_init(|| nf4_kernel(&self.context, &self.arch))
    }

    /// The device address of the two join flags of the calling cubecl stream (`ready`, then
    /// `done` 4 bytes on) and the next sequence number. Per stream, because the sequence numbers
    /// count one stream's joins in its order (queued operations run on burn-fusion's device
    /// thread, under the stream of the thread that queued them); the flags are never freed,
    /// since work queued on the GPU may still read them when the stream ends. The caller has
    /// bound this device's context to the thread.
    pub(crate) fn next_join(&self) -> (u64, u32) {
        let mut joins = self
            .joins
            .lock()
            .expect("no thread panics while holding the join flags");
        let (flags, last) = joins.entry(StreamId::current()).or_insert_with(|| {
            // SAFETY: a plain device allocation on the thread's current context (this device's,
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
    }
}
