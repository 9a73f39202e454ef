//! `stategraph db status|start|stop`: the embedded PostgreSQL cluster.
//!
//! Prints the cluster's status on stdout (a human summary, or one JSON
//! object with `--json`). All the work is in [`crate::db::embedded`]; this
//! file only formats. It never touches a remote database.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{DbArgs, DbCommand};
use crate::db::embedded::{self, EmbeddedStatus};
use crate::settings::{DatabaseTarget, Settings};

/// Runs one `db` subcommand.
pub async fn execute(settings: &Settings, cmd: &DbCommand) -> Result<()> {
    let cfg = &settings.embedded;
    let ui = &settings.ui;
    let (status, args) = match cmd {
        DbCommand::Status(args) => (
            embedded::status(cfg).context("cannot read the embedded PostgreSQL's status")?,
            args,
        ),
        DbCommand::Start(args) => (embedded::start(cfg, ui).await?, args),
        DbCommand::Stop(args) => (embedded::stop(cfg, ui).await?, args),
    };
    let remote = match &settings.database {
        DatabaseTarget::Remote(target) => Some(target.display.as_str()),
        DatabaseTarget::Embedded => None,
    };
    let text = render(&status, remote, matches!(cmd, DbCommand::Status(_)), args)?;
    settings.ui.say(text.trim_end());
    Ok(())
}

/// What `db` prints: JSON, the detailed summary, or the headline.
fn render(
    status: &EmbeddedStatus,
    remote: Option<&str>,
    detailed: bool,
    args: &DbArgs,
) -> Result<String> {
    if args.json {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            status: &'a EmbeddedStatus,
            /// The configured remote database (`host:port/db`), used instead of the embedded one.
            remote_database: Option<&'a str>,
        }
        serde_json::to_string(&Json {
            status,
            remote_database: remote,
        })
        .context("cannot encode the status as JSON")
    } else if detailed {
        Ok(summary(status, remote))
    } else {
        Ok(headline(status))
    }
}

/// One line: exists? running? pid?
fn headline(s: &EmbeddedStatus) -> String {
    let name = match &s.version {
        Some(v) => format!("embedded PostgreSQL {v}"),
        None => "embedded PostgreSQL".to_owned(),
    };
    if !s.exists {
        return format!(
            "{name}: does not exist yet (created on first use, or by `stategraph db start`)"
        );
    }
    match (s.running, s.pid) {
        (true, Some(pid)) => format!("{name}: running (pid {pid})"),
        (true, None) => format!("{name}: running"),
        (false, _) => format!("{name}: stopped (started on next use, or by `stategraph db start`)"),
    }
}

/// The headline and one line per field, for `db status`.
fn summary(s: &EmbeddedStatus, remote: Option<&str>) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!("{}\n", headline(s));
    out += &format!("  data dir:     {}\n", s.data_dir.display());
    out += &format!("  exists:       {}\n", yes_no(s.exists));
    out += &format!("  running:      {}\n", yes_no(s.running));
    out += &format!(
        "  pid:          {}\n",
        s.pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".to_owned())
    );
    out += &format!("  socket:       {}\n", s.socket_dir.display());
    out += &format!("  version:      {}\n", s.version.as_deref().unwrap_or("-"));
    out += &format!("  server user:  {}\n", s.server_user);
    if let Some(remote) = remote {
        out += &format!(
            "A remote database is configured ({remote}): stategraph uses it, not the embedded cluster.\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn status(exists: bool, running: bool) -> EmbeddedStatus {
        EmbeddedStatus {
            data_dir: PathBuf::from("/var/lib/stategraph"),
            exists,
            running,
            pid: running.then_some(4242),
            socket_dir: PathBuf::from("/var/lib/stategraph/run"),
            version: exists.then(|| "15".to_owned()),
            server_user: "postgres".to_owned(),
        }
    }

    #[test]
    fn headline_says_what_state_the_cluster_is_in() {
        assert!(headline(&status(false, false)).contains("does not exist"));
        assert_eq!(
            headline(&status(true, true)),
            "embedded PostgreSQL 15: running (pid 4242)"
        );
        assert!(headline(&status(true, false)).starts_with("embedded PostgreSQL 15: stopped"));
    }

    #[test]
    fn summary_names_the_remote_database_in_use() {
        let text = summary(&status(true, true), Some("db.internal:5432/tf"));
        assert!(
            text.contains("socket:       /var/lib/stategraph/run"),
            "{text}"
        );
        assert!(text.contains("server user:  postgres"), "{text}");
        assert!(
            text.contains("remote database is configured (db.internal:5432/tf)"),
            "{text}"
        );
        assert!(!summary(&status(true, true), None).contains("remote"));
    }
}
