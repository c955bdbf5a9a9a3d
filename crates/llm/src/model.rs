//! The Llama decoder as transformers computes it: RMSNorm, rotate-half RoPE with per-token
//! position ids, grouped-query attention, SwiGLU MLP and optionally tied embeddings. Module and
//! field names follow the Hugging Face checkpoint (`model.layers.{i}.self_attn.q_proj`, ...), so
//! every weight and adapter maps 1:1 to its transformers / PEFT tensor.

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::attention::{causal_attention, repeat_kv};
use crate::config::LlamaConfig;
use crate::linear::{Projection, linear, project};
use crate::rope::{Rotary, inverse_frequencies};

/// Root-mean-square layer norm: `weight · x / sqrt(mean(x²) + eps)`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(weight: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            eps,
        }
    }

    /// Normalises over the last dimension. With the `cuda` feature, bf16 tensors on the CUDA
    /// backend take one kernel (`tigerflow_cuda::rms_norm`) for burn's seven operations here.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        #[cfg(feature = "cuda")]
        let x = match tigerflow_cuda::rms_norm(x, self.weight.val(), self.eps) {
            Ok(y) => return y,
            Err((x, _)) => x,
        };
        let variance = x.clone().powf_scalar(2.0).mean_dim(D - 1);
        let normed = x.mul(variance.add_scalar(self.eps).sqrt().recip());
        normed.mul(self.weight.val().unsqueeze::<D>())
    }
}

/// Multi-head self-attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Projection<B>,
    pub k_proj: Projection<B>,
    pub v_proj: Projection<B>,
    pub o_proj: Projection<B>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

/// The keys and values of one layer, `[B, kv_heads, capacity, head_dim]`, after RoPE. Slots at
/// and after the cache's length hold stale values that the attention mask hides.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// `(key, value)`; `None` only while [`LayerCache::write`] runs.
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> LayerCache<B> {
    fn new(key: Tensor<B, 4>, value: Tensor<B, 4>) -> Self {
        Self {
            kv: Some((key, value)),
        }
    }

    fn tensors(&self) -> &(Tensor<B, 4>, Tensor<B, 4>) {
        self.kv.as_ref().expect(Self::ONLY_EMPTY_WHILE_WRITTEN)
    }

    /// Moves the tensors out, so that they are unshared while a new version is made.
    fn take(&mut self) -> (Tensor<B, 4>, Tensor<B, 4>) {
        self.kv.take().expect(Self::ONLY_EMPTY_WHILE_WRITTEN)
    }

    const ONLY_EMPTY_WHILE_WRITTEN: &str = "a layer cache is only empty while written";

    /// Writes `key`/`value` `[B, kv_heads, L, head_dim]` at positions `start..start + L` and
    /// returns the first `visible` slots. The cache's tensors are moved out while written:
    /// unshared, a backend writes them in place instead of copying the whole cache every token.
    fn write(
        &mut self,
        start: usize,
        key: Tensor<B, 4>,
        value: Tensor<B, 4>,
        visible: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (all_keys, all_values) = self.take();
        let [b, kv, len, d] = key.dims();
        let at = [0..b, 0..kv, start..start + len, 0..d];
        let all_keys = all_keys.slice_assign(at.clone(), key);
        let all_values = all_values.slice_assign(at, value);
        self.kv = Some((all_keys.clone(), all_values.clone()));
        let shown = [0..b, 0..kv, 0..visible, 0..d];
        (all_keys.slice(shown.clone()), all_values.slice(shown))
    }

    /// Appends `extra` empty slots.
    fn grow(&mut self, extra: usize) {
        let (key, value) = self.take();
        let [b, kv, _, d] = key.dims();
        let zeros = Tensor::<B, 4>::zeros([b, kv, extra, d], &key.device());
        self.kv = Some((
            Tensor::cat(vec![key, zeros.clone()], 2),
            Tensor::cat(vec![value, zeros], 2),
        ));
    }
}

/// Where one forward pass writes into a layer's cache and how much of it attention reads.
#[derive(Debug)]
pub struct CacheSlot<'c, B: Backend> {
    pub layer: &'c mut LayerCache<B>,
    /// Position of the first new token.
    pub start: usize,
    /// Slots attention reads, from 0.
    pub visible: usize,
}

