//! Recovery files: what a run could not write to the database, kept in a
//! private file that `stategraph recover FILE` writes later, if nobody
//! changed those resources since; and the private dirs of runs that died
//! (SIGKILL, a lost machine), whose last state becomes such a file.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::{Recording, Scope};
use super::session::Session;
use super::Kind;
use crate::db::store::{PushReport, Store};
use crate::settings::Settings;
use crate::terraform::rundir::write_private;
use crate::terraform::rundir::Orphan;
use crate::terraform::RunDir;
use crate::tfstate::{self, State};

/// What a recovery file says it is.
pub const FORMAT: &str = "stategraph-recovery";
/// The version of the recovery file this stategraph writes and reads.
pub const VERSION: u32 = 1;

/// The note a run leaves in its private dir while terraform applies.
const PENDING_FILE: &str = "pending-recovery.json";
/// The copy of the state handed to terraform the note refers to.
const BEFORE_FILE: &str = "before.tfstate";

/// Leaves the note of a run that is about to let terraform apply in its
/// private dir: if stategraph dies (SIGKILL), what terraform writes after
/// the last checkpoint stays there, and this note lets a later run turn it
/// into a recovery file (see [`rescue_orphans`]). The state handed to
/// terraform is copied as it is (no second serialization of a possibly
/// large state); the note refers to it. Best effort.
pub fn leave_note(dir: &RunDir, pending: &RecoveryFile) {
    if std::fs::copy(dir.state_path(), dir.dir().join(BEFORE_FILE)).is_err() {
        return;
    }
    if let Ok(bytes) = serde_json::to_vec(pending) {
        let _ = write_private(&dir.dir().join(PENDING_FILE), &bytes);
    }
}

/// Where a run that holds locks says which (see [`note_locks`]).
const HOLDER_FILE: &str = "lock-holder.json";

/// Notes in the run dir which locks the run holds, from the moment it has
/// them: if the run dies (SIGKILL, say, at the approval prompt or while
/// terraform plans) before terraform writes anything, the next run of
/// this user frees them at once instead of waiting out their lease.
pub fn note_locks(dir: &RunDir, database: &str, holder_id: i64, state: &str, command: &str) {
    let note = serde_json::json!({
        "database": database,
        "holder_id": holder_id,
        "state": state,
        "command": command,
    });
    let _ = write_private(&dir.dir().join(HOLDER_FILE), note.to_string().as_bytes());
}

/// What [`free_noted_locks`] did.
enum Noted {
    /// The dead run noted no lock, or its lock is gone: its dir may go.
    Nothing,
    /// Its lock was freed (what to say).
    Freed(String),
    /// It ran against another database, or its lock could not be freed
    /// now: its dir stays for a run that can.
    Left,
}

/// Frees the locks a dead run noted with [`note_locks`] in `dir`.
async fn free_noted_locks(store: &Store, dir: &Path) -> Noted {
    let Ok(bytes) = std::fs::read(dir.join(HOLDER_FILE)) else {
        return Noted::Nothing;
    };
    let Ok(note) = serde_json::from_slice::<Value>(&bytes) else {
        return Noted::Nothing;
    };
    if note["database"].as_str() != Some(store.display()) {
        return Noted::Left;
    }
    let Some(holder) = note["holder_id"].as_i64() else {
        return Noted::Nothing;
    };
    match store.release(holder).await {
        Ok(true) => Noted::Freed(format!(
            "a run that died (`{}`, state \"{}\") held lock {holder}: freed, as it had not \
             begun to apply.",
            note["command"].as_str().unwrap_or_default(),
            note["state"].as_str().unwrap_or_default()
        )),
        Ok(false) => Noted::Nothing,
        Err(_) => Noted::Left,
    }
}

/// How long the next run waits for a dead run's terraform to stop (it got
/// its graceful stop when its stategraph died, and finishes what it was
/// doing) before it leaves that run's dir to a later run.
const DEAD_TERRAFORM_WAIT: Duration = Duration::from_secs(30);

