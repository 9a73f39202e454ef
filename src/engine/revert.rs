//! Never silently revert another checkout's change. Every transaction
//! records the commit and branch of the checkout it ran from; before a run
//! changes a row, it asks git whether this checkout contains the commit the
//! row was last written from. If not, this configuration lacks that change
//! and the run would undo it: a plan says so per resource, and an apply
//! refuses unless `-allow-revert` is given. Where git cannot tell (a
//! shallow clone, no git, a commit never fetched here), the run warns.
//!
//! Queued applies that waited for each other's locks are where this
//! happens: the one that waited re-plans on the winner's rows.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use super::session::Session;
use crate::db::store::LastWriter;

/// A row this run would change although it was last written from a commit
/// this checkout does not contain (or may not: see [`Revert::certain`]).
#[derive(Debug)]
pub struct Revert {
    pub address: String,
    pub writer: LastWriter,
    /// False where git could not tell whether the commit is contained.
    pub certain: bool,
}

impl Revert {
    /// `terraform_data.x was last changed by transaction 41 from commit
    /// abc1234 on branch team-a, which this checkout does not contain`.
    pub fn describe(&self) -> String {
        let commit = self.writer.git_commit.as_deref().unwrap_or_default();
        let short = &commit[..commit.len().min(12)];
        let branch = match &self.writer.git_branch {
            Some(b) => format!(" on branch {b}"),
            None => String::new(),
        };
        let which = match self.certain {
            true => "which this checkout does not contain",
            false => "and git cannot tell whether this checkout contains it",
        };
        format!(
            "{} was last changed by transaction {} from commit {short}{branch}, {which}",
            self.address, self.writer.txn_id
        )
    }
}

/// The rows among `addresses` (what the run changes) last written from a
/// commit this checkout does not contain, or may not. Nothing when this
/// directory is not a git checkout, or a row's writer recorded no commit.
pub async fn reverts(session: &Session<'_>, addresses: &[String]) -> Result<Vec<Revert>> {
    let checkout = &session.settings.checkout;
    let Some(repo) = &checkout.repo else {
        return Ok(Vec::new());
    };
    let Some(head) = repo.commit.as_deref() else {
        return Ok(Vec::new());
    };
    let writers = session.store.last_writers(&session.name, addresses).await?;
    let mut contained: HashMap<String, Option<bool>> = HashMap::new();
    let mut out = Vec::new();
    for (address, writer) in writers {
        let Some(commit) = writer.git_commit.clone() else {
            continue;
        };
        if commit == head {
            continue;
        }
        let known = *contained
            .entry(commit.clone())
            .or_insert_with(|| is_ancestor(&repo.top, &commit));
        match known {
            Some(true) => {}
            Some(false) => out.push(Revert {
                address,
                writer,
                certain: true,
            }),
            None => out.push(Revert {
                address,
                writer,
                certain: false,
            }),
        }
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}

/// Whether `commit` is an ancestor of HEAD in the work tree at `top`
/// (`git merge-base --is-ancestor`); `None` where git cannot tell.
fn is_ancestor(top: &Path, commit: &str) -> Option<bool> {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(top)
        .args(["merge-base", "--is-ancestor", commit, "HEAD"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    match status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        // Not a commit known here. An ancestor of HEAD is known, unless the
        // history was cut short (a shallow clone, as CI checkouts often are).
        Some(128) if !is_shallow(top) => Some(false),
        _ => None,
    }
}

/// Whether the repository at `top` is a shallow clone.
fn is_shallow(top: &Path) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(top)
        .args(["rev-parse", "--is-shallow-repository"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "false")
        .unwrap_or(true)
}