/// The keys a forward pass attends to.
#[derive(Debug)]
pub enum Keys<'c, B: Backend> {
    /// The pass's own tokens, causally; with segment ids `[B, L]`, only those of the same packed
    /// sample (see [`causal_attention`]).
    Own(Option<Tensor<B, 2, Int>>),
    /// A KV cache: this pass's keys and values are written into `slot`, attention runs over its
    /// first `slot.visible` slots, and `mask` `[B, 1, L, visible]` (true = hidden) must hide
    /// every key after each query (see [`Llama::forward_cached`]).
    Cached {
        slot: CacheSlot<'c, B>,
        mask: Tensor<B, 4, Bool>,
    },
}

impl<B: Backend> Attention<B> {
    /// `x` `[B, L, hidden]` attending to `keys`.
    pub fn forward(&self, x: Tensor<B, 3>, rotary: &Rotary<B>, keys: Keys<'_, B>) -> Tensor<B, 3> {
        let [batch, len, _] = x.dims();
        let [q, k, v] = project([&self.q_proj, &self.k_proj, &self.v_proj], x);
        let q = rotary.apply_to_heads(q, self.num_heads);
        let k = rotary.apply_to_heads(k, self.num_kv_heads);
        let v = v
            .reshape([batch, len, self.num_kv_heads, self.head_dim])
            .swap_dims(1, 2);
        let out = match keys {
            Keys::Own(segments) => causal_attention(q, k, v, segments),
            Keys::Cached { slot, mask } => {
                let (k, v) = slot.layer.write(slot.start, k, v, slot.visible);
                let groups = self.num_heads / self.num_kv_heads;
                let [b, _, lq, lk] = mask.dims();
                let mask = mask.expand([b, self.num_heads, lq, lk]);
                let options = AttentionModuleOptions::default();
                attention(
                    q,
                    repeat_kv(k, groups),
                    repeat_kv(v, groups),
                    Some(mask),
                    None,
                    options,
                )
            }
        };
        let out = out
            .swap_dims(1, 2)
            .reshape([batch, len, self.num_heads * self.head_dim]);
        self.o_proj.forward(out)
    }
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Projection<B>,
    pub up_proj: Projection<B>,
    pub down_proj: Projection<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [gate, up] = project([&self.gate_proj, &self.up_proj], x);
        self.down_proj.forward(swiglu(gate, up))
    }
}

/// `silu(gate) · up`. With the `cuda` feature, bf16 tensors on the CUDA backend take one kernel
/// each way (`tigerflow_cuda::swiglu`).
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cuda")]
    let (gate, up) = match tigerflow_cuda::swiglu(gate, up) {
        Ok(out) => return out,
        Err(inputs) => inputs,
    };
    silu(gate).mul(up)
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    pub fn forward(&self, x: Tensor<B, 3>, rotary: &Rotary<B>, keys: Keys<'_, B>) -> Tensor<B, 3> {
        let attn = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), rotary, keys);
        let x = x.add(attn);
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x.add(mlp)
    }
}

/// A causal language model of the Llama family (`LlamaForCausalLM`).
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the output projection is tied to `embed_tokens`.
    pub lm_head: Option<Projection<B>>,
    #[module(skip)]
    pub config: LlamaConfig,
    #[module(skip)]
    pub inv_freq: Vec<f32>,
}

/// What attention over a KV cache reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheView {
    /// The tokens so far: the least work, and a new tensor shape every token (free on a CPU).
    Filled,
    /// The whole capacity, unused slots masked: one shape until the cache grows, so a GPU
    /// compiles its kernels once instead of once per token.
    Capacity,
}

/// The keys and values of every layer, for incremental decoding.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
    view: CacheView,
}

impl<B: Backend> KvCache<B> {
    /// Number of tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens the cache holds before it has to grow.
    pub fn capacity(&self) -> usize {
        self.layers.first().map_or(0, |l| l.tensors().0.dims()[2])
    }

