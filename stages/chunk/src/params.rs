//! Parameters of `uses = "chunk"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tigerflow_stage::{ParamError, Params};

/// How speakers are named in the rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speakers {
    /// Display names from the export (the latest one of each account).
    Names,
    /// "Friend 1", "Friend 2"… numbered by first appearance in time order.
    Pseudonyms,
}

/// Personal data replaced by a placeholder in message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scrub {
    /// Phone numbers → `<phone>`.
    Phone,
    /// E-mail addresses → `<email>`.
    Email,
    /// Links (`http(s)://…`, `www.…`) → `<url>`.
    Url,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkParams {
    /// A pause longer than this starts a new conversation: a number and a unit `s`, `m`, `h`
    /// or `d`. Default: `"60m"`.
    pub session_gap: String,
    /// Joins consecutive messages of one author in a conversation into one turn (lines joined
    /// with `\n`). Default: `false`.
    pub merge_consecutive: bool,
    /// How one message is rendered; `{name}` and `{text}` are replaced. Default:
    /// `"### {name}: {text}"`.
    pub template: String,
    /// Put between rendered messages. Default: `""` (the reference format has none).
    pub separator: String,
    /// Window budget in characters (Unicode scalar values), used when `max_tokens` is unset.
    /// Default: `2048`.
    pub max_chars: usize,
    /// Window budget in tokens of `tokenizer`. Default: unset (use `max_chars`).
    pub max_tokens: Option<usize>,
    /// A Hugging Face `tokenizer.json`, relative to the project root; needed by `max_tokens`,
    /// and used for the token histogram of the report. Default: unset.
    pub tokenizer: Option<String>,
    /// Windows with fewer messages are dropped. Default: `2`.
    pub min_messages: usize,
    /// `"names"` or `"pseudonyms"`. Default: `"names"`.
    pub speakers: Speakers,
    /// Explicit speaker names, by author id (`"user123"`) or display name; they win over
    /// `speakers`. Default: empty.
    pub speaker_map: BTreeMap<String, String>,
    /// Placeholders for personal data: any of `"phone"`, `"email"`, `"url"`. Default: none.
    pub scrub: Vec<Scrub>,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            session_gap: "60m".to_owned(),
            merge_consecutive: false,
            template: "### {name}: {text}".to_owned(),
            separator: String::new(),
            max_chars: 2048,
            max_tokens: None,
            tokenizer: None,
            min_messages: 2,
            speakers: Speakers::Names,
            speaker_map: BTreeMap::new(),
            scrub: Vec::new(),
        }
    }
}

/// Parses `90s`, `60m`, `2h`, `1d` into seconds.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(scale)
}

impl ChunkParams {
    pub fn session_gap_seconds(&self) -> i64 {
        parse_duration(&self.session_gap).unwrap_or(3600)
    }
}

impl Params for ChunkParams {
    fn validate(&self) -> Result<(), ParamError> {
        if parse_duration(&self.session_gap).is_none_or(|s| s <= 0) {
            return Err(ParamError::new(
                &["session_gap"],
                format!(
                    "must be a positive duration like \"60m\", \"2h\" or \"90s\" (got {:?}); fix: write a number followed by s, m, h or d",
                    self.session_gap
                ),
            ));
        }
        if !self.template.contains("{text}") {
            return Err(ParamError::new(
                &["template"],
                format!(
                    "must contain `{{text}}` (got {:?}); fix: for example \"### {{name}}: {{text}}\"",
                    self.template
                ),
            ));
        }
        if self.max_chars < 16 {
            return Err(ParamError::new(
                &["max_chars"],
                format!(
                    "must be at least 16 (got {}); fix: raise it",
                    self.max_chars
                ),
            ));
        }
        match (self.max_tokens, &self.tokenizer) {
            (Some(0), _) => {
                return Err(ParamError::new(
                    &["max_tokens"],
                    "must be at least 1 (got 0); fix: raise it or remove it to use max_chars",
                ));
            }
            (Some(_), None) => {
                return Err(ParamError::new(
                    &["max_tokens"],
                    "needs a `tokenizer` (a tokenizer.json path); fix: set `tokenizer`, or use `max_chars`",
                ));
            }
            _ => {}
        }
        if self.min_messages == 0 {
            return Err(ParamError::new(
                &["min_messages"],
                "must be at least 1 (got 0); fix: use 1 to keep every window",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60m"), Some(3600));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("60"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5w"), None);
    }

    #[test]
    fn validation_names_the_key() {
        let bad = ChunkParams {
            max_tokens: Some(512),
            ..ChunkParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().path, vec!["max_tokens"]);
        let bad = ChunkParams {
            session_gap: "soon".into(),
            ..ChunkParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().path, vec!["session_gap"]);
    }
}
