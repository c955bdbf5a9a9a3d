//! Plans and executes a run: stages in topological order, independent ones in parallel, each
//! committed atomically and recorded in pipeline.lock as soon as it succeeds.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tigerflow_stage::{Context, Registry, StageError};

use crate::assess::{Assessment, BlockedError, Env, Work};
use crate::fingerprint::Ingredients;
use crate::lock::{LockEntry, LockFile, rfc3339};
use crate::progress::Progress;
use crate::selection::{Chosen, Selection};
use crate::statcache::{HashError, StatCache};
use crate::{Error, Project};

/// Flags of `tigerflow run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub selection: Selection,
    /// Stages running at once.
    pub jobs: usize,
    /// Print the plan, run nothing.
    pub dry_run: bool,
    /// Fail instead of waiting when another run holds the pipeline.
    pub no_wait: bool,
}

/// Where a stage stands, before or after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Up to date; nothing to do.
    Fresh,
    /// Would run (plan) / must run (status).
    Stale,
    /// Would be restored from the run cache without running.
    Restorable,
    /// Cannot run: a missing input.
    Blocked,
    /// Not part of this selection.
    NotSelected,
    Ran,
    Restored,
    Failed,
    /// Not run because an upstream stage failed.
    Skipped,
}

/// One stage's line of a plan, status or run summary.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: String,
    pub kind: String,
    pub state: State,
    pub reasons: Vec<String>,
    /// Committed output directory, relative to the project root.
    pub output: Option<String>,
    pub duration_s: Option<f64>,
    pub error: Option<String>,
}

impl StageReport {
    fn new(project: &Project, i: usize, state: State) -> StageReport {
        let decl = &project.pipeline().stages[i];
        StageReport {
            stage: decl.name.clone(),
            kind: decl.kind.clone(),
            state,
            reasons: Vec::new(),
            output: None,
            duration_s: None,
            error: None,
        }
    }

    pub fn ok(&self) -> bool {
        !matches!(self.state, State::Failed | State::Skipped | State::Blocked)
    }
}

