//! Where a stage publishes: a local folder or a Hugging Face Hub repository.

use std::fmt;
use std::path::PathBuf;

/// A parsed `target = "..."` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `dir:PATH`: a local folder laid out as the hub repository would be. A relative path is
    /// relative to the project root.
    Dir(PathBuf),
    /// `hf:owner/name`: a repository on the Hugging Face Hub.
    Hub(RepoName),
}

/// `owner/name` of a hub repository, checked against the hub's naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

const FIX: &str = "fix: write `target = \"dir:published/NAME\"` for a local folder or `target = \"hf:OWNER/NAME\"` for the Hugging Face Hub";

impl Target {
    /// Parses `dir:PATH` or `hf:owner/name`; the error says what is wrong and how to write it.
    pub fn parse(raw: &str) -> Result<Target, String> {
        if raw.is_empty() {
            return Err(format!("`target` is required; {FIX}"));
        }
        if let Some(path) = raw.strip_prefix("dir:") {
            if path.trim().is_empty() {
                return Err(format!("`{raw}` names no folder; {FIX}"));
            }
            return Ok(Target::Dir(PathBuf::from(path)));
        }
        if let Some(repo) = raw.strip_prefix("hf:") {
            return RepoName::parse(repo).map(Target::Hub);
        }
        Err(format!(
            "`{raw}` is neither `dir:PATH` nor `hf:owner/name`; {FIX}"
        ))
    }
}

impl RepoName {
    fn parse(repo: &str) -> Result<RepoName, String> {
        let Some((owner, name)) = repo.split_once('/') else {
            return Err(format!(
                "`hf:{repo}` needs an owner: `hf:OWNER/{repo}` (your user or organisation name)"
            ));
        };
        for (what, part) in [("owner", owner), ("name", name)] {
            check_part(what, part).map_err(|why| format!("`hf:{repo}`: the {what} {why}"))?;
        }
        Ok(RepoName {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The hub accepts letters, digits, `-`, `_` and `.`, at most 96 characters, not starting or
/// ending with `-`/`.` and without `--` or `..`.
fn check_part(what: &str, part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!(
            "is empty; write `hf:OWNER/NAME` with a non-empty {what}"
        ));
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "`{part}` contains `{bad}`; use only letters, digits, `-`, `_` and `.`"
        ));
    }
    if part.len() > 96 {
        return Err(format!("`{part}` is longer than 96 characters; shorten it"));
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err(format!(
            "`{part}` starts or ends with `-` or `.`; remove it"
        ));
    }
    if part.contains("--") || part.contains("..") {
        return Err(format!(
            "`{part}` contains `--` or `..`; use single characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        assert_eq!(
            Target::parse("dir:published/dataset"),
            Ok(Target::Dir(PathBuf::from("published/dataset")))
        );
        assert_eq!(
            Target::parse("hf:alice/chat-data_v1.2"),
            Ok(Target::Hub(RepoName {
                owner: "alice".into(),
                name: "chat-data_v1.2".into()
            }))
        );
    }

    #[test]
    fn rejects_with_a_fix() {
        for bad in [
            "",
            "dir:",
            "s3:bucket",
            "hf:noowner",
            "hf:/x",
            "hf:a/b c",
            "hf:a/b--c",
            "hf:a/.b",
            "hf:a/b/c",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.contains("hf:") || err.contains("dir:"), "{bad}: {err}");
        }
    }
}
