//! Rotary position embeddings in the Hugging Face "rotate half" basis, with per-token position
//! ids, so that q/k projections (and their LoRA adapters) stay in the transformers layout.

use burn::tensor::{
    DType, FloatDType, Int, Tensor, TensorData, backend::Backend, get_device_settings,
};

use crate::config::{LlamaConfig, RopeScaling};

/// The per-pair inverse frequencies, computed in f32 exactly as transformers does
/// (`1 / theta^(2i/d)`, then the configured rescaling).
pub fn inverse_frequencies(config: &LlamaConfig) -> Vec<f32> {
    let dim = config.head_dim;
    let base = config.rope_theta;
    let inv: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect();
    match &config.rope_scaling {
        None => inv,
        Some(RopeScaling::Linear { factor }) => inv.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f32;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            inv.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// cos/sin tables for a batch of positions, each `[B, 1, L, head_dim]` (broadcast over heads).
#[derive(Debug, Clone)]
pub struct Rotary<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rotary<B> {
    /// Computes the tables for `position_ids` `[B, L]`.
    ///
    /// The angles are computed in f32 whatever the device computes in, and only the cosines and
    /// sines are rounded to its float type, as transformers does: in bf16 a position above 256
    /// is no longer an integer, and at position 4095 the fastest pair turned by a wrong angle.
    pub fn new(inv_freq: &[f32], position_ids: Tensor<B, 2, Int>) -> Self {
        let device = position_ids.device();
        let dtype = get_device_settings::<B>(&device).float_dtype;
        let [batch, len] = position_ids.dims();
        let half = inv_freq.len();
        let inv = Tensor::<B, 1>::from_data(
            TensorData::new(inv_freq.to_vec(), [half]),
            (&device, DType::F32),
        )
        .reshape([1, 1, half]);
        let freqs = position_ids
            .cast(FloatDType::F32)
            .reshape([batch, len, 1])
            .mul(inv);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        Self {
            cos: emb.clone().cos().cast(dtype),
            sin: emb.sin().cast(dtype),
        }
    }

    /// Rotates `x` `[B, H, L, head_dim]`: `x·cos + rotate_half(x)·sin`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, l, d] = x.dims();
        let x1 = x.clone().slice([0..b, 0..h, 0..l, 0..d / 2]);
        let x2 = x.clone().slice([0..b, 0..h, 0..l, d / 2..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x.mul(self.cos.clone()).add(rotated.mul(self.sin.clone()))
    }

    /// Splits `x` `[B, L, heads · head_dim]` into heads, `[B, heads, L, head_dim]`, and rotates
    /// them. With the `cuda` feature, bf16 tensors on the CUDA backend take one kernel
    /// (`tigerflow_cuda::rotary`) for what burn does in eight operations here.
    pub fn apply_to_heads(&self, x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
        #[cfg(feature = "cuda")]
        let x = match tigerflow_cuda::rotary(x, heads, &self.cos, &self.sin) {
            Ok(rotated) => return rotated,
            Err(x) => x,
        };
        let [batch, len, width] = x.dims();
        self.apply(
            x.reshape([batch, len, heads, width / heads])
                .swap_dims(1, 2),
        )
    }
}
