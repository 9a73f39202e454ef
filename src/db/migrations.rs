//! Schema migrations, compiled into the binary, versioned and checksummed,
//! applied automatically under an advisory lock.
//!
//! Many processes may start at once against an empty database: each takes the
//! same transaction-scoped advisory lock before looking at the schema, so
//! exactly one applies a migration and the others find it done. A migration
//! whose text changed after it was applied is refused, never re-run.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One embedded migration.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Append only: never edit one that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "config_cache",
        sql: include_str!("../../migrations/0002_config_cache.sql"),
    },
    Migration {
        version: 3,
        name: "discovery_baseline",
        sql: include_str!("../../migrations/0003_discovery_baseline.sql"),
    },
    Migration {
        version: 4,
        name: "row_versions",
        sql: include_str!("../../migrations/0004_row_versions.sql"),
    },
    Migration {
        version: 5,
        name: "origins",
        sql: include_str!("../../migrations/0005_origins.sql"),
    },
    Migration {
        version: 6,
        name: "lock_queue",
        sql: include_str!("../../migrations/0006_lock_queue.sql"),
    },
    Migration {
        version: 7,
        name: "api_views",
        sql: include_str!("../../migrations/0007_api_views.sql"),
    },
    Migration {
        version: 8,
        name: "instances_by_module",
        sql: include_str!("../../migrations/0008_instances_by_module.sql"),
    },
    Migration {
        version: 9,
        name: "terraform_costs",
        sql: include_str!("../../migrations/0009_terraform_costs.sql"),
    },
    Migration {
        version: 10,
        name: "instance_counts",
        sql: include_str!("../../migrations/0010_instance_counts.sql"),
    },
    Migration {
        version: 11,
        name: "row_digests",
        sql: include_str!("../../migrations/0011_row_digests.sql"),
    },
    Migration {
        version: 12,
        name: "resource_digests",
        sql: include_str!("../../migrations/0012_resource_digests.sql"),
    },
];

/// Key of the advisory lock that serializes migrations (ASCII "sgmigrat").
const MIGRATION_LOCK: i64 = 0x7367_6d69_6772_6174;

/// Migration failures.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("database error while migrating the schema: {}", super::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "migration {version} ({name}) was changed after it was applied to this database \
         (checksum {applied} in the database, {embedded} in this binary); refusing to continue"
    )]
    Changed {
        version: i64,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error(
        "this database has schema version {found}, newer than this stategraph knows ({known}); \
         upgrade stategraph"
    )]
    TooNew { found: i64, known: i64 },
    #[error(
        "this database has schema version {found} and this stategraph needs {needed}, which a \
         read-only server cannot be given; run one command against the primary (without \
         STATEGRAPH_READ_TARGET_SESSION_ATTRS) to upgrade it"
    )]
    Behind { found: i64, needed: i64 },
}

fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies every pending migration. Returns how many were applied.
pub async fn migrate(client: &mut Client) -> Result<usize, MigrationError> {
    // Fast path: the schema is current (no lock needed to read).
    if let Ok(rows) = client
        .query(
            "SELECT version, checksum FROM stategraph_migrations ORDER BY version",
            &[],
        )
        .await
    {
        if verify(&rows)? == MIGRATIONS.len() {
            return Ok(0);
        }
    }

    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stategraph_migrations (
            version    bigint PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let rows = tx
        .query(
            "SELECT version, checksum FROM stategraph_migrations ORDER BY version",
            &[],
        )
        .await?;
    let done = verify(&rows)?;
    for m in &MIGRATIONS[done..] {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO stategraph_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len() - done)
}

/// Checks, without writing, that the schema is the one this binary knows:
/// for a server that does not take writes (a standby), where [`migrate`]
/// cannot run.
pub async fn check(client: &Client) -> Result<(), MigrationError> {
    let rows = match client
        .query(
            "SELECT version, checksum FROM stategraph_migrations ORDER BY version",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    match verify(&rows)? {
        done if done == MIGRATIONS.len() => Ok(()),
        done => Err(MigrationError::Behind {
            found: done as i64,
            needed: MIGRATIONS.len() as i64,
        }),
    }
}

/// Checks applied migrations against the embedded ones; returns how many are applied.
fn verify(rows: &[tokio_postgres::Row]) -> Result<usize, MigrationError> {
    for (i, row) in rows.iter().enumerate() {
        let version: i64 = row.get(0);
        let applied: String = row.get(1);
        let Some(m) = MIGRATIONS.get(i).filter(|m| m.version == version) else {
            return Err(MigrationError::TooNew {
                found: version,
                known: MIGRATIONS.last().map_or(0, |m| m.version),
            });
        };
        let embedded = checksum(m.sql);
        if applied != embedded {
            return Err(MigrationError::Changed {
                version,
                name: m.name.to_owned(),
                applied,
                embedded,
            });
        }
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_increasing() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "migration {} is out of order",
                m.name
            );
        }
    }

    #[test]
    fn checksum_is_stable_sha256() {
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_shipped_roles_grant_on_every_table() {
        let roles = include_str!("../../sql/roles.sql");
        let granted = roles
            .split("TO stategraph_reader")
            .next()
            .and_then(|head| head.rsplit("GRANT SELECT ON").next())
            .expect("roles.sql grants SELECT to stategraph_reader");
        let tables = MIGRATIONS
            .iter()
            .flat_map(|m| m.sql.split("CREATE TABLE ").skip(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or_default())
            .chain(["stategraph_migrations"]);
        for table in tables {
            assert!(
                granted.split([',', ' ', '\n']).any(|t| t == table),
                "sql/roles.sql does not let stategraph_reader read {table}: add it (and what the planner and applier need)"
            );
        }
        let views = MIGRATIONS
            .iter()
            .flat_map(|m| m.sql.split("CREATE VIEW ").skip(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or_default());
        for view in views {
            assert!(
                roles.contains(&format!("    {view},")) || roles.contains(&format!("    {view}\n")),
                "sql/roles.sql does not let stategraph_reader read the view {view}: add it"
            );
        }
    }
}
