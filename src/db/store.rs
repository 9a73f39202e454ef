//! [`Store`]: every query and write of stategraph's tables, one async
//! function each. Multi-statement writes run in one explicit transaction, so
//! a refused or failed write leaves the stored state exactly as before.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::Pool;
use futures_util::{pin_mut, Stream, StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::jsonb;
use super::locks::in_flight_txns;
use crate::address::Target;
use crate::graph::{dependency_scope, DependencyScope};
use crate::tfstate::{self, Head, Instance, Output, Resource, State, StateError, StoredDigest};

/// Who is writing, for the transaction log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user: String,
    pub host: String,
    /// CI job id or URL when running in CI.
    pub ci_job: Option<String>,
    /// The commit and branch of the checkout the run is in, where known:
    /// recorded with each transaction, so that a run from a checkout that
    /// does not contain that commit is told it would revert its changes.
    pub git_commit: Option<String>,
    pub git_branch: Option<String>,
}

/// Failures of store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {}", super::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(
        "cannot import state with lineage \"{given}\" over unrelated state with lineage \"{stored}\"\n\n\
         The state \"{name}\" holds another terraform state. Use -force to replace it anyway."
    )]
    Lineage {
        name: String,
        given: String,
        stored: String,
    },
    #[error(
        "cannot import state with serial {given} over newer state with serial {stored}\n\n\
         The stored state \"{name}\" is newer. Pull it first (stategraph state pull), or use -force to replace it anyway."
    )]
    OlderSerial {
        name: String,
        given: i64,
        stored: i64,
    },
    #[error(
        "cannot overwrite existing state with serial {serial} with a different state that has the same serial\n\n\
         Increase the serial of the state you push, or use -force."
    )]
    SameSerial { serial: i64 },
    #[error(
        "terraform changed {} outside the locked write set: {}",
        if addresses.len() == 1 { "an instance" } else { "instances" },
        addresses.join(", ")
    )]
    OutsideWriteSet { addresses: Vec<String> },
    /// Terraform changed instances outside the write set that could not
    /// be locked and written with the rest (see `Recording::merge`).
    #[error(
        "terraform changed {} outside the locked write set ({}), and {why}\n\n\
         Its result is not written while those rows are not this run's to write.",
        if addresses.len() == 1 { "an instance" } else { "instances" },
        addresses.join(", ")
    )]
    OutsideLocks { addresses: Vec<String>, why: String },
    #[error(
        "the lock on state \"{name}\" was lost before the result could be written (its lease \
         expired or it was force-unlocked); nothing was written"
    )]
    LeaseLost { name: String },
    #[error("state \"{name}\" has lineage \"{stored}\" but terraform wrote lineage \"{given}\"")]
    LineageChanged {
        name: String,
        stored: String,
        given: String,
    },
    #[error("no state named \"{name}\"")]
    NoState { name: String },
    #[error("a stored row of state \"{name}\" is not valid: {problem}")]
    Corrupt { name: String, problem: String },
    /// The state given to [`Store::push_stream`] could not be read whole.
    #[error(transparent)]
    Invalid(#[from] StateError),
}

impl StoreError {
    /// Whether the database could not be reached (or went away) rather than
    /// refusing the write: trying again later may succeed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) | StoreError::Db(e) => {
                crate::db::is_connection_error(e)
            }
            StoreError::Pool(_) => true,
            _ => false,
        }
    }
}

/// What a push changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub txn_id: i64,
    pub created: bool,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub outputs_changed: u64,
    /// The state's serial after the write.
    pub serial: i64,
}

/// A result of terraform to merge: only the write set's rows and the cone's
/// outputs are written.
pub struct Merge<'a> {
    pub state_name: &'a str,
    /// The lock holder whose lease must still be valid (fencing).
    pub holder_id: Option<i64>,
    /// Instance addresses this run may write.
    pub write_set: &'a [String],
    /// The state handed to terraform.
    pub before: &'a State,
    /// The state terraform wrote.
    pub after: &'a State,
    pub kind: &'a str,
    pub command: &'a str,
    pub actor: &'a Actor,
    /// `{"write": [...], "read": [...]}` for the log.
    pub cone: Value,
    /// When the run took its locks (the transaction's start in the log).
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Plan summary for the log.
    pub summary: Value,
    /// The run's transaction opened by [`Store::begin`]; `None` opens and
    /// commits one in this merge.
    pub txn_id: Option<i64>,
    /// Whether this merge ends the run's transaction (`false`: a checkpoint
    /// during the apply; the transaction stays `running`).
    pub finish: bool,
}

/// The start of a run that will write: its transaction, opened while it
/// holds its locks.
pub struct Begin<'a> {
    pub state_name: &'a str,
    pub holder_id: i64,
    pub kind: &'a str,
    pub command: &'a str,
    pub actor: &'a Actor,
    pub cone: Value,
    pub summary: Value,
}

/// One entry of the transaction log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    pub id: i64,
    pub state: String,
    pub kind: String,
    pub command: String,
    pub user: String,
    pub host: String,
    pub ci_job: Option<String>,
    pub terraform_version: Option<String>,
    pub status: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub serial_before: Option<i64>,
    pub serial_after: Option<i64>,
    pub cone: Option<Value>,
    pub summary: Option<Value>,
}

/// One node of the stored graph: a current (not deposed) instance.
/// The transaction that last wrote a row, and where it ran from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWriter {
    pub txn_id: i64,
    pub git_commit: Option<String>,
    pub git_branch: Option<String>,
    pub command: String,
}

/// The rows of `instances` of state `$1` as `view` sees them, as a query
/// to select from (every column).
fn instance_rows(view: View) -> String {
    match view {
        View::Latest => "SELECT * FROM instances WHERE state_id = $1".to_owned(),
        // Rows a run in flight wrote (its checkpoints) are read as the
        // version before it; rows it removed, from their history.
        View::Settled => format!(
            "SELECT * FROM instances
             WHERE state_id = $1 AND txn_id NOT IN ({live})
             UNION ALL
             SELECT r.* FROM instance_history h, jsonb_populate_record(NULL::instances, h.row) r
             WHERE h.state_id = $1 AND h.superseded_by IN ({live})",
            live = in_flight_txns()
        ),
        // Rows as they were after transaction `t`: written at or before it
        // and not replaced by then.
        View::At(t) => format!(
            "SELECT * FROM instances WHERE state_id = $1 AND txn_id <= {t}
             UNION ALL
             SELECT r.* FROM instance_history h, jsonb_populate_record(NULL::instances, h.row) r
             WHERE h.state_id = $1 AND h.written_by <= {t} AND h.superseded_by > {t}"
        ),
    }
}

/// The rows of `outputs` of state `$1` as `view` sees them (columns name,
/// value, type, sensitive, extra).
fn output_rows(view: View) -> String {
    match view {
        View::Latest | View::Settled => {
            "SELECT name, value, type, sensitive, extra FROM outputs WHERE state_id = $1".to_owned()
        }
        View::At(t) => format!(
            "SELECT name, value, type, sensitive, extra FROM outputs
             WHERE state_id = $1 AND txn_id <= {t}
             UNION ALL
             SELECT r.name, r.value, r.type, r.sensitive, r.extra
             FROM output_history h, jsonb_populate_record(NULL::outputs, h.row) r
             WHERE h.state_id = $1 AND h.written_by <= {t} AND h.superseded_by > {t}"
        ),
    }
}

/// Which rows a read sees while runs are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every row as stored now, the checkpoints of runs in flight included
    /// (what `state pull` shows: terraform, too, persists state mid-apply).
    Latest,
    /// Rows as they were before the runs in flight (a live lock holder's
    /// running transaction): what a plan, which takes no locks, reads.
    Settled,
    /// Rows as they were once the state's transactions up to this one
    /// (by id) were written: `state pull --at`. Serial, lineage and
    /// terraform version are those that transaction recorded.
    At(i64),
}

/// A state as one read saw it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: State,
    /// Object key (address, or `ADDRESS deposed KEY`) -> (version,
    /// transaction that wrote it), of every row read.
    pub versions: BTreeMap<String, (i64, i64)>,
    /// Digest of the head and outputs read (the latest or settled view):
    /// see [`Store::settled_if_changed`].
    pub fingerprint: Option<String>,
    /// Whether its rows hold no content, only what the graph and discovery
    /// need and each object's stored digest ([`Store::light_snapshot`]).
    pub light: bool,
    /// How many rows have no stored digest (written before rows kept one).
    pub undigested: usize,
}

/// A state's head and resources as [`Store::resources`] reads them.
#[derive(Debug, Clone)]
pub struct Summarized {
    /// The head and outputs; no resources.
    pub state: State,
    pub resources: Vec<Summary>,
    /// As [`Snapshot::fingerprint`].
    pub fingerprint: String,
}

/// One stored resource, without its instances.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The resource, its instances left out.
    pub resource: Resource,
    /// How many objects it has (deposed ones included).
    pub objects: usize,
    /// The digest PostgreSQL keeps of its objects' digests; `None` for a
    /// resource with no objects (kept in the state's head).
    pub digest: Option<String>,
    /// What its objects depend on, each once.
    pub dependencies: Vec<String>,
}

/// What [`Store::settled_since`] found.
pub enum Since {
    /// Every row, the head and the outputs are as read before.
    Unchanged,
    /// Something changed: the state read again.
    Changed(Box<Snapshot>),
    /// The state is no longer stored.
    Gone,
}

#[derive(Debug, Clone)]
pub struct GraphRow {
    pub address: String,
    pub config_address: String,
    pub dependencies: Vec<String>,
}

impl GraphRow {
    /// The rows of `state`'s current objects (deposed ones aside), as
    /// [`Store::graph_rows`] reads them from the tables: a run builds its
    /// graph from the snapshot it read instead of reading every row again.
    pub fn of_state(state: &State) -> Vec<GraphRow> {
        let mut out = Vec::with_capacity(state.object_count());
        for r in &state.resources {
            let (address, config_address) = (r.address(), r.config_address());
            out.extend(
                r.instances
                    .iter()
                    .filter(|i| i.deposed.is_none())
                    .map(|i| GraphRow {
                        address: i.address(&address),
                        config_address: config_address.clone(),
                        dependencies: i.dependencies.clone(),
                    }),
            );
        }
        out
    }
}

/// Rows written by one push from which it refreshes the table's statistics.
const BULK_ROWS: u64 = 10_000;

/// What [`Store::cone_rows`] read.
#[derive(Debug, Clone)]
pub struct ConeRows {
    /// The rows of the instances the cone reaches.
    pub rows: Vec<GraphRow>,
    /// How many instances (deposed objects aside) the state holds.
    pub instances: usize,
}

/// The instance-row columns written by a push, in COPY order.
const INSTANCE_COLUMNS: &str = "address, deposed, config_address, module, mode, type, name, each, provider, \
     index_key, status, schema_version, attributes, attributes_flat, sensitive_attributes, private, \
     dependencies, create_before_destroy, extra, resource_extra, digest";

const INSTANCE_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::INT8,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::BOOL,
    Type::JSONB,
    Type::JSONB,
    Type::TEXT,
];

/// The database behind one type (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct Store {
    /// Shared with the other `impl Store` blocks of `db` (locks, ...).
    pub(crate) pool: Pool,
    display: String,
    /// Where to open a connection that listens for the lock queue's
    /// notifications; without it, waiters poll.
    pub(crate) notifications: Option<super::pool::PgTarget>,
}

fn extra_json(m: &Map<String, Value>) -> Option<Value> {
    (!m.is_empty()).then(|| Value::Object(m.clone()))
}

/// The `config_cache` key of [`Store::whole_plan_rate`].
const WHOLE_PLAN_RATE: &str = "measured: whole plan";

impl Store {
    pub fn new(pool: Pool, display: String) -> Store {
        Store {
            pool,
            display,
            notifications: None,
        }
    }

