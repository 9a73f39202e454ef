//! `stategraph init`: providers, modules and the dependency lock file, as
//! `terraform init -backend=false` installs them in the user's directory.
//! Backend flags are refused: the state lives in PostgreSQL.

use anyhow::{bail, Result};

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
    if let Some(flag) = tfargs::backend_flag(&args) {
        bail!(
            "stategraph init does not configure a backend ({flag} given)\n\n\
             stategraph keeps the state in PostgreSQL (state \"{}\"): plan, apply and the other \
             commands point terraform at it themselves, whatever backend the configuration \
             declares. `stategraph init` only installs providers and modules, as \
             `terraform init -backend=false` does.\n\n\
             To bring an existing state into stategraph, pull it with terraform and push it:\n  \
             terraform state pull > x.tfstate\n  \
             stategraph state push x.tfstate",
            settings.state_name()
        );
    }
    let tf = Terraform::discover(settings.terraform.as_deref())?.with_ui(settings.ui);
    let done = tf
        .command(&settings.workdir)
        .arg("init")
        .arg("-backend=false")
        .args(&args)
        .interactive(true)
        .run()
        .await?;
    Exit::with(done.code)
}
