//! PostgreSQL: where the state lives.
//!
//! - `pool`: connection targets, TLS, the deadpool pool.
//! - `embedded`: the private cluster used when no database is configured.
//! - `migrations`: the schema, embedded in the binary.
//! - `store`: one type, [`store::Store`], with one async function per query
//!   or write; multi-statement writes run in explicit transactions.

pub mod embedded;
pub mod locks;
pub mod migrations;
pub mod pool;
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
    Ok(Store::new(pool, target.display))
}
