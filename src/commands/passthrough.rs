//! `stategraph init` and every terraform command stategraph does not run itself.
//!
//! `init` installs providers and modules with `terraform init -backend=false`
//! and refuses the backend flags: the state lives in PostgreSQL. The other
//! commands fall in three groups: those that need no state (`version`,
//! `fmt`, ...) run in the user's directory as they are; those that only read
//! the state (`output`, `show`, `validate`, ...) run in a private
//! [`Workspace`] holding the stored state; those that write it (`import`,
//! `taint`, `state mv`, `workspace`, ...) are refused with what to do
//! instead. Terraform's output reaches the user live and its exit code is
//! ours. This module must not write to the database.

use anyhow::{anyhow, bail, Context, Result};

use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::{Finished, Terraform, Workspace};
use crate::tfstate::State;

/// The lineage of the empty state read commands see when none is stored.
const EMPTY_LINEAGE: &str = "00000000-0000-0000-0000-000000000000";

/// Commands that never touch the state: run in the user's directory as they are.
const NO_STATE: &[&str] = &[
    "version", "fmt", "get", "login", "logout", "metadata", "test",
];

/// Commands that only read the state: run on a private copy of the stored state.
const READ_STATE: &[&str] = &[
    "output",
    "show",
    "validate",
    "console",
    "graph",
    "providers",
    "modules",
];

/// Commands that write the state: run on a private copy with the whole
/// state locked, and merged back.
const WRITE_STATE: &[&str] = &["import", "taint", "untaint", "refresh"];

/// `state` subcommands that write the state, handled the same way.
const WRITE_STATE_SUBCOMMANDS: &[&str] = &["mv", "rm", "replace-provider"];

/// Commands with no meaning here, refused with what to do instead.
const REFUSED: &[&str] = &["push"];

/// `init` flags that configure a backend.
const BACKEND_FLAGS: &[&str] = &[
    "backend-config",
    "reconfigure",
    "migrate-state",
    "force-copy",
];

