//! Terraform's plan of the change set, with a scoped refresh where it pays.
//!
//! Terraform's `-target` refreshes the targets and every instance of every
//! resource they depend on. Where that is estimated slower than a second
//! terraform command ([`super::strategy`]), only the written instances are
//! refreshed: `terraform plan -refresh-only`
//! targeted at them on a private state holding nothing else, the refreshed
//! objects read back from that plan file; the plan of the cone then runs
//! with `-refresh=false`. Where terraform cannot ask for input, the refresh
//! and a plan on the stored rows run side by side, and that plan stands when
//! the refresh finds every written object as stored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};

use super::change_set::{Catalog, ChangeSet, Narrowed};
use super::session::{prepare, Context};
use super::strategy::{self, Costs};
use super::Kind;
use crate::db::store::GraphRow;
use crate::error::Exit;
use crate::settings::ScopedRefresh;
use crate::terraform::config::{Config, Narrowable};
use crate::terraform::plan::ConfigInfo;
use crate::terraform::{Finished, Invocation, Output, Rewrite, RunDir, TerraformError};
use crate::tfstate::{Instance, State};
use crate::ui::thousands;

/// What a scoped refresh run cannot do, said on its step line.
const NOT_POSSIBLE: &str =
    "not possible on a partial state: the plan refreshes the cone's dependencies too";

/// Terraform's plan of the change set `cs` in `dir` (whose state is
/// `fresh`), into [`final_plan`] where it will be applied or saved; with a
/// scoped refresh where [`choose_way`] says so. The outer error is ours;
/// the inner one says terraform could not run.
pub async fn plan_cone(
    cx: &Context<'_>,
    dir: &RunDir,
    fresh: &State,
    cs: &ChangeSet,
    info: &ConfigInfo,
    rows: &[GraphRow],
) -> Result<Result<Finished, TerraformError>> {
    let way = choose_way(cx, cs, rows).await?;
    if way.scoped {
        return scoped_plan(cx, dir, fresh, cs, info, way.learning).await;
    }
    let started = Instant::now();
    let done = cone_plan(cx, dir, cs, true).run().await;
    if let (Some(l), Ok(finished)) = (way.learning, &done) {
        if ran_through(finished) {
            let costs = l.costs.after_one(l.targeted, secs(started));
            l.record(cx, costs).await;
        }
    }
    Ok(done)
}

/// How this run refreshes, and what it learns from the run about
/// terraform's costs on this state.
struct Way {
    /// The scoped refresh (else one targeted plan).
    scoped: bool,
    /// Where chosen by cost: the figures it was chosen with.
    learning: Option<Learning>,
}

/// The figures a choice by cost was made with, updated after the run.
struct Learning {
    /// The remote providers of the refreshed instances (`aws`).
    providers: String,
    costs: Costs,
    /// Remote instances one targeted plan refreshes.
    targeted: usize,
    /// Remote instances the scoped refresh refreshes.
    written: usize,
}

impl Learning {
    /// Stores the updated figures; a failure to store them costs only a
    /// later run's estimate, so it is not an error.
    async fn record(&self, cx: &Context<'_>, costs: Costs) {
        let s = &cx.session;
        let figures = [costs.command_s, costs.pair_s, costs.per_instance_s];
        let _ = s
            .store
            .put_terraform_costs(s.state_id, &self.providers, figures)
            .await;
    }
}

