//! The database lost in the middle of an apply. Back within the retry
//! window: the apply writes its result by itself. Gone for longer: a clear
//! message, nothing half-written, terraform's result in a private recovery
//! file that `stategraph recover` writes once the database is back (and
//! refuses to write over changes made since), and no lock stuck beyond its
//! lease.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::pg::{start_cluster_with, start_standby, ClusterHandle};
use crate::common::*;

/// `pg_ctl ARGS` on `data`, as the server's user.
fn pg_ctl(data: &Path, args: &[&str]) {
    let bin = stategraph::db::embedded::find_pg_bin(None, std::env::var("PATH").ok().as_deref())
        .expect("PostgreSQL server binaries");
    let pg_ctl = bin.join("pg_ctl");
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let out = cmd.arg("-D").arg(data).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The superuser's URL of the cluster on `port`, its `postgres` database.
fn admin(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable")
}

/// Waits until every standby of `primary` has replayed all it committed.
fn wait_until_replayed(primary: &ClusterHandle) {
    wait_until(
        "the standby did not catch up",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            primary.psql(
                &admin(primary.port),
                "SELECT coalesce(bool_and(replay_lsn >= pg_current_wal_lsn()), false) FROM pg_stat_replication",
            ) == "t"
        },
    );
}

/// `cmd` retrying a lost database for `retry` (`STATEGRAPH_DB_RETRY`).
fn with_retry(mut cmd: Command, retry: &str) -> Command {
    cmd.env("STATEGRAPH_DB_RETRY", retry);
    cmd
}

/// A cluster of its own (it is stopped and started) and the `slow_chain`
/// scenario on it, with short leases and retries.
struct Outage {
    cluster: ClusterHandle,
    url: String,
    chain: SlowChain,
}

impl Outage {
    fn new() -> Outage {
        let cluster = start_cluster_with("", &[]);
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            cluster.port
        );
        // The test cluster runs with synchronous_commit=off; an immediate
        // stop could then lose the last commits, which a real server keeps.
        cluster.psql(&url, "ALTER DATABASE postgres SET synchronous_commit = on");
        let db = TestDb {
            url: url.clone(),
            name: "postgres".into(),
        };
        Outage {
            cluster,
            url,
            chain: SlowChain::new(&db),
        }
    }

    fn sg(&self, retry: &str, args: &[&str]) -> Command {
        with_retry(self.chain.sg(args), retry)
    }

    /// `stategraph recover FILE`, run to completion.
    fn recover(&self, file: &Path) -> Output {
        self.sg("0s", &["recover", file.to_str().unwrap()])
            .output()
            .unwrap()
    }

    fn psql(&self, sql: &str) -> String {
        self.cluster.psql(&self.url, sql)
    }

    fn gen(&self, name: &str) -> String {
        self.chain.gen(name)
    }

    /// Starts `apply gen=2` with a 4 s `second`, and stops the database
    /// once terraform has been applying for a while.
    fn apply_and_stop_the_database(&self, lease: &str, retry: &str) -> std::process::Child {
        assert_ok(
            "apply of gen 1",
            &with_retry(self.chain.apply_gen1(), retry).output().unwrap(),
        );
        let lease = format!("--lock-lease={lease}");
        let mut child = spawn_piped(&mut with_retry(self.chain.apply_gen2(&[&lease], 4), retry));
        // `first` recorded by a checkpoint: terraform is in its 4 s step.
        self.chain.wait_until_first_is_recorded(&mut child);
        pg_ctl(&self.cluster.data_dir, &["-m", "immediate", "stop"]);
        child
    }

    fn start_database(&self) {
        let log = self.cluster.data_dir.join("restart.log");
        pg_ctl(
            &self.cluster.data_dir,
            // `restart` starts a stopped server with its previous options.
            &["-w", "-l", log.to_str().unwrap(), "restart"],
        );
    }

    #[track_caller]
    fn assert_consistent(&self) {
        assert_no_changes(&with_retry(self.chain.plan_gen2(), "0s").output().unwrap());
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        let bin =
            stategraph::db::embedded::find_pg_bin(None, std::env::var("PATH").ok().as_deref())
                .expect("PostgreSQL server binaries");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.cluster.data_dir)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[test]
fn a_database_restart_within_the_retry_window_is_ridden_out() {
    let o = Outage::new();
    let child = o.apply_and_stop_the_database("60s", "120s");
    // Down for a few seconds, about when terraform finishes.
    std::thread::sleep(Duration::from_secs(5));
    o.start_database();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the apply did not ride out the restart:\n{stderr}"
    );
    assert!(
        stderr.contains("unreachable"),
        "no word about the outage:\n{stderr}"
    );
    assert!(!stderr.contains("recover"), "{stderr}");
    assert_eq!(o.gen("second"), "2");
    assert_eq!(o.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(
        o.psql("SELECT string_agg(status, ',' ORDER BY id) FROM transactions WHERE kind = 'apply'"),
        "committed,committed"
    );
    o.assert_consistent();
}