/// `stategraph init [flags]`: `terraform init -backend=false [flags]` in the user's directory.
///
/// `no_color`: `-no-color` was given (clap takes it as our global flag, so
/// it is handed on here).
pub async fn init(settings: &Settings, args: &[String], no_color: bool) -> Result<()> {
    let mut args = terraform_style(args);
    if no_color && !args.iter().any(|a| a == "-no-color") {
        args.insert(0, "-no-color".to_owned());
    }
    if let Some(flag) = backend_flag(&args) {
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
    let tf = terraform(settings)?;
    let done = tf
        .command(&settings.workdir)
        .arg("init")
        .arg("-backend=false")
        .args(&args)
        .interactive(true)
        .run()
        .await?;
    exit_with(done)
}

/// Any other terraform command (`args[0]` is its name).
pub async fn run(settings: &Settings, args: &[String]) -> Result<()> {
    let args = terraform_style(args);
    let Some(command) = args.first().map(String::as_str) else {
        bail!("no terraform command given");
    };
    let sub = args.get(1).map(String::as_str);
    let needs_state = match command {
        // `providers lock` and `providers mirror` read only the configuration.
        "providers" => !matches!(sub, Some("lock" | "mirror")),
        c if READ_STATE.contains(&c) => true,
        c if NO_STATE.contains(&c) => false,
        c if WRITE_STATE.contains(&c) => return write_state(settings, &args).await,
        "workspace" | "env" => return workspace(settings, &args[1..]).await,
        c if REFUSED.contains(&c) => return Err(refuse_write(&args)),
        c => bail!(
            "stategraph does not know the terraform command \"{c}\"\n\n\
             stategraph runs init, plan, apply, destroy and the state commands itself, runs {} \
             on the stored state, and passes {} to terraform. Run `stategraph --help` for its \
             own commands.",
            READ_STATE.join(", "),
            NO_STATE.join(", ")
        ),
    };
    let tf = terraform(settings)?;
    if !needs_state {
        let done = tf
            .command(&settings.workdir)
            .args(&args)
            .interactive(true)
            .run()
            .await?;
        return exit_with(done);
    }

    let store = crate::db::open(settings).await?;
    let state = store
        .pull(&settings.state_name())
        .await?
        .unwrap_or_else(empty_state);
    let ws = Workspace::new(&settings.workdir, &state)?;
    super::run::prepare(&ws, &tf, &store).await?;
    let done = ws.command(&tf).args(&args).interactive(true).run().await?;
    drop(ws);
    exit_with(done)
}

/// A terraform command that writes state, on a private copy of the state
/// with every instance locked exclusively (it may touch any of them), its
/// result merged back in one transaction.
async fn write_state(settings: &Settings, args: &[String]) -> Result<()> {
    use super::record::Recording;
    use super::run::{acquire, ensure_state, Kind, Scope};
    let tf = terraform(settings)?;
    let store = crate::db::open(settings).await?;
    let name = settings.state_name();
    ensure_state(&store, settings, &name).await?;
    let state_id = store
        .state_id(&name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("state \"{name}\" vanished"))?;
    let mut lock_timeout = std::time::Duration::ZERO;
    let mut command_args: Vec<String> = Vec::with_capacity(args.len() + 1);
    for a in args {
        if let Some(v) = a.strip_prefix("-lock-timeout=") {
            lock_timeout = crate::tfargs::parse_duration(v).ok_or_else(|| {
                anyhow::anyhow!("-lock-timeout={v} is not a duration (use e.g. 30s)")
            })?;
        } else if !a.starts_with("-lock=") {
            command_args.push(a.clone());
        }
    }
    // The command's own name (and `state`'s subcommand) come first, then -lock=false.
    let words = if command_args.first().map(String::as_str) == Some("state") {
        2
    } else {
        1
    };
    command_args.insert(words.min(command_args.len()), "-lock=false".to_owned());

    let before = store.pull(&name).await?.unwrap_or_else(empty_state);
    let all: Vec<String> = addresses(&before);
    let command = format!("stategraph {}", args.join(" "));
    let request = crate::db::locks::LockRequest {
        state_id,
        exclusive: &all,
        shared: &[],
        command: &command,
        actor: &settings.actor,
        lease: settings.lock_lease,
        txn_id: None,
    };
    let (holder, held, heartbeat) = acquire(&store, settings, &request, lock_timeout).await?;
    let fresh = store.pull(&name).await?.unwrap_or_else(empty_state);
    let ws = Workspace::new(&settings.workdir, &fresh)?;
    super::run::prepare(&ws, &tf, &store).await?;
    if words == 2 {
        // `state mv|rm|replace-provider` write a backup of the state, in
        // the user's directory unless told otherwise.
        let backup = ws.plan_path("backup");
        command_args.insert(2, format!("-backup={}", backup.display()));
    }
    // Terraform may write anything in the state (and add addresses, with
    // import): the run writes it all. These commands are short: no
    // checkpoints, but the same transaction, retry and recovery file.
    let mut write = addresses(&fresh);
    let mut outputs: Vec<String> = fresh.outputs.iter().map(|(n, _)| n.clone()).collect();
    let begun = Recording {
        store: &store,
        settings,
        name: &name,
        holder: &holder,
        before: &fresh,
        scope: Scope {
            write: &write,
            read: &[],
            outputs: &outputs,
            changed: &[],
        },
        command: &command,
        kind: Kind::Write,
    }
    .begin()
    .await?;
    let done = ws
        .command(&tf)
        .args(&command_args)
        .interactive(true)
        .run()
        .await?;
    let after = ws.read_state()?;
    if after != fresh {
        write.extend(addresses(&after));
        write.sort();
        write.dedup();
        outputs.extend(after.outputs.iter().map(|(n, _)| n.clone()));
        let recording = Recording {
            store: &store,
            settings,
            name: &name,
            holder: &holder,
            before: &fresh,
            scope: Scope {
                write: &write,
                read: &[],
                outputs: &outputs,
                changed: &[],
            },
            command: &command,
            kind: Kind::Write,
        };
        let report = recording.finish(Some(&begun), &ws).await?;
        settings.ui.info(format!(
            "stategraph: transaction {} wrote {} added, {} changed, {} removed to state \"{name}\"",
            report.txn_id, report.added, report.changed, report.removed
        ));
    }
    heartbeat.stop().await;
    held.release().await?;
    drop(ws);
    exit_with(done)
}

/// `workspace show|list|select|new`: terraform workspaces are stored states
/// named `PATH:WORKSPACE` (`PATH` for `default`); the selected one is kept
/// where terraform keeps it (`.terraform/environment`).
async fn workspace(settings: &Settings, args: &[String]) -> Result<()> {
    let sub = args.first().map(String::as_str).unwrap_or("show");
    let name_arg = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    if settings.explicit_state.is_some() && sub != "show" {
        bail!(
            "--state / STATEGRAPH_STATE names one state: workspaces do not apply to it\n\n\
             Drop --state to use the workspaces of this directory."
        );
    }
    let store = || crate::db::open(settings);
    let exists = |names: &[String], ws: &str| {
        ws == "default" || names.contains(&settings.state_name_for(ws))
    };
    match sub {
        "show" => {
            println!("{}", settings.workspace);
            Ok(())
        }
        "list" => {
            let names = store().await?.state_names().await?;
            let base = settings.base_state_name();
            let mut spaces = vec!["default".to_owned()];
            let prefix = format!("{base}:");
            spaces.extend(
                names
                    .iter()
                    .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned)),
            );
            spaces.sort();
            spaces.dedup();
            for ws in spaces {
                let mark = if ws == settings.workspace { '*' } else { ' ' };
                println!("{mark} {ws}");
            }
            println!();
            Ok(())
        }
        "select" | "new" => {
            let Some(ws) = name_arg else {
                bail!("workspace {sub} needs a workspace name");
            };
            if ws.is_empty() || ws.contains(['/', ':']) || ws.chars().any(char::is_whitespace) {
                bail!("{ws:?} is not a valid workspace name: use letters, digits, - and _");
            }
            if settings.workspace_from_env {
                bail!(
                    "The selected workspace is currently overridden using the TF_WORKSPACE \
                     environment variable.\n\nTo select a new workspace, either update this \
                     environment variable or unset it and then run this command again."
                );
            }
            let store = store().await?;
            let names = store.state_names().await?;
            let or_create = args
                .iter()
                .any(|a| a == "-or-create" || a == "-or-create=true");
            if sub == "new" && exists(&names, &ws) {
                bail!("Workspace {ws:?} already exists");
            }
            if sub == "select" && !exists(&names, &ws) && !or_create {
                bail!(
                    "Workspace {ws:?} doesn't exist.\n\nYou can create this workspace with the \
                     \"new\" subcommand or include the \"-or-create\" flag with the \"select\" \
                     subcommand."
                );
            }
            if !exists(&names, &ws) {
                let empty = State {
                    lineage: super::run::new_lineage()?,
                    ..empty_state()
                };
                store
                    .push(
                        &settings.state_name_for(&ws),
                        &empty,
                        false,
                        &settings.actor,
                        "workspace new",
                    )
                    .await?;
            }
            std::fs::create_dir_all(&settings.tf_data_dir)
                .with_context(|| format!("cannot create {}", settings.tf_data_dir.display()))?;
            let env_file = settings.tf_data_dir.join("environment");
            std::fs::write(&env_file, &ws)
                .with_context(|| format!("cannot write {}", env_file.display()))?;
            if sub == "new" {
                println!("Created and switched to workspace {ws:?}!");
            } else {
                println!("Switched to workspace {ws:?}.");
            }
            Ok(())
        }
        other => bail!(
            "`terraform workspace {other}` is not supported by stategraph yet (workspaces are \
             stored states: `stategraph workspace show|list|select|new`)"
        ),
    }
}

