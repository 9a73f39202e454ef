//! Subgraph locks: exclusive on a command's write set, shared on its read
//! set, held as committed rows with a lease rather than an open transaction.
//!
//! Owns the `lock_holders` and `locks` tables. One acquisition is one short
//! transaction that first takes a transaction-scoped advisory lock keyed by
//! the state, so acquisitions on a state run one at a time: each sees every
//! earlier one committed, takes all its rows or none, and never holds a lock
//! while waiting for another (no hold-and-wait, hence no deadlock). Within
//! that transaction, holders whose lease has run out are reaped first, so a
//! dead holder blocks others no longer than its lease. Every lease is
//! measured with the database clock, never the local one.
//!
//! A holder renews its lease ([`Heartbeat`]). Every write made under a
//! lock — opening a run's transaction, each merge of its changes, extending
//! its locks — first calls the one fence, [`Store::fence`], in the same
//! database transaction, so a holder that lost its lease (reaped, or
//! force-unlocked) cannot write. What "live" means is said once,
//! [`LEASE_LIVE`], and the reaping, renewal and listing use the same words.
//!
//! This module must not spawn terraform or print anything: callers render
//! [`LockError`] (its text reads like terraform's lock error).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Row, Transaction};

use super::store::{Actor, Store};

/// Namespace of the per-state advisory lock that serializes acquisitions
/// (ASCII "sglk" in the high half, the state id in the low half).
const ACQUIRE_LOCK_NAMESPACE: i64 = 0x7367_6c6b_0000_0000;

/// First and longest pause between attempts while waiting for a lock.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The channel on which freed locks and tickets leaving the queue are
/// announced, with the state's id as payload.
const NOTIFY_CHANNEL: &str = "stategraph_locks";
/// How long a ticket of the queue lives without renewal, and how often its
/// waiter renews it (and looks again, notified or not).
const TICKET_LEASE: Duration = Duration::from_secs(15);
const TICKET_RENEWAL: Duration = Duration::from_secs(2);

/// How many contested addresses a lock error lists per holder.
const CONTESTED_SHOWN: usize = 10;
/// How many holders a lock error describes in full.
const HOLDERS_SHOWN: usize = 5;

/// Columns of a holder, in the order [`holder_from_row`] reads them, for a
/// query joining `lock_holders h` and `states s`.
const HOLDER_COLUMNS: &str = "h.id, h.state_id, s.name, h.txn_id, h.actor_user, h.actor_host, \
     h.ci_job, h.command, h.acquired_at, h.lease_expires_at";

/// The one definition of a live lease, on the database's clock (a row of
/// `lock_holders`): fences, renewals, reaping and listings all use it.
const LEASE_LIVE: &str = "lease_expires_at > clock_timestamp()";
/// The transactions of runs in flight on state `$1`: running, and linked to
/// a live lock holder (a dead run's checkpoints are the latest there is).
pub(super) fn in_flight_txns() -> String {
    format!(
        "SELECT h.txn_id FROM lock_holders h \
         JOIN transactions t ON t.id = h.txn_id AND t.status = 'running' \
         WHERE h.state_id = $1 AND h.{LEASE_LIVE}"
    )
}
/// Its negation: a lease that ran out.
const LEASE_EXPIRED: &str = "lease_expires_at <= clock_timestamp()";

/// The lock row that stands for a state as a whole (no instance address can
/// be `*`): every run of the CLI locks it shared, and a lock of terraform's
/// `http` backend (`stategraph serve`) exclusively, so that they exclude
/// each other whatever rows the run adds, on a state with no rows too.
pub const WHOLE_STATE: &str = "*";

/// How an address is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// Read: compatible with other shared locks.
    Shared,
    /// Write: conflicts with every other lock on the address.
    Exclusive,
}

impl LockMode {
    /// The spelling stored in `locks.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }

    fn from_db(s: &str) -> LockMode {
        // The column's CHECK constraint allows only these two.
        if s == "exclusive" {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a command wants to lock, and who it is.
#[derive(Debug, Clone)]
pub struct LockRequest<'a> {
    pub state_id: i64,
    /// The write set. An address also listed in `shared` is locked exclusively.
    pub exclusive: &'a [String],
    /// The read set.
    pub shared: &'a [String],
    /// The command line shown to others, e.g. `stategraph apply`.
    pub command: &'a str,
    pub actor: &'a Actor,
    /// How long the lock lives without renewal.
    pub lease: Duration,
    /// The transaction-log entry of the run, if it has one yet.
    pub txn_id: Option<i64>,
}

/// One holder of locks: a running (or dead) plan/apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The lock ID users see and give to `force-unlock`.
    pub id: i64,
    pub state_id: i64,
    /// The state's name.
    pub state: String,
    pub txn_id: Option<i64>,
    pub user: String,
    pub host: String,
    pub ci_job: Option<String>,
    pub command: String,
    pub acquired_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// Runs whose expired locks this acquisition reaped (a fresh holder
    /// only; empty otherwise).
    pub reaped: Vec<DeadRun>,
}

/// A run that died holding its locks: its lease expired before it
/// committed, and its transaction was marked aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRun {
    pub txn_id: i64,
    /// Its lock ID.
    pub holder_id: i64,
    pub command: String,
    pub user: String,
    pub host: String,
    pub ci_job: Option<String>,
    pub started_at: DateTime<Utc>,
    /// Its transaction summary: `recorded` lists what its checkpoints wrote.
    pub summary: Option<serde_json::Value>,
}