/// Whether terraform's plan ran to its end, its cost worth learning from
/// (2: changes, with `-detailed-exitcode`).
fn ran_through(done: &Finished) -> bool {
    matches!(done.code, 0 | 2) && done.interrupts == 0
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// A smaller private state to hand terraform for the change set `cs` of
/// `state`: only the cone and what it reads ([`ChangeSet::cone_state`]),
/// so that a small change costs terraform little on a large state; and
/// where the configuration allows it (`config`'s
/// [`crate::terraform::config::Narrowable`] calls), root module calls
/// narrowed to the module instances the run touches
/// ([`ChangeSet::narrow`]). The whole state where the user targets (the
/// change set is terraform's plan of those targets), for `-refresh-only`
/// (it covers every instance), for a run without `-target` (it plans the
/// whole configuration), or with `STATEGRAPH_PARTIAL_STATE=0`: then
/// `None`, the whole state already in the run dir.
pub fn partial_state(
    cx: &Context<'_>,
    state: &State,
    cs: &ChangeSet,
    info: &ConfigInfo,
    config: Option<&Config>,
) -> Option<Partial> {
    partial_state_in(cx, state, cs, (info, config), None)
}

/// [`partial_state`] of `state`, which may hold the rows of some
/// resources only: `catalog` names them all (see
/// [`super::change_set::ChangeSet::needs`]).
pub fn partial_state_in(
    cx: &Context<'_>,
    state: &State,
    cs: &ChangeSet,
    (info, config): (&ConfigInfo, Option<&Config>),
    catalog: Option<&Catalog>,
) -> Option<Partial> {
    let flags = &cx.flags;
    let whole = !cx.session.settings.partial_state
        || !flags.targets.is_empty()
        || flags.refresh_only
        || cs.untargeted;
    if whole {
        return None;
    }
    let partial = cs.cone_state(state, info, catalog);
    let (state, narrowed) = match narrowing(cx, config) {
        Some(narrowable) => cs.narrow(partial, narrowable),
        None => (partial, None),
    };
    Some(Partial { state, narrowed })
}

/// The root module calls [`partial_state`] may narrow, if it narrows any.
pub fn narrowing<'c>(
    cx: &Context<'_>,
    config: Option<&'c Config>,
) -> Option<&'c BTreeMap<String, Narrowable>> {
    config
        .filter(|c| narrowing_flags(cx) && !c.narrowable.is_empty())
        .map(|c| &c.narrowable)
}

/// What [`partial_state`] hands terraform.
pub struct Partial {
    /// The instances it is given.
    pub state: State,
    /// The root module calls narrowed, if any (then terraform plans and
    /// applies in [`RunDir::narrow`]'s directory).
    pub narrowed: Option<Narrowed>,
}

/// Whether terraform's flags allow a narrowed configuration's directory
/// (see [`RunDir::narrow`]): no `-var-file` reaching above the root
/// module's directory (it would resolve against the private directory),
/// no `-generate-config-out` (written there, then lost), none in
/// `TF_CLI_ARGS` or `TF_CLI_ARGS_plan`/`_apply` (as settings read them),
/// which are not parsed here.
fn narrowing_flags(cx: &Context<'_>) -> bool {
    let above = |path: &str| {
        let p = std::path::Path::new(path);
        p.is_relative()
            && p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    };
    let flags_ok = cx.flags.passthrough.iter().all(|g| match g.name.as_str() {
        "generate-config-out" => false,
        "var-file" => {
            let value = match g.args.as_slice() {
                [_, value] => Some(value.as_str()),
                [one] => one.split_once('=').map(|(_, v)| v),
                _ => None,
            };
            value.is_some_and(|v| !above(v))
        }
        _ => true,
    });
    let env_ok = cx.session.settings.tf_cli_args.iter().all(|(_, v)| {
        !["var-file", "generate-config-out"]
            .iter()
            .any(|f| v.contains(f))
    });
    flags_ok && env_ok
}

/// The plan file the plan of the cone writes.
pub fn final_plan(dir: &RunDir) -> std::path::PathBuf {
    dir.plan_path("final")
}

