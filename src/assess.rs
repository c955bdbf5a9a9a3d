//! Decides, for one stage, whether its committed output is fresh, and if not, exactly why.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tigerflow_stage::Registry;

use crate::config::InputRef;
use crate::fingerprint::{HashedInput, Ingredients, listed_files};
use crate::lock::LockEntry;
use crate::project::Project;
use crate::statcache::{HashError, StatCache, Tree};

/// What the engine needs to judge stages.
pub(crate) struct Env<'a> {
    pub(crate) project: &'a Project,
    pub(crate) registry: &'a Registry,
    pub(crate) statcache: &'a StatCache,
}

/// Why a stage cannot run: something it reads is missing or unreadable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlockedError {
    #[error(
        "input `{slot}` of stage `{stage}` needs the output of stage `{upstream}`, which has not run; fix: run `tigerflow run --to {upstream}` first"
    )]
    UpstreamNotRun {
        slot: String,
        stage: String,
        upstream: String,
    },
    #[error(
        "input `{slot}` = \"{input}\" of stage `{stage}`: {source}; fix the path under `inputs` in {}",
        file.display()
    )]
    Input {
        slot: String,
        /// The input as written in pipeline.toml.
        input: String,
        stage: String,
        /// The pipeline file, as given.
        file: PathBuf,
        /// Boxed (in `Dependency` too) so that `Result<_, BlockedError>` stays small.
        #[source]
        source: Box<ReadError>,
    },
    #[error(
        "dependency {} of stage `{stage}`: {source}; fix the parameter that names it",
        path.display()
    )]
    Dependency {
        path: PathBuf,
        stage: String,
        #[source]
        source: Box<ReadError>,
    },
}

/// A file or directory a stage reads could not be hashed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// `path` is relative to the project root.
    #[error("{path} does not exist")]
    Missing { path: String },
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// The verdict for one stage.
#[derive(Debug)]
pub(crate) enum Assessment {
    /// The lock's output matches the current fingerprint and is intact.
    Fresh(LockEntry),
    /// Stale, but an earlier run with this exact fingerprint is still in the store.
    Restorable {
        ingredients: Ingredients,
        reasons: Vec<String>,
    },
    /// Must run. `work` is `None` when an upstream stage must run first.
    Stale {
        work: Option<Work>,
        reasons: Vec<String>,
    },
    /// Cannot run: a missing input file, or an upstream stage without output.
    Blocked(BlockedError),
}

/// A stage ready to run: its ingredients and resolved input paths.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub(crate) ingredients: Ingredients,
    pub(crate) inputs: BTreeMap<String, PathBuf>,
}

