//! Discovery: what a run may change, and the configuration's edges the
//! change set needs.
//!
//! From the configuration alone where its blocks can be compared with the
//! recorded [`super::baseline`]; blocks that read a changed value are
//! planned by terraform's refresh-less plan of those blocks only; terraform's
//! refresh-less plan of the whole configuration where the configuration
//! cannot be compared. With the oracle on (the tests), both ways run every
//! time and must agree.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::baseline;
use super::change_set::ChangeSet;
use super::session::Context;
use crate::db::store::{GraphRow, Snapshot, Summarized};
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
    /// How many blocks the configuration's reading found may change (0
    /// where terraform's plan said what changes).
    pub blocks: usize,
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
/// configuration's edges from its reading, or where it cannot be read from
/// a cache keyed by a fingerprint of its files, filled from `show -json` of
/// the plan when missing. With the oracle on
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
            let mut recorded = store.baseline(session.state_id).await?;
            let upgraded = baseline::upgraded(&recorded, state);
            if !upgraded.is_empty() {
                // Best effort: without it the next run checks them again.
                let _ = store.put_baseline(session.state_id, &upgraded).await;
                recorded.extend(upgraded);
            }
            match baseline::candidates(config, &recorded, &baseline::Stored::of(state)) {
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
    if let Some(config) = &config {
        super::session::share_providers(cx, dir, config);
    }
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
            blocks: fast.as_ref().map_or(0, |f| f.blocks),
        });
    }

    // A plan of the whole configuration: said up front with how long it
    // should take, and shown in progress (the first plan of a large state).
    let instances = state.object_count();
    let measured = match (&why, instances) {
        (Some(_), 1..) => {
            let measured = store.whole_plan_rate().await?;
            let (about, basis) = estimate(instances, measured);
            let first = match why.as_deref() == Some(baseline::NO_BASELINE) {
                true => "First plan of this state: no discovery baseline yet, so terraform plans",
                false => "Terraform plans",
            };
            ui.info(format!(
                "{first} all {} instances once, without refresh: about {} ({basis}).",
                thousands(instances),
                rough(about)
            ));
            Some(about)
        }
        _ => None,
    };
    let step = ui.step(match &why {
        Some(why) if !oracle => format!("Discovering changes (plan without refresh: {why})"),
        _ => "Discovering changes (plan without refresh)".to_owned(),
    });
    dir.ensure_state(state)?;
    let plan_file = dir.plan_path("discover");
    let counter = Arc::new(AtomicUsize::new(0));
    let plan = discovery_plan_counted(cx, dir, &[], &plan_file, Some(counter.clone()));
    let done = match measured {
        Some(about) => {
            let done = with_progress(&step, plan, &counter, about).await;
            if let Ok(done) = &done {
                if done.success() && instances >= MEASURED_FROM {
                    let seconds = step.elapsed().as_secs_f64();
                    store.put_whole_plan_rate(instances, seconds).await?;
                }
            }
            done
        }
        None => plan.await,
    };
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let streamed = plan::parse_stream(&done.stdout);
    let info = match (&config, oracle) {
        // The configuration was read: its edges are those a run with a
        // baseline uses. `show -json` of a whole plan is skipped: at
        // 100,000 instances it takes four times as long as the plan.
        (Some(config), false) => config.info.clone(),
        _ => {
            let mut info = config_info(cx, dir, &plan_file, &streamed.changed).await?;
            if let Some(config) = &config {
                // Terraform's plan JSON does not say what `replace_triggered_by` names.
                info.triggers = config.info.triggers.clone();
            }
            info
        }
    };
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
        check_oracle(state, (candidates, &stale), config, &info, planned)?;
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
            blocks: fast.as_ref().map_or(0, |f| f.blocks),
        });
    }
    let mut changed = streamed.changed;
    if flags.refresh_only {
        // Drift can be anywhere: a refresh-only run covers the whole state.
        changed.extend(GraphRow::of_state(state).into_iter().map(|r| r.address));
    }
    let changed = with_forced(changed, forced);
    step.done(format!("{} to change", thousands(changed.len())));
    Ok(Discovered {
        info,
        changed,
        config,
        outputs: streamed.outputs,
        blocks: 0,
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
        cache_dir: Some(settings.embedded.data_dir.join("hcl")),
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
    if found.precise || found.addresses.is_empty() {
        say_found(cx, found.blocks, found.addresses.len());
        return Ok(found.addresses.clone());
    }
    let blocks = blocks_text(found.blocks);
    let step = ui.step(format!(
        "Discovering changes ({blocks} may change: plan of those without refresh)"
    ));
    let targets: BTreeSet<&str> = found
        .addresses
        .iter()
        .map(|a| crate::address::strip_instance_key(a))
        .collect();
    let targets: Vec<String> = targets.into_iter().map(str::to_owned).collect();
    dir.ensure_state(state)?;
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

/// "N blocks".
fn blocks_text(n: usize) -> String {
    format!("{} block{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// The step line of what the configuration alone says may change: how
/// many blocks, how many addresses to plan.
fn say_found(cx: &Context<'_>, blocks: usize, to_plan: usize) {
    let step = cx
        .session
        .ui
        .step("Discovering changes (configuration against the baseline)");
    step.done(format!(
        "{} changed, {} to plan",
        blocks_text(blocks),
        thousands(to_plan)
    ));
}

/// Whether a run reads the state light first ([`from_rows`] may answer
/// it): the partial state on, the discovery oracle off (it reads both
/// ways itself), and flags the configuration alone answers.
pub fn reads_light(cx: &Context<'_>) -> bool {
    let settings = cx.session.settings;
    settings.partial_state && !settings.discovery_oracle && plain(cx)
}

/// What may change (besides `forced`) according to the configuration and
/// the rows' stored digests alone, for a state read light ([`crate::db::store::Snapshot::light`]):
/// `None` where that cannot say (flags the configuration cannot answer,
/// no configuration read, a baseline missing or recorded before rows kept
/// their digest, a row without one, or blocks that read a changed value:
/// those take terraform's plan, of every row whole). Says nothing itself:
/// [`announce`] says what was found.
pub async fn from_rows(
    cx: &Context<'_>,
    dir: &RunDir,
    snapshot: &Snapshot,
    forced: &[String],
) -> Result<Option<Discovered>> {
    let session = &cx.session;
    if !reads_light(cx) || !snapshot.light || snapshot.undigested > 0 {
        return Ok(None);
    }
    let state = &snapshot.state;
    let Ok(config) = crate::terraform::config::read(dir.root(), &inputs(cx, dir)) else {
        return Ok(None);
    };
    let mut recorded = session.store.baseline(session.state_id).await?;
    if !baseline::upgradable_light(&recorded) {
        return Ok(None);
    }
    let upgraded = baseline::upgraded(&recorded, state);
    if !upgraded.is_empty() {
        // Best effort: without it the next run checks them again.
        let _ = session
            .store
            .put_baseline(session.state_id, &upgraded)
            .await;
        recorded.extend(upgraded);
    }
    let Ok(found) = baseline::candidates(&config, &recorded, &baseline::Stored::of(state)) else {
        return Ok(None);
    };
    if !(found.precise || found.addresses.is_empty()) {
        return Ok(None);
    }
    let outputs = baseline::stale_outputs(&config, &recorded, state);
    Ok(Some(Discovered {
        info: config.info.clone(),
        changed: with_forced(found.addresses.clone(), forced),
        config: Some(config),
        outputs,
        blocks: found.blocks,
    }))
}

/// Discovery from the configuration and what PostgreSQL keeps of each
/// resource (see [`by_resources`]).
pub struct ByResources {
    config: Config,
    recorded: HashMap<String, [String; 3]>,
    digests: Vec<baseline::ResourceDigest>,
    /// What may change, the candidates' instances not read
    /// ([`baseline::Stored::summarized`]).
    pub found: baseline::Candidates,
    /// Root outputs that may change ([`baseline::stale_outputs`]).
    pub stale: Vec<String>,
}

impl ByResources {
    /// Every stored resource, as these digests have them.
    pub fn catalog(&self) -> super::change_set::Catalog {
        super::change_set::Catalog::new(self.digests.iter().map(Into::into).collect())
    }

    /// Whether nothing may change.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty() && self.stale.is_empty()
    }

    /// Discovery again on `read` (the rows of some resources, those
    /// [`baseline::Candidates::listed`] among them): the candidates'
    /// instances named. `None` where the candidates are not precise (which
    /// instances change takes terraform's plan), or not all listed were read.
    pub fn with_rows(self, stored: &Summarized, read: &State) -> Option<Discovered> {
        let mut by_address: HashMap<String, &crate::tfstate::Resource> =
            read.resources.iter().map(|r| (r.address(), r)).collect();
        let skeleton = stored.state.with_resources(
            stored
                .resources
                .iter()
                .map(|s| match by_address.remove(&s.resource.address()) {
                    Some(r) => r.clone(),
                    None => s.resource.clone(),
                })
                .collect(),
        );
        let summarized = baseline::Stored::summarized(&skeleton, &self.digests);
        let found = baseline::candidates(&self.config, &self.recorded, &summarized).ok()?;
        let read: HashSet<String> = read.resources.iter().map(|r| r.address()).collect();
        if !found.precise || !found.listed.iter().all(|r| read.contains(r)) {
            return None;
        }
        Some(Discovered {
            info: self.config.info.clone(),
            changed: found.addresses,
            config: Some(self.config),
            outputs: self.stale,
            blocks: found.blocks,
        })
    }
}

/// What may change according to the configuration and what PostgreSQL
/// keeps of each resource. `None` where that cannot say: flags the
/// configuration cannot answer, no configuration read, a baseline missing
/// or recorded before resources kept their digest.
pub async fn by_resources(
    cx: &Context<'_>,
    dir: &RunDir,
    stored: &Summarized,
) -> Result<Option<ByResources>> {
    let session = &cx.session;
    if !plain(cx) {
        return Ok(None);
    }
    let Ok(config) = crate::terraform::config::read(dir.root(), &inputs(cx, dir)) else {
        return Ok(None);
    };
    let recorded = session.store.baseline(session.state_id).await?;
    if !baseline::current(&recorded) {
        return Ok(None);
    }
    let skeleton = stored.state.with_resources(
        stored
            .resources
            .iter()
            .map(|s| s.resource.clone())
            .collect(),
    );
    let digests = baseline::ResourceDigest::of_summaries(&stored.resources);
    let summarized = baseline::Stored::summarized(&skeleton, &digests);
    let Ok(found) = baseline::candidates(&config, &recorded, &summarized) else {
        return Ok(None);
    };
    let stale = baseline::stale_outputs(&config, &recorded, &skeleton);
    Ok(Some(ByResources {
        config,
        recorded,
        digests,
        found,
        stale,
    }))
}

/// Says that discovery found nothing to change in `blocks` blocks.
pub fn announce_nothing(cx: &Context<'_>, blocks: usize) {
    say_found(cx, blocks, 0);
}

/// Says what [`from_rows`] found, as discovery from the configuration does.
pub fn announce(cx: &Context<'_>, found: &Discovered) {
    say_found(cx, found.blocks, found.changed.len());
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
fn check_oracle(
    state: &State,
    (candidates, stale): (&[String], &[String]),
    config: &Config,
    info: &ConfigInfo,
    (planned, planned_outputs): (&[String], &[String]),
) -> Result<()> {
    let rows = GraphRow::of_state(state);
    let mut cone = ChangeSet::compute(&rows, candidates, &config.info, None)?;
    cone.cover_outputs(&rows, &config.info, stale, None);
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

/// Below this many instances a whole plan's time is mostly terraform's
/// start-up: its rate is not recorded.
const MEASURED_FROM: usize = 500;

/// Per instance, terraform's refresh-less plan of a whole configuration
/// until one is measured on this database: 3 ms (`terraform_data` on the
/// benchmark machine, BENCHMARKS.md), plus [`START_UP`].
const DEFAULT_PER_INSTANCE: Duration = Duration::from_millis(3);

/// Terraform's start-up and reading of the configuration, counted once.
const START_UP: Duration = Duration::from_secs(1);

/// How long terraform's refresh-less plan of `instances` instances should
/// take, and what that rests on: the per-instance rate of the last whole
/// plan measured on this database (`measured`: its instances and seconds),
/// else [`DEFAULT_PER_INSTANCE`].
fn estimate(instances: usize, measured: Option<(usize, f64)>) -> (Duration, String) {
    let per = match measured {
        Some((n, seconds)) if n > 0 => {
            let per = (seconds - START_UP.as_secs_f64()).max(0.0) / n as f64;
            let per = Duration::from_secs_f64(per.clamp(0.000_2, 0.05));
            let basis = format!(
                "{:.1} ms per instance, as the last plan of {} instances on this database took",
                per.as_secs_f64() * 1000.0,
                thousands(n)
            );
            return (START_UP + per * instances as u32, basis);
        }
        _ => DEFAULT_PER_INSTANCE,
    };
    let basis = format!(
        "{} ms per instance until a plan of {} or more is measured on this database",
        per.as_millis(),
        thousands(MEASURED_FROM)
    );
    (START_UP + per * instances as u32, basis)
}

/// A duration as an estimate: `5 s`, `2 min`, `1 h 20 min`.
fn rough(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..=89 => format!("{} s", s.max(1)),
        90..=3599 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

/// Runs `plan`, showing how far it got on `step`: the changes terraform
/// found so far (`counter`) and the time against the estimate `about`;
/// every second next to a spinner, every 30 seconds as a plain line.
async fn with_progress<F: std::future::Future<Output = Result<Finished>>>(
    step: &crate::ui::Step,
    plan: F,
    counter: &AtomicUsize,
    about: Duration,
) -> Result<Finished> {
    let every = match step.is_live() {
        true => Duration::from_secs(1),
        false => Duration::from_secs(30),
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(plan);
    loop {
        tokio::select! {
            done = &mut plan => return done,
            _ = tick.tick() => {
                let changes = counter.load(Ordering::Relaxed);
                step.still(format!(
                    "{} change{} so far, {} of about {}",
                    thousands(changes),
                    if changes == 1 { "" } else { "s" },
                    rough(step.elapsed()),
                    rough(about)
                ));
            }
        }
    }
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
    discovery_plan_counted(cx, dir, extra, plan_file, None).await
}

/// [`discovery_plan`], counting the changes terraform plans into `counter`
/// as they stream.
async fn discovery_plan_counted(
    cx: &Context<'_>,
    dir: &RunDir,
    extra: &[String],
    plan_file: &std::path::Path,
    counter: Option<Arc<AtomicUsize>>,
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
            if let Some(counter) = &counter {
                plan = plan.count_lines("\"type\":\"planned_change\"", counter.clone());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_uses_the_measured_rate_where_there_is_one() {
        let (about, basis) = estimate(100_000, None);
        assert_eq!(about, Duration::from_secs(301));
        assert!(basis.starts_with("3 ms per instance until"), "{basis}");
        // 10,000 instances in 21 s: 2 ms each after the start-up.
        let (about, basis) = estimate(100_000, Some((10_000, 21.0)));
        assert_eq!(about.as_secs(), 201);
        assert!(
            basis.starts_with("2.0 ms per instance, as the last plan of 10,000"),
            "{basis}"
        );
        assert_eq!(rough(Duration::from_secs(301)), "5 min");
        assert_eq!(rough(Duration::from_millis(1_300)), "1 s");
        assert_eq!(rough(Duration::from_secs(4_000)), "1 h 7 min");
    }
}