/// The plan of the cone as terraform runs it: targeted at the write set
/// (unless the user targets), with the user's flags but those stategraph
/// says itself, into [`final_plan`] when it is applied or saved.
fn cone_plan(cx: &Context<'_>, dir: &RunDir, cs: &ChangeSet, refresh: bool) -> Invocation {
    let (flags, kind) = (&cx.flags, cx.session.kind);
    let mut plan = dir.cone_command(&cx.tf).args(["plan", "-lock=false"]);
    // Only root outputs change: nothing refreshed would be written.
    if !refresh || cs.outputs_only {
        plan = plan.arg("-refresh=false");
    }
    if flags.destroy {
        plan = plan.arg("-destroy");
    }
    if flags.targets.is_empty() && !cs.untargeted {
        plan = plan.args(cs.targets.iter().map(|t| format!("-target={t}")));
    }
    let mut rewrite = Rewrite {
        targeting: targeted_for_the_user(cx, cs),
        ..Rewrite::default()
    };
    if kind != Kind::Plan || flags.out.is_some() {
        let private = final_plan(dir).display().to_string();
        plan = plan.arg(format!("-out={private}"));
        // The plan file is ours: terraform's "Saved the plan to" names the
        // user's (`plan -out`), or nothing (`apply`).
        let given = flags.out.clone().filter(|_| kind == Kind::Plan);
        rewrite.saved_plan = Some((private, given));
    }
    let except: &[&str] = match kind {
        Kind::Plan => &["out", "destroy"],
        _ => &["out", "destroy", "auto-approve"],
    };
    plan.args(flags.pass(except))
        .interactive(kind == Kind::Plan)
        .user_facing()
        .rewrite(rewrite)
}

/// Whether stategraph, not the user, gave the cone's `-target`s: then
/// terraform's warnings about them are not shown.
pub fn targeted_for_the_user(cx: &Context<'_>, cs: &ChangeSet) -> bool {
    cx.flags.targets.is_empty() && !cs.targets.is_empty()
}

/// Whether this run refreshes only its written instances (see
/// [`crate::settings::Settings::scoped_refresh`]). Terraform's targeted plan
/// refreshes the targets and every instance of every resource they depend
/// on (all module instances of a module's resources); a refresh of the
/// written instances alone costs one terraform command more, each loading
/// the providers. `auto` chooses the way estimated faster ([`strategy`]),
/// from the remote instances each refreshes (`terraform_data`, refreshed
/// without a remote call, does not count), the cores, and what terraform
/// commands cost on this state's earlier runs; the step line says which and
/// why.
async fn choose_way(cx: &Context<'_>, cs: &ChangeSet, rows: &[GraphRow]) -> Result<Way> {
    let one = Way {
        scoped: false,
        learning: None,
    };
    let flags = &cx.flags;
    // Not for a refresh-less or refresh-only run, nor for machine-readable output.
    if !flags.refresh || flags.refresh_only || flags.json {
        return Ok(one);
    }
    let write: HashSet<&str> = cs.write.iter().map(String::as_str).collect();
    let stored = rows
        .iter()
        .filter(|r| write.contains(r.address.as_str()))
        .count();
    if stored == 0 {
        return Ok(one);
    }
    match cx.session.settings.scoped_refresh {
        ScopedRefresh::Always => {
            return Ok(Way {
                scoped: true,
                learning: None,
            })
        }
        ScopedRefresh::Never => return Ok(one),
        ScopedRefresh::Auto => {}
    }
    // What terraform's targeted plan would refresh: every instance of the
    // written resources and of what they depend on.
    let mut configs: HashSet<String> = HashSet::new();
    for r in rows.iter().filter(|r| write.contains(r.address.as_str())) {
        configs.insert(r.config_address.clone());
        for d in &r.dependencies {
            configs.insert(crate::tfstate::strip_module_keys(d));
        }
    }
    let targeted: Vec<&str> = rows
        .iter()
        .filter(|r| configs.contains(&r.config_address))
        .filter_map(|r| remote_provider(&r.config_address).map(|_| r.address.as_str()))
        .collect();
    let written = targeted.iter().filter(|a| write.contains(**a)).count();
    if targeted.len() <= written {
        // Nothing to save: one plan, as terraform.
        return Ok(one);
    }
    let providers: BTreeSet<&str> = rows
        .iter()
        .filter(|r| configs.contains(&r.config_address))
        .filter_map(|r| remote_provider(&r.config_address))
        .collect();
    let providers = providers.into_iter().collect::<Vec<_>>().join(",");
    let s = &cx.session;
    let [command_s, pair_s, per_instance_s] =
        s.store.terraform_costs(s.state_id, &providers).await?;
    let inputs = strategy::Inputs {
        targeted: targeted.len(),
        written,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        side_by_side: side_by_side(cx),
        costs: Costs {
            command_s,
            pair_s,
            per_instance_s,
        },
    };
    let choice = strategy::choose(&inputs);
    s.ui.step("Choosing how to refresh")
        .done(choice.reason(&inputs));
    Ok(Way {
        scoped: choice.scoped,
        learning: Some(Learning {
            providers,
            costs: inputs.costs,
            targeted: inputs.targeted,
            written,
        }),
    })
}

