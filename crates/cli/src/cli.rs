//! The `tigerflow` command line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tigerflow::overrides::Override;
use tigerflow::progress::Progress;
use tigerflow::runner::{self, RunOptions, StageReport, State};
use tigerflow::secrets::Redactor;
use tigerflow::selection::Selection;
use tigerflow::{Error, Project};
use tigerflow_stage::Registry;

/// A declarative, cached pipeline from a Telegram export to a fine-tuned chat model.
#[derive(Debug, Parser)]
#[command(name = "tigerflow", version, about)]
struct Cli {
    /// Run as if started in DIR (where pipeline.toml is looked for).
    #[arg(short = 'C', global = true, value_name = "DIR")]
    directory: Option<PathBuf>,
    /// The pipeline file (default: pipeline.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the stages that are not up to date.
    Run(RunArgs),
    /// Shows, per stage, whether it is fresh or stale, and why.
    Status {
        /// Override a parameter for this invocation: STAGE.KEY=VALUE.
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        set: Vec<Override>,
    },
    /// Prints the stage graph.
    Dag {
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Removes outputs and staging directories that pipeline.lock no longer references.
    Gc {
        /// List what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints the committed output directory of a stage.
    Path { stage: String },
    /// Continues a chat with the base model and the latest trained adapter.
    #[cfg(feature = "ml-stages")]
    Generate(crate::generate::GenerateArgs),
    /// Measures training speed on a model shape with random weights (no download).
    #[cfg(feature = "ml-stages")]
    Bench(crate::bench::BenchArgs),
    /// Runs one rank of a multi-GPU training job: started by the train stage, or on every host
    /// by the stage's `launcher` (reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
    #[cfg(feature = "ml-stages")]
    TrainRank {
        /// The job.json the train stage wrote into its output folder.
        job: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Stages to run at once (default: the number of CPUs).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Force this stage and everything downstream.
    #[arg(long, value_name = "STAGE")]
    from: Option<String>,
    /// Stop after this stage.
    #[arg(long, value_name = "STAGE")]
    to: Option<String>,
    /// Run only these stages (repeatable), on the committed outputs of their inputs.
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
    /// Run the selected stages even if they are fresh.
    #[arg(long)]
    force: bool,
    /// Print what would run and why; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Fail at once if another run of this pipeline is in progress, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Override a parameter for this invocation: STAGE.KEY=VALUE.
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    set: Vec<Override>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

/// Runs the command line and returns the process exit code.
pub(crate) fn main(registry: Registry) -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let pipeline_file = match (&cli.directory, &cli.pipeline) {
        (Some(dir), Some(file)) => dir.join(file),
        (Some(dir), None) => dir.join("pipeline.toml"),
        (None, Some(file)) => file.clone(),
        (None, None) => PathBuf::from("pipeline.toml"),
    };
    #[cfg(feature = "ml-stages")]
    if let Command::Generate(args) = &cli.command {
        return crate::generate::run(args, &pipeline_file, &registry);
    }
    #[cfg(feature = "ml-stages")]
    if let Command::Bench(args) = &cli.command {
        return crate::bench::run(args);
    }
    #[cfg(feature = "ml-stages")]
    if let Command::TrainRank { job } = &cli.command {
        return match tigerflow_train::rank::run_rank(job) {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("error: {message}");
                1
            }
        };
    }
    match dispatch(&cli, &pipeline_file, &registry) {
        Ok(code) => code,
        Err(e) => {
            for line in Redactor::from_env().redact(&e.to_string()).lines() {
                eprintln!("error: {line}");
            }
            e.exit_code()
        }
    }
}

fn dispatch(cli: &Cli, pipeline_file: &std::path::Path, registry: &Registry) -> Result<i32, Error> {
    let overrides: &[Override] = match &cli.command {
        Command::Run(args) => &args.set,
        Command::Status { set } => set,
        _ => &[],
    };
    let mut project = Project::open_with(pipeline_file, registry, overrides)?;
    match &cli.command {
        Command::Run(args) => run(cli.json, &mut project, registry, args),
        Command::Status { .. } => {
            let chosen = Selection::default().resolve(&project)?;
            let reports = runner::plan(&project, registry, &chosen);
            print_reports(cli.json, &reports, false);
            Ok(0)
        }
        Command::Dag { format } => {
            let kinds: Vec<String> = project
                .pipeline()
                .stages
                .iter()
                .map(|s| s.kind.clone())
                .collect();
            let dag = project.dag();
            let text = match (cli.json, format) {
                (true, _) => dag_json(&project),
                (false, DagFormat::Text) => dag.to_text(&kinds),
                (false, DagFormat::Dot) => dag.to_dot(&kinds),
                (false, DagFormat::Mermaid) => dag.to_mermaid(&kinds),
            };
            print!("{text}");
            Ok(0)
        }
        Command::Gc { dry_run } => gc(cli.json, &project, registry, *dry_run),
        Command::Path { stage } => {
            project.stage_index(stage)?;
            match project.committed_output(stage) {
                Some(dir) if cli.json => {
                    println!("{}", serde_json::json!({ "stage": stage, "path": dir }))
                }
                Some(dir) => println!("{}", dir.display()),
                None => {
                    eprintln!(
                        "error: stage `{stage}` has no committed output; fix: run `tigerflow run --to {stage}`"
                    );
                    return Ok(1);
                }
            }
            Ok(0)
        }
        #[cfg(feature = "ml-stages")]
        Command::Generate(_) | Command::Bench(_) | Command::TrainRank { .. } => {
            unreachable!("handled before the project is opened")
        }
    }
}

fn run(
    json: bool,
    project: &mut Project,
    registry: &Registry,
    args: &RunArgs,
) -> Result<i32, Error> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1 (got 0)".into()));
    }
    let options = RunOptions {
        selection: Selection {
            from: args.from.clone(),
            to: args.to.clone(),
            only: args.only.clone(),
            force: args.force,
        },
        jobs,
        dry_run: args.dry_run,
        no_wait: args.no_wait,
    };
    let progress = Progress::new(Redactor::from_env());
    let reports = runner::run(project, registry, &options, &progress)?;
    print_reports(json, &reports, args.dry_run);
    let ok = reports.iter().all(StageReport::ok);
    Ok(if ok { 0 } else { 1 })
}

