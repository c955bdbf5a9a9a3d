//! A Hugging Face Hub client for publishing: just the calls one commit needs (create repo,
//! preupload, LFS upload, commit), over blocking HTTP with retries.

mod client;
mod commit;
mod error;
mod lfs;
mod preupload;
mod repo;
mod retry;
mod token;

pub use client::{DEFAULT_ENDPOINT, Hub, HubConfig, RepoKind};
pub use commit::CommitInfo;
pub use error::HubError;
pub use retry::RetryPolicy;
pub use token::{Token, TokenSource};

use commit::CommitFile;
use lfs::LfsOutcome;
use preupload::UploadMode;

use crate::manifest::Entry;

/// What became of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFate {
    /// Sent inline in the commit.
    Committed,
    /// Uploaded to LFS and committed.
    Uploaded,
    /// Committed by reference: the hub already held the LFS object.
    Reused,
    /// Identical to what the branch already holds: left out of the commit.
    Unchanged,
    /// Excluded by the repository's `.gitignore`.
    Ignored,
}

/// The result of [`Hub::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub fates: Vec<FileFate>,
    /// `None` when every file was unchanged, so no commit was made.
    pub commit: Option<CommitInfo>,
}

impl Hub<'_> {
    /// Publishes `entries` as one commit. Any failure before the commit leaves the branch as
    /// it was: LFS objects alone are not visible in the repository.
    pub fn publish(
        &self,
        entries: &[Entry],
        private: bool,
        summary: &str,
        description: &str,
    ) -> Result<Published, HubError> {
        self.ensure_repo(private)?;
        let plans = self.preupload(entries)?;
        let mut fates = Vec::with_capacity(entries.len());
        for (entry, plan) in entries.iter().zip(&plans) {
            let unchanged = match (&plan.remote_oid, plan.mode) {
                (Some(oid), UploadMode::Lfs) => *oid == entry.sha256,
                (Some(oid), UploadMode::Regular) => {
                    *oid == entry
                        .git_blob_id()
                        .map_err(client::read_error(&entry.path))?
                }
                (None, _) => false,
            };
            fates.push(if plan.ignored {
                FileFate::Ignored
            } else if unchanged {
                FileFate::Unchanged
            } else if plan.mode == UploadMode::Lfs {
                FileFate::Uploaded
            } else {
                FileFate::Committed
            });
        }
        if !fates
            .iter()
            .any(|f| matches!(f, FileFate::Committed | FileFate::Uploaded))
        {
            return Ok(Published {
                fates,
                commit: None,
            });
        }

        let lfs: Vec<(usize, &Entry)> = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| fates[*i] == FileFate::Uploaded)
            .collect();
        let total: u64 = lfs.iter().map(|(_, e)| e.size).sum();
        self.reporter.begin(
            &format!("upload to {}", self.repo_url()),
            Some(total),
            "bytes",
        );
        let mut sent = 0u64;
        let lfs_entries: Vec<&Entry> = lfs.iter().map(|(_, e)| *e).collect();
        let outcomes = self.upload_lfs(&lfs_entries, &mut |bytes| {
            sent += bytes;
            self.reporter.set_position(sent);
        })?;
        for ((index, _), outcome) in lfs.iter().zip(outcomes) {
            if outcome == LfsOutcome::AlreadyThere {
                fates[*index] = FileFate::Reused;
            }
        }

        let files: Vec<CommitFile<'_>> = entries
            .iter()
            .zip(&fates)
            .filter_map(|(entry, fate)| match fate {
                FileFate::Committed => Some(CommitFile::Regular(entry)),
                FileFate::Uploaded | FileFate::Reused => Some(CommitFile::Lfs(entry)),
                FileFate::Unchanged | FileFate::Ignored => None,
            })
            .collect();
        let body = commit::ndjson(summary, description, &files)?;
        self.reporter.set_message("committing");
        let commit = self.commit(body)?;
        Ok(Published {
            fates,
            commit: Some(commit),
        })
    }
}
