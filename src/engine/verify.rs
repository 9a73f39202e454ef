//! What terraform planned, checked against the locks before anything is
//! applied: every instance it plans to change must lie in the locked write
//! set. Nothing is ever applied unlocked.

use std::collections::HashSet;

use anyhow::{bail, Context as _, Result};

use super::change_set::ChangeSet;
use super::session::Context;
use crate::terraform::{RunDir, Terraform};

/// The instances the plan file at `plan_file` changes that lie outside the
/// write set of `cs` (empty when everything planned is locked), and
/// everything it changes.
pub async fn outside_write_set(
    cx: &Context<'_>,
    dir: &RunDir,
    plan_file: &std::path::Path,
    cs: &ChangeSet,
) -> Result<(Vec<String>, Vec<String>)> {
    let planned =
        planned_changes(&cx.tf, cx.session.settings.discovery_oracle, dir, plan_file).await?;
    let write: HashSet<&str> = cs.write.iter().map(String::as_str).collect();
    let outside = planned
        .iter()
        .filter(|a| !write.contains(a.as_str()))
        .cloned()
        .collect();
    Ok((outside, planned))
}

/// The instances the plan file at `plan_file` changes: read from the file
/// itself where [`crate::terraform::planfile`] is sure of it, else from
/// `terraform show -json` (one terraform start-up more). With the `oracle`
/// on (the tests), both run and must agree.
pub async fn planned_changes(
    tf: &Terraform,
    oracle: bool,
    dir: &RunDir,
    plan_file: &std::path::Path,
) -> Result<Vec<String>> {
    let read = crate::terraform::planfile::changed_addresses(plan_file, tf.version_text());
    if let (Some(changed), false) = (&read, oracle) {
        return Ok(changed.clone());
    }
    let planned = dir
        .show_plan(tf, plan_file)
        .await
        .context("cannot read terraform's plan")?
        .changed_addresses();
    if oracle && read.as_ref().is_some_and(|r| *r != planned) {
        bail!(
            "plan file oracle: the plan file says {:?} change, terraform show -json {planned:?}",
            read.unwrap_or_default()
        );
    }
    if oracle && read.is_none() && !tf.is_opentofu() {
        bail!("plan file oracle: terraform's plan file could not be read");
    }
    Ok(planned)
}