    /// Waiters for locks are woken by notifications on a connection of
    /// their own to `target` (the pool's connections cannot receive them).
    pub fn with_notifications(self, target: super::pool::PgTarget) -> Store {
        Store {
            notifications: Some(target),
            ..self
        }
    }

    /// `host:port/dbname`, safe to print.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Replaces the named state with `state` in one transaction, with
    /// terraform's `state push` rules: see [`Store::push_stream`].
    pub async fn push(
        &self,
        name: &str,
        state: &State,
        force: bool,
        actor: &Actor,
        command: &str,
    ) -> Result<PushReport, StoreError> {
        let resources = futures_util::stream::iter(state.resources.iter().map(Cow::Borrowed));
        let head = std::future::ready(Ok(Head::of(state)));
        self.push_stream(name, resources, head, force, actor, command, None)
            .await
    }

    /// Replaces the named state with the state whose resources `resources`
    /// yields and whose other parts `head` gives once they are all read, in
    /// one transaction, with terraform's `state push` rules: another lineage
    /// or a lower serial is refused unless `force`. Only rows that differ
    /// are written; each replaced or removed row goes to the history first.
    ///
    /// The resources are copied into PostgreSQL as they come (into the
    /// state's rows directly when it has none and no history, else into a
    /// staging table diffed against them in SQL), so memory stays bounded
    /// by a resource, whatever the state's size. An error of `head` (the
    /// state could not be read whole) writes nothing.
    /// With `fence`, the holder of the state's lock writing: see
    /// [`Store::push_locked`].
    #[allow(clippy::too_many_arguments)]
    pub async fn push_stream<'r>(
        &self,
        name: &str,
        resources: impl Stream<Item = Cow<'r, Resource>>,
        head: impl Future<Output = Result<Head, StateError>>,
        force: bool,
        actor: &Actor,
        command: &str,
        fence: Option<i64>,
    ) -> Result<PushReport, StoreError> {
        self.push_fenced(name, resources, head, force, actor, command, fence)
            .await
    }

    /// [`Store::push`] by the holder of lock `holder_id` on the state (a
    /// lock of terraform's `http` backend): the write is fenced by that
    /// lock, in the same transaction, and refused with
    /// [`StoreError::LeaseLost`] if the holder no longer holds it.
    pub async fn push_locked(
        &self,
        name: &str,
        state: &State,
        holder_id: i64,
        actor: &Actor,
        command: &str,
    ) -> Result<PushReport, StoreError> {
        let resources = futures_util::stream::iter(state.resources.iter().map(Cow::Borrowed));
        let head = std::future::ready(Ok(Head::of(state)));
        self.push_fenced(
            name,
            resources,
            head,
            false,
            actor,
            command,
            Some(holder_id),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_fenced<'r>(
        &self,
        name: &str,
        resources: impl Stream<Item = Cow<'r, Resource>>,
        head: impl Future<Output = Result<Head, StateError>>,
        force: bool,
        actor: &Actor,
        command: &str,
        fence: Option<i64>,
    ) -> Result<PushReport, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        // The state row is created (or locked) first, with placeholders the
        // end of this transaction overwrites: the head of a streamed state
        // is known only once it is read, and nobody sees the row before.
        let inserted = tx
            .query_opt(
                "INSERT INTO states (name, lineage, serial, terraform_version)
                 VALUES ($1, '', 0, '')
                 ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&name],
            )
            .await?;
        let created = inserted.is_some();
        let row = tx
            .query_one(
                "SELECT id, lineage, serial, terraform_version, check_results, extra, husks
                 FROM states WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await?;
        let state_id: i64 = row.get(0);
        let stored_lineage: String = row.get(1);
        let stored_serial: i64 = row.get(2);
        if let Some(holder) = fence {
            if !Store::fence(&tx, holder, Some(state_id)).await? {
                return Err(StoreError::LeaseLost {
                    name: name.to_owned(),
                });
            }
        }

        // As terraform's, any state may be pushed over an empty one (one a
        // run created and never wrote to, or everything destroyed),
        // whatever its lineage and serial. With no history either (new, or
        // never written), there is nothing to compare rows with, and every
        // version starts at 1.
        let emptiness = tx
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM instances WHERE state_id = $1),
                        NOT EXISTS (SELECT 1 FROM outputs WHERE state_id = $1),
                        NOT EXISTS (SELECT 1 FROM instance_history WHERE state_id = $1)",
                &[&state_id],
            )
            .await?;
        let (no_rows, no_outputs, no_history): (bool, bool, bool) =
            (emptiness.get(0), emptiness.get(1), emptiness.get(2));
        let stored_empty = no_rows && no_outputs;
        let blank = no_rows && no_history;
        let checked = !created && !force && !stored_empty;

        let txn_id: i64 = tx
            .query_one(
                "INSERT INTO transactions (state_id, kind, command, actor_user, actor_host, ci_job,
                    status, serial_before, lineage_before, git_commit, git_branch)
                 VALUES ($1, 'push', $2, $3, $4, $5, 'running', $6, $7, $8, $9) RETURNING id",
                &[
                    &state_id,
                    &command,
                    &actor.user,
                    &actor.host,
                    &actor.ci_job,
                    &(!created).then_some(stored_serial),
                    &(!created).then_some(stored_lineage.as_str()),
                    &actor.git_commit,
                    &actor.git_branch,
                ],
            )
            .await?
            .get(0);

        let mut report = PushReport {
            txn_id,
            created,
            ..PushReport::default()
        };

        // Resources with no instances are kept aside (few, small).
        let mut husks: Vec<Resource> = Vec::new();
        let resources = resources.filter_map(|r| {
            let rows = if r.instances.is_empty() {
                husks.push(r.into_owned());
                None
            } else {
                Some(r)
            };
            std::future::ready(rows)
        });
        let staged = if blank {
            // Straight into the table, each resource's row of
            // `resource_digests` computed here on the way rather than by
            // the table's triggers (a second aggregate over every row).
            tx.batch_execute("SET LOCAL stategraph.resource_digests = 'by_writer'")
                .await?;
            let sink = tx
                .copy_in(&format!(
                    "COPY instances ({INSTANCE_COLUMNS}, state_id, version, txn_id) FROM STDIN BINARY"
                ))
                .await?;
            let mut types = INSTANCE_TYPES.to_vec();
            types.extend([Type::INT8, Type::INT8, Type::INT8]);
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut kept: Vec<KeptResource> = Vec::new();
            pin_mut!(writer);
            pin_mut!(resources);
            while let Some(r) = resources.next().await {
                let digests =
                    copy_resource(writer.as_mut(), &r, &[&state_id, &1i64, &txn_id]).await?;
                kept.push(KeptResource::of(&r, &digests));
            }
            // A state that could not be read whole writes nothing: the COPY
            // is abandoned (the writer dropped) and the transaction with it.
            let head = head.await?;
            report.added = writer.finish().await?;
            tx.batch_execute("SET LOCAL stategraph.resource_digests = ''")
                .await?;
            copy_kept(&tx, state_id, &kept).await?;
            // The state held no rows: its count is what was copied.
            tx.execute(
                "UPDATE states SET instance_count =
                    (SELECT count(*) FROM instances WHERE state_id = $1 AND deposed = '')
                 WHERE id = $1",
                &[&state_id],
            )
            .await?;
            (head, None)
        } else {
            let writer = stage(&tx).await?;
            pin_mut!(writer);
            pin_mut!(resources);
            while let Some(r) = resources.next().await {
                copy_resource(writer.as_mut(), &r, &[]).await?;
            }
            let head = head.await?;
            let incoming = writer.finish().await?;
            (head, Some(incoming))
        };
        let (head, incoming) = staged;

        husks.sort_by(tfstate::resource_order);
        let husks = (!husks.is_empty()).then(|| {
            jsonb::encode(&serde_json::to_value(&husks).expect("serializable")).into_owned()
        });
        let extra = extra_json(&head.extra).map(|e| jsonb::encode(&e).into_owned());
        let check_results = jsonb::encode_opt(&head.check_results);
        let check_results = check_results.as_deref();
        let serial = head.serial;
        report.serial = serial;
        let meta_changed = !created
            && (stored_lineage != head.lineage
                || stored_serial != serial
                || row.get::<_, String>(3) != head.terraform_version
                || row.get::<_, Option<Value>>(4).as_ref() != check_results
                || row.get::<_, Option<Value>>(5) != extra
                || row.get::<_, Option<Value>>(6) != husks);
        if checked {
            if stored_lineage != head.lineage {
                return Err(StoreError::Lineage {
                    name: name.to_owned(),
                    given: head.lineage.clone(),
                    stored: stored_lineage,
                });
            }
            if serial < stored_serial {
                return Err(StoreError::OlderSerial {
                    name: name.to_owned(),
                    given: serial,
                    stored: stored_serial,
                });
            }
        }

        if let Some(incoming) = incoming {
            let counts = diff_staged(&tx, state_id, txn_id, incoming, None).await?;
            report.added = counts.added;
            report.changed = counts.changed;
            report.removed = counts.removed;
            report.unchanged = counts.unchanged;
        }

        report.outputs_changed = push_outputs(&tx, state_id, txn_id, &head.outputs, None).await?;

        let anything_changed = meta_changed
            || report.added + report.changed + report.removed + report.outputs_changed > 0;
        if checked && serial == stored_serial && anything_changed {
            return Err(StoreError::SameSerial { serial });
        }

        tx.execute(
            "UPDATE states SET lineage = $2, serial = $3, terraform_version = $4, check_results = $5,
                extra = $6, husks = $7, updated_at = now() WHERE id = $1",
            &[&state_id, &head.lineage, &serial, &head.terraform_version, &check_results, &extra, &husks],
        )
        .await?;
        let summary = json!({
            "added": report.added,
            "changed": report.changed,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "outputs_changed": report.outputs_changed,
            "forced": force,
        });
        tx.execute(
            "UPDATE transactions SET status = 'committed', finished_at = clock_timestamp(), summary = $2,
                terraform_version = $3, serial_after = $4, lineage_after = $5
             WHERE id = $1",
            &[&txn_id, &summary, &head.terraform_version, &serial, &head.lineage],
        )
        .await?;
        tx.commit().await?;
        if report.added + report.changed + report.removed >= BULK_ROWS {
            // A bulk load: refresh the planner's statistics and the
            // visibility map now rather than at autovacuum's next round, so
            // that the next cone or plan looks rows up by index (not by a
            // plan made for an empty table) and counts them from the index
            // alone. Best effort: the write is committed either way.
            let _ = client
                .batch_execute(
                    "VACUUM (ANALYZE) instances \
                     (state_id, deposed, address, config_address, module, dependencies)",
                )
                .await;
        }
        Ok(report)
    }

    /// The named state, or `None` if no such state is stored: every row as
    /// stored now ([`View::Latest`]).
    pub async fn pull(&self, name: &str) -> Result<Option<State>, StoreError> {
        Ok(self
            .snapshot(name, View::Latest)
            .await?
            .map(|snapshot| snapshot.state))
    }

    /// The named state as `view` sees it, with the version of each row
    /// read, all from one consistent snapshot of the database (a
    /// repeatable-read transaction: a write committing meanwhile is seen
    /// whole or not at all). `None` if no such state is stored.
    pub async fn snapshot(&self, name: &str, view: View) -> Result<Option<Snapshot>, StoreError> {
        let mut client = self.pool.get().await?;
        let client = consistent_read(&mut client).await?;
        let snapshot = read_snapshot(&client, name, view, Read::Whole).await?;
        client.commit().await?;
        Ok(snapshot)
    }

    /// The named state as [`View::Settled`] sees it, its rows without their
    /// content ([`Snapshot::light`]): what discovery and the change set
    /// need, in half the time of reading every row whole (0.30 s against
    /// 0.65 s at 100,001 instances). The
    /// rows a run hands terraform are then read whole by [`Store::hydrate`].
    pub async fn light_snapshot(&self, name: &str) -> Result<Option<Snapshot>, StoreError> {
        let mut client = self.pool.get().await?;
        let client = consistent_read(&mut client).await?;
        let snapshot = read_snapshot(&client, name, View::Settled, Read::Light).await?;
        client.commit().await?;
        Ok(snapshot)
    }

    /// The named state's head, outputs and resources without their
    /// instances, each with what PostgreSQL keeps of it (migration 0012:
    /// one row per resource, not per instance); a few milliseconds where
    /// reading every row light takes 0.3 s (100,001 instances in 3,001
    /// resources). `None` if no such state is stored, or a run is in
    /// flight on it (its checkpoints are in what is kept, not in what
    /// [`View::Settled`] sees), or an object has no digest yet.
    pub async fn resources(&self, name: &str) -> Result<Option<Summarized>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = consistent_read(&mut client).await?;
        let Some((state_id, fingerprint)) = settled_head(&tx, name).await? else {
            return Ok(None);
        };
        let head = tx
            .query_one(
                "SELECT lineage, serial, terraform_version, check_results, extra, husks
                 FROM states WHERE id = $1",
                &[&state_id],
            )
            .await?;
        let rows = tx
            .query(
                "SELECT module, mode, type, name, each, provider, objects, digest, dependencies
                 FROM resource_digests WHERE state_id = $1",
                &[&state_id],
            )
            .await?;
        let mut resources = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(digest) = row.get::<_, Option<String>>(7) else {
                return Ok(None);
            };
            let objects: i64 = row.get(6);
            resources.push(Summary {
                resource: Resource {
                    module: row.get(0),
                    mode: row.get(1),
                    type_: row.get(2),
                    name: row.get(3),
                    each: row.get(4),
                    provider: row.get(5),
                    instances: Vec::new(),
                    extra: Map::new(),
                },
                objects: objects as usize,
                digest: Some(digest),
                dependencies: row.get(8),
            });
        }
        for resource in husks(name, jsonb::decode_opt(head.get(5)))? {
            resources.push(Summary {
                resource,
                objects: 0,
                digest: None,
                dependencies: Vec::new(),
            });
        }
        let outputs = outputs_of(&tx, state_id, View::Settled).await?;
        tx.commit().await?;
        let object = |v: Option<Value>| match v {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let state = State {
            terraform_version: head.get(2),
            serial: head.get(1),
            lineage: head.get(0),
            outputs,
            resources: Vec::new(),
            check_results: jsonb::decode_opt(head.get(3)),
            extra: object(jsonb::decode_opt(head.get(4))),
        };
        Ok(Some(Summarized {
            state,
            resources,
            fingerprint,
        }))
    }

    /// The rows of the resources `keys` (module instance, configuration
    /// address) of the named state, read light ([`Snapshot::light`]), the
    /// rest of the state as `head` ([`Store::resources`]) read it: a
    /// snapshot of those resources only. `None` if the state changed since
    /// `head` was read, or a run is in flight on it.
    pub async fn light_resources(
        &self,
        name: &str,
        head: &Summarized,
        keys: &[(String, String)],
    ) -> Result<Option<Snapshot>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = consistent_read(&mut client).await?;
        let Some((state_id, fingerprint)) = settled_head(&tx, name).await? else {
            return Ok(None);
        };
        if fingerprint != head.fingerprint {
            return Ok(None);
        }
        let (modules, configs): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|(m, c)| (m.as_str(), c.as_str())).unzip();
        let params: [&(dyn ToSql + Sync); 3] = [&state_id, &modules, &configs];
        let query = format!(
            "SELECT {} FROM unnest($2::text[], $3::text[]) AS g (m, c)
             JOIN instances i ON i.state_id = $1 AND i.module COLLATE \"C\" = g.m
                             AND i.config_address = g.c",
            snapshot_columns(Read::Light)
        );
        let Rows {
            resources,
            versions,
            undigested,
        } = gather(&tx, &query, params).await?;
        tx.commit().await?;
        let mut state = head.state.with_resources(resources);
        state.sort();
        Ok(Some(Snapshot {
            state,
            versions,
            fingerprint: Some(fingerprint),
            light: true,
            undigested,
        }))
    }

    /// The resources of `skeleton` (resources of a [`Snapshot::light`]
    /// snapshot, or a part of one) with their rows read whole, as
    /// [`View::Settled`] sees them now; `None` if any of them is no longer
    /// the version `light` read (a write committed since: read again).
    pub async fn hydrate(
        &self,
        state_id: i64,
        light: &Snapshot,
        skeleton: &[Resource],
    ) -> Result<Option<Vec<Resource>>, StoreError> {
        let mut addresses: Vec<String> = Vec::new();
        for r in skeleton {
            let raddr = r.address();
            addresses.extend(r.instances.iter().map(|i| i.address(&raddr)));
        }
        addresses.sort_unstable();
        addresses.dedup();
        let mut client = self.pool.get().await?;
        let client = consistent_read(&mut client).await?;
        let params: [&(dyn ToSql + Sync); 2] = [&state_id, &addresses];
        let query = format!(
            "SELECT {} FROM ({}) i WHERE i.address = ANY($2)",
            snapshot_columns(Read::Whole),
            instance_rows(View::Settled)
        );
        let gathered = gather(&client, &query, params).await?;
        client.commit().await?;
        let mut whole: HashMap<String, Resource> = gathered
            .resources
            .into_iter()
            .map(|r| (r.address(), r))
            .collect();
        let mut out = Vec::with_capacity(skeleton.len());
        for r in skeleton {
            if r.instances.is_empty() {
                // Kept with the state's head, read whole already.
                out.push(r.clone());
                continue;
            }
            let raddr = r.address();
            let Some(mut found) = whole.remove(&raddr) else {
                return Ok(None);
            };
            let mut instances = Vec::with_capacity(r.instances.len());
            for i in &r.instances {
                let key = object_key(&i.address(&raddr), i.deposed.as_deref().unwrap_or(""));
                let read = found
                    .instances
                    .iter()
                    .position(|w| w.deposed == i.deposed && w.index_key == i.index_key);
                let (Some(read), Some(version)) = (read, light.versions.get(&key)) else {
                    return Ok(None);
                };
                if gathered.versions.get(&key) != Some(version) {
                    return Ok(None);
                }
                instances.push(found.instances.swap_remove(read));
            }
            found.instances = instances;
            out.push(found);
        }
        Ok(Some(out))
    }

    /// Stores the digest of each row of `snapshot` (read whole) that has
    /// none, where the row is still the version read: rows written before
    /// rows kept their digest are then read light too. Returns how many.
    pub async fn fill_digests(
        &self,
        state_id: i64,
        snapshot: &Snapshot,
    ) -> Result<u64, StoreError> {
        if snapshot.light || snapshot.undigested == 0 {
            return Ok(0);
        }
        let (mut addresses, mut deposed, mut versions, mut txns, mut digests) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in &snapshot.state.resources {
            let raddr = r.address();
            for i in r.instances.iter().filter(|i| i.stored_digest.0.is_none()) {
                let address = i.address(&raddr);
                let d = i.deposed.clone().unwrap_or_default();
                let Some((version, txn)) = snapshot.versions.get(&object_key(&address, &d)) else {
                    continue;
                };
                addresses.push(address);
                deposed.push(d);
                versions.push(*version);
                txns.push(*txn);
                digests.push(i.content_digest());
            }
        }
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "UPDATE instances c SET digest = u.digest
                 FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])
                      AS u(address, deposed, version, txn_id, digest)
                 WHERE c.state_id = $1 AND c.address = u.address AND c.deposed = u.deposed
                   AND c.version = u.version AND c.txn_id = u.txn_id AND c.digest IS NULL",
                &[&state_id, &addresses, &deposed, &versions, &txns, &digests],
            )
            .await?)
    }

    /// Whether the head and outputs of the named state, as
    /// [`View::Settled`] sees them now, are those `before` read.
    pub async fn same_head(&self, name: &str, before: &Snapshot) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let client = consistent_read(&mut client).await?;
        let now = head_fingerprint(&client, name).await?;
        client.commit().await?;
        Ok(matches!((&before.fingerprint, now), (Some(was), Some((_, now))) if *was == now))
    }

    /// The named state as [`View::Settled`] sees it now, unless nothing in
    /// it changed since `before` was read (the same version of every row,
    /// the same head and outputs): then no row's content is read (at
    /// 100,000 instances a tenth of a whole read).
    pub async fn settled_since(&self, name: &str, before: &Snapshot) -> Result<Since, StoreError> {
        let mut client = self.pool.get().await?;
        let client = consistent_read(&mut client).await?;
        let unchanged = match (&before.fingerprint, head_fingerprint(&client, name).await?) {
            (_, None) => return Ok(Since::Gone),
            (Some(was), Some((state_id, now))) if *was == now => {
                same_versions(&client, state_id, &before.versions).await?
            }
            _ => false,
        };
        let since = match unchanged {
            true => Since::Unchanged,
            false => match read_snapshot(&client, name, View::Settled, Read::Whole).await? {
                Some(snapshot) => Since::Changed(Box::new(snapshot)),
                None => Since::Gone,
            },
        };
        client.commit().await?;
        Ok(since)
    }
}

