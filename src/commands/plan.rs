//! `stategraph plan`: terraform's plan of the change cone only, with
//! terraform's flags, output and exit codes (see [`crate::engine::pipeline`]).

use anyhow::{anyhow, bail, Result};

use crate::engine::session::Context;
use crate::engine::{pipeline, Kind};
use crate::settings::Settings;
use crate::tfargs;

/// `stategraph plan [terraform's flags]`.
pub async fn execute(settings: &Settings, args: &[String]) -> Result<()> {
    let flags = tfargs::parse(args).map_err(|e| anyhow!("{e}"))?;
    if let Some(first) = flags.positional.first() {
        bail!(
            "unexpected argument {first:?}: only `stategraph apply` takes one, a saved plan file"
        );
    }
    let json = flags.json;
    let cx = Context::open(settings, Kind::Plan, args, flags).await?;
    pipeline::run(&cx).await?.finish(cx.session.ui, json)
}
