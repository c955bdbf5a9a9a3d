//! tigerflow's CUDA C++ kernels launched by cubecl, on the stream burn computes on.
//!
//! cubecl keeps its CUDA streams private, so work on a stream of tigerflow's own has to be
//! ordered with burn's (first by host waits, 0.5–1 ms per call on an H100; now by the join in
//! `bridge`, which these kernels implement). cubecl's server also launches kernels it did not
//! generate: a [`CubeTask`] hands it CUDA C++ source, cubecl compiles it with NVRTC (keeping the
//! PTX in its own cache) and launches it in order with burn's kernels, so nothing else is needed.
//! Kernels launched this way take their buffers first and their scalars last, as one struct
//! passed by value (cubecl passes a kernel's scalars that way on GPUs of compute capability 7.0
//! and newer, the only ones this path is used on).

use std::collections::HashSet;
use std::sync::Arc;

use cubecl::cuda::{CudaCompiler, CudaComputeKernel};
use cubecl::ir::{AddressType, StorageType};
use cubecl::prelude::{CubeCount, CubeDim, ExecutionMode};
use cubecl::{CompilationError, CubeTask};
use cubecl_cpp::shared::{Body, CubeIndexFlags, Elem, Flags, Item, SharedMemory};
use cubecl_runtime::id::KernelId;
use cubecl_runtime::kernel::{CompiledKernel, KernelMetadata};
use cubecl_runtime::server::{KernelArguments, MetadataBindingInfo};
use sha2::{Digest, Sha256};

use crate::bridge::{Client, CudaTensor};

/// A CUDA C++ source and what identifies it in cubecl's kernel caches.
#[derive(Debug)]
pub(crate) struct Program {
    source: String,
    /// The source's digest: a changed source never loads an old one's cached PTX.
    digest: [u8; 16],
}

/// The helpers every source shares (bf16 conversions, 16-byte vectors), put before each.
const PRELUDE: &str = include_str!("bf16.cuh");

impl Program {
    /// `source` with `defines` (`NAME value`) and [`PRELUDE`] put before it.
    pub(crate) fn new(source: &str, defines: &[(&str, usize)]) -> Arc<Self> {
        let mut text: String = defines
            .iter()
            .map(|(name, value)| format!("#define {name} {value}\n"))
            .collect();
        text.push_str(PRELUDE);
        text.push_str(source);
        let digest = Sha256::digest(&text)[..16]
            .try_into()
            .expect("16 bytes of a 32-byte digest");
        Arc::new(Program {
            source: text,
            digest,
        })
    }
}

/// One `extern "C" __global__` function of a [`Program`], with its block size and dynamic
/// shared memory.
#[derive(Debug, Clone)]
pub(crate) struct SourceKernel {
    pub program: Arc<Program>,
    pub entry: &'static str,
    pub threads: u32,
    pub shared_bytes: usize,
}

impl KernelMetadata for SourceKernel {
    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
            .info((self.entry, self.program.digest, self.shared_bytes))
            .cube_dim(CubeDim::new_1d(self.threads))
    }

    fn address_type(&self) -> StorageType {
        AddressType::U32.unsigned_type()
    }
}

impl CubeTask<CudaCompiler> for SourceKernel {
    fn compile(
        &self,
        _: &mut CudaCompiler,
        _: &<CudaCompiler as cubecl::Compiler>::CompilationOptions,
        _: ExecutionMode,
        _: StorageType,
    ) -> Result<CompiledKernel<CudaCompiler>, CompilationError> {
        Ok(CompiledKernel {
            entrypoint_name: self.entry.to_owned(),
            debug_name: Some(self.entry),
            source: self.program.source.clone(),
            repr: Some(representation(self.entry, self.threads, self.shared_bytes)),
            cube_dim: CubeDim::new_1d(self.threads),
            debug_info: None,
        })
    }
}

