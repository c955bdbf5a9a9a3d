//! Summing gradients across GPUs with NCCL, the library every GPU trainer uses for it.
//!
//! The gradient is copied to the host and back around the all-reduce: burn does not expose its
//! buffers' device pointers without going through its fusion layer, and for LoRA gradients the
//! copies are small beside a training step (docs/perf-log.md, "Several GPUs", has the cost).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};

use crate::collective::{Collective, CollectiveError};
use crate::tcp_group::TcpGroup;

pub struct NcclGroup {
    comm: Comm,
    stream: Arc<CudaStream>,
}

impl NcclGroup {
    /// Creates the NCCL communicator of `tcp`'s ranks on CUDA device `ordinal`: rank 0 makes
    /// NCCL's unique id and the TCP group carries it to the others.
    pub fn join(tcp: &mut TcpGroup, ordinal: usize) -> Result<Self, CollectiveError> {
        // cudarc panics when it cannot load NCCL; ask first for a one-line error.
        if !tigerflow_cuda::nccl_loads() {
            return Err(CollectiveError::Device(format!(
                "cannot load NCCL (libnccl.so) in rank {}; fix: set TIGERFLOW_NCCL to the path of libnccl.so.2 (e.g. inside PyTorch's nvidia/nccl/lib)",
                tcp.rank()
            )));
        }
        let mut bytes = if tcp.rank() == 0 {
            let id = Id::new().map_err(|e| CollectiveError::Device(format!("NCCL: {e:?}")))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        tcp.broadcast(&mut bytes)?;
        let internal: [std::ffi::c_char; 128] = bytes
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| {
                CollectiveError::Job("rank 0 sent an NCCL id of the wrong size".to_owned())
            })?;
        let context = CudaContext::new(ordinal)
            .map_err(|e| CollectiveError::Device(format!("cuda:{ordinal}: {e}")))?;
        let stream = context.default_stream();
        let comm = Comm::from_rank(
            stream.clone(),
            tcp.rank(),
            tcp.world_size(),
            Id::uninit(internal),
        )
        .map_err(|e| {
            CollectiveError::Device(format!("NCCL could not join rank {}: {e:?}", tcp.rank()))
        })?;
        Ok(NcclGroup { comm, stream })
    }
}

impl Collective for NcclGroup {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), CollectiveError> {
        let cuda = |e: cudarc::driver::DriverError| {
            CollectiveError::Device(format!("copying gradients for NCCL: {e}"))
        };
        let mut buffer = self.stream.clone_htod(values).map_err(cuda)?;
        self.comm
            .all_reduce_in_place(&mut buffer, &ReduceOp::Sum)
            .map_err(|e| CollectiveError::Device(format!("NCCL all-reduce: {e:?}")))?;
        let sum = self.stream.clone_dtoh(&buffer).map_err(cuda)?;
        self.stream.synchronize().map_err(cuda)?;
        values.copy_from_slice(&sum);
        Ok(())
    }
}
