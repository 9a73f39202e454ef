//! `stategraph apply` and `stategraph destroy` (an apply with `-destroy`,
//! as terraform's): the change cone planned, checked against the locks,
//! approved and applied (see [`crate::engine::pipeline`]); or a saved plan
//! applied (see [`crate::engine::saved`]).

use anyhow::{anyhow, bail, Result};

use crate::engine::{pipeline, saved, Kind};
use crate::settings::Settings;
use crate::tfargs;

/// `stategraph apply [terraform's flags] [PLANFILE]`.
pub async fn apply(settings: &Settings, args: &[String]) -> Result<()> {
    apply_as(settings, Kind::Apply, args).await
}

/// `stategraph destroy [terraform's flags]`.
pub async fn destroy(settings: &Settings, args: &[String]) -> Result<()> {
    apply_as(settings, Kind::Destroy, args).await
}

async fn apply_as(settings: &Settings, kind: Kind, args: &[String]) -> Result<()> {
    let mut flags = tfargs::parse(args).map_err(|e| anyhow!("{e}"))?;
    tfargs::check(kind.name(), &flags).map_err(|e| anyhow!("{e}"))?;
    if kind == Kind::Destroy {
        flags.destroy = true;
    }
    if flags.verify {
        bail!(
            "-verify is a flag of `stategraph plan`: run `stategraph plan -verify` before {}",
            kind.name()
        );
    }
    if let Some(first) = flags.positional.first() {
        if kind != Kind::Apply || flags.positional.len() > 1 {
            bail!("unexpected argument {first:?}: only `stategraph apply` takes one, a saved plan file");
        }
        let ui = settings.ui.machine_readable(flags.json);
        return saved::apply(settings, &flags, first)
            .await?
            .finish(ui, flags.json);
    }
    if flags.out.is_some() {
        bail!("-out is a flag of `stategraph plan`");
    }
    if flags.json && !flags.auto_approve {
        bail!(
            "Plan file or auto-approve required\n\n\
             stategraph cannot ask for interactive approval when -json is set. You can either \
             apply a saved plan file, or enable the -auto-approve option."
        );
    }
    if !flags.auto_approve && (flags.no_input || !settings.tf_input) {
        bail!(
            "{} requires approval, and input is disabled (-input=false or TF_INPUT=0)\n\n\
             Pass -auto-approve to apply without asking.",
            kind.name()
        );
    }
    let ui = settings.ui.machine_readable(flags.json);
    let json = flags.json;
    pipeline::run(settings, kind, args, flags)
        .await?
        .finish(ui, json)
}