/// A read-only repeatable-read transaction on `client`: every query in it
/// sees one snapshot of the database.
async fn consistent_read(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// The head of state `name` and its outputs as [`View::Settled`] sees them,
/// as one digest (PostgreSQL's text of jsonb is the same for the same
/// value): with the versions of its rows, what says whether a state
/// changed. Its id too; `None` if no such state is stored.
async fn head_fingerprint(
    client: &tokio_postgres::Transaction<'_>,
    name: &str,
) -> Result<Option<(i64, String)>, StoreError> {
    let query = format!(
        "SELECT s.id, md5(row(s.lineage, s.serial, s.terraform_version, s.check_results, s.extra,
                              s.husks)::text
                          || coalesce((SELECT string_agg(o::text, ',' ORDER BY o.name)
                                       FROM ({}) o), ''))
         FROM states s WHERE s.name = $1",
        output_rows(View::Settled).replace("$1", "s.id")
    );
    Ok(client
        .query_opt(&query, &[&name])
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// [`head_fingerprint`] of a state no run is in flight on (then the rows
/// [`View::Settled`] sees are the latest, and what `resource_digests`
/// keeps is theirs); `None` if it is not stored or a run is in flight.
async fn settled_head(
    client: &tokio_postgres::Transaction<'_>,
    name: &str,
) -> Result<Option<(i64, String)>, StoreError> {
    let Some((state_id, fingerprint)) = head_fingerprint(client, name).await? else {
        return Ok(None);
    };
    let busy: bool = client
        .query_one(
            &format!("SELECT EXISTS ({})", in_flight_txns()),
            &[&state_id],
        )
        .await?
        .get(0);
    Ok((!busy).then_some((state_id, fingerprint)))
}

/// Whether the rows of state `state_id` as [`View::Settled`] sees them are
/// exactly `versions` (object key -> version and transaction).
async fn same_versions(
    client: &tokio_postgres::Transaction<'_>,
    state_id: i64,
    versions: &BTreeMap<String, (i64, i64)>,
) -> Result<bool, StoreError> {
    let params: [&(dyn ToSql + Sync); 1] = [&state_id];
    let query = format!(
        "SELECT address, deposed, version, txn_id FROM ({}) i",
        instance_rows(View::Settled)
    );
    let rows = client.query_raw(&query, params).await?;
    pin_mut!(rows);
    let mut seen = 0usize;
    while let Some(row) = rows.try_next().await? {
        let (address, deposed): (&str, &str) = (row.get(0), row.get(1));
        let version = (row.get::<_, i64>(2), row.get::<_, i64>(3));
        let found = match deposed {
            "" => versions.get(address),
            deposed => versions.get(&object_key(address, deposed)),
        };
        if found != Some(&version) {
            return Ok(false);
        }
        seen += 1;
    }
    Ok(seen == versions.len())
}

/// The key of an object in [`Snapshot::versions`].
fn object_key(address: &str, deposed: &str) -> String {
    match deposed {
        "" => address.to_owned(),
        deposed => format!("{address} deposed {deposed}"),
    }
}

/// How much of each row [`read_snapshot`] reads.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    /// Everything.
    Whole,
    /// No content (attributes, private data, extra keys): addresses,
    /// dependencies, versions and stored digests.
    Light,
}

