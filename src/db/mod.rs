//! PostgreSQL: where the state lives.
//!
//! - `pool`: connection targets, TLS, the deadpool pool.
//! - `embedded`: the private cluster used when no database is configured.
//! - `migrations`: the schema, embedded in the binary.
//! - `store`: one type, [`store::Store`], with one async function per query
//!   or write; multi-statement writes run in explicit transactions.
//! - `query`: read-only SQL of the user's, an instance's versions, `pull --at`.
//! - `jsonb`: JSON as `jsonb` can hold it (U+0000 escaped, losslessly).
//! - `locks`: the subgraph locks, their leases and the one fence every
//!   write under a lock passes ([`store::Store::fence`]).

pub mod embedded;
pub mod jsonb;
pub mod locks;
pub mod migrations;
pub mod pool;
pub mod query;
pub mod store;

use anyhow::{Context, Result};

use crate::settings::{DatabaseTarget, Settings};
use store::Store;

/// Connects to the configured database (starting the embedded cluster if
/// that is the one), applies pending migrations, and returns the store.
pub async fn open(settings: &Settings) -> Result<Store> {
    let target = match &settings.database {
        DatabaseTarget::Remote(t) => (**t).clone(),
        DatabaseTarget::Embedded => {
            embedded::ensure_running(&settings.embedded, &settings.ui).await?
        }
    };
    let pool = target.connect(4).await?;
    let mut client = pool
        .get()
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", target.display))?;
    migrations::migrate(&mut client)
        .await
        .with_context(|| format!("cannot prepare the stategraph schema in {}", target.display))?;
    drop(client);
    Ok(Store::new(pool, target.display.clone()).with_notifications(target))
}

/// [`open`] for commands that only read (`state pull`, `query`, `log`,
/// ...): with `STATEGRAPH_READ_TARGET_SESSION_ATTRS` set, any server of
/// the URL that matches it (a standby, with `any` or `read-only`) instead
/// of the URL's own `target_session_attrs`. No migration runs there (a
/// standby takes no writes): the schema must already be current.
pub async fn open_for_reading(settings: &Settings) -> Result<Store> {
    let (DatabaseTarget::Remote(target), Some(attrs)) =
        (&settings.database, settings.read_session_attrs)
    else {
        return open(settings).await;
    };
    let mut target = (**target).clone();
    target.config.target_session_attrs(attrs);
    let pool = target.connect(4).await?;
    let client = pool
        .get()
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", target.display))?;
    migrations::check(&client)
        .await
        .with_context(|| format!("cannot read the stategraph schema in {}", target.display))?;
    drop(client);
    Ok(Store::new(pool, target.display.clone()))
}

/// What went wrong, as the server said it (`message: detail (SQLSTATE
/// code)`) rather than tokio-postgres's bare "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let detail = db.detail().map(|d| format!(": {d}")).unwrap_or_default();
            format!("{}{detail} (SQLSTATE {})", db.message(), db.code().code())
        }
        None => e.to_string(),
    }
}

/// Whether `e` means the connection to PostgreSQL failed or was lost (the
/// server is down, restarting or unreachable), as opposed to PostgreSQL
/// refusing a statement.
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.code() {
        // Class 08 (connection exception), shutdowns, "starting up".
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No SQLSTATE: an I/O error, a closed connection, a timeout (and
        // not, say, a value that did not convert).
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            let text = e.to_string();
            e.is_closed() || text.contains("connect") || text.contains("timed out")
        }
    }
}