/// Takes in what runs of this user that died (SIGKILL, a lost machine) left
/// in their private dirs, before this run plans over their resources:
/// waits (up to [`DEAD_TERRAFORM_WAIT`]) for a dead run's terraform to
/// stop; when that terraform wrote more than the run recorded, writes it
/// into the state if every row it wrote is still as the run left it (as
/// `stategraph recover` does), else keeps it in a recovery file; removes
/// the dirs (they hold state, hence secrets). Runs against another
/// database than `store`'s are left to their own. Returns a warning about
/// each run taken in or kept.
pub async fn rescue_orphans(settings: &Settings, store: &Store) -> Vec<String> {
    let mut said = Vec::new();
    for orphan in settings.layout().orphans() {
        let dir = &orphan.path;
        let pending = std::fs::read(dir.join(PENDING_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<RecoveryFile>(&b).ok());
        let Some(mut file) = pending else {
            if orphan.busy.is_empty() {
                // A run against another database is left to that
                // database's runs: its note is what frees its lock early.
                match free_noted_locks(store, dir).await {
                    Noted::Left => {}
                    Noted::Nothing => {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    Noted::Freed(what) => {
                        said.push(what);
                        let _ = std::fs::remove_dir_all(dir);
                    }
                }
            }
            continue;
        };
        if file.database != store.display() {
            continue; // a run against another database: its own runs rescue it
        }
        if !orphan.busy.is_empty() && !wait_for_stop(settings, &orphan, &file).await {
            said.push(format!(
                "the terraform of a run that died (`{}`, state \"{}\", pid {}) is still \
                 running after {}: it is finishing what it was doing when its stategraph died. \
                 What it writes is taken in by the first run after it stops.",
                file.command,
                file.state,
                orphan.busy[0],
                crate::ui::duration(DEAD_TERRAFORM_WAIT)
            ));
            continue;
        }
        // Terraform rewrites its state in place: if it stopped halfway
        // through, the previous snapshot is in the backup it keeps.
        let written = ["terraform.tfstate", "terraform.tfstate.backup"]
            .iter()
            .find_map(|f| tfstate::parse(&std::fs::read(dir.join(f)).ok()?).ok());
        let Some(before) = std::fs::read(dir.join(BEFORE_FILE))
            .ok()
            .and_then(|b| tfstate::parse(&b).ok())
        else {
            continue; // keep the dir rather than lose what it holds
        };
        if let Some(after) = written.filter(|s| s.serial != before.serial) {
            let (Ok(before_value), Ok(after_value)) = (state_value(&before), state_value(&after))
            else {
                continue;
            };
            file.before = before_value;
            file.after = after_value;
            file.error = "the run died while terraform applied; this is the last state its \
                          terraform wrote"
                .to_owned();
            match take_in(settings, store, &file, &before, &after).await {
                Ok(report) => said.push(format!(
                    "a run that died ({}`{}`, state \"{}\", writing {}) had applied more than \
                     its checkpoints recorded: the last state its terraform wrote is now in the \
                     state (transaction {}: {} added, {} changed, {} removed).",
                    file.txn_id
                        .map(|t| format!("transaction {t}, "))
                        .unwrap_or_default(),
                    file.command,
                    file.state,
                    shown(&file.write),
                    report.txn_id,
                    report.added,
                    report.changed,
                    report.removed
                )),
                Err(why) => match file.keep(settings) {
                    Ok(path) => said.push(format!(
                        "a run that died (`{}`, state \"{}\") left the last state its terraform \
                         wrote, which may hold more than that run had recorded, and it cannot be \
                         written now: {why:#}. It is kept in {}; `stategraph recover {}` writes \
                         it if nobody changed those resources since.",
                        file.command,
                        file.state,
                        path.display(),
                        path.display()
                    )),
                    Err(_) => continue, // keep the dir rather than lose it
                },
            }
        } else if let Ok(true) = store.release(file.holder_id).await {
            // Its terraform wrote nothing past the run's checkpoints, and
            // neither it nor its stategraph runs: its locks guard nothing.
            said.push(format!(
                "a run that died ({}`{}`, state \"{}\") held locks on {}: freed, as its \
                 terraform had written nothing past what the run recorded.",
                file.txn_id
                    .map(|t| format!("transaction {t}, "))
                    .unwrap_or_default(),
                file.command,
                file.state,
                shown(&file.write)
            ));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    said
}

/// Addresses for a message: the first ten, and how many more.
fn shown(addresses: &[String]) -> String {
    match addresses.len() {
        0..=10 => addresses.join(", "),
        n => format!("{} and {} more", addresses[..10].join(", "), n - 10),
    }
}

/// Waits for the processes still using a dead run's dir (its terraform,
/// stopping) to end; false if they still run after [`DEAD_TERRAFORM_WAIT`].
async fn wait_for_stop(settings: &Settings, orphan: &Orphan, file: &RecoveryFile) -> bool {
    let step = settings.ui.step(format!(
        "Waiting for the terraform of a run that died to stop (`{}`, pid {})",
        file.command, orphan.busy[0]
    ));
    let until = tokio::time::Instant::now() + DEAD_TERRAFORM_WAIT;
    loop {
        if orphan.still_busy().is_empty() {
            step.done("stopped");
            return true;
        }
        if tokio::time::Instant::now() >= until {
            step.done("still running");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes what a dead run's terraform wrote after its last checkpoint:
/// frees the dead run's locks (its process and its terraform are gone),
/// locks its cone again (never waiting), and merges `after` if no row of
/// its write set changed since the run began but by its own checkpoints.
async fn take_in(
    settings: &Settings,
    store: &Store,
    file: &RecoveryFile,
    before: &State,
    after: &State,
) -> Result<PushReport> {
    let id = store
        .state_id(&file.state)
        .await?
        .ok_or_else(|| anyhow!("no state named \"{}\"", file.state))?;
    store.release(file.holder_id).await?;
    let command = format!("stategraph recover (a run that died: {})", file.command);
    let session = Session::new(
        settings,
        store.clone(),
        (file.state.clone(), id),
        Kind::Recover,
        command,
    );
    let report = write_locked(&session, file, before, after, Duration::ZERO).await?;
    if let Some(dead) = file.txn_id {
        let _ = store.recovered(dead, report.txn_id).await;
    }
    Ok(report)
}

/// A state as a JSON value (what a recovery file holds).
pub fn state_value(state: &State) -> Result<Value> {
    serde_json::from_slice(&state.to_json()).context("cannot serialize the state")
}

/// What a run could not write: everything `stategraph recover` needs to
/// finish it, or to refuse precisely. Holds the state, so it is private.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecoveryFile {
    pub format: String,
    pub version: u32,
    /// The stored state's name, and the database it lives in (for messages).
    pub state: String,
    pub database: String,
    /// The lock holder of the run that wrote it, and its transaction.
    pub holder_id: i64,
    pub txn_id: Option<i64>,
    pub kind: String,
    pub command: String,
    pub write: Vec<String>,
    pub read: Vec<String>,
    pub changed: Vec<String>,
    /// Write-set objects' (version, transaction) when the run began.
    pub versions: BTreeMap<String, (i64, i64)>,
    /// Why it was not written.
    pub error: String,
    /// The state handed to terraform, and the one terraform wrote.
    pub before: Value,
    pub after: Value,
}

impl RecoveryFile {
    /// Reads and checks a recovery file.
    pub fn read(path: &Path) -> Result<RecoveryFile> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a stategraph recovery file (not JSON)",
                path.display()
            )
        })?;
        if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
            anyhow::bail!(
                "{} is not a stategraph recovery file{}",
                path.display(),
                if value.get("lineage").is_some() {
                    " (it is a terraform state: push it with `stategraph state push`)"
                } else {
                    ""
                }
            );
        }
        let file: RecoveryFile = serde_json::from_value(value)
            .with_context(|| format!("{} is a damaged recovery file", path.display()))?;
        if file.version != VERSION {
            anyhow::bail!(
                "{} is a recovery file of version {}; this stategraph reads version {VERSION}",
                path.display(),
                file.version
            );
        }
        Ok(file)
    }

    /// The states it holds.
    pub fn states(&self) -> Result<(State, State)> {
        let parse = |v: &Value, what: &str| {
            tfstate::parse(v.to_string().as_bytes())
                .with_context(|| format!("the recovery file's {what} state is not valid"))
        };
        Ok((parse(&self.before, "before")?, parse(&self.after, "after")?))
    }

    /// Writes it to a new private file in the recovery dir
    /// ([`Settings::recovery_dir`]; the system temp dir when that is not
    /// writable).
    pub fn keep(&self, settings: &Settings) -> Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut dir = settings.recovery_dir.clone();
        let private_dir = |d: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
        };
        if private_dir(&dir).is_err() {
            dir = settings
                .temp_dir
                .join(format!("stategraph-recovery-{}", nix::unistd::geteuid()));
            private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let path = dir.join(format!(
            "{}-{}.recovery.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let bytes =
            serde_json::to_vec_pretty(self).context("cannot serialize the recovery file")?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        Ok(path)
    }
}

/// Objects whose (version, transaction) is no longer `then`, other than by
/// the run's own transaction `own` or by a removal the run also made:
/// `(key, transaction now, or None if removed)`.
pub fn changed_since(
    then: &BTreeMap<String, (i64, i64)>,
    own: Option<i64>,
    now: &BTreeMap<String, (i64, i64)>,
    removed_by: &BTreeMap<String, i64>,
    after: &State,
) -> Vec<(String, Option<i64>)> {
    let in_after: HashSet<String> = after
        .resources
        .iter()
        .flat_map(|r| {
            let raddr = r.address();
            r.instances
                .iter()
                .map(move |i| match &i.deposed {
                    Some(d) => format!("{} deposed {d}", i.address(&raddr)),
                    None => i.address(&raddr),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    for key in keys {
        let (then, current) = (then.get(key), now.get(key));
        // Written or removed last by the run itself (a checkpoint).
        let ours = match current {
            Some((_, txn)) => Some(*txn) == own,
            None => removed_by.get(key).copied() == own && own.is_some(),
        };
        let gone_as_intended = current.is_none() && !in_after.contains(key);
        if then != current && !ours && !gone_as_intended {
            out.push((key.clone(), current.map(|(_, txn)| *txn)));
        }
    }
    out
}

/// What `stategraph recover FILE` wrote.
pub struct Recovered {
    pub state: String,
    pub report: PushReport,
    /// The command of the run that wrote the file.
    pub command: String,
}

/// Writes the result kept in the recovery file at `path`: frees the dead
/// run's locks, takes them again (waiting up to `timeout`), and writes the
/// file's write set if every object of it is as the run found it (or as
/// its own checkpoints left it); otherwise refuses, naming what changed.
/// The file is removed once written, and kept on any failure.
pub async fn recover(
    settings: &Settings,
    path: &Path,
    timeout: std::time::Duration,
) -> Result<Recovered> {
    let ui = settings.ui;
    let file = RecoveryFile::read(path)?;
    let (before, after) = file.states()?;
    let store = crate::db::open(settings).await?;
    let name = file.state.clone();
    let state_id = store.state_id(&name).await?.ok_or_else(|| {
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
    let session = Session::new(settings, store, (name, state_id), Kind::Recover, command);
    let report = write_locked(&session, &file, &before, &after, timeout)
        .await
        .with_context(|| {
            format!(
                "cannot recover: nothing was written, and the file is kept: {}",
                path.display()
            )
        })?;
    if let Some(failed) = file.txn_id {
        // Best effort: the log says which run this finished.
        let _ = session.store.recovered(failed, report.txn_id).await;
    }
    std::fs::remove_file(path)
        .with_context(|| format!("written, but cannot remove {}", path.display()))?;
    Ok(Recovered {
        state: session.name.clone(),
        report,
        command: file.command,
    })
}

/// Writes the result `file` holds (`before` and `after` are its states):
/// locks its cone (waiting up to `timeout`) and merges `after` into the
/// write set, if every object of it is as the run found it or as its own
/// checkpoints left it; otherwise refuses, naming what changed.
async fn write_locked(
    session: &Session<'_>,
    file: &RecoveryFile,
    before: &State,
    after: &State,
    timeout: Duration,
) -> Result<PushReport> {
    let lease = session.lease(&file.write, &file.read, timeout).await?;
    // Fencing by versions.
    let changed = conflicts(&session.store, &session.name, file, after).await?;
    if !changed.is_empty() {
        lease.release().await?;
        let lines = session.describe_changes(&changed, "removed since").await?;
        bail!(
            "resources of this run were changed since it ran\n{}\n\n\
             Writing its result now would undo those changes. Compare it with `stategraph \
             state pull` and decide what the state should hold; `stategraph plan` shows how \
             the real resources differ.",
            lines.join("\n")
        );
    }
    let recording = Recording {
        session,
        holder: lease.holder(),
        before,
        scope: Scope {
            write: &file.write,
            read: &file.read,
            changed: &file.changed,
            provisioned: &[],
        },
    };
    let written = recording.merge(after, None, true).await;
    let released = lease.release().await;
    let report = written.with_context(|| {
        format!(
            "cannot write it to state \"{}\" in {}",
            session.name,
            session.store.display()
        )
    })?;
    released?;
    Ok(report)
}

/// Objects of the file's write set that someone other than the recorded
/// run wrote since it began.
async fn conflicts(
    store: &Store,
    name: &str,
    file: &RecoveryFile,
    after: &State,
) -> Result<Vec<(String, Option<i64>)>> {
    let now = store.versions(name, &file.write).await?;
    let removed_by = store.removed_by(name, &file.write).await?;
    Ok(changed_since(
        &file.versions,
        file.txn_id,
        &now,
        &removed_by,
        after,
    ))
}