impl Holder {
    /// `user@host`, with the CI job in parentheses when there is one.
    pub fn who(&self) -> String {
        match &self.ci_job {
            Some(job) => format!("{}@{} ({job})", self.user, self.host),
            None => format!("{}@{}", self.user, self.host),
        }
    }
}

/// Another holder's locks that stand in the way of a request, or an earlier
/// ticket of the queue waiting for some of the same addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// For a ticket (`queued`): its number as `id`, its waiter as the rest,
    /// `acquired_at` when it queued.
    pub holder: Holder,
    /// The contested addresses and the mode the other holder has them in
    /// (or the ticket waits for), sorted.
    pub addresses: Vec<(String, LockMode)>,
    /// An earlier request still waiting (first come, first served), not a
    /// holder.
    pub queued: bool,
}

/// One request waiting in the queue, as `stategraph locks` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The ticket: its number as `id`, `acquired_at` when it queued.
    pub waiter: Holder,
    /// What it waits for, sorted.
    pub addresses: Vec<(String, LockMode)>,
}

/// Which tickets of the queue a request must not overtake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    /// None: a holder extending its locks (it is being served already).
    Ignore,
    /// Every ticket: a request that has not queued.
    All,
    /// The tickets before this one: a waiter's request.
    Before(i64),
}

/// A holder and everything it holds, as `stategraph locks` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub holder: Holder,
    /// Whether the lease ran out (by the database clock); the next
    /// acquisition on the state reaps it.
    pub expired: bool,
    /// Sorted by address.
    pub addresses: Vec<(String, LockMode)>,
}

impl HeldLock {
    /// How many addresses are held in `mode`.
    pub fn count(&self, mode: LockMode) -> usize {
        self.addresses.iter().filter(|(_, m)| *m == mode).count()
    }
}

/// The addresses held (or waited for) in `mode`.
pub fn in_mode(addresses: &[(String, LockMode)], mode: LockMode) -> Vec<&str> {
    addresses
        .iter()
        .filter(|(_, m)| *m == mode)
        .map(|(a, _)| a.as_str())
        .collect()
}

impl HeldLock {
    /// The lock as `stategraph locks --json` (and the web page) show it:
    /// every field and the addresses by mode.
    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.holder;
        let of = |mode| in_mode(&self.addresses, mode);
        serde_json::json!({
            "id": h.id,
            "state": h.state,
            "state_id": h.state_id,
            "txn_id": h.txn_id,
            "user": h.user,
            "host": h.host,
            "ci_job": h.ci_job,
            "command": h.command,
            "acquired_at": h.acquired_at.to_rfc3339(),
            "lease_expires_at": h.lease_expires_at.to_rfc3339(),
            "expired": self.expired,
            "queued": false,
            "exclusive": of(LockMode::Exclusive),
            "shared": of(LockMode::Shared),
        })
    }
}

impl Waiting {
    /// A request waiting in the queue, as `stategraph locks --json` shows
    /// it: `id` is its ticket, `queued_at` when it asked.
    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.waiter;
        let of = |mode| in_mode(&self.addresses, mode);
        serde_json::json!({
            "id": h.id,
            "state": h.state,
            "state_id": h.state_id,
            "user": h.user,
            "host": h.host,
            "ci_job": h.ci_job,
            "command": h.command,
            "queued_at": h.acquired_at.to_rfc3339(),
            "queued": true,
            "exclusive": of(LockMode::Exclusive),
            "shared": of(LockMode::Shared),
        })
    }
}

/// Lock failures.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Others hold some of the addresses; nothing was locked.
    #[error("{}", render_conflicts(.0, None))]
    Conflict(Vec<Conflict>),
    /// Others still held some of the addresses when the wait ran out; nothing was locked.
    #[error("{}", render_conflicts(.conflicts, Some(*.waited)))]
    Timeout {
        waited: Duration,
        conflicts: Vec<Conflict>,
    },
    /// The holder's rows are gone or its lease ran out: it must not write.
    #[error(
        "lock {holder_id} is no longer held by this run: its lease expired or it was \
         force-unlocked, and another run may have changed the resources it covered\n\n\
         Nothing may be written under a lost lock. Run the command again."
    )]
    LeaseLost { holder_id: i64 },
    #[error("database error while locking: {}", super::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Interrupted (SIGINT or SIGTERM) while waiting; nothing was locked.
    #[error("interrupted while waiting for locks: nothing was locked")]
    Interrupted,
}

impl LockError {
    /// The holders in the way, for a conflict or a timeout.
    pub fn conflicts(&self) -> Option<&[Conflict]> {
        match self {
            LockError::Conflict(c) | LockError::Timeout { conflicts: c, .. } => Some(c),
            _ => None,
        }
    }
}

/// The exclusive and shared sets of a request: sorted, without duplicates,
/// an address in both kept only as exclusive.
fn normalize(exclusive: &[String], shared: &[String]) -> (Vec<String>, Vec<&'static str>) {
    let mut wanted: BTreeMap<&str, LockMode> = BTreeMap::new();
    for a in shared {
        wanted.insert(a, LockMode::Shared);
    }
    for a in exclusive {
        wanted.insert(a, LockMode::Exclusive);
    }
    wanted
        .into_iter()
        .map(|(a, m)| (a.to_owned(), m.as_str()))
        .unzip()
}

