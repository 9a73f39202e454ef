//! `stategraph plan`, `apply` and `destroy`: terraform on the change cone.
//!
//! The flow (DESIGN.md §3): snapshot the state, discover what changes with a
//! refresh-less plan, compute the cone on the stored graph, lock it (shared
//! for plan; exclusive on the write set and shared on the read set for
//! apply), re-check under the lock, run terraform with `-target` for the
//! write set on a private copy of the state, merge only the write set's rows,
//! release. Terraform's output reaches the user live and its exit code is
//! ours.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::db::locks::{Conflict, Heartbeat, Holder, LockRequest};
use crate::db::store::{GraphRow, Store, StoreError};
use crate::error::Exit;
use crate::graph::{InstanceInput, StateGraph};
use crate::settings::Settings;
use crate::terraform::config::{Config, Inputs as ConfigInputs};
use crate::terraform::workspace::Workspace;
use crate::terraform::{plan, Output, Terraform};
use crate::tfargs::{self, TfFlags};
use crate::tfstate::State;
use crate::ui::thousands;

use super::record::Recording;
use super::saved;

/// Which terraform command the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plan,
    Apply,
    Destroy,
    /// A terraform command that writes state (taint, import, state mv, ...).
    Write,
    /// `stategraph recover`: the result of an earlier run.
    Recover,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Plan => "plan",
            Kind::Apply => "apply",
            Kind::Destroy => "destroy",
            Kind::Write => "command",
            Kind::Recover => "recover",
        }
    }
}

/// How many times the cone may grow under the lock before we give up
/// (unless -lock-timeout leaves more time).
const MAX_ATTEMPTS: usize = 3;

