//! One `stategraph plan`, `apply` or `destroy`, top to bottom: the stages
//! of [`super`] in the order they run. Terraform's output reaches the user
//! live and its exit code is the run's.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use anyhow::{bail, Result};

use super::change_set::{Catalog, ChangeSet};
use super::discover::{self, discover, Discovered};
use super::lease::Lease;
use super::record::Recording;
use super::refresh::{
    final_plan, partial_state, partial_state_in, plan_cone, targeted_for_the_user, Partial,
};
use super::session::{self, prepare, Context, Session};
use super::{baseline, migrate, preflight, recovery, revert, saved, verify, Kind, Outcome};
use crate::db::store::{GraphRow, PushReport, Snapshot, Store, Summarized};
use crate::settings::Settings;
use crate::terraform::config::Config;
use crate::terraform::{Finished, Rewrite, RunDir, Terraform};
use crate::tfargs::TfFlags;
use crate::tfstate::State;
use crate::ui::thousands;

/// How many times the cone may grow under the lock before we give up
/// (unless -lock-timeout leaves more time).
const MAX_ATTEMPTS: usize = 3;

/// `stategraph plan`, `apply` or `destroy` (`kind`) with terraform's
/// arguments `args`, parsed as `flags`: refuses what terraform would
/// refuse, opens the store and the state (a plan of a state that does not
/// exist yet plans from nothing and creates none), then plans (and for
/// apply and destroy, applies) the change cone.
pub async fn run(
    settings: &Settings,
    kind: Kind,
    args: &[String],
    flags: TfFlags,
) -> Result<Outcome> {
    let answers = preflight::check(settings, kind, &flags)?;
    let answered;
    let settings = match answers.is_empty() {
        true => settings,
        false => {
            answered = settings.with_variables(&answers);
            &answered
        }
    };
    let (store, mut tf) = session::connect(settings).await?;
    for (name, value) in &answers {
        tf = tf.with_env(format!("TF_VAR_{name}"), value);
    }
    let name = settings.state_name();
    let found = session::find_state(&store, settings, &name, kind).await?;
    if let (None, Some(elsewhere)) = (found, migrate::unmigrated(settings, &name)) {
        return Err(elsewhere);
    }
    let state_id = match found {
        Some(id) => id,
        None if kind == Kind::Plan => {
            settings
                .ui
                .warn(session::new_state_warning(&name, store.display(), false));
            return plan_new(settings, &store, &tf, &name, &flags).await;
        }
        None => session::create_state(&store, settings, &name, session::new_lineage()?).await?,
    };
    let command = std::iter::once(format!("stategraph {}", kind.name()))
        .chain(crate::tfargs::redact_vars(args))
        .collect::<Vec<_>>()
        .join(" ");
    let mut session = Session::new(settings, store, (name, state_id), kind, command);
    session.ui = session.ui.machine_readable(flags.json);
    run_stored(&Context { session, tf, flags }).await
}

/// A plan of a stored state reads a snapshot and takes no locks: rows a run
/// in flight is changing are read as before that change, and it says so. A
/// saved plan records the version of each row it read or writes, so `apply
/// FILE` refuses it if any of them changed since.
async fn plan_stored(cx: &Context<'_>) -> Result<Outcome> {
    let session = &cx.session;
    session.rescue_dead_runs().await;
    // `plan -verify` (or its sampled share of plans).
    let verifying = cx.flags.verify || session.settings.sample_verify();
    let settings = session.settings;
    if super::discover::reads_light(cx) {
        let light = match verifying {
            true => true,
            false => match plan_scoped(cx).await? {
                Next::Done(outcome) => return Ok(outcome),
                Next::ReadLight => true,
                Next::ReadWhole => false,
            },
        };
        if light {
            if let Some(outcome) = plan_light(cx, verifying).await? {
                return Ok(outcome);
            }
        }
    }
    let snapshot = session.snapshot().await?;
    // Rows written before rows kept their digest get it now (best effort:
    // without it this state's plans read every row whole).
    let _ = session
        .store
        .fill_digests(session.state_id, &snapshot)
        .await;
    let dir = run_dir(session.settings, &cx.flags, &snapshot.state)?;
    prepare(&dir, &cx.tf, &session.store).await?;
    let by_resources = match settings.discovery_oracle {
        true => resources_agree(cx, &dir, &snapshot).await?,
        false => None,
    };
    let found = discover(cx, &dir, &snapshot.state, &[]).await?;
    anyhow::ensure!(
        by_resources != Some(true) || found.is_empty(),
        "discovery oracle: what PostgreSQL keeps of each resource says nothing may change, \
         the rows say {:?} and outputs {:?} may",
        found.changed,
        found.outputs
    );
    if found.is_empty() {
        if verifying {
            verify::against_whole_plan(cx, &dir, &snapshot.state, None).await?;
        }
        return Ok(Outcome::NoChanges { explained: true });
    }
    let (cs, rows) = computed_change_set(cx, &snapshot.state, &found)?;
    let touched: Vec<String> = cs.write.iter().chain(&cs.read).cloned().collect();
    session.note_in_flight(&touched).await?;
    let partial = partial_state(cx, &snapshot.state, &cs, &found.info, found.config.as_ref());
    if settings.discovery_oracle && !verifying {
        light_agrees(cx, &snapshot, (&found, &cs), partial.as_ref()).await?;
        scoped_agrees(cx, &dir, &snapshot, (&found, &cs), partial.as_ref()).await?;
    }
    let handed = hand(
        cx,
        &dir,
        (partial.as_ref(), found.config.as_ref()),
        &snapshot.state,
    )?;
    let verify_on = verifying.then_some(&snapshot.state);
    let outcome = plan_handed(cx, &dir, &snapshot, handed, (&cs, &found, &rows), verify_on).await;
    super::discard((snapshot, rows, found, partial));
    outcome
}

