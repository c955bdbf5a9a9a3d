//! Starting and watching the ranks of a data-parallel run.
//!
//! Ranks are processes of this same binary, one per device, as torchrun starts them: a process
//! per GPU keeps each replica's CUDA state apart and is what a cluster launcher starts on other
//! hosts. They are started on this host ([`local_ranks`]) or by a configured launcher
//! ([`launcher`]); [`supervise`] relays rank 0's progress and stops every rank when one fails.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tigerflow_stage::Reporter;

use crate::rank_env::RankEnv;
use crate::rank_report::RankLine;

/// The torchrun variables a launcher must set per rank itself (SLURM's stand in for them);
/// values inherited from a surrounding job would give every rank the same ones.
const PER_RANK_VARS: [&str; 3] = ["RANK", "WORLD_SIZE", "LOCAL_RANK"];

/// Set for ranks started on this host: they stop when their stdin closes, which happens when the
/// stage's process ends, even by `kill -9` (a killed parent takes no children with it, and an
/// orphaned rank would go on writing into the output folder that the next run resumes from).
const WATCH_PARENT: &str = "TIGERFLOW_RANK_WATCH_STDIN";

/// In a rank started by [`local_ranks`], ends the process when its starter is gone.
pub fn stop_with_parent() {
    if std::env::var_os(WATCH_PARENT).is_none() {
        return;
    }
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = [0u8; 64];
        while matches!(std::io::Read::read(&mut stdin, &mut buffer), Ok(n) if n > 0) {}
        eprintln!("error: the process that started this rank ended; stopping");
        std::process::exit(1);
    });
}

/// Why ranks could not be started, or how they failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Start {
        what: String,
        source: std::io::Error,
    },
    #[error("choosing MASTER_PORT: {0}")]
    Port(std::io::Error),
    #[error("cannot read this host's name ({0}); fix: set MASTER_ADDR to the host of rank 0")]
    HostName(std::io::Error),
    /// A process ended badly: the reason it reported (or its log shows), and its log.
    #[error("{reason} (log: {})", log.display())]
    Failed { reason: String, log: PathBuf },
}

/// A process to start: what it is called in messages, where its stderr goes.
pub struct Launch {
    what: String,
    log: PathBuf,
    command: Command,
}

/// A cluster launcher (`launcher[0]` with the arguments after it, run from `root`) that starts
/// `rank_command` once per rank, on its hosts, with the per-rank variables it sets itself;
/// `MASTER_ADDR` and `MASTER_PORT` default to this host and a free port.
pub fn launcher(
    launcher: &[String],
    root: &Path,
    rank_command: Command,
    log: PathBuf,
    library_path: Option<&OsStr>,
) -> Result<Launch, LaunchError> {
    let (program, args) = launcher
        .split_first()
        .expect("a launcher names at least its program");
    let mut command = Command::new(program);
    // Like every path in parameters, a launcher script is found from the project root.
    command
        .current_dir(root)
        .args(args)
        .arg(rank_command.get_program())
        .args(rank_command.get_args());
    for var in PER_RANK_VARS {
        command.env_remove(var);
    }
    if std::env::var_os("MASTER_ADDR").is_none() {
        command.env("MASTER_ADDR", host_name()?);
    }
    if std::env::var_os("MASTER_PORT").is_none() {
        command.env("MASTER_PORT", free_port()?.to_string());
    }
    if let Some(path) = library_path {
        command.env("LD_LIBRARY_PATH", path);
    }
    Ok(Launch {
        what: format!("launcher `{}`", launcher.join(" ")),
        log,
        command,
    })
}

/// `ranks` ranks on this host (rank = local rank), meeting at a free local port, each started by
/// `rank_command` and logging its stderr into `logs`; `library_path` is their `LD_LIBRARY_PATH`
/// when set (see `nccl_lib::library_path`).
pub fn local_ranks(
    rank_command: impl Fn() -> Command,
    ranks: usize,
    logs: &Path,
    library_path: Option<&OsStr>,
) -> Result<Vec<Launch>, LaunchError> {
    let port = free_port()?;
    Ok((0..ranks)
        .map(|local_rank| {
            let env = RankEnv {
                rank: local_rank,
                world_size: ranks,
                local_rank,
                master_addr: "127.0.0.1".into(),
                master_port: port,
            };
            let mut command = rank_command();
            command.envs(env.vars()).env(WATCH_PARENT, "1");
            if let Some(path) = library_path {
                command.env("LD_LIBRARY_PATH", path);
            }
            Launch {
                what: format!("rank {local_rank}"),
                log: logs.join(format!("rank-{local_rank}.log")),
                command,
            }
        })
        .collect())
}