/// The columns of a row [`read_snapshot`] and [`Store::hydrate`] read,
/// in the order [`Gathered::push_row`] takes them.
fn snapshot_columns(read: Read) -> &'static str {
    match read {
        Read::Whole => {
            "address, deposed, module, mode, type, name, each, provider, index_key, status, \
             schema_version, attributes, attributes_flat, sensitive_attributes, private, \
             dependencies, create_before_destroy, extra, resource_extra, version, txn_id, digest"
        }
        Read::Light => {
            "address, deposed, module, mode, type, name, each, provider, index_key, status, \
             schema_version, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, dependencies, \
             create_before_destroy, NULL::jsonb, NULL::jsonb, version, txn_id, digest"
        }
    }
}

/// Resources being gathered from rows, in the order first seen.
#[derive(Default)]
struct Gathered {
    resources: Vec<Resource>,
    by_address: HashMap<String, usize>,
    /// The last row's resource (rows of one resource mostly come together).
    last: Option<(String, usize)>,
    versions: Vec<(String, (i64, i64))>,
    undigested: usize,
}

/// What [`Gathered`] gathered.
struct Rows {
    resources: Vec<Resource>,
    versions: BTreeMap<String, (i64, i64)>,
    undigested: usize,
}

impl Gathered {
    /// Adds one row of [`snapshot_columns`] to its resource.
    fn push_row(&mut self, row: &tokio_postgres::Row) {
        let object = |v: Option<Value>| match v {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let (module, mode, type_, rname): (&str, &str, &str, &str) =
            (row.get(2), row.get(3), row.get(4), row.get(5));
        let key = format!("{module}\u{0}{mode}\u{0}{type_}\u{0}{rname}");
        let idx = match &self.last {
            Some((last, idx)) if *last == key => *idx,
            _ => {
                let idx = match self.by_address.get(&key) {
                    Some(i) => *i,
                    None => {
                        self.resources.push(Resource {
                            module: module.to_owned(),
                            mode: mode.to_owned(),
                            type_: type_.to_owned(),
                            name: rname.to_owned(),
                            each: row.get(6),
                            provider: row.get(7),
                            instances: Vec::new(),
                            extra: object(jsonb::decode_opt(row.get(18))),
                        });
                        self.by_address
                            .insert(key.clone(), self.resources.len() - 1);
                        self.resources.len() - 1
                    }
                };
                self.last = Some((key, idx));
                idx
            }
        };
        let deposed: String = row.get(1);
        let key = object_key(row.get(0), &deposed);
        self.versions.push((key, (row.get(19), row.get(20))));
        let digest: Option<String> = row.get(21);
        self.undigested += usize::from(digest.is_none());
        self.resources[idx].instances.push(Instance {
            index_key: jsonb::decode_opt(row.get(8)),
            status: row.get(9),
            deposed: (!deposed.is_empty()).then_some(deposed),
            schema_version: row.get(10),
            attributes: jsonb::decode_opt(row.get(11)),
            attributes_flat: jsonb::decode_opt(row.get(12)),
            sensitive_attributes: jsonb::decode_opt(row.get(13)),
            private: row.get(14),
            dependencies: row.get(15),
            create_before_destroy: row.get(16),
            extra: object(jsonb::decode_opt(row.get(17))),
            stored_digest: StoredDigest(digest),
        });
    }

    fn finish(self) -> Rows {
        Rows {
            resources: self.resources,
            // Sorted once and built in bulk, not inserted one by one.
            versions: self.versions.into_iter().collect(),
            undigested: self.undigested,
        }
    }
}

/// The root outputs of state `state_id` as `view` sees them.
async fn outputs_of(
    client: &tokio_postgres::Transaction<'_>,
    state_id: i64,
    view: View,
) -> Result<Vec<(String, Output)>, StoreError> {
    let object = |v: Option<Value>| match v {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Ok(client
        .query(&output_rows(view), &[&state_id])
        .await?
        .into_iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                Output {
                    value: jsonb::decode(r.get(1)),
                    type_: jsonb::decode(r.get(2)),
                    sensitive: r.get(3),
                    extra: object(jsonb::decode_opt(r.get(4))),
                },
            )
        })
        .collect())
}

/// The resources a state holds with no instances (`states.husks`).
fn husks(name: &str, stored: Option<Value>) -> Result<Vec<Resource>, StoreError> {
    let Some(Value::Array(husks)) = stored else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for h in husks {
        let mut doc = json!({"version": 4, "serial": 0, "lineage": "", "resources": [h]});
        doc["terraform_version"] = json!("");
        let parsed =
            crate::tfstate::parse(doc.to_string().as_bytes()).map_err(|e| StoreError::Corrupt {
                name: name.to_owned(),
                problem: format!("stored empty resource: {e}"),
            })?;
        out.extend(parsed.resources);
    }
    Ok(out)
}

/// The rows `query` (columns of [`snapshot_columns`]) returns, gathered
/// into their resources.
async fn gather<const N: usize>(
    client: &tokio_postgres::Transaction<'_>,
    query: &str,
    params: [&(dyn ToSql + Sync); N],
) -> Result<Rows, StoreError> {
    let rows = client.query_raw(query, params).await?;
    let mut gathered = Gathered::default();
    pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        gathered.push_row(&row);
    }
    Ok(gathered.finish())
}

/// The named state as `view` sees it, read in `client`'s transaction.
async fn read_snapshot(
    client: &tokio_postgres::Transaction<'_>,
    name: &str,
    view: View,
    read: Read,
) -> Result<Option<Snapshot>, StoreError> {
    let fingerprint = match view {
        View::At(_) => None,
        View::Latest | View::Settled => head_fingerprint(client, name)
            .await?
            .map(|(_, digest)| digest),
    };
    let Some(head) = client
        .query_opt(
            "SELECT id, lineage, serial, terraform_version, check_results, extra, husks
             FROM states WHERE name = $1",
            &[&name],
        )
        .await?
    else {
        return Ok(None);
    };
    let state_id: i64 = head.get(0);
    let (mut serial, mut lineage, mut terraform_version): (i64, String, String) =
        (head.get(2), head.get(1), head.get(3));
    if let View::At(t) = view {
        let Some(at) = client
            .query_opt(
                "SELECT serial_after, lineage_after, coalesce(terraform_version, '')
                 FROM transactions
                 WHERE state_id = $1 AND id <= $2 AND serial_after IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                &[&state_id, &t],
            )
            .await?
        else {
            return Ok(None);
        };
        serial = at.get(0);
        lineage = at.get::<_, Option<String>>(1).unwrap_or(lineage);
        let version: String = at.get(2);
        if !version.is_empty() {
            terraform_version = version;
        }
    }
    let object = |v: Option<Value>| match v {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };

    let params: [&(dyn ToSql + Sync); 1] = [&state_id];
    let query = format!(
        "SELECT {} FROM ({}) i",
        snapshot_columns(read),
        instance_rows(view)
    );
    let Rows {
        mut resources,
        versions,
        undigested,
    } = gather(client, &query, params).await?;
    resources.extend(husks(name, jsonb::decode_opt(head.get(6)))?);

    let outputs = outputs_of(client, state_id, view).await?;

    let mut state = State {
        terraform_version,
        serial,
        lineage,
        outputs,
        resources,
        check_results: jsonb::decode_opt(head.get(4)),
        extra: object(jsonb::decode_opt(head.get(5))),
    };
    state.sort();
    Ok(Some(Snapshot {
        state,
        versions,
        fingerprint,
        light: read == Read::Light,
        undigested,
    }))
}

