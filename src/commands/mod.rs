//! One file per subcommand. Each exposes `async fn run(&Settings, &Args) -> anyhow::Result<()>`.

pub mod cone;
pub mod db;
pub mod locks;
pub mod log;
pub mod passthrough;
pub mod run;
pub mod state;

use anyhow::Result;

use crate::cli::{Cli, Command, StateCommand};
use crate::settings::Settings;

/// Resolves settings and dispatches to the subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    let settings = Settings::resolve(&cli.global)?;
    match &cli.command {
        Command::State(StateCommand::Push(args)) => state::push(&settings, args).await,
        Command::State(StateCommand::Pull) => state::pull(&settings).await,
        Command::State(StateCommand::List(args)) => state::list(&settings, args).await,
        Command::State(StateCommand::Show(args)) => state::show(&settings, args).await,
        Command::State(StateCommand::Other(args)) => passthrough::state(args),
        Command::Cone(args) => cone::run(&settings, args).await,
        Command::Plan(a) => run::run(&settings, run::Kind::Plan, &a.args).await,
        Command::Apply(a) => run::run(&settings, run::Kind::Apply, &a.args).await,
        Command::Destroy(a) => run::run(&settings, run::Kind::Destroy, &a.args).await,
        Command::Log(args) => log::run(&settings, args).await,
        Command::Locks(args) => locks::list(&settings, args.json).await,
        Command::ForceUnlock(args) => locks::force_unlock(&settings, &args.id).await,
        Command::Db(cmd) => db::run(&settings, cmd).await,
        Command::Init(a) => passthrough::init(&settings, &a.args, cli.global.no_color).await,
        Command::Terraform(args) => passthrough::run(&settings, args).await,
    }
}
