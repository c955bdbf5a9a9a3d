//! Runs the command and turns its exit status and stderr into a `StageError`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use tigerflow_stage::{Context, Reporter, StageError};

use crate::CmdParams;

/// How many trailing stderr lines a failure message quotes.
const STDERR_TAIL: usize = 10;

pub(crate) fn run(params: &CmdParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&params.cmd)
        .current_dir(ctx.root)
        .env("TF_OUT", ctx.out_dir)
        .env("TF_ROOT", ctx.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (slot, path) in &ctx.inputs {
        command.env(format!("TF_IN_{}", env_name(slot)), path);
    }
    for (key, value) in &params.params {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        command.env(format!("TF_PARAM_{}", env_name(key)), text);
    }
    command.envs(&params.env);

    ctx.reporter.begin("command", None, "");
    ctx.reporter.log(&format!("$ {}", params.cmd));
    let mut child = command
        .spawn()
        .map_err(|e| StageError::io("cannot start `sh` for the cmd stage", e))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = Mutex::new(VecDeque::with_capacity(STDERR_TAIL));
    let reporter = ctx.reporter;
    // Both pipes are drained at once so that neither can fill up and block the child.
    std::thread::scope(|scope| {
        scope.spawn(|| forward(stdout, reporter, None));
        scope.spawn(|| forward(stderr, reporter, Some(&tail)));
    });
    let status = child
        .wait()
        .map_err(|e| StageError::io("waiting for the command", e))?;
    if status.success() {
        return Ok(());
    }
    let code = status
        .code()
        .map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
    let tail: Vec<String> = tail.into_inner().unwrap_or_default().into();
    let detail = if tail.is_empty() {
        String::from("no output on stderr")
    } else {
        format!("last stderr lines:\n  {}", tail.join("\n  "))
    };
    Err(StageError::Failed(format!(
        "command exited with {code}; fix the command or its inputs ({detail})"
    )))
}

/// Sends each line to the stage log and, for stderr, keeps the last few for the error.
fn forward(pipe: impl Read, reporter: &dyn Reporter, tail: Option<&Mutex<VecDeque<String>>>) {
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        reporter.log(&line);
        if let Some(tail) = tail {
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// `my-slot.x` → `MY_SLOT_X`: environment variable names allow only letters, digits and `_`.
pub(crate) fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    struct Quiet;
    impl Reporter for Quiet {
        fn begin(&self, _: &str, _: Option<u64>, _: &str) {}
        fn set_position(&self, _: u64) {}
        fn set_message(&self, _: &str) {}
        fn log(&self, _: &str) {}
    }

    fn run_cmd(cmd: &str, root: &Path, out: &Path) -> Result<(), StageError> {
        let params = CmdParams {
            cmd: cmd.into(),
            params: BTreeMap::from([("lr".into(), serde_json::json!(0.5))]),
            ..CmdParams::default()
        };
        let value = serde_json::to_value(&params).unwrap();
        let mut ctx = Context {
            stage_name: "t",
            params: &value,
            inputs: BTreeMap::from([("my-data".into(), root.join("in.txt"))]),
            out_dir: out,
            root,
            cache_dir: root,
            reporter: &Quiet,
        };
        run(&params, &mut ctx)
    }

    #[test]
    fn exports_inputs_outputs_and_params() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        run_cmd(
            "echo \"$TF_IN_MY_DATA $TF_PARAM_LR\" > \"$TF_OUT/o.txt\"",
            dir.path(),
            &out,
        )
        .unwrap();
        let text = std::fs::read_to_string(out.join("o.txt")).unwrap();
        assert_eq!(
            text.trim(),
            format!("{} 0.5", dir.path().join("in.txt").display())
        );
    }

    #[test]
    fn failure_names_exit_code_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_cmd("echo boom >&2; exit 3", dir.path(), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("code 3") && text.contains("boom"), "{text}");
    }

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("my-slot.x"), "MY_SLOT_X");
    }
}
