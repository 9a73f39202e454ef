//! `stategraph state push|pull|list|show`: terraform's state commands,
//! terraform's semantics, our storage.

use std::borrow::Cow;
use std::io::{Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;

use crate::address;
use crate::cli::{ListArgs, PullArgs, PushArgs, ShowArgs};
use crate::db;
use crate::db::locks::WHOLE_STATE;
use crate::db::store::StoreError;
use crate::engine::session::{record_origin, Session};
use crate::engine::Kind;
use crate::error::Exit;
use crate::settings::Settings;
use crate::terraform::{rundir::write_private, Terraform};
use crate::tfstate::{self, Resource, State, StateError};
use crate::ui::thousands;

/// `state push [-force] PATH|-`: the state is read on a thread of its own,
/// one resource at a time, and handed through a bounded channel to the
/// COPY into PostgreSQL: neither the document nor the parsed state is ever
/// whole in memory.
pub async fn push(settings: &Settings, args: &PushArgs) -> Result<()> {
    let (input, source): (Box<dyn Read + Send>, String) = if args.path == "-" {
        (Box::new(std::io::stdin()), "stdin".to_owned())
    } else {
        let path = settings.workdir.join(&args.path);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (Box::new(file), args.path.clone())
    };

    // What is plainly not a state is said before the database is opened
    // (the whole document is checked as it is copied).
    let input = looks_like_json(input, &source)?;

    let timeout = crate::tfargs::parse_duration(&args.lock_timeout).ok_or_else(|| {
        anyhow!(
            "-lock-timeout {:?} is not a duration (e.g. 0s, 30s, 5m)",
            args.lock_timeout
        )
    })?;
    let name = settings.state_name();
    let store = db::open(settings).await?;
    let command = if args.force {
        "state push -force"
    } else {
        "state push"
    };
    // As terraform's `state push`, the write holds the state's lock: the
    // whole state exclusively, which every run holds shared and a lock of
    // terraform's through `stategraph serve` exclusively. A state that does
    // not exist yet has no holder to wait for.
    let existing = match args.lock {
        true => store.state_id(&name).await?,
        false => None,
    };
    let session = existing.map(|id| {
        let command = format!("stategraph {command}");
        Session::new(
            settings,
            store.clone(),
            (name.clone(), id),
            Kind::Write,
            command,
        )
    });
    let lease = match &session {
        Some(session) => Some(
            session
                .lease(&[WHOLE_STATE.to_owned()], &[], timeout)
                .await?,
        ),
        None => None,
    };
    let fence = lease.as_ref().map(|l| l.holder().id);
    let step = settings
        .ui
        .step(format!("Pushing {source} into state \"{name}\""));
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Resource>(PUSH_CHANNEL);
    let reader = tokio::task::spawn_blocking(move || {
        tfstate::read(input, |r| {
            // The receiver is gone only when the write failed: that error
            // is the one reported.
            sender.blocking_send(r).map_err(|_| StateError::Read {
                msg: "the write stopped".into(),
            })
        })
    });
    let resources = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx)).map(Cow::Owned);
    let head = async {
        reader.await.unwrap_or_else(|e| {
            Err(StateError::Read {
                msg: format!("the reading thread failed: {e}"),
            })
        })
    };
    let report = store
        .push_stream(
            &name,
            resources,
            head,
            args.force,
            &settings.actor,
            command,
            fence,
        )
        .await;
    if let Some(lease) = lease {
        // Written or not, the lock goes; should this fail, its lease runs out.
        let _ = lease.release().await;
    }
    let report = match report {
        Ok(r) => r,
        Err(StoreError::Invalid(e)) => {
            step.fail();
            return Err(anyhow!(e).context(format!(
                "{source} is not a state stategraph can store; nothing was written"
            )));
        }
        Err(e) => {
            step.fail();
            return Err(anyhow!(e)).context(format!(
                "failed to write state \"{name}\"; nothing was written"
            ));
        }
    };
    if report.created && settings.explicit_state.is_none() {
        // Pushed from the checkout whose default state this is: that is
        // where it comes from (under a name given with --state, the first
        // apply records it).
        if let Some(id) = store.state_id(&name).await? {
            record_origin(&store, settings, id).await?;
        }
    }
    step.done(format!(
        "{} added, {} changed, {} removed, {} unchanged (transaction {}, serial {})",
        thousands(report.added as usize),
        thousands(report.changed as usize),
        thousands(report.removed as usize),
        thousands(report.unchanged as usize),
        report.txn_id,
        report.serial
    ));
    Ok(())
}

