//! One thin file per subcommand: its arguments in, one call of the engine
//! (or of the store), its result rendered. Command files never import each
//! other: what two of them need lives in [`crate::engine`],
//! [`crate::tfargs`] or [`crate::ui`].

mod apply;
mod cone;
mod db;
mod deps;
mod history;
mod init;
mod locks;
mod log;
mod passthrough;
mod plan;
mod query;
mod recover;
mod serve;
mod state;
mod workspace;
mod write;

use anyhow::Result;

use crate::cli::{Cli, Command, StateCommand};
use crate::settings::Settings;
use crate::tfargs::{self, Class};
use crate::ui::Ui;

/// Resolves settings and hands the command to its file.
pub async fn dispatch(cli: Cli) -> Result<()> {
    // `plan -help` and friends: terraform's flags pass through, so clap's
    // own help flag is off for these; answer it here instead of running.
    if let Command::Plan(a) | Command::Apply(a) | Command::Destroy(a) | Command::Init(a) =
        &cli.command
    {
        if tfargs::asks_for_help(&a.args) {
            return print_terraform_command_help(&cli.command);
        }
    }
    let settings = Settings::resolve(&cli.global)?;
    let s = &settings;
    match &cli.command {
        Command::State(StateCommand::Push(args)) => state::push(s, args).await,
        Command::State(StateCommand::Pull(args)) => state::pull(s, args).await,
        Command::State(StateCommand::List(args)) => state::list(s, args).await,
        Command::State(StateCommand::Show(args)) => state::show(s, args).await,
        Command::State(StateCommand::Other(args)) => write::state(s, args).await,
        Command::Cone(args) => cone::execute(s, args).await,
        Command::Deps(args) => deps::execute(s, args).await,
        Command::Plan(a) => plan::execute(s, &a.args).await,
        Command::Apply(a) => apply::apply(s, &a.args).await,
        Command::Destroy(a) => apply::destroy(s, &a.args).await,
        Command::Log(args) => log::execute(s, args).await,
        Command::Query(args) => query::execute(s, args).await,
        Command::History(args) => history::execute(s, args).await,
        Command::Locks(args) => locks::list(s, args.json).await,
        Command::ForceUnlock(args) => locks::force_unlock(s, &args.id).await,
        Command::Recover(args) => recover::execute(s, args).await,
        Command::Serve(args) => serve::execute(s, args).await,
        Command::Db(cmd) => db::execute(s, cmd).await,
        Command::Init(a) => init::execute(s, &a.args, cli.global.no_color).await,
        Command::Terraform(args) => {
            let args = tfargs::terraform_style(args);
            match tfargs::classify(&args) {
                Class::WriteState => write::execute(s, &args).await,
                Class::Workspace => workspace::execute(s, &args[1..]).await,
                Class::Refused => Err(write::refuse(&args)),
                Class::NoState | Class::ReadState | Class::Unknown => {
                    passthrough::execute(s, &args).await
                }
            }
        }
    }
}

/// Our long help for a terraform command, then where terraform's flags are described.
fn print_terraform_command_help(command: &Command) -> Result<()> {
    use clap::CommandFactory;
    let name = match command {
        Command::Plan(_) => "plan",
        Command::Apply(_) => "apply",
        Command::Destroy(_) => "destroy",
        _ => "init",
    };
    let mut cli = Cli::command();
    // Building names the subcommands: usage reads `stategraph plan`.
    cli.build();
    let sub = cli
        .find_subcommand_mut(name)
        .expect("terraform commands are defined in cli.rs");
    let ui = Ui::plain();
    ui.say(sub.render_long_help().to_string());
    ui.say(format!(
        "Every flag of `terraform {name}` is accepted and passed on; see `terraform {name} -help`."
    ));
    Ok(())
}
