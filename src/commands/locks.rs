//! `stategraph locks` and `stategraph force-unlock ID`: the subgraph locks
//! held by running (or dead) applies, the queue of runs waiting for locks,
//! and terraform's way out when a lock must go before its lease ends.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};

use crate::db;
use crate::db::locks::{in_mode, HeldLock, LockMode, Waiting};
use crate::settings::Settings;

/// `locks [--json]`: every holder (of `--state` only, if given), as a table
/// or as a JSON array with every field and the addresses.
pub async fn list(settings: &Settings, json: bool) -> Result<()> {
    let store = db::open(settings).await?;
    let state_id = match &settings.explicit_state {
        Some(name) => Some(store.state_id(name).await?.ok_or_else(|| {
            anyhow!(
                "no state named \"{name}\" in {}\n\n\
                 `stategraph locks` without --state lists the locks of every state.",
                store.display()
            )
        })?),
        None => None,
    };
    let held = store
        .held_locks(state_id)
        .await
        .context("cannot list the locks")?;
    let queue = store
        .queue(state_id)
        .await
        .context("cannot list the lock queue")?;
    let mut out = settings.ui.data();
    if json {
        let items: Vec<_> = held
            .iter()
            .map(HeldLock::to_json)
            .chain(queue.iter().map(Waiting::to_json))
            .collect();
        serde_json::to_writer_pretty(&mut out, &items)?;
        writeln!(out)?;
    } else {
        if held.is_empty() {
            settings.ui.info("No locks are held.");
        } else {
            out.write_all(table(&held).as_bytes())?;
        }
        if !queue.is_empty() {
            writeln!(out, "\nWaiting, served in this order:")?;
            out.write_all(queue_table(&queue).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `force-unlock LOCK_ID`: frees the locks of holder `id`, whatever state it
/// is in, as terraform's `force-unlock` frees a state lock.
pub async fn force_unlock(settings: &Settings, id: &str) -> Result<()> {
    let holder_id: i64 = id.trim().parse().map_err(|_| {
        anyhow!(
            "Failed to unlock state: \"{id}\" is not a lock ID\n\n\
             Lock IDs are numbers; `stategraph locks` lists them."
        )
    })?;
    let store = db::open(settings).await?;
    let Some(freed) = store
        .force_unlock(holder_id)
        .await
        .with_context(|| format!("cannot force-unlock lock {holder_id}"))?
    else {
        bail!(
            "Failed to unlock state: no lock with ID {holder_id} in {}\n\n\
             It may have been released already, or its lease expired and another run freed it. \
             `stategraph locks` lists the locks held.",
            store.display()
        );
    };
    let h = &freed.holder;
    settings.ui.say(format!(
        "Stategraph state has been successfully unlocked!\n\n\
         Freed lock {} on state \"{}\": {} exclusive and {} shared addresses, held by {} \
         for \"{}\" since {}{}.\n\
         Stategraph commands should now be able to lock these resources again.",
        h.id,
        h.state,
        freed.count(LockMode::Exclusive),
        freed.count(LockMode::Shared),
        h.who(),
        h.command,
        timestamp(h.acquired_at),
        if freed.expired {
            " (its lease had expired)"
        } else {
            ""
        },
    ));
    Ok(())
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Aligned columns: TICKET, STATE, EXCL, SHARED, WHO, COMMAND, SINCE.
fn queue_table(queue: &[Waiting]) -> String {
    let header = [
        "TICKET", "STATE", "EXCL", "SHARED", "WHO", "COMMAND", "SINCE",
    ]
    .map(str::to_owned);
    let count = |w: &Waiting, mode| in_mode(&w.addresses, mode).len();
    let rows: Vec<[String; 7]> = queue
        .iter()
        .map(|w| {
            let h = &w.waiter;
            [
                h.id.to_string(),
                h.state.clone(),
                count(w, LockMode::Exclusive).to_string(),
                count(w, LockMode::Shared).to_string(),
                h.who(),
                h.command.clone(),
                timestamp(h.acquired_at),
            ]
        })
        .collect();
    aligned(&header, &rows)
}

/// Aligned columns: ID, STATE, EXCL, SHARED, WHO, COMMAND, SINCE, LEASE.
fn table(held: &[HeldLock]) -> String {
    let header = [
        "ID", "STATE", "EXCL", "SHARED", "WHO", "COMMAND", "SINCE", "LEASE",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 8]> = held
        .iter()
        .map(|l| {
            let h = &l.holder;
            let lease = if l.expired {
                format!("expired {}", timestamp(h.lease_expires_at))
            } else {
                format!("until {}", timestamp(h.lease_expires_at))
            };
            [
                h.id.to_string(),
                h.state.clone(),
                l.count(LockMode::Exclusive).to_string(),
                l.count(LockMode::Shared).to_string(),
                h.who(),
                h.command.clone(),
                timestamp(h.acquired_at),
                lease,
            ]
        })
        .collect();
    aligned(&header, &rows)
}

/// `header` and `rows` in columns as wide as their widest cell.
fn aligned<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|c| c.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::locks::Holder;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_counts_modes() {
        let holder = Holder {
            id: 7,
            state_id: 1,
            state: "prod".to_owned(),
            txn_id: None,
            user: "bob".to_owned(),
            host: "laptop".to_owned(),
            ci_job: None,
            command: "stategraph plan".to_owned(),
            acquired_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            lease_expires_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 5, 5).unwrap(),
            reaped: Vec::new(),
        };
        let held = HeldLock {
            holder,
            expired: true,
            addresses: vec![
                ("a.x".to_owned(), LockMode::Exclusive),
                ("a.y".to_owned(), LockMode::Shared),
                ("a.z".to_owned(), LockMode::Shared),
            ],
        };
        let text = table(std::slice::from_ref(&held));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("ID  STATE  EXCL  SHARED  WHO"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("7   prod   1     2       bob@laptop  stategraph plan"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("expired 2026-01-02 03:05:05 UTC"),
            "{text}"
        );
        let j = held.to_json();
        assert_eq!(j["shared"], json!(["a.y", "a.z"]));
        assert_eq!(j["exclusive"], json!(["a.x"]));
        assert_eq!(j["expired"], json!(true));
    }
}
