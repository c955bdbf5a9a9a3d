//! A stage's fingerprint: blake3 of everything that determines its output, and the
//! human-readable difference between two sets of such ingredients.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::statcache::Tree;

/// Everything that goes into a fingerprint. Input *contents* count, not where they live, so
/// an upstream stage that re-runs and produces the same bytes does not invalidate this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ingredients {
    pub kind: String,
    pub code_version: u32,
    pub params: serde_json::Value,
    /// Input slot → what it names and the content hash.
    pub inputs: BTreeMap<String, HashedInput>,
    /// Extra dependency path (from `Stage::extra_dependencies`) → content hash.
    pub deps: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedInput {
    /// As written in pipeline.toml (`data/x.json`, `@chunk`).
    pub source: String,
    pub hash: String,
    /// For a directory of at most [`MAX_LISTED_FILES`] files: each file's hash, so that a
    /// change can name the file. Not part of the fingerprint (`hash` covers it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// Directories with more files are recorded by their hash alone, to keep the lock readable.
pub const MAX_LISTED_FILES: usize = 64;

/// The per-file hashes of a directory worth recording (none for a file or a big directory).
pub fn listed_files(tree: &Tree) -> BTreeMap<String, String> {
    if tree.files.len() > MAX_LISTED_FILES {
        return BTreeMap::new();
    }
    tree.files
        .iter()
        .map(|(path, hash)| (path.clone(), hash.to_hex().to_string()))
        .collect()
}

/// "a.txt changed, b.txt added" for two file listings, at most a few names.
fn file_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> String {
    const SHOWN: usize = 3;
    let mut changes: Vec<String> = new
        .iter()
        .filter_map(|(path, hash)| match old.get(path) {
            None => Some(format!("{path} added")),
            Some(o) if o != hash => Some(format!("{path} changed")),
            Some(_) => None,
        })
        .chain(
            old.keys()
                .filter(|p| !new.contains_key(*p))
                .map(|p| format!("{p} removed")),
        )
        .collect();
    if changes.len() > SHOWN {
        let more = changes.len() - SHOWN;
        changes.truncate(SHOWN);
        changes.push(format!("{more} more"));
    }
    changes.join(", ")
}

impl Ingredients {
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "kind": self.kind,
            "code_version": self.code_version,
            "params": canonical(&self.params),
            "inputs": self.inputs.iter().map(|(k, v)| (k.clone(), v.hash.clone())).collect::<BTreeMap<_, _>>(),
            "deps": self.deps,
        });
        let bytes = serde_json::to_vec(&canonical).expect("JSON values always serialize");
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// Why `self` (the new ingredients) differs from `old`, naming the exact field or file.
    pub fn changes_since(&self, old: &Ingredients) -> Vec<String> {
        let mut why = Vec::new();
        if self.kind != old.kind {
            why.push(format!(
                "stage kind changed (`{}` → `{}`)",
                old.kind, self.kind
            ));
        } else if self.code_version != old.code_version {
            why.push(format!(
                "code version of `{}` changed ({} → {})",
                self.kind, old.code_version, self.code_version
            ));
        }
        diff_values("", &old.params, &self.params, &mut why);
        for (slot, new) in &self.inputs {
            match old.inputs.get(slot) {
                None => why.push(format!("input `{slot}` ({}) added", new.source)),
                Some(o) if o.hash != new.hash => {
                    let detail = if o.files.is_empty() || new.files.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", file_changes(&o.files, &new.files))
                    };
                    why.push(format!("input `{slot}` ({}) changed{detail}", new.source));
                }
                Some(_) => {}
            }
        }
        for (slot, o) in &old.inputs {
            if !self.inputs.contains_key(slot) {
                why.push(format!("input `{slot}` ({}) removed", o.source));
            }
        }
        for (path, hash) in &self.deps {
            match old.deps.get(path) {
                None => why.push(format!("dependency `{path}` added")),
                Some(o) if o != hash => why.push(format!("dependency `{path}` changed")),
                Some(_) => {}
            }
        }
        for path in old.deps.keys().filter(|p| !self.deps.contains_key(*p)) {
            why.push(format!("dependency `{path}` removed"));
        }
        why
    }
}

/// The same value with every object's keys sorted, so that key order never changes a hash.
fn canonical(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, serde_json::Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical).collect())
        }
        other => other.clone(),
    }
}

/// Appends "parameter `a.b` changed (x → y)" lines for every leaf that differs.
fn diff_values(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value::Object;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Object(a), Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_values(&join(k), x, y, out),
                    (None, Some(y)) => out.push(format!("parameter `{}` added ({y})", join(k))),
                    (Some(x), None) => {
                        out.push(format!("parameter `{}` removed (was {x})", join(k)))
                    }
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => {
            let name = if path.is_empty() {
                "parameters".to_string()
            } else {
                format!("parameter `{path}`")
            };
            out.push(format!("{name} changed ({a} → {b})"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingredients(params: serde_json::Value, input_hash: &str) -> Ingredients {
        Ingredients {
            kind: "cmd".into(),
            code_version: 1,
            params,
            inputs: BTreeMap::from([(
                "data".into(),
                HashedInput {
                    source: "data/x".into(),
                    hash: input_hash.into(),
                    files: BTreeMap::new(),
                },
            )]),
            deps: BTreeMap::new(),
        }
    }

    #[test]
    fn fingerprint_ignores_key_order_and_input_location() {
        let a = ingredients(json!({"a": 1, "b": {"c": 2, "d": 3}}), "h");
        let mut b = ingredients(json!({"b": {"d": 3, "c": 2}, "a": 1}), "h");
        b.inputs.get_mut("data").unwrap().source = "elsewhere".into();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            a.fingerprint(),
            ingredients(json!({"a": 2}), "h").fingerprint()
        );
    }

    #[test]
    fn changes_name_the_field_and_the_input() {
        let old = ingredients(json!({"lr": 0.1, "lora": {"rank": 8}}), "h1");
        let new = ingredients(json!({"lr": 0.1, "lora": {"rank": 16}}), "h2");
        assert_eq!(
            new.changes_since(&old),
            [
                "parameter `lora.rank` changed (8 → 16)",
                "input `data` (data/x) changed"
            ]
        );
    }

    #[test]
    fn directory_changes_name_the_files() {
        let listing = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(p, h)| (p.to_string(), h.to_string()))
                .collect()
        };
        let mut old = ingredients(json!({}), "h1");
        let mut new = ingredients(json!({}), "h2");
        old.inputs.get_mut("data").unwrap().files = listing(&[("a", "1"), ("b", "1"), ("c", "1")]);
        new.inputs.get_mut("data").unwrap().files = listing(&[("a", "1"), ("b", "2"), ("d", "1")]);
        assert_eq!(
            new.changes_since(&old),
            ["input `data` (data/x) changed: b changed, d added, c removed"]
        );
    }
}
