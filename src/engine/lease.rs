//! The locks one run holds, as one guard: acquired (waiting, and showing
//! whom for), renewed in the background while held, released exactly once —
//! by [`Lease::release`] on the normal paths, by `Drop` on any early return,
//! so that an error never leaves locks behind until their lease runs out.
//!
//! Lock requests are built by [`super::session::Session::lease`]; the lock
//! tables and their fencing are [`crate::db::locks`]'s.

use anyhow::Result;

use crate::db::locks::{Conflict, DeadRun, Heartbeat, Holder, LockError, LockRequest, WHOLE_STATE};
use crate::db::store::Store;
use crate::ui::{thousands, Ui};

/// Locks held by this run.
pub struct Lease<'s> {
    store: &'s Store,
    holder: Holder,
    /// `None` once released.
    heartbeat: Option<Heartbeat>,
}

impl<'s> Lease<'s> {
    /// Takes the locks of `request`, waiting up to `timeout` for holders in
    /// the way (named on the spinner, or in a line each in CI), and warns
    /// about runs found dead holding locks.
    pub async fn acquire(
        store: &'s Store,
        ui: Ui,
        request: &LockRequest<'_>,
        timeout: std::time::Duration,
    ) -> Result<Lease<'s>> {
        // The state's own row (WHOLE_STATE) is no address of the subgraph:
        // held shared it is not counted; held exclusively, it is the state.
        let shared = request.shared.iter().filter(|a| *a != WHOLE_STATE).count();
        let step = ui.step(match request.exclusive.iter().any(|a| a == WHOLE_STATE) {
            true => "Locking the whole state".to_owned(),
            false => format!(
                "Locking subgraph ({} exclusive, {} shared)",
                thousands(request.exclusive.len()),
                thousands(shared)
            ),
        });
        let mut on_wait = |conflicts: &[Conflict]| {
            let who: Vec<String> = conflicts
                .iter()
                .map(|c| {
                    format!(
                        "{} {} ({}, {})",
                        if c.queued { "earlier request" } else { "lock" },
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
        // Ctrl-C while waiting gives up the wait (and the place in the
        // queue); nothing is locked yet, so nothing else needs undoing.
        let locked = tokio::select! {
            locked = store.lock(request, timeout, &mut on_wait) => locked,
            () = crate::terraform::interrupted() => Err(LockError::Interrupted),
        };
        let holder = match locked {
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
        Ok(Lease::held(store, holder, request.lease))
    }

    /// Takes the locks of `request` at once, or not at all.
    pub async fn try_acquire(store: &'s Store, request: &LockRequest<'_>) -> Option<Lease<'s>> {
        let holder = store.try_lock(request).await.ok()?;
        Some(Lease::held(store, holder, request.lease))
    }

    fn held(store: &'s Store, holder: Holder, lease: std::time::Duration) -> Lease<'s> {
        let heartbeat = store.heartbeat(holder.id, lease);
        Lease {
            store,
            holder,
            heartbeat: Some(heartbeat),
        }
    }

    /// Who holds the locks: this run.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Turns true when the lease is lost, or about to run out unrenewed
    /// (see [`Heartbeat`]): a terraform writing under it must stop.
    pub fn lost(&self) -> tokio::sync::watch::Receiver<bool> {
        match &self.heartbeat {
            Some(h) => h.lost(),
            None => tokio::sync::watch::channel(true).1,
        }
    }

    /// Stops renewing and frees the locks.
    pub async fn release(mut self) -> Result<(), LockError> {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop().await;
        }
        self.store.release(self.holder.id).await.map(|_| ())
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            drop(heartbeat);
            let (store, id) = (self.store, self.holder.id);
            let _ = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(store.release(id))
            });
        }
    }
}

/// What the next run says about a run that died holding its locks.
fn describe_dead_run(dead: &DeadRun) -> String {
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
