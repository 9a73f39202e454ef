//! What terraform planned, checked against the locks before anything is
//! applied: every instance it plans to change must lie in the locked write
//! set. Nothing is ever applied unlocked. And `plan -verify`: the plan of
//! the cone checked against terraform's plan of the whole configuration.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{bail, Context as _, Result};

use super::change_set::ChangeSet;
use super::session::Context;
use crate::terraform::{Plan, RunDir, Terraform};
use crate::tfstate::State;
use crate::ui::thousands;

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

/// What a plan changes, as `plan -verify` compares plans: each changed
/// instance with its actions, and each root output change.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    resources: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
}

impl Changes {
    fn of(plan: &Plan) -> Changes {
        let mut out = Changes::default();
        for rc in &plan.resource_changes {
            let moved = rc.previous_address.as_deref().filter(|p| *p != rc.address);
            if !rc.change.is_change() && moved.is_none() {
                continue;
            }
            let mut what = rc.change.actions.join("+");
            if let Some(from) = moved {
                what.push_str(&format!(" (moved from {from})"));
            }
            if rc.change.importing.as_ref().is_some_and(|i| !i.is_null()) {
                what.push_str(" (imported)");
            }
            let address = match &rc.deposed {
                Some(key) => format!("{} (deposed object {key})", rc.address),
                None => rc.address.clone(),
            };
            out.resources.insert(address, what);
        }
        for (name, change) in &plan.output_changes {
            if change.is_change() {
                out.outputs
                    .insert(format!("output.{name}"), change.actions.join("+"));
            }
        }
        out
    }

    fn len(&self) -> usize {
        self.resources.len() + self.outputs.len()
    }

    /// One line per difference between `self` (stategraph's) and `whole`
    /// (terraform's plan of the whole configuration).
    fn differences(&self, whole: &Changes) -> Vec<String> {
        let mut out = Vec::new();
        for (ours, theirs) in [
            (&self.resources, &whole.resources),
            (&self.outputs, &whole.outputs),
        ] {
            let names: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
            for name in names {
                match (ours.get(name), theirs.get(name)) {
                    (Some(a), Some(b)) if a == b => {}
                    (Some(a), Some(b)) => {
                        out.push(format!("{name}: stategraph plans {a}, terraform {b}"))
                    }
                    (Some(a), None) => {
                        out.push(format!("{name}: stategraph plans {a}, terraform nothing"))
                    }
                    (None, Some(b)) => {
                        out.push(format!("{name}: terraform plans {b}, stategraph nothing"))
                    }
                    (None, None) => {}
                }
            }
        }
        out
    }
}

/// `plan -verify`: terraform's refresh-less plan of the whole configuration
/// (the user's flags kept) on the full stored state `fresh`, in `dir`,
/// against the same refresh-less plan targeted as the plan of the cone was
/// (`targets`; `None` when stategraph found nothing to plan and ran no
/// terraform). One line when they agree; an error naming each difference
/// when not.
pub async fn against_whole_plan(
    cx: &Context<'_>,
    dir: &RunDir,
    fresh: &State,
    targets: Option<&[String]>,
) -> Result<()> {
    let ui = cx.session.ui;
    if cx.flags.refresh_only {
        ui.info("Verify: a -refresh-only plan covers the whole state; nothing to compare.");
        return Ok(());
    }
    let step = ui.step("Verifying (terraform's plan of the whole configuration, without refresh)");
    dir.write_state(fresh)?;
    let (whole_file, cone_file) = (dir.plan_path("verify-whole"), dir.plan_path("verify-cone"));
    let whole = super::discover::discovery_plan(cx, dir, &[], &whole_file);
    let ran = match targets {
        Some(targets) => {
            let cone = super::discover::discovery_plan(cx, dir, targets, &cone_file);
            tokio::try_join!(whole, cone).map(|_| true)
        }
        None => whole.await.map(|_| false),
    };
    let cone_ran = match ran {
        Ok(cone_ran) => cone_ran,
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let read = |file| async move {
        dir.show_plan(&cx.tf, file)
            .await
            .context("cannot read terraform's plan")
    };
    let whole = Changes::of(&read(&whole_file).await?);
    let cone = match cone_ran {
        true => Changes::of(&read(&cone_file).await?),
        false => Changes::default(),
    };
    let differences = cone.differences(&whole);
    if differences.is_empty() {
        step.done(format!(
            "terraform plans the same {} change{}",
            thousands(whole.len()),
            if whole.len() == 1 { "" } else { "s" }
        ));
        return Ok(());
    }
    step.fail();
    bail!(
        "stategraph's plan differs from terraform's plan of the whole configuration \
         ({} difference{}):\n\n{}\n\n\
         Do not apply it: stategraph would apply its own plan. This is a stategraph bug; \
         please report it with this output.",
        differences.len(),
        if differences.len() == 1 { "" } else { "s" },
        differences
            .iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}
