//! `hf:org/name[@revision]`: a model on the Hugging Face Hub, downloaded into the standard
//! Hugging Face cache (`$HF_HOME/hub/models--org--name/{blobs,snapshots,refs}`) so that it is
//! shared with Python tools, and reused without network when already there.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::http::{client, error_chain};
use super::{Resolved, SourceError};

/// The Hub settings taken from the environment, as huggingface_hub reads them.
#[derive(Debug, Clone)]
pub struct HubEnv {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_TOKEN`.
    pub token: Option<String>,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE=1`: use the cache only.
    pub offline: bool,
}

impl HubEnv {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_default()).join(".cache"));
            base.join("huggingface")
        });
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token: var("HF_TOKEN"),
            cache: var("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or(home.join("hub")),
            offline: var("HF_HUB_OFFLINE")
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes")),
        }
    }
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

fn repo_dir(env: &HubEnv, repo: &str) -> PathBuf {
    env.cache
        .join(format!("models--{}", repo.replace('/', "--")))
}

/// The commit a revision points at in the cache, if known.
fn cached_commit(dir: &Path, revision: &str) -> Option<String> {
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_owned()
    } else {
        std::fs::read_to_string(dir.join("refs").join(revision))
            .ok()?
            .trim()
            .to_owned()
    };
    dir.join("snapshots")
        .join(&commit)
        .join("config.json")
        .is_file()
        .then_some(commit)
}

/// Resolves `repo@revision` to a snapshot directory holding config.json, the tokenizer and
/// the safetensors weights.
pub fn resolve_with(
    env: &HubEnv,
    repo: &str,
    revision: &str,
    log: &mut dyn FnMut(&str),
) -> Result<Resolved, SourceError> {
    let dir = repo_dir(env, repo);
    let done = |commit: String| Resolved {
        path: dir.join("snapshots").join(&commit),
        revision: format!("hf:{repo}@{commit}"),
    };
    if env.offline {
        return cached_commit(&dir, revision).map(done).ok_or_else(|| {
            SourceError::NotFound(format!(
                "hf:{repo}@{revision} is not in the Hugging Face cache {} and HF_HUB_OFFLINE is set; fix: unset HF_HUB_OFFLINE once to download it",
                env.cache.display()
            ))
        });
    }
    let http = client()?;
    let endpoint = env.endpoint.trim_end_matches('/');
    let get = |url: &str| {
        let mut request = http.get(url);
        if let Some(token) = &env.token {
            request = request.bearer_auth(token);
        }
        request.send().and_then(|r| r.error_for_status())
    };
    let info_url = format!("{endpoint}/api/models/{repo}/revision/{revision}");
    let info: RepoInfo = match get(&info_url).and_then(|r| r.text()) {
        Ok(body) => serde_json::from_str(&body).map_err(|e| {
            SourceError::Network(format!(
                "{info_url}: unexpected answer ({e}); fix: check HF_ENDPOINT"
            ))
        })?,
        Err(e) => {
            // Like huggingface_hub: without network, a cached snapshot still serves.
            if let Some(commit) = cached_commit(&dir, revision) {
                log(&format!(
                    "{info_url}: {}; using the cached snapshot {commit}",
                    error_chain(&e)
                ));
                return Ok(done(commit));
            }
            let hint = match e.status().map(|s| s.as_u16()) {
                Some(401 | 403) => "set HF_TOKEN to a token with access to the repository",
                Some(404) => "check the repository name and revision",
                _ => "check the network or HF_ENDPOINT",
            };
            return Err(SourceError::Network(format!(
                "{info_url}: {}; fix: {hint}",
                error_chain(&e)
            )));
        }
    };
    let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let snapshot = dir.join("snapshots").join(&info.sha);
    let mut fetch = |name: &str| -> Result<PathBuf, SourceError> {
        let path = snapshot.join(name);
        if path.exists() {
            return Ok(path);
        }
        let url = format!("{endpoint}/{repo}/resolve/{}/{name}", info.sha);
        log(&format!("downloading {url}"));
        let network =
            |e: &dyn std::error::Error| SourceError::Network(format!("{url}: {}", error_chain(e)));
        let mut response = get(&url).map_err(|e| network(&e))?;
        let etag = ["x-linked-etag", "etag"]
            .iter()
            .find_map(|h| response.headers().get(*h)?.to_str().ok())
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned())
            .filter(|v| !v.is_empty() && !v.contains(['/', '\\']))
            .unwrap_or_else(|| format!("{}-{}", info.sha, name.replace('/', "-")));
        let blobs = dir.join("blobs");
        let blob = blobs.join(&etag);
        let io = |e: std::io::Error, p: &Path| SourceError::Io(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(&blobs).map_err(|e| io(e, &blobs))?;
        if !blob.exists() {
            let part = blobs.join(format!("{etag}.incomplete"));
            let mut file = File::create(&part).map_err(|e| io(e, &part))?;
            response.copy_to(&mut file).map_err(|e| network(&e))?;
            file.flush().map_err(|e| io(e, &part))?;
            std::fs::rename(&part, &blob).map_err(|e| io(e, &blob))?;
        }
        let parent = path.parent().expect("snapshot file has a parent");
        std::fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
        link_blob(&blob, &path).map_err(|e| io(e, &path))?;
        Ok(path)
    };
    for required in ["config.json", "tokenizer.json"] {
        if !names.contains(&required) {
            return Err(SourceError::NotFound(format!(
                "hf:{repo}@{revision} has no {required}; fix: use a repository in Hugging Face transformers layout"
            )));
        }
        fetch(required)?;
    }
    for optional in ["tokenizer_config.json", "generation_config.json"] {
        if names.contains(&optional) {
            fetch(optional)?;
        }
    }
    if names.contains(&"model.safetensors") {
        fetch("model.safetensors")?;
    } else if names.contains(&"model.safetensors.index.json") {
        let index_path = fetch("model.safetensors.index.json")?;
        let text = std::fs::read_to_string(&index_path)
            .map_err(|e| SourceError::Io(format!("{}: {e}", index_path.display())))?;
        let index: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| SourceError::Integrity(format!("{}: {e}", index_path.display())))?;
        let mut shards: Vec<&String> = index.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        for shard in shards {
            fetch(shard)?;
        }
    } else {
        return Err(SourceError::NotFound(format!(
            "hf:{repo}@{revision} has no safetensors weights; fix: use a repository with model.safetensors"
        )));
    }
    if revision != info.sha {
        let refs = dir.join("refs");
        let write = std::fs::create_dir_all(&refs)
            .and_then(|()| std::fs::write(refs.join(revision), &info.sha));
        write.map_err(|e| SourceError::Io(format!("{}: {e}", refs.display())))?;
    }
    Ok(done(info.sha))
}

/// Points a snapshot file at its blob with a relative symlink, as huggingface_hub does; copies
/// where symlinks are unavailable.
fn link_blob(blob: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let depth = path
            .strip_prefix(
                blob.parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("")),
            )
            .map_or(2, |rel| rel.components().count() - 1);
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().unwrap_or_default());
        std::os::unix::fs::symlink(target, path)
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(blob, path).map(|_| ())
    }
}
