//! Terraform commands that may write anywhere in the state (`import`,
//! `taint`, `untaint`, `refresh`, `state mv|rm|replace-provider`): run on a
//! private copy of the stored state with the whole state locked exclusively
//! (its own lock row, `*`, which every other run holds shared), their result
//! merged back in one transaction.
//!
//! These commands are short: no checkpoints, but the same transaction,
//! retry and recovery file as an apply ([`super::record`]).

use anyhow::Result;

use super::record::{Recording, Scope};
use super::session::{create_state, find_state, new_lineage, prepare, Session};
use super::{Kind, Outcome};
use crate::db::locks::{Holder, WHOLE_STATE};
use crate::settings::Settings;
use crate::terraform::Terraform;
use crate::tfargs::TfFlags;
use crate::tfstate::State;

/// Runs terraform's `words` (`["taint"]`, `["state", "mv"]`) with `flags`
/// (parsed from the arguments after them) on the whole state locked.
pub async fn run(settings: &Settings, words: &[String], flags: &TfFlags) -> Result<Outcome> {
    let tf = Terraform::discover(
        settings.terraform.as_deref(),
        &settings.database.hidden_env(),
    )?
    .with_ui(settings.ui);
    let store = crate::db::open(settings).await?;
    let name = settings.state_name();
    let state_id = match find_state(&store, settings, &name, Kind::Write).await? {
        Some(id) => id,
        None => create_state(&store, settings, &name, new_lineage()?).await?,
    };
    let given: Vec<String> = words
        .iter()
        .cloned()
        .chain(flags.pass(&[]))
        .chain(flags.positional.iter().cloned())
        .collect();
    let command = format!(
        "stategraph {}",
        crate::tfargs::redact_vars(&given).join(" ")
    );
    let session = Session::new(settings, store, (name, state_id), Kind::Write, command);
    session.rescue_dead_runs().await;

    // The state's own lock row, exclusively: every other run holds it
    // shared, so it excludes them all (a row per instance would cost a
    // lock row each, and a read of the whole state to name them).
    let whole_state = [WHOLE_STATE.to_owned()];
    let lease = session.lease(&whole_state, &[], flags.lock_timeout).await?;
    let fresh = session.pull().await?;
    let dir = settings.layout().run_dir(&fresh)?;
    prepare(&dir, &tf, &session.store).await?;
    let mut args: Vec<String> = words.to_vec();
    args.push("-lock=false".to_owned());
    if words.len() == 2 {
        // `state mv|rm|replace-provider` write a backup of the state, in
        // the user's directory unless told otherwise.
        args.push(format!("-backup={}", dir.plan_path("backup").display()));
    }
    args.extend(flags.pass(&[]));
    args.extend(flags.positional.iter().cloned());

    // Terraform may write anything in the state (and add addresses, with
    // import): the run writes it all.
    let mut write = fresh.sorted_addresses();
    let begun = whole(&session, lease.holder(), &fresh, &write)
        .begin()
        .await?;
    let done = dir
        .command(&tf)
        .args(&args)
        .interactive(true)
        .stop_on(lease.lost())
        .run()
        .await?;
    let after = dir.read_state()?;
    let mut written = None;
    if after != fresh {
        write.extend(after.sorted_addresses());
        write.sort();
        write.dedup();
        let report = whole(&session, lease.holder(), &fresh, &write)
            .finish(Some(&begun), &dir)
            .await?;
        written = Some((session.name.clone(), report));
    }
    lease.release().await?;
    drop(dir);
    Ok(Outcome::Ran {
        code: done.code,
        saved: None,
        written,
    })
}

/// The recording of a command that may write any of `write`.
fn whole<'a>(
    session: &'a Session<'a>,
    holder: &'a Holder,
    before: &'a State,
    write: &'a [String],
) -> Recording<'a> {
    Recording {
        session,
        holder,
        before,
        scope: Scope {
            write,
            read: &[],
            changed: &[],
            provisioned: &[],
        },
    }
}