pub async fn run(settings: &Settings, kind: Kind, args: &[String]) -> Result<()> {
    let mut flags = tfargs::parse(args).map_err(|e| anyhow!("{e}"))?;
    if kind == Kind::Destroy {
        flags.destroy = true;
    }
    if let Some(first) = flags.positional.first() {
        if kind != Kind::Apply || flags.positional.len() > 1 {
            bail!("unexpected argument {first:?}: only `stategraph apply` takes one, a saved plan file");
        }
        return saved::apply(settings, &flags, first).await;
    }
    if flags.out.is_some() && kind != Kind::Plan {
        bail!("-out is a flag of `stategraph plan`");
    }
    if kind != Kind::Plan && !flags.auto_approve && (flags.no_input || !settings.tf_input) {
        bail!(
            "{} requires approval, and input is disabled (-input=false or TF_INPUT=0)\n\n\
             Pass -auto-approve to apply without asking.",
            kind.name()
        );
    }
    let ui = settings.ui;
    // `terraform version` (tens of milliseconds) runs while we connect to
    // PostgreSQL; no terraform at all is said before anything else.
    let Some(bin) = settings.terraform.clone() else {
        return Err(crate::terraform::TerraformError::NotConfigured.into());
    };
    let version = tokio::task::spawn_blocking(move || Terraform::discover(Some(&bin)));
    let store = crate::db::open(settings).await;
    let tf = version
        .await
        .map_err(|e| anyhow!("terraform version check did not finish: {e}"))??
        .with_ui(ui);
    let store = store?;
    let name = settings.state_name();
    ensure_state(&store, settings, &name).await?;
    let state_id = store
        .state_id(&name)
        .await?
        .ok_or_else(|| anyhow!("state \"{name}\" vanished"))?;
    let command = std::iter::once(format!("stategraph {}", kind.name()))
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");

    for line in super::record::rescue_orphans(settings, store.display()) {
        ui.warn(line);
    }

    let mut attempt = 0;
    // Retries go on for at least MAX_ATTEMPTS, and as long as -lock-timeout allows.
    let retry_until = Instant::now() + flags.lock_timeout;
    // Addresses terraform planned to change outside an earlier cone.
    let mut forced: Vec<String> = Vec::new();
    loop {
        attempt += 1;
        let snapshot = store
            .pull(&name)
            .await?
            .ok_or_else(|| anyhow!("state \"{name}\" vanished"))?;
        // A saved plan records its state's path: give it a name the
        // applying run can recreate (random, so not guessable in advance).
        let ws = match &flags.out {
            Some(_) => Workspace::new_named(
                &settings.workdir,
                &snapshot,
                &format!("stategraph-plan-{}", new_lineage()?),
            )?,
            None => Workspace::new(&settings.workdir, &snapshot)?,
        };
        prepare(&ws, &tf, &store).await?;

        // Discover: a refresh-less plan says what changes.
        let mut found = discover(
            &ws, &tf, &flags, &store, &name, state_id, &snapshot, &forced, ui,
        )
        .await?;
        let (mut discovered, changed) = (found.info.clone(), found.changed.clone());

        if changed.is_empty() {
            drop(ws);
            if !flags.json {
                println!(
                    "\nNo changes. Your infrastructure matches the configuration.\n\n\
                     stategraph found no change in the configuration; resources outside a change \
                     are not refreshed."
                );
            }
            return Ok(());
        }

        // The cone, on the stored graph plus the new instances' configuration edges.
        let step = ui.step("Computing change cone");
        let mut rows = store.graph_rows(&name).await?.unwrap_or_default();
        let mut cone = Cone::compute(&rows, &changed, &discovered)?;
        step.done(format!(
            "{} of {} instances ({} write, {} read)",
            thousands(cone.write.len() + cone.read.len()),
            thousands(rows.len() + cone.new),
            thousands(cone.write.len()),
            thousands(cone.read.len())
        ));

        // Lock: shared only for plan.
        let (exclusive, shared): (Vec<String>, Vec<String>) = match kind {
            Kind::Plan => (
                Vec::new(),
                cone.write.iter().chain(&cone.read).cloned().collect(),
            ),
            _ => (cone.write.clone(), cone.read.clone()),
        };
        let request = LockRequest {
            state_id,
            exclusive: &exclusive,
            shared: &shared,
            command: &command,
            actor: &settings.actor,
            lease: settings.lock_lease,
            txn_id: None,
        };
        let (holder, held, heartbeat) =
            acquire(&store, settings, &request, flags.lock_timeout).await?;

        // Re-check under the lock: rows of the cone may have changed between
        // the snapshot and the lock. Nobody can change them now, so plan
        // again on the fresh state while holding the lock, and go round only
        // if the cone grew beyond what we hold.
        let fresh = store
            .pull(&name)
            .await?
            .ok_or_else(|| anyhow!("state \"{name}\" vanished"))?;
        ws.write_state(&fresh)?;
        let cone_addresses: HashSet<&str> = cone
            .write
            .iter()
            .chain(&cone.read)
            .map(String::as_str)
            .collect();
        if objects_in(&snapshot, &cone_addresses) != objects_in(&fresh, &cone_addresses) {
            ui.info("Rows of the cone changed before the locks were taken; planning again on the new state.");
            let again_found = discover(
                &ws, &tf, &flags, &store, &name, state_id, &fresh, &forced, ui,
            )
            .await?;
            let (again, changed_again) = (again_found.info.clone(), again_found.changed.clone());
            if changed_again.is_empty() {
                heartbeat.stop().await;
                held.release().await?;
                if !flags.json {
                    println!("\nNo changes. Your infrastructure matches the configuration.");
                }
                return Ok(());
            }
            let rows_again = store.graph_rows(&name).await?.unwrap_or_default();
            let grown = Cone::compute(&rows_again, &changed_again, &again)?;
            let held_exclusive: HashSet<&String> = exclusive.iter().collect();
            let held_any: HashSet<&String> = exclusive.iter().chain(&shared).collect();
            let fits = grown.read.iter().all(|a| held_any.contains(a))
                && grown.write.iter().all(|a| {
                    if kind == Kind::Plan {
                        held_any.contains(a)
                    } else {
                        held_exclusive.contains(a)
                    }
                });
            if !fits {
                heartbeat.stop().await;
                held.release().await?;
                if attempt >= MAX_ATTEMPTS && Instant::now() >= retry_until {
                    bail!(
                        "the change cone kept growing while waiting for locks ({attempt} attempts); try again"
                    );
                }
                ui.info("The change cone grew; locking it again.");
                continue;
            }
            cone = grown;
            discovered = again;
            found = again_found;
            rows = rows_again;
        }

        // Terraform plans the cone first (for apply too): what it plans is
        // checked against the locks before anything is applied.
        let final_plan = ws.plan_path("final");
        let mut passthrough = without_out(&flags.passthrough);
        passthrough.retain(|a| {
            let destroy = matches!(a.as_str(), "-destroy" | "--destroy");
            let approve = matches!(a.as_str(), "-auto-approve" | "--auto-approve");
            !(destroy || (approve && kind != Kind::Plan))
        });
        let plan_run = |refresh: bool| {
            let mut run = ws.command(&tf).args(["plan", "-lock=false"]);
            if !refresh {
                run = run.arg("-refresh=false");
            }
            if flags.destroy {
                run = run.arg("-destroy");
            }
            if flags.targets.is_empty() {
                run = run.args(
                    cone.targets(&rows)
                        .into_iter()
                        .map(|t| format!("-target={t}")),
                );
            }
            if kind != Kind::Plan || flags.out.is_some() {
                run = run.arg(format!("-out={}", final_plan.display()));
            }
            run.args(&passthrough).interactive(kind == Kind::Plan)
        };
        let mut recorded: Option<Result<crate::db::store::PushReport>> = None;

        // Scoped refresh: only the written instances, in a refresh-only run
        // on a state holding nothing else; the plan then reads everything
        // else as stored (locked shared: nobody writes it meanwhile).
        let planned = if scoped_refresh(settings, &flags, &cone, &rows) {
            scoped_plan(
                &ws,
                &tf,
                &store,
                settings,
                &flags,
                &fresh,
                &cone,
                &discovered,
                &plan_run,
                ui,
            )
            .await?
        } else {
            plan_run(true).run().await
        };

        let outcome = match (kind, planned) {
            (Kind::Plan, planned) => planned,
            (_, Err(e)) => Err(e),
            (_, Ok(done)) if !done.success() => Ok(done),
            (_, Ok(_)) => {
                // Never apply anything unlocked: changes terraform plans
                // outside the write set (drift of a dependency, say) are
                // locked too, and the cone planned again.
                let planned = planned_changes(&ws, &tf, &final_plan).await?;
                let write: HashSet<&str> = cone.write.iter().map(String::as_str).collect();
                let outside: Vec<String> = planned
                    .iter()
                    .filter(|a| !write.contains(a.as_str()))
                    .cloned()
                    .collect();
                if !outside.is_empty() {
                    heartbeat.stop().await;
                    held.release().await?;
                    if attempt >= MAX_ATTEMPTS && Instant::now() >= retry_until {
                        bail!(
                            "terraform keeps planning changes outside the locked cone ({}); nothing was applied",
                            outside.join(", ")
                        );
                    }
                    ui.info(format!(
                        "terraform also plans to change {}: locking {} too and planning again.",
                        outside.join(", "),
                        if outside.len() == 1 { "it" } else { "them" }
                    ));
                    forced.extend(outside);
                    continue;
                }
                if planned.is_empty() && !flags.refresh_only {
                    // Nothing to do in the cone: its rows are converged.
                    if let Some(config) = &found.config {
                        let entries = super::baseline::converged(
                            config,
                            &fresh,
                            cone.write.iter().map(String::as_str),
                            false,
                        );
                        store.put_baseline(state_id, &entries).await?;
                    }
                    heartbeat.stop().await;
                    held.release().await?;
                    return Ok(());
                }
                if !flags.auto_approve && !approve(settings, &flags, kind)? {
                    heartbeat.stop().await;
                    held.release().await?;
                    println!("\nApply cancelled.");
                    return Err(Exit(1).into());
                }
                let outputs = cone.allowed_outputs(&discovered, &fresh);
                let recording = Recording {
                    store: &store,
                    settings,
                    name: &name,
                    holder: &holder,
                    before: &fresh,
                    scope: Scope {
                        write: &cone.write,
                        read: &cone.read,
                        outputs: &outputs,
                        changed: &cone.changed,
                    },
                    command: &command,
                    kind,
                };
                let begun = recording.begin().await?;
                let run = ws
                    .command(&tf)
                    .args(["apply", "-lock=false"])
                    .args(apply_flags(&flags))
                    .arg(&final_plan);
                let done = recording.run_with_checkpoints(&begun, &ws, run).await;
                recorded = Some(match &done {
                    // Terraform may have applied part before it failed: record that too.
                    Ok(_) => recording.finish(Some(&begun), &ws).await,
                    Err(_) => Err(anyhow!("terraform did not run")),
                });
                if let (Some(config), Ok(d), Some(Ok(_))) = (&found.config, &done, &recorded) {
                    if d.success() {
                        // The applied blocks' rows are what the configuration says.
                        record_applied(&store, state_id, config, &ws, &cone.write).await;
                    }
                }
                done
            }
        };

        let result = match recorded {
            Some(Ok(report)) => Ok(Some(report)),
            Some(Err(e)) if outcome.is_ok() => Err(e),
            _ => Ok(None),
        };
        let saved = match (&outcome, &flags.out) {
            (Ok(done), Some(out))
                if done.code == 0 || (flags.detailed_exitcode && done.code == 2) =>
            {
                let outputs = cone.allowed_outputs(&discovered, &fresh);
                let path = settings.workdir.join(out);
                saved::write(
                    &store,
                    &name,
                    &fresh,
                    &cone.write,
                    &cone.read,
                    &outputs,
                    &final_plan,
                    &ws.dir_name(),
                    &path,
                )
                .await
                .map(|()| Some(path))
            }
            _ => Ok(None),
        };
        heartbeat.stop().await;
        let released = held.release().await;
        let finished = outcome?;
        if let Some(path) = saved? {
            ui.info(format!(
                "stategraph: saved plan written to {} (apply it with `stategraph apply {}`)",
                path.display(),
                flags.out.as_deref().unwrap_or_default()
            ));
        }
        let report = result?;
        released?;
        if let Some(report) = report {
            ui.info(format!(
                "stategraph: transaction {} wrote {} added, {} changed, {} removed to state \"{name}\"",
                report.txn_id, report.added, report.changed, report.removed
            ));
        }
        return match finished.code {
            0 => Ok(()),
            code => Err(Exit(code).into()),
        };
    }
}