/// A plan that reads only the rows it needs: what PostgreSQL keeps of each
/// resource ([`Store::resources`]) says what may change
/// ([`super::discover::by_resources`]); the candidates' rows are read light,
/// the change set computed on them, and more resources read until they
/// hold everything it consults ([`ChangeSet::needs`]); the rows handed to
/// terraform are then read whole. Where that cannot be done (see
/// [`start_scoped`]), says nothing, and how to read the state instead.
async fn plan_scoped(cx: &Context<'_>) -> Result<Next> {
    let session = &cx.session;
    let (dir, found, scoped) = match start_scoped(cx).await? {
        None => return Ok(Next::ReadLight),
        Some(Start::Unanswered) => return Ok(Next::ReadWhole),
        Some(Start::Nothing) => return Ok(Next::Done(Outcome::NoChanges { explained: true })),
        Some(Start::Found(start)) => *start,
    };
    let Scoped {
        snapshot,
        cs,
        rows,
        partial,
        ..
    } = scoped;
    let touched: Vec<String> = cs.write.iter().chain(&cs.read).cloned().collect();
    session.note_in_flight(&touched).await?;
    let Some(Whole::Partial(partial)) = whole_rows(cx, &snapshot, Some(partial)).await? else {
        changed_meanwhile(cx);
        return Ok(Next::ReadLight);
    };
    let handed = hand(
        cx,
        &dir,
        (Some(&partial), found.config.as_ref()),
        &snapshot.state,
    )?;
    let outcome = plan_handed(cx, &dir, &snapshot, handed, (&cs, &found, &rows), None).await;
    super::discard((snapshot, rows, found, partial));
    outcome.map(Next::Done)
}

/// What a plan does after [`plan_scoped`].
enum Next {
    /// It is done.
    Done(Outcome),
    /// It reads the state light ([`plan_light`]).
    ReadLight,
    /// It reads every row whole: the configuration alone cannot say what
    /// changes (terraform's refresh-less plan of the candidates will).
    ReadWhole,
}

/// How a run reading rows by resource starts ([`start_scoped`]).
enum Start {
    /// Nothing may change (said).
    Nothing,
    /// Blocks read a value that changed: which of their instances change
    /// takes terraform's refresh-less plan, of every row whole (nothing
    /// said yet).
    Unanswered,
    /// What may change (said), its change set, and the run dir.
    Found(Box<(RunDir, Discovered, Scoped)>),
}

/// The start of a plan or apply reading rows by resource (see
/// [`plan_scoped`]): discovery and the change set, said on their step
/// lines. `None` where that cannot be done, before anything is said.
async fn start_scoped(cx: &Context<'_>) -> Result<Option<Start>> {
    let session = &cx.session;
    let Some(stored) = session.store.resources(&session.name).await? else {
        return Ok(None);
    };
    let dir = run_dir(session.settings, &cx.flags, &stored.state)?;
    prepare(&dir, &cx.tf, &session.store).await?;
    let Some(by) = super::discover::by_resources(cx, &dir, &stored).await? else {
        return Ok(None);
    };
    if by.is_empty() {
        super::discover::announce_nothing(cx, by.found.blocks);
        return Ok(Some(Start::Nothing));
    }
    if !by.found.precise {
        // As the rows read light would say (their discovery is the same).
        return Ok(Some(Start::Unanswered));
    }
    let catalog = by.catalog();
    let listed = by.found.listed.clone();
    let Some((snapshot, catalog)) = read_scoped(cx, &stored, catalog, (listed, true)).await? else {
        return Ok(None);
    };
    let Some(found) = by.with_rows(&stored, &snapshot.state) else {
        return Ok(None);
    };
    if found.is_empty() {
        // What was read (a `moved` or `import` block's resource) holds no change.
        super::discover::announce(cx, &found);
        return Ok(Some(Start::Nothing));
    }
    let Some(scoped) = scoped_cone(cx, (&stored, true), (snapshot, catalog), &found).await? else {
        return Ok(None);
    };
    // Said once it stands (it takes milliseconds), as the light plan says it.
    super::discover::announce(cx, &found);
    let step = session.ui.step("Computing change cone");
    say_cone(step, &scoped.cs, scoped.catalog.objects() + scoped.cs.new);
    let read = &scoped.catalog.read;
    session.ui.step("Reading the rows it reaches").done(format!(
        "{} of {} rows ({} of {} resources)",
        thousands(scoped.catalog.objects_of(read)),
        thousands(scoped.catalog.objects()),
        thousands(read.len()),
        thousands(stored.resources.len())
    ));
    Ok(Some(Start::Found(Box::new((dir, found, scoped)))))
}

/// The change set of a plan read by [`scoped_cone`], and what it read.
struct Scoped {
    /// The rows of the resources read, light.
    snapshot: Snapshot,
    /// Every stored resource; those read in [`Catalog::read`].
    catalog: Catalog,
    cs: ChangeSet,
    rows: Vec<GraphRow>,
    /// Its partial state, from the rows read light.
    partial: Partial,
}

/// Every resource of a state as [`Store::resources`] read it.
fn catalog_of(stored: &Summarized) -> Catalog {
    let digests = baseline::ResourceDigest::of_summaries(&stored.resources);
    Catalog::new(digests.iter().map(Into::into).collect())
}

/// The rows of the resources `want`, read light; `None` where they are
/// half the state or more and `bounded` (reading it all light costs less),
/// or the state changed since `stored` was read (then it is read again,
/// light).
async fn read_scoped(
    cx: &Context<'_>,
    stored: &Summarized,
    mut catalog: Catalog,
    (want, bounded): (BTreeSet<String>, bool),
) -> Result<Option<(Snapshot, Catalog)>> {
    if bounded && catalog.objects_of(&want) * 2 > catalog.objects() {
        return Ok(None);
    }
    let session = &cx.session;
    let keys = catalog.keys_of(&want);
    let Some(snapshot) = session
        .store
        .light_resources(&session.name, stored, &keys)
        .await?
    else {
        return Ok(None);
    };
    if snapshot.undigested > 0 {
        return Ok(None);
    }
    catalog.read = want;
    Ok(Some((snapshot, catalog)))
}

