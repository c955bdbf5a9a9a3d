//! Small file system helpers with crash-safe semantics.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes a file so that readers see either the old or the new content, never a mix: a
/// temporary file in the same directory, flushed to disk, then renamed over the target.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let tmp = temp_name(path, std::process::id());
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The temporary file `write_atomic` uses: `.NAME.PID.tmp` beside the target.
fn temp_name(path: &Path, pid: u32) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dir.join(format!(".{name}.{pid}.tmp"))
}

/// Removes temporary files that `write_atomic` calls of killed processes left beside `path`.
/// Only safe while no other process writes `path` (under the run lock).
pub(crate) fn sweep_temp_files(path: &Path) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes a file or directory tree; a missing path is not an error.
pub(crate) fn remove_all(path: &Path) -> std::io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_temp_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("pipeline.lock");
        write_atomic(&lock, b"v").unwrap();
        std::fs::write(temp_name(&lock, 12345), "partial").unwrap();
        sweep_temp_files(&lock);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["pipeline.lock"]);
    }
}
