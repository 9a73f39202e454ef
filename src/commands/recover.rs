//! `stategraph recover FILE`: writes the result a run could not write (see
//! [`super::record`]), if nobody changed its write set since; otherwise
//! refuses, names what changed, and keeps the file.

use anyhow::{anyhow, bail, Context, Result};

use super::record::{conflicts, Recording, RecoveryFile};
use super::run::{acquire, Kind, Scope};
use super::saved::describe_changes;
use crate::cli::RecoverArgs;
use crate::db;
use crate::db::locks::LockRequest;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &RecoverArgs) -> Result<()> {
    let ui = settings.ui;
    let timeout = crate::tfargs::parse_duration(&args.lock_timeout).ok_or_else(|| {
        anyhow!(
            "--lock-timeout {:?} is not a duration (e.g. 0s, 30s, 5m)",
            args.lock_timeout
        )
    })?;
    let path = &args.file;
    let file = RecoveryFile::read(path)?;
    let (before, after) = file.states()?;
    let store = db::open(settings).await?;
    let name = file.state.as_str();
    let state_id = store.state_id(name).await?.ok_or_else(|| {
        anyhow!(
            "no state named \"{name}\" in {} (the file was written for {}); the file is kept",
            store.display(),
            file.database
        )
    })?;

    // The run that wrote the file has ended: its locks, if its lease has
    // not run out yet, go now.
    if store.release(file.holder_id).await? {
        ui.info(format!(
            "Freed lock {} of the run that wrote this file ({}).",
            file.holder_id, file.command
        ));
    }
    let command = format!("stategraph recover {}", path.display());
    let request = LockRequest {
        state_id,
        exclusive: &file.write,
        shared: &file.read,
        command: &command,
        actor: &settings.actor,
        lease: settings.lock_lease,
        txn_id: None,
    };
    let (holder, held, heartbeat) = acquire(&store, settings, &request, timeout)
        .await
        .with_context(|| format!("nothing was written; the file is kept: {}", path.display()))?;

    // Fencing by versions: every object of the write set must be as the run
    // found it (or as its own checkpoints left it).
    let now = store.versions(name, &file.write).await?;
    let removed_by = store.removed_by(name, &file.write).await?;
    let changed = conflicts(&file, &now, &removed_by, &after);
    if !changed.is_empty() {
        heartbeat.stop().await;
        held.release().await?;
        let lines = describe_changes(&store, name, &changed, "removed since").await?;
        bail!(
            "cannot recover: resources of this run were changed since it ran\n{}\n\n\
             Nothing was written and the file is kept: {}\n\
             Writing it now would undo those changes. Compare it with `stategraph state pull` \
             and decide what the state should hold; `stategraph plan` shows how the real \
             resources differ.",
            lines.join("\n"),
            path.display()
        );
    }

    let recording = Recording {
        store: &store,
        settings,
        name,
        holder: &holder,
        before: &before,
        scope: Scope {
            write: &file.write,
            read: &file.read,
            outputs: &file.outputs,
            changed: &file.changed,
        },
        command: &command,
        kind: Kind::Recover,
    };
    let written = recording.merge(&after, None, true).await;
    heartbeat.stop().await;
    let released = held.release().await;
    let report = written.with_context(|| {
        format!(
            "cannot write the recovery file to state \"{name}\" in {}; the file is kept: {}",
            store.display(),
            path.display()
        )
    })?;
    released?;
    std::fs::remove_file(path)
        .with_context(|| format!("written, but cannot remove {}", path.display()))?;
    ui.info(format!(
        "stategraph: recovered: transaction {} wrote {} added, {} changed, {} removed to state \
         \"{name}\" (the result of `{}`); removed {}",
        report.txn_id,
        report.added,
        report.changed,
        report.removed,
        file.command,
        path.display()
    ));
    Ok(())
}
