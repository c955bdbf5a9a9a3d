//! The GPU test set's checks, generic over the backend; `gpu_f32.rs` and `gpu_bf16.rs` run them
//! on CUDA. They are two test binaries because burn fixes a device's float type with its first
//! tensor, for the whole process.
//!
//!     cargo test --release --features cuda -p tigerflow-finetune --test gpu_f32 --test gpu_bf16
//!
//! Tolerances are relative to the reference's largest magnitude. cubecl's f32 matmul rounds
//! like TF32 (about 3e-4 relative per product; the tiny model's logits were measured 2.5e-3 off
//! on an H200) and bf16 keeps 8 bits of mantissa (4e-3).
//!
//! The checks pad their batches to one shape (`SHAPE`) where they can, because each new shape
//! compiles and autotunes new kernels: on a cold kernel cache the training check alone ran for
//! more than five minutes before that, and for more than fifteen while its projections went
//! through burn's matmul (now cuBLAS's, see `check_training`). Run them with a persistent
//! `TIGERFLOW_CACHE`.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::SafeTensors;
use tigerflow_finetune::packing::{collate, pack};
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::nf4::Nf4Tensor;

use super::*;

/// The first CUDA device, with cubecl's kernel and autotune caches where the product keeps them:
/// under `$TIGERFLOW_CACHE` when set (a second run then compiles nothing), else in cargo's
/// scratch directory for integration tests.
pub(crate) fn cuda() -> burn::backend::cuda::CudaDevice {
    let cache = std::env::var_os("TIGERFLOW_CACHE")
        .map_or_else(|| env!("CARGO_TARGET_TMPDIR").into(), PathBuf::from);
    tigerflow_llm::device::configure_cuda(&cache);
    Default::default()
}

/// How far a precision may stray from the CPU's f32.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Precision {
    /// Logits, losses and dequantized weights.
    pub value: f32,
    /// Gradients and gradient norms.
    pub grad: f32,
}

pub(crate) const F32: Precision = Precision {
    value: 5e-3,
    grad: 1e-2,
};
pub(crate) const BF16: Precision = Precision {
    value: 3e-2,
    grad: 8e-2,
};

/// Logits of the tiny model on `M`, for a packed batch.
fn logits_on<M: Backend>(nf4: bool, device: &M::Device) -> Vec<f32> {
    let batch = collate(&pack(&samples(4, 5), 40, true).rows, SHAPE);
    let shape = [batch.rows, batch.len];
    let ints = |v: &[i64]| -> Tensor<M, 2, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
    };
    let model = tiny_model_on::<M>(nf4, device);
    to_vec(model.forward(
        ints(&batch.input_ids),
        ints(&batch.position_ids),
        Some(ints(&batch.segment_ids)),
    ))
}

/// Logits of the tiny model, dense and NF4, on `M` against the CPU's.
pub(crate) fn check_logits<M: Backend>(device: &M::Device, p: Precision) {
    for nf4 in [false, true] {
        let cpu = logits_on::<CpuBackend>(nf4, &Default::default());
        let gpu = logits_on::<M>(nf4, device);
        let rel = max_rel(&gpu, &cpu);
        assert!(
            rel <= p.value,
            "nf4 = {nf4}: logits differ from the CPU's (max rel {rel})"
        );
    }
}

/// NF4 dequantized on `M` against the host. In f32 both sides compute one correctly rounded
/// product per element, so they must agree bit for bit.
pub(crate) fn check_nf4<M: Backend>(device: &M::Device, p: Precision, exact: bool) {
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nf4.safetensors"))
            .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let values = f32s(&st, "double_quant.input");
    let shape = st.tensor("double_quant.input").unwrap().shape().to_vec();
    let q = Nf4Tensor::quantize(&values, [shape[0], shape[1]], 64, true).unwrap();
    let host = q.dequantize();
    let gpu = to_vec(q.to_device::<M>(device).dequantize());
    if exact {
        assert_eq!(gpu, host);
    } else {
        let rel = max_rel(&gpu, &host);
        assert!(rel <= p.value, "dequantization (max rel {rel})");
    }
}

/// PEFT parity, packing and accumulation on `M`, with the projections in the operation that
/// real models train through (cuBLAS, where `M` is bf16) rather than burn's matmul, which the
/// tiny model's sizes would otherwise choose.
pub(crate) fn check_training<M: Backend>(device: &M::Device, p: Precision) {
    tigerflow_llm::cuda::with_every_projection_on_cublas(|| {
        check_peft_parity::<Autodiff<M>>(
            device,
            Tolerances {
                loss: f64::from(p.value),
                grad: p.grad,
                norm: f64::from(p.grad),
            },
        );
        check_packing::<Autodiff<M>>(device, f64::from(p.value));
        check_accumulation::<Autodiff<M>>(device, f64::from(p.grad));
    });
}

/// Layer-wise recompute equals the full graph on `M`, dropout on.
pub(crate) fn check_recompute_on<M: Backend>(device: &M::Device, p: Precision) {
    check_recompute::<Autodiff<M>>(device, f64::from(p.value), p.grad);
}
