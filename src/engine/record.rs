//! Recording what terraform writes while a run holds its locks: the run's
//! transaction opened before terraform starts writing, checkpoints merged
//! while it applies, the final merge retried while the database is
//! unreachable, and a private [`super::recovery`] file (finished later with
//! `stategraph recover FILE`) when the result cannot be written.
//!
//! Every state-writing path (apply, destroy, saved-plan apply, taint/import/
//! state mv ..., recover) goes through [`Recording`], so each gets the same
//! guarantees: what terraform finished is in PostgreSQL or in a recovery
//! file, never only in a private temp dir. Every write is fenced by the
//! lock holder's lease in the database ([`crate::db::locks`]). Rows
//! terraform wrote outside the write set are locked and written too where
//! they can be ([`Recording::merge`]): its result is never discarded (a
//! refreshed copy of a row nothing the run changes reads, which another
//! run holds or changed, is left to that run).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::recovery::{self, RecoveryFile};
use super::session::Session;
use crate::db::locks::Holder;
use crate::db::store::{Begin, Merge, PushReport, StoreError};
use crate::terraform::{Finished, Invocation, RunDir, TerraformError};
use crate::tfstate::{self, State};

/// What one run may write, and what it read.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub write: &'a [String],
    pub read: &'a [String],
    /// What its plan found changing (for the log).
    pub changed: &'a [String],
    /// Blocks (configuration addresses) with creation-time provisioners,
    /// where known: see [`Recording::provisional`].
    pub provisioned: &'a [String],
}

/// How often the state file terraform writes is looked at during an apply.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// First and longest pause between attempts to reach the database.
const RETRY_START: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One run's writes to one state under one lock holder.
pub struct Recording<'a> {
    pub session: &'a Session<'a>,
    pub holder: &'a Holder,
    /// The state handed to terraform.
    pub before: &'a State,
    pub scope: Scope<'a>,
}

