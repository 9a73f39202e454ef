//! Terraform commands stategraph neither runs itself nor writes the state
//! with: those that need no state (`version`, `fmt`, ...) run in the user's
//! directory as they are; those that only read it (`output`, `show`,
//! `validate`, ...) run in a private run dir holding the stored state
//! (an empty one when none is stored). Terraform's output reaches the user
//! live and its exit code is ours. This file writes nothing to the database.

use anyhow::{bail, Result};

use crate::engine::saved;
use crate::engine::session::prepare;
use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::Terraform;
use crate::tfargs::{self, Class};
use crate::tfstate::State;

/// The lineage of the empty state read commands see when none is stored.
const EMPTY_LINEAGE: &str = "00000000-0000-0000-0000-000000000000";

/// `stategraph COMMAND ...` for a command of [`Class::NoState`] or
/// [`Class::ReadState`] (`args[0]` is its name); anything else is refused.
pub async fn execute(settings: &Settings, args: &[String]) -> Result<()> {
    let needs_state = match tfargs::classify(args) {
        Class::ReadState => true,
        Class::NoState => false,
        _ => bail!(
            "stategraph does not know the terraform command \"{}\"\n\n\
             stategraph runs init, plan, apply, destroy and the state commands itself, runs {} \
             on the stored state, and passes {} to terraform. Run `stategraph --help` for its \
             own commands.",
            args.first().map(String::as_str).unwrap_or_default(),
            tfargs::READ_STATE.join(", "),
            tfargs::NO_STATE.join(", ")
        ),
    };
    let tf = Terraform::discover(
        settings.terraform.as_deref(),
        &settings.database.hidden_env(),
    )?
    .with_ui(settings.ui);
    if !needs_state {
        let done = tf
            .command(&settings.workdir)
            .args(args)
            .interactive(true)
            .run()
            .await?;
        return Exit::with(done.code);
    }

    let store = crate::db::open_for_reading(settings).await?;
    let state = store
        .pull(&settings.state_name())
        .await?
        .unwrap_or_else(|| State::empty(EMPTY_LINEAGE.to_owned()));
    if args[0] == "show" {
        // A stategraph saved plan: terraform's show of the plan inside it.
        if let Some(code) = saved::show(settings, &tf, &store, &args[1..]).await? {
            return Exit::with(code);
        }
    }
    let dir = settings.layout().run_dir(&state)?;
    prepare(&dir, &tf, &store).await?;
    let mut command = dir.command(&tf).arg(&args[0]);
    if args[0] == "console" && !tfargs::gives_flag(&args[1..], "state") {
        // `console` reads `-state`, which defaults to ./terraform.tfstate
        // and wins over the backend: point it at the stored state.
        command = command.arg(format!("-state={}", dir.state_path().display()));
    }
    let done = command.args(&args[1..]).interactive(true).run().await?;
    drop(dir);
    Exit::with(done.code)
}