/// The provider of a resource (`aws` for `module.m.aws_s3_bucket.b`), or
/// `None` for `terraform_data`, which refreshes without a remote call.
fn remote_provider(config_address: &str) -> Option<&str> {
    let mut parts = config_address.rsplit('.');
    let (_name, kind) = (parts.next(), parts.next()?);
    match kind {
        "terraform_data" => None,
        kind => Some(kind.split('_').next().unwrap_or(kind)),
    }
}

/// Whether a scoped refresh may run beside the plan of the cone: not where
/// terraform may ask a question (its output is held back meanwhile, and
/// would hide it), nor with `STATEGRAPH_SPECULATIVE_PLAN=0`.
fn side_by_side(cx: &Context<'_>) -> bool {
    use std::io::IsTerminal;
    let settings = cx.session.settings;
    let can_ask = !cx.flags.no_input && settings.tf_input && std::io::stdin().is_terminal();
    settings.speculative_plan && !can_ask
}

/// The plan of the cone with a scoped refresh (see [`choose_way`]).
///
/// Where terraform cannot ask for input, the refresh of the written
/// instances (in a private dir of its own) and the plan on the stored rows
/// run at the same time, the plan's output held back. When the refresh finds
/// every written instance as stored (nothing changed outside terraform),
/// that plan is the plan of the refreshed state and its output is shown;
/// otherwise the plan runs again on the refreshed state. A terraform command
/// with a large provider (aws) costs seconds of start-up and schema loading,
/// mostly on one core: paid side by side instead of one after the other.
async fn scoped_plan(
    cx: &Context<'_>,
    dir: &RunDir,
    fresh: &State,
    cs: &ChangeSet,
    info: &ConfigInfo,
    learning: Option<Learning>,
) -> Result<Result<Finished, TerraformError>> {
    let ui = cx.session.ui;
    let write: HashSet<&str> = cs.write.iter().map(String::as_str).collect();
    let stored: BTreeSet<String> = fresh
        .instance_addresses()
        .filter(|a| write.contains(a.as_str()))
        .collect();
    let what = format!(
        "Refreshing the {} written instance{} only",
        thousands(stored.len()),
        if stored.len() == 1 { "" } else { "s" }
    );
    if !side_by_side(cx) {
        let step = ui.step(what);
        let started = Instant::now();
        return Ok(
            match refresh_write_set(cx, dir, fresh, &cs.write, info).await? {
                Some(refreshed) => {
                    let refresh_s = secs(started);
                    step.done("done");
                    refreshed.print_lines(cx);
                    dir.write_state(&refreshed.state)?;
                    let started = Instant::now();
                    let planned = cone_plan(cx, dir, cs, false).run().await;
                    if let (Some(l), Ok(done)) = (learning, &planned) {
                        if ran_through(done) {
                            let costs =
                                l.costs
                                    .after_two(l.written, refresh_s, secs(started), false);
                            l.record(cx, costs).await;
                        }
                    }
                    planned
                }
                None => {
                    step.done(NOT_POSSIBLE);
                    dir.write_state(fresh)?;
                    cone_plan(cx, dir, cs, true).run().await
                }
            },
        );
    }

    let side = dir.layout().run_dir(fresh)?;
    side.share_providers_of(dir);
    match dir.backend_hash() {
        Some(hash) => side.skip_init(hash)?,
        None => prepare(&side, &cx.tf, &cx.session.store).await?,
    }
    let step = ui.step(format!("{what}, planning meanwhile"));
    let held = cone_plan(cx, dir, cs, false)
        .stdout(Output::Capture)
        .quiet();
    let started = Instant::now();
    let ((refreshed, refresh_s), (planned, plan_s)) = tokio::join!(
        async {
            let r = refresh_write_set(cx, &side, fresh, &cs.write, info).await;
            (r, secs(started))
        },
        async { (held.run().await, secs(started)) }
    );
    drop(side);
    let replay = |done: &Finished| ui.replay(&done.stdout, &done.stderr);
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
            r.print_lines(cx);
            if let Ok(done) = &planned {
                replay(done);
                if let (Some(l), true) = (learning, ran_through(done)) {
                    let costs = l.costs.after_two(l.written, refresh_s, plan_s, true);
                    l.record(cx, costs).await;
                }
            }
            Ok(planned)
        }
        Some(r) => {
            step.done(format!(
                "done; changed outside terraform: {}; planning again on the refreshed state",
                r.changed.join(", ")
            ));
            r.print_lines(cx);
            dir.write_state(&r.state)?;
            Ok(cone_plan(cx, dir, cs, false).run().await)
        }
        None => {
            step.done(NOT_POSSIBLE);
            Ok(cone_plan(cx, dir, cs, true).run().await)
        }
    }
}

