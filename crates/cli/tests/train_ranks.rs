//! Data-parallel training through the real binary, on CPU ranks: the train stage starts two
//! `tigerflow train-rank` processes (or a launcher does, as `srun` would on a cluster), and the
//! run's losses equal one process's on the same global batch, with dropout on.

#![cfg(feature = "ml-stages")]

mod common;

use std::path::Path;

use common::{TestProject, describe};

fn model_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../llm/tests/fixtures/gqa_tied")
        .display()
        .to_string()
}

/// A project training the tiny model for `steps` steps of 4 rows each; `extra` adds train
/// parameters.
fn project(steps: usize, extra: &str) -> TestProject {
    let p = TestProject::new(&format!(
        "[stages.train]\nuses = \"train\"\ninputs = {{ data = \"split\" }}\nbase_model = \"{}\"\nsequence_len = 48\nlora_r = 4\nmax_steps = {steps}\nwarmup_steps = 1\nlearning_rate = 1e-2\neval_steps = 2\nmicro_batch_size = 2\nlora_dropout = 0.1\n{extra}",
        model_dir()
    ));
    let line = |i: usize| {
        format!(
            "{{\"text\": \"### Ana: Olá {i}, tudo bem?\\n### Rui: Tudo, e contigo? Até {i}.\"}}\n"
        )
    };
    p.write("split/train.jsonl", &(0..20).map(line).collect::<String>());
    p.write("split/test.jsonl", &(20..23).map(line).collect::<String>());
    p
}

/// (step, loss, eval loss) of every line of the train stage's metrics.jsonl.
fn curve(p: &TestProject) -> Vec<(u64, Option<f64>, Option<f64>)> {
    p.output_file("train", "metrics.jsonl")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64(),
                v["eval_loss"].as_f64(),
            )
        })
        .collect()
}

fn assert_same_curve(a: &TestProject, b: &TestProject) {
    let (a, b) = (curve(a), curve(b));
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    let near = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-4 * y.abs(),
        (x, y) => x == y,
    };
    for (x, y) in a.iter().zip(&b) {
        assert!(
            x.0 == y.0 && near(x.1, y.1) && near(x.2, y.2),
            "{x:?} vs {y:?}"
        );
    }
}

