//! Recording what terraform writes while a run holds its locks: the run's
//! transaction opened before terraform starts writing, checkpoints merged
//! while it applies, the final merge retried while the database is
//! unreachable, and a private recovery file (finished later with
//! `stategraph recover FILE`) when the result cannot be written.
//!
//! Every state-writing path (apply, destroy, saved-plan apply, taint/import/
//! state mv ...) goes through [`Recording`], so each gets the same
//! guarantees: what terraform finished is in PostgreSQL or in a recovery
//! file, never only in a private temp dir.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::db::locks::Holder;
use crate::db::store::{Begin, Merge, PushReport, Store, StoreError};
use crate::settings::Settings;
use crate::terraform::workspace::Workspace;
use crate::terraform::{Finished, Run, TerraformError};
use crate::tfstate::{self, State};

use super::run::{Kind, Scope};

/// How often the state file terraform writes is looked at during an apply.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// First and longest pause between attempts to reach the database.
const RETRY_START: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// What a recovery file says it is.
pub const RECOVERY_FORMAT: &str = "stategraph-recovery";
const RECOVERY_VERSION: u32 = 1;

/// One run's writes to one state under one lock holder.
pub(super) struct Recording<'a> {
    pub store: &'a Store,
    pub settings: &'a Settings,
    pub name: &'a str,
    pub holder: &'a Holder,
    /// The state handed to terraform.
    pub before: &'a State,
    pub scope: Scope<'a>,
    pub command: &'a str,
    pub kind: Kind,
}

/// A run's open transaction.
pub(super) struct Begun {
    pub txn_id: i64,
    /// Version and writing transaction of each write-set object when it
    /// began (see [`Store::versions`]): what `recover` checks against.
    versions: BTreeMap<String, (i64, i64)>,
}

/// Checkpoints taken during one terraform run.
#[derive(Default)]
struct Checkpoints {
    /// (modified time, length) of the state file last looked at.
    seen: Option<(SystemTime, u64)>,
    /// Serial of the state last merged.
    merged_serial: Option<i64>,
    recorded: u32,
    /// Set when checkpoints cannot go on (lock lost, refused merge).
    stopped: bool,
    warned_unreachable: bool,
}

impl<'a> Recording<'a> {
    /// Opens the run's transaction (status `running`, linked to the lock
    /// holder) right before terraform may write.
    pub async fn begin(&self) -> Result<Begun> {
        let txn_id = self
            .store
            .begin(&Begin {
                state_name: self.name,
                holder_id: self.holder.id,
                kind: self.kind.name(),
                command: self.command,
                actor: &self.settings.actor,
                cone: self.cone(),
                summary: json!({"changed_by_plan": self.scope.changed}),
            })
            .await
            .with_context(|| format!("cannot start the transaction in {}", self.store.display()))?;
        let versions = self.store.versions(self.name, self.scope.write).await?;
        Ok(Begun { txn_id, versions })
    }

    fn cone(&self) -> Value {
        json!({"write": self.scope.write, "read": self.scope.read})
    }

    /// Runs terraform (`run`, which writes the workspace's state file) and,
    /// while it runs, merges each new state it writes into the run's
    /// transaction, so that what it finished is recorded even if
    /// stategraph, terraform or the machine dies before the end.
    pub async fn run_with_checkpoints(
        &self,
        begun: &Begun,
        ws: &Workspace,
        run: Run,
    ) -> Result<Finished, TerraformError> {
        // If stategraph dies (SIGKILL), what terraform writes after the last
        // checkpoint stays in the private dir: this note lets a later run
        // turn it into a recovery file (see [`rescue_orphans`]).
        // The state handed to terraform is copied as it is (no second
        // serialization of a possibly large state), the note refers to it.
        let copied = std::fs::copy(ws.state_path(), ws.dir().join(BEFORE_FILE)).is_ok();
        if let (true, Ok(pending)) = (
            copied,
            self.recovery_file(
                Some(begun),
                Value::Null,
                Value::Null,
                "the run died before it finished".into(),
            ),
        ) {
            if let Ok(bytes) = serde_json::to_vec(&pending) {
                let _ = write_private(&ws.dir().join(PENDING_FILE), &bytes);
            }
        }
        let mut checkpoints = Checkpoints::default();
        if let Ok(meta) = std::fs::metadata(ws.state_path()) {
            checkpoints.seen = meta.modified().ok().map(|m| (m, meta.len()));
        }
        let run = run.run();
        tokio::pin!(run);
        loop {
            tokio::select! {
                done = &mut run => return done,
                _ = tokio::time::sleep(CHECKPOINT_EVERY), if !checkpoints.stopped => {
                    // Terraform goes on (and its signals are forwarded) while
                    // a checkpoint is written; it finishes before we return.
                    let step = self.checkpoint(begun, ws, &mut checkpoints);
                    tokio::pin!(step);
                    tokio::select! {
                        done = &mut run => {
                            step.await;
                            return done;
                        }
                        () = &mut step => {}
                    }
                }
            }
        }
    }

