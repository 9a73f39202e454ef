//! `stategraph log [--all] [--limit N] [--json]`: the transaction log.

use std::io::Write;

use anyhow::Result;

use crate::cli::LogArgs;
use crate::db;
use crate::settings::Settings;

/// `stategraph log [--all] [--limit N] [--json]`.
pub async fn execute(settings: &Settings, args: &LogArgs) -> Result<()> {
    let store = db::open_for_reading(settings).await?;
    let name = settings.state_name();
    let scope = (!args.all).then_some(name.as_str());
    let entries = store.log(scope, args.limit).await?;
    let mut out = settings.ui.data();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    if entries.is_empty() {
        settings.ui.info(match scope {
            Some(name) => {
                format!("No transactions for state \"{name}\" (use --all for every state).")
            }
            None => "No transactions yet.".to_owned(),
        });
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<20}  {:<8}  {:<9}  {:<19}  {:<24}  {:<11}  CHANGES",
        "ID", "STATE", "KIND", "STATUS", "STARTED (UTC)", "WHO", "SERIAL"
    )?;
    for e in &entries {
        let who = match &e.ci_job {
            Some(job) => format!("{}@{} ({job})", e.user, e.host),
            None => format!("{}@{}", e.user, e.host),
        };
        let serial = match (e.serial_before, e.serial_after) {
            (Some(b), Some(a)) => format!("{b}→{a}"),
            (None, Some(a)) => format!("new→{a}"),
            _ => "-".to_owned(),
        };
        let n = |k: &str| {
            e.summary
                .as_ref()
                .and_then(|s| s.get(k))
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        };
        writeln!(
            out,
            "{:>6}  {:<20}  {:<8}  {:<9}  {:<19}  {:<24}  {:<11}  +{} ~{} -{}",
            e.id,
            e.state,
            e.kind,
            e.status,
            e.started_at.format("%Y-%m-%d %H:%M:%S"),
            who,
            serial,
            n("added"),
            n("changed"),
            n("removed"),
        )?;
    }
    out.flush()?;
    Ok(())
}
