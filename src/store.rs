//! The artifact store under `artifacts/`: one directory per stage and fingerprint
//! (`artifacts/<stage>/<fingerprint>/`). A stage writes into a staging directory that becomes its
//! output only by an atomic rename, so a directory in the store is always complete.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::fsutil::remove_all;

/// Hex digits of the fingerprint used in directory names (128 bits).
const NAME_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What `gc` removed (or would remove).
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
}

impl Store {
    pub fn new(project_root: &Path) -> Store {
        Store {
            root: project_root.join("artifacts"),
        }
    }

    /// Where a stage's output for a fingerprint lives once committed.
    pub fn output_dir(&self, stage: &str, fingerprint: &str) -> PathBuf {
        self.root.join(stage).join(&fingerprint[..NAME_LEN])
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join(".staging")
    }

    fn trash_root(&self) -> PathBuf {
        self.root.join(".trash")
    }

    /// The staging directory for one attempt. A resumable stage gets the same directory back for
    /// the same fingerprint (with whatever a crashed attempt left there); any other stage gets a
    /// fresh, empty one.
    pub fn staging_dir(
        &self,
        stage: &str,
        fingerprint: &str,
        resumable: bool,
    ) -> std::io::Result<PathBuf> {
        let dir = self.staging_path(stage, fingerprint, resumable);
        if !resumable {
            remove_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The staging directory's name: per fingerprint for a resumable stage, per attempt
    /// (process) otherwise.
    pub fn staging_path(&self, stage: &str, fingerprint: &str, resumable: bool) -> PathBuf {
        let name = format!("{stage}-{}", &fingerprint[..NAME_LEN]);
        if resumable {
            self.staging_root().join(name)
        } else {
            self.staging_root()
                .join(format!("{name}.{}", std::process::id()))
        }
    }

    /// Turns a finished staging directory into the committed output. A previous output for the
    /// same fingerprint (a forced re-run) is moved aside first and deleted after.
    pub fn commit(
        &self,
        staging: &Path,
        stage: &str,
        fingerprint: &str,
    ) -> std::io::Result<PathBuf> {
        let target = self.output_dir(stage, fingerprint);
        std::fs::create_dir_all(target.parent().expect("output dirs have a parent"))?;
        let mut old = None;
        if target.exists() {
            std::fs::create_dir_all(self.trash_root())?;
            let aside = self.trash_root().join(format!(
                "{stage}-{}.{}",
                &fingerprint[..NAME_LEN],
                std::process::id()
            ));
            remove_all(&aside)?;
            std::fs::rename(&target, &aside)?;
            old = Some(aside);
        }
        std::fs::rename(staging, &target)?;
        if let Some(old) = old {
            remove_all(&old)?;
        }
        Ok(target)
    }

    /// Removes what crashed runs left behind: non-resumable staging directories and the trash.
    /// Only safe while holding the run lock. Best effort: a leftover is retried next time.
    pub fn sweep_crashed(&self) {
        let _ = remove_all(&self.trash_root());
        for dir in self.staging_dirs() {
            if is_per_attempt(&dir) {
                let _ = remove_all(&dir);
            }
        }
    }

    fn staging_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.staging_root())
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Removes committed outputs not in `keep_outputs` and staging directories not in
    /// `keep_staging`. Only directories the store created (fingerprint-named) are touched.
    pub fn gc(
        &self,
        keep_outputs: &HashSet<PathBuf>,
        keep_staging: &HashSet<PathBuf>,
        dry_run: bool,
    ) -> std::io::Result<GcReport> {
        let mut doomed = Vec::new();
        let stage_dirs = std::fs::read_dir(&self.root)
            .map(|rd| rd.filter_map(Result::ok).collect())
            .unwrap_or_else(|_| Vec::new());
        for stage_dir in stage_dirs {
            let name = stage_dir.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !stage_dir.path().is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(stage_dir.path())?.filter_map(Result::ok) {
                let path = entry.path();
                let fp_named = entry.file_name().to_str().is_some_and(is_fingerprint_name);
                if fp_named && !keep_outputs.contains(&path) {
                    doomed.push(path);
                }
            }
        }
        doomed.extend(
            self.staging_dirs()
                .into_iter()
                .filter(|d| !keep_staging.contains(d)),
        );
        if self.trash_root().exists() {
            doomed.push(self.trash_root());
        }
        let mut report = GcReport::default();
        for path in doomed {
            report.bytes += disk_usage(&path);
            if !dry_run {
                remove_all(&path)?;
            }
            report.removed.push(path);
        }
        if !dry_run {
            // Stage directories left empty belong to stages that no longer exist.
            if let Ok(rd) = std::fs::read_dir(&self.root) {
                for entry in rd.filter_map(Result::ok) {
                    if !entry.file_name().to_string_lossy().starts_with('.') {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
        }
        Ok(report)
    }
}

fn is_fingerprint_name(name: &str) -> bool {
    name.len() == NAME_LEN && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `stage-<fp>.<pid>` is a non-resumable attempt; `stage-<fp>` is a resumable one.
fn is_per_attempt(dir: &Path) -> bool {
    dir.extension().is_some_and(|e| {
        e.to_str()
            .is_some_and(|e| e.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn disk_usage(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| disk_usage(&e.path()))
                    .sum()
            })
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn commit_replaces_and_gc_keeps_only_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for content in ["one", "two"] {
            let staging = store.staging_dir("s", FP, false).unwrap();
            std::fs::write(staging.join("f"), content).unwrap();
            let out = store.commit(&staging, "s", FP).unwrap();
            assert_eq!(std::fs::read_to_string(out.join("f")).unwrap(), content);
        }
        let resumable = store.staging_dir("t", FP, true).unwrap();
        std::fs::write(resumable.join("ckpt"), "x").unwrap();
        assert!(
            store
                .staging_dir("t", FP, true)
                .unwrap()
                .join("ckpt")
                .exists()
        );
        let crashed = store.staging_dir("u", FP, false).unwrap();
        store.sweep_crashed();
        assert!(!crashed.exists() && resumable.exists());

        let report = store
            .gc(&HashSet::new(), &HashSet::from([resumable.clone()]), false)
            .unwrap();
        assert_eq!(report.removed, [store.output_dir("s", FP)]);
        assert!(resumable.exists() && !dir.path().join("artifacts/s").exists());
    }
}
