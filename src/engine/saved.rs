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

use super::record::Recording;
use super::run::{acquire, Kind, Scope};
use crate::db::locks::LockRequest;
use crate::db::store::Store;
use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::workspace::Workspace;
use crate::terraform::{Output, Terraform};
use crate::tfargs::TfFlags;
use crate::tfstate::{self, State};

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
    outputs: Vec<String>,
    /// Object key (address, or `ADDRESS deposed KEY`) -> (version, transaction).
    versions: BTreeMap<String, (i64, i64)>,
    /// The state terraform planned against (tfstate v4 JSON).
    snapshot: serde_json::Value,
    /// terraform's plan file, base64.
    terraform_plan: String,
    /// The private dir the plan was made in: terraform's plan records the
    /// state path, so the applying run recreates the same dir.
    workspace: String,
}

/// Writes the bundle of a finished `plan -out`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write(
    store: &Store,
    name: &str,
    snapshot: &State,
    write: &[String],
    read: &[String],
    outputs: &[String],
    terraform_plan: &Path,
    workspace: &str,
    path: &Path,
) -> Result<()> {
    let plan_bytes = std::fs::read(terraform_plan)
        .with_context(|| format!("cannot read terraform's plan {}", terraform_plan.display()))?;
    let addresses: Vec<String> = write.iter().chain(read).cloned().collect();
    let bundle = Bundle {
        stategraph_plan: FORMAT,
        state: name.to_owned(),
        lineage: snapshot.lineage.clone(),
        serial: snapshot.serial,
        write: write.to_vec(),
        read: read.to_vec(),
        outputs: outputs.to_vec(),
        versions: store.versions(name, &addresses).await?,
        snapshot: serde_json::from_slice(&snapshot.to_json()).expect("our own JSON"),
        terraform_plan: base64::engine::general_purpose::STANDARD.encode(plan_bytes),
        workspace: workspace.to_owned(),
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

/// `stategraph apply FILE`.
pub(super) async fn apply(settings: &Settings, flags: &TfFlags, file: &str) -> Result<()> {
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
    let ui = settings.ui;
    let tf = Terraform::discover(settings.terraform.as_deref())?.with_ui(ui);
    let store = crate::db::open(settings).await?;
    let state_id = store
        .state_id(&name)
        .await?
        .ok_or_else(|| anyhow!("no state named \"{name}\": the saved plan cannot be applied"))?;
    let command = format!("stategraph apply {file}");

    let request = LockRequest {
        state_id,
        exclusive: &bundle.write,
        shared: &bundle.read,
        command: &command,
        actor: &settings.actor,
        lease: settings.lock_lease,
        txn_id: None,
    };
    let (holder, held, heartbeat) = acquire(&store, settings, &request, flags.lock_timeout).await?;

    let result = apply_locked(
        settings, &tf, &store, &name, &holder, &bundle, flags, &command,
    )
    .await;
    heartbeat.stop().await;
    let released = held.release().await;
    let code = result?;
    released?;
    match code {
        0 => Ok(()),
        code => Err(Exit(code).into()),
    }
}

/// One line per changed row, `  KEY: changed by transaction N (who, command,
/// when)`, or `gone` when the row no longer exists.
pub(super) async fn describe_changes(
    store: &Store,
    name: &str,
    changed: &[(String, Option<i64>)],
    gone: &str,
) -> Result<Vec<String>> {
    let log = store.log(Some(name), 500).await?;
    Ok(changed
        .iter()
        .map(|(key, txn)| {
            let by = txn.and_then(|t| log.iter().find(|e| e.id == t)).map(|e| {
                format!(
                    "changed by transaction {} ({}@{}, {}, {})",
                    e.id,
                    e.user,
                    e.host,
                    e.command,
                    e.started_at.format("%Y-%m-%d %H:%M:%S UTC")
                )
            });
            format!("  {key}: {}", by.unwrap_or_else(|| gone.to_owned()))
        })
        .collect())
}

/// The part of `apply FILE` that runs under the lock; returns terraform's exit code.
#[allow(clippy::too_many_arguments)]
async fn apply_locked(
    settings: &Settings,
    tf: &Terraform,
    store: &Store,
    name: &str,
    holder: &crate::db::locks::Holder,
    bundle: &Bundle,
    flags: &TfFlags,
    command: &str,
) -> Result<u8> {
    // Stale only if a row the plan read or writes changed.
    let addresses: Vec<String> = bundle.write.iter().chain(&bundle.read).cloned().collect();
    let now = store.versions(name, &addresses).await?;
    let mut changed: Vec<(String, Option<i64>)> = Vec::new();
    for key in bundle.versions.keys().chain(now.keys()) {
        let (then, current) = (bundle.versions.get(key), now.get(key));
        if then != current && !changed.iter().any(|(k, _)| k == key) {
            changed.push((key.clone(), current.map(|(_, txn)| *txn)));
        }
    }
    if !changed.is_empty() {
        let lines = describe_changes(store, name, &changed, "removed since the plan").await?;
        bail!(
            "Saved plan is stale\n\n\
             Resources this plan read or changes were changed since it was made:\n{}\n\n\
             Make a new plan with `stategraph plan -out=...`.",
            lines.join("\n")
        );
    }

    let snapshot = tfstate::parse(bundle.snapshot.to_string().as_bytes())
        .context("the saved plan's state snapshot is not valid")?;
    if !bundle.workspace.starts_with("stategraph-plan-") || bundle.workspace.contains('/') {
        bail!(
            "the saved plan names an unexpected private directory {:?}",
            bundle.workspace
        );
    }
    let ws = Workspace::new_named(&settings.workdir, &snapshot, &bundle.workspace).with_context(|| {
        format!(
            "cannot recreate the saved plan's private directory {} (is the plan being applied twice at once?)",
            std::env::temp_dir().join(&bundle.workspace).display()
        )
    })?;
    super::run::prepare(&ws, tf, store).await?;
    let plan_file = ws.plan_path("saved");
    let plan_bytes = base64::engine::general_purpose::STANDARD
        .decode(&bundle.terraform_plan)
        .context("the saved plan's terraform plan is not valid base64")?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&plan_file)?;
        f.write_all(&plan_bytes)?;
    }
    let passthrough: Vec<&String> = flags
        .passthrough
        .iter()
        .filter(|a| !matches!(a.as_str(), "-auto-approve" | "--auto-approve"))
        .collect();
    let recording = Recording {
        store,
        settings,
        name,
        holder,
        before: &snapshot,
        scope: Scope {
            write: &bundle.write,
            read: &bundle.read,
            outputs: &bundle.outputs,
            changed: &[],
        },
        command,
        kind: Kind::Apply,
    };
    let begun = recording.begin().await?;
    let run = ws
        .command(tf)
        .args(["apply", "-lock=false"])
        .args(passthrough)
        .arg(&plan_file)
        .stdout(Output::Inherit);
    let done = recording.run_with_checkpoints(&begun, &ws, run).await?;
    let report = recording.finish(Some(&begun), &ws).await?;
    settings.ui.info(format!(
        "stategraph: transaction {} wrote {} added, {} changed, {} removed to state \"{name}\"",
        report.txn_id, report.added, report.changed, report.removed
    ));
    Ok(done.code)
}