fn committed_map(lock: &LockFile) -> HashMap<String, LockEntry> {
    lock.stages
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What a run would do, stage by stage, without running anything (`--dry-run`, `status`).
pub fn plan(project: &Project, registry: &Registry, chosen: &Chosen) -> Vec<StageReport> {
    let statcache = StatCache::load(&project.statcache_path());
    let env = Env {
        project,
        registry,
        statcache: &statcache,
    };
    let mut committed = committed_map(project.lock());
    let mut will_run: HashSet<usize> = HashSet::new();
    let mut reports: Vec<Option<StageReport>> = vec![None; project.pipeline().stages.len()];
    for &i in project.dag().order() {
        if !chosen.selected[i] {
            reports[i] = Some(StageReport::new(project, i, State::NotSelected));
            continue;
        }
        let parents = project.dag().parents(i);
        if let Some(&p) = parents.iter().find(|&&p| {
            reports[p]
                .as_ref()
                .is_some_and(|r| r.state == State::Blocked)
        }) {
            let mut r = StageReport::new(project, i, State::Blocked);
            r.error = Some(format!(
                "upstream stage `{}` cannot run",
                project.dag().name(p)
            ));
            reports[i] = Some(r);
            continue;
        }
        let pending: Vec<&str> = parents
            .iter()
            .filter(|p| will_run.contains(p))
            .map(|&p| project.dag().name(p))
            .collect();
        let report = match env.assess(i, &committed, &pending, chosen.forced[i].as_deref()) {
            Assessment::Fresh(entry) => {
                let mut r = StageReport::new(project, i, State::Fresh);
                r.output = Some(entry.output);
                r
            }
            Assessment::Restorable {
                ingredients,
                reasons,
            } => {
                let name = &project.pipeline().stages[i].name;
                let dir = project.store().output_dir(name, &ingredients.fingerprint());
                if let Ok(tree) = statcache.hash_tree(&dir) {
                    let entry = LockEntry::new(
                        &ingredients,
                        project.relative(&dir),
                        &tree,
                        String::new(),
                        0.0,
                    );
                    committed.insert(name.clone(), entry);
                }
                let mut r = StageReport::new(project, i, State::Restorable);
                r.reasons = reasons;
                r.output = Some(project.relative(&dir));
                r
            }
            Assessment::Stale { reasons, .. } => {
                will_run.insert(i);
                let mut r = StageReport::new(project, i, State::Stale);
                r.reasons = reasons;
                r
            }
            Assessment::Blocked(blocked) => {
                let mut r = StageReport::new(project, i, State::Blocked);
                r.error = Some(blocked.to_string());
                r
            }
        };
        reports[i] = Some(report);
    }
    // Only a cache: a failed save costs time on the next call, nothing else.
    let _ = statcache.save(&project.statcache_path());
    project
        .dag()
        .order()
        .iter()
        .filter_map(|&i| reports[i].take())
        .collect()
}

/// Runs the selected stages. Returns one report per stage, in topological order.
pub fn run(
    project: &mut Project,
    registry: &Registry,
    options: &RunOptions,
    progress: &Progress,
) -> Result<Vec<StageReport>, Error> {
    let chosen = options.selection.resolve(project)?;
    if options.dry_run {
        return Ok(plan(project, registry, &chosen));
    }
    let _guard = project.acquire_run_lock(options.no_wait, |m| progress.line(m))?;
    // Another run may have committed while this one waited for the lock.
    project.set_lock(LockFile::load(&project.lock_path())?);
    let project = &*project;
    project.store().sweep_crashed();
    crate::fsutil::sweep_temp_files(&project.lock_path());
    let (root, notices) = (project.root().to_path_buf(), progress.clone());
    let statcache = StatCache::load(&project.statcache_path()).with_notice(move |path, size| {
        let path = path.strip_prefix(&root).unwrap_or(path).display();
        notices.line(&format!("hashing {path} ({:.0} MB)", size as f64 / 1e6));
    });
    let env = Env {
        project,
        registry,
        statcache: &statcache,
    };
    let executor = Executor {
        env,
        chosen,
        progress,
    };
    let mut ledger = Ledger {
        lock: project.lock().clone(),
        result: Ok(()),
    };
    let reports = executor.execute(&mut ledger, options.jobs.max(1));
    let save = statcache.save(&project.statcache_path());
    ledger.result?;
    save.map_err(|e| Error::io("cannot save the stat cache", e))?;
    Ok(reports)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting,
    Running,
    Done,
    Broken,
}

/// How a stage ended in this run.
enum Outcome {
    Fresh(LockEntry),
    Restored(LockEntry, Vec<String>),
    Ran(LockEntry, Vec<String>),
    Failed(StageFailure, Vec<String>),
}

/// Why a stage has no committed output after this run. Shown in its report and progress line.
#[derive(Debug, thiserror::Error)]
enum StageFailure {
    /// Something it reads is missing.
    #[error(transparent)]
    Blocked(#[from] BlockedError),
    /// The stage itself failed (or panicked, or left out a declared output).
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot create a staging directory under artifacts/: {source}")]
    Staging {
        #[source]
        source: std::io::Error,
    },
    /// `staging` is relative to the project root.
    #[error("cannot commit {staging} into artifacts/: {source}")]
    Commit {
        staging: String,
        #[source]
        source: std::io::Error,
    },
    /// The committed output could not be hashed for the lock.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A stage was judged before its upstream finished (a bug in the scheduler).
    #[error("internal: upstream not finished")]
    UpstreamPending,
}

struct Executor<'a> {
    env: Env<'a>,
    chosen: Chosen,
    progress: &'a Progress,
}

/// What the run has committed so far.
struct Ledger {
    lock: LockFile,
    /// The first error that is not a stage's (writing the lock).
    result: Result<(), Error>,
}

impl Executor<'_> {
    fn execute(&self, ledger: &mut Ledger, jobs: usize) -> Vec<StageReport> {
        let project = self.env.project;
        let dag = project.dag();
        let n = project.pipeline().stages.len();
        let mut slots: Vec<Slot> = (0..n)
            .map(|i| {
                if self.chosen.selected[i] {
                    Slot::Waiting
                } else {
                    Slot::Done
                }
            })
            .collect();
        let mut reports: Vec<StageReport> = (0..n)
            .map(|i| {
                StageReport::new(
                    project,
                    i,
                    if self.chosen.selected[i] {
                        State::Skipped
                    } else {
                        State::NotSelected
                    },
                )
            })
            .collect();
        let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
        std::thread::scope(|scope| {
            let mut running = 0;
            loop {
                for &i in dag.order() {
                    if slots[i] != Slot::Waiting || running >= jobs {
                        continue;
                    }
                    let parents = dag.parents(i);
                    if let Some(&p) = parents.iter().find(|&&p| slots[p] == Slot::Broken) {
                        slots[i] = Slot::Broken;
                        reports[i].error =
                            Some(format!("not run: upstream stage `{}` failed", dag.name(p)));
                        self.progress.line(&format!(
                            "skipped {}: upstream stage `{}` failed",
                            dag.name(i),
                            dag.name(p)
                        ));
                        continue;
                    }
                    if parents.iter().any(|&p| slots[p] != Slot::Done) {
                        continue;
                    }
                    // Judging is quick for unchanged files (stat cache), so it happens here and
                    // a no-op run starts no threads; only stages that must run get one.
                    let committed = committed_map(&ledger.lock);
                    let forced = self.chosen.forced[i].as_deref();
                    match triage(&self.env, i, &committed, forced) {
                        Triage::Done(outcome) => {
                            slots[i] = self.record(ledger, i, outcome, &mut reports[i]);
                        }
                        Triage::Run(work, reasons) => {
                            slots[i] = Slot::Running;
                            running += 1;
                            let name = dag.name(i);
                            self.progress
                                .line(&format!("running {name}: {}", reasons.join("; ")));
                            let tx = tx.clone();
                            let env = &self.env;
                            let progress = self.progress;
                            scope.spawn(move || {
                                let outcome = match run_stage(env, progress, i, work) {
                                    Ok(entry) => Outcome::Ran(entry, reasons),
                                    Err(failure) => Outcome::Failed(failure, reasons),
                                };
                                let _ = tx.send((i, outcome));
                            });
                        }
                    }
                }
                if running == 0 {
                    break;
                }
                let (i, outcome) = rx.recv().expect("workers always report");
                running -= 1;
                slots[i] = self.record(ledger, i, outcome, &mut reports[i]);
            }
        });
        dag.order().iter().map(|&i| reports[i].clone()).collect()
    }

    /// Records a finished stage in the lock and in its report; returns its new slot.
    fn record(
        &self,
        ledger: &mut Ledger,
        i: usize,
        outcome: Outcome,
        report: &mut StageReport,
    ) -> Slot {
        let project = self.env.project;
        let name = project.dag().name(i).to_string();
        let (entry, state, reasons) = match outcome {
            Outcome::Fresh(entry) => {
                self.progress.line(&format!("fresh {name}"));
                report.state = State::Fresh;
                report.output = Some(entry.output);
                return Slot::Done;
            }
            Outcome::Failed(failure, reasons) => {
                let log = project.relative(&project.log_path(&name));
                self.progress
                    .line(&format!("FAILED {name}: {failure} (log: {log})"));
                report.state = State::Failed;
                report.reasons = reasons;
                report.error = Some(failure.to_string());
                return Slot::Broken;
            }
            Outcome::Restored(entry, reasons) => {
                self.progress.line(&format!(
                    "restored {name} from the run cache ({})",
                    entry.output
                ));
                (entry, State::Restored, reasons)
            }
            Outcome::Ran(entry, reasons) => {
                self.progress
                    .line(&format!("done {name} in {:.1}s", entry.duration_s));
                (entry, State::Ran, reasons)
            }
        };
        report.state = state;
        report.reasons = reasons;
        report.output = Some(entry.output.clone());
        report.duration_s = Some(entry.duration_s);
        ledger.lock.version = LockFile::VERSION;
        ledger.lock.stages.insert(name, entry);
        let names = project.stage_names();
        ledger
            .lock
            .stages
            .retain(|k, _| names.contains(&k.as_str()));
        if let Err(e) = ledger.lock.save(&project.lock_path(), &names) {
            self.progress.line(&format!("error: {e}"));
            ledger.result = Err(e.into());
            return Slot::Broken;
        }
        Slot::Done
    }
}

