//! A loaded pipeline: its file, root, validated stages, graph and lock.

use std::path::{Path, PathBuf};

use tigerflow_stage::Registry;

use crate::config::{self, Pipeline};
use crate::dag::Dag;
use crate::lock::LockFile;
use crate::overrides::Override;
use crate::runlock::RunLock;
use crate::store::Store;
use crate::{Error, suggest};

/// The engine's view of one pipeline.toml.
#[derive(Debug)]
pub struct Project {
    file: PathBuf,
    root: PathBuf,
    pipeline: Pipeline,
    dag: Dag,
    lock: LockFile,
}

impl Project {
    /// Loads and validates a pipeline file and reads its lock.
    pub fn open(pipeline_file: &Path, registry: &Registry) -> Result<Project, Error> {
        Project::open_with(pipeline_file, registry, &[])
    }

    /// Like [`Project::open`], with `--set` overrides applied to the parameters.
    pub fn open_with(
        pipeline_file: &Path,
        registry: &Registry,
        overrides: &[Override],
    ) -> Result<Project, Error> {
        let read_err = |source| Error::ReadConfig {
            path: pipeline_file.to_path_buf(),
            source,
        };
        let source = std::fs::read_to_string(pipeline_file).map_err(read_err)?;
        let parent = pipeline_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let root = std::path::absolute(parent).map_err(read_err)?;
        let pipeline = config::parse_with(
            &source,
            &pipeline_file.display().to_string(),
            registry,
            overrides,
        )?;
        let dag = Dag::new(&pipeline).expect("parse_with rejects cycles");
        let lock = LockFile::load(&root.join(lock_name(pipeline_file)))?;
        Ok(Project {
            file: pipeline_file.to_path_buf(),
            root,
            pipeline,
            dag,
            lock,
        })
    }

    /// The directory holding pipeline.toml; relative paths are relative to it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pipeline file as given (for messages).
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    pub fn lock(&self) -> &LockFile {
        &self.lock
    }

    pub(crate) fn set_lock(&mut self, lock: LockFile) {
        self.lock = lock;
    }

    /// Names of the stages of one kind, in file order.
    pub fn stages_using(&self, kind: &str) -> Vec<String> {
        self.pipeline
            .stages
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.name.clone())
            .collect()
    }

    /// A stage's canonical parameters.
    pub fn params(&self, stage: &str) -> Option<&serde_json::Value> {
        self.pipeline.stage(stage).map(|s| &s.params)
    }

    /// The committed output directory of a stage according to pipeline.lock, if it exists.
    pub fn committed_output(&self, stage: &str) -> Option<PathBuf> {
        let entry = self.lock.stages.get(stage)?;
        let dir = self.root.join(&entry.output);
        dir.is_dir().then_some(dir)
    }

    /// The index of a stage named on the command line, or a "did you mean" error.
    pub fn stage_index(&self, name: &str) -> Result<usize, Error> {
        self.pipeline
            .index(name)
            .ok_or_else(|| Error::UnknownStage {
                name: name.to_string(),
                file: self.file.display().to_string(),
                hint: suggest::hint(name, self.pipeline.stages.iter().map(|s| s.name.as_str())),
            })
    }

    pub fn store(&self) -> Store {
        Store::new(&self.root)
    }

    pub fn stage_names(&self) -> Vec<&str> {
        self.pipeline
            .stages
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// `pipeline.lock` for `pipeline.toml`; `NAME.lock` for another `NAME.toml`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(lock_name(&self.file))
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join(".tigerflow")
    }

    pub(crate) fn statcache_path(&self) -> PathBuf {
        self.state_dir().join("statcache.json")
    }

    /// Takes this pipeline's run lock (see [`RunLock::acquire`]).
    pub fn acquire_run_lock(
        &self,
        no_wait: bool,
        notify: impl FnOnce(&str),
    ) -> Result<RunLock, Error> {
        Ok(RunLock::acquire(
            &self
                .state_dir()
                .join(format!("{}.run", lock_name(&self.file))),
            no_wait,
            notify,
        )?)
    }

    /// Where a stage's log of its latest attempt goes.
    pub fn log_path(&self, stage: &str) -> PathBuf {
        self.state_dir().join("logs").join(format!("{stage}.log"))
    }

    /// A path relative to the root, for messages and the lock file.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// The lock file's name for a pipeline file: its stem with `.lock`.
fn lock_name(pipeline_file: &Path) -> String {
    let stem = pipeline_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    format!("{stem}.lock")
}
