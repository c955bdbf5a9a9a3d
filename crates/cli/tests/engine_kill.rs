//! `kill -9` at random moments, then `run` again: every stage the lock marks done has its
//! complete output, and the final run finishes correctly.

mod common;

use std::time::Duration;

use common::{TestProject, stages_in};

/// Each stage writes its output slowly, in pieces, so that kills land mid-write.
const PIPELINE: &str = r#"
[stages.one]
uses = "cmd"
inputs = { seed = "data/seed.txt" }
cmd = "for i in 1 2 3 4 5; do cat $TF_IN_SEED >> $TF_OUT/one.txt; sleep 0.01; done"
outs = ["one.txt"]

[stages.two]
uses = "cmd"
inputs = { one = "@one" }
cmd = "for i in 1 2 3; do cat $TF_IN_ONE/one.txt >> $TF_OUT/two.txt; sleep 0.01; done"
outs = ["two.txt"]

[stages.side]
uses = "cmd"
inputs = { seed = "data/seed.txt" }
cmd = "sleep 0.02; wc -c < $TF_IN_SEED | tr -d ' ' > $TF_OUT/side.txt"
outs = ["side.txt"]

[stages.last]
uses = "cmd"
inputs = { two = "@two", side = "@side" }
cmd = "cat $TF_IN_TWO/two.txt $TF_IN_SIDE/side.txt > $TF_OUT/last.txt; sleep 0.01"
outs = ["last.txt"]
"#;

/// The content every stage must have for a given seed.
fn expected(seed: &str) -> [(&'static str, &'static str, String); 4] {
    let one = seed.repeat(5);
    let two = one.repeat(3);
    let side = format!("{}\n", seed.len());
    let last = format!("{two}{side}");
    [
        ("one", "one.txt", one),
        ("two", "two.txt", two),
        ("side", "side.txt", side),
        ("last", "last.txt", last),
    ]
}

/// Every stage recorded in the lock has a complete, correct output for some seed already used.
fn check_lock(p: &TestProject, seeds: &[String]) {
    let Ok(text) = std::fs::read_to_string(p.root().join("pipeline.lock")) else {
        return;
    };
    let lock: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("corrupt lock: {e}\n{text}"));
    for (stage, entry) in lock["stages"].as_table().unwrap() {
        let dir = p.root().join(entry["output"].as_str().unwrap());
        let (_, file, _) = expected("x")
            .into_iter()
            .find(|(s, _, _)| s == stage)
            .unwrap();
        let content = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
            panic!(
                "stage {stage} is in the lock but {} is unreadable: {e}",
                dir.display()
            )
        });
        let valid = seeds.iter().any(|seed| {
            expected(seed)
                .iter()
                .any(|(s, _, c)| s == stage && *c == content)
        });
        assert!(valid, "stage {stage}: partial or wrong output {content:?}");
    }
}

/// A small deterministic generator (no extra dependency for tests).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn kill_loop(iterations: usize) {
    let p = TestProject::new(PIPELINE);
    let mut rng = Lcg(iterations as u64);
    let mut seeds = Vec::new();
    for i in 0..iterations {
        // Every few rounds the input changes, so that kills also hit re-runs and commits.
        if i % 3 == 0 {
            let seed = format!("seed{i};");
            p.write("data/seed.txt", &seed);
            seeds.push(seed);
        }
        let mut child = p
            .command(&["run", "--jobs", "2"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        let _ = child.kill();
        let _ = child.wait();
        check_lock(&p, &seeds);
    }
    let out = p.ok(&["--json", "run"]);
    assert!(stages_in(&out, "failed").is_empty(), "{out}");
    let seed = seeds.last().unwrap();
    for (stage, file, content) in expected(seed) {
        assert_eq!(p.output_file(stage, file), content, "stage {stage}");
    }
    let status = p.ok(&["--json", "status"]);
    assert_eq!(stages_in(&status, "fresh").len(), 4, "{status}");
}

#[test]
fn kill_9_twenty_times_then_run_finishes_correctly() {
    kill_loop(20);
}

/// The long version, run by benches/engine/kill-loop.sh.
#[test]
#[ignore = "slow: run by benches/engine/kill-loop.sh"]
fn kill_9_a_hundred_times() {
    kill_loop(100);
}
