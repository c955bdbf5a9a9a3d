//! pipeline.toml → a typed, validated [`Pipeline`]. Every error points at a line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tigerflow_stage::{ParamError, Registry};
use toml_edit::Document;

use crate::dag::Dag;
use crate::overrides::Override;
use crate::span::{LineCol, line_col, locate};
use crate::suggest;

/// Keys of a stage table that are not parameters.
const RESERVED: [&str; 2] = ["uses", "inputs"];

/// A validated pipeline: stages in file order, with canonical parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub stages: Vec<StageDecl>,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&StageDecl> {
        self.stages.iter().find(|s| s.name == name)
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

/// One `[stages.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDecl {
    pub name: String,
    /// The stage kind (`uses`).
    pub kind: String,
    pub inputs: BTreeMap<String, InputRef>,
    /// Canonical parameters from `Stage::resolve_params`, `--set` overrides applied.
    pub params: serde_json::Value,
}

/// What an input names: a path relative to the project root, or another stage's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    Path(PathBuf),
    Stage { stage: String, sub: Option<PathBuf> },
}

impl InputRef {
    fn parse(text: &str) -> InputRef {
        match text.strip_prefix('@') {
            Some(rest) => match rest.split_once('/') {
                Some((stage, sub)) if !sub.is_empty() => InputRef::Stage {
                    stage: stage.to_string(),
                    sub: Some(PathBuf::from(sub)),
                },
                Some((stage, _)) => InputRef::Stage {
                    stage: stage.to_string(),
                    sub: None,
                },
                None => InputRef::Stage {
                    stage: rest.to_string(),
                    sub: None,
                },
            },
            None => InputRef::Path(PathBuf::from(text)),
        }
    }

    pub fn upstream(&self) -> Option<&str> {
        match self {
            InputRef::Stage { stage, .. } => Some(stage),
            InputRef::Path(_) => None,
        }
    }
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputRef::Path(p) => write!(f, "{}", p.display()),
            InputRef::Stage { stage, sub: None } => write!(f, "@{stage}"),
            InputRef::Stage {
                stage,
                sub: Some(sub),
            } => write!(f, "@{stage}/{}", sub.display()),
        }
    }
}

/// One problem in the configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name, or the `--set` argument the problem comes from.
    pub origin: String,
    pub at: Option<LineCol>,
    pub message: String,
}

/// A diagnostic is one line even when what it quotes (a quoted TOML key, a `--set` argument)
/// holds a newline or another control character: those are escaped.
impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (origin, message) = (one_line(&self.origin), one_line(&self.message));
        match self.at {
            Some(at) => write!(f, "{origin}:{at}: {message}"),
            None => write!(f, "{origin}: {message}"),
        }
    }
}

/// `text` with control characters escaped (`\n`, `\u{7}`), so that it prints on one line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.diagnostics.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Parses and validates pipeline.toml text named `pipeline.toml` in messages. A pure function
/// (no file system access), so that it can be fuzzed.
pub fn parse(source: &str, registry: &Registry) -> Result<Pipeline, ConfigError> {
    parse_with(source, "pipeline.toml", registry, &[])
}

/// Parses and validates pipeline.toml text, with `--set` overrides applied.
pub fn parse_with(
    source: &str,
    file_name: &str,
    registry: &Registry,
    overrides: &[Override],
) -> Result<Pipeline, ConfigError> {
    let mut checker = Checker {
        source,
        file_name,
        registry,
        overrides,
        doc: None,
        diagnostics: Vec::new(),
    };
    let pipeline = checker.check();
    match pipeline {
        Some(p) if checker.diagnostics.is_empty() => Ok(p),
        _ => Err(ConfigError {
            diagnostics: checker.diagnostics,
        }),
    }
}

