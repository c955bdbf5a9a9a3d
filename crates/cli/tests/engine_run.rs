//! Caching behaviour of `tigerflow run` on pipelines of `cmd` stages.

mod common;

use common::{TestProject, chain, describe, stages_in};

#[test]
fn first_run_runs_all_and_a_rerun_runs_nothing() {
    let p = chain();
    assert_eq!(p.ran(&[]), ["a", "b", "c", "d"]);
    assert_eq!(p.output_file("c", "final.txt").trim(), "5");
    assert_eq!(p.ran(&[]), Vec::<String>::new());
    let status = p.ok(&["--json", "status"]);
    assert_eq!(stages_in(&status, "fresh"), ["a", "b", "c", "d"]);
}

#[test]
fn editing_an_input_reruns_exactly_its_downstream() {
    let p = chain();
    p.ran(&[]);
    p.write("data/in.txt", "hello world");
    let status = p.ok(&["status"]);
    assert!(
        status.contains("input `text` (data/in.txt) changed"),
        "{status}"
    );
    assert_eq!(p.ran(&[]), ["a", "b", "c"]);
    assert_eq!(p.output_file("c", "final.txt").trim(), "11");
}

#[test]
fn a_changed_file_inside_a_directory_input_is_named() {
    let p = TestProject::new(
        "[stages.s]\nuses = \"cmd\"\ninputs = { dir = \"data\" }\ncmd = \"cat $TF_IN_DIR/* > $TF_OUT/all\"\nouts = [\"all\"]\n\n[stages.t]\nuses = \"cmd\"\ninputs = { s = \"@s\" }\ncmd = \"cp $TF_IN_S/all $TF_OUT/\"\nouts = [\"all\"]\n",
    );
    p.write("data/a.txt", "1");
    p.write("data/b.txt", "1");
    p.ran(&[]);
    p.write("data/b.txt", "2");
    p.write("data/c.txt", "3");
    let status = p.ok(&["status"]);
    assert!(
        status.contains("s  stale: input `dir` (data) changed: b.txt changed, c.txt added"),
        "{status}"
    );
    assert_eq!(p.ran(&["--to", "s"]), ["s"]);
    let status = p.ok(&["status"]);
    assert!(
        status.contains("t  stale: input `s` (@s) changed: all changed"),
        "{status}"
    );
}

#[test]
fn an_unchanged_output_stops_propagation() {
    let p = chain();
    p.ran(&[]);
    // Same length: `a` re-runs, `b` re-runs on different bytes but counts the same, so `c` is cut off.
    p.write("data/in.txt", "jello");
    let out = p.ok(&["--json", "run"]);
    assert_eq!(stages_in(&out, "ran"), ["a", "b"]);
    assert_eq!(stages_in(&out, "fresh"), ["c", "d"]);
}

#[test]
fn a_parameter_change_names_the_field_and_an_old_config_comes_back_from_the_run_cache() {
    let p = TestProject::new(
        r#"
[stages.gen]
uses = "cmd"
cmd = "echo \"$TF_PARAM_N\" > \"$TF_OUT/n.txt\""
outs = ["n.txt"]
params = { n = 1 }

[stages.use]
uses = "cmd"
inputs = { n = "@gen" }
cmd = "cat \"$TF_IN_N/n.txt\" > \"$TF_OUT/copy.txt\""
outs = ["copy.txt"]
"#,
    );
    assert_eq!(p.ran(&[]), ["gen", "use"]);
    let plan = p.ok(&["run", "--dry-run", "--set", "gen.params.n=2"]);
    assert!(
        plan.contains("gen  would run: parameter `params.n` changed (1 → 2)"),
        "{plan}"
    );
    assert!(
        plan.contains("use  would run: upstream stage `gen` will re-run"),
        "{plan}"
    );
    assert_eq!(p.ran(&["--set", "gen.params.n=2"]), ["gen", "use"]);
    assert_eq!(p.output_file("use", "copy.txt").trim(), "2");
    // Back to the file's value: both outputs are still in the store.
    let out = p.ok(&["--json", "run"]);
    assert_eq!(stages_in(&out, "restored"), ["gen", "use"]);
    assert_eq!(p.output_file("use", "copy.txt").trim(), "1");
}

#[test]
fn from_to_only_force_and_dry_run_select_stages() {
    let p = chain();
    assert_eq!(p.ran(&["--to", "b"]), ["a", "b"]);
    assert_eq!(p.ran(&["--only", "d"]), ["d"]);
    assert_eq!(p.ran(&[]), ["c"]);
    assert_eq!(p.ran(&["--from", "b"]), ["b", "c"]);
    assert_eq!(p.ran(&["--force", "--only", "a"]), ["a"]);
    let plan = p.ok(&["run", "--dry-run", "--force"]);
    assert!(plan.contains("a  would run: forced by --force"), "{plan}");
    assert_eq!(p.ran(&["--dry-run", "--force"]), Vec::<String>::new());
    assert_eq!(p.ran(&[]), Vec::<String>::new());
}

