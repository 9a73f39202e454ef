//! `stategraph workspace show|list|select|new`: terraform workspaces are
//! stored states named `PATH:WORKSPACE` (`PATH` for `default`); the
//! selected one is kept where terraform keeps it (`environment` in the
//! user's data dir).

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::session::{new_lineage, record_origin};
use crate::settings::Settings;
use crate::tfargs;
use crate::tfstate::State;

/// `stategraph workspace SUBCOMMAND ...` (`args[0]` is the subcommand).
pub async fn execute(settings: &Settings, args: &[String]) -> Result<()> {
    let sub = args.first().map(String::as_str).unwrap_or("show");
    let flags = tfargs::parse(args.get(1..).unwrap_or_default()).map_err(|e| anyhow!("{e}"))?;
    if let Some(e) = tfargs::misplaced_own_flag(&format!("workspace {sub}"), &flags) {
        bail!(e);
    }
    let name_arg = flags.positional.first().cloned();
    if settings.explicit_state.is_some() && sub != "show" {
        bail!(
            "--state / STATEGRAPH_STATE names one state: workspaces do not apply to it\n\n\
             Drop --state to use the workspaces of this directory."
        );
    }
    let ui = settings.ui;
    let store = || crate::db::open(settings);
    let exists = |names: &[String], ws: &str| {
        ws == "default" || names.contains(&settings.state_name_for(ws))
    };
    match sub {
        "show" => {
            ui.say(&settings.workspace);
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
                ui.say(format!("{mark} {ws}"));
            }
            ui.say("");
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
            let or_create = flags.is_set("or-create");
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
                let name = settings.state_name_for(&ws);
                store
                    .push(
                        &name,
                        &State::empty(new_lineage()?),
                        false,
                        &settings.actor,
                        "workspace new",
                    )
                    .await?;
                if let Some(id) = store.state_id(&name).await? {
                    record_origin(&store, settings, id).await?;
                }
            }
            std::fs::create_dir_all(&settings.tf_data_dir)
                .with_context(|| format!("cannot create {}", settings.tf_data_dir.display()))?;
            let env_file = settings.tf_data_dir.join("environment");
            std::fs::write(&env_file, &ws)
                .with_context(|| format!("cannot write {}", env_file.display()))?;
            if sub == "new" {
                ui.say(format!("Created and switched to workspace {ws:?}!"));
            } else {
                ui.say(format!("Switched to workspace {ws:?}."));
            }
            Ok(())
        }
        other => bail!(
            "`terraform workspace {other}` is not supported by stategraph yet (workspaces are \
             stored states: `stategraph workspace show|list|select|new`)"
        ),
    }
}
