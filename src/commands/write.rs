//! Terraform commands that write the state: `import`, `taint`, `untaint`,
//! `refresh` and `state mv|rm|replace-provider` run with the whole state
//! locked and their result merged back (see [`crate::engine::locked`]);
//! other `state` subcommands and the legacy `push` are refused with what to
//! do instead.

use anyhow::{anyhow, bail, Result};

use crate::engine::locked;
use crate::settings::Settings;
use crate::tfargs;

/// `stategraph import|taint|untaint|refresh ...` (`args[0]` is the command).
pub async fn execute(settings: &Settings, args: &[String]) -> Result<()> {
    run_locked(settings, &args[..1], &args[1..]).await
}

/// `stategraph state <other> ...` (`args[0]` is the state subcommand): the
/// subcommands that write state run with the whole state locked; others
/// are refused.
pub async fn state(settings: &Settings, args: &[String]) -> Result<()> {
    let mut full = vec!["state".to_owned()];
    full.extend(tfargs::terraform_style(args));
    let sub = args.first().map(String::as_str).unwrap_or_default();
    if tfargs::WRITE_STATE_SUBCOMMANDS.contains(&sub) {
        return run_locked(settings, &full[..2], &full[2..]).await;
    }
    bail!(
        "`terraform state {sub}` is not supported by stategraph yet: stategraph runs \
         `state list`, `state show`, `state pull` and `state push`, and keeps the state \
         in PostgreSQL.\n\n{}",
        pull_run_push(&full)
    )
}

async fn run_locked(settings: &Settings, words: &[String], rest: &[String]) -> Result<()> {
    let flags = tfargs::parse(rest).map_err(|e| anyhow!("{e}"))?;
    if let Some(e) = tfargs::misplaced_own_flag(&words.join(" "), &flags) {
        bail!(e);
    }
    locked::run(settings, words, &flags)
        .await?
        .finish(settings.ui, false)
}

/// The error for a command stategraph does not run (legacy `push`).
pub fn refuse(args: &[String]) -> anyhow::Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
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
