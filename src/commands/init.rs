//! `stategraph init`: providers, modules and the dependency lock file, as
//! `terraform init -backend=false` installs them in the user's directory.
//! Backend flags are refused (the state lives in PostgreSQL), but for
//! `-migrate-state`, which then brings the configuration's existing state
//! in (see [`crate::engine::migrate`]).

use anyhow::{bail, Result};

use crate::engine::migrate;
use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::Terraform;
use crate::tfargs;

/// `stategraph init [flags]`. `no_color`: `-no-color` was given (clap takes
/// it as our global flag, so it is handed on here).
pub async fn execute(settings: &Settings, args: &[String], no_color: bool) -> Result<()> {
    let mut args = tfargs::terraform_style(args);
    if no_color && !args.iter().any(|a| a == "-no-color") {
        args.insert(0, "-no-color".to_owned());
    }
    let migrate = args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-migrate-state" || a == "-migrate-state=true");
    // With -migrate-state, terraform's backend flags are the migration's;
    // the rest install providers and modules, as without it.
    let (backend, args) = match migrate {
        true => tfargs::split_backend_flags(&args),
        false => (Vec::new(), args),
    };
    if let Some(flag) = tfargs::backend_flag(&args) {
        bail!(
            "stategraph init does not configure a backend ({flag} given)\n\n\
             stategraph keeps the state in PostgreSQL (state \"{}\"): plan, apply and the other \
             commands point terraform at it themselves, whatever backend the configuration \
             declares. `stategraph init` only installs providers and modules, as \
             `terraform init -backend=false` does.\n\n\
             To bring the configuration's existing state into stategraph (a local \
             terraform.tfstate or its backend's), run `stategraph init -migrate-state`.",
            settings.state_name()
        );
    }
    let tf = Terraform::discover(
        settings.terraform.as_deref(),
        &settings.database.hidden_env(),
    )?
    .with_ui(settings.ui);
    let done = tf
        .command(&settings.workdir)
        .arg("init")
        .arg("-backend=false")
        .args(&args)
        .interactive(true)
        .run()
        .await?;
    if migrate && done.success() {
        return migrate::migrate(settings, &backend).await;
    }
    Exit::with(done.code)
}