/// A run's open transaction.
pub struct Begun {
    pub txn_id: i64,
    /// Version and writing transaction of each write-set object when it
    /// began (see [`crate::db::store::Store::versions`]): what `recover`
    /// checks against.
    pub versions: BTreeMap<String, (i64, i64)>,
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
        let s = self.session;
        let txn_id = s
            .store
            .begin(&Begin {
                state_name: &s.name,
                holder_id: self.holder.id,
                kind: s.kind.name(),
                command: &s.command,
                actor: &s.settings.actor,
                cone: self.cone(),
                summary: json!({"changed_by_plan": self.scope.changed}),
            })
            .await
            .with_context(|| format!("cannot start the transaction in {}", s.store.display()))?;
        let versions = s.store.versions(&s.name, self.scope.write).await?;
        Ok(Begun { txn_id, versions })
    }

    fn cone(&self) -> Value {
        json!({"write": self.scope.write, "read": self.scope.read})
    }

    /// Runs terraform (`apply`, which writes the run dir's state file) and,
    /// while it runs, merges each new state it writes into the run's
    /// transaction, so that what it finished is recorded even if
    /// stategraph, terraform or the machine dies before the end.
    pub async fn run_with_checkpoints(
        &self,
        begun: &Begun,
        dir: &RunDir,
        apply: Invocation,
    ) -> Result<Finished, TerraformError> {
        // If stategraph dies (SIGKILL), what terraform writes after the last
        // checkpoint stays in the private dir: this note lets a later run
        // turn it into a recovery file (see [`recovery::rescue_orphans`]).
        // The state handed to terraform is copied as it is (no second
        // serialization of a possibly large state), the note refers to it.
        if let Ok(pending) = self.recovery_file(
            Some(begun),
            Value::Null,
            Value::Null,
            "the run died before it finished".into(),
        ) {
            recovery::leave_note(dir, &pending);
        }
        let mut checkpoints = Checkpoints::default();
        if let Ok(meta) = std::fs::metadata(dir.state_path()) {
            checkpoints.seen = meta.modified().ok().map(|m| (m, meta.len()));
        }
        let run = apply.run();
        tokio::pin!(run);
        loop {
            tokio::select! {
                done = &mut run => return done,
                _ = tokio::time::sleep(CHECKPOINT_EVERY), if !checkpoints.stopped => {
                    // Terraform goes on (and its signals are forwarded) while
                    // a checkpoint is written; it finishes before we return.
                    let step = self.checkpoint(begun, dir, &mut checkpoints);
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

    async fn checkpoint(&self, begun: &Begun, dir: &RunDir, ck: &mut Checkpoints) {
        let Ok(meta) = std::fs::metadata(dir.state_path()) else {
            return;
        };
        let seen = meta.modified().ok().map(|m| (m, meta.len()));
        if seen.is_none() || seen == ck.seen {
            return;
        }
        // Terraform rewrites the file in place: a read may catch it half
        // written. Then try again at the next tick.
        let Ok(bytes) = std::fs::read(dir.state_path()) else {
            return;
        };
        let Ok(state) = tfstate::parse(&bytes) else {
            return;
        };
        ck.seen = seen;
        if ck.merged_serial == Some(state.serial) || state.serial == self.before.serial {
            return;
        }
        let state = self.provisional(state);
        match self.merge(&state, Some(begun), false).await {
            Ok(_) => {
                ck.merged_serial = Some(state.serial);
                ck.recorded += 1;
            }
            Err(e) if e.is_unreachable() => {
                if !std::mem::replace(&mut ck.warned_unreachable, true) {
                    self.session.ui.warn(format!(
                        "cannot record progress in {}: the database is unreachable ({e}); \
                         terraform goes on, and its result will be written when the database is back",
                        self.session.store.display()
                    ));
                }
                // Look at this file again next time.
                ck.seen = None;
            }
            Err(e) => {
                ck.stopped = true;
                self.session.ui.warn(format!(
                    "progress is no longer recorded during this apply: {e}"
                ));
            }
        }
    }

    /// `after`, a state terraform wrote while it applies, with the objects
    /// it created for blocks with creation-time provisioners marked
    /// tainted: terraform records a new object before its provisioners run,
    /// and marks it tainted if they fail. Until terraform's final state says
    /// otherwise, a checkpoint records such an object as terraform would
    /// leave it if the run died now.
    fn provisional(&self, mut after: State) -> State {
        if self.scope.provisioned.is_empty() {
            return after;
        }
        let ids: HashMap<String, Option<&serde_json::Value>> = self
            .before
            .resources
            .iter()
            .flat_map(|r| {
                let address = r.address();
                r.instances
                    .iter()
                    .filter(|i| i.deposed.is_none())
                    .map(move |i| {
                        let id = i.attributes.as_ref().and_then(|a| a.get("id"));
                        (i.address(&address), id)
                    })
            })
            .collect();
        for r in &mut after.resources {
            if !self.scope.provisioned.contains(&r.config_address()) {
                continue;
            }
            let address = r.address();
            for i in r.instances.iter_mut().filter(|i| i.deposed.is_none()) {
                let id = i.attributes.as_ref().and_then(|a| a.get("id"));
                let created = ids
                    .get(&i.address(&address))
                    .is_none_or(|before| *before != id);
                if created {
                    i.status = Some("tainted".to_owned());
                }
            }
        }
        after
    }

    /// Merges the state terraform wrote into the stored state (write-set
    /// rows and the root outputs terraform changed), fenced by the lock
    /// holder's lease.
    ///
    /// Terraform may have written rows outside the write set: a targeted
    /// run refreshes what the cone reads and writes back what changed
    /// outside terraform. Its result is never discarded for that: those
    /// rows are locked too (exclusive, never waiting) and, if nobody changed
    /// them since this run's snapshot, written with the rest. Only when they
    /// cannot be ([`StoreError::OutsideLocks`], naming them and why) is the
    /// result kept in a recovery file instead.
    ///
    /// Rows the cone does not read are different: terraform's targeted run
    /// refreshes a dependency resource in every module instance (another
    /// team's `base` beside this team's), though nothing this run writes
    /// reads them. Where another run holds such a row or changed it since
    /// this run's snapshot, that run's version stands and terraform's
    /// refreshed copy is left out (this run changed nothing there; a later
    /// refresh sees any drift again).
    pub async fn merge(
        &self,
        after: &State,
        begun: Option<&Begun>,
        finish: bool,
    ) -> Result<PushReport, StoreError> {
        let outside = match self
            .merge_as(self.holder.id, after, begun, finish, &[])
            .await
        {
            Err(StoreError::OutsideWriteSet { addresses }) => addresses,
            other => return other,
        };
        let cone_reads: std::collections::HashSet<&str> =
            self.scope.read.iter().map(String::as_str).collect();
        let (read, unread): (Vec<String>, Vec<String>) = outside
            .into_iter()
            .partition(|a| cone_reads.contains(a.as_str()));
        let mut left = self.lock_unread(&unread).await?;
        self.lock_outside(&read).await?;
        // Locked now: each must be as this run's snapshot had it (one read
        // of the stored rows for both kinds).
        let locked: Vec<String> = read
            .iter()
            .chain(unread.iter().filter(|a| !left.contains_key(*a)))
            .cloned()
            .collect();
        let changed = self.changed_since_snapshot(&locked, begun).await?;
        let changed_read: Vec<&String> = changed.iter().filter(|a| read.contains(a)).collect();
        if !changed_read.is_empty() {
            return Err(StoreError::OutsideLocks {
                addresses: read.clone(),
                why: format!(
                    "another run changed {} since this run's snapshot",
                    changed_read
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for a in changed {
            left.insert(a, "another run changed it since this run's snapshot".into());
        }
        let outside: Vec<String> = read
            .into_iter()
            .chain(unread.into_iter().filter(|a| !left.contains_key(a)))
            .collect();
        let without;
        let after = match left.is_empty() {
            true => after,
            false => {
                without = restored(after, self.before, &left);
                &without
            }
        };
        let report = self
            .merge_as(self.holder.id, after, begun, finish, &outside)
            .await?;
        if finish && !outside.is_empty() {
            self.session.ui.info(format!(
                "stategraph: terraform also wrote {}, outside the locked write set (a targeted \
                 run writes back what it refreshed of the cone's dependencies): locked and \
                 written with the rest",
                outside.join(", ")
            ));
        }
        if finish && !left.is_empty() {
            let named: Vec<String> = left.iter().map(|(a, why)| format!("{a} ({why})")).collect();
            self.session.ui.info(format!(
                "stategraph: terraform also refreshed {}, which nothing this run changes reads \
                 (its targeted run evaluates a dependency in every module instance): the stored \
                 version stands, terraform's refreshed copy was not written",
                named.join(", ")
            ));
        }
        Ok(report)
    }

    /// Locks `unread` (rows terraform wrote outside the write set that the
    /// cone does not read) for this run, never waiting, leaving out those
    /// others hold; returns those, each with why (see [`Recording::merge`]).
    async fn lock_unread(&self, unread: &[String]) -> Result<BTreeMap<String, String>, StoreError> {
        let s = self.session;
        let mut left: BTreeMap<String, String> = BTreeMap::new();
        let mut free: Vec<String> = unread.to_vec();
        while !free.is_empty() {
            match s.store.extend(self.holder.id, &free, &[]).await {
                Ok(()) => break,
                Err(crate::db::locks::LockError::Conflict(conflicts)) => {
                    for c in &conflicts {
                        for (a, _) in &c.addresses {
                            left.insert(a.clone(), format!("{} holds it", c.holder.who()));
                        }
                    }
                    let before = free.len();
                    free.retain(|a| !left.contains_key(a));
                    if free.len() == before {
                        // Held, but by nobody named: lock none of them.
                        for a in free.drain(..) {
                            left.insert(a, "it could not be locked".into());
                        }
                    }
                }
                Err(crate::db::locks::LockError::LeaseLost { .. }) => {
                    return Err(StoreError::LeaseLost {
                        name: s.name.clone(),
                    })
                }
                Err(e) => {
                    for a in free.drain(..) {
                        left.insert(a, format!("it could not be locked: {e}"));
                    }
                }
            }
        }
        Ok(left)
    }

    /// Locks `outside` (instances of the cone's read set terraform wrote)
    /// for this run, never waiting, all or none.
    async fn lock_outside(&self, outside: &[String]) -> Result<(), StoreError> {
        if outside.is_empty() {
            return Ok(());
        }
        let s = self.session;
        let refused = |why: String| StoreError::OutsideLocks {
            addresses: outside.to_vec(),
            why,
        };
        match s.store.extend(self.holder.id, outside, &[]).await {
            Ok(()) => {}
            Err(crate::db::locks::LockError::Conflict(conflicts)) => {
                return Err(refused(format!(
                    "another run holds {}:\n{}",
                    if outside.len() == 1 { "it" } else { "them" },
                    crate::db::locks::describe_conflicts(&conflicts)
                )));
            }
            Err(crate::db::locks::LockError::LeaseLost { .. }) => {
                return Err(StoreError::LeaseLost {
                    name: s.name.clone(),
                })
            }
            Err(e) => return Err(refused(format!("they could not be locked: {e}"))),
        }
        Ok(())
    }

    /// Of `addresses` (locked by this run), those whose stored objects are
    /// no longer what this run's snapshot had: rows this run's checkpoints
    /// wrote are its own.
    async fn changed_since_snapshot(
        &self,
        addresses: &[String],
        begun: Option<&Begun>,
    ) -> Result<Vec<String>, StoreError> {
        let s = self.session;
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let own = begun.map(|b| b.txn_id);
        let versions = s.store.versions(&s.name, addresses).await?;
        let others: Vec<String> = addresses
            .iter()
            .filter(|a| own.is_none() || versions.get(*a).map(|(_, txn)| *txn) != own)
            .cloned()
            .collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let stored = s
            .store
            .pull(&s.name)
            .await?
            .unwrap_or_else(|| State::empty(self.before.lineage.clone()));
        let (then, now) = (objects(self.before, &others), objects(&stored, &others));
        Ok(others
            .into_iter()
            .filter(|a| then.get(a) != now.get(a))
            .collect())
    }

    async fn merge_as(
        &self,
        holder_id: i64,
        after: &State,
        begun: Option<&Begun>,
        finish: bool,
        outside: &[String],
    ) -> Result<PushReport, StoreError> {
        // Data sources are read afresh by every run that needs them and hold
        // no managed object: what terraform read is written without an
        // exclusive lock (the last reader wins), so that a widely used data
        // source does not pull every resource depending on it into every
        // cone.
        let mut write_set = self.scope.write.to_vec();
        write_set.extend(outside.iter().cloned());
        write_set.extend(changed_data_sources(self.before, after));
        let s = self.session;
        let m = Merge {
            state_name: &s.name,
            holder_id: Some(holder_id),
            write_set: &write_set,
            before: self.before,
            after,
            kind: s.kind.name(),
            command: &s.command,
            actor: &s.settings.actor,
            cone: self.cone(),
            started_at: Some(self.holder.acquired_at),
            summary: json!({"changed_by_plan": self.scope.changed}),
            txn_id: begun.map(|b| b.txn_id),
            finish,
        };
        s.store.merge(&m).await
    }

    /// Writes terraform's final state: retried with backoff while the
    /// database is unreachable (up to `STATEGRAPH_DB_RETRY`); kept in a
    /// private recovery file if it cannot be written, with the command that
    /// finishes the job.
    pub async fn finish(&self, begun: Option<&Begun>, dir: &RunDir) -> Result<PushReport> {
        let after = dir.read_state()?;
        self.finish_with(begun, after).await
    }

    async fn finish_with(&self, begun: Option<&Begun>, after: State) -> Result<PushReport> {
        let (settings, store) = (self.session.settings, &self.session.store);
        let ui = self.session.ui;
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
                Err(e) if e.is_unreachable() && started.elapsed() < settings.db_retry => {
                    let left = settings.db_retry.saturating_sub(started.elapsed());
                    let detail = format!(
                        "database unreachable ({e}); trying again for {}",
                        crate::ui::duration(left)
                    );
                    match &step {
                        Some(s) => s.progress(&detail),
                        None => {
                            let s = ui
                                .step(format!("Writing terraform's result to {}", store.display()));
                            s.progress(&detail);
                            if !ui.is_fancy() {
                                ui.info(format!(
                                    "stategraph: the database {} is unreachable ({e}); trying again for up to {}",
                                    store.display(),
                                    crate::ui::duration(settings.db_retry)
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
            recovery::state_value(self.before)?,
            recovery::state_value(&after)?,
            error.to_string(),
        )?;
        let kept = file.keep(settings)?;
        let next = advice(&error, &kept, settings.ci);
        if let Some(begun) = begun {
            // The log keeps the run, failed, with what it did not write and
            // where that is (best effort: the database may be unreachable;
            // then the run shows as aborted, and `recover` marks it).
            let note = json!({
                "failed": error.to_string(),
                "recovery_file": kept.display().to_string(),
            });
            let _ = store
                .fail(begun.txn_id, self.before, &after, self.scope.write, note)
                .await;
        }
        Err(anyhow!(error).context(format!(
            "the result of terraform was not written to state \"{}\" in {}; it is kept in {}\n\n{next}",
            self.session.name,
            store.display(),
            kept.display()
        )))
    }
}

/// What to do with a recovery file, for the cause that made it.
fn advice(error: &StoreError, kept: &std::path::Path, ci: bool) -> String {
    let recover = format!("stategraph recover {}", kept.display());
    let mut out =
        String::from("Keep this file: it is the only record of what terraform just applied. ");
    out += &match error {
        e if e.is_unreachable() => format!(
            "Once the database is reachable, finish with:\n\n    {recover}\n\n\
             It writes the result if nobody changed those resources since, and otherwise \
             refuses and keeps the file."
        ),
        StoreError::LeaseLost { .. } => format!(
            "The lock on these resources was lost before the result was written, so another \
             run may have changed them since. `{recover}` writes the result if nobody did, and \
             otherwise refuses, names what changed and keeps the file."
        ),
        StoreError::OutsideLocks { .. } => format!(
            "Terraform also wrote rows this run could not lock (named below). `{recover}` \
             writes the whole result once nobody else holds them, if nobody changed them since."
        ),
        _ => format!(
            "The database is reachable but refused the write (the cause follows). `{recover}` \
             writes it once the cause is fixed."
        ),
    };
    if ci {
        out += &format!(
            "\n\nThis is a CI job: save {} as an artifact of the job before the runner is \
             thrown away (STATEGRAPH_RECOVERY_DIR chooses where recovery files go).",
            kept.display()
        );
    }
    out
}

impl Recording<'_> {
    /// After the lease ran out: takes the same locks again (never waiting)
    /// and writes the result if every write-set object is as the run found
    /// it or as its own checkpoints left it. `None` if that cannot be done;
    /// the caller then keeps the result in a recovery file.
    async fn relock_and_merge(&self, begun: Option<&Begun>, after: &State) -> Option<PushReport> {
        let begun = begun?;
        let s = self.session;
        let lease = s.try_lease(self.scope.write, self.scope.read).await?;
        let outcome = async {
            let now = s.store.versions(&s.name, self.scope.write).await.ok()?;
            let removed = s.store.removed_by(&s.name, self.scope.write).await.ok()?;
            let changed =
                recovery::changed_since(&begun.versions, Some(begun.txn_id), &now, &removed, after);
            if !changed.is_empty() {
                return None;
            }
            self.merge_as(lease.holder().id, after, None, true, &[])
                .await
                .ok()
        }
        .await;
        let id = lease.holder().id;
        let _ = lease.release().await;
        if outcome.is_some() {
            s.ui.info(format!(
                "stategraph: the lock's lease ran out while the database was unreachable; \
                 nobody had taken it or changed those resources, so they were locked again \
                 (lock {id}) and the result written"
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
        let s = self.session;
        Ok(RecoveryFile {
            format: recovery::FORMAT.to_owned(),
            version: recovery::VERSION,
            state: s.name.clone(),
            database: s.store.display().to_owned(),
            holder_id: self.holder.id,
            txn_id: begun.map(|b| b.txn_id),
            kind: s.kind.name().to_owned(),
            command: s.command.clone(),
            write: self.scope.write.to_vec(),
            read: self.scope.read.to_vec(),
            changed: self.scope.changed.to_vec(),
            versions: begun.map(|b| b.versions.clone()).unwrap_or_default(),
            error,
            before,
            after,
        })
    }
}

/// The objects (deposed ones too) of `addresses` in `state`, by address.
fn objects(state: &State, addresses: &[String]) -> HashMap<String, Vec<crate::tfstate::Instance>> {
    let mut out: HashMap<String, Vec<crate::tfstate::Instance>> = HashMap::new();
    for r in &state.resources {
        let raddr = r.address();
        for i in &r.instances {
            let a = i.address(&raddr);
            if addresses.contains(&a) {
                out.entry(a).or_default().push(i.clone());
            }
        }
    }
    for objects in out.values_mut() {
        objects.sort_by(|a, b| a.deposed.cmp(&b.deposed));
    }
    out
}

/// `after` with the objects of `addresses` as `before` had them (none where
/// it had none): terraform's refreshed copies of rows left to other runs.
fn restored(after: &State, before: &State, addresses: &BTreeMap<String, String>) -> State {
    let mut out = after.clone();
    for r in &mut out.resources {
        let raddr = r.address();
        r.instances
            .retain(|i| !addresses.contains_key(&i.address(&raddr)));
    }
    for r in &before.resources {
        let raddr = r.address();
        for i in r
            .instances
            .iter()
            .filter(|i| addresses.contains_key(&i.address(&raddr)))
        {
            let same = |o: &&mut crate::tfstate::Resource| {
                (&o.module, &o.mode, &o.type_, &o.name) == (&r.module, &r.mode, &r.type_, &r.name)
            };
            match out.resources.iter_mut().find(same) {
                Some(o) => o.instances.push(i.clone()),
                None => out.resources.push(crate::tfstate::Resource {
                    instances: vec![i.clone()],
                    ..r.clone()
                }),
            }
        }
    }
    out.sort();
    out
}

/// Addresses of data-source instances whose objects differ between `before` and `after`.
fn changed_data_sources(before: &State, after: &State) -> Vec<String> {
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
