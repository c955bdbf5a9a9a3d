//! `--set STAGE.KEY=VALUE`: one-invocation parameter overrides.

use crate::config::{Diagnostic, one_line};

/// A parsed `--set` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The argument as written, for error messages.
    pub raw: String,
    pub stage: String,
    /// Key path inside the stage table (non-empty).
    pub key: Vec<String>,
    pub value: toml::Value,
}

/// A `--set` argument that is not `STAGE.KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`--set {raw}`: expected STAGE.KEY=VALUE, e.g. `--set train.epochs=2`")]
pub struct OverrideError {
    /// The argument as written, control characters escaped.
    pub raw: String,
}

impl std::str::FromStr for Override {
    type Err = OverrideError;

    fn from_str(argument: &str) -> Result<Self, Self::Err> {
        let raw = &one_line(argument);
        let usage = || OverrideError { raw: raw.clone() };
        let (path, value) = argument.split_once('=').ok_or_else(usage)?;
        let mut parts = path.trim().split('.').map(|s| s.trim().to_string());
        let stage = parts.next().filter(|s| !s.is_empty()).ok_or_else(usage)?;
        let key: Vec<String> = parts.collect();
        if key.is_empty() || key.iter().any(String::is_empty) {
            return Err(usage());
        }
        Ok(Override {
            raw: raw.to_string(),
            stage,
            key,
            value: parse_value(value.trim()),
        })
    }
}

/// A TOML value (`2`, `0.5`, `true`, `[1, 2]`, `"x"`), or else the text itself as a string.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

impl Override {
    /// Writes the value into a stage's raw parameter table, creating tables on the way.
    pub fn apply(&self, table: &mut toml::Table) {
        let (last, parents) = self.key.split_last().expect("key is non-empty");
        let mut current = table;
        for part in parents {
            let entry = current
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            current = entry.as_table_mut().expect("just made a table");
        }
        current.insert(last.clone(), self.value.clone());
    }

    pub fn diagnostic(&self, message: String) -> Diagnostic {
        Diagnostic {
            origin: format!("--set {}", self.raw),
            at: None,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typed_values_and_falls_back_to_strings() {
        let o: Override = "train.lora.rank=8".parse().unwrap();
        assert_eq!(
            (o.stage.as_str(), o.key.clone()),
            ("train", vec!["lora".into(), "rank".into()])
        );
        assert_eq!(o.value, toml::Value::Integer(8));
        let s: Override = "x.name=hello world".parse().unwrap();
        assert_eq!(s.value, toml::Value::String("hello world".into()));
        assert!("train=3".parse::<Override>().is_err());
        let mut t = toml::Table::new();
        o.apply(&mut t);
        assert_eq!(t["lora"]["rank"].as_integer(), Some(8));
    }

    #[test]
    fn messages_quote_the_argument_on_one_line() {
        let o: Override = "train.note=a\nb".parse().unwrap();
        assert_eq!(o.value, toml::Value::String("a\nb".into()));
        let line = o.diagnostic("bad".into()).to_string();
        assert_eq!(line, "--set train.note=a\\nb: bad");
        let err = "train\n".parse::<Override>().unwrap_err().to_string();
        assert!(!err.contains('\n') && err.contains("train\\n"), "{err}");
    }
}