/// `input` as it was, once its first byte past white space is seen to
/// open a JSON object: an empty file, or one that is not JSON at all (a
/// plan file, a tfvars file), is refused at once.
fn looks_like_json(mut input: Box<dyn Read + Send>, source: &str) -> Result<Box<dyn Read + Send>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => bail!(
                "{source} is not a state stategraph can store; nothing was written: the state \
                 is empty\n\n\
                 Give the state file `terraform state pull` writes (or a terraform.tfstate)."
            ),
            Ok(_) => {
                head.push(byte[0]);
                if !byte[0].is_ascii_whitespace() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {source}")),
        }
    }
    if byte[0] != b'{' {
        let line = 1 + head.iter().filter(|b| **b == b'\n').count();
        let column = head.len() - head.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bail!(
            "{source} is not a state stategraph can store; nothing was written: the state is \
             not valid JSON: expected an object at line {line}, column {column}\n\n\
             Give the state file `terraform state pull` writes (or a terraform.tfstate)."
        );
    }
    Ok(Box::new(std::io::Cursor::new(head).chain(input)))
}

/// Resources in flight between the reading thread and the COPY: enough to
/// keep both busy, few enough that memory stays bounded.
const PUSH_CHANNEL: usize = 64;

/// `state pull [--at TXN|TIME]`: the stored state (as it was then) as
/// tfstate v4 on stdout.
pub async fn pull(settings: &Settings, args: &PullArgs) -> Result<()> {
    let name = settings.state_name();
    let state = match &args.at {
        None => load(settings, &name).await?,
        Some(at) => load_at(settings, &name, at).await?,
    };
    let mut out = settings.ui.data();
    state.write_json(&mut out)?;
    out.flush()?;
    Ok(())
}

/// `state list [-id=ID] [ADDR...]`
pub async fn list(settings: &Settings, args: &ListArgs) -> Result<()> {
    let targets = args
        .addresses
        .iter()
        .map(|a| address::parse_target(a).map_err(|e| anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    // An empty state lists nothing; a state that does not exist is an
    // error, as terraform's "No state file was found!" (exit 1).
    let state = load(settings, &settings.state_name()).await?;
    let mut found = Vec::new();
    for r in &state.resources {
        let raddr = r.address();
        for i in r.instances.iter().filter(|i| i.deposed.is_none()) {
            let text = i.address(&raddr);
            let parsed = address::parse_instance(&text)
                .map_err(|e| anyhow!("stored address {text} is not valid: {e}"))?;
            if !targets.is_empty() && !targets.iter().any(|t| t.matches(&parsed)) {
                continue;
            }
            if let Some(id) = &args.id {
                let matches = i
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("id"))
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| v == id);
                if !matches {
                    continue;
                }
            }
            found.push(parsed);
        }
    }
    found.sort();
    let mut out = settings.ui.data();
    for a in &found {
        writeln!(out, "{a}")?;
    }
    out.flush()?;
    Ok(())
}