    async fn checkpoint(&self, begun: &Begun, ws: &Workspace, ck: &mut Checkpoints) {
        let Ok(meta) = std::fs::metadata(ws.state_path()) else {
            return;
        };
        let seen = meta.modified().ok().map(|m| (m, meta.len()));
        if seen.is_none() || seen == ck.seen {
            return;
        }
        // Terraform rewrites the file in place: a read may catch it half
        // written. Then try again at the next tick.
        let Ok(bytes) = std::fs::read(ws.state_path()) else {
            return;
        };
        let Ok(state) = tfstate::parse(&bytes) else {
            return;
        };
        ck.seen = seen;
        if ck.merged_serial == Some(state.serial) || state.serial == self.before.serial {
            return;
        }
        match self.merge(&state, Some(begun), false).await {
            Ok(_) => {
                ck.merged_serial = Some(state.serial);
                ck.recorded += 1;
            }
            Err(e) if e.is_unreachable() => {
                if !std::mem::replace(&mut ck.warned_unreachable, true) {
                    self.settings.ui.warn(format!(
                        "cannot record progress in {}: the database is unreachable ({e}); \
                         terraform goes on, and its result will be written when the database is back",
                        self.store.display()
                    ));
                }
                // Look at this file again next time.
                ck.seen = None;
            }
            Err(e) => {
                ck.stopped = true;
                self.settings.ui.warn(format!(
                    "progress is no longer recorded during this apply: {e}"
                ));
            }
        }
    }

    /// Merges the state terraform wrote into the stored state (write-set
    /// rows and allowed outputs only), fenced by the lock holder's lease.
    pub async fn merge(
        &self,
        after: &State,
        begun: Option<&Begun>,
        finish: bool,
    ) -> Result<PushReport, StoreError> {
        self.merge_as(self.holder.id, after, begun, finish).await
    }

    async fn merge_as(
        &self,
        holder_id: i64,
        after: &State,
        begun: Option<&Begun>,
        finish: bool,
    ) -> Result<PushReport, StoreError> {
        // Data sources are read afresh by every run that needs them and hold
        // no managed object: what terraform read is written without an
        // exclusive lock (the last reader wins), so that a widely used data
        // source does not pull every resource depending on it into every
        // cone.
        let mut write_set = self.scope.write.to_vec();
        write_set.extend(changed_data_sources(self.before, after));
        let m = Merge {
            state_name: self.name,
            holder_id: Some(holder_id),
            write_set: &write_set,
            outputs: self.scope.outputs,
            before: self.before,
            after,
            kind: self.kind.name(),
            command: self.command,
            actor: &self.settings.actor,
            cone: self.cone(),
            started_at: Some(self.holder.acquired_at),
            summary: json!({"changed_by_plan": self.scope.changed}),
            txn_id: begun.map(|b| b.txn_id),
            finish,
        };
        self.store.merge(&m).await
    }

    /// Writes terraform's final state: retried with backoff while the
    /// database is unreachable (up to `STATEGRAPH_DB_RETRY`); kept in a
    /// private recovery file if it cannot be written, with the command that
    /// finishes the job.
    pub async fn finish(&self, begun: Option<&Begun>, ws: &Workspace) -> Result<PushReport> {
        let after = ws.read_state()?;
        self.finish_with(begun, after).await
    }

