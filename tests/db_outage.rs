//! The database lost in the middle of an apply: a clear message, nothing
//! half-written, terraform's result kept in a private recovery file, and no
//! lock stuck beyond its lease once the database is back.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::start_cluster_with;
use common::*;

/// `pg_ctl ARGS` on `data`, as the server's user.
fn pg_ctl(data: &Path, args: &[&str]) {
    let bin = stategraph::db::embedded::find_pg_bin(None).expect("PostgreSQL server binaries");
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

#[test]
fn losing_the_database_mid_apply_writes_nothing_and_keeps_the_result() {
    let cluster = start_cluster_with("", &[]);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port
    );
    let db = TestDb {
        url: url.clone(),
        name: "postgres".into(),
    };
    let wd = TfWorkdir::from_fixture("teams");
    let recovery = wd.path().join(".sg-data-unused/recovery");
    let run = |args: &[&str]| sg_tf(&db, &wd, "teams", args);
    let out = run(&["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gen_a = || {
        cluster.psql(
            &url,
            r#"SELECT attributes->'input'->'value'->>'gen' FROM instances WHERE address = 'module.team["a"].terraform_data.base'"#,
        )
    };
    assert_eq!(gen_a(), "1");

    let child = run(&[
        "--lock-lease=3s",
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        "sleep_seconds=4",
        "-var",
        r#"gen={a="2"}"#,
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.psql(&url, "SELECT count(*) FROM lock_holders") == "0" {
        assert!(Instant::now() < deadline, "the apply never locked");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the re-check under the lock and into terraform's 4 s apply.
    std::thread::sleep(Duration::from_millis(1500));
    // The database goes away while terraform applies.
    pg_ctl(&cluster.data_dir, &["-m", "immediate", "stop"]);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    eprintln!("apply without database ended after {:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the apply succeeded without its database:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{}/postgres", cluster.port)),
        "the message does not name the database:\n{stderr}"
    );
    assert!(stderr.contains("kept in"), "{stderr}");

    // What terraform applied is kept, privately.
    let kept: Vec<_> = std::fs::read_dir(&recovery)
        .unwrap_or_else(|e| panic!("no recovery dir {}: {e}\n{stderr}", recovery.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o077,
        0
    );
    let text = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(
        text.contains(r#""gen": "2""#),
        "the recovery file lacks the new team a"
    );

    // Back up: nothing was half-written, and the dead run's lock goes with its lease.
    pg_ctl(
        &cluster.data_dir,
        &[
            "-w",
            "-l",
            cluster.data_dir.join("restart.log").to_str().unwrap(),
            "restart",
        ],
    );
    assert_eq!(gen_a(), "1", "a half-written merge");
    let out = run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-lock-timeout=60s",
        "-var",
        r#"gen={b="2"}"#,
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cluster.psql(&url, "SELECT count(*) FROM lock_holders"), "0");
    pg_ctl(&cluster.data_dir, &["-m", "immediate", "stop"]);
}
