//! One file per subcommand. Each exposes `async fn run(&Settings, &Args) -> anyhow::Result<()>`.

mod baseline;
pub mod cone;
pub mod db;
pub mod locks;
pub mod log;
pub mod passthrough;
pub mod record;
pub mod recover;
pub mod run;
pub mod saved;
pub mod state;

use anyhow::Result;

use crate::cli::{Cli, Command, StateCommand};
use crate::settings::Settings;

/// Resolves settings and dispatches to the subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    // `plan -help` and friends: terraform's flags pass through, so clap's
    // own help flag is off for these; answer it here instead of running.
    if let Command::Plan(a) | Command::Apply(a) | Command::Destroy(a) | Command::Init(a) =
        &cli.command
    {
        if a.args
            .iter()
            .any(|x| matches!(x.as_str(), "-h" | "-help" | "--help"))
        {
            return print_terraform_command_help(&cli.command);
        }
    }
    let settings = Settings::resolve(&cli.global)?;
    match &cli.command {
        Command::State(StateCommand::Push(args)) => state::push(&settings, args).await,
        Command::State(StateCommand::Pull) => state::pull(&settings).await,
        Command::State(StateCommand::List(args)) => state::list(&settings, args).await,
        Command::State(StateCommand::Show(args)) => state::show(&settings, args).await,
        Command::State(StateCommand::Other(args)) => passthrough::state(&settings, args).await,
        Command::Cone(args) => cone::run(&settings, args).await,
        Command::Plan(a) => run::run(&settings, run::Kind::Plan, &a.args).await,
        Command::Apply(a) => run::run(&settings, run::Kind::Apply, &a.args).await,
        Command::Destroy(a) => run::run(&settings, run::Kind::Destroy, &a.args).await,
        Command::Log(args) => log::run(&settings, args).await,
        Command::Locks(args) => locks::list(&settings, args.json).await,
        Command::ForceUnlock(args) => locks::force_unlock(&settings, &args.id).await,
        Command::Recover(args) => recover::run(&settings, args).await,
        Command::Db(cmd) => db::run(&settings, cmd).await,
        Command::Init(a) => passthrough::init(&settings, &a.args, cli.global.no_color).await,
        Command::Terraform(args) => passthrough::run(&settings, args).await,
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
    let sub = cli
        .find_subcommand_mut(name)
        .expect("terraform commands are defined in cli.rs");
    println!("{}", sub.render_long_help());
    println!(
        "Every flag of `terraform {name}` is accepted and passed on; see `terraform {name} -help`."
    );
    Ok(())
}