    async fn finish_with(&self, begun: Option<&Begun>, after: State) -> Result<PushReport> {
        let ui = self.settings.ui;
        let started = Instant::now();
        let mut pause = RETRY_START;
        let mut step: Option<crate::ui::Step> = None;
        let mut relocked = false;
        let error = loop {
            match self.merge(&after, begun, true).await {
                Ok(report) => {
                    if let Some(step) = step {
                        step.done("written");
                    }
                    return Ok(report);
                }
                Err(e) if e.is_unreachable() && started.elapsed() < self.settings.db_retry => {
                    let left = self.settings.db_retry.saturating_sub(started.elapsed());
                    let detail = format!(
                        "database unreachable ({e}); trying again for {}",
                        crate::ui::duration(left)
                    );
                    match &step {
                        Some(s) => s.progress(&detail),
                        None => {
                            let s = ui.step(format!(
                                "Writing terraform's result to {}",
                                self.store.display()
                            ));
                            s.progress(&detail);
                            if !ui.is_fancy() {
                                ui.info(format!(
                                    "stategraph: the database {} is unreachable ({e}); trying again for up to {}",
                                    self.store.display(),
                                    crate::ui::duration(self.settings.db_retry)
                                ));
                            }
                            step = Some(s);
                        }
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(StoreError::LeaseLost { .. }) if !relocked => {
                    // The lease ran out (a long outage): if nobody took the
                    // locks meanwhile and nothing changed, lock again and write.
                    relocked = true;
                    match self.relock_and_merge(begun, &after).await {
                        Some(report) => {
                            if let Some(step) = step {
                                step.done("written");
                            }
                            return Ok(report);
                        }
                        None => continue,
                    }
                }
                Err(e) => break e,
            }
        };
        if let Some(step) = step {
            step.fail();
        }
        let file = self.recovery_file(
            begun,
            state_value(self.before)?,
            state_value(&after)?,
            error.to_string(),
        )?;
        let kept = file.keep(self.settings)?;
        let next = match &error {
            StoreError::OutsideWriteSet { .. } | StoreError::LineageChanged { .. } => format!(
                "Keep this file: it is the only record of what terraform just applied. \
                 `stategraph recover {}` writes it once the cause is fixed.",
                kept.display()
            ),
            _ => format!(
                "Keep this file: it is the only record of what terraform just applied. Once the \
                 database is reachable, finish with:\n\n    stategraph recover {}\n\n\
                 It writes the result if nobody changed those resources since, and otherwise \
                 refuses and keeps the file.",
                kept.display()
            ),
        };
        Err(anyhow!(error).context(format!(
            "the result of terraform was not written to state \"{}\" in {}; it is kept in {}\n\n{next}",
            self.name,
            self.store.display(),
            kept.display()
        )))
    }
}

impl Recording<'_> {
    /// After the lease ran out: takes the same locks again (never waiting)
    /// and writes the result if every write-set object is as the run found
    /// it or as its own checkpoints left it. `None` if that cannot be done;
    /// the caller then keeps the result in a recovery file.
    async fn relock_and_merge(&self, begun: Option<&Begun>, after: &State) -> Option<PushReport> {
        let begun = begun?;
        let request = crate::db::locks::LockRequest {
            state_id: self.holder.state_id,
            exclusive: self.scope.write,
            shared: self.scope.read,
            command: self.command,
            actor: &self.settings.actor,
            lease: self.settings.lock_lease,
            txn_id: None,
        };
        let holder = self.store.try_lock(&request).await.ok()?;
        let outcome = async {
            let now = self
                .store
                .versions(self.name, self.scope.write)
                .await
                .ok()?;
            let removed = self
                .store
                .removed_by(self.name, self.scope.write)
                .await
                .ok()?;
            if !changed_since(&begun.versions, Some(begun.txn_id), &now, &removed, after).is_empty()
            {
                return None;
            }
            self.merge_as(holder.id, after, None, true).await.ok()
        }
        .await;
        let _ = self.store.release(holder.id).await;
        if outcome.is_some() {
            self.settings.ui.info(format!(
                "stategraph: the lock's lease ran out while the database was unreachable; \
                 nobody had taken it or changed those resources, so they were locked again \
                 (lock {}) and the result written",
                holder.id
            ));
        }
        outcome
    }

    fn recovery_file(
        &self,
        begun: Option<&Begun>,
        before: Value,
        after: Value,
        error: String,
    ) -> Result<RecoveryFile> {
        Ok(RecoveryFile {
            format: RECOVERY_FORMAT.to_owned(),
            version: RECOVERY_VERSION,
            state: self.name.to_owned(),
            database: self.store.display().to_owned(),
            holder_id: self.holder.id,
            txn_id: begun.map(|b| b.txn_id),
            kind: self.kind.name().to_owned(),
            command: self.command.to_owned(),
            write: self.scope.write.to_vec(),
            read: self.scope.read.to_vec(),
            outputs: self.scope.outputs.to_vec(),
            changed: self.scope.changed.to_vec(),
            versions: begun.map(|b| b.versions.clone()).unwrap_or_default(),
            error,
            before,
            after,
        })
    }
}

/// The note a run leaves in its private dir while terraform applies.
const PENDING_FILE: &str = "pending-recovery.json";
/// The copy of the state handed to terraform the note refers to.
const BEFORE_FILE: &str = "before.tfstate";

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Removes the private dirs of runs that died (SIGKILL, a lost machine)
/// without removing them: they hold state, hence secrets. When one was
/// applying against `database` and its terraform wrote a state, that state
/// becomes a recovery file first; returns a line about each one kept.
pub(super) fn rescue_orphans(settings: &Settings, database: &str) -> Vec<String> {
    let mut said = Vec::new();
    for dir in crate::terraform::workspace::orphans() {
        let pending = std::fs::read(dir.join(PENDING_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<RecoveryFile>(&b).ok());
        if let Some(mut file) = pending {
            if file.database != database {
                continue; // a run against another database: its own runs rescue it
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
                let (Ok(before), Ok(after)) = (state_value(&before), state_value(&after)) else {
                    continue;
                };
                file.before = before;
                file.after = after;
                file.error = "the run died while terraform applied; this is the last state its \
                              terraform wrote"
                    .to_owned();
                match file.keep(settings) {
                    Ok(path) => said.push(format!(
                        "a run that died (`{}`, state \"{}\") left the last state its terraform \
                         wrote, which may hold more than that run had recorded. It is kept in {}; \
                         `stategraph recover {}` writes it if nobody changed those resources since.",
                        file.command,
                        file.state,
                        path.display(),
                        path.display()
                    )),
                    Err(_) => continue, // keep the dir rather than lose it
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    said
}

fn state_value(state: &State) -> Result<Value> {
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
    pub outputs: Vec<String>,
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
        if value.get("format").and_then(Value::as_str) != Some(RECOVERY_FORMAT) {
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
        if file.version != RECOVERY_VERSION {
            anyhow::bail!(
                "{} is a recovery file of version {}; this stategraph reads version {RECOVERY_VERSION}",
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

    /// Writes it to a new private file under the data directory (or the
    /// system temp dir when that is not writable).
    fn keep(&self, settings: &Settings) -> Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut dir = settings.embedded.data_dir.join("recovery");
        let private_dir = |d: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
        };
        if private_dir(&dir).is_err() {
            dir = std::env::temp_dir()
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

/// Addresses of data-source instances whose objects differ between `before` and `after`.
pub(super) fn changed_data_sources(before: &State, after: &State) -> Vec<String> {
    let objects = |s: &State| -> HashMap<String, crate::tfstate::Instance> {
        let mut out = HashMap::new();
        for r in s.resources.iter().filter(|r| r.mode == "data") {
            let raddr = r.address();
            for i in &r.instances {
                out.insert(i.address(&raddr), i.clone());
            }
        }
        out
    };
    let (b, a) = (objects(before), objects(after));
    let mut changed: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    changed.sort();
    changed
}

/// Objects of the write set that someone other than the recorded run wrote
/// since it began: `(key, transaction now, or None if removed)`.
pub(super) fn conflicts(
    file: &RecoveryFile,
    now: &BTreeMap<String, (i64, i64)>,
    removed_by: &BTreeMap<String, i64>,
    after: &State,
) -> Vec<(String, Option<i64>)> {
    changed_since(&file.versions, file.txn_id, now, removed_by, after)
}

/// Objects whose (version, transaction) is no longer `then`, other than by
/// the run's own transaction `own` or by a removal the run also made.
fn changed_since(
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
