//! Content hashes of files and directories, with a cache keyed by (size, mtime, inode) so that
//! unchanged large files are not read again.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A file whose mtime is this close to "now" may still change within the same timestamp tick,
/// so its hash is not cached yet (the "racy clean" problem git also has).
const RACY_WINDOW: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    hash: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct HashError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The hash of a file or directory, and for a directory the hash of each file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub hash: blake3::Hash,
    /// Relative path → hash, sorted by path; empty for a plain file.
    pub files: Vec<(String, blake3::Hash)>,
}

/// Files at least this large are announced before they are read: hashing them takes a while.
const LARGE_FILE: u64 = 64 << 20;

/// Told the path and size of a large file about to be hashed.
type Notice = Box<dyn Fn(&Path, u64) + Send + Sync>;

/// Thread-safe; shared by stages hashing in parallel.
#[derive(Default)]
pub struct StatCache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
    dirty: Mutex<bool>,
    notice: Option<Notice>,
}

impl StatCache {
    /// Loads the cache file; a missing or unreadable file gives an empty cache (it is only a
    /// cache).
    pub fn load(file: &Path) -> StatCache {
        let entries = std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<(PathBuf, Entry)>>(&bytes).ok())
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
        StatCache {
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
            notice: None,
        }
    }

    /// Calls `notice` before reading a large file that is not in the cache.
    pub fn with_notice(mut self, notice: impl Fn(&Path, u64) + Send + Sync + 'static) -> Self {
        self.notice = Some(Box::new(notice));
        self
    }

    /// Writes the cache atomically if anything changed; entries for files that no longer
    /// exist are dropped.
    pub fn save(&self, file: &Path) -> std::io::Result<()> {
        if !*self.dirty.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<(&PathBuf, &Entry)> = entries.iter().filter(|(p, _)| p.exists()).collect();
        let bytes = serde_json::to_vec(&live).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(file, &bytes)
    }

    /// The content hash of a file, or of a directory tree (relative paths and file hashes,
    /// sorted). Symbolic links are followed.
    pub fn hash(&self, path: &Path) -> Result<blake3::Hash, HashError> {
        self.hash_tree(path).map(|tree| tree.hash)
    }

    /// Like [`StatCache::hash`], with the hash of every file of a directory.
    pub fn hash_tree(&self, path: &Path) -> Result<Tree, HashError> {
        let err = |source| HashError {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        if meta.is_dir() {
            let mut hasher = blake3::Hasher::new();
            hasher.update(b"dir\0");
            let mut files = Vec::new();
            self.hash_dir(path, Path::new(""), &mut hasher, &mut files)?;
            Ok(Tree {
                hash: hasher.finalize(),
                files,
            })
        } else {
            Ok(Tree {
                hash: self.hash_file(path, &meta)?,
                files: Vec::new(),
            })
        }
    }

    fn hash_dir(
        &self,
        dir: &Path,
        relative: &Path,
        hasher: &mut blake3::Hasher,
        files: &mut Vec<(String, blake3::Hash)>,
    ) -> Result<(), HashError> {
        let err = |source| HashError {
            path: dir.to_path_buf(),
            source,
        };
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = relative.join(&name);
            let meta = std::fs::metadata(&path).map_err(|source| HashError {
                path: path.clone(),
                source,
            })?;
            let rel_text = rel.to_string_lossy();
            hasher.update(rel_text.as_bytes());
            if meta.is_dir() {
                hasher.update(b"/\n");
                self.hash_dir(&path, &rel, hasher, files)?;
            } else {
                let hash = self.hash_file(&path, &meta)?;
                hasher.update(b"\0");
                hasher.update(hash.as_bytes());
                hasher.update(b"\n");
                files.push((rel_text.into_owned(), hash));
            }
        }
        Ok(())
    }

    fn hash_file(&self, path: &Path, meta: &std::fs::Metadata) -> Result<blake3::Hash, HashError> {
        let key = stat_key(meta);
        let cached = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied();
        if let Some(entry) = cached
            && (entry.size, entry.mtime_ns, entry.inode) == key
        {
            return Ok(blake3::Hash::from_bytes(entry.hash));
        }
        if let Some(notice) = &self.notice
            && key.0 >= LARGE_FILE
        {
            notice(path, key.0);
        }
        let hash = hash_contents(path).map_err(|source| HashError {
            path: path.to_path_buf(),
            source,
        })?;
        if !is_racy(key.1) {
            let entry = Entry {
                size: key.0,
                mtime_ns: key.1,
                inode: key.2,
                hash: *hash.as_bytes(),
            };
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), entry);
            *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = true;
        }
        Ok(hash)
    }
}

fn hash_contents(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buffer[..n]);
    }
}

fn stat_key(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (meta.len(), mtime_ns, inode(meta))
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

fn is_racy(mtime_ns: i128) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    mtime_ns + RACY_WINDOW.as_nanos() as i128 > now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_hash_follows_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StatCache::default();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "one").unwrap();
        let first = cache.hash(dir.path()).unwrap();
        assert_eq!(first, cache.hash(dir.path()).unwrap());
        std::fs::write(dir.path().join("sub/a.txt"), "two").unwrap();
        let second = cache.hash(dir.path()).unwrap();
        assert_ne!(first, second);
        std::fs::rename(dir.path().join("sub/a.txt"), dir.path().join("sub/b.txt")).unwrap();
        assert_ne!(second, cache.hash(dir.path()).unwrap());
    }

    #[test]
    fn cached_entries_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "data").unwrap();
        let old = SystemTime::now() - Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let cache = StatCache::default();
        let hash = cache.hash(&file).unwrap();
        let store = dir.path().join("cache.json");
        cache.save(&store).unwrap();
        let loaded = StatCache::load(&store);
        assert_eq!(loaded.entries.lock().unwrap().len(), 1);
        assert_eq!(loaded.hash(&file).unwrap(), hash);
    }
}
