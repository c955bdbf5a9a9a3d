//! The Hugging Face access token: found the way the `huggingface_hub` tools find it, and kept
//! out of every log line, error and file.

use std::fmt;
use std::path::{Path, PathBuf};

/// A token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Token {
        Token(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the token came from, for messages ("the token from HF_TOKEN was refused").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env,
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Env => f.write_str("the HF_TOKEN environment variable"),
            TokenSource::File(path) => write!(f, "the token file {}", path.display()),
        }
    }
}

/// Looks for a token: `HF_TOKEN`, then the file at `HF_TOKEN_PATH`, else `$HF_HOME/token`
/// (default `$XDG_CACHE_HOME/huggingface/token`, then `~/.cache/huggingface/token`).
///
/// `Err` carries the token file that was looked for, so the message can say where to put one.
pub(super) fn find_token(
    env: impl Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<(Token, TokenSource), PathBuf> {
    let non_empty = |v: String| {
        let v = v.trim().to_owned();
        (!v.is_empty()).then_some(v)
    };
    if let Some(token) = env("HF_TOKEN").and_then(non_empty) {
        return Ok((Token(token), TokenSource::Env));
    }
    let file = token_file(&env, home);
    match std::fs::read_to_string(&file).ok().and_then(non_empty) {
        Some(token) => Ok((Token(token), TokenSource::File(file))),
        None => Err(file),
    }
}

fn token_file(env: &impl Fn(&str) -> Option<String>, home: Option<&Path>) -> PathBuf {
    if let Some(path) = env("HF_TOKEN_PATH") {
        return PathBuf::from(path);
    }
    let hf_home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let cache = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.unwrap_or(Path::new("~")).join(".cache"));
        cache.join("huggingface")
    });
    hf_home.join("token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let hf_home = dir.path().to_str().unwrap();
        let (token, source) = find_token(
            env_of(&[("HF_TOKEN", "hf_env"), ("HF_HOME", hf_home)]),
            None,
        )
        .unwrap();
        assert_eq!(token.expose(), "hf_env");
        assert_eq!(source, TokenSource::Env);
        let (token, source) = find_token(env_of(&[("HF_HOME", hf_home)]), None).unwrap();
        assert_eq!(token.expose(), "hf_file");
        assert_eq!(source, TokenSource::File(dir.path().join("token")));
    }

    #[test]
    fn default_file_is_under_the_home_cache() {
        let home = tempfile::tempdir().unwrap();
        let missing = find_token(env_of(&[("HF_TOKEN", " ")]), Some(home.path())).unwrap_err();
        assert_eq!(missing, home.path().join(".cache/huggingface/token"));
        std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
        std::fs::write(&missing, "hf_abc").unwrap();
        let (token, _) = find_token(env_of(&[]), Some(home.path())).unwrap();
        assert_eq!(token.expose(), "hf_abc");
    }

    #[test]
    fn debug_hides_the_token() {
        assert!(!format!("{:?}", Token::new("hf_secret")).contains("secret"));
    }
}
