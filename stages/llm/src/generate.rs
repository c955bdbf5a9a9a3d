//! Autoregressive generation with a KV cache: the prompt is run once, then one token per step;
//! text is streamed as it becomes final, and generation stops at an end-of-sequence token, a
//! stop string or `max_new_tokens`.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::model::{KvCache, Llama};
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

/// Logits of the last position as a host vector.
fn last_logits<B: Backend>(logits: Tensor<B, 3>) -> Vec<f32> {
    let [_, len, vocab] = logits.dims();
    logits
        .slice([0..1, len - 1..len, 0..vocab])
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 logits")
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// Generates token ids after `prompt` using the KV cache; `on_token` sees each new id and
/// returns false to stop. Ends at any of `eos_ids`.
pub fn generate_tokens<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    eos_ids: &[u32],
    on_token: &mut dyn FnMut(u32) -> bool,
) -> (Vec<u32>, StopReason) {
    let device = model.embed_tokens.val().device();
    let mut cache = KvCache::new(model.layers.len());
    let mut context = prompt.to_vec();
    let mut out = Vec::new();
    let mut logits = last_logits(model.forward_cached(ids_tensor(prompt, &device), &mut cache));
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
        logits = last_logits(model.forward_cached(ids_tensor(&[token], &device), &mut cache));
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
