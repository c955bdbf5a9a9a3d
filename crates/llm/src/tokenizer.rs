//! Text ↔ token ids through the `tokenizers` crate, from a `tokenizer.json` or rebuilt from the
//! gpt2-style BPE vocabulary that a GGUF file carries in its metadata.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::{GgufFile, Value};

/// A tokenizer could not be built or failed on some text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{file}: {message}; fix: use the tokenizer that belongs to the model")]
    Load { file: String, message: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error(
        "the prompt is empty and the model has no BOS token to start from; fix: give a prompt with text"
    )]
    EmptyPrompt,
}

/// A model's tokenizer with its special ids.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    /// GGUF files say whether BOS goes in front (`tokenizer.ggml.add_bos_token`); a
    /// tokenizer.json does it in its post-processor instead.
    prepend_bos: bool,
}

/// llama.cpp's Llama 3 ("llama-bpe") pre-tokenizer regex.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer that llama.cpp uses for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, String> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" | "olmo" | "mpt" => byte_level.into(),
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_PATTERN.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| e.to_string())?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        other => {
            return Err(format!(
                "tokenizer.ggml.pre = {other:?} is not supported (gpt-2, smollm, starcoder, llama-bpe are)"
            ));
        }
    })
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; the special ids come from the model config.
    pub fn from_file(
        path: &Path,
        bos_id: Option<u32>,
        eos_ids: Vec<u32>,
    ) -> Result<Self, TokenizerError> {
        let inner = Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        let pad_id = ["<|finetune_right_pad_id|>", "<pad>", "[PAD]", "<|pad|>"]
            .iter()
            .find_map(|t| inner.token_to_id(t));
        Ok(Self {
            inner,
            bos_id,
            eos_ids,
            pad_id,
            prepend_bos: false,
        })
    }

    /// Rebuilds the tokenizer from `tokenizer.ggml.*` metadata (gpt2-style byte-level BPE).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let path = file.path.display().to_string();
        let err = |message: String| TokenizerError::Load {
            file: path.clone(),
            message,
        };
        let meta = &file.metadata;
        let model = meta.get("tokenizer.ggml.model").and_then(Value::as_str);
        if model != Some("gpt2") {
            return Err(err(format!(
                "tokenizer.ggml.model is {model:?}; only gpt2-style BPE can be rebuilt from GGUF metadata"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>, TokenizerError> {
            meta.get(key)
                .and_then(Value::as_array)
                .and_then(|items| items.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| err(format!("metadata {key} is missing or not a string array")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((*t).to_owned(), i as u32))
            .collect();
        let merges = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| err(format!("merge {m:?} has no space")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        let pre = meta
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre).map_err(err)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (type 3) and user-defined ones (type 4) are matched whole, before BPE.
        let types = meta
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array);
        if let Some(types) = types {
            let special: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter(|(t, _)| matches!(t.as_u64(), Some(3 | 4)))
                .map(|(t, tok)| AddedToken::from((*tok).to_owned(), t.as_u64() == Some(3)))
                .collect();
            inner.add_special_tokens(&special);
        }
        let id = |key: &str| meta.get(key).and_then(Value::as_u64).map(|v| v as u32);
        Ok(Self {
            inner,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            pad_id: id("tokenizer.ggml.padding_token_id"),
            prepend_bos: matches!(
                meta.get("tokenizer.ggml.add_bos_token"),
                Some(Value::Bool(true))
            ),
        })
    }

    /// Token ids of `text`; with `add_special_tokens`, the model's BOS is put in front when
    /// the model asks for it.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_special_tokens
            && self.prepend_bos
            && let Some(bos) = self.bos_id
        {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