/// Refreshes the written instances of `state` only: `terraform plan
/// -refresh-only` targeted at them, on a private state holding nothing else
/// (instances a targeted refresh-only plan depends on may be missing from
/// its state), and returns `state` with those instances as refreshed, read
/// from the plan file's prior state (serial and lineage kept: a saved plan
/// must match the stored state). `None` when terraform could not refresh
/// that way (the plan then refreshes the cone's dependencies too).
async fn refresh_write_set(
    cx: &Context<'_>,
    dir: &RunDir,
    state: &State,
    write: &[String],
    info: &ConfigInfo,
) -> Result<Option<Refreshed>> {
    let flags = &cx.flags;
    let write: HashSet<&str> = write.iter().map(String::as_str).collect();
    let for_outputs = read_by_outputs(state, &write, info);
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
    dir.write_state(&only)?;
    let plan_file = dir.plan_path("refresh");
    let mut refresh = dir
        .command(&cx.tf)
        .args(["plan", "-refresh-only", "-input=false", "-lock=false"])
        .arg(format!("-out={}", plan_file.display()))
        .args(flags.vars.iter())
        .args(targets.iter().map(|t| format!("-target={t}")))
        .stdout(Output::Capture)
        .quiet();
    if flags.no_color {
        refresh = refresh.arg("-no-color");
    }
    if let Some(p) = &flags.parallelism {
        refresh = refresh.arg(format!("-parallelism={p}"));
    }
    let done = refresh.run().await?;
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
    let (state, changed) = merge_refreshed(state, &write, &after);
    Ok(Some(Refreshed {
        state,
        lines,
        changed,
    }))
}

/// Resources among the written instances' dependencies that root outputs
/// read: outputs reading only the targets and what they depend on are
/// evaluated, and fail on what is missing from the state, so those stay
/// (and are refreshed with them).
fn read_by_outputs(state: &State, write: &HashSet<&str>, info: &ConfigInfo) -> HashSet<String> {
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
    let mut todo: Vec<&str> = info.output_refs.iter().map(|(_, d)| d.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(node) = todo.pop() {
        if !seen.insert(node) {
            continue;
        }
        if node.contains(".output.") {
            todo.extend(
                info.edges
                    .iter()
                    .filter(|(from, _)| from == node)
                    .map(|(_, to)| to.as_str()),
            );
        } else if upstream.contains(node) {
            for_outputs.insert(node.to_owned());
        }
    }
    for_outputs
}

/// `state` with its written instances as the refresh found them (gone when
/// it found the object deleted), and which of them changed.
fn merge_refreshed(state: &State, write: &HashSet<&str>, after: &State) -> (State, Vec<String>) {
    let mut refreshed: HashMap<(String, Option<String>), Instance> = HashMap::new();
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
    (merged, changed.into_iter().collect())
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
    fn print_lines(&self, cx: &Context<'_>) {
        for line in &self.lines {
            cx.session.ui.say(line);
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
