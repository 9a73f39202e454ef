//! `stategraph recover FILE`: writes the result a run could not write, if
//! nobody changed its write set since; otherwise refuses, names what
//! changed, and keeps the file (see [`crate::engine::recovery::recover`]).

use anyhow::{anyhow, Result};

use crate::cli::RecoverArgs;
use crate::engine::recovery;
use crate::settings::Settings;

/// `stategraph recover [--lock-timeout D] FILE`.
pub async fn execute(settings: &Settings, args: &RecoverArgs) -> Result<()> {
    let timeout = crate::tfargs::parse_duration(&args.lock_timeout).ok_or_else(|| {
        anyhow!(
            "--lock-timeout {:?} is not a duration (e.g. 0s, 30s, 5m)",
            args.lock_timeout
        )
    })?;
    let done = recovery::recover(settings, &args.file, timeout).await?;
    let r = &done.report;
    settings.ui.info(format!(
        "stategraph: recovered: transaction {} wrote {} added, {} changed, {} removed to state \
         \"{}\" (the result of `{}`); removed {}",
        r.txn_id,
        r.added,
        r.changed,
        r.removed,
        done.state,
        done.command,
        args.file.display()
    ));
    Ok(())
}