impl Store {
    /// Current instances and their dependencies, as `view` sees them: the
    /// graph's raw material.
    pub async fn graph_rows(
        &self,
        name: &str,
        view: View,
    ) -> Result<Option<Vec<GraphRow>>, StoreError> {
        let client = self.pool.get().await?;
        let Some(head) = client
            .query_opt("SELECT id FROM states WHERE name = $1", &[&name])
            .await?
        else {
            return Ok(None);
        };
        let state_id: i64 = head.get(0);
        let params: [&(dyn ToSql + Sync); 1] = [&state_id];
        let rows = client
            .query_raw(
                &format!(
                    "SELECT address, config_address, dependencies FROM ({}) i
                     WHERE deposed = ''",
                    instance_rows(view)
                ),
                params,
            )
            .await?;
        pin_mut!(rows);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            out.push(GraphRow {
                address: row.get(0),
                config_address: row.get(1),
                dependencies: row.get(2),
            });
        }
        Ok(Some(out))
    }

    /// The rows the change cone of `targets` reaches, and how many
    /// instances the state holds: the instances the targets select,
    /// everything downstream of them and everything those depend on, read
    /// by index (dependents through the GIN index on `dependencies`,
    /// dependencies by their module instance) instead of the whole state.
    /// The graph built from them gives the same cone as the whole state's.
    /// Once the cone reaches half the state, the whole state is read instead
    /// (one query costs less than a round trip per level). `None` if no
    /// such state is stored.
    pub async fn cone_rows(
        &self,
        name: &str,
        targets: &[Target],
    ) -> Result<Option<ConeRows>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = consistent_read(&mut client).await?;
        // The count is kept by the writes of `instances` (migration 0010:
        // the push's COPY and the merge move it): counting the rows would
        // cost more than the cone at 100,000 instances.
        let Some(head) = tx
            .query_opt(
                "SELECT id, instance_count FROM states WHERE name = $1",
                &[&name],
            )
            .await?
        else {
            return Ok(None);
        };
        let state_id: i64 = head.get(0);
        let instances: i64 = head.get(1);
        const COLUMNS: &str = "address, config_address, dependencies";
        let graph_row = |r: &tokio_postgres::Row| GraphRow {
            address: r.get(0),
            config_address: r.get(1),
            dependencies: r.get(2),
        };

        // The instances the targets select.
        let mut known: HashMap<String, GraphRow> = HashMap::new();
        let mut frontier: Vec<GraphRow> = Vec::new();
        for target in targets {
            let rows = match target {
                Target::Instance(i) => {
                    tx.query(
                        &format!("SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND address = $2 AND deposed = ''"),
                        &[&state_id, &i.to_string()],
                    )
                    .await?
                }
                Target::Resource(r) => {
                    tx.query(
                        &format!(
                            "SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''
                             AND module COLLATE \"C\" = $2 AND config_address = $3"
                        ),
                        &[&state_id, &r.module.to_string(), &r.config_address()],
                    )
                    .await?
                }
                Target::Module(path) => {
                    // Its steps up to the first without a key (which
                    // selects every instance of that module call).
                    let mut prefix = String::new();
                    for step in &path.0 {
                        if !prefix.is_empty() {
                            prefix.push('.');
                        }
                        prefix.push_str("module.");
                        prefix.push_str(&step.name);
                        match &step.key {
                            Some(key) => prefix.push_str(&format!("[{key}]")),
                            None => break,
                        }
                    }
                    tx.query(
                        &format!(
                            "SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''
                             AND module COLLATE \"C\" >= $2 AND module COLLATE \"C\" < $3"
                        ),
                        &[&state_id, &prefix, &prefix_end(&prefix)],
                    )
                    .await?
                }
            };
            for row in &rows {
                let row = graph_row(row);
                let selected =
                    crate::address::parse_instance(&row.address).is_ok_and(|a| target.matches(&a));
                if selected && !known.contains_key(&row.address) {
                    known.insert(row.address.clone(), row.clone());
                    frontier.push(row);
                }
            }
        }

        // A cone of most of the state costs more read by index, a round
        // trip per level, than read whole: past half the state, it is.
        let whole = |known: &HashMap<String, GraphRow>| known.len() as i64 * 2 > instances;
        let all = format!("SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''");

        // Downstream: rows depending on the frontier's resources, kept
        // where that dependency binds to a frontier instance.
        while !frontier.is_empty() {
            if whole(&known) {
                let rows = tx.query(&all, &[&state_id]).await?;
                return Ok(Some(ConeRows {
                    rows: rows.iter().map(graph_row).collect(),
                    instances: instances as usize,
                }));
            }
            let mut by_config: HashMap<&str, Vec<&str>> = HashMap::new();
            for r in &frontier {
                by_config
                    .entry(r.config_address.as_str())
                    .or_default()
                    .push(r.address.as_str());
            }
            // Dependents of a root instance may be anywhere; those of an
            // instance inside a module call are bound to its first step's
            // key: rows of the call's other instances are left out before
            // they are sent. Asked apart, so that a root row reached (an
            // aggregate over every team, say) does not unfilter the rest.
            let (mut root_configs, mut module_configs) = (Vec::new(), Vec::new());
            let (mut firsts, mut calls) = (Vec::new(), Vec::new());
            for r in &frontier {
                match first_module_step(&r.address) {
                    None => root_configs.push(r.config_address.as_str()),
                    Some((call, instance)) => {
                        module_configs.push(r.config_address.as_str());
                        calls.push(call);
                        firsts.push(instance);
                    }
                }
            }
            for v in [
                &mut root_configs,
                &mut module_configs,
                &mut calls,
                &mut firsts,
            ] {
                v.sort_unstable();
                v.dedup();
            }
            let mut rows = Vec::new();
            if !root_configs.is_empty() {
                rows.extend(
                    tx.query(
                        &format!(
                            "SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''
                             AND dependencies && $2::text[]"
                        ),
                        &[&state_id, &root_configs],
                    )
                    .await?,
                );
            }
            if module_configs.is_empty() {
                // Nothing inside a module call in this level.
            } else if firsts.len() > RANGED_FIRSTS {
                rows.extend(
                    tx.query(
                        &format!(
                            "SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''
                             AND dependencies && $2::text[]
                             AND (EXISTS (SELECT 1 FROM unnest($3::text[]) p
                                          WHERE module = p OR starts_with(module, p || '.'))
                                  OR NOT EXISTS (SELECT 1 FROM unnest($4::text[]) c
                                          WHERE module = c OR starts_with(module, c || '[')
                                             OR starts_with(module, c || '.')))"
                        ),
                        &[&state_id, &module_configs, &firsts, &calls],
                    )
                    .await?,
                );
            } else {
                // The same rows, asked by ranges of module addresses (the
                // module index) rather than through the GIN index alone,
                // which holds every instance of the call that depends on
                // the frontier's resources: a change to a resource of one
                // instance of a module called 1,000 times reads that
                // instance's rows and those outside the call, not 1,000
                // instances' rows.
                let ranges = dependent_ranges(&firsts, &calls);
                let mut query = String::new();
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&state_id, &module_configs];
                for (i, (from, to)) in ranges.iter().enumerate() {
                    if i > 0 {
                        query.push_str(" UNION ALL ");
                    }
                    query.push_str(&format!(
                        "SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''
                         AND dependencies && $2::text[]
                         AND module COLLATE \"C\" >= ${} AND module COLLATE \"C\" < ${}",
                        params.len() + 1,
                        params.len() + 2
                    ));
                    params.push(from);
                    params.push(to);
                }
                rows.extend(tx.query(&query, &params).await?);
            }
            let mut next = Vec::new();
            for row in &rows {
                let row = graph_row(row);
                if known.contains_key(&row.address) {
                    continue;
                }
                let reached = row.dependencies.iter().any(|d| {
                    let (Some(sources), Some(scope)) =
                        (by_config.get(d.as_str()), dependency_scope(&row.address, d))
                    else {
                        return false;
                    };
                    sources.iter().any(|s| scope.holds(s))
                });
                if reached {
                    known.insert(row.address.clone(), row.clone());
                    next.push(row);
                }
            }
            frontier = next;
        }

        // Upstream: what every row reached depends on, by module instance.
        let mut todo: Vec<GraphRow> = known.values().cloned().collect();
        // (dependency, whether in exactly the module, module): each asked once.
        let mut asked: HashSet<(String, bool, String)> = HashSet::new();
        while !todo.is_empty() {
            if whole(&known) {
                let rows = tx.query(&all, &[&state_id]).await?;
                return Ok(Some(ConeRows {
                    rows: rows.iter().map(graph_row).collect(),
                    instances: instances as usize,
                }));
            }
            let (mut exact_configs, mut exact_modules) = (Vec::new(), Vec::new());
            let mut under: Vec<(String, String)> = Vec::new();
            for row in &todo {
                for d in &row.dependencies {
                    let Some(scope) = dependency_scope(&row.address, d) else {
                        continue;
                    };
                    let (exact, module) = match scope {
                        DependencyScope::Module(m) => (true, m),
                        DependencyScope::Under(p) => (false, p),
                    };
                    if !asked.insert((d.clone(), exact, module.to_owned())) {
                        continue;
                    }
                    if exact {
                        exact_configs.push(d.clone());
                        exact_modules.push(module.to_owned());
                    } else {
                        under.push((d.clone(), module.to_owned()));
                    }
                }
            }
            let mut rows = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM instances i
                         JOIN unnest($2::text[], $3::text[]) AS w(config, module)
                           ON i.module COLLATE \"C\" = w.module AND i.config_address = w.config
                         WHERE i.state_id = $1 AND i.deposed = ''"
                    ),
                    &[&state_id, &exact_configs, &exact_modules],
                )
                .await?;
            for (config, prefix) in &under {
                let found = if prefix.is_empty() {
                    tx.query(
                        &format!("SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = '' AND config_address = $2"),
                        &[&state_id, config],
                    )
                    .await?
                } else {
                    let from = format!("{prefix}.");
                    tx.query(
                        &format!(
                            "SELECT {COLUMNS} FROM instances WHERE state_id = $1 AND deposed = ''
                             AND module COLLATE \"C\" >= $2 AND module COLLATE \"C\" < $3
                             AND config_address = $4"
                        ),
                        &[&state_id, &from, &prefix_end(&from), config],
                    )
                    .await?
                };
                rows.extend(found);
            }
            todo.clear();
            for row in &rows {
                let row = graph_row(row);
                if !known.contains_key(&row.address) {
                    known.insert(row.address.clone(), row.clone());
                    todo.push(row);
                }
            }
        }
        tx.commit().await?;
        Ok(Some(ConeRows {
            rows: known.into_values().collect(),
            instances: instances as usize,
        }))
    }

    /// Writes what terraform changed, refusing anything outside the write
    /// set, in one transaction fenced by the lock holder's lease. The
    /// state's serial goes up by one per merge, whatever terraform wrote, so
    /// that concurrent disjoint merges keep it increasing.
    pub async fn merge(&self, m: &Merge<'_>) -> Result<PushReport, StoreError> {
        let write: HashSet<&str> = m.write_set.iter().map(String::as_str).collect();
        let outside = changed_outside(m.before, m.after, &write);
        if !outside.is_empty() {
            return Err(StoreError::OutsideWriteSet { addresses: outside });
        }

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let head = tx
            .query_opt(
                "SELECT id, lineage, serial FROM states WHERE name = $1 FOR UPDATE",
                &[&m.state_name],
            )
            .await?
            .ok_or_else(|| StoreError::NoState {
                name: m.state_name.to_owned(),
            })?;
        let state_id: i64 = head.get(0);
        let lineage: String = head.get(1);
        let serial: i64 = head.get(2);
        if lineage != m.after.lineage {
            return Err(StoreError::LineageChanged {
                name: m.state_name.to_owned(),
                stored: lineage,
                given: m.after.lineage.clone(),
            });
        }
        if let Some(holder) = m.holder_id {
            if !Store::fence(&tx, holder, Some(state_id)).await? {
                return Err(StoreError::LeaseLost {
                    name: m.state_name.to_owned(),
                });
            }
        }
        let new_serial = serial + 1;
        let txn_id: i64 = match m.txn_id {
            Some(id) => {
                let status: Option<String> = tx
                    .query_opt(
                        "SELECT status FROM transactions WHERE id = $1 AND state_id = $2 FOR UPDATE",
                        &[&id, &state_id],
                    )
                    .await?
                    .map(|r| r.get(0));
                if status.as_deref() != Some("running") {
                    return Err(StoreError::LeaseLost {
                        name: m.state_name.to_owned(),
                    });
                }
                id
            }
            None => tx
                .query_one(
                    "INSERT INTO transactions (state_id, kind, command, actor_user, actor_host, ci_job,
                        terraform_version, status, serial_before, lineage_before, lineage_after,
                        cone, started_at, git_commit, git_branch)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $9, $10,
                             COALESCE($11, now()), $12, $13) RETURNING id",
                    &[
                        &state_id,
                        &m.kind,
                        &m.command,
                        &m.actor.user,
                        &m.actor.host,
                        &m.actor.ci_job,
                        &m.after.terraform_version,
                        &serial,
                        &lineage,
                        &m.cone,
                        &m.started_at,
                        &m.actor.git_commit,
                        &m.actor.git_branch,
                    ],
                )
                .await?
                .get(0),
        };

        // Only the write set's objects, as terraform left them.
        let mut subset = m.after.clone();
        subset.resources.retain_mut(|r| {
            let raddr = r.address();
            r.instances
                .retain(|i| write.contains(i.address(&raddr).as_str()));
            !r.instances.is_empty()
        });
        let rows = stage_and_diff(&tx, state_id, txn_id, &subset, Some(m.write_set)).await?;
        let outputs_changed = push_outputs(
            &tx,
            state_id,
            txn_id,
            &m.after.outputs,
            Some(&changed_outputs(m.before, m.after)),
        )
        .await?;
        if rows.added + rows.changed + rows.removed + outputs_changed == 0 && !m.finish {
            // A checkpoint with nothing new: leave the state's serial alone.
            tx.rollback().await?;
            return Ok(PushReport {
                txn_id,
                ..PushReport::default()
            });
        }

        tx.execute(
            "UPDATE states SET serial = $2, terraform_version = $3, updated_at = now() WHERE id = $1",
            &[&state_id, &new_serial, &m.after.terraform_version],
        )
        .await?;
        // What the whole run did so far: the state it was handed against
        // what terraform wrote, over the write set (checkpoints included).
        let counts = ObjectChanges::between(m.before, m.after, Some(&write));
        let mut summary = m.summary.clone();
        if let Value::Object(map) = &mut summary {
            map.insert("added".into(), json!(counts.added.len()));
            map.insert("changed".into(), json!(counts.changed.len()));
            map.insert("removed".into(), json!(counts.removed.len()));
            map.insert("outputs_changed".into(), json!(outputs_changed));
            let mut written: Vec<&String> = counts
                .added
                .iter()
                .chain(&counts.changed)
                .chain(&counts.removed)
                .collect();
            written.sort();
            written.dedup();
            written.truncate(RECORDED_SHOWN);
            map.insert("recorded".into(), json!(written));
        }
        let status = if m.finish { "committed" } else { "running" };
        tx.execute(
            "UPDATE transactions
             SET status = $2, serial_after = $3, summary = coalesce(summary, '{}'::jsonb) || $4,
                 finished_at = CASE WHEN $2 = 'committed' THEN clock_timestamp() END
             WHERE id = $1",
            &[&txn_id, &status, &new_serial, &summary],
        )
        .await?;
        tx.commit().await?;
        Ok(PushReport {
            txn_id,
            created: false,
            added: counts.added.len() as u64,
            changed: counts.changed.len() as u64,
            removed: counts.removed.len() as u64,
            unchanged: rows.unchanged,
            outputs_changed,
            serial: new_serial,
        })
    }

    /// Opens the transaction of a run that holds its locks and is about to
    /// let terraform write: a `running` entry in the log, linked to the
    /// holder, so that if the run dies its lease's expiry marks it aborted
    /// and the next run on the state reports it. Fenced like a merge.
    pub async fn begin(&self, b: &Begin<'_>) -> Result<i64, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let head = tx
            .query_opt(
                "SELECT id, lineage, serial, terraform_version FROM states WHERE name = $1",
                &[&b.state_name],
            )
            .await?
            .ok_or_else(|| StoreError::NoState {
                name: b.state_name.to_owned(),
            })?;
        let state_id: i64 = head.get(0);
        let (lineage, serial, version): (String, i64, String) =
            (head.get(1), head.get(2), head.get(3));
        if !Store::fence(&tx, b.holder_id, Some(state_id)).await? {
            return Err(StoreError::LeaseLost {
                name: b.state_name.to_owned(),
            });
        }
        let txn_id: i64 = tx
            .query_one(
                "INSERT INTO transactions (state_id, kind, command, actor_user, actor_host, ci_job,
                    terraform_version, status, serial_before, lineage_before, lineage_after,
                    cone, summary, started_at, git_commit, git_branch)
                 SELECT $1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $9, $10, $11, h.acquired_at,
                        $13, $14
                 FROM lock_holders h WHERE h.id = $12
                 RETURNING id",
                &[
                    &state_id,
                    &b.kind,
                    &b.command,
                    &b.actor.user,
                    &b.actor.host,
                    &b.actor.ci_job,
                    &version,
                    &serial,
                    &lineage,
                    &b.cone,
                    &b.summary,
                    &b.holder_id,
                    &b.actor.git_commit,
                    &b.actor.git_branch,
                ],
            )
            .await?
            .get(0);
        tx.execute(
            "UPDATE lock_holders SET txn_id = $2 WHERE id = $1",
            &[&b.holder_id, &txn_id],
        )
        .await?;
        tx.commit().await?;
        Ok(txn_id)
    }

    /// Marks the transaction of a run whose result could not be written
    /// `failed`, with what terraform changed (over `write`, between
    /// `before` and `after`) and `note` (why, and where the result is
    /// kept) in its summary, so that the log shows it instead of losing
    /// it. A transaction that committed is left alone.
    pub async fn fail(
        &self,
        txn_id: i64,
        before: &State,
        after: &State,
        write: &[String],
        note: Value,
    ) -> Result<(), StoreError> {
        let scope: HashSet<&str> = write.iter().map(String::as_str).collect();
        let changes = ObjectChanges::between(before, after, Some(&scope));
        let mut summary = json!({
            "added": changes.added.len(),
            "changed": changes.changed.len(),
            "removed": changes.removed.len(),
            "not_written": {
                "added": changes.added,
                "changed": changes.changed,
                "removed": changes.removed,
            },
        });
        if let (Value::Object(map), Value::Object(note)) = (&mut summary, note) {
            map.extend(note);
        }
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE transactions
                 SET status = 'failed', finished_at = clock_timestamp(),
                     summary = coalesce(summary, '{}'::jsonb) || $2
                 WHERE id = $1 AND status <> 'committed'",
                &[&txn_id, &summary],
            )
            .await?;
        Ok(())
    }

    /// Notes on the transaction of a run whose result `recover` wrote (in
    /// transaction `by`) that it failed and what finished it.
    pub async fn recovered(&self, txn_id: i64, by: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE transactions
                 SET status = 'failed', finished_at = coalesce(finished_at, clock_timestamp()),
                     summary = coalesce(summary, '{}'::jsonb) || jsonb_build_object('recovered_by', $2::bigint)
                 WHERE id = $1 AND status <> 'committed'",
                &[&txn_id, &by],
            )
            .await?;
        Ok(())
    }

    /// Where the state was created from ([`crate::checkout::Origin`]), if
    /// recorded.
    pub async fn origin(&self, state_id: i64) -> Result<Option<Value>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT origin FROM states WHERE id = $1", &[&state_id])
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Records where the state was created from.
    pub async fn set_origin(&self, state_id: i64, origin: &Value) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE states SET origin = $2 WHERE id = $1",
                &[&state_id, origin],
            )
            .await?;
        Ok(())
    }

    /// Who last wrote each of `addresses` (current objects) in state
    /// `name`: the transaction, and the commit and branch it ran from.
    pub async fn last_writers(
        &self,
        name: &str,
        addresses: &[String],
    ) -> Result<BTreeMap<String, LastWriter>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT i.address, t.id, t.git_commit, t.git_branch, t.command
                 FROM instances i
                 JOIN states s ON s.id = i.state_id
                 JOIN transactions t ON t.id = i.txn_id
                 WHERE s.name = $1 AND i.deposed = '' AND i.address = ANY($2)",
                &[&name, &addresses],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    LastWriter {
                        txn_id: r.get(1),
                        git_commit: r.get(2),
                        git_branch: r.get(3),
                        command: r.get(4),
                    },
                )
            })
            .collect())
    }

    /// The newest `limit` transactions, of one state or of all.
    pub async fn log(&self, state: Option<&str>, limit: i64) -> Result<Vec<LogEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT t.id, s.name, t.kind, t.command, t.actor_user, t.actor_host, t.ci_job,
                        t.terraform_version, t.status, t.started_at, t.finished_at,
                        t.serial_before, t.serial_after, t.cone, t.summary
                 FROM transactions t JOIN states s ON s.id = t.state_id
                 WHERE $1::text IS NULL OR s.name = $1
                 ORDER BY t.id DESC LIMIT $2",
                &[&state, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| LogEntry {
                id: r.get(0),
                state: r.get(1),
                kind: r.get(2),
                command: r.get(3),
                user: r.get(4),
                host: r.get(5),
                ci_job: r.get(6),
                terraform_version: r.get(7),
                status: r.get(8),
                started_at: r.get(9),
                finished_at: r.get(10),
                serial_before: r.get(11),
                serial_after: r.get(12),
                cone: r.get(13),
                summary: r.get(14),
            })
            .collect())
    }

    /// Version and writing transaction of every object of `addresses`
    /// (deposed objects keyed `ADDRESS deposed KEY`), for saved plans.
    pub async fn versions(
        &self,
        name: &str,
        addresses: &[String],
    ) -> Result<std::collections::BTreeMap<String, (i64, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT i.address, i.deposed, i.version, i.txn_id
                 FROM instances i JOIN states s ON s.id = i.state_id
                 WHERE s.name = $1 AND i.address = ANY($2)",
                &[&name, &addresses],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (object_key(r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect())
    }

    /// For objects of `addresses` that were removed, the transaction that
    /// removed each last (keyed like [`Store::versions`]).
    pub async fn removed_by(
        &self,
        name: &str,
        addresses: &[String],
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (h.address, h.deposed) h.address, h.deposed, h.superseded_by,
                        h.removed
                 FROM instance_history h JOIN states s ON s.id = h.state_id
                 WHERE s.name = $1 AND h.address = ANY($2)
                 ORDER BY h.address, h.deposed, h.version DESC",
                &[&name, &addresses],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.get::<_, bool>(3))
            .map(|r| (object_key(r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    /// What was derived from the configuration with this fingerprint, if
    /// a run stored it (see [`crate::terraform::fingerprint`]).
    pub async fn config_info(&self, fingerprint: &str) -> Result<Option<Value>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT info FROM config_cache WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// Stores what was derived from the configuration with this fingerprint.
    pub async fn put_config_info(&self, fingerprint: &str, info: &Value) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO config_cache (fingerprint, info) VALUES ($1, $2)
                 ON CONFLICT (fingerprint) DO NOTHING",
                &[&fingerprint, info],
            )
            .await?;
        Ok(())
    }

    /// The size and duration of terraform's last refresh-less plan of a
    /// whole configuration on this database: `(instances, seconds)`, kept
    /// in `config_cache` under a key no fingerprint takes.
    pub async fn whole_plan_rate(&self) -> Result<Option<(usize, f64)>, StoreError> {
        let Some(v) = self.config_info(WHOLE_PLAN_RATE).await? else {
            return Ok(None);
        };
        let n = v["instances"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok());
        Ok(n.zip(v["seconds"].as_f64()))
    }

    /// Records [`Store::whole_plan_rate`].
    pub async fn put_whole_plan_rate(
        &self,
        instances: usize,
        seconds: f64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let info = serde_json::json!({ "instances": instances, "seconds": seconds });
        client
            .execute(
                "INSERT INTO config_cache (fingerprint, info) VALUES ($1, $2)
                 ON CONFLICT (fingerprint) DO UPDATE SET info = EXCLUDED.info",
                &[&WHOLE_PLAN_RATE, &info],
            )
            .await?;
        Ok(())
    }

    /// The discovery baseline of a state: block key to `[hash, digest, text hash]`.
    pub async fn baseline(
        &self,
        state_id: i64,
    ) -> Result<HashMap<String, [String; 3]>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT entries FROM discovery_baseline WHERE state_id = $1",
                &[&state_id],
            )
            .await?;
        let mut out = HashMap::new();
        if let Some(Value::Object(entries)) = row.map(|r| r.get::<_, Value>(0)) {
            for (key, v) in entries {
                if let (Some(h), Some(d), Some(t)) = (v[0].as_str(), v[1].as_str(), v[2].as_str()) {
                    out.insert(key, [h.to_owned(), d.to_owned(), t.to_owned()]);
                }
            }
        }
        Ok(out)
    }

    /// Adds or replaces baseline entries (others are kept: concurrent runs
    /// each merge their own blocks in one statement).
    pub async fn put_baseline(
        &self,
        state_id: i64,
        entries: &[(String, [String; 3])],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let object: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.to_vec())))
            .collect();
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO discovery_baseline (state_id, entries) VALUES ($1, $2)
                 ON CONFLICT (state_id) DO UPDATE
                 SET entries = discovery_baseline.entries || EXCLUDED.entries, updated_at = now()",
                &[&state_id, &Value::Object(object)],
            )
            .await?;
        Ok(())
    }

    /// What terraform commands cost on a state with these remote
    /// `providers`, as measured on its earlier runs: wall seconds of one
    /// command refreshing nothing, of one with a second beside it, and per
    /// refreshed instance (`None` where not measured).
    pub async fn terraform_costs(
        &self,
        state_id: i64,
        providers: &str,
    ) -> Result<[Option<f64>; 3], StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT command_s, pair_s, per_instance_s FROM terraform_costs
                 WHERE state_id = $1 AND providers = $2",
                &[&state_id, &providers],
            )
            .await?;
        Ok(row.map_or([None; 3], |r| [r.get(0), r.get(1), r.get(2)]))
    }

    /// Records what terraform commands cost (see [`Store::terraform_costs`]).
    pub async fn put_terraform_costs(
        &self,
        state_id: i64,
        providers: &str,
        costs: [Option<f64>; 3],
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO terraform_costs (state_id, providers, command_s, pair_s, per_instance_s)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (state_id, providers) DO UPDATE
                 SET command_s = EXCLUDED.command_s, pair_s = EXCLUDED.pair_s,
                     per_instance_s = EXCLUDED.per_instance_s, updated_at = now()",
                &[
                    &state_id,
                    &providers,
                    &costs[0],
                    &costs[1],
                    &costs[2],
                ],
            )
            .await?;
        Ok(())
    }

    /// The id of the named state, if it is stored.
    pub async fn state_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt("SELECT id FROM states WHERE name = $1", &[&name])
            .await?
            .map(|r| r.get(0)))
    }

    /// The instance addresses of state `state_id`, each once, in byte
    /// order: what a lock of the whole state takes (terraform's `http`
    /// backend), read from the index without building the state.
    pub async fn instance_addresses(&self, state_id: i64) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let mut addresses: Vec<String> = client
            .query(
                "SELECT DISTINCT address FROM instances WHERE state_id = $1",
                &[&state_id],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        addresses.sort();
        Ok(addresses)
    }

    /// Deletes state `state_id` with its rows, history, transactions and
    /// locks (`workspace delete`), in one transaction; with `fence`, only
    /// while that holder (the deleting run) still holds its lease.
    pub async fn delete_state(
        &self,
        name: &str,
        state_id: i64,
        fence: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(holder) = fence {
            if !Store::fence(&tx, holder, Some(state_id)).await? {
                return Err(StoreError::LeaseLost {
                    name: name.to_owned(),
                });
            }
        }
        tx.execute("DELETE FROM states WHERE id = $1", &[&state_id])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Names of all stored states.
    pub async fn state_names(&self) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query("SELECT name FROM states ORDER BY name", &[])
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }
}

