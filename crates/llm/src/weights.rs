//! Builds a [`Llama`] from a source of named tensors, one tensor at a time, so that a large model
//! never exists twice in memory and the caller can store each projection as it likes (the trainer
//! quantizes them to NF4 as they arrive).

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::config::LlamaConfig;
use crate::linear::Projection;
use crate::model::{Attention, DecoderLayer, Llama, Mlp, RmsNorm};
use crate::nf4::{Nf4Error, Nf4Tensor};

/// Something that yields a model's tensors by their Hugging Face name
/// (`model.layers.0.self_attn.q_proj.weight`), as f32 in the HF layout.
pub trait WeightSource {
    /// Where the weights come from, for error messages.
    fn describe(&self) -> String;

    /// Whether a tensor with this HF name exists.
    fn contains(&self, name: &str) -> bool;

    /// Reads one tensor as f32 `TensorData` in the HF shape.
    fn read(&mut self, name: &str) -> Result<TensorData, WeightError>;
}

/// A tensor could not be read or does not fit the config.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error(
        "{source_name}: tensor {name} is missing; fix: point the model source at a complete Llama checkpoint"
    )]
    Missing { source_name: String, name: String },
    #[error(
        "{source_name}: tensor {name} has shape {actual:?}, the config expects {expected:?}; fix: use the config that belongs to these weights"
    )]
    Shape {
        source_name: String,
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{file}: {message}; fix: re-download or re-export the model file")]
    Format { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

/// Reads `name`, checks its shape against `expected`.
fn read_checked(
    source: &mut dyn WeightSource,
    name: &str,
    expected: &[usize],
) -> Result<TensorData, WeightError> {
    if !source.contains(name) {
        return Err(WeightError::Missing {
            source_name: source.describe(),
            name: name.to_owned(),
        });
    }
    let data = source.read(name)?;
    if data.shape.as_slice() != expected {
        return Err(WeightError::Shape {
            source_name: source.describe(),
            name: name.to_owned(),
            actual: data.shape.to_vec(),
            expected: expected.to_vec(),
        });
    }
    Ok(data)
}

/// Stores every projection as a plain dense weight on `device`.
pub fn dense<B: Backend>(device: &B::Device) -> impl FnMut(&str, TensorData) -> Projection<B> + '_ {
    move |_, data| Projection::new(Tensor::from_data(data, device))
}

/// Quantizes one `[out, in]` projection weight to NF4 (bitsandbytes' layout) on `device`.
pub fn nf4<B: Backend>(
    data: TensorData,
    blocksize: usize,
    double_quant: bool,
    device: &B::Device,
) -> Result<Projection<B>, Nf4Error> {
    let shape = [data.shape[0], data.shape[1]];
    // Weights arrive as f32; anything else fails quantize's length check with a clear error.
    let values: Vec<f32> = data.to_vec().unwrap_or_default();
    let quantized = Nf4Tensor::quantize(&values, shape, blocksize, double_quant)?;
    Ok(Projection::quantized(quantized.to_device(device)))
}

/// Loads a Llama model. `make_projection` receives each projection weight (HF name, `[out, in]`
/// f32 data) as it is read and decides how it is stored.
pub fn load_llama<B: Backend>(
    config: &LlamaConfig,
    source: &mut dyn WeightSource,
    device: &B::Device,
    make_projection: &mut impl FnMut(&str, TensorData) -> Projection<B>,
) -> Result<Llama<B>, WeightError> {
    let c = config;
    let (hidden, heads, kv, hd) = (
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
    );
    let vector =
        |source: &mut dyn WeightSource, name: &str, len| -> Result<Tensor<B, 1>, WeightError> {
            Ok(Tensor::from_data(
                read_checked(source, name, &[len])?,
                device,
            ))
        };
    let mut projection = |source: &mut dyn WeightSource,
                          name: String,
                          out,
                          inp|
     -> Result<Projection<B>, WeightError> {
        let data = read_checked(source, &name, &[out, inp])?;
        Ok(make_projection(&name, data))
    };

    let embed = read_checked(
        &mut *source,
        "model.embed_tokens.weight",
        &[c.vocab_size, hidden],
    )?;
    let embed_tokens = Tensor::from_data(embed, device);
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let self_attn = Attention {
            q_proj: projection(
                &mut *source,
                format!("{p}.self_attn.q_proj.weight"),
                heads * hd,
                hidden,
            )?,
            k_proj: projection(
                &mut *source,
                format!("{p}.self_attn.k_proj.weight"),
                kv * hd,
                hidden,
            )?,
            v_proj: projection(
                &mut *source,
                format!("{p}.self_attn.v_proj.weight"),
                kv * hd,
                hidden,
            )?,
            o_proj: projection(
                &mut *source,
                format!("{p}.self_attn.o_proj.weight"),
                hidden,
                heads * hd,
            )?,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: hd,
        };
        let inter = c.intermediate_size;
        let mlp = Mlp {
            gate_proj: projection(
                &mut *source,
                format!("{p}.mlp.gate_proj.weight"),
                inter,
                hidden,
            )?,
            up_proj: projection(
                &mut *source,
                format!("{p}.mlp.up_proj.weight"),
                inter,
                hidden,
            )?,
            down_proj: projection(
                &mut *source,
                format!("{p}.mlp.down_proj.weight"),
                hidden,
                inter,
            )?,
        };
        let input_layernorm = RmsNorm::new(
            vector(&mut *source, &format!("{p}.input_layernorm.weight"), hidden)?,
            c.rms_norm_eps,
        );
        let post_attention_layernorm = RmsNorm::new(
            vector(
                &mut *source,
                &format!("{p}.post_attention_layernorm.weight"),
                hidden,
            )?,
            c.rms_norm_eps,
        );
        layers.push(DecoderLayer {
            self_attn,
            mlp,
            input_layernorm,
            post_attention_layernorm,
        });
    }
    let norm = RmsNorm::new(
        vector(&mut *source, "model.norm.weight", hidden)?,
        c.rms_norm_eps,
    );
    // Some checkpoints ship an lm_head copy even when tied; the config decides.
    let lm_head = if c.tie_word_embeddings {
        None
    } else {
        Some(projection(
            &mut *source,
            "lm_head.weight".to_owned(),
            c.vocab_size,
            hidden,
        )?)
    };
    Ok(Llama::new(c.clone(), embed_tokens, layers, norm, lm_head))
}
