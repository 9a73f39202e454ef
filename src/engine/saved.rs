//! Saved plans: `stategraph plan -out=FILE` and `stategraph apply FILE`.
//!
//! A saved plan is a JSON bundle holding terraform's own plan file, the
//! state snapshot it was planned against, the cone, and the version of every
//! row the plan read or will write. `apply FILE` (possibly in another CI job,
//! on another machine sharing the database) locks the cone, and applies only
//! if none of those rows changed since; a change to unrelated rows does not
//! make the plan stale (terraform refuses on any serial change). The bundle
//! holds the state, so it holds secrets, like terraform's plan files: it is
//! written 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::baseline;
use super::change_set::ChangeSet;
use super::record::{Recording, Scope};
use super::refresh::final_plan;
use super::session::{create_state, find_state, prepare, Session};
use super::{Kind, Outcome};
use crate::db::store::Store;
use crate::settings::Settings;
use crate::terraform::config::Config;
use crate::terraform::{Output, Rewrite, RunDir, Terraform};
use crate::tfargs::TfFlags;
use crate::tfstate::{self, State};

/// The prefix of the private dir a saved plan is made in (random after it,
/// so not guessable in advance).
pub const DIR_PREFIX: &str = "stategraph-plan-";

/// Format version of the bundle.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Bundle {
    stategraph_plan: u32,
    state: String,
    lineage: String,
    serial: i64,
    write: Vec<String>,
    read: Vec<String>,
    /// Object key (address, or `ADDRESS deposed KEY`) -> (version, transaction).
    versions: BTreeMap<String, (i64, i64)>,
    /// The state terraform planned against (tfstate v4 JSON).
    snapshot: serde_json::Value,
    /// terraform's plan file, base64.
    terraform_plan: String,
    /// The private dir the plan was made in: terraform's plan records the
    /// state path, so the applying run recreates the same dir.
    workspace: String,
    /// stategraph gave the plan's `-target`s (the user gave none): its
    /// apply does not show terraform's warnings about them.
    #[serde(default = "targeted_by_default")]
    targeted: bool,
    /// The configuration as discovery read it at plan time, and the root
    /// outputs the plan evaluates: an applied plan records them as the
    /// discovery baseline of what it wrote, as `apply` does (absent where
    /// discovery read no configuration: `-target`, `-destroy`, ...).
    #[serde(default)]
    baseline: Option<Baseline>,
}

/// What a successful `apply FILE` records as converged.
#[derive(Serialize, Deserialize)]
pub struct Baseline {
    pub config: Config,
    pub outputs: Vec<String>,
}

/// Bundles written before `targeted` was recorded were targeted by stategraph
/// unless the user targeted.
fn targeted_by_default() -> bool {
    true
}

/// What a finished `plan -out` planned.
pub struct Planned<'a> {
    /// The state terraform planned against.
    pub snapshot: &'a State,
    /// The version of every row of the cone, as the plan read it (keyed
    /// like [`crate::db::store::Store::versions`]).
    pub versions: BTreeMap<String, (i64, i64)>,
    pub cs: &'a ChangeSet,
    /// Whether stategraph gave its `-target`s (the user gave none).
    pub targeted: bool,
    /// What its apply records as the discovery baseline, if anything.
    pub baseline: Option<Baseline>,
}

/// Writes the bundle of a finished `plan -out` of state `name` to `path`:
/// terraform's plan made in `dir`, and what [`Planned`] says.
pub fn write(name: &str, plan: &Planned<'_>, dir: &RunDir, path: &Path) -> Result<()> {
    let Planned {
        snapshot,
        cs,
        targeted,
        baseline,
        ..
    } = plan;
    let terraform_plan = final_plan(dir);
    let plan_bytes = std::fs::read(&terraform_plan)
        .with_context(|| format!("cannot read terraform's plan {}", terraform_plan.display()))?;
    let bundle = Bundle {
        stategraph_plan: FORMAT,
        state: name.to_owned(),
        lineage: snapshot.lineage.clone(),
        serial: snapshot.serial,
        write: cs.write.clone(),
        read: cs.read.clone(),
        versions: plan.versions.clone(),
        snapshot: serde_json::from_slice(&snapshot.to_json()).expect("our own JSON"),
        terraform_plan: base64::engine::general_purpose::STANDARD.encode(plan_bytes),
        workspace: dir.dir_name(),
        targeted: *targeted,
        baseline: baseline.as_ref().map(|b| Baseline {
            config: b.config.clone(),
            outputs: b.outputs.clone(),
        }),
    };
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write the saved plan {}", path.display()))?;
    serde_json::to_writer(&mut f, &bundle)?;
    f.flush()?;
    Ok(())
}