#[test]
fn two_rank_processes_train_like_one_process_on_the_same_global_batch() {
    let alone = project(4, "gradient_accumulation_steps = 2\n");
    alone.ok(&["run"]);
    let ranks = project(
        4,
        "gradient_accumulation_steps = 1\ndevices = [\"cpu\", \"cpu\"]\n",
    );
    let out = ranks.tf(&["run"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("training on 2 ranks"),
        "{}",
        describe(&out)
    );
    assert_same_curve(&ranks, &alone);
    let report: serde_json::Value =
        serde_json::from_str(&ranks.output_file("train", "train_report.json")).unwrap();
    assert_eq!(report["ranks"], 2);
    let dir = ranks.output("train");
    assert!(dir.join("adapter/adapter_model.safetensors").exists());
    assert!(dir.join("ranks/rank-1.log").exists());
}

/// A stand-in for `srun --ntasks=2`: starts its arguments twice with SLURM's task variables.
const FAKE_SRUN: &str = r#"n=${TASKS:-2}; i=0; pids=""
while [ $i -lt $n ]; do SLURM_PROCID=$i SLURM_NTASKS=$n SLURM_LOCALID=0 "$@" & pids="$pids $!"; i=$((i+1)); done
status=0; for p in $pids; do wait $p || status=1; done; exit $status
"#;

#[test]
fn a_launcher_starts_the_ranks_of_two_hosts() {
    let alone = project(4, "gradient_accumulation_steps = 2\n");
    alone.ok(&["run"]);
    let hosts = project(
        4,
        "gradient_accumulation_steps = 1\ndevices = [\"cpu\"]\nhosts = 2\nlauncher = [\"sh\", \"fake-srun.sh\"]\n",
    );
    hosts.write("fake-srun.sh", FAKE_SRUN);
    let out = hosts.tf(&["run"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_curve(&hosts, &alone);
}

#[test]
fn a_launcher_starting_too_few_ranks_fails_with_the_fix() {
    let p = project(
        4,
        "devices = [\"cpu\"]\nhosts = 2\nlauncher = [\"sh\", \"fake-srun.sh\"]\n",
    );
    p.write("fake-srun.sh", &format!("TASKS=1\n{FAKE_SRUN}"));
    let out = p.tf(&["run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rank 0: WORLD_SIZE=1 but the train stage has hosts × devices = 2 ranks; fix: start 2 ranks"),
        "{stderr}"
    );
}

#[test]
fn the_benchmark_runs_ranks_and_reports_the_whole_steps_loss() {
    let p = TestProject::new("");
    let bench = |device: &str, accumulation: &str| {
        let out = p.ok(&[
            "bench",
            "train",
            "--shape",
            "tiny",
            "--sequence-len",
            "64",
            "--micro-batch-size",
            "2",
            "--warmup-steps",
            "1",
            "--steps",
            "2",
            "--device",
            device,
            "--gradient-accumulation-steps",
            accumulation,
        ]);
        let line = |key: &str| {
            out.lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
                .to_owned()
        };
        (line("loss"), line("batch"), line("breakdown"))
    };
    let (alone, _, _) = bench("cpu", "4");
    let (ranked, batch, breakdown) = bench("cpu,cpu", "2");
    assert_eq!(
        ranked, alone,
        "two ranks of two micro-batches = one process of four"
    );
    assert!(batch.contains("x 2 micro-batches x 2 ranks"), "{batch}");
    assert!(breakdown.contains("all-reduce"), "{breakdown}");
}

/// `tigerflow run` on `p` in the background, its output discarded.
fn start_run(p: &TestProject) -> std::process::Child {
    p.command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The rank processes of `p`'s runs that are alive, by their command line.
fn live_ranks(p: &TestProject) -> Vec<String> {
    let root = p.root().to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .filter(|line| line.contains("train-rank") && line.contains(&root))
        .collect()
}

#[test]
fn ranks_stop_when_the_stage_process_is_killed() {
    // Far more steps than the test waits for.
    let p = project(
        100_000,
        "gradient_accumulation_steps = 1\ndevices = [\"cpu\", \"cpu\"]\n",
    );
    let mut run = start_run(&p);
    let waited = std::time::Instant::now();
    while live_ranks(&p).len() < 2 {
        assert!(waited.elapsed().as_secs() < 60, "the ranks did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let killed = std::time::Instant::now();
    while !live_ranks(&p).is_empty() {
        assert!(
            killed.elapsed().as_secs() < 30,
            "ranks outlived the killed stage: {:?}",
            live_ranks(&p)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The `checkpoints/latest` file of `p`'s train stage while it runs (in its staging folder).
fn staged_checkpoint(p: &TestProject) -> Option<String> {
    let staging = p.root().join("artifacts/.staging");
    std::fs::read_dir(staging)
        .ok()?
        .flatten()
        .find_map(|dir| std::fs::read_to_string(dir.path().join("checkpoints/latest")).ok())
}

#[test]
fn a_killed_two_rank_run_resumes_from_rank_0s_checkpoint_to_the_same_end() {
    let long = "gradient_accumulation_steps = 1\ndevices = [\"cpu\", \"cpu\"]\nsave_steps = 5\n";
    let straight = project(40, long);
    straight.ok(&["run"]);

    let cut = project(40, long);
    let mut run = start_run(&cut);
    let waited = std::time::Instant::now();
    while staged_checkpoint(&cut).is_none() {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(waited.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();

    let out = cut.tf(&["run"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming from the checkpoint at step"),
        "{}",
        describe(&out)
    );
    assert_same_curve(&cut, &straight);
}
