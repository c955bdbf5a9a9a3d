//! Feeds arbitrary text to the pipeline.toml parser and validator, with `--set` overrides.
//! It must never panic or hang; every problem is reported as one line with a position inside
//! the file, and every accepted pipeline orders into a DAG (or names a cycle).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tigerflow::config::parse_with;
use tigerflow::dag::Dag;
use tigerflow::overrides::Override;
use tigerflow_stage::Registry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // NUL never appears in a pipeline file, so it separates the file from `--set` arguments.
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let overrides: Vec<Override> = parts.filter_map(|raw| raw.parse().ok()).collect();

    let mut registry = Registry::new();
    tigerflow_cmd::register(&mut registry);
    match parse_with(source, "pipeline.toml", &registry, &overrides) {
        Ok(pipeline) => match Dag::new(&pipeline) {
            Ok(dag) => {
                let mut seen = vec![false; pipeline.stages.len()];
                for &i in dag.order() {
                    assert!(dag.parents(i).iter().all(|&p| seen[p]), "parent after child");
                    seen[i] = true;
                }
                assert!(seen.iter().all(|&s| s), "order misses a stage");
            }
            Err(cycle) => assert!(cycle.len() >= 2 && cycle.first() == cycle.last()),
        },
        Err(err) => {
            assert!(!err.diagnostics.is_empty());
            let lines = source.split('\n').count();
            for diagnostic in &err.diagnostics {
                let line = diagnostic.to_string();
                assert!(!line.contains('\n'), "{line:?}");
                if let Some(at) = diagnostic.at {
                    assert!(at.line >= 1 && at.line <= lines && at.column >= 1, "{line:?}");
                }
            }
        }
    }
});