/// A judged stage: finished already (fresh, restored, blocked), or to be run.
enum Triage {
    Done(Outcome),
    Run(Work, Vec<String>),
}

/// Assesses one stage whose upstream is done, and restores it from the run cache if it can.
fn triage(
    env: &Env<'_>,
    i: usize,
    committed: &HashMap<String, LockEntry>,
    forced: Option<&str>,
) -> Triage {
    let project = env.project;
    let name = &project.pipeline().stages[i].name;
    let outcome = match env.assess(i, committed, &[], forced) {
        Assessment::Fresh(entry) => Outcome::Fresh(entry),
        Assessment::Blocked(blocked) => Outcome::Failed(blocked.into(), Vec::new()),
        Assessment::Restorable {
            ingredients,
            reasons,
        } => {
            let dir = project.store().output_dir(name, &ingredients.fingerprint());
            match entry_for(env, &ingredients, &dir, SystemTime::now(), 0.0) {
                Ok(entry) => Outcome::Restored(entry, reasons),
                Err(failure) => Outcome::Failed(failure, reasons),
            }
        }
        Assessment::Stale {
            work: Some(work),
            reasons,
        } => return Triage::Run(work, reasons),
        Assessment::Stale {
            work: None,
            reasons,
        } => Outcome::Failed(StageFailure::UpstreamPending, reasons),
    };
    Triage::Done(outcome)
}