/// `state show ADDR`: terraform renders the instance (it knows the provider
/// schema); we hand it a private state file holding just that resource.
pub async fn show(settings: &Settings, args: &ShowArgs) -> Result<()> {
    let target = address::parse_instance(&args.address).map_err(|e| anyhow!("{e}"))?;
    let wanted = target.to_string();
    let name = settings.state_name();
    let mut state = load(settings, &name).await?;
    state.resources.retain_mut(|r| {
        let raddr = r.address();
        r.instances.retain(|i| i.address(&raddr) == wanted);
        !r.instances.is_empty()
    });
    if state.resources.is_empty() {
        bail!(
            "no instance found for the given address\n\n\
             This command requires that the address references one specific instance.\n\
             To view the available instances, use \"stategraph state list\"."
        );
    }
    state.outputs.clear();
    let Some(bin) = settings.terraform.as_deref() else {
        bail!(
            "terraform is needed to render a resource the way terraform does, and it is not on PATH\n\n\
             Install terraform >= 1.5 (or OpenTofu), or set STATEGRAPH_TERRAFORM to its path."
        );
    };
    let tf = Terraform::discover(Some(bin), &settings.database.hidden_env())?.with_ui(settings.ui);
    // The state holds secrets: a private directory (0700) and file (0600), removed on return.
    let dir = tempfile::Builder::new()
        .prefix("stategraph-")
        .tempdir_in(&settings.temp_dir)
        .context("cannot create a private temporary directory")?;
    let file = dir.path().join("show.tfstate");
    write_private(&file, &state.to_json())
        .with_context(|| format!("cannot write {}", file.display()))?;
    let done = tf
        .command(&settings.workdir)
        .env("CHECKPOINT_DISABLE", "1")
        .args(["state", "show"])
        .arg(format!("-state={}", file.display()))
        .arg(&wanted)
        .run()
        .await?;
    drop(dir);
    Exit::with(done.code)
}

/// The named state as it was after transaction `at` (a number) or at time
/// `at`, rebuilt from its rows and their history.
async fn load_at(settings: &Settings, name: &str, at: &str) -> Result<State> {
    let store = db::open_for_reading(settings).await?;
    if store.state_id(name).await?.is_none() {
        // The usual "no state" error.
        return load(settings, name).await;
    }
    let txn = if let Ok(id) = at.parse::<i64>() {
        store.txn_of_state(name, id).await?.ok_or_else(|| {
            anyhow!(
                "transaction {id} is not one of state \"{name}\"'s: `stategraph log` lists them"
            )
        })?
    } else {
        let time = parse_time(at).ok_or_else(|| {
            anyhow!(
                "--at {at} is neither a transaction ID nor a time: give an ID from \
                 `stategraph log`, or a time like 2026-01-31T12:00:00Z or \"2026-01-31 12:00:00\" (UTC)"
            )
        })?;
        store.txn_at(name, time).await?.ok_or_else(|| {
            anyhow!("state \"{name}\" had no committed transaction at {at}: `stategraph log` lists them")
        })?
    };
    store
        .snapshot(name, db::store::View::At(txn))
        .await?
        .map(|s| s.state)
        .ok_or_else(|| anyhow!("state \"{name}\" held nothing after transaction {txn}"))
}

/// RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` in UTC.
fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    None
}

/// The named state, or an error telling how to create one.
async fn load(settings: &Settings, name: &str) -> Result<State> {
    let store = db::open_for_reading(settings).await?;
    store.pull(name).await?.ok_or_else(|| {
        anyhow!(
            "no state named \"{name}\" in {}\n\n\
             `stategraph apply` creates it; `stategraph init -migrate-state` or \
             `stategraph state push terraform.tfstate` stores an existing one; --state names another.",
            store.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_rfc3339_or_utc_date_and_time() {
        let t = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2026-01-31T12:00:00+02:00").as_deref(),
            Some("2026-01-31T10:00:00+00:00")
        );
        assert_eq!(
            t("2026-01-31 12:00:05").as_deref(),
            Some("2026-01-31T12:00:05+00:00")
        );
        assert_eq!(
            t("2026-01-31 12:00").as_deref(),
            Some("2026-01-31T12:00:00+00:00")
        );
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2026-01-31"), None);
    }
}