fn acquire_key(state_id: i64) -> i64 {
    ACQUIRE_LOCK_NAMESPACE | (state_id & 0xffff_ffff)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn holder_from_row(row: &Row) -> Holder {
    Holder {
        id: row.get(0),
        state_id: row.get(1),
        state: row.get(2),
        txn_id: row.get(3),
        user: row.get(4),
        host: row.get(5),
        ci_job: row.get(6),
        command: row.get(7),
        acquired_at: row.get(8),
        lease_expires_at: row.get(9),
        reaped: Vec::new(),
    }
}

/// Groups rows of holder columns followed by (address, mode) into
/// conflicts with holders (`queued`: with tickets of the queue).
fn conflicts_from_rows(rows: &[Row], queued: bool) -> Vec<Conflict> {
    let mut out: Vec<Conflict> = Vec::new();
    for row in rows {
        let id: i64 = row.get(0);
        let entry = (row.get::<_, String>(10), LockMode::from_db(row.get(11)));
        match out.last_mut() {
            Some(c) if c.holder.id == id => c.addresses.push(entry),
            _ => out.push(Conflict {
                holder: holder_from_row(row),
                addresses: vec![entry],
                queued,
            }),
        }
    }
    out
}

/// Takes the state's acquisition lock, reaps expired holders, and locks
/// `addresses` (sorted, with modes) for `holder` if no other holder is in the
/// way. Returns the conflicts otherwise; the caller then rolls back.
async fn acquire_in(
    tx: &Transaction<'_>,
    state_id: i64,
    holder: Option<i64>,
    queue: Queue,
    addresses: &[String],
    modes: &[&str],
) -> Result<Result<Vec<DeadRun>, Vec<Conflict>>, LockError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&acquire_key(state_id)],
    )
    .await?;
    // A read-committed statement takes its snapshot when it starts: from here
    // on we see every acquisition that committed before we got the lock.
    let dead = tx
        .query(
            &format!(
                "WITH dead AS (
                     DELETE FROM lock_holders
                     WHERE state_id = $1 AND {LEASE_EXPIRED}
                     RETURNING id, txn_id
                 )
                 UPDATE transactions t
                 SET status = 'aborted',
                     finished_at = clock_timestamp(),
                     summary = coalesce(t.summary, '{{}}'::jsonb)
                         || jsonb_build_object('aborted', format('the lease of lock %s expired', dead.id))
                 FROM dead
                 WHERE t.id = dead.txn_id AND t.status = 'running'
                 RETURNING t.id, dead.id, t.command, t.actor_user, t.actor_host, t.ci_job,
                           t.started_at, t.summary"
            ),
            &[&state_id],
        )
        .await?;
    let dead: Vec<DeadRun> = dead
        .iter()
        .map(|r| DeadRun {
            txn_id: r.get(0),
            holder_id: r.get(1),
            command: r.get(2),
            user: r.get(3),
            host: r.get(4),
            ci_job: r.get(5),
            started_at: r.get(6),
            summary: r.get(7),
        })
        .collect();
    let rows = tx
        .query(
            &format!(
                "SELECT {HOLDER_COLUMNS}, l.address, l.mode
                 FROM unnest($2::text[], $3::text[]) AS w(address, mode)
                 JOIN locks l ON l.state_id = $1 AND l.address = w.address
                     AND (w.mode = 'exclusive' OR l.mode = 'exclusive')
                 JOIN lock_holders h ON h.id = l.holder_id
                 JOIN states s ON s.id = h.state_id
                 WHERE h.id IS DISTINCT FROM $4
                 ORDER BY h.id, l.address"
            ),
            &[&state_id, &addresses, &modes, &holder],
        )
        .await?;
    let mut conflicts = conflicts_from_rows(&rows, false);
    let before = match queue {
        Queue::Ignore => None,
        Queue::All => Some(i64::MAX),
        Queue::Before(ticket) => Some(ticket),
    };
    if let Some(before) = before {
        // Tickets whose waiter died stop counting once their lease ran out.
        tx.execute(
            &format!("DELETE FROM lock_waiters WHERE state_id = $1 AND {LEASE_EXPIRED}"),
            &[&state_id],
        )
        .await?;
        let rows = tx
            .query(
                "SELECT w.id, w.state_id, s.name, NULL::bigint, w.actor_user, w.actor_host,
                        w.ci_job, w.command, w.enqueued_at, w.lease_expires_at, x.address, x.mode
                 FROM lock_waiters w
                 JOIN states s ON s.id = w.state_id
                 CROSS JOIN LATERAL unnest(w.addresses, w.modes) AS x(address, mode)
                 JOIN unnest($2::text[], $3::text[]) AS r(address, mode)
                     ON r.address = x.address AND (r.mode = 'exclusive' OR x.mode = 'exclusive')
                 WHERE w.state_id = $1 AND w.id < $4
                 ORDER BY w.id, x.address",
                &[&state_id, &addresses, &modes, &before],
            )
            .await?;
        conflicts.extend(conflicts_from_rows(&rows, true));
    }
    if !conflicts.is_empty() {
        return Ok(Err(conflicts));
    }
    Ok(Ok(dead))
}

/// Wakes the waiters of `state_id` (at commit): locks were freed or a
/// ticket left the queue.
async fn notify(tx: &Transaction<'_>, state_id: i64) -> Result<(), LockError> {
    tx.execute(
        &format!("SELECT pg_notify('{NOTIFY_CHANNEL}', $1::bigint::text)"),
        &[&state_id],
    )
    .await?;
    Ok(())
}

