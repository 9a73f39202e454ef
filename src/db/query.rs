//! Reading the stored data as data: `stategraph query` (SQL over the
//! `stategraph_api` views, read-only), `stategraph history` (every version
//! of one instance) and resolving `state pull --at`. Nothing here writes.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

use super::store::{Store, StoreError};

/// The rows of a query, every value as PostgreSQL's text (`None`: NULL).
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Column names and types, in order.
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "stategraph query is read-only: PostgreSQL refused the statement ({message}); \
         change state with stategraph apply or state push"
    )]
    ReadOnly { message: String },
    #[error(
        "the query ran longer than its {} timeout and was cancelled; --timeout raises it",
        short(*.0)
    )]
    Timeout(Duration),
    #[error("PostgreSQL refused the query: {}", super::describe(.0))]
    Refused(tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> QueryError {
        QueryError::Store(StoreError::Db(e))
    }
}

/// `30s`, `200ms`: a duration as one writes it.
fn short(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// One version of an instance, with the transaction that wrote it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    pub version: i64,
    pub transaction: i64,
    pub kind: String,
    pub command: String,
    pub status: String,
    pub user: String,
    pub host: String,
    pub ci_job: Option<String>,
    /// When its transaction committed (else started).
    pub at: chrono::DateTime<chrono::Utc>,
    /// The transaction that replaced or removed it; `None` for the current version.
    pub superseded_by: Option<i64>,
    /// Whether `superseded_by` removed the instance.
    pub removed: bool,
    /// Its attribute changes against the version before (all of them for the first).
    pub changes: Vec<crate::tfstate::AttrChange>,
}

impl Store {
    /// Runs one SQL statement of the user's in a read-only transaction with
    /// `timeout` as its statement timeout; sensitive values stay masked in
    /// the `stategraph_api` views unless `show_sensitive`.
    pub async fn query(
        &self,
        sql: &str,
        timeout: Duration,
        show_sensitive: bool,
    ) -> Result<QueryResult, QueryError> {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let ms = timeout.as_millis().max(1);
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {ms}; \
             SET LOCAL stategraph.show_sensitive = '{}'; \
             SELECT set_config('search_path', 'stategraph_api, ' || current_setting('search_path'), true)",
            if show_sensitive { "on" } else { "off" }
        ))
        .await?;
        let refused = |e: tokio_postgres::Error| match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION => {
                QueryError::ReadOnly {
                    message: e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
                }
            }
            Some(c) if *c == tokio_postgres::error::SqlState::QUERY_CANCELED => {
                QueryError::Timeout(timeout)
            }
            Some(_) => QueryError::Refused(e),
            None => QueryError::Store(StoreError::Db(e)),
        };
        // Preparing first gives the column types, and refuses more than one
        // statement: the one statement then runs as text (any type reads).
        let statement = tx.prepare(sql).await.map_err(refused)?;
        let columns: Vec<(String, Type)> = statement
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.type_().clone()))
            .collect();
        let mut rows = Vec::new();
        for message in tx.simple_query(sql).await.map_err(refused)? {
            if let SimpleQueryMessage::Row(row) = message {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
        }
        tx.rollback().await?;
        Ok(QueryResult { columns, rows })
    }

    /// Every version of the current object at `address` in state `name`,
    /// oldest first, with attribute diffs (sensitive values masked); `None`
    /// if no such state is stored.
    pub async fn history(
        &self,
        name: &str,
        address: &str,
    ) -> Result<Option<Vec<Version>>, StoreError> {
        let client = self.pool.get().await?;
        let Some(state_id) = client
            .query_opt("SELECT id FROM states WHERE name = $1", &[&name])
            .await?
            .map(|r| r.get::<_, i64>(0))
        else {
            return Ok(None);
        };
        // A version a transaction replaced itself (a checkpoint mid-apply)
        // is not one of the state's versions.
        let rows = client
            .query(
                "SELECT v.version, v.written_by, v.superseded_by, v.removed, v.attributes,
                        v.sensitive, t.kind, t.command, t.status, t.actor_user, t.actor_host,
                        t.ci_job, coalesce(t.finished_at, t.started_at)
                 FROM (
                     SELECT version, written_by, superseded_by, removed,
                            row->'attributes' AS attributes,
                            row->'sensitive_attributes' AS sensitive
                     FROM instance_history
                     WHERE state_id = $1 AND address = $2 AND deposed = ''
                       AND superseded_by <> written_by
                     UNION ALL
                     SELECT version, txn_id, NULL, false, attributes, sensitive_attributes
                     FROM instances WHERE state_id = $1 AND address = $2 AND deposed = ''
                 ) v JOIN transactions t ON t.id = v.written_by
                 ORDER BY v.written_by, v.version",
                &[&state_id, &address],
            )
            .await?;
        let mut versions = Vec::new();
        let mut previous: Option<(Option<Value>, Option<Value>)> = None;
        for r in rows {
            let attributes = super::jsonb::decode_opt(r.get(4));
            let sensitive = super::jsonb::decode_opt(r.get(5));
            let (before, before_sensitive) = previous.clone().unwrap_or((None, None));
            let changes = crate::tfstate::diff_attributes(
                before.as_ref(),
                before_sensitive.as_ref(),
                attributes.as_ref(),
                sensitive.as_ref(),
            );
            let removed: bool = r.get(3);
            previous = (!removed).then_some((attributes, sensitive));
            versions.push(Version {
                version: r.get(0),
                transaction: r.get(1),
                superseded_by: r.get(2),
                removed,
                kind: r.get(6),
                command: r.get(7),
                status: r.get(8),
                user: r.get(9),
                host: r.get(10),
                ci_job: r.get(11),
                at: r.get(12),
                changes,
            });
        }
        Ok(Some(versions))
    }

    /// `txn` if it is one of state `name`'s transactions.
    pub async fn txn_of_state(&self, name: &str, txn: i64) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT t.id FROM transactions t JOIN states s ON s.id = t.state_id
                 WHERE s.name = $1 AND t.id = $2",
                &[&name, &txn],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// The last transaction of state `name` committed at or before `at`.
    pub async fn txn_at(
        &self,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT t.id FROM transactions t JOIN states s ON s.id = t.state_id
                 WHERE s.name = $1 AND t.status = 'committed' AND t.finished_at <= $2
                 ORDER BY t.finished_at DESC, t.id DESC LIMIT 1",
                &[&name, &at],
            )
            .await?
            .map(|r| r.get(0)))
    }
}