/// `stategraph apply FILE`: locks the plan's cone, refuses if a row it
/// read or writes changed since, applies terraform's plan and records the
/// result.
pub async fn apply(settings: &Settings, flags: &TfFlags, file: &str) -> Result<Outcome> {
    let path = settings.workdir.join(file);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the saved plan {}", path.display()))?;
    let bundle: Bundle = serde_json::from_slice(&bytes).map_err(|_| {
        anyhow!(
            "{file} is not a stategraph saved plan\n\n\
             Make one with `stategraph plan -out={file}` (a plan file of terraform alone cannot be \
             applied: it does not say which rows it read)."
        )
    })?;
    if bundle.stategraph_plan != FORMAT {
        bail!(
            "{file} is a saved plan of format {}, this stategraph reads format {FORMAT}",
            bundle.stategraph_plan
        );
    }
    let name = settings.state_name();
    if bundle.state != name {
        bail!(
            "{file} was planned for state \"{}\", not \"{name}\"\n\nGive --state {} to apply it.",
            bundle.state,
            bundle.state
        );
    }
    let tf = Terraform::discover(
        settings.terraform.as_deref(),
        &settings.database.hidden_env(),
    )?
    .with_ui(settings.ui);
    let store = crate::db::open(settings).await?;
    let state_id = match find_state(&store, settings, &name, Kind::Apply).await? {
        Some(id) => id,
        // Planned before the state existed (a plan creates none): the
        // state the plan was made against is created now, empty.
        None if bundle.serial == 0 && bundle.versions.is_empty() => {
            create_state(&store, settings, &name, bundle.lineage.clone()).await?
        }
        None => bail!("no state named \"{name}\": the saved plan cannot be applied"),
    };
    let command = format!("stategraph apply {file}");
    let session = Session::new(settings, store, (name, state_id), Kind::Apply, command);
    session.rescue_dead_runs().await;
    let lease = session
        .lease(&bundle.write, &bundle.read, flags.lock_timeout)
        .await?;
    let result = apply_locked(&session, &tf, &lease, &bundle, flags).await;
    let released = lease.release().await;
    let (code, report) = result?;
    released?;
    Ok(Outcome::Ran {
        code,
        saved: None,
        written: Some((session.name.clone(), report)),
    })
}

/// `stategraph show [-json] FILE` where FILE is a saved plan: terraform's
/// own `show` of the terraform plan inside it, in a private run dir holding
/// the state it was planned against (removed after). `args` are show's
/// arguments (after `show`); returns terraform's exit code, or `None` when
/// FILE is not a stategraph saved plan (terraform reads it itself then).
pub async fn show(
    settings: &Settings,
    tf: &Terraform,
    store: &Store,
    args: &[String],
) -> Result<Option<u8>> {
    let Ok(flags) = crate::tfargs::parse(args) else {
        return Ok(None);
    };
    let [file] = flags.positional.as_slice() else {
        return Ok(None);
    };
    let path = settings.workdir.join(file);
    // A stategraph plan is JSON; terraform's plan files are zip archives.
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    if bytes.first() != Some(&b'{') {
        return Ok(None);
    }
    let Ok(bundle) = serde_json::from_slice::<Bundle>(&bytes) else {
        return Ok(None);
    };
    if bundle.stategraph_plan != FORMAT {
        bail!(
            "{file} is a saved plan of format {}, this stategraph reads format {FORMAT}",
            bundle.stategraph_plan
        );
    }
    let snapshot = tfstate::parse(bundle.snapshot.to_string().as_bytes())
        .context("the saved plan's state snapshot is not valid")?;
    let dir = settings.layout().run_dir(&snapshot)?;
    prepare(&dir, tf, store).await?;
    let plan_file = write_terraform_plan(&dir, &bundle)?;
    let done = dir
        .command(tf)
        .arg("show")
        .args(flags.pass(&[]))
        .arg(&plan_file)
        .run()
        .await?;
    Ok(Some(done.code))
}