/// Inserts the lock rows of `holder` in one statement; an address it
/// already holds shared is upgraded when asked for exclusively.
async fn insert_locks(
    tx: &Transaction<'_>,
    state_id: i64,
    holder: i64,
    addresses: &[String],
    modes: &[&str],
) -> Result<(), LockError> {
    tx.execute(
        "INSERT INTO locks (state_id, address, mode, holder_id)
         SELECT $1, w.address, w.mode, $4
         FROM unnest($2::text[], $3::text[]) AS w(address, mode)
         ON CONFLICT (state_id, address, holder_id) DO UPDATE SET mode = 'exclusive'
             WHERE excluded.mode = 'exclusive'",
        &[&state_id, &addresses, &modes, &holder],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Locks the request's addresses if no other holder is in the way, all
    /// or nothing; never waits (beyond other acquisitions' few milliseconds).
    /// An earlier ticket of the queue waiting for any of the same addresses
    /// is in the way too: requests are served first come, first served.
    pub async fn try_lock(&self, req: &LockRequest<'_>) -> Result<Holder, LockError> {
        self.acquire(req, Queue::All).await
    }

    /// [`Store::try_lock`], not overtaking the tickets `queue` names; a
    /// waiter's ticket leaves the queue in the same transaction.
    async fn acquire(&self, req: &LockRequest<'_>, queue: Queue) -> Result<Holder, LockError> {
        let (addresses, modes) = normalize(req.exclusive, req.shared);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let dead = match acquire_in(&tx, req.state_id, None, queue, &addresses, &modes).await? {
            Ok(dead) => dead,
            Err(conflicts) => {
                tx.rollback().await?;
                return Err(LockError::Conflict(conflicts));
            }
        };
        if let Queue::Before(ticket) = queue {
            tx.execute("DELETE FROM lock_waiters WHERE id = $1", &[&ticket])
                .await?;
        }
        if !dead.is_empty() {
            notify(&tx, req.state_id).await?;
        }
        let row = tx
            .query_one(
                &format!(
                    "WITH h AS (
                         INSERT INTO lock_holders
                             (state_id, txn_id, actor_user, actor_host, ci_job, command,
                              acquired_at, lease_expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp(),
                                 clock_timestamp() + $7::bigint * interval '1 millisecond')
                         RETURNING *
                     )
                     SELECT {HOLDER_COLUMNS} FROM h JOIN states s ON s.id = h.state_id"
                ),
                &[
                    &req.state_id,
                    &req.txn_id,
                    &req.actor.user,
                    &req.actor.host,
                    &req.actor.ci_job,
                    &req.command,
                    &millis(req.lease),
                ],
            )
            .await?;
        let mut holder = holder_from_row(&row);
        holder.reaped = dead;
        insert_locks(&tx, req.state_id, holder.id, &addresses, &modes).await?;
        tx.commit().await?;
        Ok(holder)
    }

    /// Like [`Store::try_lock`], waiting until `timeout` has passed (zero:
    /// one attempt, failing with [`LockError::Conflict`]). A request that
    /// has to wait takes a ticket in the state's queue: it is served before
    /// any later request for the same addresses, and woken by PostgreSQL
    /// `NOTIFY` when locks are freed (polling where the server cannot
    /// notify). `on_wait` is called with the holders and earlier tickets in
    /// the way when we first have to wait and whenever they change.
    pub async fn lock(
        &self,
        req: &LockRequest<'_>,
        timeout: Duration,
        on_wait: &mut (dyn FnMut(&[Conflict]) + Send),
    ) -> Result<Holder, LockError> {
        let started = tokio::time::Instant::now();
        let conflicts = match self.try_lock(req).await {
            Err(LockError::Conflict(c)) => c,
            other => return other,
        };
        if timeout.is_zero() {
            return Err(LockError::Conflict(conflicts));
        }
        // Listen before queueing: a lock freed in between still wakes us.
        let mut wakeups = self.listener().await;
        let ticket = Ticket::take(self, req).await?;
        let mut blockers: Option<Vec<(bool, i64)>> = None;
        let mut conflicts = conflicts;
        let mut backoff = BACKOFF_START;
        loop {
            let ids: Vec<(bool, i64)> = conflicts.iter().map(|c| (c.queued, c.holder.id)).collect();
            if blockers.as_ref() != Some(&ids) {
                on_wait(&conflicts);
                blockers = Some(ids);
            }
            let waited = started.elapsed();
            if waited >= timeout {
                ticket.leave().await;
                return Err(LockError::Timeout { waited, conflicts });
            }
            // Woken by a notification, or at the latest when the ticket's
            // lease needs renewing (and a holder's lease may have run out).
            let pause = match &mut wakeups {
                Some(_) => TICKET_RENEWAL,
                None => jittered(backoff),
            }
            .min(timeout - waited);
            match &mut wakeups {
                Some(rx) => {
                    let state = req.state_id.to_string();
                    let woken = tokio::time::timeout(pause, async {
                        while let Some(payload) = rx.recv().await {
                            if payload == state {
                                return true;
                            }
                        }
                        false
                    })
                    .await;
                    if woken == Ok(false) {
                        // The listening connection closed: poll from now on.
                        wakeups = None;
                    }
                }
                None => {
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            ticket.renew().await?;
            conflicts = match self.acquire(req, Queue::Before(ticket.id)).await {
                Err(LockError::Conflict(c)) => c,
                Ok(holder) => {
                    ticket.served();
                    return Ok(holder);
                }
                Err(e) => {
                    ticket.leave().await;
                    return Err(e);
                }
            };
        }
    }

    /// A connection that receives the lock queue's notifications, if the
    /// store can open one (see [`super::pool::PgTarget::listen`]).
    async fn listener(&self) -> Option<super::pool::Notifications> {
        let target = self.notifications.as_ref()?;
        target.listen(NOTIFY_CHANNEL).await.ok()
    }

    /// The requests waiting in the queue, oldest first; of one state if given.
    pub async fn queue(&self, state_id: Option<i64>) -> Result<Vec<Waiting>, LockError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT w.id, w.state_id, s.name, NULL::bigint, w.actor_user, w.actor_host,
                            w.ci_job, w.command, w.enqueued_at, w.lease_expires_at,
                            w.addresses, w.modes
                     FROM lock_waiters w JOIN states s ON s.id = w.state_id
                     WHERE ($1::bigint IS NULL OR w.state_id = $1) AND w.{LEASE_LIVE}
                     ORDER BY w.id"
                ),
                &[&state_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let addresses: Vec<String> = r.get(10);
                let modes: Vec<String> = r.get(11);
                Waiting {
                    waiter: holder_from_row(r),
                    addresses: addresses
                        .into_iter()
                        .zip(modes.iter().map(|m| LockMode::from_db(m)))
                        .collect(),
                }
            })
            .collect())
    }

    /// The live holders of any of `addresses` in exclusive mode: the runs
    /// changing them right now (a plan, which takes no locks, says so).
    pub async fn writers(
        &self,
        state_id: i64,
        addresses: &[String],
    ) -> Result<Vec<Conflict>, LockError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {HOLDER_COLUMNS}, l.address, l.mode
                     FROM locks l
                     JOIN lock_holders h ON h.id = l.holder_id
                     JOIN states s ON s.id = h.state_id
                     WHERE l.state_id = $1 AND l.address = ANY($2) AND l.mode = 'exclusive'
                       AND h.{LEASE_LIVE}
                     ORDER BY h.id, l.address"
                ),
                &[&state_id, &addresses],
            )
            .await?;
        Ok(conflicts_from_rows(&rows, false))
    }

    /// Adds addresses to a lock already held (escalation when the cone
    /// grew), all or nothing, never waiting: waiting while holding locks
    /// could deadlock, so on [`LockError::Conflict`] the caller releases and
    /// locks the whole set again with [`Store::lock`]. A shared address
    /// asked for exclusively is upgraded. Fails with
    /// [`LockError::LeaseLost`] if the holder no longer holds its lock.
    pub async fn extend(
        &self,
        holder_id: i64,
        exclusive: &[String],
        shared: &[String],
    ) -> Result<(), LockError> {
        let (addresses, modes) = normalize(exclusive, shared);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let state_id: i64 = tx
            .query_opt(
                "SELECT state_id FROM lock_holders WHERE id = $1",
                &[&holder_id],
            )
            .await?
            .ok_or(LockError::LeaseLost { holder_id })?
            .get(0);
        let outcome = acquire_in(
            &tx,
            state_id,
            Some(holder_id),
            Queue::Ignore,
            &addresses,
            &modes,
        )
        .await?;
        // After the reaping above, so an expired holder cannot slip through.
        Store::check_fence(&tx, holder_id).await?;
        if let Err(conflicts) = outcome {
            tx.rollback().await?;
            return Err(LockError::Conflict(conflicts));
        }
        insert_locks(&tx, state_id, holder_id, &addresses, &modes).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Extends the holder's lease to `lease` from now (database clock).
    /// Fails with [`LockError::LeaseLost`] if the holder is gone or its
    /// lease already ran out: a lapsed lock is never revived.
    pub async fn renew(&self, holder_id: i64, lease: Duration) -> Result<(), LockError> {
        renew(&self.pool, holder_id, lease).await
    }

    /// Frees every lock of the holder at once. Returns whether it still held
    /// them (false: its lease had been reaped or it was force-unlocked).
    pub async fn release(&self, holder_id: i64) -> Result<bool, LockError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let gone = tx
            .query_opt(
                "DELETE FROM lock_holders WHERE id = $1 RETURNING txn_id, state_id",
                &[&holder_id],
            )
            .await?;
        let Some(row) = gone else {
            tx.commit().await?;
            return Ok(false);
        };
        notify(&tx, row.get(1)).await?;
        // A run that opened its transaction and ends without committing it:
        // forgotten if it wrote nothing, else marked (its checkpoints stay).
        if let Some(txn) = row.get::<_, Option<i64>>(0) {
            tx.execute(
                "DELETE FROM transactions
                 WHERE id = $1 AND status = 'running' AND NOT coalesce(summary ? 'recorded', false)",
                &[&txn],
            )
            .await?;
            tx.execute(
                "UPDATE transactions
                 SET status = 'aborted', finished_at = clock_timestamp(),
                     summary = coalesce(summary, '{}'::jsonb)
                         || jsonb_build_object('aborted', 'the run ended without committing')
                 WHERE id = $1 AND status = 'running'",
                &[&txn],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Frees the locks of any holder (terraform's `force-unlock`), marking
    /// its running transaction aborted. Returns what was freed, or `None`
    /// if no holder has that id.
    pub async fn force_unlock(&self, holder_id: i64) -> Result<Option<HeldLock>, LockError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT {HOLDER_COLUMNS}, h.{LEASE_EXPIRED}
                     FROM lock_holders h JOIN states s ON s.id = h.state_id
                     WHERE h.id = $1
                     FOR UPDATE OF h"
                ),
                &[&holder_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let holder = holder_from_row(&row);
        let expired: bool = row.get(10);
        let addresses = tx
            .query(
                "SELECT address, mode FROM locks WHERE holder_id = $1 ORDER BY address",
                &[&holder_id],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), LockMode::from_db(r.get(1))))
            .collect();
        tx.execute("DELETE FROM lock_holders WHERE id = $1", &[&holder_id])
            .await?;
        notify(&tx, holder.state_id).await?;
        tx.execute(
            "UPDATE transactions
             SET status = 'aborted',
                 finished_at = clock_timestamp(),
                 summary = coalesce(summary, '{}'::jsonb)
                     || jsonb_build_object('aborted', format('lock %s was force-unlocked', $2::bigint))
             WHERE id = $1 AND status = 'running'",
            &[&holder.txn_id, &holder_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(HeldLock {
            holder,
            expired,
            addresses,
        }))
    }

    /// Every holder with its locks, oldest first; of one state if given.
    pub async fn held_locks(&self, state_id: Option<i64>) -> Result<Vec<HeldLock>, LockError> {
        let mut client = self.pool.get().await?;
        // One snapshot for both queries.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let holders = tx
            .query(
                &format!(
                    "SELECT {HOLDER_COLUMNS}, h.{LEASE_EXPIRED}
                     FROM lock_holders h JOIN states s ON s.id = h.state_id
                     WHERE $1::bigint IS NULL OR h.state_id = $1
                     ORDER BY h.id"
                ),
                &[&state_id],
            )
            .await?;
        let locks = tx
            .query(
                "SELECT l.holder_id, l.address, l.mode FROM locks l
                 WHERE $1::bigint IS NULL OR l.state_id = $1
                 ORDER BY l.holder_id, l.address",
                &[&state_id],
            )
            .await?;
        tx.commit().await?;
        let mut by_holder: BTreeMap<i64, Vec<(String, LockMode)>> = BTreeMap::new();
        for r in &locks {
            by_holder
                .entry(r.get(0))
                .or_default()
                .push((r.get(1), LockMode::from_db(r.get(2))));
        }
        Ok(holders
            .iter()
            .map(|row| {
                let holder = holder_from_row(row);
                HeldLock {
                    addresses: by_holder.remove(&holder.id).unwrap_or_default(),
                    expired: row.get(10),
                    holder,
                }
            })
            .collect())
    }

    /// The fence of every write made under a lock: call it inside the
    /// transaction that writes, before writing. It locks the holder's row
    /// until that transaction ends (so the holder cannot be reaped or
    /// force-unlocked meanwhile) and says whether the holder exists, holds
    /// locks on `state_id` (when given) and its lease is live.
    pub async fn fence(
        tx: &Transaction<'_>,
        holder_id: i64,
        state_id: Option<i64>,
    ) -> Result<bool, tokio_postgres::Error> {
        let held = tx
            .query_opt(
                &format!(
                    "SELECT 1 FROM lock_holders
                     WHERE id = $1 AND ($2::bigint IS NULL OR state_id = $2) AND {LEASE_LIVE}
                     FOR UPDATE"
                ),
                &[&holder_id, &state_id],
            )
            .await?;
        Ok(held.is_some())
    }

    /// [`Store::fence`] of `holder_id` on any state, as a [`LockError`].
    pub async fn check_fence(tx: &Transaction<'_>, holder_id: i64) -> Result<(), LockError> {
        match Store::fence(tx, holder_id, None).await? {
            true => Ok(()),
            false => Err(LockError::LeaseLost { holder_id }),
        }
    }

    /// Starts renewing the holder's lease in the background (see [`Heartbeat`]).
    pub fn heartbeat(&self, holder_id: i64, lease: Duration) -> Heartbeat {
        Heartbeat::start(self.pool.clone(), holder_id, lease)
    }
}

async fn renew(pool: &Pool, holder_id: i64, lease: Duration) -> Result<(), LockError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            &format!(
                "UPDATE lock_holders
                 SET lease_expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond'
                 WHERE id = $1 AND {LEASE_LIVE}"
            ),
            &[&holder_id, &millis(lease)],
        )
        .await?;
    if n == 0 {
        return Err(LockError::LeaseLost { holder_id });
    }
    Ok(())
}