/// The instance objects (address, deposed key) one state adds, changes and
/// removes relative to another, optionally only within a set of addresses.
#[derive(Debug, Default)]
struct ObjectChanges {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
}

impl ObjectChanges {
    fn between(before: &State, after: &State, scope: Option<&HashSet<&str>>) -> ObjectChanges {
        type Key = (String, Option<String>);
        fn objects(s: &State) -> HashMap<Key, (&Resource, &Instance)> {
            let mut out = HashMap::new();
            for r in &s.resources {
                let raddr = r.address();
                for i in &r.instances {
                    out.insert((i.address(&raddr), i.deposed.clone()), (r, i));
                }
            }
            out
        }
        let same = |a: (&Resource, &Instance), b: (&Resource, &Instance)| {
            a.0.provider == b.0.provider
                && a.0.each == b.0.each
                && a.0.extra == b.0.extra
                && a.1 == b.1
        };
        let within = |k: &Key| scope.is_none_or(|s| s.contains(k.0.as_str()));
        let (b, a) = (objects(before), objects(after));
        let mut out = ObjectChanges::default();
        for (key, obj) in a.iter().filter(|(k, _)| within(k)) {
            match b.get(key) {
                None => out.added.push(key.0.clone()),
                Some(old) if !same(*old, *obj) => out.changed.push(key.0.clone()),
                Some(_) => {}
            }
        }
        for key in b.keys().filter(|k| within(k) && !a.contains_key(*k)) {
            out.removed.push(key.0.clone());
        }
        out
    }
}

