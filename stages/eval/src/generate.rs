//! Greedy continuation of a prompt with the model's KV cache.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tigerflow_llm::model::{KvCache, Llama};

/// Up to `max_new` tokens that greedily continue `prompt`, stopping after any of `stop`.
pub fn greedy<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    max_new: usize,
    stop: &[u32],
    device: &B::Device,
) -> Vec<u32> {
    let mut cache = KvCache::new(model.layers.len());
    let mut out = Vec::new();
    let mut input: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    for _ in 0..max_new {
        let len = input.len();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, len]), device);
        let logits = model.forward_cached(ids, &mut cache);
        let [_, l, vocab] = logits.dims();
        let last = logits.slice([0..1, l - 1..l, 0..vocab]).reshape([vocab]);
        let next = last.argmax(0).into_scalar();
        let next = burn::tensor::ElementConversion::elem::<i64>(next) as u32;
        out.push(next);
        if stop.contains(&next) {
            break;
        }
        input = vec![i64::from(next)];
    }
    out
}
