//! The set of files one stage run publishes, with the hashes every target needs.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha1::Digest as _;
use sha2::Sha256;

/// Where a published file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A file produced by an upstream stage, read when needed (it may be large).
    File(PathBuf),
    /// A file generated here (a README card).
    Bytes(Vec<u8>),
}

/// One file as it will appear in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the repository, `/`-separated.
    pub path: String,
    pub content: Content,
    pub size: u64,
    /// Lowercase hex SHA-256: the LFS object id, and what the receipt records.
    pub sha256: String,
}

impl Entry {
    /// Hashes a file from disk.
    pub fn from_file(path: impl Into<String>, source: &Path) -> io::Result<Entry> {
        let (sha256, size) = sha256_of_reader(File::open(source)?)?;
        Ok(Entry {
            path: path.into(),
            content: Content::File(source.to_path_buf()),
            size,
            sha256,
        })
    }

    pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>) -> Entry {
        Entry {
            path: path.into(),
            size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
            content: Content::Bytes(bytes),
        }
    }

    /// The whole content.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        match &self.content {
            Content::File(path) => std::fs::read(path),
            Content::Bytes(bytes) => Ok(bytes.clone()),
        }
    }

    /// `len` bytes from `offset` (fewer at the end).
    pub fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        match &self.content {
            Content::File(path) => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                file.take(len).read_to_end(&mut buf)?;
                Ok(buf)
            }
            Content::Bytes(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = (offset.saturating_add(len) as usize).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
        }
    }

    /// The git blob id (SHA-1 of `blob <size>\0<content>`): what the hub reports for a regular
    /// file already in the repository.
    pub fn git_blob_id(&self) -> io::Result<String> {
        let mut hasher = sha1::Sha1::new();
        hasher.update(format!("blob {}\0", self.size).as_bytes());
        hasher.update(self.read_all()?);
        Ok(hex(&hasher.finalize()))
    }
}

/// A content fingerprint of the whole set: changes whenever a path or a byte changes.
pub(crate) fn fingerprint(entries: &[Entry]) -> String {
    let mut hasher = Sha256::new();
    for entry in entries {
        hasher.update(entry.path.as_bytes());
        hasher.update([0]);
        hasher.update(entry.sha256.as_bytes());
        hasher.update([b'\n']);
    }
    hex(&hasher.finalize())
}

pub(crate) fn sha256_of_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((hex(&hasher.finalize()), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        let entry = Entry::from_bytes("a.txt", b"hello\n".to_vec());
        assert_eq!(
            entry.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        // `git hash-object` of the same content.
        assert_eq!(
            entry.git_blob_id().unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn ranges_clip_at_the_end() {
        let entry = Entry::from_bytes("a", b"0123456789".to_vec());
        assert_eq!(entry.read_range(8, 5).unwrap(), b"89");
        assert_eq!(entry.read_range(20, 5).unwrap(), b"");
    }
}
