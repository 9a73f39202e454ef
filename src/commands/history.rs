//! `stategraph history ADDR [--json]`: every version of one instance, with
//! the transaction that wrote it and what changed.

use std::io::Write;

use anyhow::{anyhow, Result};

use crate::address;
use crate::cli::HistoryArgs;
use crate::db;
use crate::settings::Settings;

/// `stategraph history`.
pub async fn execute(settings: &Settings, args: &HistoryArgs) -> Result<()> {
    let wanted = address::parse_instance(&args.address)
        .map_err(|e| anyhow!("{e}"))?
        .to_string();
    let name = settings.state_name();
    let store = db::open_for_reading(settings).await?;
    let versions = store.history(&name, &wanted).await?.ok_or_else(|| {
        anyhow!(
            "no state named \"{name}\" in {}; --state names another",
            store.display()
        )
    })?;
    if versions.is_empty() {
        return Err(anyhow!(
            "state \"{name}\" has never held {wanted}: `stategraph state list` lists its instances"
        ));
    }
    let mut out = settings.ui.data();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &versions)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    writeln!(out, "{wanted}")?;
    for v in &versions {
        let who = match &v.ci_job {
            Some(job) => format!("{}@{} ({job})", v.user, v.host),
            None => format!("{}@{}", v.user, v.host),
        };
        let status = if v.status == "committed" {
            String::new()
        } else {
            format!(" [{}]", v.status)
        };
        writeln!(
            out,
            "\nversion {}  transaction {}{status}  {}  {}  {}",
            v.version,
            v.transaction,
            v.at.format("%Y-%m-%d %H:%M:%S UTC"),
            who,
            v.command
        )?;
        for c in &v.changes {
            let show = |x: &serde_json::Value| x.to_string();
            match (&c.before, &c.after) {
                (None, Some(a)) => writeln!(out, "  + {} = {}", c.path, show(a))?,
                (Some(b), None) => writeln!(out, "  - {} = {}", c.path, show(b))?,
                (Some(b), Some(a)) => writeln!(out, "  ~ {}: {} -> {}", c.path, show(b), show(a))?,
                (None, None) => {}
            }
        }
        if v.changes.is_empty() {
            writeln!(out, "  (no attribute changed)")?;
        }
        if let (true, Some(by)) = (v.removed, v.superseded_by) {
            writeln!(out, "\nremoved by transaction {by}")?;
        }
    }
    out.flush()?;
    Ok(())
}
