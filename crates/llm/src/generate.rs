//! Autoregressive generation with a KV cache: the prompt is run once, then one token per step;
//! text is streamed as it becomes final, and generation stops at an end-of-sequence token, a
//! stop string or `max_new_tokens`.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::device::DeviceSpec;
use crate::model::{CacheView, Llama};
use crate::sampling::{Sampler, SamplingConfig};
use crate::tokenizer::{TextTokenizer, TokenizerError};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    /// Generation ends before the first occurrence of any of these strings (e.g. `"\n### "` to
    /// stop before the next chat turn); the stop string itself is not part of the output.
    pub stop: Vec<String>,
    /// How the KV cache is read: [`cache_view_for`] the device.
    pub cache_view: CacheView,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndOfSequence,
    StopString,
    MaxTokens,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub reason: StopReason,
}

/// With [`CacheView::Capacity`], prompts are right-padded to a multiple of this many tokens and
/// the KV cache is sized in multiples of [`CACHE_BLOCK`]: on a GPU every new tensor shape
/// compiles new kernels, so generation should meet a few shapes, not one per prompt or token.
const PROMPT_BLOCK: usize = 64;
const CACHE_BLOCK: usize = 256;

/// The cache view that suits a device: exact shapes on the CPU (least work), fixed ones on a
/// GPU (least compiling).
pub fn cache_view_for(spec: DeviceSpec) -> CacheView {
    match spec {
        DeviceSpec::Cpu => CacheView::Filled,
        DeviceSpec::Cuda(_) => CacheView::Capacity,
    }
}

/// The logits at position `at` of the first row, as a host vector.
fn logits_at<B: Backend>(logits: Tensor<B, 3>, at: usize) -> Vec<f32> {
    let [_, _, vocab] = logits.dims();
    logits
        .slice([0..1, at..at + 1, 0..vocab])
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 logits")
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// Generates token ids after `prompt` (not empty) using a KV cache read through `view`;
/// `on_token` sees each new id and returns false to stop. Ends at any of `eos_ids`.
pub fn generate_tokens<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    eos_ids: &[u32],
    view: CacheView,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> (Vec<u32>, StopReason) {
    let device = model.embed_tokens.val().device();
    let (padded_len, capacity) = match view {
        CacheView::Filled => (prompt.len(), prompt.len() + max_new_tokens),
        CacheView::Capacity => {
            let padded = prompt.len().next_multiple_of(PROMPT_BLOCK);
            (
                padded,
                (padded + max_new_tokens).next_multiple_of(CACHE_BLOCK),
            )
        }
    };
    let mut cache = model.new_cache(1, capacity, view);
    // Any padding repeats the last prompt token; its keys are dropped from the cache at once.
    let mut padded = prompt.to_vec();
    padded.resize(padded_len, *prompt.last().expect("a non-empty prompt"));
    let prompt_logits = model.forward_cached(ids_tensor(&padded, &device), &mut cache);
    cache.truncate(prompt.len());
    let mut logits = logits_at(prompt_logits, prompt.len() - 1);
    let mut context = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..max_new_tokens {
        let token = sampler.next(logits, &context);
        if eos_ids.contains(&token) {
            return (out, StopReason::EndOfSequence);
        }
        out.push(token);
        context.push(token);
        if !on_token(token) {
            return (out, StopReason::StopString);
        }
        logits = logits_at(
            model.forward_cached(ids_tensor(&[token], &device), &mut cache),
            0,
        );
    }
    (out, StopReason::MaxTokens)
}

/// Length of the longest suffix of `text` that could still grow into one of `stops`; that part
/// must be held back while streaming.
fn pending_stop_prefix(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|stop| {
            (1..stop.len())
                .rev()
                .filter(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
                .take(1)
        })
        .max()
        .unwrap_or(0)
}

/// Generates text after `prompt`, streaming each final piece of text to `on_text`.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    config: &GenerationConfig,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, TokenizerError> {
    let prompt_ids = tokenizer.encode(prompt, true)?;
    if prompt_ids.is_empty() {
        return Err(TokenizerError::EmptyPrompt);
    }
    let mut sampler = Sampler::new(config.sampling.clone());
    let mut tokens = Vec::new();
    let mut streamed = 0;
    let mut text = String::new();
    let mut stopped = false;
    let mut failure = None;
    let (_, reason) = generate_tokens(
        model,
        &prompt_ids,
        config.max_new_tokens,
        &mut sampler,
        &tokenizer.eos_ids,
        config.cache_view,
        &mut |token| {
            tokens.push(token);
            text = match tokenizer.decode(&tokens) {
                Ok(t) => t,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            if let Some(at) = config
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(at);
                stopped = true;
            }
            // Hold back an unfinished UTF-8 sequence and anything that may start a stop string.
            let mut ready = text.trim_end_matches('\u{fffd}').len();
            if !stopped {
                ready -= pending_stop_prefix(&text[..ready], &config.stop);
            }
            if ready > streamed {
                on_text(&text[streamed..ready]);
                streamed = ready;
            }
            !stopped
        },
    );
    if let Some(e) = failure {
        return Err(e);
    }
    if streamed < text.len() {
        on_text(&text[streamed..]);
    }
    Ok(Generation {
        text,
        tokens,
        reason: if stopped {
            StopReason::StopString
        } else {
            reason
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_a_possible_stop_prefix() {
        let stops = vec!["\n### ".to_owned()];
        assert_eq!(pending_stop_prefix("hello\n##", &stops), 3);
        assert_eq!(pending_stop_prefix("hello", &stops), 0);
        assert_eq!(pending_stop_prefix("a\n", &stops), 1);
    }
}