#[test]
fn an_outage_longer_than_the_lease_stops_terraform_in_time_and_its_result_is_still_written() {
    let o = Outage::new();
    // A 3 s lease, down for 5 s: the lease would be over while terraform
    // still applies. Before it runs out (lease minus a quarter after the
    // last renewal), terraform gets its graceful stop, so that no other run
    // may take the locks while it still changes those resources.
    let child = o.apply_and_stop_the_database("3s", "120s");
    std::thread::sleep(Duration::from_secs(5));
    o.start_database();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "terraform was not stopped when the lease could not be renewed:\n{stderr}"
    );
    assert!(
        stderr.contains("stopping terraform now, before the lease runs out"),
        "{stderr}"
    );
    // What terraform did before it stopped is written once the database is
    // back (nobody took the locks meanwhile): `second` was being replaced,
    // and terraform left the new object tainted (its provisioner was
    // stopped), as its own state would hold it.
    assert!(stderr.contains("locked again"), "{stderr}");
    assert_eq!(o.gen("second"), "2");
    assert_eq!(
        o.psql("SELECT status FROM instances WHERE address = 'terraform_data.second'"),
        "tainted"
    );
    assert_eq!(o.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(
        o.psql("SELECT count(*) FROM transactions WHERE status = 'running'"),
        "0"
    );
    // A plan replaces the tainted object, as terraform's would; applying it
    // converges.
    let out = o
        .chain
        .sg(&["apply", "-auto-approve", "-no-color", "-var", "gen=2"])
        .output()
        .unwrap();
    assert_ok("the apply after the outage", &out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("is tainted, so must be replaced"), "{said}");
    o.assert_consistent();
}

#[test]
fn a_longer_outage_keeps_the_result_for_recover_which_refuses_stale_files() {
    let o = Outage::new();
    // Recovery files stay with the checkout (they survive a CI runner
    // only as its artifacts): .terraform/stategraph/recovery.
    let recovery = o.chain.wd.path().join(".terraform/stategraph/recovery");
    // A lease long enough for terraform to finish its 4 s step; a retry
    // window the outage outlasts.
    let child = o.apply_and_stop_the_database("30s", "2s");
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    eprintln!("apply without database ended after {:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the apply succeeded without its database:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{}/postgres", o.cluster.port)),
        "the message does not name the database:\n{stderr}"
    );

    // What terraform applied is kept, privately, with the command to finish.
    let kept: Vec<_> = std::fs::read_dir(&recovery)
        .unwrap_or_else(|e| panic!("no recovery dir {}: {e}\n{stderr}", recovery.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let file = &kept[0];
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o077,
        0
    );
    assert_eq!(
        std::fs::metadata(&recovery).unwrap().permissions().mode() & 0o077,
        0
    );
    assert!(
        stderr.contains(&format!("stategraph recover {}", file.display())),
        "no command to finish:\n{stderr}"
    );
    let stale_copy = o.chain.wd.path().join("copy.recovery.json");
    std::fs::copy(file, &stale_copy).unwrap();

    // recover before the database is back: a clear error, the file is kept.
    let out = o.recover(file);
    assert!(!out.status.success());
    assert!(
        file.exists(),
        "the file went away while the database was down"
    );

    // Back up: nothing half-written (the checkpoint of `first` is there,
    // `second` is not written), then recover writes the rest.
    o.start_database();
    assert_eq!(o.gen("first"), "2");
    assert_ne!(o.gen("second"), "2", "a half-written merge");
    let out = o.recover(file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("recovered"), "{stderr}");
    assert!(!file.exists(), "a recovered file is removed");
    assert_eq!(o.gen("second"), "2");
    assert_eq!(o.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(
        o.psql("SELECT count(*) FROM transactions WHERE kind = 'recover' AND status = 'committed'"),
        "1"
    );
    o.assert_consistent();

    // The same result again: its rows changed since (by the recovery), so
    // it is refused, naming them, and the file is kept.
    let out = o.recover(&stale_copy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a stale recovery file was written:\n{stderr}"
    );
    assert!(
        stderr.contains("terraform_data.second") && stderr.contains("changed by transaction"),
        "{stderr}"
    );
    assert!(stale_copy.exists());
    assert_eq!(o.psql("SELECT count(*) FROM lock_holders"), "0");

    // A file that is not a recovery file is refused clearly.
    let state = o.chain.wd.path().join("main.tf");
    let out = o.recover(&state);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a stategraph recovery file"),
        "{stderr}"
    );
}