    /// Forgets every token from position `len` on (e.g. the padding after a prompt).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for `needed` tokens, at least doubling the capacity so that growing (a new
    /// shape for every kernel) stays rare.
    fn reserve(&mut self, needed: usize) {
        let capacity = self.capacity();
        if needed <= capacity {
            return;
        }
        let extra = needed.max(2 * capacity) - capacity;
        for layer in &mut self.layers {
            layer.grow(extra);
        }
    }
}

impl<B: Backend> Llama<B> {
    /// Assembles a model from loaded parts; `inv_freq` is derived from `config`.
    pub fn new(
        config: LlamaConfig,
        embed_tokens: Tensor<B, 2>,
        layers: Vec<DecoderLayer<B>>,
        norm: RmsNorm<B>,
        lm_head: Option<Projection<B>>,
    ) -> Self {
        Self {
            inv_freq: inverse_frequencies(&config),
            embed_tokens: Param::from_tensor(embed_tokens).set_require_grad(false),
            layers,
            norm,
            lm_head,
            config,
        }
    }

    /// Token embeddings `[B, L, hidden]` for ids `[B, L]`.
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        embedding(self.embed_tokens.val(), input_ids)
    }

    /// RoPE tables for `position_ids` `[B, L]`, shared by all layers.
    pub fn rotary(&self, position_ids: Tensor<B, 2, Int>) -> Rotary<B> {
        Rotary::new(&self.inv_freq, position_ids)
    }

    /// Final normed hidden states `[B, L, hidden]`, for computing the loss in chunks.
    pub fn forward_hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        segment_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        let rotary = self.rotary(position_ids);
        let mut x = self.embed(input_ids);
        for layer in &self.layers {
            x = layer.forward(x, &rotary, Keys::Own(segment_ids.clone()));
        }
        self.norm.forward(x)
    }

    /// Next-token logits `[B, L, vocab]` for ids and position ids `[B, L]`; with `segment_ids`,
    /// tokens attend only to earlier tokens of their own segment.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        segment_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        self.logits(self.forward_hidden(input_ids, position_ids, segment_ids))
    }

    /// Projects normed hidden states onto the vocabulary.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => linear(hidden, self.embed_tokens.val()),
        }
    }

    /// An empty KV cache for `batch` sequences with room for `capacity` tokens.
    pub fn new_cache(&self, batch: usize, capacity: usize, view: CacheView) -> KvCache<B> {
        let device = self.embed_tokens.val().device();
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|layer| {
                    let attn = &layer.self_attn;
                    let shape = [batch, attn.num_kv_heads, capacity, attn.head_dim];
                    LayerCache::new(Tensor::zeros(shape, &device), Tensor::zeros(shape, &device))
                })
                .collect(),
            len: 0,
            view,
        }
    }

    /// Runs `input_ids` `[B, L]` after the tokens already in `cache` (positions continue from
    /// `cache.len()`), writes their keys and values into the cache, and returns the logits of
    /// the new tokens.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let [b, l] = input_ids.dims();
        let device = input_ids.device();
        let start = cache.len;
        cache.reserve(start + l);
        let visible = match cache.view {
            CacheView::Filled => start + l,
            CacheView::Capacity => cache.capacity(),
        };
        let queries = Tensor::<B, 1, Int>::arange(start as i64..(start + l) as i64, &device);
        let position_ids = queries.clone().reshape([1, l]).expand([b, l]);
        // Key j is hidden from the query at position p when j > p: the causal mask, which
        // also hides the stale slots after the cache's length.
        let mask = Tensor::<B, 1, Int>::arange(0..visible as i64, &device)
            .reshape([1, 1, 1, visible])
            .expand([b, 1, l, visible])
            .greater(queries.reshape([1, 1, l, 1]).expand([b, 1, l, visible]));
        let rotary = self.rotary(position_ids);
        let mut x = self.embed(input_ids);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let slot = CacheSlot {
                layer: slot,
                start,
                visible,
            };
            let keys = Keys::Cached {
                slot,
                mask: mask.clone(),
            };
            x = layer.forward(x, &rotary, keys);
        }
        cache.len += l;
        self.logits(self.norm.forward(x))
    }
}