#[test]
fn only_needs_committed_inputs() {
    let p = chain();
    let out = p.tf(&["run", "--only", "b"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("needs the output of stage `a`, which has not run"),
        "{stdout}"
    );
}

#[test]
fn independent_stages_overlap_in_time() {
    let stage = |name: &str| {
        format!(
            "[stages.{name}]\nuses = \"cmd\"\ncmd = \"date +%s%N > $TF_OUT/start; sleep 1; date +%s%N > $TF_OUT/end\"\nouts = [\"start\", \"end\"]\n"
        )
    };
    let p = TestProject::new(&format!("{}\n{}", stage("x"), stage("y")));
    p.ran(&["--jobs", "2"]);
    let time = |s: &str, f: &str| p.output_file(s, f).trim().parse::<u128>().unwrap();
    let (xs, xe, ys, ye) = (
        time("x", "start"),
        time("x", "end"),
        time("y", "start"),
        time("y", "end"),
    );
    assert!(
        xs < ye && ys < xe,
        "x [{xs}, {xe}] and y [{ys}, {ye}] do not overlap"
    );
}

#[test]
fn a_failing_stage_stops_its_downstream_and_keeps_committed_outputs() {
    let p = chain();
    p.ran(&[]);
    let before = p.output("b");
    p.write(
        "pipeline.toml",
        &common::CHAIN.replace("wc -c <", "echo broken >&2; exit 7; wc -c <"),
    );
    p.write("data/in.txt", "changed");
    p.write("data/other.txt", "changed too");
    let out = p.tf(&["--json", "run"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stages_in(&stdout, "ran"), ["a", "d"]);
    assert_eq!(stages_in(&stdout, "failed"), ["b"]);
    assert_eq!(stages_in(&stdout, "skipped"), ["c"]);
    assert!(
        stdout.contains("code 7") && stdout.contains("broken"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAILED b") && stderr.contains(".tigerflow/logs/b.log"),
        "{stderr}"
    );
    assert_eq!(p.output("b"), before);
    assert_eq!(
        std::fs::read_to_string(before.join("count.txt"))
            .unwrap()
            .trim(),
        "5"
    );
}

#[test]
fn a_missing_declared_output_fails_the_stage() {
    let p =
        TestProject::new("[stages.s]\nuses = \"cmd\"\ncmd = \"true\"\nouts = [\"result.txt\"]\n");
    let out = p.tf(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("declared output `result.txt` was not produced")
    );
    assert!(p.tf(&["path", "s"]).status.code() == Some(1));
}

#[test]
fn a_changed_committed_output_is_rebuilt() {
    let p = chain();
    p.ran(&[]);
    std::fs::write(p.output("d").join("copy.txt"), "tampered").unwrap();
    assert_eq!(p.ran(&[]), ["d"]);
    assert_eq!(p.output_file("d", "copy.txt"), "other");
}

#[test]
fn secrets_stay_out_of_logs_and_the_lock() {
    let p = TestProject::new(
        "[stages.s]\nuses = \"cmd\"\ncmd = \"echo token=$HF_TOKEN >&2; echo ok > $TF_OUT/o\"\nouts = [\"o\"]\n",
    );
    let out = p
        .command(&["run"])
        .env("HF_TOKEN", "hf_secretvalue123")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token=***") && !stderr.contains("hf_secretvalue123"),
        "{stderr}"
    );
    assert!(
        !p.read(".tigerflow/logs/s.log")
            .contains("hf_secretvalue123")
    );
    assert!(!p.read("pipeline.lock").contains("hf_secretvalue123"));
}

#[test]
fn a_second_run_waits_or_fails_with_no_wait() {
    let p = TestProject::new(
        "[stages.slow]\nuses = \"cmd\"\ncmd = \"touch started; sleep 2; echo > $TF_OUT/o\"\nouts = [\"o\"]\n",
    );
    let mut first = p.command(&["run"]).spawn().unwrap();
    while !p.root().join("started").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let busy = p.tf(&["run", "--no-wait"]);
    assert_eq!(busy.status.code(), Some(1), "{}", describe(&busy));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("another tigerflow run"));
    // Without --no-wait the second run queues, then finds everything fresh.
    let second = p.tf(&["--json", "run"]);
    assert!(first.wait().unwrap().success());
    assert!(second.status.success(), "{}", describe(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("waiting for another tigerflow run"),
        "{stderr}"
    );
    assert_eq!(
        stages_in(&String::from_utf8_lossy(&second.stdout), "fresh"),
        ["slow"]
    );
}