/// Runs `launches` to the end, relaying their stdout to `reporter`. When one fails, the others
/// are stopped (a rank waiting for a dead peer would wait forever) and the first failure a rank
/// reported is returned.
pub fn supervise(launches: Vec<Launch>, reporter: &dyn Reporter) -> Result<(), LaunchError> {
    let mut running: Vec<(String, PathBuf, Child)> = Vec::new();
    let stop_all = |running: &mut Vec<(String, PathBuf, Child)>| {
        for (_, _, child) in running.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    };
    for Launch {
        what,
        log,
        mut command,
    } in launches
    {
        let stderr = std::fs::File::create(&log).map_err(|source| LaunchError::Log {
            path: log.clone(),
            source,
        })?;
        // The stdin pipes stay open until this function returns: see `WATCH_PARENT`.
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        match command.spawn() {
            Ok(child) => running.push((what, log, child)),
            Err(source) => {
                stop_all(&mut running);
                return Err(LaunchError::Start { what, source });
            }
        }
    }
    // Readers are detached: a launcher's tasks may outlive a killed launcher and keep its
    // stdout open, and waiting for them would hang the stage.
    let (lines, received) = mpsc::channel::<String>();
    for (_, _, child) in &mut running {
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(lines);
    let mut reported = None;
    let mut relay = |line: String| {
        if let Some(failure) = RankLine::parse(&line).relay(reporter) {
            reported.get_or_insert(failure);
        }
    };
    let failure = loop {
        while let Ok(line) = received.try_recv() {
            relay(line);
        }
        match poll(&mut running) {
            Poll::Running => std::thread::sleep(Duration::from_millis(50)),
            Poll::Succeeded => break None,
            Poll::Failed(failure) => break Some(failure),
        }
    };
    if failure.is_some() {
        stop_all(&mut running);
    }
    // What the processes printed last: until every pipe closed, or a quiet moment.
    while let Ok(line) = received.recv_timeout(Duration::from_secs(2)) {
        relay(line);
    }
    match failure {
        None => Ok(()),
        Some((what, log, status)) => {
            let reason = reported
                .or_else(|| reason_in_log(&log))
                .unwrap_or_else(|| format!("{what} ended: {status}"));
            Err(LaunchError::Failed { reason, log })
        }
    }
}

enum Poll {
    Running,
    Succeeded,
    /// Which process ended badly, its log, and how it ended.
    Failed((String, PathBuf, String)),
}

/// Whether every process ended well, one ended badly, or some still run.
fn poll(running: &mut [(String, PathBuf, Child)]) -> Poll {
    let mut done = 0;
    for (what, log, child) in running.iter_mut() {
        let ended = match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                done += 1;
                continue;
            }
            Ok(Some(status)) => status.to_string(),
            Ok(None) => continue,
            Err(e) => e.to_string(),
        };
        return Poll::Failed((what.clone(), log.clone(), ended));
    }
    if done == running.len() {
        Poll::Succeeded
    } else {
        Poll::Running
    }
}

/// What a log says went wrong: a panic's message (Rust prints it after "panicked at …", before
/// its hint about backtraces or the backtrace itself), else the last line that says something.
fn reason_in_log(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    if let Some(at) = lines
        .iter()
        .rposition(|line| line.contains(" panicked at "))
    {
        let message: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|line| !line.starts_with("note: ") && !line.starts_with("stack backtrace:"))
            .copied()
            .collect();
        if !message.is_empty() {
            return Some(message.join(" "));
        }
    }
    lines
        .iter()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| line.to_string())
}

/// A TCP port free right now, for rank 0 to listen on.
fn free_port() -> Result<u16, LaunchError> {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(LaunchError::Port)
}

/// This host's name, which ranks on other hosts use to reach rank 0 (started by the launcher
/// on the first host of the job, where the stage runs).
fn host_name() -> Result<String, LaunchError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .map_err(LaunchError::HostName)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Keeps what was relayed.
    #[derive(Default)]
    struct Kept(Mutex<Vec<String>>);

    impl Reporter for Kept {
        fn begin(&self, step: &str, _: Option<u64>, _: &str) {
            self.0.lock().unwrap().push(format!("begin {step}"));
        }
        fn set_position(&self, _: u64) {}
        fn set_message(&self, _: &str) {}
        fn log(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_owned());
        }
    }

    fn shell(dir: &Path, name: &str, script: &str) -> Launch {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        Launch {
            what: name.to_owned(),
            log: dir.join(format!("{name}.log")),
            command,
        }
    }

    #[test]
    fn progress_is_relayed_and_success_waits_for_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::default();
        let launches = vec![
            shell(
                dir.path(),
                "a",
                r#"echo '{"begin":{"step":"training","total":3,"unit":"steps"}}'; echo plain"#,
            ),
            shell(dir.path(), "b", "sleep 1"),
        ];
        supervise(launches, &kept).unwrap();
        assert_eq!(*kept.0.lock().unwrap(), ["begin training", "plain"]);
    }

    #[test]
    fn the_first_reported_failure_stops_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let launches = vec![
            shell(dir.path(), "rank 0", "sleep 20"),
            shell(
                dir.path(),
                "rank 1",
                r#"echo '{"failed":{"rank":1,"message":"out of memory"}}'; echo details >&2; exit 1"#,
            ),
        ];
        let err = supervise(launches, &Kept::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rank 1: out of memory (log: "), "{err}");
        assert!(err.ends_with("rank 1.log)"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "rank 0 was not stopped"
        );
    }

    #[test]
    fn a_panicking_rank_is_reported_by_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"printf '%s\n' "thread 'main' (7) panicked at src/x.rs:1:1:" 'invalid device ordinal 1' 'note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace' >&2; exit 101"#;
        let err = supervise(vec![shell(dir.path(), "rank 1", script)], &Kept::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid device ordinal 1 (log: "), "{err}");
        let with_backtrace = r#"printf '%s\n' "thread 'main' (7) panicked at src/x.rs:1:1:" 'out of memory' 'stack backtrace:' '   0: main' '             at src/main.rs:3:5' >&2; exit 101"#;
        let err = supervise(
            vec![shell(dir.path(), "rank 0", with_backtrace)],
            &Kept::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("out of memory (log: "), "{err}");
    }

    #[test]
    fn a_launcher_whose_tasks_outlive_it_does_not_hang_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let launches = vec![shell(
            dir.path(),
            "launcher",
            "sleep 20 & echo 'task 3 died' >&2; exit 3",
        )];
        let err = supervise(launches, &Kept::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("task 3 died (log: "), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "waited for the orphaned task"
        );
    }
}