/// `d` plus or minus up to a quarter, at random.
fn jittered(d: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let quarter = d / 4;
    let offset = Duration::from_nanos(r % (quarter.as_nanos() as u64 * 2 + 1));
    d - quarter + offset
}

/// Renews a holder's lease every third of the lease until stopped or dropped.
///
/// [`Heartbeat::lost`] turns true, and the renewals stop, when the lease is
/// known to be gone (reaped or force-unlocked), or when no renewal has
/// succeeded for the lease minus a margin (a quarter of it: the database
/// is unreachable, or this machine is cut off from it) — before the lease
/// can have run out in the database, so that the run stops its terraform
/// before another run may take the locks. From then on the run must not
/// write, and the fence of its merge would refuse anyway.
pub struct Heartbeat {
    /// `None` once stopped.
    task: Option<JoinHandle<()>>,
    lost: watch::Receiver<bool>,
}

impl Heartbeat {
    /// Spawns the renewal task on the current tokio runtime.
    pub fn start(pool: Pool, holder_id: i64, lease: Duration) -> Heartbeat {
        let (tx, rx) = watch::channel(false);
        let every = (lease / 3).max(Duration::from_millis(10));
        let margin = lease / 4;
        let task = tokio::spawn(async move {
            // When the lease was last set: at the latest, when the request
            // that set it was sent.
            let mut renewed_at = tokio::time::Instant::now();
            loop {
                let deadline = renewed_at + lease - margin;
                let next = tokio::time::Instant::now() + every;
                tokio::time::sleep_until(next.min(deadline)).await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let sent = tokio::time::Instant::now();
                match tokio::time::timeout_at(deadline, renew(&pool, holder_id, lease)).await {
                    Ok(Ok(())) => renewed_at = sent,
                    Ok(Err(LockError::LeaseLost { .. })) => break,
                    // Transient, or too slow: try again until the deadline.
                    Ok(Err(_)) | Err(_) => continue,
                }
            }
            let _ = tx.send(true);
        });
        Heartbeat {
            task: Some(task),
            lost: rx,
        }
    }