/// The first module step of an instance address: the module call
/// (`module.team`) and its instance (`module.team["a"]`), or `None` at the
/// root.
fn first_module_step(address: &str) -> Option<(&str, &str)> {
    let after = address.strip_prefix("module.")?;
    let name_end = "module.".len() + after.find(['.', '['])?;
    let call = &address[..name_end];
    let rest = &address[name_end..];
    let instance_end = match rest.strip_prefix('[') {
        Some(_) => name_end + crate::address::key_end(rest)? + 1,
        None => name_end,
    };
    Some((call, &address[..instance_end]))
}

/// Up to how many module instances (first steps) a level of
/// [`Store::cone_rows`]' downstream walk asks by ranges of module
/// addresses; past that, one query through the GIN index costs less.
const RANGED_FIRSTS: usize = 16;

/// The ranges `[from, to)` of module addresses (bytewise, as `COLLATE "C"`
/// compares) that hold the dependents [`Store::cone_rows`] looks for when
/// no frontier instance is in the root module: the module instances
/// `firsts` and everything under them, and every module not under one of
/// the module calls `calls` (`calls` holds the call of each of `firsts`).
/// PostgreSQL text holds no NUL, so `[m, m + "\x01")` is `m` alone.
fn dependent_ranges(firsts: &[&str], calls: &[&str]) -> Vec<(String, String)> {
    let only = |m: &str| (m.to_owned(), format!("{m}\x01"));
    let under = |m: &str| (format!("{m}."), format!("{m}/"));
    let mut ranges: Vec<(String, String)> = Vec::new();
    for p in firsts {
        ranges.push(only(p));
        ranges.push(under(p));
    }
    // The complement of the calls: each call's module, what is under it
    // (`c.`) and its instances (`c[`), merged, then what lies between.
    let mut excluded: Vec<(String, String)> = Vec::new();
    for c in calls {
        excluded.push(only(c));
        excluded.push(under(c));
        excluded.push((format!("{c}["), format!("{c}\\")));
    }
    excluded.sort();
    let end = char::MAX.to_string();
    let mut from = String::new();
    for (lo, hi) in excluded {
        if from < lo {
            ranges.push((from.clone(), lo));
        }
        from = from.max(hi);
    }
    if from < end {
        ranges.push((from, end));
    }
    ranges
}

/// The first string after every string that starts with `prefix`, bytewise
/// (`prefix` non-empty, ending in an ASCII character: a module address or
/// one followed by `.`).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    match end.pop() {
        Some(last) if last.is_ascii() && last != '\x7f' => end.push((last as u8 + 1) as char),
        Some(last) => {
            end.push(last);
            end.push(char::MAX);
        }
        None => end.push(char::MAX),
    }
    end
}

/// How many addresses a transaction's summary lists as recorded.
const RECORDED_SHOWN: usize = 50;

/// Objects (by address) of `before` and `after` that differ in their
/// `create_before_destroy` flag and in nothing else.
fn cbd_flag_only(before: &State, after: &State) -> HashSet<String> {
    let objects = |s: &State| -> HashMap<(String, Option<String>), Instance> {
        let mut out = HashMap::new();
        for r in &s.resources {
            let address = r.address();
            for i in &r.instances {
                out.insert((i.address(&address), i.deposed.clone()), i.clone());
            }
        }
        out
    };
    let (b, a) = (objects(before), objects(after));
    a.into_iter()
        .filter_map(|(key, new)| {
            let old = b.get(&key)?;
            let flag_only = old.create_before_destroy != new.create_before_destroy
                && Instance {
                    create_before_destroy: new.create_before_destroy,
                    ..old.clone()
                } == new;
            flag_only.then_some(key.0)
        })
        .collect()
}

/// Instance addresses whose objects differ between `before` and `after`
/// but are not in the write set. Root outputs are not among them: terraform
/// evaluates an output only when every resource it reads is in its run
/// (targeted, or a dependency of a target: locked), so whatever output it
/// changed is written (see [`changed_outputs`]).
fn changed_outside(before: &State, after: &State, write: &HashSet<&str>) -> Vec<String> {
    let all = ObjectChanges::between(before, after, None);
    let mut outside: Vec<String> = all
        .added
        .into_iter()
        .chain(all.changed)
        .chain(all.removed)
        .filter(|a| !write.contains(a.as_str()))
        .collect();
    // Terraform sets `create_before_destroy` on the objects a
    // create-before-destroy resource depends on, and clears it again when
    // no such dependent is in a targeted run: the cone's dependencies flip
    // it as a matter of course. That is no change of theirs to write (the
    // stored flag stays; terraform derives it again from the configuration).
    let flag_only = cbd_flag_only(before, after);
    outside.retain(|a| !flag_only.contains(a.as_str()));
    outside.sort();
    outside.dedup();
    outside
}