/// The representation cubecl reads beside a kernel's source: of it, the CUDA server uses only
/// the dynamic shared memory size (`shared_memory_size()`, the end of the last shared array),
/// so it describes one byte array of `shared_bytes` and nothing else.
fn representation(name: &str, threads: u32, shared_bytes: usize) -> CudaComputeKernel {
    let address = Item::new(Elem::U32, 1, true);
    let shared_memories = if shared_bytes == 0 {
        Vec::new()
    } else {
        vec![SharedMemory::Array {
            index: 0,
            item: Item::new(Elem::U8, 1, true),
            length: shared_bytes,
            align: 128,
            offset: 0,
        }]
    };
    CudaComputeKernel {
        tensor_maps: Vec::new(),
        buffers: Vec::new(),
        scalars: Vec::new(),
        info: Default::default(),
        meta_static_len: 0,
        body: Body {
            instructions: Vec::new(),
            shared_memories,
            pipelines: Vec::new(),
            barriers: Vec::new(),
            const_arrays: Vec::new(),
            local_arrays: Vec::new(),
            info_by_ptr: false,
            has_dynamic_meta: false,
            address_type: address,
        },
        cube_dim: CubeDim::new_1d(threads),
        cluster_dim: None,
        extensions: Vec::new(),
        flags: Flags {
            elem_fp4: false,
            elem_fp6: false,
            elem_fp8: false,
            elem_bf16: false,
            elem_f16: false,
            elem_tf32: false,
            indexes: CubeIndexFlags::default(),
            op_barrier: false,
            op_pipeline: false,
            inst_tma: false,
            inst_tma_im2col: false,
            inst_wmma: false,
            inst_ptx_wrappers: false,
            inst_async_copy: false,
            use_grid_constants: true,
            static_meta_length: 0,
            has_dynamic_meta: false,
            has_info: true,
            cube_dim: CubeDim::new_1d(threads),
            cluster_dim: None,
            address_type: address,
        },
        items: HashSet::new(),
        kernel_name: name.to_owned(),
    }
}

/// A kernel's scalar argument, laid out in order as the fields of the kernel's struct.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar {
    I32(i32),
    U32(u32),
    F32(f32),
    /// Two 32-bit places, starting at an even one: where C puts an 8-byte field.
    U64(u64),
}

/// The scalars as cubecl's metadata words: the struct's bytes, little-endian, in 64-bit words.
fn words(scalars: &[Scalar]) -> Vec<u64> {
    let mut bits: Vec<u32> = Vec::with_capacity(scalars.len() + 1);
    for scalar in scalars {
        match *scalar {
            Scalar::I32(v) => bits.push(v as u32),
            Scalar::U32(v) => bits.push(v),
            Scalar::F32(v) => bits.push(v.to_bits()),
            Scalar::U64(v) => {
                assert!(
                    bits.len().is_multiple_of(2),
                    "a 64-bit scalar must start on an 8-byte boundary of the struct"
                );
                bits.extend([v as u32, (v >> 32) as u32]);
            }
        }
    }
    bits.chunks(2)
        .map(|pair| u64::from(pair[0]) | pair.get(1).map_or(0, |&high| u64::from(high) << 32))
        .collect()
}

/// Queues `kernel` on `client`'s stream (burn's) with `grid` blocks, the `buffers` (contiguous)
/// in order and then the `scalars`. Nothing waits: the kernel runs after the work burn queued
/// before and before anything it queues next.
///
/// # Safety
/// The kernel is CUDA C++ that indexes raw pointers; nothing here can see what it reads or
/// writes. The caller guarantees that:
/// - `buffers` and `scalars` match the kernel's parameters in number, order and type (buffers
///   first, then the scalars as the fields of one struct);
/// - every index the kernel computes from `grid`, its block size and the scalars stays inside
///   the buffer it indexes, each buffer being contiguous, of the dtype the kernel reads, and as
///   aligned as the kernel's vector loads need;
/// - no buffer the kernel writes is read by other work in the meantime (a fresh output, or one
///   the operation owns).
pub(crate) unsafe fn launch(
    client: &Client,
    kernel: SourceKernel,
    grid: (u32, u32, u32),
    buffers: &[&CudaTensor],
    scalars: &[Scalar],
) {
    let data = words(scalars);
    let len = data.len();
    let arguments = KernelArguments {
        buffers: buffers.iter().map(|t| t.handle.clone().binding()).collect(),
        // Every word is static: with the dynamic part empty, cubecl passes them all as the
        // kernel's by-value argument and uploads nothing.
        info: MetadataBindingInfo::new(data, len),
        tensor_maps: Vec::new(),
    };
    client.launch(
        Box::new(kernel),
        CubeCount::Static(grid.0, grid.1, grid.2),
        arguments,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "8-byte boundary")]
    fn a_misaligned_64_bit_scalar_is_refused() {
        words(&[Scalar::U32(1), Scalar::U64(2)]);
    }

    #[test]
    fn scalars_pack_into_words_as_a_struct_of_32_bit_fields() {
        let packed = words(&[Scalar::I32(2), Scalar::I32(-1), Scalar::F32(0.5)]);
        assert_eq!(
            packed,
            vec![2 | (0xffff_ffff << 32), 0.5f32.to_bits() as u64]
        );
        let flag = words(&[Scalar::U64(0x1234_5678_9abc), Scalar::U32(7)]);
        assert_eq!(flag, vec![0x1234_5678_9abc, 7]);
    }
}
