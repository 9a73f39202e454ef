//! Discovery: what a run may change, and the configuration's edges the
//! change set needs.
//!
//! From the configuration alone where its blocks can be compared with the
//! recorded [`super::baseline`]; blocks that read a changed value are
//! planned by terraform's refresh-less plan of those blocks only; terraform's
//! refresh-less plan of the whole configuration where the configuration
//! cannot be compared. With the oracle on (the tests), both ways run every
//! time and must agree.

use std::collections::{BTreeSet, HashSet};

use anyhow::{bail, Context as _, Result};

use super::baseline;
use super::change_set::ChangeSet;
use super::session::Context;
use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::config::{Config, Inputs};
use crate::terraform::plan::{self, ConfigInfo};
use crate::terraform::{Finished, Output, RunDir, Terraform};
use crate::tfargs::TfFlags;
use crate::tfstate::State;
use crate::ui::thousands;

/// What discovery found.
pub struct Discovered {
    /// Dependency edges and root outputs of the configuration.
    pub info: ConfigInfo,
    /// Instance addresses that may change (and resource addresses where
    /// instances may be added), sorted.
    pub changed: Vec<String>,
    /// The configuration as read, where it could be (the baseline is
    /// recorded from it).
    pub config: Option<Config>,
    /// Root outputs that may change whatever the resources do (added,
    /// edited or removed, or reading a changed variable), sorted; see
    /// [`super::change_set::ChangeSet::cover_outputs`].
    pub outputs: Vec<String>,
}

impl Discovered {
    /// Whether nothing may change: no instance, no root output.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.outputs.is_empty()
    }
}