/// Every instance address of a state.
fn addresses(state: &State) -> Vec<String> {
    let mut out: Vec<String> = state.instance_addresses().collect();
    out.sort();
    out.dedup();
    out
}

/// `stategraph state <other>` (`args[0]` is the state subcommand): the
/// subcommands that write state run with the whole state locked; others
/// are refused.
pub async fn state(settings: &Settings, args: &[String]) -> Result<()> {
    let sub = args.first().map(String::as_str).unwrap_or_default();
    let mut full = vec!["state".to_owned()];
    full.extend(terraform_style(args));
    if WRITE_STATE_SUBCOMMANDS.contains(&sub) {
        return write_state(settings, &full).await;
    }
    bail!(
        "`terraform state {sub}` is not supported by stategraph yet: stategraph runs \
         `state list`, `state show`, `state pull` and `state push`, and keeps the state \
         in PostgreSQL.\n\n{}",
        pull_run_push(&full)
    )
}

fn terraform(settings: &Settings) -> Result<Terraform> {
    Ok(Terraform::discover(settings.terraform.as_deref())?.with_ui(settings.ui))
}

/// The error for a command stategraph does not run (legacy `push`).
fn refuse_write(args: &[String]) -> anyhow::Error {
    anyhow!(
        "`terraform {}` is not supported by stategraph: it writes the state, and stategraph \
         keeps the state in PostgreSQL\n\n{}",
        args[0],
        pull_run_push(args)
    )
}