/// High availability as teams run it: a primary and a streaming standby,
/// stategraph given both with `target_session_attrs=read-write`. The
/// primary dies in the middle of an apply and the standby is promoted: the
/// apply reconnects to the new primary, where its lock and its checkpoint
/// are, and completes; nothing is lost.
#[test]
fn a_primary_failover_in_the_middle_of_an_apply_loses_nothing() {
    let primary = start_cluster_with("", &[]);
    // Commits are acknowledged once on disk (the test cluster's default is
    // off), as on a real primary.
    primary.psql(
        &admin(primary.port),
        "ALTER SYSTEM SET synchronous_commit = on",
    );
    primary.psql(&admin(primary.port), "SELECT pg_reload_conf()");
    let standby = start_standby(&primary);
    let db = TestDb {
        url: format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?sslmode=disable&target_session_attrs=read-write",
            primary.port, standby.port
        ),
        name: "postgres".into(),
    };
    let chain = SlowChain::new(&db);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());

    let mut apply = spawn_piped(&mut with_retry(chain.apply_gen2(&[], 6), "60s"));
    chain.wait_until_first_is_recorded(&mut apply);
    // The standby has everything the primary committed (its lock, the
    // checkpoint): then the primary dies and the standby takes over.
    wait_until_replayed(&primary);
    assert_eq!(
        standby.psql(&admin(standby.port), "SELECT count(*) FROM lock_holders"),
        "1",
        "the standby does not have the apply's lock"
    );
    pg_ctl(&primary.data_dir, &["-m", "immediate", "stop"]);
    standby.psql(&admin(standby.port), "SELECT pg_promote()");

    let out = apply.wait_with_output().unwrap();
    let (_, stderr) = assert_ok("the apply across the failover", &out);
    assert_eq!(chain.gen("first"), "2", "{stderr}");
    assert_eq!(chain.gen("second"), "2", "{stderr}");
    assert_no_changes(&with_retry(chain.plan_gen2(), "0s").output().unwrap());
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(
        db.psql(
            "SELECT string_agg(status, ',' ORDER BY id) FROM transactions WHERE kind = 'apply'"
        ),
        "committed,committed"
    );
}

/// Read-only commands may read from a standby when told to
/// (`STATEGRAPH_READ_TARGET_SESSION_ATTRS=any`): with the primary down,
/// they still answer from the standby, while writes (and reads not told
/// to) look for a read-write server and say they found none.
#[test]
fn read_only_commands_read_from_a_standby_when_told_to() {
    let primary = start_cluster_with("", &[]);
    let standby = start_standby(&primary);
    let db = TestDb {
        url: format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?sslmode=disable&target_session_attrs=read-write&connect_timeout=5",
            primary.port, standby.port
        ),
        name: "postgres".into(),
    };
    let wd = TfWorkdir::empty();
    // Nothing has made the schema yet: a standby cannot be given it.
    let standby_only = TestDb {
        url: admin(standby.port),
        name: "postgres".into(),
    };
    let mut cmd = sg_tf(&standby_only, &wd, "ro", &["state", "list"]);
    let out = cmd
        .env("STATEGRAPH_READ_TARGET_SESSION_ATTRS", "any")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("schema version 0 and this stategraph needs"),
        "{}",
        text(&out.stderr)
    );
    wd.write_file(
        "main.tf",
        r#"
resource "terraform_data" "a" { input = "one" }
resource "terraform_data" "b" { input = terraform_data.a.output }
output "b" { value = terraform_data.b.output }
"#,
    );
    assert_ok("apply", &sg_in(&db, &wd, "ro", &["apply", "-auto-approve"]));
    wait_until_replayed(&primary);
    pg_ctl(&primary.data_dir, &["-m", "immediate", "stop"]);

    let from_standby = |args: &[&str]| {
        let mut cmd = sg_tf(&db, &wd, "ro", args);
        cmd.env("STATEGRAPH_READ_TARGET_SESSION_ATTRS", "any");
        cmd.output().unwrap()
    };
    let (list, _) = assert_ok(
        "state list on the standby",
        &from_standby(&["state", "list"]),
    );
    assert_eq!(list, "terraform_data.a\nterraform_data.b\n");
    let (output, _) = assert_ok(
        "output on the standby",
        &from_standby(&["output", "-raw", "b"]),
    );
    assert_eq!(output, "one");
    let (log, _) = assert_ok("log on the standby", &from_standby(&["log"]));
    assert!(log.contains("apply"), "{log}");
    let (rows, _) = assert_ok(
        "query on the standby",
        &from_standby(&["query", "--csv", "SELECT count(*) AS n FROM instances"]),
    );
    assert_eq!(rows, "n\n2\n");

    // Writes need the primary, which is gone: said plainly, nothing done.
    wd.write_file(
        "main.tf",
        &std::fs::read_to_string(wd.path().join("main.tf"))
            .unwrap()
            .replace("\"one\"", "\"two\""),
    );
    let out = from_standby(&["apply", "-auto-approve"]);
    assert!(!out.status.success(), "an apply succeeded with no primary");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no server answered with the target_session_attrs asked for")
            && stderr.contains("STATEGRAPH_READ_TARGET_SESSION_ATTRS=any"),
        "{stderr}"
    );
    // A read not told to may use a standby looks for a read-write server.
    let out = sg_in(&db, &wd, "ro", &["state", "list"]);
    assert!(
        !out.status.success(),
        "state list found a read-write server: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("does not allow writes"),
        "{}",
        text(&out.stderr)
    );
}