/// What one run may write, and what it read.
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    pub write: &'a [String],
    pub read: &'a [String],
    pub outputs: &'a [String],
    pub changed: &'a [String],
}

/// Takes the locks of `request`, showing whom we wait for, and returns the
/// holder with the guard that releases the locks on any early return and
/// the heartbeat that keeps their lease.
pub(super) async fn acquire<'s>(
    store: &'s Store,
    settings: &Settings,
    request: &LockRequest<'_>,
    timeout: std::time::Duration,
) -> Result<(Holder, Held<'s>, Heartbeat)> {
    let ui = settings.ui;
    let step = ui.step(format!(
        "Locking subgraph ({} exclusive, {} shared)",
        thousands(request.exclusive.len()),
        thousands(request.shared.len())
    ));
    let mut on_wait = |conflicts: &[Conflict]| {
        let who: Vec<String> = conflicts
            .iter()
            .map(|c| {
                format!(
                    "lock {} ({}, {})",
                    c.holder.id,
                    c.holder.who(),
                    c.holder.command
                )
            })
            .collect();
        step.progress(format!("waiting for {}", who.join(", ")));
        if !ui.is_fancy() {
            ui.info(format!("Waiting for {}", who.join(", ")));
        }
    };
    let holder = match store.lock(request, timeout, &mut on_wait).await {
        Ok(h) => h,
        Err(e) => {
            step.fail();
            return Err(e.into());
        }
    };
    step.done("ready");
    for dead in &holder.reaped {
        ui.warn(describe_dead_run(dead));
    }
    let held = Held {
        store,
        id: holder.id,
        done: false,
    };
    let heartbeat = store.heartbeat(holder.id, settings.lock_lease);
    Ok((holder, held, heartbeat))
}

/// What the next run says about a run that died holding its locks.
fn describe_dead_run(dead: &crate::db::locks::DeadRun) -> String {
    let who = match &dead.ci_job {
        Some(job) => format!("{}@{} ({job})", dead.user, dead.host),
        None => format!("{}@{}", dead.user, dead.host),
    };
    let summary = dead.summary.clone().unwrap_or_default();
    let recorded: Vec<&str> = summary["recorded"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let what = if recorded.is_empty() {
        "It had recorded nothing. If its terraform had started applying, resources it was \
         changing may differ from the state: `stategraph log --json` shows its cone, and \
         `stategraph plan` what is left to do."
            .to_owned()
    } else {
        let count = |k: &str| summary[k].as_u64().unwrap_or(0);
        format!(
            "Its checkpoints had recorded {} added, {} changed, {} removed ({}); they are in \
             the state. Anything its terraform did after the last checkpoint is not: \
             `stategraph plan` shows what is left to do.",
            count("added"),
            count("changed"),
            count("removed"),
            recorded.join(", ")
        )
    };
    format!(
        "an earlier run died while holding locks: transaction {} ({}, {who}, started {}) \
         stopped renewing lock {} and its lease expired; it is marked aborted. {what}",
        dead.txn_id,
        dead.command,
        dead.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        dead.holder_id
    )
}

/// Locks held by this run: released explicitly on the normal paths, and by
/// `Drop` on any early return, so that an error never leaves them behind
/// until the lease runs out.
pub(super) struct Held<'a> {
    pub(super) store: &'a Store,
    pub(super) id: i64,
    pub(super) done: bool,
}

impl Held<'_> {
    pub(super) async fn release(mut self) -> Result<bool, crate::db::locks::LockError> {
        self.done = true;
        self.store.release(self.id).await
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.done {
            let (store, id) = (self.store, self.id);
            let _ = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(store.release(id))
            });
        }
    }
}

/// A refresh-less plan on the workspace's state: what the configuration
/// changes (plus `forced` addresses, and every instance for -refresh-only),
/// and what the cone needs of the configuration.
///
/// What discovery found.
struct Discovered {
    /// Dependency edges and root outputs of the configuration.
    info: plan::ConfigInfo,
    /// Instance addresses that may change (and resource addresses where
    /// instances may be added), sorted.
    changed: Vec<String>,
    /// The configuration as read, where it could be (the baseline is
    /// recorded from it).
    config: Option<Config>,
}

