//! `stategraph workspace show|list|select|new|delete`: terraform workspaces are
//! stored states named `PATH:WORKSPACE` (`PATH` for `default`); the
//! selected one is kept where terraform keeps it (`environment` in the
//! user's data dir).

use anyhow::{anyhow, bail, Context, Result};

use crate::db::locks::WHOLE_STATE;
use crate::engine::session::{new_lineage, record_origin, Session};
use crate::engine::Kind;
use crate::settings::Settings;
use crate::tfargs;
use crate::tfstate::State;

/// `stategraph workspace SUBCOMMAND ...` (`args[0]` is the subcommand).
pub async fn execute(settings: &Settings, args: &[String]) -> Result<()> {
    let sub = args.first().map(String::as_str).unwrap_or("show");
    if settings.explicit_state.is_some() && sub != "show" {
        bail!(
            "--state / STATEGRAPH_STATE names one state: workspaces do not apply to it\n\n\
             Drop --state to use the workspaces of this directory."
        );
    }
    if sub == "delete" {
        // Its flags are not plan's (`-lock=false` is allowed, as terraform allows it).
        return delete(settings, args.get(1..).unwrap_or_default()).await;
    }
    let flags = tfargs::parse(args.get(1..).unwrap_or_default()).map_err(|e| anyhow!("{e}"))?;
    if let Some(e) = tfargs::misplaced_own_flag(&format!("workspace {sub}"), &flags) {
        bail!(e);
    }
    let name_arg = flags.positional.first().cloned();
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
             stored states: `stategraph workspace show|list|select|new|delete`)"
        ),
    }
}

/// `workspace delete [-force] [-lock=false] [-lock-timeout=D] NAME`, as
/// terraform's: not `default`, not the selected workspace, not one that
/// does not exist, and not one holding resource instances unless `-force`
/// (they are listed). The state is deleted with its history, holding the
/// state's lock (the whole state exclusively, as `state push` does) unless
/// `-lock=false`.
async fn delete(settings: &Settings, args: &[String]) -> Result<()> {
    const USAGE: &str = "Usage: stategraph [global options] workspace delete [OPTIONS] NAME\n\n  \
        Delete a workspace: its stored state and the state's history.\n\nOptions:\n\n  \
        -force             Remove a workspace even if it is managing resources.\n  \
        -lock=false        Don't hold the state's lock during the operation.\n  \
        -lock-timeout=0s   Duration to retry the state's lock.";
    let (mut force, mut lock, mut timeout) = (false, true, std::time::Duration::ZERO);
    let mut names: Vec<&str> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            names.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let boolean =
            |v: Option<&str>| tfargs::parse_bool(name, v).map_err(|e| anyhow!("{e}\n\n{USAGE}"));
        match name {
            "force" => force = boolean(value)?,
            "lock" => lock = boolean(value)?,
            "lock-timeout" => {
                let text = match value {
                    Some(v) => v,
                    None => rest.next().map(String::as_str).unwrap_or_default(),
                };
                timeout = tfargs::parse_duration(text).ok_or_else(|| {
                    anyhow!("-lock-timeout {text:?} is not a duration (e.g. 0s, 30s, 5m)")
                })?;
            }
            "no-color" => {}
            _ => bail!("flag provided but not defined: -{name}\n\n{USAGE}"),
        }
    }
    let [ws] = names[..] else {
        bail!("Expected a single argument: NAME.\n\n{USAGE}");
    };
    if ws == "default" {
        bail!("cannot delete the default workspace");
    }
    if ws == settings.workspace {
        bail!(
            "Workspace {ws:?} is your active workspace.\n\nYou cannot delete the currently \
             active workspace. Please switch to another workspace and try again."
        );
    }
    let store = crate::db::open(settings).await?;
    let name = settings.state_name_for(ws);
    let Some(state_id) = store.state_id(&name).await? else {
        bail!(
            "Workspace {ws:?} doesn't exist.\n\nYou can create this workspace with the \"new\" \
             subcommand or include the \"-or-create\" flag with the \"select\" subcommand."
        );
    };
    let session = Session::new(
        settings,
        store.clone(),
        (name.clone(), state_id),
        Kind::Write,
        format!("stategraph workspace delete {ws}"),
    );
    let lease = match lock {
        true => Some(
            session
                .lease(&[WHOLE_STATE.to_owned()], &[], timeout)
                .await?,
        ),
        false => None,
    };
    // Read under the lock: nothing can be added meanwhile.
    let held = store.instance_addresses(state_id).await?;
    if !held.is_empty() && !force {
        if let Some(lease) = lease {
            let _ = lease.release().await;
        }
        bail!(
            "Workspace is not empty\n\nWorkspace {ws:?} is currently tracking the following \
             resource instances:\n{}\n\nDeleting this workspace would cause Terraform to lose \
             track of any associated remote objects, which would then require you to delete \
             them manually outside of Terraform. You should destroy these objects with \
             Terraform before deleting the workspace.\n\nIf you want to delete this workspace \
             anyway, and have Terraform forget about these managed objects, use the -force \
             option to disable this safety check.",
            held.iter()
                .map(|a| format!("  - {a}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let fence = lease.as_ref().map(|l| l.holder().id);
    let deleted = store.delete_state(&name, state_id, fence).await;
    if let Some(lease) = lease {
        // Deleted with the state, or to be freed; should this fail, its lease runs out.
        let _ = lease.release().await;
    }
    deleted.with_context(|| format!("failed to delete workspace {ws:?}; nothing was deleted"))?;
    let ui = settings.ui;
    ui.say(format!("Deleted workspace {ws:?}!"));
    if !held.is_empty() {
        ui.say(format!(
            "WARNING: {ws:?} was non-empty.\nThe resources managed by the deleted workspace may \
             still exist,\nbut are no longer manageable by Terraform since the state has\nbeen \
             deleted."
        ));
    }
    Ok(())
}