/// Writes the terraform plan a bundle holds into `dir` (0600); its path.
fn write_terraform_plan(dir: &RunDir, bundle: &Bundle) -> Result<std::path::PathBuf> {
    let plan_file = dir.plan_path("saved");
    let plan_bytes = base64::engine::general_purpose::STANDARD
        .decode(&bundle.terraform_plan)
        .context("the saved plan's terraform plan is not valid base64")?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&plan_file)?;
    f.write_all(&plan_bytes)?;
    Ok(plan_file)
}

/// The part of `apply FILE` that runs under the lock; returns terraform's
/// exit code and what was written.
async fn apply_locked(
    session: &Session<'_>,
    tf: &Terraform,
    lease: &super::lease::Lease<'_>,
    bundle: &Bundle,
    flags: &TfFlags,
) -> Result<(u8, crate::db::store::PushReport)> {
    // Stale only if a row the plan read or writes changed.
    let addresses: Vec<String> = bundle.write.iter().chain(&bundle.read).cloned().collect();
    let changed = session.stale_rows(&addresses, &bundle.versions).await?;
    if !changed.is_empty() {
        let lines = session
            .describe_changes(&changed, "removed since the plan")
            .await?;
        bail!(
            "Saved plan is stale\n\n\
             Resources this plan read or changes were changed since it was made:\n{}\n\n\
             Make a new plan with `stategraph plan -out=...`.",
            lines.join("\n")
        );
    }

    let snapshot = tfstate::parse(bundle.snapshot.to_string().as_bytes())
        .context("the saved plan's state snapshot is not valid")?;
    if !bundle.workspace.starts_with(DIR_PREFIX) || bundle.workspace.contains('/') {
        bail!(
            "the saved plan names an unexpected private directory {:?}",
            bundle.workspace
        );
    }
    let layout = session.settings.layout();
    let dir = layout
        .named_run_dir(&snapshot, &bundle.workspace)
        .with_context(|| {
            format!(
                "cannot recreate the saved plan's private directory {} (is the plan being applied twice at once?)",
                layout.temp_dir.join(&bundle.workspace).display()
            )
        })?;
    prepare(&dir, tf, &session.store).await?;
    let plan_file = write_terraform_plan(&dir, bundle)?;
    let recording = Recording {
        session,
        holder: lease.holder(),
        before: &snapshot,
        scope: Scope {
            write: &bundle.write,
            read: &bundle.read,
            changed: &[],
            provisioned: &[],
        },
    };
    let begun = recording.begin().await?;
    let apply = dir
        .command(tf)
        .args(["apply", "-lock=false"])
        .args(flags.pass(&["auto-approve"]))
        .arg(&plan_file)
        .stdout(Output::Inherit)
        .rewrite(Rewrite {
            targeting: bundle.targeted,
            ..Rewrite::default()
        })
        .stop_on(lease.lost());
    let done = recording.run_with_checkpoints(&begun, &dir, apply).await?;
    let report = recording.finish(Some(&begun), &dir).await?;
    if let (Some(b), true) = (&bundle.baseline, done.success()) {
        // The applied blocks' rows are what the planned configuration
        // says, as after `apply`. Best effort: without it the next plan
        // compares those blocks again (or, with no baseline at all, plans
        // the whole configuration).
        if let Ok(after) = dir.read_state() {
            let write = bundle.write.iter().map(String::as_str);
            let mut entries = baseline::converged(&b.config, &after, write, true);
            entries.extend(baseline::outputs_converged(
                &b.config,
                b.outputs.iter().map(String::as_str),
            ));
            let _ = session.store.put_baseline(session.state_id, &entries).await;
        }
    }
    Ok((done.code, report))
}