/// The plan, status or run summary: a table on stdout, or JSON.
fn print_reports(json: bool, reports: &[StageReport], plan: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let ok = reports.iter().all(StageReport::ok);
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({ "ok": ok, "stages": reports })
        );
        return;
    }
    let width = reports.iter().map(|r| r.stage.len()).max().unwrap_or(0);
    for r in reports {
        let state = match (r.state, plan) {
            (State::Stale, true) => "would run",
            (State::Restorable, true) => "would restore",
            (State::Fresh, _) => "fresh",
            (State::Stale, false) => "stale",
            (State::Restorable, false) => "stale (in run cache)",
            (State::Blocked, _) => "blocked",
            (State::NotSelected, _) => "not selected",
            (State::Ran, _) => "ran",
            (State::Restored, _) => "restored",
            (State::Failed, _) => "FAILED",
            (State::Skipped, _) => "skipped",
        };
        let mut detail: Vec<String> = r.reasons.clone();
        detail.extend(r.error.clone());
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {}", detail.join("; "))
        };
        let _ = writeln!(out, "{:width$}  {state}{detail}", r.stage);
    }
}

fn dag_json(project: &Project) -> String {
    let dag = project.dag();
    let stages: Vec<serde_json::Value> = dag
        .order()
        .iter()
        .map(|&i| {
            let decl = &project.pipeline().stages[i];
            let upstream: Vec<&str> = dag.parents(i).iter().map(|&p| dag.name(p)).collect();
            serde_json::json!({ "stage": decl.name, "kind": decl.kind, "upstream": upstream })
        })
        .collect();
    format!("{}\n", serde_json::json!({ "stages": stages }))
}

fn gc(json: bool, project: &Project, registry: &Registry, dry_run: bool) -> Result<i32, Error> {
    let progress = Progress::new(Redactor::from_env());
    // gc deletes what a concurrent run might be committing: take the run lock.
    let _guard = if dry_run {
        None
    } else {
        Some(project.acquire_run_lock(false, |m| progress.line(m))?)
    };
    let keep_outputs = project
        .lock()
        .stages
        .values()
        .map(|e| project.root().join(&e.output))
        .collect();
    let keep_staging = runner::resumable_staging(project, registry);
    let report = project
        .store()
        .gc(&keep_outputs, &keep_staging, dry_run)
        .map_err(|e| Error::io("gc could not remove a directory under artifacts/", e))?;
    let removed: Vec<String> = report.removed.iter().map(|p| project.relative(p)).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({ "removed": removed, "bytes": report.bytes, "dry_run": dry_run })
        );
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for path in &removed {
            println!("{verb} {path}");
        }
        println!(
            "{verb} {} directories, {:.1} MB",
            removed.len(),
            report.bytes as f64 / 1e6
        );
    }
    Ok(0)
}