/// The change set of `found` on the rows read, more resources read until
/// they hold all the change set and its partial state consult
/// ([`ChangeSet::needs`]), a few rounds at most; `None` where it cannot be
/// done so: terraform plans the whole configuration
/// ([`ChangeSet::untargeted`]) or is given every row, the rows grow to half
/// the state, or the state changed meanwhile.
async fn scoped_cone(
    cx: &Context<'_>,
    (stored, bounded): (&Summarized, bool),
    (mut snapshot, mut catalog): (Snapshot, Catalog),
    found: &Discovered,
) -> Result<Option<Scoped>> {
    /// Rounds of reads after the first.
    const ROUNDS: usize = 4;
    let config = found.config.as_ref();
    for _ in 0..=ROUNDS {
        let (cs, rows) = change_set_in(cx, &snapshot.state, found, Some(&catalog))?;
        if cs.untargeted {
            return Ok(None);
        }
        let narrowing = super::refresh::narrowing(cx, config);
        let need = cs.needs(
            &rows,
            &found.info,
            &found.outputs,
            &catalog,
            Some((&snapshot.state, narrowing)),
        );
        if need.is_subset(&catalog.read) {
            let partial = partial_state_in(
                cx,
                &snapshot.state,
                &cs,
                (&found.info, config),
                Some(&catalog),
            );
            return Ok(partial.map(|partial| Scoped {
                snapshot,
                catalog,
                cs,
                rows,
                partial,
            }));
        }
        let want: BTreeSet<String> = catalog.read.union(&need).cloned().collect();
        match read_scoped(cx, stored, catalog, (want, bounded)).await? {
            Some(again) => (snapshot, catalog) = again,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// With the discovery oracle: a plan reading rows by resource
/// ([`plan_scoped`]) must find what the plan from every row whole found
/// (candidates, change set, the state handed to terraform), unless a write
/// committed in between. Read whatever their number (a plan reads the
/// whole state light past half of it).
async fn scoped_agrees(
    cx: &Context<'_>,
    dir: &RunDir,
    whole: &Snapshot,
    (found, cs): (&Discovered, &ChangeSet),
    partial: Option<&Partial>,
) -> Result<()> {
    let session = &cx.session;
    let Some(stored) = session.store.resources(&session.name).await? else {
        return Ok(());
    };
    if whole.fingerprint.as_ref() != Some(&stored.fingerprint) {
        return Ok(());
    }
    // Discovery, with the candidates' rows read.
    if let (Some(by), Some(config)) = (
        super::discover::by_resources(cx, dir, &stored).await?,
        &found.config,
    ) {
        let recorded = session.store.baseline(session.state_id).await?;
        let from_rows =
            baseline::candidates(config, &recorded, &baseline::Stored::of(&whole.state));
        let listed = (by.found.listed.clone(), false);
        let read = read_scoped(cx, &stored, by.catalog(), listed).await?;
        if let (Some((snapshot, _)), Ok(from_rows)) = (read, from_rows) {
            if let Some(scoped) = by.with_rows(&stored, &snapshot.state) {
                anyhow::ensure!(
                    from_rows.precise
                        && (&scoped.changed, scoped.blocks)
                            == (&from_rows.addresses, from_rows.blocks),
                    "discovery oracle: by resource {:?} ({} blocks) may change, by every row {:?} \
                     ({} blocks, precise: {})",
                    scoped.changed,
                    scoped.blocks,
                    from_rows.addresses,
                    from_rows.blocks,
                    from_rows.precise
                );
            }
        }
    }
    // The change set and partial state of what discovery found.
    let catalog = catalog_of(&stored);
    let resources: BTreeSet<String> = found
        .changed
        .iter()
        .map(|a| crate::address::strip_instance_key(a).to_owned())
        .filter(|r| catalog.holds(r))
        .collect();
    let Some(read) = read_scoped(cx, &stored, catalog, (resources, false)).await? else {
        return Ok(());
    };
    let Some(scoped) = scoped_cone(cx, (&stored, false), read, found).await? else {
        // Not for a write committed meanwhile.
        let now = session.store.resources(&session.name).await?;
        let unchanged = now.is_some_and(|now| now.fingerprint == stored.fingerprint);
        anyhow::ensure!(
            !unchanged || cs.untargeted || partial.is_none(),
            "discovery oracle: no change set from the rows read by resource, \
             though every row gives one"
        );
        return Ok(());
    };
    anyhow::ensure!(
        (
            &scoped.cs.write,
            &scoped.cs.read,
            &scoped.cs.targets,
            scoped.cs.untargeted
        ) == (&cs.write, &cs.read, &cs.targets, cs.untargeted),
        "discovery oracle: the change set of the rows read by resource ({:?} write, {:?} read) \
         differs from that of every row ({:?} write, {:?} read)",
        scoped.cs.write,
        scoped.cs.read,
        cs.write,
        cs.read
    );
    let Some(whole_partial) = partial else {
        bail!(
            "discovery oracle: a partial state from the rows read by resource, none from every row"
        );
    };
    let Some(Whole::Partial(p)) = whole_rows(cx, &scoped.snapshot, Some(scoped.partial)).await?
    else {
        return Ok(());
    };
    anyhow::ensure!(
        p.state == whole_partial.state
            && p.narrowed.as_ref().map(|n| n.describe())
                == whole_partial.narrowed.as_ref().map(|n| n.describe()),
        "discovery oracle: the partial state of the rows read by resource differs from that of \
         every row"
    );
    Ok(())
}

/// With the discovery oracle, before discovery from `whole` (every row
/// read whole): what PostgreSQL keeps of each resource must be what the
/// rows say (objects, digest, dependencies), unless a write committed in
/// between. Returns whether that alone says nothing may change (`None`
/// where it cannot say), for the caller to check against discovery.
async fn resources_agree(cx: &Context<'_>, dir: &RunDir, whole: &Snapshot) -> Result<Option<bool>> {
    let session = &cx.session;
    let Some(stored) = session.store.resources(&session.name).await? else {
        return Ok(None);
    };
    if whole.fingerprint.as_ref() != Some(&stored.fingerprint) {
        return Ok(None);
    }
    let sorted = |mut v: Vec<super::baseline::ResourceDigest>| {
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    };
    let kept = sorted(super::baseline::ResourceDigest::of_summaries(
        &stored.resources,
    ));
    let rows = sorted(super::baseline::ResourceDigest::of_state(&whole.state));
    if let Some((k, r)) = kept.iter().zip(&rows).find(|(k, r)| k != r) {
        bail!("discovery oracle: PostgreSQL keeps {k:?} of a resource whose rows say {r:?}");
    }
    anyhow::ensure!(
        kept.len() == rows.len(),
        "discovery oracle: PostgreSQL keeps {} resources, the rows hold {}",
        kept.len(),
        rows.len()
    );
    Ok(super::discover::by_resources(cx, dir, &stored)
        .await?
        .map(|by| by.is_empty()))
}

/// A plan of a stored state from its rows read light
/// ([`crate::db::store::Store::light_snapshot`]): discovery from the
/// configuration and the rows' stored digests, the change set from their
/// addresses and dependencies, and only the rows handed to terraform read
/// whole. `None` where that cannot be done (see
/// [`super::discover::from_rows`]), before anything is said: then the plan
/// reads every row whole. `verifying` (`-verify`): every row is read whole
/// too, for terraform's plan of the whole configuration to compare with.
async fn plan_light(cx: &Context<'_>, verifying: bool) -> Result<Option<Outcome>> {
    let session = &cx.session;
    let light = session.light_snapshot().await?;
    if light.undigested > 0 {
        return Ok(None);
    }
    let whole = match verifying {
        false => None,
        true => {
            let whole = session.snapshot().await?;
            if whole.versions != light.versions || whole.fingerprint != light.fingerprint {
                return Ok(None);
            }
            Some(whole)
        }
    };
    let dir = run_dir(session.settings, &cx.flags, &light.state)?;
    prepare(&dir, &cx.tf, &session.store).await?;
    let Some(found) = super::discover::from_rows(cx, &dir, &light, &[]).await? else {
        return Ok(None);
    };
    super::discover::announce(cx, &found);
    if found.is_empty() {
        if let Some(whole) = &whole {
            verify::against_whole_plan(cx, &dir, &whole.state, None).await?;
        }
        return Ok(Some(Outcome::NoChanges { explained: true }));
    }
    let (cs, rows) = computed_change_set(cx, &light.state, &found)?;
    let touched: Vec<String> = cs.write.iter().chain(&cs.read).cloned().collect();
    session.note_in_flight(&touched).await?;
    let partial = partial_state(cx, &light.state, &cs, &found.info, found.config.as_ref());
    let (snapshot, partial) = match whole_rows(cx, &light, partial).await? {
        Some(Whole::Partial(partial)) => (light, Some(partial)),
        Some(Whole::State(whole)) => (whole, None),
        None => return Ok(changed_meanwhile(cx)),
    };
    let handed = hand(
        cx,
        &dir,
        (partial.as_ref(), found.config.as_ref()),
        &snapshot.state,
    )?;
    let verify_on = whole.as_ref().map(|w| &w.state);
    let outcome = plan_handed(cx, &dir, &snapshot, handed, (&cs, &found, &rows), verify_on).await;
    super::discard((snapshot, whole, rows, found, partial));
    outcome.map(Some)
}

/// The rows terraform is given, read whole, of a snapshot read light.
enum Whole {
    /// The partial state's.
    Partial(Partial),
    /// Every row (there is no partial state).
    State(Snapshot),
}

/// The rows of `partial` read whole, or every row where there is no
/// partial state; `None` if any of them changed since `light` was read.
async fn whole_rows(
    cx: &Context<'_>,
    light: &Snapshot,
    partial: Option<Partial>,
) -> Result<Option<Whole>> {
    let session = &cx.session;
    Ok(match partial {
        Some(mut partial) => {
            let store = &session.store;
            match store
                .hydrate(session.state_id, light, &partial.state.resources)
                .await?
            {
                Some(resources) => {
                    partial.state.resources = resources;
                    Some(Whole::Partial(partial))
                }
                None => None,
            }
        }
        None => {
            let whole = session.snapshot().await?;
            let same = whole.versions == light.versions && whole.fingerprint == light.fingerprint;
            same.then_some(Whole::State(whole))
        }
    })
}

/// For a run that read the state light, under its lock: the partial state
/// of what it read, its rows read whole, if they (the cone's among them),
/// the state's head and its outputs are still the versions it read; `None`
/// otherwise, or where terraform is given every row.
async fn unchanged_under_lock(
    cx: &Context<'_>,
    light: &Snapshot,
    cs: &ChangeSet,
    found: &Discovered,
    catalog: Option<&Catalog>,
) -> Result<Option<Partial>> {
    let session = &cx.session;
    let config = found.config.as_ref();
    let partial = partial_state_in(cx, &light.state, cs, (&found.info, config), catalog);
    if partial.is_none() {
        return Ok(None);
    }
    let Some(Whole::Partial(partial)) = whole_rows(cx, light, partial).await? else {
        return Ok(None);
    };
    // After the rows: a write committed before this read is seen by one
    // of them.
    match session.store.same_head(&session.name, light).await? {
        true => Ok(Some(partial)),
        false => Ok(None),
    }
}

/// The snapshot a run goes on with, if it was read light: `snapshot`,
/// unless the re-check under the lock read the state again (whole).
fn fresh_light<'a>(snapshot: &'a Snapshot, reread: Option<&'a Snapshot>) -> Option<&'a Snapshot> {
    Some(reread.unwrap_or(snapshot)).filter(|s| s.light)
}

/// A light plan's rows changed between its reads (a run committed): the
/// plan starts again, reading every row whole.
fn changed_meanwhile(cx: &Context<'_>) -> Option<Outcome> {
    cx.session.ui.info(
        "The state changed while this plan read it (another run wrote it): reading it again.",
    );
    None
}

/// With the discovery oracle: a plan from the rows read light must find
/// what the plan from every row whole found (candidates, change set, the
/// state handed to terraform), unless a write committed in between.
async fn light_agrees(
    cx: &Context<'_>,
    whole: &Snapshot,
    (found, cs): (&Discovered, &ChangeSet),
    partial: Option<&Partial>,
) -> Result<()> {
    let session = &cx.session;
    let Some(light) = session.store.light_snapshot(&session.name).await? else {
        return Ok(());
    };
    if light.versions != whole.versions || light.fingerprint != whole.fingerprint {
        return Ok(());
    }
    // Each row's stored digest is its content's.
    for r in &whole.state.resources {
        let address = r.address();
        for i in &r.instances {
            if let Some(stored) = &i.stored_digest.0 {
                anyhow::ensure!(
                    *stored == i.content_digest(),
                    "discovery oracle: the digest stored with {} is not its content's",
                    i.address(&address)
                );
            }
        }
    }
    if let Some(config) = &found.config {
        let recorded = session.store.baseline(session.state_id).await?;
        let from = |state| {
            super::baseline::candidates(config, &recorded, &super::baseline::Stored::of(state))
                .map(|c| (c.addresses, c.blocks, c.precise))
                .map_err(|e| e.0)
        };
        let (rows, content) = (from(&light.state), from(&whole.state));
        anyhow::ensure!(
            rows == content,
            "discovery oracle: the rows' stored digests say {rows:?}, their content {content:?}"
        );
    }
    let (light_cs, _) = change_set(cx, &light.state, found)?;
    anyhow::ensure!(
        (
            &light_cs.write,
            &light_cs.read,
            &light_cs.targets,
            light_cs.untargeted
        ) == (&cs.write, &cs.read, &cs.targets, cs.untargeted),
        "discovery oracle: the change set of the rows read light differs from that of every row"
    );
    let light_partial = partial_state(
        cx,
        &light.state,
        &light_cs,
        &found.info,
        found.config.as_ref(),
    );
    match (light_partial, partial) {
        (None, None) => {}
        (Some(mut p), Some(whole)) => {
            let resources = session
                .store
                .hydrate(session.state_id, &light, &p.state.resources)
                .await?;
            let Some(resources) = resources else {
                return Ok(());
            };
            p.state.resources = resources;
            anyhow::ensure!(
                p.state == whole.state
                    && p.narrowed.as_ref().map(|n| n.describe())
                        == whole.narrowed.as_ref().map(|n| n.describe()),
                "discovery oracle: the partial state of the rows read light differs from that of \
                 every row"
            );
        }
        _ => anyhow::bail!("discovery oracle: a partial state from one read and not the other"),
    }
    Ok(())
}

/// The plan of the cone once its state is handed to terraform: terraform's
/// plan, reverts warned of, the saved plan written, and with `verify_on`
/// (every row, read whole) `-verify`'s comparison.
async fn plan_handed(
    cx: &Context<'_>,
    dir: &RunDir,
    snapshot: &Snapshot,
    handed: &State,
    (cs, found, rows): (&ChangeSet, &Discovered, &[GraphRow]),
    verify_on: Option<&State>,
) -> Result<Outcome> {
    let done = plan_cone(cx, dir, handed, cs, &found.info, rows).await??;
    if matches!(done.code, 0 | 2) {
        warn_reverts(cx, cs, found).await?;
    }
    let saved = save(cx, dir, snapshot, handed, (cs, found), &done)?;
    if let (Some(whole), 0 | 2) = (verify_on, done.code) {
        // The user's targets are the cone plan's own.
        let targets = match cx.flags.targets.is_empty() && !cs.untargeted {
            true => cs.targets.as_slice(),
            false => &[],
        };
        verify::against_whole_plan(cx, dir, whole, Some(targets)).await?;
    }
    Ok(Outcome::Ran {
        code: done.code,
        saved,
        written: None,
    })
}

/// Applies (or destroys) the change cone of a stored state: locks it, plans
/// it again under the lock, applies that plan and records the result.
async fn run_stored(cx: &Context<'_>) -> Result<Outcome> {
    let (session, flags) = (&cx.session, &cx.flags);
    if session.kind == Kind::Plan {
        return plan_stored(cx).await;
    }
    session.rescue_dead_runs().await;
    // Retries go on for at least MAX_ATTEMPTS, and as long as -lock-timeout allows.
    let retry_until = Instant::now() + flags.lock_timeout;
    let out_of_attempts = |attempt: usize| attempt >= MAX_ATTEMPTS && Instant::now() >= retry_until;
    // Addresses terraform planned to change outside an earlier cone.
    let mut forced: Vec<String> = Vec::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Rows read by resource where that can be done (as a plan: see
        // plan_scoped), the first time round.
        let first = attempt == 1 && forced.is_empty();
        let start = match first && super::discover::reads_light(cx) {
            true => start_scoped(cx).await?,
            false => None,
        };
        let settings = session.settings;
        let whole_read = matches!(start, Some(Start::Unanswered));
        let (snapshot, dir, found, (cs, rows), catalog) = match start {
            Some(Start::Nothing) => return Ok(Outcome::NoChanges { explained: true }),
            Some(Start::Found(start)) => {
                let (dir, found, scoped) = *start;
                let Scoped {
                    snapshot,
                    catalog,
                    cs,
                    rows,
                    ..
                } = scoped;
                (snapshot, dir, found, (cs, rows), Some(catalog))
            }
            None | Some(Start::Unanswered) => {
                // Snapshot (its rows read light where discovery can do
                // with them, as a plan's: see plan_light), and a private
                // run dir.
                let mut snapshot = match super::discover::reads_light(cx) && !whole_read {
                    true => session.light_snapshot().await?,
                    false => session.snapshot().await?,
                };
                let dir = run_dir(session.settings, flags, &snapshot.state)?;
                prepare(&dir, &cx.tf, &session.store).await?;

                // Discover what changes, and compute the change set on the
                // stored graph.
                let light = super::discover::from_rows(cx, &dir, &snapshot, &forced).await?;
                let found = match light {
                    Some(found) => {
                        super::discover::announce(cx, &found);
                        found
                    }
                    None => {
                        if snapshot.light {
                            snapshot = session.snapshot().await?;
                        }
                        // As a plan does (see plan_stored).
                        let _ = session
                            .store
                            .fill_digests(session.state_id, &snapshot)
                            .await;
                        discover(cx, &dir, &snapshot.state, &forced).await?
                    }
                };
                if found.is_empty() {
                    return Ok(Outcome::NoChanges { explained: true });
                }
                let change_set = computed_change_set(cx, &snapshot.state, &found)?;
                (snapshot, dir, found, change_set, None)
            }
        };

        // Lock it: exclusive on the write set, shared on the read set.
        let (exclusive, shared) = cs.locks(session.kind);
        let lease = session
            .lease(&exclusive, &shared, flags.lock_timeout)
            .await?;
        recovery::note_locks(
            &dir,
            session.store.display(),
            lease.holder().id,
            &session.name,
            &lease.holder().command,
        );

        // Re-check under the lock: rows of the cone may have changed between
        // the snapshot and the lock. A run that read the state light goes on
        // with what it read if the rows it hands terraform (the cone's among
        // them), the head and the outputs are still the versions it read:
        // no row is read again. Else the state is read again if anything
        // in it changed.
        let early = match snapshot.light {
            true => unchanged_under_lock(cx, &snapshot, &cs, &found, catalog.as_ref()).await?,
            false => None,
        };
        let reread = match early {
            Some(_) => None,
            None => session.snapshot_since(&snapshot).await?,
        };
        let fresh = reread.as_ref().map_or(&snapshot.state, |s| &s.state);
        if reread.is_some() {
            dir.state_changed();
        }
        let differ = match &reread {
            None => false,
            Some(again) if snapshot.light => {
                cs.versions_differ(&snapshot.versions, &again.versions)
            }
            Some(_) => cs.rows_differ(&snapshot.state, fresh),
        };
        let (found, cs, rows) = if differ {
            match recheck(cx, &dir, fresh, &forced, &cs).await? {
                Recheck::Fits(again) => *again,
                Recheck::NoChanges => {
                    lease.release().await?;
                    return Ok(Outcome::NoChanges { explained: false });
                }
                Recheck::Grew => {
                    lease.release().await?;
                    if out_of_attempts(attempt) {
                        bail!(
                            "the change cone kept growing while waiting for locks ({attempt} attempts); try again"
                        );
                    }
                    session.ui.info("The change cone grew; locking it again.");
                    continue;
                }
            }
        } else {
            (found, cs, rows)
        };

        // Terraform plans the cone first: what it plans is checked against
        // the locks before anything is applied.
        let whole;
        let (fresh, partial) = match early {
            Some(partial) => (fresh, Some(partial)),
            None => {
                // The rows read by resource, unless read again (whole).
                let catalog = catalog.as_ref().filter(|_| reread.is_none());
                let partial = partial_state_in(
                    cx,
                    fresh,
                    &cs,
                    (&found.info, found.config.as_ref()),
                    catalog,
                );
                if settings.discovery_oracle {
                    let whole = reread.as_ref().unwrap_or(&snapshot);
                    light_agrees(cx, whole, (&found, &cs), partial.as_ref()).await?;
                }
                // Rows read light: those handed to terraform are read whole now.
                match fresh_light(&snapshot, reread.as_ref()) {
                    None => (fresh, partial),
                    Some(light) => match whole_rows(cx, light, partial).await? {
                        Some(Whole::Partial(partial)) => (fresh, Some(partial)),
                        Some(Whole::State(state)) => {
                            whole = state;
                            (&whole.state, None)
                        }
                        None => {
                            lease.release().await?;
                            if out_of_attempts(attempt) {
                                bail!(
                                    "the state kept changing while this run read it ({attempt} attempts); try again"
                                );
                            }
                            session.ui.info(
                                "The state changed while this run read it (another run wrote it): reading it again.",
                            );
                            continue;
                        }
                    },
                }
            }
        };
        let handed = hand(cx, &dir, (partial.as_ref(), found.config.as_ref()), fresh)?;
        let done = plan_cone(cx, &dir, handed, &cs, &found.info, &rows).await??;
        if !done.success() {
            lease.release().await?;
            return Ok(ran(done.code, None));
        }

        // Never apply anything unlocked: changes terraform plans outside the
        // write set (drift of a dependency, say) are locked too, and the
        // cone planned again.
        let (outside, planned) =
            verify::outside_write_set(cx, &dir, &final_plan(&dir), &cs).await?;
        if !outside.is_empty() {
            lease.release().await?;
            if out_of_attempts(attempt) {
                bail!(
                    "terraform keeps planning changes outside the locked cone ({}); nothing was applied",
                    outside.join(", ")
                );
            }
            session.ui.info(format!(
                "terraform also plans to change {}: locking {} too and planning again.",
                outside.join(", "),
                if outside.len() == 1 { "it" } else { "them" }
            ));
            forced.extend(outside);
            continue;
        }
        let reverted = revert::reverts(session, &planned).await?;
        let certain: Vec<&revert::Revert> = reverted.iter().filter(|r| r.certain).collect();
        if !certain.is_empty() && !flags.allow_revert {
            lease.release().await?;
            bail!(
                "this {} would revert changes this checkout does not contain\n\n{}\n\n\
                 Applying now would undo them. Bring this checkout up to date (merge or pull the \
                 commits named above) and apply again, or pass -allow-revert to undo them.",
                session.kind.name(),
                certain
                    .iter()
                    .map(|r| format!("  {}", r.describe()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        for r in &reverted {
            session.ui.warn(format!(
                "{}: this {} reverts it",
                r.describe(),
                session.kind.name()
            ));
        }
        if planned.is_empty() && found.outputs.is_empty() && !flags.refresh_only {
            // Nothing to do in the cone: its rows are converged.
            if let Some(config) = &found.config {
                let write = cs.write.iter().map(String::as_str);
                let entries = baseline::converged(config, handed, write, false);
                session
                    .store
                    .put_baseline(session.state_id, &entries)
                    .await?;
            }
            lease.release().await?;
            return Ok(ran(0, None));
        }
        if !flags.auto_approve && !approve(cx)? {
            lease.release().await?;
            return Ok(Outcome::Cancelled);
        }
        let (code, report) = apply(cx, &dir, handed, &cs, &found, &lease).await;
        let released = lease.release().await;
        let (code, report) = (code?, report?);
        released?;
        super::discard((snapshot, reread, rows, found, partial));
        return Ok(ran(code, Some(report)));
    }
}

/// [`change_set`], shown as a step with its counts.
fn computed_change_set(
    cx: &Context<'_>,
    state: &State,
    found: &Discovered,
) -> Result<(ChangeSet, Vec<GraphRow>)> {
    let step = cx.session.ui.step("Computing change cone");
    let (cs, rows) = change_set(cx, state, found)?;
    // Every address counted once: the stored ones and those the change set
    // adds (new instances, resources named by address).
    let total: HashSet<&str> = rows
        .iter()
        .map(|r| r.address.as_str())
        .chain(cs.write.iter().chain(&cs.read).map(String::as_str))
        .collect();
    say_cone(step, &cs, total.len());
    Ok((cs, rows))
}

/// The change cone's step line: its counts, of `total` instances.
fn say_cone(step: crate::ui::Step, cs: &ChangeSet, total: usize) {
    step.done(format!(
        "{} of {} instances ({} write, {} read)",
        thousands(cs.write.len() + cs.read.len()),
        thousands(total),
        thousands(cs.write.len()),
        thousands(cs.read.len())
    ));
}

/// The change set of what discovery found, on the graph of `state` (the
/// stored rows the run read), and the graph's rows.
fn change_set(
    cx: &Context<'_>,
    state: &State,
    found: &Discovered,
) -> Result<(ChangeSet, Vec<GraphRow>)> {
    change_set_in(cx, state, found, None)
}

/// [`change_set`] of `state`, which may hold the rows of some resources
/// only: `catalog` names them all (see [`ChangeSet::needs`]).
fn change_set_in(
    cx: &Context<'_>,
    state: &State,
    found: &Discovered,
    catalog: Option<&Catalog>,
) -> Result<(ChangeSet, Vec<GraphRow>)> {
    let rows = GraphRow::of_state(state);
    let mut cs = ChangeSet::compute(&rows, &found.changed, &found.info, catalog)?;
    if cx.flags.targets.is_empty() {
        // With the user's -target, terraform evaluates the outputs it does.
        cs.cover_outputs(&rows, &found.info, &found.outputs, catalog);
    }
    Ok((cs, rows))
}

/// What the re-check under the lock found.
enum Recheck {
    /// Discovery on the fresh rows: its change set lies in what is locked.
    Fits(Box<(Discovered, ChangeSet, Vec<GraphRow>)>),
    /// Nothing to change any more.
    NoChanges,
    /// The change set outgrew the locks.
    Grew,
}

/// Rows of the cone changed between the snapshot and the lock. Nobody can
/// change them now: discover again on the fresh state `fresh` (in `dir`)
/// while holding the lock, and go round only if the cone grew beyond `held`.
async fn recheck(
    cx: &Context<'_>,
    dir: &RunDir,
    fresh: &State,
    forced: &[String],
    held: &ChangeSet,
) -> Result<Recheck> {
    let session = &cx.session;
    session.ui.info(
        "Rows of the cone changed before the locks were taken; planning again on the new state.",
    );
    let found = discover(cx, dir, fresh, forced).await?;
    if found.is_empty() {
        return Ok(Recheck::NoChanges);
    }
    let (grown, rows) = change_set(cx, fresh, &found)?;
    Ok(match grown.fits_in(held, session.kind) {
        true => Recheck::Fits(Box::new((found, grown, rows))),
        false => Recheck::Grew,
    })
}

/// After a plan: the rows it may change that were last written from a
/// commit this checkout does not contain, one warning each (an apply of
/// them is refused without `-allow-revert`). The rows are those of the
/// write set that discovery found changing.
async fn warn_reverts(cx: &Context<'_>, cs: &ChangeSet, found: &Discovered) -> Result<()> {
    let changing: std::collections::HashSet<&str> =
        found.changed.iter().map(String::as_str).collect();
    let candidates: Vec<String> = cs
        .write
        .iter()
        .filter(|a| {
            changing.contains(a.as_str())
                || changing.contains(crate::address::strip_instance_key(a))
        })
        .cloned()
        .collect();
    for r in revert::reverts(&cx.session, &candidates).await? {
        cx.session.ui.warn(format!(
            "{}: if this plan changes it, it reverts that change (`stategraph apply` refuses \
             to without -allow-revert)",
            r.describe()
        ));
    }
    Ok(())
}

/// The private run dir of one attempt. A saved plan records its state's
/// path: give it a name the applying run can recreate (random, so not
/// guessable in advance).
///
/// The state is written when terraform first needs it (see
/// [`crate::terraform::Layout::run_dir_deferred`]): discovery's plan, or
/// [`hand`] before the plan of the cone.
fn run_dir(settings: &Settings, flags: &TfFlags, snapshot: &State) -> Result<RunDir> {
    let name = match &flags.out {
        Some(_) => Some(format!(
            "{}{}",
            saved::DIR_PREFIX,
            super::session::new_lineage()?
        )),
        None => None,
    };
    Ok(settings
        .layout()
        .run_dir_deferred(snapshot, name.as_deref())?)
}

/// Hands terraform, in `dir`, the partial state where there is one (always
/// written: `dir` may hold the whole state from discovery), else `whole`
/// (written unless it is there already); returns the state handed. With
/// narrowed module calls, the cone is planned and applied in the narrowed
/// configuration's directory ([`RunDir::narrow`]), said on a step line.
fn hand<'s>(
    cx: &Context<'_>,
    dir: &RunDir,
    (partial, config): (Option<&'s Partial>, Option<&Config>),
    whole: &'s State,
) -> Result<&'s State> {
    let narrowed = partial.and_then(|p| p.narrowed.as_ref());
    dir.narrow(narrowed.map(|n| n.override_file()).as_deref())?;
    if let Some(n) = narrowed {
        cx.session
            .ui
            .step("Narrowing the module calls terraform expands")
            .done(n.describe());
    }
    if let Some(config) = config {
        session::share_providers(cx, dir, config);
    }
    match partial {
        Some(partial) => dir.write_state(&partial.state)?,
        None => dir.ensure_state(whole)?,
    }
    Ok(partial.map_or(whole, |p| &p.state))
}

/// `plan -out=FILE`: writes the saved plan when terraform's plan succeeded
/// (or found changes, with `-detailed-exitcode`), with the version of each
/// row of the cone as `snapshot` read it; returns its path and the name the
/// user gave it.
fn save(
    cx: &Context<'_>,
    dir: &RunDir,
    snapshot: &Snapshot,
    handed: &State,
    (cs, found): (&ChangeSet, &Discovered),
    done: &Finished,
) -> Result<Option<(std::path::PathBuf, String)>> {
    let flags = &cx.flags;
    let Some(out) = &flags.out else {
        return Ok(None);
    };
    if !(done.code == 0 || (flags.detailed_exitcode && done.code == 2)) {
        return Ok(None);
    }
    let path = cx.session.settings.workdir.join(out);
    let versions = cs.versions_in(&snapshot.versions);
    let plan = saved::Planned {
        snapshot: handed,
        versions,
        cs,
        targeted: targeted_for_the_user(cx, cs),
        baseline: found.config.as_ref().map(|config| saved::Baseline {
            config: config.clone(),
            outputs: cs.evaluated_outputs(&found.info).into_iter().collect(),
        }),
    };
    saved::write(&cx.session.name, &plan, dir, &path)?;
    Ok(Some((path, out.clone())))
}

/// Asks for approval as terraform does; false unless the answer is `yes`.
fn approve(cx: &Context<'_>) -> Result<bool> {
    let (settings, flags) = (cx.session.settings, &cx.flags);
    if flags.no_input || !settings.tf_input {
        bail!(
            "apply requires approval, and input is disabled (-input=false or TF_INPUT=0)\n\n\
             Pass -auto-approve to apply without asking."
        );
    }
    let question = match cx.session.kind {
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
    Ok(cx.session.ui.ask(question)?.trim() == "yes")
}

/// Applies terraform's plan of the cone under `lease`, recording it
/// (checkpoints while terraform applies, the final merge after); returns
/// terraform's exit code and what was written. Terraform may have applied
/// part before it failed: that is recorded too.
async fn apply(
    cx: &Context<'_>,
    dir: &RunDir,
    fresh: &State,
    cs: &ChangeSet,
    found: &Discovered,
    lease: &Lease<'_>,
) -> (Result<u8>, Result<(String, PushReport)>) {
    let session = &cx.session;
    let provisioned: Vec<String> = found
        .config
        .iter()
        .flat_map(|c| c.blocks.iter())
        .filter(|(_, b)| b.provisioned)
        .map(|(address, _)| address.clone())
        .collect();
    let recording = Recording {
        session,
        holder: lease.holder(),
        before: fresh,
        scope: super::record::Scope {
            write: &cs.write,
            read: &cs.read,
            changed: &cs.changed,
            provisioned: &provisioned,
        },
    };
    let begun = match recording.begin().await {
        Ok(begun) => begun,
        Err(e) => return (Err(e), Err(anyhow::anyhow!("nothing was applied"))),
    };
    let apply = dir
        .cone_command(&cx.tf)
        .args(["apply", "-lock=false"])
        .args(cx.flags.for_saved_plan())
        .arg(final_plan(dir))
        .rewrite(Rewrite {
            targeting: targeted_for_the_user(cx, cs),
            destroy: session.kind == Kind::Destroy,
            saved_plan: None,
        })
        .stop_on(lease.lost());
    let done = recording.run_with_checkpoints(&begun, dir, apply).await;
    let Ok(done) = done else {
        let e = done.unwrap_err();
        return (Err(e.into()), Err(anyhow::anyhow!("terraform did not run")));
    };
    let recorded = recording.finish(Some(&begun), dir).await;
    if let (Some(config), true, Ok(_)) = (&found.config, done.success(), &recorded) {
        // The applied blocks' rows are what the configuration says.
        // Best effort: without it the next run plans those blocks again.
        if let Ok(after) = dir.read_state() {
            let write = cs.write.iter().map(String::as_str);
            let mut entries = baseline::converged(config, &after, write, true);
            // And the root outputs terraform evaluated are what it gave them.
            let evaluated = cs.evaluated_outputs(&found.info);
            entries.extend(baseline::outputs_converged(
                config,
                evaluated.iter().map(String::as_str),
            ));
            let _ = session.store.put_baseline(session.state_id, &entries).await;
        }
    }
    (
        Ok(done.code),
        recorded.map(|report| (session.name.clone(), report)),
    )
}

/// `plan` of a state that does not exist yet: terraform's plan of the
/// whole configuration on an empty state, nothing locked, nothing stored (a
/// plan never creates a state). With `-out`, the saved plan writes every
/// address it changes; applying it creates the state.
async fn plan_new(
    settings: &Settings,
    store: &Store,
    tf: &Terraform,
    name: &str,
    flags: &TfFlags,
) -> Result<Outcome> {
    let empty = State::empty(session::new_lineage()?);
    let dir = run_dir(settings, flags, &empty)?;
    dir.ensure_state(&empty)?;
    prepare(&dir, tf, store).await?;
    let mut plan = dir.command(tf).args(["plan", "-lock=false"]).user_facing();
    if flags.destroy {
        plan = plan.arg("-destroy");
    }
    if let Some(out) = &flags.out {
        let private = final_plan(&dir).display().to_string();
        plan = plan.arg(format!("-out={private}")).rewrite(Rewrite {
            saved_plan: Some((private, Some(out.clone()))),
            ..Rewrite::default()
        });
    }
    let done = plan
        .args(flags.pass(&["out", "destroy"]))
        .interactive(true)
        .run()
        .await?;
    if flags.verify || settings.sample_verify() {
        settings
            .ui
            .info("Verify: no state yet, so this was terraform's plan of the whole configuration.");
    }
    let saved = match &flags.out {
        Some(out) if done.code == 0 || (flags.detailed_exitcode && done.code == 2) => {
            let write =
                verify::planned_changes(tf, settings.discovery_oracle, &dir, &final_plan(&dir))
                    .await?;
            let cs = ChangeSet {
                changed: write.clone(),
                write,
                read: Vec::new(),
                new: 0,
                targets: Vec::new(),
                untargeted: true,
                outputs_only: false,
            };
            let path = settings.workdir.join(out);
            // The whole configuration is planned: its apply records every
            // block and root output as the first discovery baseline.
            let config = discover::plain_flags(flags)
                .then(|| {
                    let inputs = discover::inputs_of(settings, flags, tf, &dir);
                    crate::terraform::config::read(dir.root(), &inputs).ok()
                })
                .flatten();
            let baseline = config.map(|config| saved::Baseline {
                outputs: config.outputs.keys().cloned().collect(),
                config,
            });
            let plan = saved::Planned {
                snapshot: &empty,
                versions: Default::default(),
                cs: &cs,
                targeted: false,
                baseline,
            };
            saved::write(name, &plan, &dir, &path)?;
            Some((path, out.clone()))
        }
        _ => None,
    };
    Ok(Outcome::Ran {
        code: done.code,
        saved,
        written: None,
    })
}

fn ran(code: u8, written: Option<(String, PushReport)>) -> Outcome {
    Outcome::Ran {
        code,
        saved: None,
        written,
    }
}