/// Names of the root outputs terraform added, changed or removed between
/// `before` (the state it was handed) and `after`: only those are written,
/// so that an output terraform did not evaluate in a targeted run never
/// overwrites what another run stored meanwhile.
fn changed_outputs(before: &State, after: &State) -> Vec<String> {
    let old: HashMap<&str, &Output> = before
        .outputs
        .iter()
        .map(|(n, o)| (n.as_str(), o))
        .collect();
    let new: HashMap<&str, &Output> = after.outputs.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let mut names: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| (*n).to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Rows a write added, changed, removed and left alone.
struct RowCounts {
    added: u64,
    changed: u64,
    removed: u64,
    unchanged: u64,
}

/// Writes the instance objects of `objects` through a staging table and a
/// set-based diff: rows that differ are updated (their old version goes to
/// the history, unless this transaction wrote it: a version is one
/// transaction's write), new ones inserted, and rows absent from `objects`
/// removed, within `scope` (instance addresses) or the whole state when
/// `None`.
async fn stage_and_diff(
    tx: &tokio_postgres::Transaction<'_>,
    state_id: i64,
    txn_id: i64,
    objects: &State,
    scope: Option<&[String]>,
) -> Result<RowCounts, StoreError> {
    let writer = stage(tx).await?;
    pin_mut!(writer);
    for r in &objects.resources {
        copy_resource(writer.as_mut(), r, &[]).await?;
    }
    let incoming = writer.finish().await?;
    diff_staged(tx, state_id, txn_id, incoming, scope).await
}

/// Creates the staging table `incoming` (dropped at commit) and opens the
/// COPY into it.
async fn stage(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<BinaryCopyInWriter, tokio_postgres::Error> {
    tx.batch_execute(
        "CREATE TEMP TABLE incoming (LIKE instances INCLUDING DEFAULTS) ON COMMIT DROP;
         ALTER TABLE incoming DROP COLUMN id, DROP COLUMN state_id, DROP COLUMN version, DROP COLUMN txn_id;",
    )
    .await?;
    let sink = tx
        .copy_in(&format!(
            "COPY incoming ({INSTANCE_COLUMNS}) FROM STDIN BINARY"
        ))
        .await?;
    Ok(BinaryCopyInWriter::new(sink, INSTANCE_TYPES))
}

/// The set-based diff of the staged rows (`incoming` of them) against the
/// state's: see [`stage_and_diff`].
async fn diff_staged(
    tx: &tokio_postgres::Transaction<'_>,
    state_id: i64,
    txn_id: i64,
    incoming: u64,
    scope: Option<&[String]>,
) -> Result<RowCounts, StoreError> {
    // Statistics of the join columns only: the jsonb ones cost most to
    // sample and no plan here depends on them.
    tx.batch_execute(
        "CREATE UNIQUE INDEX ON incoming (address, deposed); ANALYZE incoming (address, deposed);",
    )
    .await?;
    let cols = INSTANCE_COLUMNS.split(", ").collect::<Vec<_>>();
    // The digest is the content's: a row is rewritten when its content
    // differs, not when only its digest is missing (filled on a read).
    let content = cols.iter().filter(|c| **c != "digest").collect::<Vec<_>>();
    let c_cols = content
        .iter()
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let differs = format!(
        "ROW({c_cols}) IS DISTINCT FROM ROW({})",
        content
            .iter()
            .map(|c| format!("i.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let i_cols = cols
        .iter()
        .map(|c| format!("i.{c}"))
        .collect::<Vec<_>>()
        .join(", ");

    // The resources this diff writes (rows added, changed or removed),
    // locked in one order before any of its statements does (migration
    // 0012): two merges writing the same resources take turns instead of
    // deadlocking on their rows of `resource_digests`.
    tx.execute(
        &format!(
            "SELECT resource_digests_lock(array_agg(s), array_agg(m), array_agg(c))
             FROM (SELECT $1::bigint AS s, i.module AS m, i.config_address AS c
                   FROM incoming i LEFT JOIN instances c
                     ON c.state_id = $1 AND c.address = i.address AND c.deposed = i.deposed
                   WHERE c.address IS NULL OR {differs}
                   UNION
                   SELECT c.state_id, c.module, c.config_address FROM instances c
                   WHERE c.state_id = $1 AND ($2::text[] IS NULL OR c.address = ANY($2))
                     AND NOT EXISTS (SELECT 1 FROM incoming i
                                     WHERE i.address = c.address AND i.deposed = c.deposed)) t
             HAVING count(*) > 0"
        ),
        &[&state_id, &scope],
    )
    .await?;
    let replaced = tx
            .execute(
                &format!(
                    "INSERT INTO instance_history
                        (state_id, instance_id, address, deposed, version, written_by, superseded_by, removed, row)
                     SELECT c.state_id, c.id, c.address, c.deposed, c.version, c.txn_id, $2,
                            i.address IS NULL, to_jsonb(c)
                     FROM instances c LEFT JOIN incoming i ON i.address = c.address AND i.deposed = c.deposed
                     WHERE c.state_id = $1 AND (i.address IS NULL OR {differs})
                       AND ($3::text[] IS NULL OR c.address = ANY($3))
                       AND c.txn_id <> $2"
                ),
                &[&state_id, &txn_id, &scope],
            )
            .await?;
    // Rows removed, and of them current instances (not deposed objects):
    // the state's `instance_count` moves by those.
    let row = tx
        .query_one(
            "WITH d AS (DELETE FROM instances c WHERE c.state_id = $1
                    AND ($2::text[] IS NULL OR c.address = ANY($2))
                    AND NOT EXISTS (SELECT 1 FROM incoming i
                        WHERE i.address = c.address AND i.deposed = c.deposed)
                    RETURNING c.deposed)
             SELECT count(*), count(*) FILTER (WHERE deposed = '') FROM d",
            &[&state_id, &scope],
        )
        .await?;
    let (removed, removed_current): (i64, i64) = (row.get(0), row.get(1));
    let removed = removed as u64;
    let set = cols
        .iter()
        .filter(|c| **c != "address" && **c != "deposed")
        .map(|c| format!("{c} = i.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let changed = tx
            .execute(
                &format!(
                    "UPDATE instances c SET {set},
                            version = CASE WHEN c.txn_id = $2 THEN c.version ELSE c.version + 1 END,
                            txn_id = $2
                     FROM incoming i
                     WHERE c.state_id = $1 AND i.address = c.address AND i.deposed = c.deposed AND {differs}"
                ),
                &[&state_id, &txn_id],
            )
            .await?;
    // A row the same transaction wrote before (a checkpoint) is rewritten
    // in place: a version is one transaction's write, and the history
    // keeps the last version of every other transaction.
    debug_assert!(replaced <= removed + changed);
    let row = tx
        .query_one(
            &format!(
                "WITH a AS (INSERT INTO instances ({INSTANCE_COLUMNS}, state_id, version, txn_id)
                     SELECT {i_cols}, $1,
                            -- an address removed earlier (a replacement, state rm, destroy)
                            -- goes on from its last version: history keys stay unique
                            1 + coalesce((SELECT max(h.version) FROM instance_history h
                                          WHERE h.state_id = $1 AND h.address = i.address
                                            AND h.deposed = i.deposed), 0),
                            $2
                     FROM incoming i
                     WHERE NOT EXISTS (SELECT 1 FROM instances c
                        WHERE c.state_id = $1 AND c.address = i.address AND c.deposed = i.deposed)
                     RETURNING deposed)
                 SELECT count(*), count(*) FILTER (WHERE deposed = '') FROM a"
            ),
            &[&state_id, &txn_id],
        )
        .await?;
    let (added, added_current): (i64, i64) = (row.get(0), row.get(1));
    let added = added as u64;
    if added_current != removed_current {
        tx.execute(
            "UPDATE states SET instance_count = instance_count + $2 WHERE id = $1",
            &[&state_id, &(added_current - removed_current)],
        )
        .await?;
    }
    Ok(RowCounts {
        added,
        changed,
        removed,
        unchanged: incoming - changed - added,
    })
}

/// Writes the COPY row of every instance object of a resource, each
/// followed by `suffix` (the columns a direct copy into `instances` adds).
/// A resource's row of `resource_digests` (migration 0012), computed by
/// the writer of its objects.
struct KeptResource {
    module: String,
    config_address: String,
    mode: String,
    type_: String,
    name: String,
    provider: String,
    each: Option<String>,
    objects: i64,
    digest: String,
    dependencies: Vec<String>,
}

impl KeptResource {
    /// Of `r`, whose objects' digests are `digests`.
    fn of(r: &Resource, digests: &[String]) -> KeptResource {
        let dependencies: std::collections::BTreeSet<&String> =
            r.instances.iter().flat_map(|i| &i.dependencies).collect();
        KeptResource {
            module: r.module.clone(),
            config_address: r.config_address(),
            mode: r.mode.clone(),
            type_: r.type_.clone(),
            name: r.name.clone(),
            provider: r.provider.clone(),
            each: r.each.clone(),
            objects: r.instances.len() as i64,
            digest: tfstate::resource_digest(
                &r.provider,
                &r.mode,
                r.each.as_deref(),
                digests.iter().map(String::as_str),
            ),
            dependencies: dependencies.into_iter().cloned().collect(),
        }
    }
}

/// Copies `kept` into `resource_digests` for state `state_id`.
async fn copy_kept(
    tx: &tokio_postgres::Transaction<'_>,
    state_id: i64,
    kept: &[KeptResource],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(
            "COPY resource_digests (state_id, module, config_address, mode, type, name, provider, \
             each, objects, digest, dependencies) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT_ARRAY,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for k in kept {
        writer
            .as_mut()
            .write(&[
                &state_id,
                &k.module,
                &k.config_address,
                &k.mode,
                &k.type_,
                &k.name,
                &k.provider,
                &k.each,
                &k.objects,
                &k.digest,
                &k.dependencies,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Copies the rows of `r`'s objects; returns their digests.
async fn copy_resource(
    mut writer: Pin<&mut BinaryCopyInWriter>,
    r: &Resource,
    suffix: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut digests = Vec::with_capacity(r.instances.len());
    let raddr = r.address();
    let config_address = r.config_address();
    let resource_extra = extra_json(&r.extra);
    let resource_extra = jsonb::encode_opt(&resource_extra);
    let resource_extra = resource_extra.as_deref();
    for i in &r.instances {
        let address = i.address(&raddr);
        let deposed = i.deposed.as_deref().unwrap_or("");
        let extra = extra_json(&i.extra);
        let extra = jsonb::encode_opt(&extra);
        let encoded = [
            jsonb::encode_opt(&i.index_key),
            jsonb::encode_opt(&i.attributes),
            jsonb::encode_opt(&i.attributes_flat),
            jsonb::encode_opt(&i.sensitive_attributes),
            extra,
        ];
        let [index_key, attributes, attributes_flat, sensitive_attributes, extra] =
            encoded.each_ref().map(|v| v.as_deref());
        let digest = i.digest();
        let digest: &str = &digest;
        let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(20 + suffix.len());
        row.extend_from_slice(&[
            &address,
            &deposed,
            &config_address,
            &r.module,
            &r.mode,
            &r.type_,
            &r.name,
            &r.each,
            &r.provider,
            &index_key,
            &i.status,
            &i.schema_version,
            &attributes,
            &attributes_flat,
            &sensitive_attributes,
            &i.private,
            &i.dependencies,
            &i.create_before_destroy,
            &extra,
            &resource_extra,
            &digest,
        ]);
        row.extend_from_slice(suffix);
        writer.as_mut().write(&row).await?;
        digests.push(digest.to_owned());
    }
    Ok(digests)
}

/// Writes root outputs that differ; returns how many were added, changed or removed.
async fn push_outputs(
    tx: &tokio_postgres::Transaction<'_>,
    state_id: i64,
    txn_id: i64,
    outputs: &[(String, Output)],
    scope: Option<&[String]>,
) -> Result<u64, StoreError> {
    let in_scope = |name: &str| scope.is_none_or(|names| names.iter().any(|n| n == name));
    let stored: HashMap<String, (Value, Value, bool, Option<Value>)> = tx
        .query(
            "SELECT name, value, type, sensitive, extra FROM outputs WHERE state_id = $1",
            &[&state_id],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect();
    let mut gone: Vec<&str> = Vec::new();
    let mut upsert: Vec<&(String, Output)> = Vec::new();
    for pair in outputs.iter().filter(|(n, _)| in_scope(n)) {
        let (name, o) = pair;
        let extra = extra_json(&o.extra).map(|e| jsonb::encode(&e).into_owned());
        match stored.get(name) {
            Some((v, t, s, e))
                if *v == *jsonb::encode(&o.value)
                    && *t == *jsonb::encode(&o.type_)
                    && *s == o.sensitive
                    && *e == extra => {}
            _ => upsert.push(pair),
        }
    }
    let incoming: HashSet<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
    for name in stored.keys().filter(|n| in_scope(n)) {
        if !incoming.contains(name.as_str()) {
            gone.push(name);
        }
    }
    let replaced: Vec<&str> = gone
        .iter()
        .copied()
        .chain(
            upsert
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| stored.contains_key(*n)),
        )
        .collect();
    if !replaced.is_empty() {
        tx.execute(
            "INSERT INTO output_history (state_id, name, version, written_by, superseded_by, removed, row)
             SELECT o.state_id, o.name, o.version, o.txn_id, $2, o.name = ANY($4), to_jsonb(o)
             FROM outputs o WHERE o.state_id = $1 AND o.name = ANY($3) AND o.txn_id <> $2",
            &[&state_id, &txn_id, &replaced, &gone],
        )
        .await?;
        tx.execute(
            "DELETE FROM outputs WHERE state_id = $1 AND name = ANY($2)",
            &[&state_id, &gone],
        )
        .await?;
    }
    for (name, o) in &upsert {
        let extra = extra_json(&o.extra).map(|e| jsonb::encode(&e).into_owned());
        let (value, type_) = (jsonb::encode(&o.value), jsonb::encode(&o.type_));
        tx.execute(
            "INSERT INTO outputs (state_id, name, value, type, sensitive, extra, version, txn_id)
             VALUES ($1, $2, $3, $4, $5, $6,
                     1 + coalesce((SELECT max(h.version) FROM output_history h
                                   WHERE h.state_id = $1 AND h.name = $2), 0),
                     $7)
             ON CONFLICT (state_id, name) DO UPDATE SET value = EXCLUDED.value, type = EXCLUDED.type,
                sensitive = EXCLUDED.sensitive, extra = EXCLUDED.extra,
                version = CASE WHEN outputs.txn_id = EXCLUDED.txn_id THEN outputs.version
                               ELSE outputs.version + 1 END,
                txn_id = EXCLUDED.txn_id",
            &[&state_id, name, &*value, &*type_, &o.sensitive, &extra, &txn_id],
        )
        .await?;
    }
    Ok((gone.len() + upsert.len()) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges hold exactly the modules the downstream filter of
    /// `cone_rows` keeps: under one of `firsts`, or under none of `calls`.
    #[test]
    fn dependent_ranges_hold_what_the_filter_keeps() {
        let firsts = ["module.team[\"a\"]", "module.net"];
        let calls = ["module.team", "module.net"];
        let modules = [
            "",
            "module.a",
            "module.net",
            "module.net.module.x",
            "module.net[0]",
            "module.net2",
            "module.team",
            "module.team[\"a\"]",
            "module.team[\"a\"].module.x[1]",
            "module.team[\"a.b\"]",
            "module.team[\"b\"]",
            "module.team[\"b\"].module.x",
            "module.team_x",
            "module.team_x[\"a\"]",
            "module.teams[\"a\"]",
            "module.team!",
            "module.zz",
        ];
        let ranges = dependent_ranges(&firsts, &calls);
        for m in modules {
            let under = |p: &str| m == p || m.starts_with(&format!("{p}."));
            let in_call = |c: &str| under(c) || m.starts_with(&format!("{c}["));
            let kept = firsts.iter().any(|p| under(p)) || !calls.iter().any(|c| in_call(c));
            let held = ranges
                .iter()
                .filter(|(from, to)| m >= from.as_str() && m < to.as_str())
                .count();
            assert_eq!(held, usize::from(kept), "{m:?} in {ranges:?}");
        }
    }
}