    /// A receiver that turns true when the lease is lost (`changed().await` to wait for it).
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops renewing and waits until no renewal is in flight.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A request's place in the queue of its state, left when it is served
/// (in the acquiring transaction), when it gives up, or when this is
/// dropped (an interrupted wait); a waiter killed outright stops renewing
/// it, and it stops counting when its lease runs out.
struct Ticket<'s> {
    store: &'s Store,
    id: i64,
    state_id: i64,
    /// False once served or left.
    queued: bool,
}

impl<'s> Ticket<'s> {
    async fn take(store: &'s Store, req: &LockRequest<'_>) -> Result<Ticket<'s>, LockError> {
        let (addresses, modes) = normalize(req.exclusive, req.shared);
        let client = store.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO lock_waiters
                     (state_id, addresses, modes, actor_user, actor_host, ci_job, command,
                      lease_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7,
                         clock_timestamp() + $8::bigint * interval '1 millisecond')
                 RETURNING id",
                &[
                    &req.state_id,
                    &addresses,
                    &modes,
                    &req.actor.user,
                    &req.actor.host,
                    &req.actor.ci_job,
                    &req.command,
                    &millis(TICKET_LEASE),
                ],
            )
            .await?;
        Ok(Ticket {
            store,
            id: row.get(0),
            state_id: req.state_id,
            queued: true,
        })
    }

    async fn renew(&self) -> Result<(), LockError> {
        let client = self.store.pool.get().await?;
        client
            .execute(
                "UPDATE lock_waiters
                 SET lease_expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond'
                 WHERE id = $1",
                &[&self.id, &millis(TICKET_LEASE)],
            )
            .await?;
        Ok(())
    }

    /// Served: the acquisition removed the ticket.
    fn served(mut self) {
        self.queued = false;
    }

    /// Leaves the queue, waking those behind (best effort: a ticket left
    /// behind stops counting when its lease runs out).
    async fn leave(mut self) {
        self.queued = false;
        let _ = dequeue(self.store, self.id, self.state_id).await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.queued {
            let (store, id, state_id) = (self.store, self.id, self.state_id);
            let _ = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(dequeue(store, id, state_id))
            });
        }
    }
}

