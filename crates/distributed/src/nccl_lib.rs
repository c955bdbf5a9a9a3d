//! Finding NCCL for the rank processes.
//!
//! cudarc opens NCCL by the names `libnccl.so`, `libnccl.so.13`, … `.9` and `.1` only, while
//! NCCL 2 installs itself as `libnccl.so.2` (PyTorch's wheels bring one along in
//! `nvidia/nccl/lib`). The dynamic loader reads `LD_LIBRARY_PATH` once, when a process starts,
//! so the stage finds the library, links it as `libnccl.so` in a folder of tigerflow's cache and
//! starts the ranks with that folder first on their `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why NCCL could not be found or linked.
#[derive(Debug, thiserror::Error)]
pub enum NcclLibError {
    #[error(
        "{OVERRIDE}={}: no libnccl.so* in this folder; fix: point it at the NCCL library file",
        .0.display()
    )]
    NoneInOverride(PathBuf),
    #[error("{OVERRIDE}={}: no such file; fix: point it at libnccl.so.2", .0.display())]
    NoSuchOverride(PathBuf),
    #[error(
        "NCCL (libnccl.so) was not found on LD_LIBRARY_PATH, in the system's library folders or in a Python `nvidia` package; fix: `pip install nvidia-nccl-cu12` or set {OVERRIDE} to the library's path"
    )]
    NotFound,
    #[error("{}: {source}", dir.display())]
    Link {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Overrides the search: the NCCL library file, or a folder holding it.
pub const OVERRIDE: &str = "TIGERFLOW_NCCL";

/// The first NCCL library in `dirs`: `libnccl.so`, else the highest-numbered `libnccl.so.N`.
pub fn find_in(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().find_map(|dir| {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let rest = name.strip_prefix("libnccl.so")?;
                let version = match rest.strip_prefix('.') {
                    None if rest.is_empty() => u32::MAX,
                    Some(v) => v.split('.').next()?.parse().ok()?,
                    None => return None,
                };
                Some((version, entry.path()))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, path)| path)
    })
}

/// Where NCCL usually is: `LD_LIBRARY_PATH`, the system's library folders, the CUDA toolkit,
/// and the `nvidia` Python packages PyTorch installs.
fn usual_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/local/cuda/lib64",
            "/usr/local/nccl/lib",
        ]
        .map(PathBuf::from),
    );
    let python = Command::new("python3")
        .args(["-c", "import nvidia; print('\\n'.join(nvidia.__path__))"])
        .output();
    if let Ok(out) = python
        && out.status.success()
    {
        dirs.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|line| Path::new(line.trim()).join("nccl/lib")),
        );
    }
    dirs
}

/// A folder holding `libnccl.so` (a link to the NCCL found), under `cache_dir`.
pub fn library_dir(cache_dir: &Path) -> Result<PathBuf, NcclLibError> {
    let library = match std::env::var_os(OVERRIDE).map(PathBuf::from) {
        Some(path) if path.is_dir() => {
            find_in(std::slice::from_ref(&path)).ok_or(NcclLibError::NoneInOverride(path))?
        }
        Some(path) if path.is_file() => path,
        Some(path) => return Err(NcclLibError::NoSuchOverride(path)),
        None => find_in(&usual_dirs()).ok_or(NcclLibError::NotFound)?,
    };
    link_as_libnccl(&library, &cache_dir.join("nccl"))
}

fn link_as_libnccl(library: &Path, dir: &Path) -> Result<PathBuf, NcclLibError> {
    let io = |source| NcclLibError::Link {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let link = dir.join("libnccl.so");
    let target = library.canonicalize().map_err(io)?;
    if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
        // Replaced through a temporary name, so that ranks of another run never see no link.
        let fresh = dir.join(format!("libnccl.so.{}", std::process::id()));
        let _ = std::fs::remove_file(&fresh);
        std::os::unix::fs::symlink(&target, &fresh).map_err(io)?;
        std::fs::rename(&fresh, &link).map_err(io)?;
    }
    Ok(dir.to_owned())
}

/// The `LD_LIBRARY_PATH` that GPU ranks need: NCCL's folder first. (CPU ranks need none:
/// leave theirs alone.)
pub fn library_path(cache_dir: &Path) -> Result<std::ffi::OsString, NcclLibError> {
    Ok(library_path_with(&library_dir(cache_dir)?))
}

/// `LD_LIBRARY_PATH` with `dir` first.
fn library_path_with(dir: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_owned()).chain(std::env::split_paths(&rest)))
        .expect("cache paths hold no ':'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_plain_name_first_then_the_highest_version_and_links_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (empty, torch, system) = (
            tmp.path().join("e"),
            tmp.path().join("t"),
            tmp.path().join("s"),
        );
        for dir in [&empty, &torch, &system] {
            std::fs::create_dir(dir).unwrap();
        }
        for name in [
            "libnccl.so.1",
            "libnccl.so.2",
            "libnccl_static.a",
            "libnccl.so.2.21.5",
        ] {
            std::fs::write(torch.join(name), name).unwrap();
        }
        std::fs::write(system.join("libnccl.so"), "system").unwrap();
        let found = find_in(&[empty.clone(), torch.clone(), system.clone()]).unwrap();
        assert!(
            found
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("libnccl.so.2")
        );
        assert_eq!(
            find_in(&[system.clone(), torch]).unwrap(),
            system.join("libnccl.so")
        );
        assert_eq!(find_in(&[empty]), None);

        let dir = link_as_libnccl(&found, &tmp.path().join("cache/nccl")).unwrap();
        let text = std::fs::read_to_string(dir.join("libnccl.so")).unwrap();
        assert!(text.starts_with("libnccl.so.2"));
        let again = link_as_libnccl(&system.join("libnccl.so"), &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(again.join("libnccl.so")).unwrap(),
            "system"
        );
    }
}