/// How to run a state-writing command on a pulled copy and push it back.
fn pull_run_push(args: &[String]) -> String {
    let (head, rest) = match args {
        [state, sub, rest @ ..] if state == "state" => (format!("state {sub}"), rest),
        [command, rest @ ..] => (command.clone(), rest),
        [] => (String::new(), &[][..]),
    };
    let mut run = format!("terraform {head} -state=x.tfstate");
    for a in rest {
        run.push(' ');
        run.push_str(a);
    }
    format!(
        "Run it on a copy of the stored state and store the result:\n  \
         stategraph state pull > x.tfstate\n  \
         {run}\n  \
         stategraph state push x.tfstate\n\n\
         `state push` refuses the file if the stored state changed in the meantime."
    )
}

/// The first backend-configuring flag in `args` (before `--`), as given.
fn backend_flag(args: &[String]) -> Option<&str> {
    for a in args.iter().take_while(|a| *a != "--") {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let refused = BACKEND_FLAGS.contains(&name)
            // -backend=false is what we run anyway; -cloud is its alias.
            || (matches!(name, "backend" | "cloud") && value != Some("false"));
        if refused {
            return Some(a);
        }
    }
    None
}

/// Undoes [`crate::cli::normalize_args`] for terraform's flags (`--json` -> `-json`)
/// up to `--`, so that terraform sees and messages show what the user wrote.
fn terraform_style(args: &[String]) -> Vec<String> {
    let mut positional = false;
    args.iter()
        .map(|a| {
            if positional || a == "--" {
                positional = true;
                return a.clone();
            }
            match a.strip_prefix("--") {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                    format!("-{rest}")
                }
                _ => a.clone(),
            }
        })
        .collect()
}

/// What terraform sees when no state is stored yet: empty, serial 0.
fn empty_state() -> State {
    State {
        terraform_version: String::new(),
        serial: 0,
        lineage: EMPTY_LINEAGE.to_owned(),
        outputs: Vec::new(),
        resources: Vec::new(),
        check_results: None,
        extra: Default::default(),
    }
}

/// Terraform's exit code is ours.
fn exit_with(done: Finished) -> Result<()> {
    match done.code {
        0 => Ok(()),
        code => Err(Exit(code).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn backend_flags_are_found_in_either_spelling() {
        let found = |args: &[&str]| backend_flag(&strings(args)).map(str::to_owned);
        assert_eq!(found(&["-upgrade"]), None);
        assert_eq!(found(&["-backend=false"]), None);
        assert_eq!(found(&["-reconfigure"]).as_deref(), Some("-reconfigure"));
        assert_eq!(
            found(&["-upgrade", "--backend-config=bucket=x"]).as_deref(),
            Some("--backend-config=bucket=x")
        );
        assert_eq!(found(&["-backend=true"]).as_deref(), Some("-backend=true"));
        assert_eq!(found(&["-cloud"]).as_deref(), Some("-cloud"));
        assert_eq!(found(&["--", "-reconfigure"]), None);
    }

    #[test]
    fn flags_are_written_back_terraform_style() {
        assert_eq!(
            terraform_style(&strings(&["output", "--json", "x", "--", "--raw"])),
            ["output", "-json", "x", "--", "--raw"]
        );
    }

    #[test]
    fn the_recipe_uses_the_users_arguments() {
        let text = pull_run_push(&strings(&["state", "rm", "terraform_data.a"]));
        assert!(
            text.contains("terraform state rm -state=x.tfstate terraform_data.a"),
            "{text}"
        );
        let text = pull_run_push(&strings(&["untaint", "terraform_data.a"]));
        assert!(
            text.contains("terraform untaint -state=x.tfstate terraform_data.a"),
            "{text}"
        );
    }
}
