//! `stategraph plan`: terraform's plan of the change cone only, with
//! terraform's flags, output and exit codes (see [`crate::engine::pipeline`]).

use anyhow::{anyhow, bail, Result};

use crate::engine::{pipeline, Kind};
use crate::settings::Settings;
use crate::tfargs;

/// `stategraph plan [terraform's flags]`.
pub async fn execute(settings: &Settings, args: &[String]) -> Result<()> {
    let flags = tfargs::parse(args).map_err(|e| anyhow!("{e}"))?;
    tfargs::check("plan", &flags).map_err(|e| anyhow!("{e}"))?;
    if flags.allow_revert {
        bail!("-allow-revert is a flag of `stategraph apply` (a plan changes nothing)");
    }
    if let Some(first) = flags.positional.first() {
        bail!(
            "unexpected argument {first:?}: only `stategraph apply` takes one, a saved plan file"
        );
    }
    let ui = settings.ui.machine_readable(flags.json);
    let json = flags.json;
    pipeline::run(settings, Kind::Plan, args, flags)
        .await?
        .finish(ui, json)
}