struct Checker<'a> {
    source: &'a str,
    file_name: &'a str,
    registry: &'a Registry,
    overrides: &'a [Override],
    doc: Option<Document<&'a str>>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn invalid_toml(&mut self, offset: Option<usize>, message: &str) {
        self.diagnostics.push(Diagnostic {
            origin: self.file_name.to_string(),
            at: offset.map(|o| line_col(self.source, o)),
            message: format!("invalid TOML: {}", message.trim()),
        });
    }

    fn check(&mut self) -> Option<Pipeline> {
        // `toml` first: it gives plain tables for the stages' serde parameters, and it reports
        // malformed text without panicking (toml_edit 0.23 can panic on some invalid documents
        // with duplicate keys, found by fuzzing). toml_edit then supplies spans for messages.
        let table: toml::Table = match toml::from_str(self.source) {
            Ok(t) => t,
            Err(e) => {
                self.invalid_toml(e.span().map(|s| s.start), e.message());
                return None;
            }
        };
        match Document::parse(self.source) {
            Ok(doc) => self.doc = Some(doc),
            Err(e) => {
                self.invalid_toml(e.span().map(|s| s.start), e.message());
                return None;
            }
        }
        for key in table.keys().filter(|k| *k != "stages") {
            self.error_at(
                &[key],
                format!(
                    "unknown top-level key `{key}`{}; pipeline.toml holds only [stages.NAME] tables",
                    suggest::hint(key, ["stages"])
                ),
            );
        }
        let stages = match table.get("stages") {
            None => {
                self.error_at(&[], "no stages; fix: add a [stages.NAME] table".into());
                return None;
            }
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => {
                self.error_at(
                    &["stages"],
                    "`stages` must be a table of [stages.NAME] tables".into(),
                );
                return None;
            }
        };
        let mut decls = Vec::new();
        for (name, value) in &stages {
            if let Some(decl) = self.check_stage(name, value) {
                decls.push(decl);
            }
        }
        // Every declared stage can be referenced, even one that failed validation: its own
        // problem is reported once, and the stages that read its output do not repeat it as an
        // unknown `@stage` (one mistake, one message).
        let declared: Vec<&str> = stages.keys().map(String::as_str).collect();
        let pipeline = Pipeline { stages: decls };
        self.check_overrides_target_stages(&declared);
        self.check_references(&pipeline, &declared);
        if self.diagnostics.is_empty()
            && let Err(cycle) = Dag::new(&pipeline)
        {
            self.error_at(
                &["stages", &cycle[0], "inputs"],
                format!(
                    "stages form a cycle: {}; fix: remove one of these `@stage` inputs",
                    cycle.join(" → ")
                ),
            );
        }
        Some(pipeline)
    }

    /// The stage's declaration, or `None` when its name, kind or inputs are invalid. A stage
    /// whose parameters alone are invalid is still returned, with null parameters, so that the
    /// references in its inputs are checked too; the diagnostic makes the parse fail, so such a
    /// declaration never leaves the checker.
    fn check_stage(&mut self, name: &str, value: &toml::Value) -> Option<StageDecl> {
        let here = ["stages", name];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.error_at(
                &here,
                format!(
                    "stage name `{name}` may hold only letters, digits, `_` and `-`; fix: rename it"
                ),
            );
            return None;
        }
        let Some(table) = value.as_table() else {
            self.error_at(&here, format!("stage `{name}` must be a table"));
            return None;
        };
        let kind = match table.get("uses") {
            Some(toml::Value::String(kind)) => kind.clone(),
            Some(_) => {
                self.error_at(
                    &["stages", name, "uses"],
                    "`uses` must be a string naming a stage kind".into(),
                );
                return None;
            }
            None => {
                let kinds: Vec<_> = self.registry.kinds().collect();
                self.error_at(
                    &here,
                    format!(
                        "stage `{name}` has no `uses`; fix: add `uses = \"KIND\"` (kinds: {})",
                        kinds.join(", ")
                    ),
                );
                return None;
            }
        };
        let Some(stage) = self.registry.get(&kind) else {
            let kinds: Vec<_> = self.registry.kinds().collect();
            self.error_at(
                &["stages", name, "uses"],
                format!(
                    "unknown stage kind `{kind}` in stage `{name}`{} (known kinds: {})",
                    suggest::hint(&kind, kinds.iter().copied()),
                    kinds.join(", ")
                ),
            );
            return None;
        };
        let inputs = self.check_inputs(name, &kind, table.get("inputs"), stage.input_slots());
        let mut raw: toml::Table = table
            .iter()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for o in self.overrides.iter().filter(|o| o.stage == name) {
            if RESERVED.contains(&o.key[0].as_str()) {
                self.diagnostics.push(o.diagnostic(format!(
                    "`{}` cannot be overridden with --set; edit pipeline.toml instead",
                    o.key[0]
                )));
                continue;
            }
            o.apply(&mut raw);
        }
        let params = match stage.resolve_params(&raw) {
            Ok(params) => params,
            Err(e) => {
                self.param_error(name, &kind, e);
                serde_json::Value::Null
            }
        };
        Some(StageDecl {
            name: name.to_string(),
            kind,
            inputs: inputs?,
            params,
        })
    }

    fn check_inputs(
        &mut self,
        name: &str,
        kind: &str,
        value: Option<&toml::Value>,
        slots: Option<&'static [tigerflow_stage::InputSlot]>,
    ) -> Option<BTreeMap<String, InputRef>> {
        let mut inputs = BTreeMap::new();
        let mut ok = true;
        match value {
            None => {}
            Some(toml::Value::Table(t)) => {
                for (slot, v) in t {
                    let at = ["stages", name, "inputs", slot.as_str()];
                    let Some(text) = v.as_str() else {
                        self.error_at(
                            &at,
                            format!("input `{slot}` must be a string: a path, or `@stage`"),
                        );
                        ok = false;
                        continue;
                    };
                    if let Some(slots) = slots
                        && !slots.iter().any(|s| s.name == slot)
                    {
                        let names: Vec<_> = slots.iter().map(|s| s.name).collect();
                        self.error_at(
                            &at,
                            format!(
                                "unknown input `{slot}` for stage `{name}` (uses = \"{kind}\"){} (inputs: {})",
                                suggest::hint(slot, names.iter().copied()),
                                names.join(", ")
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    inputs.insert(slot.clone(), InputRef::parse(text));
                }
            }
            Some(_) => {
                self.error_at(
                    &["stages", name, "inputs"],
                    "`inputs` must be a table, e.g. `inputs = { data = \"@parse\" }`".into(),
                );
                ok = false;
            }
        }
        for slot in slots.unwrap_or_default() {
            if slot.required && !inputs.contains_key(slot.name) && ok {
                self.error_at(
                    &["stages", name],
                    format!(
                        "stage `{name}` (uses = \"{kind}\") needs input `{}` ({}); fix: add it under `inputs`",
                        slot.name, slot.help
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(inputs)
    }

    fn param_error(&mut self, stage: &str, kind: &str, e: ParamError) {
        let mut path: Vec<String> = e.path.clone();
        let message = match unknown_field(&e.message) {
            Some((field, expected)) => {
                if path.last() != Some(&field) {
                    path.push(field.clone());
                }
                format!(
                    "unknown key `{field}` in stage `{stage}` (uses = \"{kind}\"){}",
                    suggest::hint(&field, expected.iter().map(String::as_str).chain(RESERVED))
                )
            }
            None if path.is_empty() => {
                format!("stage `{stage}` (uses = \"{kind}\"): {}", e.message)
            }
            None => format!(
                "stage `{stage}` (uses = \"{kind}\"), parameter `{}`: {}",
                path.join("."),
                e.message
            ),
        };
        if let Some(o) = self
            .overrides
            .iter()
            .find(|o| o.stage == stage && path.starts_with(&o.key))
        {
            let d = o.diagnostic(message);
            self.diagnostics.push(d);
            return;
        }
        let mut full = vec!["stages", stage];
        full.extend(path.iter().map(String::as_str));
        self.error_at(&full, message);
    }

    /// `declared`: every `[stages.NAME]` table of the file, valid or not.
    fn check_overrides_target_stages(&mut self, declared: &[&str]) {
        for o in self.overrides {
            if !declared.contains(&o.stage.as_str()) {
                self.diagnostics.push(o.diagnostic(format!(
                    "no stage `{}`{}",
                    o.stage,
                    suggest::hint(&o.stage, declared.iter().copied())
                )));
            }
        }
    }

    /// `declared`: every `[stages.NAME]` table of the file, valid or not.
    fn check_references(&mut self, pipeline: &Pipeline, declared: &[&str]) {
        for decl in &pipeline.stages {
            for (slot, input) in &decl.inputs {
                let Some(up) = input.upstream() else { continue };
                let at = ["stages", decl.name.as_str(), "inputs", slot.as_str()];
                if up == decl.name {
                    self.error_at(&at, format!("stage `{up}` cannot read its own output"));
                } else if !declared.contains(&up) {
                    self.error_at(
                        &at,
                        format!(
                            "input `{slot}` of stage `{}` names unknown stage `@{up}`{}",
                            decl.name,
                            suggest::hint(up, declared.iter().copied())
                        ),
                    );
                }
            }
        }
    }

    fn error_at(&mut self, path: &[&str], message: String) {
        let at = self
            .doc
            .as_ref()
            .and_then(|doc| locate(doc, path))
            .map(|span| line_col(self.source, span.start));
        self.diagnostics.push(Diagnostic {
            origin: self.file_name.to_string(),
            at,
            message,
        });
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        // Found by fuzzing: toml_edit 0.23 panics ("all items have spans") on this input.
        let err = parse("==\n.=", &Registry::new()).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1);
        let line = err.to_string();
        assert!(
            line.starts_with("pipeline.toml:1:2: invalid TOML: "),
            "{line}"
        );
    }

    /// `split` → `train` → `eval`, and `push` reads both: the shape of the default pipeline,
    /// with `cmd` stages.
    const REFERENCED: &str = r#"
[stages.split]
uses = "cmd"
cmd = "true"

[stages.train]
uses = "cmd"
inputs = { data = "@split" }
cmd = "echo train"

[stages.eval]
uses = "cmd"
inputs = { data = "@split", adapter = "@train" }
cmd = "true"

[stages.push]
uses = "cmd"
inputs = { adapter = "@train", metrics = "@eval" }
cmd = "true"
"#;

    fn messages(source: &str) -> Vec<String> {
        let mut registry = Registry::new();
        tigerflow_cmd::register(&mut registry);
        match parse(source, &registry) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn one_mistake_in_a_referenced_stage_is_one_message() {
        assert_eq!(messages(REFERENCED), Vec::<String>::new());
        let typo = REFERENCED.replace("cmd = \"echo train\"", "cmnd = \"echo train\"");
        assert_eq!(
            messages(&typo),
            [
                "pipeline.toml:9:1: unknown key `cmnd` in stage `train` (uses = \"cmd\"); did you mean `cmd`?"
            ]
        );
        let kind = typo.replace(
            "[stages.train]\nuses = \"cmd\"",
            "[stages.train]\nuses = \"cdm\"",
        );
        let found = messages(&kind);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("unknown stage kind `cdm` in stage `train`"),
            "{found:?}"
        );
        let inputs = REFERENCED.replace("inputs = { data = \"@split\" }", "inputs = 3");
        let found = messages(&inputs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`inputs` must be a table"), "{found:?}");
    }

    #[test]
    fn independent_mistakes_are_each_reported() {
        let two = REFERENCED
            .replace("cmd = \"echo train\"", "cmnd = \"echo train\"")
            .replace("metrics = \"@eval\"", "metrics = \"@evl\"");
        assert_eq!(
            messages(&two),
            [
                "pipeline.toml:9:1: unknown key `cmnd` in stage `train` (uses = \"cmd\"); did you mean `cmd`?",
                "pipeline.toml:18:32: input `metrics` of stage `push` names unknown stage `@evl`; did you mean `eval`?",
            ]
        );
        // A stage with invalid parameters still has its own references checked.
        let same_stage = REFERENCED
            .replace("cmd = \"echo train\"", "cmnd = \"echo train\"")
            .replace("data = \"@split\" }", "data = \"@splt\" }");
        let found = messages(&same_stage);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("unknown key `cmnd` in stage `train`"),
            "{found:?}"
        );
        assert!(
            found[1].contains("names unknown stage `@splt`"),
            "{found:?}"
        );
    }

    #[test]
    fn splits_unknown_field_messages() {
        let (field, expected) =
            unknown_field("unknown field `lr`, expected one of `learning_rate`, `epochs`").unwrap();
        assert_eq!(field, "lr");
        assert_eq!(expected, ["learning_rate", "epochs"]);
        assert_eq!(unknown_field("invalid type"), None);
    }

    #[test]
    fn parses_input_references() {
        assert_eq!(
            InputRef::parse("data/x.json"),
            InputRef::Path("data/x.json".into())
        );
        assert_eq!(
            InputRef::parse("@chunk/report.json"),
            InputRef::Stage {
                stage: "chunk".into(),
                sub: Some("report.json".into())
            }
        );
        assert_eq!(
            InputRef::parse("@chunk"),
            InputRef::Stage {
                stage: "chunk".into(),
                sub: None
            }
        );
    }
}
