//! The `dir:` target: a local folder laid out as the hub repository would be, replaced whole
//! so that readers see either the old content or the new, never a mix.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::{Content, Entry, sha256_of_reader};

/// Marks a folder as written by this target, so that a typo in `target` can never replace a
/// folder of the user's own (the project root, say).
pub const MARKER: &str = ".tigerflow-published";

#[derive(Debug, thiserror::Error)]
pub(crate) enum DirError {
    #[error(
        "{}: exists and was not written by tigerflow (no {MARKER} file); fix: choose a new folder in `target` or delete this one",
        .0.display()
    )]
    Foreign(PathBuf),
    #[error("{}: {context}: {source}", .path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, context: &'static str) -> impl FnOnce(io::Error) -> DirError + 'a {
    move |source| DirError::Io {
        path: path.to_path_buf(),
        context,
        source,
    }
}

/// Makes `dest` hold exactly `entries`. Returns `false`, touching nothing, when it already does.
pub(crate) fn publish_dir(dest: &Path, entries: &[Entry]) -> Result<bool, DirError> {
    let exists = dest.exists();
    if exists {
        if !dest.join(MARKER).is_file() && !is_empty_dir(dest) {
            return Err(DirError::Foreign(dest.to_path_buf()));
        }
        if holds_exactly(dest, entries).map_err(io_err(dest, "reading the published folder"))? {
            return Ok(false);
        }
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent, "creating the folder"))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "published".to_owned());
    let staging = parent.join(format!(".{name}.tigerflow-staging"));
    let old = parent.join(format!(".{name}.tigerflow-old"));
    for leftover in [&staging, &old] {
        if leftover.exists() {
            fs::remove_dir_all(leftover).map_err(io_err(leftover, "removing a leftover"))?;
        }
    }
    write_all(&staging, entries).map_err(io_err(&staging, "writing"))?;
    if exists {
        fs::rename(dest, &old).map_err(io_err(dest, "moving the old content aside"))?;
    }
    fs::rename(&staging, dest).map_err(io_err(dest, "moving the new content in"))?;
    if exists {
        fs::remove_dir_all(&old).map_err(io_err(&old, "removing the old content"))?;
    }
    Ok(true)
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn write_all(staging: &Path, entries: &[Entry]) -> io::Result<()> {
    fs::create_dir_all(staging)?;
    for entry in entries {
        let path = staging.join(&entry.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        match &entry.content {
            Content::File(source) => fs::copy(source, &path).map(|_| ()),
            Content::Bytes(bytes) => fs::write(&path, bytes),
        }?;
    }
    fs::write(
        staging.join(MARKER),
        "written by tigerflow; the folder is replaced whole on each publish\n",
    )
}

/// Whether `dir` holds exactly these files (besides the marker) with this content.
fn holds_exactly(dir: &Path, entries: &[Entry]) -> io::Result<bool> {
    let mut present = BTreeMap::new();
    list_files(dir, dir, &mut present)?;
    present.remove(MARKER);
    if present.len() != entries.len() {
        return Ok(false);
    }
    for entry in entries {
        let Some(path) = present.get(&entry.path) else {
            return Ok(false);
        };
        let (sha256, size) = sha256_of_reader(fs::File::open(path)?)?;
        if size != entry.size || sha256 != entry.sha256 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `/`-separated relative path → file, for every file under `dir`.
fn list_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else {
            let relative = path
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(relative, path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<Entry> {
        vec![
            Entry::from_bytes("README.md", text.as_bytes().to_vec()),
            Entry::from_bytes("data/a.txt", b"a".to_vec()),
        ]
    }

    #[test]
    fn writes_then_skips_then_replaces() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("published/ds");
        assert!(publish_dir(&dest, &entries("one")).unwrap());
        assert_eq!(fs::read_to_string(dest.join("README.md")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dest.join("data/a.txt")).unwrap(), "a");
        assert!(!publish_dir(&dest, &entries("one")).unwrap());
        fs::write(dest.join("stale.txt"), "x").unwrap();
        assert!(publish_dir(&dest, &entries("two")).unwrap());
        assert_eq!(fs::read_to_string(dest.join("README.md")).unwrap(), "two");
        assert!(!dest.join("stale.txt").exists());
        let names: Vec<_> = fs::read_dir(root.path().join("published"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ds"], "no staging leftovers");
    }

    #[test]
    fn refuses_a_foreign_folder() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("mine.txt"), "keep").unwrap();
        let err = publish_dir(root.path(), &entries("x")).unwrap_err();
        assert!(matches!(err, DirError::Foreign(_)), "{err}");
        assert!(root.path().join("mine.txt").exists());
    }
}
