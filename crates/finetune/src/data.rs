//! Reading the `split` stage's JSONL files (`{"text": ...}` per line) and tokenizing them.

use std::path::Path;

use serde::Deserialize;
use tigerflow_stage::StageError;

#[derive(Deserialize)]
struct Line {
    text: String,
}

/// The `text` of every line of a JSONL file; errors name the file and line.
pub fn read_texts(path: &Path) -> Result<Vec<String>, StageError> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| StageError::io(format!("reading {}", path.display()), e))?;
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Line>(l).map(|line| line.text).map_err(|e| {
                StageError::input(
                    path,
                    format!("line {}:{}: {e}; fix: each line must be a JSON object with a \"text\" string", i + 1, e.column()),
                )
            })
        })
        .collect()
}

/// Wraps token ids as the model expects a whole document: BOS first (when the model has one),
/// EOS last, so the model learns where a conversation ends.
pub fn wrap(ids: Vec<u32>, bos: Option<u32>, eos: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len() + 2);
    if let Some(bos) = bos
        && ids.first() != Some(&bos)
    {
        out.push(bos);
    }
    out.extend(ids);
    if out.last() != Some(&eos) {
        out.push(eos);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_once() {
        assert_eq!(wrap(vec![5, 6], Some(1), 2), vec![1, 5, 6, 2]);
        assert_eq!(wrap(vec![1, 5, 2], Some(1), 2), vec![1, 5, 2]);
        assert_eq!(wrap(vec![5], None, 2), vec![5, 2]);
    }

    #[test]
    fn reports_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, "{\"text\": \"a\"}\n{\"txt\": 1}\n").unwrap();
        let err = read_texts(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