fn entry_for(
    env: &Env<'_>,
    ingredients: &Ingredients,
    dir: &Path,
    started: SystemTime,
    duration_s: f64,
) -> Result<LockEntry, StageFailure> {
    let tree = env.statcache.hash_tree(dir)?;
    Ok(LockEntry::new(
        ingredients,
        env.project.relative(dir),
        &tree,
        rfc3339(started),
        duration_s,
    ))
}

/// Runs a stage in its staging directory and commits the result.
fn run_stage(
    env: &Env<'_>,
    progress: &Progress,
    i: usize,
    work: Work,
) -> Result<LockEntry, StageFailure> {
    let project = env.project;
    let decl = &project.pipeline().stages[i];
    let stage = env
        .registry
        .get(&decl.kind)
        .expect("config checked the kind");
    let fingerprint = work.ingredients.fingerprint();
    let store = project.store();
    let staging = store
        .staging_dir(&decl.name, &fingerprint, stage.resumable())
        .map_err(|source| StageFailure::Staging { source })?;
    let reporter = progress.stage(&decl.name, &project.log_path(&decl.name));
    let cache_dir: PathBuf = crate::cache_dir();
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut ctx = Context {
        stage_name: &decl.name,
        params: &decl.params,
        inputs: work.inputs,
        out_dir: &staging,
        root: project.root(),
        cache_dir: &cache_dir,
        reporter: &reporter,
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(&mut ctx)));
    reporter.finish();
    let result = match result {
        Ok(r) => r,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(StageError::Failed(format!("the stage panicked: {message}")))
        }
    }
    .and_then(|()| {
        let missing = stage
            .outputs(&decl.params)
            .into_iter()
            .find(|out| !staging.join(out).exists());
        missing.map_or(Ok(()), |m| Err(StageError::MissingOutput(m)))
    });
    if let Err(e) = result {
        if !stage.resumable() {
            let _ = crate::fsutil::remove_all(&staging);
        }
        return Err(e.into());
    }
    let duration = clock.elapsed().as_secs_f64();
    let committed = store
        .commit(&staging, &decl.name, &fingerprint)
        .map_err(|source| StageFailure::Commit {
            staging: project.relative(&staging),
            source,
        })?;
    entry_for(env, &work.ingredients, &committed, started, duration)
}

/// Staging directories a resumable stage may still resume from (for `gc`).
pub fn resumable_staging(project: &Project, registry: &Registry) -> HashSet<PathBuf> {
    let chosen = Selection::default()
        .resolve(project)
        .expect("the default selection is valid");
    let statcache = StatCache::load(&project.statcache_path());
    let env = Env {
        project,
        registry,
        statcache: &statcache,
    };
    let committed = committed_map(project.lock());
    let mut keep = HashSet::new();
    for (i, decl) in project.pipeline().stages.iter().enumerate() {
        let resumable = registry.get(&decl.kind).is_some_and(|s| s.resumable());
        if !resumable || !chosen.selected[i] {
            continue;
        }
        if let Assessment::Stale {
            work: Some(work), ..
        } = env.assess(i, &committed, &[], None)
        {
            keep.insert(project.store().staging_path(
                &decl.name,
                &work.ingredients.fingerprint(),
                true,
            ));
        }
    }
    keep
}
