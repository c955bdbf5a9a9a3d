//! Config errors, `dag`, `path` and `gc`.

mod common;

use common::{TestProject, chain, describe};

fn error_of(pipeline: &str) -> String {
    let p = TestProject::new(pipeline);
    let out = p.tf(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn unknown_keys_and_kinds_show_line_column_and_a_suggestion() {
    let err = error_of("[stages.s]\nuses = \"cmd\"\ncmnd = \"true\"\n");
    assert!(err.contains("pipeline.toml:3:1: unknown key `cmnd` in stage `s` (uses = \"cmd\"); did you mean `cmd`?"), "{err}");
    let err = error_of("[stages.s]\nuses = \"cmd\"\ncmd = \"true\"\ninput = { a = \"b\" }\n");
    assert!(
        err.contains("pipeline.toml:4:1: unknown key `input`")
            && err.contains("did you mean `inputs`?"),
        "{err}"
    );
    let err = error_of("[stages.s]\nuses = \"cdm\"\n");
    assert!(
        err.contains(
            "pipeline.toml:2:1: unknown stage kind `cdm` in stage `s`; did you mean `cmd`?"
        ),
        "{err}"
    );
    let err = error_of("[stages.s]\nuses = \"cmd\"\ncmd = \"true\"\ninputs = { x = \"@sss\" }\n");
    assert!(
        err.contains("pipeline.toml:4:12: input `x` of stage `s` names unknown stage `@sss`"),
        "{err}"
    );
    let err = error_of("[stages.s]\nuses = \"cmd\"\ncmd = \"true\"\nouts = 3\n");
    assert!(
        err.contains("pipeline.toml:4:1: stage `s` (uses = \"cmd\"), parameter `outs`"),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line per problem: {err}"
    );
    let err = error_of("[stages.s]\nuses = \"cmd\"\ncmd = [\n");
    assert!(err.contains("pipeline.toml:3:"), "{err}");
}

/// The default pipeline, where `eval` and `push` read `train`'s adapter.
#[cfg(feature = "ml-stages")]
const DEFAULT_PIPELINE: &str = include_str!("../../../pipeline.toml");

/// A typo in a train key is one message, not three: `eval` and `push` still find `@train`.
#[cfg(feature = "ml-stages")]
#[test]
fn one_mistake_gives_one_message() {
    let typo = DEFAULT_PIPELINE.replacen("learning_rate", "learnin_rate", 1);
    assert_ne!(
        typo, DEFAULT_PIPELINE,
        "the default train stage sets learning_rate"
    );
    let err = error_of(&typo);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one mistake, one message: {err}");
    assert!(
        lines[0].contains("unknown key `learnin_rate` in stage `train` (uses = \"train\")"),
        "{err}"
    );

    let two = typo.replacen("\"@train\"", "\"@trian\"", 1);
    assert_ne!(two, typo, "a stage reads @train");
    let err = error_of(&two);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "two mistakes, two messages: {err}");
    assert!(lines[0].contains("unknown key `learnin_rate`"), "{err}");
    assert!(
        lines[1].contains("names unknown stage `@trian`; did you mean `train`?"),
        "{err}"
    );
}

#[test]
fn cycles_are_named() {
    let err = error_of(
        "[stages.a]\nuses = \"cmd\"\ncmd = \"true\"\ninputs = { x = \"@b\" }\n\n[stages.b]\nuses = \"cmd\"\ncmd = \"true\"\ninputs = { y = \"@a\" }\n",
    );
    assert!(
        err.contains("pipeline.toml:4:1: stages form a cycle: a → b → a"),
        "{err}"
    );
}

#[test]
fn bad_overrides_are_usage_errors() {
    let p = chain();
    let out = p.tf(&["status", "--set", "aa.cmd=true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--set aa.cmd=true: no stage `aa`; did you mean `a`?")
    );
    let out = p.tf(&["run", "--only", "bb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `b`?"));
}

#[test]
fn dag_prints_text_dot_and_mermaid() {
    let p = chain();
    let text = p.ok(&["dag"]);
    assert_eq!(text, "a (cmd)\n└─ b (cmd)\n   └─ c (cmd)\nd (cmd)\n");
    assert!(
        p.ok(&["dag", "--format", "dot"])
            .contains("\"a\" -> \"b\";")
    );
    assert!(
        p.ok(&["dag", "--format", "mermaid"])
            .contains("  b --> c\n")
    );
}

#[test]
fn path_and_gc() {
    let p = chain();
    p.ran(&[]);
    let first = p.output("d");
    assert!(first.starts_with(p.root().canonicalize().unwrap()) || first.starts_with(p.root()));
    p.write("data/other.txt", "new");
    p.ran(&[]);
    assert!(first.exists(), "the old output stays until gc");
    let dry = p.ok(&["gc", "--dry-run"]);
    assert!(dry.contains("would remove 1 directories"), "{dry}");
    p.ok(&["gc"]);
    assert!(!first.exists() && p.output("d").exists());
    assert_eq!(p.ran(&[]), Vec::<String>::new());
}
