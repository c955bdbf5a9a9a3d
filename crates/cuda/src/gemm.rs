//! bf16 matrix products through cuBLAS, on row-major buffers and tigerflow's stream.
//!
//! burn's own matmul reached about 0.4 of cuBLAS's throughput on a 7B model's projections and
//! autotunes every new shape for minutes on a cold cache; cuBLAS needs neither.

use std::ffi::c_void;

use cudarc::cublas::CudaBlas;
use cudarc::cublas::result::{CublasError, gemm_ex};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

/// A row-major operand: its device address and whether the buffer holds its transpose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand {
    pub address: u64,
    pub transposed: bool,
}

impl Operand {
    pub(crate) fn plain(address: u64) -> Self {
        Operand {
            address,
            transposed: false,
        }
    }

    pub(crate) fn transposed(address: u64) -> Self {
        Operand {
            address,
            transposed: true,
        }
    }
}

/// Row-major `c [m, n] = alpha · a [m, k] · b [k, n] + beta · c` in bf16 with f32 accumulation,
/// queued on the handle's stream.
///
/// cuBLAS is column-major, and a row-major buffer read column-major is its transpose, so this
/// asks cuBLAS for `cᵀ = bᵀ · aᵀ`.
///
/// # Safety
/// Every address must point to a live bf16 buffer of the stated shape on the handle's device,
/// not written by anything else until the stream has run the product.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    blas: &CudaBlas,
    [m, n, k]: [usize; 3],
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: u64,
) -> Result<(), CublasError> {
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    // Leading dimension of a row-major buffer: its row length.
    let lda = if a.transposed { m } else { k };
    let ldb = if b.transposed { k } else { n };
    let int = |v: usize| i32::try_from(v).expect("a GEMM dimension fits cuBLAS's int");
    let bf16 = cudaDataType::CUDA_R_16BF;
    // SAFETY: the caller vouches for the buffers; alpha and beta outlive the call.
    unsafe {
        gemm_ex(
            *blas.handle(),
            op(b.transposed),
            op(a.transposed),
            int(n),
            int(m),
            int(k),
            (&alpha as *const f32).cast::<c_void>(),
            b.address as *const c_void,
            bf16,
            int(ldb),
            a.address as *const c_void,
            bf16,
            int(lda),
            (&beta as *const f32).cast::<c_void>(),
            c as *mut c_void,
            bf16,
            int(n),
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
}
