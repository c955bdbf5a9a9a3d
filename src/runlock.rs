//! One run at a time per pipeline: an OS file lock on `.tigerflow/run.lock`. The kernel
//! releases it when the holder dies, even by `kill -9`, so a stale lock is taken over at once.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error(
        "another tigerflow run (pid {pid}) is running this pipeline; fix: wait for it, or drop --no-wait to queue behind it"
    )]
    Busy { pid: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl RunLock {
    /// Takes the lock; if another live process holds it, waits (telling `notify` once) or,
    /// with `no_wait`, fails.
    pub fn acquire(
        path: &Path,
        no_wait: bool,
        notify: impl FnOnce(&str),
    ) -> Result<RunLock, RunLockError> {
        let io = |source| RunLockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().to_string();
                if no_wait {
                    return Err(RunLockError::Busy { pid });
                }
                notify(&format!(
                    "waiting for another tigerflow run (pid {pid}) of this pipeline to finish…"
                ));
                file.lock().map_err(io)?;
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".tigerflow/run.lock");
        let first = RunLock::acquire(&path, true, |_| {}).unwrap();
        let err = RunLock::acquire(&path, true, |_| {}).unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        RunLock::acquire(&path, true, |_| {}).unwrap();
    }
}