impl Env<'_> {
    /// Judges stage `i` given the committed outputs so far. `pending` names upstream stages
    /// that will re-run first (planning only); `forced` says why a stage must run regardless.
    pub(crate) fn assess(
        &self,
        i: usize,
        committed: &HashMap<String, LockEntry>,
        pending: &[&str],
        forced: Option<&str>,
    ) -> Assessment {
        let decl = &self.project.pipeline().stages[i];
        let mut reasons: Vec<String> = forced.map(str::to_string).into_iter().collect();
        if !pending.is_empty() {
            let names: Vec<String> = pending.iter().map(|p| format!("`{p}`")).collect();
            reasons.push(format!("upstream stage {} will re-run", names.join(", ")));
            return Assessment::Stale {
                work: None,
                reasons,
            };
        }
        let work = match self.work(i, committed) {
            Ok(work) => work,
            Err(blocked) => return Assessment::Blocked(blocked),
        };
        let fingerprint = work.ingredients.fingerprint();
        let previous = committed.get(&decl.name);
        if forced.is_some() {
            return Assessment::Stale {
                work: Some(work),
                reasons,
            };
        }
        if let Some(entry) = previous
            && entry.fingerprint == fingerprint
        {
            let dir = self.project.root().join(&entry.output);
            let intact = self
                .statcache
                .hash(&dir)
                .is_ok_and(|h| h.to_hex().as_str() == entry.output_hash);
            if intact {
                return Assessment::Fresh(entry.clone());
            }
            reasons.push(format!(
                "committed output {} was changed or removed outside tigerflow",
                entry.output
            ));
            return Assessment::Stale {
                work: Some(work),
                reasons,
            };
        }
        match previous {
            None => reasons.push("never ran".into()),
            Some(entry) => {
                let changes = work.ingredients.changes_since(&entry.ingredients());
                if changes.is_empty() {
                    reasons.push("fingerprint changed".into());
                }
                reasons.extend(changes);
            }
        }
        // A stage that acts outside its output (publishing) must act again: restoring its old
        // output would bring back a receipt for something that is no longer there.
        let side_effects = self
            .registry
            .get(&decl.kind)
            .is_some_and(|stage| stage.side_effects());
        if !side_effects
            && self
                .project
                .store()
                .output_dir(&decl.name, &fingerprint)
                .is_dir()
        {
            return Assessment::Restorable {
                ingredients: work.ingredients,
                reasons,
            };
        }
        Assessment::Stale {
            work: Some(work),
            reasons,
        }
    }

    /// Resolves and hashes everything the stage reads.
    fn work(&self, i: usize, committed: &HashMap<String, LockEntry>) -> Result<Work, BlockedError> {
        let decl = &self.project.pipeline().stages[i];
        let root = self.project.root();
        let stage = self
            .registry
            .get(&decl.kind)
            .expect("config checked the kind");
        let mut inputs = BTreeMap::new();
        let mut hashed = BTreeMap::new();
        for (slot, input) in &decl.inputs {
            let path = match input {
                InputRef::Path(p) => root.join(p),
                InputRef::Stage { stage: up, sub } => {
                    let entry = committed
                        .get(up)
                        .filter(|e| root.join(&e.output).is_dir())
                        .ok_or_else(|| BlockedError::UpstreamNotRun {
                            slot: slot.clone(),
                            stage: decl.name.clone(),
                            upstream: up.clone(),
                        })?;
                    let dir = root.join(&entry.output);
                    match sub {
                        Some(sub) => dir.join(sub),
                        None => {
                            // The lock already has the hashes of a committed output.
                            let known = HashedInput {
                                source: input.to_string(),
                                hash: entry.output_hash.clone(),
                                files: entry.output_files.clone(),
                            };
                            hashed.insert(slot.clone(), known);
                            inputs.insert(slot.clone(), dir);
                            continue;
                        }
                    }
                }
            };
            let tree = self
                .hash_tree(&path)
                .map_err(|source| BlockedError::Input {
                    slot: slot.clone(),
                    input: input.to_string(),
                    stage: decl.name.clone(),
                    file: self.project.file().to_path_buf(),
                    source: Box::new(source),
                })?;
            let input_hash = HashedInput {
                source: input.to_string(),
                hash: tree.hash.to_hex().to_string(),
                files: listed_files(&tree),
            };
            hashed.insert(slot.clone(), input_hash);
            inputs.insert(slot.clone(), path);
        }
        let mut deps = BTreeMap::new();
        for dep in stage.extra_dependencies(&decl.params) {
            let tree =
                self.hash_tree(&root.join(&dep))
                    .map_err(|source| BlockedError::Dependency {
                        path: dep.clone(),
                        stage: decl.name.clone(),
                        source: Box::new(source),
                    })?;
            deps.insert(dep.display().to_string(), tree.hash.to_hex().to_string());
        }
        let ingredients = Ingredients {
            kind: decl.kind.clone(),
            code_version: stage.code_version(),
            params: decl.params.clone(),
            inputs: hashed,
            deps,
        };
        Ok(Work {
            ingredients,
            inputs,
        })
    }

    fn hash_tree(&self, path: &Path) -> Result<Tree, ReadError> {
        if !path.exists() {
            return Err(ReadError::Missing {
                path: self.project.relative(path),
            });
        }
        Ok(self.statcache.hash_tree(path)?)
    }
}