/// What changes in `state` (plus `forced` addresses, and every instance for
/// -refresh-only): from the configuration alone where its blocks can be
/// compared with the recorded baseline, else from a refresh-less plan of
/// the whole configuration in `dir`.
///
/// The plan's changes come from terraform's streamed `-json` output; the
/// configuration's edges from a cache keyed by a fingerprint of its files,
/// filled from `show -json` of the plan when missing. With the oracle on
/// (`STATEGRAPH_DISCOVERY_ORACLE=1`), both ways run every time: the
/// configuration's candidates must cover every change the plan finds, its
/// edges every edge terraform's plan gives, and the changes read from the
/// stream must equal those of the plan file.
pub async fn discover(
    cx: &Context<'_>,
    dir: &RunDir,
    state: &State,
    forced: &[String],
) -> Result<Discovered> {
    let (session, flags) = (&cx.session, &cx.flags);
    let (store, ui) = (&session.store, session.ui);
    let oracle = session.settings.discovery_oracle;
    let read = plain(cx).then(|| crate::terraform::config::read(dir.root(), &inputs(cx, dir)));
    let mut fast: Option<baseline::Candidates> = None;
    let mut why: Option<String> = None;
    let mut stale: Vec<String> = Vec::new();
    match &read {
        Some(Ok(config)) => {
            let recorded = store.baseline(session.state_id).await?;
            match baseline::candidates(config, &recorded, state) {
                Ok(found) => {
                    fast = Some(found);
                    stale = baseline::stale_outputs(config, &recorded, state);
                }
                Err(e) => why = Some(e.0),
            }
        }
        Some(Err(e)) => why = Some(e.0.clone()),
        None => {}
    }
    let config = read.and_then(Result::ok);
    // What the configuration's reading says changes, where it can tell.
    let read_changes = match (&fast, &config) {
        (Some(found), Some(config)) => {
            Some(from_configuration(cx, dir, state, found, config).await?)
        }
        _ => None,
    };
    if let (Some(found), Some(config), false) = (&read_changes, &config, oracle) {
        return Ok(Discovered {
            info: config.info.clone(),
            changed: with_forced(found.clone(), forced),
            config: Some(config.clone()),
            outputs: stale,
        });
    }

    let step = ui.step(match &why {
        Some(why) if !oracle => format!("Discovering changes (plan without refresh: {why})"),
        _ => "Discovering changes (plan without refresh)".to_owned(),
    });
    let plan_file = dir.plan_path("discover");
    let done = match discovery_plan(cx, dir, &[], &plan_file).await {
        Ok(done) => done,
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let streamed = plan::parse_stream(&done.stdout);
    let mut info = config_info(cx, dir, &plan_file, &streamed.changed).await?;
    if let Some(config) = &config {
        // Terraform's plan JSON does not say what `replace_triggered_by` names.
        info.triggers = config.info.triggers.clone();
    }
    if let Some(config) = &config {
        // Blocks terraform planned as no-op are converged as stored, and
        // so are the root outputs it planned as no-op (a plan of the whole
        // configuration evaluates them all).
        let mut entries = baseline::after_plan_of(config, state, &streamed.changed, None);
        if flags.targets.is_empty() && !flags.destroy {
            let quiet = config
                .outputs
                .keys()
                .filter(|o| !streamed.outputs.contains(o))
                .map(String::as_str);
            entries.extend(baseline::outputs_converged(config, quiet));
        }
        store.put_baseline(session.state_id, &entries).await?;
    }
    if let (Some(candidates), Some(config)) = (&read_changes, &config) {
        let planned = (&streamed.changed[..], &streamed.outputs[..]);
        check_oracle(cx, (candidates, &stale), config, &info, planned).await?;
        step.done(format!(
            "{} to change; the configuration's reading ({} to plan) covers them",
            thousands(streamed.changed.len()),
            thousands(candidates.len())
        ));
        return Ok(Discovered {
            info: config.info.clone(),
            changed: with_forced(candidates.clone(), forced),
            config: Some(config.clone()),
            outputs: stale,
        });
    }
    let mut changed = streamed.changed;
    if flags.refresh_only {
        // Drift can be anywhere: a refresh-only run covers the whole state.
        let rows = session.graph_rows().await?;
        changed.extend(rows.into_iter().map(|r| r.address));
    }
    let changed = with_forced(changed, forced);
    step.done(format!("{} to change", thousands(changed.len())));
    Ok(Discovered {
        info,
        changed,
        config,
        outputs: streamed.outputs,
    })
}

/// Whether the configuration alone can say what the run covers: not with
/// -target, -replace, -destroy or -refresh-only.
fn plain(cx: &Context<'_>) -> bool {
    plain_flags(&cx.flags)
}

/// [`plain`] of `f`.
pub(crate) fn plain_flags(f: &TfFlags) -> bool {
    f.targets.is_empty() && f.replace.is_empty() && !f.destroy && !f.refresh_only
}

/// What terraform's evaluation of the configuration depends on besides its files.
fn inputs(cx: &Context<'_>, dir: &RunDir) -> Inputs {
    inputs_of(cx.session.settings, &cx.flags, &cx.tf, dir)
}

/// [`inputs`] of a run with these settings, flags and terraform in `dir`.
pub(crate) fn inputs_of(
    settings: &Settings,
    flags: &TfFlags,
    tf: &Terraform,
    dir: &RunDir,
) -> Inputs {
    Inputs {
        vars: flags.vars.clone(),
        env: settings.tf_vars.clone(),
        workspace: settings.workspace.clone(),
        tf_version: tf.version_text().to_owned(),
        cli_args: settings.tf_cli_args.clone(),
        data_dir: Some(settings.tf_data_dir.clone()),
        cwd: dir.root().to_string_lossy().into_owned(),
    }
}

/// `changed` and `forced`, sorted, each once.
fn with_forced(mut changed: Vec<String>, forced: &[String]) -> Vec<String> {
    changed.extend(forced.iter().cloned());
    changed.sort();
    changed.dedup();
    changed
}

/// What changes according to the configuration's reading: every instance
/// of edited, added or removed blocks (or blocks whose rows changed behind
/// the baseline); for blocks that read a changed value, what terraform's
/// refresh-less plan of those blocks says.
async fn from_configuration(
    cx: &Context<'_>,
    dir: &RunDir,
    state: &State,
    found: &baseline::Candidates,
    config: &Config,
) -> Result<Vec<String>> {
    let ui = cx.session.ui;
    let blocks = format!(
        "{} block{}",
        thousands(found.blocks),
        if found.blocks == 1 { "" } else { "s" }
    );
    if found.precise || found.addresses.is_empty() {
        let step = ui.step("Discovering changes (configuration against the baseline)");
        step.done(format!(
            "{blocks} changed, {} to plan",
            thousands(found.addresses.len())
        ));
        return Ok(found.addresses.clone());
    }
    let step = ui.step(format!(
        "Discovering changes ({blocks} may change: plan of those without refresh)"
    ));
    let targets: BTreeSet<&str> = found
        .addresses
        .iter()
        .map(|a| crate::address::strip_instance_key(a))
        .collect();
    let targets: Vec<String> = targets.into_iter().map(str::to_owned).collect();
    let plan_file = dir.plan_path("discover");
    let done = match discovery_plan(cx, dir, &targets, &plan_file).await {
        Ok(done) => done,
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let streamed = plan::parse_stream(&done.stdout);
    let entries = baseline::after_plan_of(config, state, &streamed.changed, Some(&found.addresses));
    cx.session
        .store
        .put_baseline(cx.session.state_id, &entries)
        .await?;
    step.done(format!("{} to change", thousands(streamed.changed.len())));
    Ok(streamed.changed)
}

/// The configuration's edges and outputs: cached by a fingerprint of its
/// files, else (and always with the oracle) from `show -json` of the plan.
async fn config_info(
    cx: &Context<'_>,
    dir: &RunDir,
    plan_file: &std::path::Path,
    streamed: &[String],
) -> Result<ConfigInfo> {
    let (store, settings) = (&cx.session.store, cx.session.settings);
    let oracle = settings.discovery_oracle;
    let fingerprint = crate::terraform::fingerprint::config_fingerprint(
        dir.root(),
        &settings.tf_data_dir,
        cx.tf.version_text(),
    );
    if let (Some(fp), false) = (&fingerprint, oracle) {
        if let Some(info) = store
            .config_info(fp)
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
        {
            return Ok(info);
        }
    }
    let discovered = dir
        .show_plan(&cx.tf, plan_file)
        .await
        .context("cannot read terraform's plan")?;
    if oracle && discovered.changed_addresses() != streamed {
        bail!(
            "discovery oracle: terraform's streamed plan changes {:?}, its plan file {:?}",
            streamed,
            discovered.changed_addresses()
        );
    }
    let info = discovered.config_info();
    if let Some(fp) = &fingerprint {
        store
            .put_config_info(fp, &serde_json::to_value(&info)?)
            .await?;
    }
    Ok(info)
}

/// The oracle: the cone of the configuration's reading (its candidates and
/// stale outputs) must cover every change terraform's plan finds (the
/// instances and root outputs `planned` changes), and its edges and
/// outputs be terraform's.
async fn check_oracle(
    cx: &Context<'_>,
    (candidates, stale): (&[String], &[String]),
    config: &Config,
    info: &ConfigInfo,
    (planned, planned_outputs): (&[String], &[String]),
) -> Result<()> {
    let rows = cx.session.graph_rows().await?;
    let mut cone = ChangeSet::compute(&rows, candidates, &config.info)?;
    cone.cover_outputs(&rows, &config.info, stale);
    let evaluated = cone.evaluated_outputs(&config.info);
    let missed_outputs: Vec<&String> = planned_outputs
        .iter()
        .filter(|o| !stale.contains(o) && !evaluated.contains(*o))
        .collect();
    if !missed_outputs.is_empty() {
        bail!(
            "discovery oracle: the configuration's reading misses changes of the root outputs \
             {missed_outputs:?}"
        );
    }
    let covered: HashSet<&str> = cone.write.iter().map(String::as_str).collect();
    let missed: Vec<&String> = planned
        .iter()
        .filter(|a| {
            !covered.contains(a.as_str())
                && !covered.contains(crate::address::strip_instance_key(a))
        })
        .collect();
    let edges: HashSet<&(String, String)> = config.info.edges.iter().collect();
    let missing_edges: Vec<&(String, String)> =
        info.edges.iter().filter(|e| !edges.contains(e)).collect();
    let sorted = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    if !missed.is_empty()
        || !missing_edges.is_empty()
        || sorted(&config.info.outputs) != sorted(&info.outputs)
    {
        bail!(
            "discovery oracle: the configuration's reading misses changes {missed:?}, \
             edges {missing_edges:?} (outputs {:?} vs terraform's {:?})",
            config.info.outputs,
            info.outputs
        );
    }
    Ok(())
}

/// A refresh-less plan with terraform's streamed `-json` output, planning
/// `extra` targets besides the user's. On failure, terraform's own words
/// reach the user and its exit code is ours.
pub(super) async fn discovery_plan(
    cx: &Context<'_>,
    dir: &RunDir,
    extra: &[String],
    plan_file: &std::path::Path,
) -> Result<Finished> {
    let flags = &cx.flags;
    let base = |json: bool| {
        let mut plan = dir
            .command(&cx.tf)
            .args([
                "plan",
                "-refresh=false",
                "-input=false",
                "-lock=false",
                "-no-color",
            ])
            .args(flags.vars.iter())
            .args(
                flags
                    .targets
                    .iter()
                    .chain(extra)
                    .map(|t| format!("-target={t}")),
            )
            .args(flags.replace.iter().map(|r| format!("-replace={r}")))
            .stdout(Output::Capture);
        if json {
            plan = plan
                .arg("-json")
                .arg(format!("-out={}", plan_file.display()));
        }
        if flags.destroy {
            plan = plan.arg("-destroy");
        }
        plan
    };
    let done = base(true).run().await?;
    if !done.success() {
        // The JSON diagnostics are for machines: show terraform's own words.
        let again = base(false).run().await?;
        cx.session.ui.replay(&again.stdout, &[]);
        return Err(Exit(if again.success() {
            done.code
        } else {
            again.code
        })
        .into());
    }
    Ok(done)
}