async fn dequeue(store: &Store, ticket: i64, state_id: i64) -> Result<(), LockError> {
    let mut client = store.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM lock_waiters WHERE id = $1", &[&ticket])
        .await?;
    notify(&tx, state_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Terraform's "Error acquiring the state lock" for these conflicts, with
/// one `Lock Info` block per holder in the way.
pub fn describe_conflicts(conflicts: &[Conflict]) -> String {
    render_conflicts(conflicts, None)
}

fn render_conflicts(conflicts: &[Conflict], waited: Option<Duration>) -> String {
    let contested: BTreeSet<&str> = conflicts
        .iter()
        .flat_map(|c| c.addresses.iter().map(|(a, _)| a.as_str()))
        .collect();
    let n = contested.len();
    let addresses = if n == 1 { "address" } else { "addresses" };
    let (held, queued): (Vec<&Conflict>, Vec<&Conflict>) =
        conflicts.iter().partition(|c| !c.queued);
    let mut by = Vec::new();
    match held.as_slice() {
        [] => {}
        [one] => by.push(format!("held by lock {}", one.holder.id)),
        many => by.push(format!("held by {} other runs", many.len())),
    }
    match queued.len() {
        0 => {}
        1 => by.push("waited for by 1 earlier request".to_owned()),
        k => by.push(format!("waited for by {k} earlier requests")),
    }
    let by = by.join(" and ");
    let mut out = String::from("Error acquiring the state lock\n\n");
    match waited {
        Some(w) => {
            let _ = writeln!(
                out,
                "Error message: timed out after {} waiting for {n} {addresses} {by}",
                crate::ui::duration(w)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Error message: {n} {addresses} to lock {} {by}",
                if n == 1 { "is" } else { "are" }
            );
        }
    }
    for c in conflicts.iter().take(HOLDERS_SHOWN) {
        let h = &c.holder;
        if c.queued {
            let _ = writeln!(out, "Queued before this run:");
            let _ = writeln!(out, "  Ticket:    {}", h.id);
        } else {
            let _ = writeln!(out, "Lock Info:");
            let _ = writeln!(out, "  ID:        {}", h.id);
        }
        let _ = writeln!(out, "  Path:      {}", h.state);
        let _ = writeln!(out, "  Operation: {}", h.command);
        let _ = writeln!(out, "  Who:       {}", h.who());
        if c.queued {
            let _ = writeln!(out, "  Queued:    {}", timestamp(h.acquired_at));
        } else {
            let _ = writeln!(out, "  Created:   {}", timestamp(h.acquired_at));
            let _ = writeln!(
                out,
                "  Lease:     expires {}",
                timestamp(h.lease_expires_at)
            );
        }
        let shown: Vec<String> = c
            .addresses
            .iter()
            .take(CONTESTED_SHOWN)
            .map(|(a, m)| match a.as_str() {
                WHOLE_STATE => format!("the whole state, {WHOLE_STATE} ({m})"),
                _ => format!("{a} ({m})"),
            })
            .collect();
        let more = c.addresses.len().saturating_sub(CONTESTED_SHOWN);
        let _ = write!(out, "  Contested: {}", shown.join(", "));
        if more > 0 {
            let _ = write!(out, ", and {more} more");
        }
        out.push('\n');
    }
    if conflicts.len() > HOLDERS_SHOWN {
        let _ = writeln!(
            out,
            "and {} more (stategraph locks lists them all)",
            conflicts.len() - HOLDERS_SHOWN
        );
    }
    let _ = write!(
        out,
        "\nStategraph acquires a lock on the resources a command may change (and a\n\
         shared lock on those it reads) to protect the state from being written\n\
         by multiple users at the same time. Please resolve the issue above and try\n\
         again, or wait for the lock with -lock-timeout (waiters are served in the\n\
         order they asked)."
    );
    if !held.is_empty() {
        let _ = write!(
            out,
            "\n\nA lock whose holder died is freed when its lease expires. If it must go\n\
             sooner, and you are certain its holder is not running, please call:"
        );
        for c in &held {
            let _ = write!(out, "\nstategraph force-unlock {}", c.holder.id);
        }
    }
    out
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn normalize_sorts_dedups_and_prefers_exclusive() {
        let (a, m) = normalize(&s(&["b", "a", "b"]), &s(&["c", "a", "c"]));
        assert_eq!(a, s(&["a", "b", "c"]));
        assert_eq!(m, vec!["exclusive", "exclusive", "shared"]);
    }

    #[test]
    fn acquire_keys_differ_by_state_and_from_the_migration_lock() {
        assert_ne!(acquire_key(1), acquire_key(2));
        assert_ne!(acquire_key(0), 0x7367_6d69_6772_6174);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let j = jittered(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(75) && j <= Duration::from_millis(125));
        }
    }

    fn holder(id: i64) -> Holder {
        Holder {
            id,
            state_id: 1,
            state: "prod".to_owned(),
            txn_id: None,
            user: "alice".to_owned(),
            host: "ci-runner-3".to_owned(),
            ci_job: Some("https://ci.example/job/17".to_owned()),
            command: "stategraph apply".to_owned(),
            acquired_at: Utc.with_ymd_and_hms(2026, 11, 23, 14, 5, 11).unwrap(),
            lease_expires_at: Utc.with_ymd_and_hms(2026, 11, 23, 14, 6, 11).unwrap(),
            reaped: Vec::new(),
        }
    }

    #[test]
    fn conflicts_read_like_terraform_lock_errors() {
        let addresses = (0..12)
            .map(|i| (format!("aws_subnet.s[{i:02}]"), LockMode::Exclusive))
            .collect();
        let text = describe_conflicts(&[Conflict {
            holder: holder(42),
            addresses,
            queued: false,
        }]);
        assert!(
            text.starts_with("Error acquiring the state lock\n\n"),
            "{text}"
        );
        assert!(
            text.contains("12 addresses to lock are held by lock 42"),
            "{text}"
        );
        assert!(text.contains("  ID:        42\n"), "{text}");
        assert!(text.contains("  Path:      prod\n"), "{text}");
        assert!(text.contains("  Operation: stategraph apply\n"), "{text}");
        assert!(
            text.contains("  Who:       alice@ci-runner-3 (https://ci.example/job/17)\n"),
            "{text}"
        );
        assert!(
            text.contains("  Created:   2026-11-23 14:05:11 UTC\n"),
            "{text}"
        );
        assert!(
            text.contains("  Lease:     expires 2026-11-23 14:06:11 UTC\n"),
            "{text}"
        );
        assert!(
            text.contains("aws_subnet.s[09] (exclusive), and 2 more\n"),
            "{text}"
        );
        assert!(!text.contains("aws_subnet.s[10]"), "{text}");
        assert!(text.ends_with("stategraph force-unlock 42"), "{text}");
    }

    #[test]
    fn an_earlier_request_in_the_queue_is_named_and_cannot_be_force_unlocked() {
        let text = describe_conflicts(&[Conflict {
            holder: holder(7),
            addresses: vec![("a.b".to_owned(), LockMode::Exclusive)],
            queued: true,
        }]);
        assert!(
            text.contains("1 address to lock is waited for by 1 earlier request"),
            "{text}"
        );
        assert!(
            text.contains("Queued before this run:\n  Ticket:    7\n"),
            "{text}"
        );
        assert!(!text.contains("force-unlock"), "{text}");
    }

    #[test]
    fn the_state_row_is_named_as_the_whole_state() {
        let text = describe_conflicts(&[Conflict {
            holder: holder(9),
            addresses: vec![(WHOLE_STATE.to_owned(), LockMode::Exclusive)],
            queued: false,
        }]);
        assert!(
            text.contains("  Contested: the whole state, * (exclusive)\n"),
            "{text}"
        );
    }

    #[test]
    fn timeout_says_how_long_it_waited() {
        let err = LockError::Timeout {
            waited: Duration::from_millis(2500),
            conflicts: vec![
                Conflict {
                    holder: holder(1),
                    addresses: vec![("a.b".to_owned(), LockMode::Shared)],
                    queued: false,
                },
                Conflict {
                    holder: holder(2),
                    addresses: vec![("a.b".to_owned(), LockMode::Shared)],
                    queued: false,
                },
            ],
        };
        let text = err.to_string();
        assert!(
            text.contains("timed out after 2.50 s waiting for 1 address held by 2 other runs"),
            "{text}"
        );
        assert!(
            text.ends_with("call:\nstategraph force-unlock 1\nstategraph force-unlock 2"),
            "{text}"
        );
    }
}