/// What changes: from the configuration alone where its blocks can be
/// compared with the recorded baseline (see [`super::baseline`]), else from
/// a refresh-less plan of the whole configuration.
///
/// The plan's changes come from terraform's streamed `-json` output; the
/// configuration's edges from a cache keyed by a fingerprint of its files,
/// filled from `show -json` of the plan when missing. With
/// `STATEGRAPH_DISCOVERY_ORACLE=1` both ways run every time: the
/// configuration's candidates must cover every change the plan finds, its
/// edges every edge terraform's plan gives, and the changes read from the
/// stream must equal those of the plan file (the tests' oracle).
#[allow(clippy::too_many_arguments)]
async fn discover(
    ws: &Workspace,
    tf: &Terraform,
    flags: &TfFlags,
    store: &Store,
    name: &str,
    state_id: i64,
    state: &State,
    forced: &[String],
    ui: crate::ui::Ui,
) -> Result<Discovered> {
    let oracle = std::env::var_os("STATEGRAPH_DISCOVERY_ORACLE").is_some_and(|v| v == "1");
    // The configuration alone says nothing about what a -target, -replace,
    // -destroy or -refresh-only run covers.
    let plain = flags.targets.is_empty()
        && flags.replace.is_empty()
        && !flags.destroy
        && !flags.refresh_only;
    let read = plain.then(|| {
        let inputs = ConfigInputs::from_env(&flags.vars, tf.version_text());
        crate::terraform::config::read(ws.root(), &inputs)
    });
    let mut fast: Option<super::baseline::Candidates> = None;
    let mut why: Option<String> = None;
    match &read {
        Some(Ok(config)) => {
            let recorded = store.baseline(state_id).await?;
            match super::baseline::candidates(config, &recorded, state) {
                Ok(found) => fast = Some(found),
                Err(e) => why = Some(e.0),
            }
        }
        Some(Err(e)) => why = Some(e.0.clone()),
        None => {}
    }
    let config = read.and_then(Result::ok);
    // What the configuration's reading says changes, where it can tell.
    let mut read_changes: Option<Vec<String>> = None;
    if let (Some(found), Some(config)) = (&fast, &config) {
        let blocks = format!(
            "{} block{}",
            thousands(found.blocks),
            if found.blocks == 1 { "" } else { "s" }
        );
        if found.precise || found.addresses.is_empty() {
            // Edited, added or removed blocks, or rows changed behind the
            // baseline: every instance of those blocks is planned.
            let step = ui.step("Discovering changes (configuration against the baseline)");
            step.done(format!(
                "{blocks} changed, {} to plan",
                thousands(found.addresses.len())
            ));
            read_changes = Some(found.addresses.clone());
        } else {
            // Blocks reading a changed value (a variable, a local, a data
            // source): which of their instances change takes terraform's
            // plan, of those blocks only.
            let step = ui.step(format!(
                "Discovering changes ({blocks} read changed values: plan of those without refresh)"
            ));
            let targets: BTreeSet<&str> = found
                .addresses
                .iter()
                .map(|a| crate::address::strip_instance_key(a))
                .collect();
            let targets: Vec<String> = targets.into_iter().map(str::to_owned).collect();
            let plan_file = ws.plan_path("discover");
            let done = match discovery_plan(ws, tf, flags, &targets, &plan_file).await {
                Ok(done) => done,
                Err(e) => {
                    step.fail();
                    return Err(e);
                }
            };
            let streamed = plan::parse_stream(&done.stdout);
            let entries = super::baseline::after_plan_of(
                config,
                state,
                &streamed.changed,
                Some(&found.addresses),
            );
            store.put_baseline(state_id, &entries).await?;
            step.done(format!("{} to change", thousands(streamed.changed.len())));
            read_changes = Some(streamed.changed);
        }
    }
    if let (Some(found), Some(config), false) = (&read_changes, &config, oracle) {
        let mut changed = found.clone();
        changed.extend(forced.iter().cloned());
        changed.sort();
        changed.dedup();
        return Ok(Discovered {
            info: config.info.clone(),
            changed,
            config: Some(config.clone()),
        });
    }

    let step = ui.step(match &why {
        Some(why) if !oracle => format!("Discovering changes (plan without refresh: {why})"),
        _ => "Discovering changes (plan without refresh)".to_owned(),
    });
    let plan_file = ws.plan_path("discover");
    let done = match discovery_plan(ws, tf, flags, &[], &plan_file).await {
        Ok(done) => done,
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let streamed = plan::parse_stream(&done.stdout);

    let oracle = std::env::var_os("STATEGRAPH_DISCOVERY_ORACLE").is_some_and(|v| v == "1");
    let user_data = ws.root().join(".terraform");
    let fingerprint =
        crate::terraform::fingerprint::config_fingerprint(ws.root(), &user_data, tf.version_text());
    let mut info: Option<plan::ConfigInfo> = None;
    if let (Some(fp), false) = (&fingerprint, oracle) {
        if let Some(v) = store.config_info(fp).await? {
            info = serde_json::from_value(v).ok();
        }
    }
    let info = match info {
        Some(info) => info,
        None => {
            let shown = ws
                .command(tf)
                .args(["show", "-json"])
                .arg(&plan_file)
                .stdout(Output::Capture)
                .run_ok()
                .await?;
            let discovered = plan::parse(&shown.stdout).context("cannot read terraform's plan")?;
            if oracle && discovered.changed_addresses() != streamed.changed {
                bail!(
                    "discovery oracle: terraform's streamed plan changes {:?}, its plan file {:?}",
                    streamed.changed,
                    discovered.changed_addresses()
                );
            }
            let info = discovered.config_info();
            if let Some(fp) = &fingerprint {
                store
                    .put_config_info(fp, &serde_json::to_value(&info)?)
                    .await?;
            }
            info
        }
    };
    if let Some(config) = &config {
        // Blocks terraform planned as no-op are converged as stored.
        let entries = super::baseline::after_plan_of(config, state, &streamed.changed, None);
        store.put_baseline(state_id, &entries).await?;
    }
    if let (Some(candidates), Some(config)) = (&read_changes, &config) {
        // The oracle: the cone of the configuration's reading must cover
        // every change terraform's plan finds.
        let rows = store.graph_rows(name).await?.unwrap_or_default();
        let cone = Cone::compute(&rows, candidates, &config.info)?;
        let covered: HashSet<&str> = cone.write.iter().map(String::as_str).collect();
        let missed: Vec<&String> = streamed
            .changed
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
        step.done(format!(
            "{} to change; the configuration's reading ({} to plan) covers them",
            thousands(streamed.changed.len()),
            thousands(candidates.len())
        ));
        let mut changed = candidates.clone();
        changed.extend(forced.iter().cloned());
        changed.sort();
        changed.dedup();
        return Ok(Discovered {
            info: config.info.clone(),
            changed,
            config: Some(config.clone()),
        });
    }
    let mut changed = streamed.changed;
    changed.extend(forced.iter().cloned());
    if flags.refresh_only {
        // Drift can be anywhere: a refresh-only run covers the whole state.
        let rows = store.graph_rows(name).await?.unwrap_or_default();
        changed.extend(rows.into_iter().map(|r| r.address));
    }
    changed.sort();
    changed.dedup();
    step.done(format!("{} to change", thousands(changed.len())));
    Ok(Discovered {
        info,
        changed,
        config,
    })
}

/// Records the blocks of a successful apply's write set as converged.
/// Best effort: without it the next run plans those blocks again.
async fn record_applied(
    store: &Store,
    state_id: i64,
    config: &Config,
    ws: &Workspace,
    write: &[String],
) {
    let Ok(after) = ws.read_state() else {
        return;
    };
    // Every planned change was applied: module calls are as configured too.
    let entries =
        super::baseline::converged(config, &after, write.iter().map(String::as_str), true);
    let _ = store.put_baseline(state_id, &entries).await;
}

/// The instances the plan file at `plan_file` changes: read from the file
/// itself where [`crate::terraform::planfile`] is sure of it, else from
/// `terraform show -json` (one terraform start-up more). With
/// `STATEGRAPH_DISCOVERY_ORACLE=1` (the tests) both run and must agree.
async fn planned_changes(
    ws: &Workspace,
    tf: &Terraform,
    plan_file: &std::path::Path,
) -> Result<Vec<String>> {
    let oracle = std::env::var_os("STATEGRAPH_DISCOVERY_ORACLE").is_some_and(|v| v == "1");
    let read = crate::terraform::planfile::changed_addresses(plan_file, tf.version_text());
    if let (Some(changed), false) = (&read, oracle) {
        return Ok(changed.clone());
    }
    let shown = ws
        .command(tf)
        .args(["show", "-json"])
        .arg(plan_file)
        .stdout(Output::Capture)
        .run_ok()
        .await?;
    let planned = plan::parse(&shown.stdout)
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

/// Whether this run refreshes only its written instances (see
/// [`Settings::scoped_refresh`]). Terraform's targeted plan refreshes the
/// targets and every instance of every resource they depend on (all module
/// instances of a module's resources); a refresh of the written instances
/// alone costs one terraform run more. Run beside the plan (see
/// [`scoped_plan`]) that run costs CPU, not wall time: worth it when it
/// saves refreshing at least 20 instances. One after the other, it must
/// also save refreshing at least as many instances as it refreshes.
/// Instances of `terraform_data`, refreshed without a remote call, do not
/// count.
fn scoped_refresh(settings: &Settings, flags: &TfFlags, cone: &Cone, rows: &[GraphRow]) -> bool {
    use crate::settings::ScopedRefresh;
    // Not for a refresh-less or refresh-only run, nor for machine-readable output.
    if !flags.refresh || flags.refresh_only || flags.json {
        return false;
    }
    let write: HashSet<&str> = cone.write.iter().map(String::as_str).collect();
    let stored = rows
        .iter()
        .filter(|r| write.contains(r.address.as_str()))
        .count();
    if stored == 0 {
        return false;
    }
    match settings.scoped_refresh {
        ScopedRefresh::Always => true,
        ScopedRefresh::Never => false,
        ScopedRefresh::Auto => {
            // What terraform's targeted plan would refresh: every instance of
            // the written resources and of what they depend on.
            let mut configs: HashSet<String> = HashSet::new();
            for r in rows.iter().filter(|r| write.contains(r.address.as_str())) {
                configs.insert(r.config_address.clone());
                for d in &r.dependencies {
                    configs.insert(crate::tfstate::strip_module_keys(d));
                }
            }
            // terraform_data (the built-in provider) refreshes without any
            // remote call: refreshing it costs nothing to save.
            let remote = |r: &&GraphRow| {
                let mut parts = r.config_address.rsplit('.');
                let (_name, kind) = (parts.next(), parts.next());
                kind != Some("terraform_data")
            };
            let targeted = rows
                .iter()
                .filter(|r| configs.contains(&r.config_address))
                .filter(remote)
                .count();
            let written = rows
                .iter()
                .filter(|r| write.contains(r.address.as_str()))
                .filter(remote)
                .count();
            let saved = targeted.saturating_sub(written);
            match side_by_side(settings, flags) {
                true => saved >= 20,
                false => saved >= written.max(20),
            }
        }
    }
}

/// Whether a scoped refresh may run beside the plan of the cone: not where
/// terraform may ask a question (its output is held back meanwhile, and
/// would hide it), nor with `STATEGRAPH_SPECULATIVE_PLAN=0`.
fn side_by_side(settings: &Settings, flags: &TfFlags) -> bool {
    use std::io::IsTerminal;
    let can_ask = !flags.no_input && settings.tf_input && std::io::stdin().is_terminal();
    settings.speculative_plan && !can_ask
}

/// The plan of the cone with a scoped refresh (see [`scoped_refresh`]).
///
/// Where terraform cannot ask for input, the refresh of the written
/// instances (in a private dir of its own) and the plan on the stored rows
/// run at the same time, the plan's output held back. When the refresh finds
/// every written instance as stored (nothing changed outside terraform),
/// that plan is the plan of the refreshed state and its output is shown;
/// otherwise the plan runs again on the refreshed state. A terraform command
/// with a large provider (aws) costs seconds of start-up and schema loading,
/// mostly on one core: paid side by side instead of one after the other.
#[allow(clippy::too_many_arguments)]
async fn scoped_plan(
    ws: &Workspace,
    tf: &Terraform,
    store: &Store,
    settings: &Settings,
    flags: &TfFlags,
    fresh: &State,
    cone: &Cone,
    config: &plan::ConfigInfo,
    plan_run: &impl Fn(bool) -> crate::terraform::Run,
    ui: crate::ui::Ui,
) -> Result<Result<crate::terraform::Finished, crate::terraform::TerraformError>> {
    const NOT_POSSIBLE: &str =
        "not possible on a partial state: the plan refreshes the cone's dependencies too";
    let write: HashSet<&str> = cone.write.iter().map(String::as_str).collect();
    let stored: BTreeSet<String> = fresh
        .instance_addresses()
        .filter(|a| write.contains(a.as_str()))
        .collect();
    let what = format!(
        "Refreshing the {} written instance{} only",
        thousands(stored.len()),
        if stored.len() == 1 { "" } else { "s" }
    );
    if !side_by_side(settings, flags) {
        let step = ui.step(what);
        return Ok(
            match refresh_write_set(ws, tf, flags, fresh, &cone.write, config).await? {
                Some(refreshed) => {
                    step.done("done");
                    refreshed.print_lines();
                    ws.write_state(&refreshed.state)?;
                    plan_run(false).run().await
                }
                None => {
                    step.done(NOT_POSSIBLE);
                    ws.write_state(fresh)?;
                    plan_run(true).run().await
                }
            },
        );
    }

    let side = Workspace::new(ws.root(), fresh)?;
    match ws.backend_hash() {
        Some(hash) => side.skip_init(hash)?,
        None => prepare(&side, tf, store).await?,
    }
    let step = ui.step(format!("{what}, planning meanwhile"));
    let held = plan_run(false).stdout(Output::Capture).quiet();
    let (refreshed, planned) = tokio::join!(
        refresh_write_set(&side, tf, flags, fresh, &cone.write, config),
        held.run()
    );
    drop(side);
    let replay = |done: &crate::terraform::Finished| {
        let _ = std::io::stdout().lock().write_all(&done.stdout);
        let _ = std::io::stderr().lock().write_all(&done.stderr);
    };
    let refreshed = match (refreshed, &planned) {
        (Ok(r), _) => r,
        // Interrupted: terraform's own words on what it stopped.
        (Err(e), Ok(done)) => {
            step.fail();
            if done.interrupts == 0 {
                return Err(e);
            }
            replay(done);
            return Ok(planned);
        }
        (Err(e), Err(_)) => {
            step.fail();
            return Err(e);
        }
    };
    match refreshed {
        Some(r) if r.changed.is_empty() => {
            step.done("done; nothing changed outside terraform");
            r.print_lines();
            if let Ok(done) = &planned {
                replay(done);
            }
            Ok(planned)
        }
        Some(r) => {
            step.done(format!(
                "done; changed outside terraform: {}; planning again on the refreshed state",
                r.changed.join(", ")
            ));
            r.print_lines();
            ws.write_state(&r.state)?;
            Ok(plan_run(false).run().await)
        }
        None => {
            step.done(NOT_POSSIBLE);
            Ok(plan_run(true).run().await)
        }
    }
}

/// Refreshes the written instances of `state` only: `terraform plan
/// -refresh-only` targeted at them, on a private state holding nothing else
/// (instances a targeted refresh-only plan depends on may be missing from
/// its state), and returns `state` with those instances as refreshed, read
/// from the plan file's prior state (serial and lineage kept: a saved plan
/// must match the stored state). Terraform's progress lines reach the user.
/// `None` when terraform could not refresh that way (the plan then
/// refreshes the cone's dependencies too, and says what went wrong).
async fn refresh_write_set(
    ws: &Workspace,
    tf: &Terraform,
    flags: &TfFlags,
    state: &State,
    write: &[String],
    config: &plan::ConfigInfo,
) -> Result<Option<Refreshed>> {
    let write: HashSet<&str> = write.iter().map(String::as_str).collect();
    // Root outputs that read only the targets and what they depend on are
    // evaluated, and fail on what is missing from the state: what they read
    // among the targets' dependencies stays (and is refreshed with them).
    let mut upstream: HashSet<String> = HashSet::new();
    for r in &state.resources {
        let address = r.address();
        for i in r
            .instances
            .iter()
            .filter(|i| write.contains(i.address(&address).as_str()))
        {
            upstream.extend(
                i.dependencies
                    .iter()
                    .map(|d| crate::tfstate::strip_module_keys(d)),
            );
        }
    }
    let mut for_outputs: HashSet<String> = HashSet::new();
    let mut todo: Vec<&str> = config.output_refs.iter().map(|(_, d)| d.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(node) = todo.pop() {
        if !seen.insert(node) {
            continue;
        }
        if node.contains(".output.") {
            todo.extend(
                config
                    .edges
                    .iter()
                    .filter(|(from, _)| from == node)
                    .map(|(_, to)| to.as_str()),
            );
        } else if upstream.contains(node) {
            for_outputs.insert(node.to_owned());
        }
    }
    let mut only = state.clone();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for r in &mut only.resources {
        let address = r.address();
        let read_by_output = for_outputs.contains(&crate::tfstate::strip_module_keys(&address));
        r.instances.retain(|i| {
            let a = i.address(&address);
            let keep = write.contains(a.as_str());
            if keep {
                targets.insert(a);
            }
            keep || read_by_output
        });
    }
    only.resources.retain(|r| !r.instances.is_empty());
    ws.write_state(&only)?;
    let plan_file = ws.plan_path("refresh");
    let mut run = ws
        .command(tf)
        .args(["plan", "-refresh-only", "-input=false", "-lock=false"])
        .arg(format!("-out={}", plan_file.display()))
        .args(flags.vars.iter())
        .args(targets.iter().map(|t| format!("-target={t}")))
        .stdout(Output::Capture)
        .quiet();
    if flags.no_color {
        run = run.arg("-no-color");
    }
    if let Some(p) = &flags.parallelism {
        run = run.arg(format!("-parallelism={p}"));
    }
    let done = run.run().await?;
    if done.interrupts > 0 {
        // Interrupted: terraform stopped, and so do we.
        return Err(Exit(done.code.max(1)).into());
    }
    let after = match done.success() {
        true => refreshed_state(&plan_file),
        false => Err(anyhow!(
            "terraform plan -refresh-only exited with {}",
            done.code
        )),
    };
    let Ok(after) = after else {
        return Ok(None);
    };
    // Terraform's progress lines, as its own plan would print them.
    let lines = String::from_utf8_lossy(&done.stdout)
        .lines()
        .filter(|l| l.contains(": Refreshing state..."))
        .map(str::to_owned)
        .collect();
    let mut refreshed: HashMap<(String, Option<String>), crate::tfstate::Instance> = HashMap::new();
    for r in &after.resources {
        let address = r.address();
        for i in &r.instances {
            refreshed.insert((i.address(&address), i.deposed.clone()), i.clone());
        }
    }
    let mut merged = state.clone();
    let mut changed = BTreeSet::new();
    for r in &mut merged.resources {
        let address = r.address();
        r.instances.retain_mut(|i| {
            let a = i.address(&address);
            if !write.contains(a.as_str()) {
                return true;
            }
            // Gone when the refresh found the object deleted.
            match refreshed.remove(&(a.clone(), i.deposed.clone())) {
                Some(new) => {
                    if !new.same_object(i) {
                        changed.insert(a);
                    }
                    *i = new;
                    true
                }
                None => {
                    changed.insert(a);
                    false
                }
            }
        });
    }
    merged.resources.retain(|r| !r.instances.is_empty());
    Ok(Some(Refreshed {
        state: merged,
        lines,
        changed: changed.into_iter().collect(),
    }))
}

/// What [`refresh_write_set`] found.
struct Refreshed {
    /// The state with the written instances as refreshed.
    state: State,
    /// Terraform's "Refreshing state..." lines.
    lines: Vec<String>,
    /// Written instances the refresh found different from their stored
    /// rows (changed outside terraform, or gone). With none, a plan made on
    /// the stored state stands.
    changed: Vec<String>,
}

impl Refreshed {
    /// Prints terraform's progress lines, as its own plan would.
    fn print_lines(&self) {
        let mut out = std::io::stdout().lock();
        for line in &self.lines {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The refreshed state a plan file carries (its `tfstate` entry: the prior
/// state the plan was made against, after refresh).
fn refreshed_state(plan_file: &std::path::Path) -> Result<State> {
    use std::io::Read;
    let file = std::fs::File::open(plan_file)
        .with_context(|| format!("cannot open {}", plan_file.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).context("terraform's plan file is not a zip archive")?;
    let mut entry = archive
        .by_name("tfstate")
        .context("terraform's plan file holds no tfstate")?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes)?;
    Ok(crate::tfstate::parse(&bytes)?)
}

/// A refresh-less plan with terraform's streamed `-json` output, planning
/// `extra` targets besides the user's. On failure, terraform's own words
/// reach the user and its exit code is ours.
async fn discovery_plan(
    ws: &Workspace,
    tf: &Terraform,
    flags: &TfFlags,
    extra: &[String],
    plan_file: &std::path::Path,
) -> Result<crate::terraform::Finished> {
    let base = |json: bool| {
        let mut run = ws
            .command(tf)
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
            run = run
                .arg("-json")
                .arg(format!("-out={}", plan_file.display()));
        }
        if flags.destroy {
            run = run.arg("-destroy");
        }
        run
    };
    let done = base(true).run().await?;
    if !done.success() {
        // The JSON diagnostics are for machines: show terraform's own words.
        let again = base(false).run().await?;
        let _ = std::io::stdout().write_all(&again.stdout);
        return Err(Exit(if again.success() {
            done.code
        } else {
            again.code
        })
        .into());
    }
    Ok(done)
}

/// The flags `terraform apply PLANFILE` accepts (variables, targets and
/// planning options were given to the plan).
fn apply_flags(flags: &TfFlags) -> Vec<String> {
    let mut out = Vec::new();
    if flags.no_color {
        out.push("-no-color".to_owned());
    }
    if flags.json {
        out.push("-json".to_owned());
    }
    if let Some(p) = &flags.parallelism {
        out.push(format!("-parallelism={p}"));
    }
    out.push("-input=false".to_owned());
    out
}

/// Asks for approval as terraform does; false unless the answer is `yes`.
fn approve(settings: &Settings, flags: &TfFlags, kind: Kind) -> Result<bool> {
    if flags.no_input || !settings.tf_input {
        bail!(
            "apply requires approval, and input is disabled (-input=false or TF_INPUT=0)\n\n\
             Pass -auto-approve to apply without asking."
        );
    }
    let text = match kind {
        Kind::Destroy => {
            "\nDo you really want to destroy all resources in the change cone?\n  \
             Terraform will destroy the resources shown above.\n  \
             There is no undo. Only 'yes' will be accepted to confirm.\n\n  Enter a value: "
        }
        _ => {
            "\nDo you want to perform these actions?\n  \
             Terraform will perform the actions described above.\n  \
             Only 'yes' will be accepted to approve.\n\n  Enter a value: "
        }
    };
    print!("{text}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// `args` without `-out=X` / `-out X` (a saved plan is written by us).
fn without_out(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_next = false;
    for a in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if a == "-out" || a == "--out" {
            skip_next = true;
        } else if !(a.starts_with("-out=") || a.starts_with("--out=")) {
            out.push(a.clone());
        }
    }
    out
}

/// Creates an empty state (new lineage, serial 0) if none is stored.
pub(super) async fn ensure_state(store: &Store, settings: &Settings, name: &str) -> Result<()> {
    if store.state_id(name).await?.is_some() {
        return Ok(());
    }
    let empty = State {
        terraform_version: String::new(),
        serial: 0,
        lineage: new_lineage()?,
        outputs: Vec::new(),
        resources: Vec::new(),
        check_results: None,
        extra: Default::default(),
    };
    match store
        .push(name, &empty, false, &settings.actor, "create")
        .await
    {
        Ok(_) => {
            settings
                .ui
                .info(format!("Created state \"{name}\" in {}", store.display()));
            Ok(())
        }
        // Someone else created it at the same moment: theirs is as good.
        Err(StoreError::Lineage { .. }) | Err(StoreError::OlderSerial { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A random UUID (v4), as terraform's lineages are.
pub(super) fn new_lineage() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for a new lineage")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Readies the workspace for terraform: `init`, or, once this terraform
/// version's hash of our backend block is known (learned from an earlier
/// `init`, kept in the database), nothing but writing that hash: the user's
/// providers and modules are linked already. Skipped only where the user's
/// directory was initialized (or needs nothing installed), so that a
/// missing provider still gets terraform's own "run init" error.
pub(super) async fn prepare(ws: &Workspace, tf: &Terraform, store: &Store) -> Result<()> {
    let key = format!("terraform {} local backend hash", tf.version_text());
    let (root, user_data) = (ws.root(), ws.root().join(".terraform"));
    let providers_ready =
        user_data.join("providers").is_dir() || !root.join(".terraform.lock.hcl").exists();
    let modules_ready =
        user_data.join("modules").join("modules.json").is_file() || !declares_modules(root);
    if providers_ready && modules_ready {
        if let Ok(Some(v)) = store.config_info(&key).await {
            if let Some(hash) = v["hash"].as_u64() {
                ws.skip_init(hash)?;
                return Ok(());
            }
        }
    }
    ws.init(tf).await.map_err(exit_on_terraform_failure)?;
    if let Some(hash) = ws.backend_hash() {
        // Best effort: without it the next run runs init again.
        let _ = store.put_config_info(&key, &json!({ "hash": hash })).await;
    }
    Ok(())
}

/// Whether a configuration file of the root module declares a module call
/// (then `init` must install modules; nested calls need a root one first).
fn declares_modules(root: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return true;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = || std::fs::read_to_string(e.path()).unwrap_or_default();
        if name.ends_with(".tf") {
            text()
                .lines()
                .any(|l| l.trim_start().starts_with("module "))
        } else if name.ends_with(".tf.json") {
            text().contains("\"module\"")
        } else {
            false
        }
    })
}

/// Terraform failed before we did anything: its message is out, pass its code.
fn exit_on_terraform_failure(e: crate::terraform::TerraformError) -> anyhow::Error {
    match e.exit_code() {
        Some(code) => Exit(code).into(),
        None => e.into(),
    }
}

/// Object identity and content of the given addresses, for the re-check.
fn objects_in<'s>(
    state: &'s State,
    addresses: &HashSet<&str>,
) -> Vec<(String, &'s crate::tfstate::Instance)> {
    let mut out = Vec::new();
    for r in &state.resources {
        let raddr = r.address();
        for i in &r.instances {
            let a = i.address(&raddr);
            if addresses.contains(a.as_str()) {
                out.push((a, i));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.deposed.cmp(&b.1.deposed)));
    out
}

/// The cone of one run.
struct Cone {
    /// What the discovery plan changes.
    changed: Vec<String>,
    /// Changed instances and everything downstream, canonical order.
    write: Vec<String>,
    /// Their dependencies, not written.
    read: Vec<String>,
    /// How many written instances are not in the state yet.
    new: usize,
}

impl Cone {
    fn compute(rows: &[GraphRow], changed: &[String], config: &plan::ConfigInfo) -> Result<Cone> {
        let graph = StateGraph::build(rows.iter().map(|r| InstanceInput {
            address: &r.address,
            config_resource: &r.config_address,
            dependencies: &r.dependencies,
        }))?;
        let existing: Vec<&str> = changed
            .iter()
            .map(String::as_str)
            .filter(|a| graph.contains(a))
            .collect();
        let new: Vec<&String> = changed.iter().filter(|a| !graph.contains(a)).collect();
        let base = graph.cone(&existing)?;
        let mut write = base.write;
        let mut in_write: HashSet<String> = write.iter().cloned().collect();
        for n in &new {
            if in_write.insert((*n).clone()) {
                write.push((*n).clone());
            }
        }

        // New instances read what their configuration references (and,
        // since state dependencies are transitive, what those depend on).
        let by_config: HashMap<&str, Vec<&GraphRow>> =
            rows.iter().fold(HashMap::new(), |mut m, r| {
                m.entry(r.config_address.as_str()).or_default().push(r);
                m
            });
        let edges = &config.edges;
        let mut read: BTreeSet<String> = base.read.into_iter().collect();
        for n in &new {
            let config = crate::tfstate::strip_module_keys(crate::address::strip_instance_key(n));
            // Module outputs are nodes of their own: follow them to the
            // resources they reference.
            let mut todo = vec![config];
            let mut seen: HashSet<String> = HashSet::new();
            while let Some(node) = todo.pop() {
                for (_, dep) in edges.iter().filter(|(from, _)| *from == node) {
                    if dep.contains("output.") && !by_config.contains_key(dep.as_str()) {
                        if seen.insert(dep.clone()) {
                            todo.push(dep.clone());
                        }
                        continue;
                    }
                    for row in by_config.get(dep.as_str()).into_iter().flatten() {
                        read.insert(row.address.clone());
                        for d in &row.dependencies {
                            for up in by_config.get(d.as_str()).into_iter().flatten() {
                                read.insert(up.address.clone());
                            }
                        }
                    }
                }
            }
        }
        let read: Vec<String> = read.into_iter().filter(|a| !in_write.contains(a)).collect();
        Ok(Cone {
            changed: changed.to_vec(),
            new: new.len(),
            write,
            read,
        })
    }

    /// `-target` addresses: whole resources where every instance of a
    /// resource is written, instances otherwise (keeps argv short).
    fn targets(&self, rows: &[GraphRow]) -> Vec<String> {
        let resource_of = |a: &str| crate::address::strip_instance_key(a).to_owned();
        let mut total: HashMap<String, usize> = HashMap::new();
        for r in rows {
            *total.entry(resource_of(&r.address)).or_default() += 1;
        }
        let mut written: HashMap<String, Vec<&String>> = HashMap::new();
        for a in &self.write {
            written.entry(resource_of(a)).or_default().push(a);
        }
        let mut out: Vec<String> = Vec::new();
        for (resource, instances) in written {
            if total.get(&resource).is_some_and(|t| *t == instances.len()) && instances.len() > 1 {
                out.push(resource);
            } else {
                out.extend(instances.into_iter().cloned());
            }
        }
        out.sort();
        out
    }

    /// Root outputs this run may write: those whose references all lie in the cone.
    fn allowed_outputs(&self, config: &plan::ConfigInfo, before: &State) -> Vec<String> {
        let cone_configs: HashSet<String> = self
            .write
            .iter()
            .chain(&self.read)
            .map(|a| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a)))
            .collect();
        let refs = &config.output_refs;
        let mut names: BTreeSet<String> = before.outputs.iter().map(|(n, _)| n.clone()).collect();
        names.extend(config.outputs.iter().cloned());
        names.retain(|name| {
            refs.iter().filter(|(o, _)| o == name).all(|(_, dep)| {
                match dep.split_once(".output.") {
                    Some((module, _)) => cone_configs
                        .iter()
                        .any(|c| c.starts_with(&format!("{module}."))),
                    None => cone_configs.contains(dep),
                }
            })
        });
        names.into_iter().collect()
    }
}
