//! The embedded default database, driven through the real `stategraph`
//! binary the way a user would: `db status|start|stop`, and a command that
//! needs the database on a fresh machine, ten at once.
//!
//! Each test gets a fresh data directory and stops its cluster at the end,
//! also when it fails (a Drop guard runs `stategraph db stop`). The last test
//! checks the ephemeral cluster of `common/pg.rs` (used by the other
//! modules) is removed when its test process is killed with SIGKILL: it runs
//! this test binary again, as a child, to start one.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use assert_cmd::Command;

use crate::common::{exists, pg, poll_until, text};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn postgres_uid() -> u32 {
    nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres user")
        .uid
        .as_raw()
}

/// A temp dir the server user can traverse, and a data dir inside it that does not exist yet.
fn fresh_data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = tmp.path().join("sg");
    (tmp, data)
}

/// The embedded cluster in `data`, as on a developer's machine: not a CI
/// runner (where creating it is refused unless allowed; see adoption.rs),
/// whatever the environment the tests run in.
fn configure(cmd: &mut StdCommand, data: &Path) {
    cmd.env("STATEGRAPH_DATA_DIR", data)
        .env_remove("CI")
        .env_remove("STATEGRAPH_ALLOW_EMBEDDED")
        .env_remove("STATEGRAPH_DATABASE_URL")
        .env_remove("STATEGRAPH_PG_USER")
        .env_remove("PGHOST")
        .env_remove("PGDATABASE")
        .env_remove("PGSERVICE")
        .env_remove("PGPORT")
        .arg("--no-color");
}

/// `stategraph --no-color ARGS` against the embedded cluster in `data`.
fn sg(data: &Path, args: &[&str]) -> Command {
    let mut cmd = StdCommand::cargo_bin("stategraph").unwrap();
    configure(&mut cmd, data);
    cmd.current_dir(data.parent().unwrap()).args(args);
    Command::from_std(cmd)
}

fn status_json(data: &Path) -> serde_json::Value {
    let out = sg(data, &["db", "status", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// Stops the cluster when the test ends, passed or failed.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.join("pg").exists() {
            let _ = sg(&self.0, &["db", "stop"]).output();
        }
    }
}

/// psql over the unix socket, as root or as ourselves.
fn psql_socket(data: &Path, sql: &str) -> String {
    let bin =
        stategraph::db::embedded::find_pg_bin(None, std::env::var("PATH").ok().as_deref()).unwrap();
    let out = StdCommand::new(bin.join("psql"))
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(data.join("run"))
        .args(["-U", "stategraph", "-d", "stategraph", "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Every file and directory under `dir`, `dir` included.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn db_start_creates_the_cluster_once_reuses_it_and_db_stop_stops_it() {
    let (_tmp, data) = fresh_data_dir();
    let _stop = StopOnDrop(data.clone());

    let out = sg(&data, &["db", "status"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        text(&out.stdout).contains("does not exist"),
        "{}",
        text(&out.stdout)
    );
    assert!(!data.exists(), "status must not create the data dir");

    let started = Instant::now();
    let out = sg(&data, &["db", "start"])
        .assert()
        .success()
        .get_output()
        .clone();
    eprintln!(
        "first db start (initdb + start): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Creating the embedded PostgreSQL"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&data.join("pg").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("socket {}", data.join("run").display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("Starting the embedded PostgreSQL"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("running (pid"),
        "{}",
        text(&out.stdout)
    );

    let status = status_json(&data);
    assert_eq!(status["exists"], true, "{status}");
    assert_eq!(status["running"], true, "{status}");
    assert!(status["pid"].as_u64().is_some(), "{status}");
    assert_eq!(
        status["version"].as_str().map(|v| !v.is_empty()),
        Some(true),
        "{status}"
    );
    if is_root() {
        assert_eq!(status["server_user"], "postgres", "{status}");
    }

    // Already running: quiet and fine.
    let out = sg(&data, &["db", "start"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(text(&out.stderr), "", "a second start must be quiet");
    assert!(text(&out.stdout).contains(&format!("pid {}", status["pid"])));

    // The cluster belongs to the server user and nobody else can read it.
    let mut files = Vec::new();
    walk(&data.join("pg"), &mut files);
    assert!(
        files.len() > 100,
        "expected a whole cluster, found {} entries",
        files.len()
    );
    for f in files.iter().chain([&data.join("run")]) {
        let meta = f.symlink_metadata().unwrap();
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{} is mode {:o}",
            f.display(),
            meta.mode()
        );
        if is_root() {
            assert_eq!(
                meta.uid(),
                postgres_uid(),
                "{} is not owned by postgres",
                f.display()
            );
        }
    }

    // The socket is the only way in: no TCP listener.
    assert_eq!(psql_socket(&data, "SHOW listen_addresses"), "");
    assert_eq!(
        psql_socket(&data, "SELECT current_user || ' ' || current_database()"),
        "stategraph stategraph"
    );
    assert_eq!(
        psql_socket(&data, "SHOW fsync"),
        "on",
        "the embedded cluster holds real data"
    );
    let pid_file = std::fs::read_to_string(data.join("pg/postmaster.pid")).unwrap();
    assert_eq!(
        pid_file.lines().nth(5),
        Some(""),
        "listen address in postmaster.pid: {pid_file}"
    );

    let out = sg(&data, &["db", "stop"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        text(&out.stderr).contains("Stopping the embedded PostgreSQL"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("stopped"),
        "{}",
        text(&out.stdout)
    );
    let status = status_json(&data);
    assert_eq!(
        (status["exists"].clone(), status["running"].clone()),
        (true.into(), false.into()),
        "{status}"
    );
    assert!(!data.join("pg/postmaster.pid").exists());

    // Stopping a stopped cluster is not an error.
    sg(&data, &["db", "stop"]).assert().success();
}

/// Starts `args` ten times at once against a fresh data dir.
fn ten_at_once(data: &Path, args: &[&str]) -> Vec<Output> {
    let children: Vec<_> = (0..10)
        .map(|_| {
            let mut cmd = StdCommand::cargo_bin("stategraph").unwrap();
            configure(&mut cmd, data);
            cmd.current_dir(data.parent().unwrap())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// All succeeded, and exactly one of them created and started the cluster.
fn assert_created_once(data: &Path, outputs: &[Output]) {
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "process {i} failed ({}):\n{}",
            out.status,
            text(&out.stderr)
        );
    }
    let count = |needle: &str| {
        outputs
            .iter()
            .filter(|o| text(&o.stderr).contains(needle))
            .count()
    };
    let all_stderr: Vec<String> = outputs.iter().map(|o| text(&o.stderr)).collect();
    assert_eq!(
        count("Creating the embedded PostgreSQL"),
        1,
        "{all_stderr:#?}"
    );
    assert_eq!(
        count("Starting the embedded PostgreSQL"),
        1,
        "{all_stderr:#?}"
    );
    let log = std::fs::read_to_string(data.join("postgresql.log")).unwrap();
    assert_eq!(
        log.matches("database system is ready to accept connections")
            .count(),
        1,
        "one server start expected:\n{log}"
    );
    assert!(!data.join("pg.creating").exists());
}

#[test]
fn ten_db_starts_at_once_create_the_cluster_once() {
    let (_tmp, data) = fresh_data_dir();
    let _stop = StopOnDrop(data.clone());
    let outputs = ten_at_once(&data, &["db", "start"]);
    assert_created_once(&data, &outputs);
}

#[test]
fn install_sh_ends_with_what_it_started_and_what_to_run_next() {
    // `install.sh --demo`: the demo and its last words, with the binary
    // cargo built on PATH instead of building one.
    let (_tmp, data) = fresh_data_dir();
    let _stop = StopOnDrop(data.clone());
    let bin = assert_cmd::cargo::cargo_bin("stategraph");
    let path = std::env::join_paths(std::iter::once(bin.parent().unwrap().to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = StdCommand::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"));
    cmd.arg("--demo")
        .env("PATH", path)
        .env(
            "STATEGRAPH_TERRAFORM",
            crate::common::terraform::terraform_bin(),
        )
        .env("STATEGRAPH_DATA_DIR", &data)
        .env_remove("STATEGRAPH_DATABASE_URL")
        .env_remove("STATEGRAPH_STATE")
        .stdin(Stdio::null());
    for var in pg::LIBPQ_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "install.sh --demo failed:\n{err}");
    let last: Vec<&str> = err.lines().rev().take(8).collect();
    let last = last.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(
        last.contains(&format!(
            "embedded PostgreSQL cluster in {}",
            data.display()
        )),
        "{last}"
    );
    assert!(last.contains("stategraph db stop"), "{last}");
    assert!(last.contains("stategraph init -migrate-state"), "{last}");
    assert!(last.contains("STATEGRAPH_DATABASE_URL"), "{last}");
    // What it says is true: the cluster runs, and `db stop` stops it.
    let status = text(&sg(&data, &["db", "status"]).output().unwrap().stdout);
    assert!(status.contains("running"), "{status}");
    sg(&data, &["db", "stop"]).assert().success();
}

#[test]
fn ten_first_commands_at_once_create_the_cluster_once() {
    let (_tmp, data) = fresh_data_dir();
    let _stop = StopOnDrop(data.clone());
    let outputs = ten_at_once(&data, &["log"]);
    assert_created_once(&data, &outputs);
    for out in &outputs {
        assert_eq!(text(&out.stdout), "", "an empty log prints nothing");
    }
}

#[test]
fn half_created_crashed_and_stale_pid_clusters_recover() {
    let (_tmp, data) = fresh_data_dir();
    let _stop = StopOnDrop(data.clone());

    // initdb died half way: the staging dir is left behind.
    std::fs::create_dir_all(data.join("pg.creating/base")).unwrap();
    std::fs::write(data.join("pg.creating/PG_VERSION"), "15\n").unwrap();
    let out = sg(&data, &["db", "start"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("did not finish"), "{stderr}");
    assert!(
        stderr.contains("Creating the embedded PostgreSQL"),
        "{stderr}"
    );
    assert!(!data.join("pg.creating").exists());

    // The server is killed (crash, OOM): the pid file and socket stay behind.
    let pid = status_json(&data)["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        !exists(pid as u32)
    });
    assert!(data.join("pg/postmaster.pid").exists());
    assert_eq!(
        status_json(&data)["running"],
        false,
        "a dead server is not running"
    );
    // Its children notice the postmaster's death and exit; give them a moment.
    std::thread::sleep(Duration::from_millis(500));
    let out = sg(&data, &["db", "start"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        text(&out.stderr).contains("Starting the embedded PostgreSQL"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(psql_socket(&data, "SELECT 1"), "1");

    // After a reboot the pid file names a pid now used by another process.
    sg(&data, &["db", "stop"]).assert().success();
    let mut other = StdCommand::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(
        data.join("pg/postmaster.pid"),
        format!(
            "{}\n{}\n1700000000\n5432\n{}\n\n  0 0\nready   \n",
            other.id(),
            data.join("pg").display(),
            data.join("run").display()
        ),
    )
    .unwrap();
    assert_eq!(status_json(&data)["running"], false);
    let out = sg(&data, &["db", "start"])
        .assert()
        .success()
        .get_output()
        .clone();
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        text(&out.stderr).contains("not this cluster's server"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_json(&data)["running"], true);
}

#[test]
fn a_data_dir_the_server_user_cannot_reach_is_a_clear_error() {
    if !is_root() {
        return; // only root switches to another user
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = tmp.path().join("sg");
    let _stop = StopOnDrop(data.clone());
    let out = sg(&data, &["db", "start"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("user `postgres`, who cannot enter"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&tmp.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("STATEGRAPH_DATA_DIR"), "{stderr}");
}

/// Run in a child process by the next test: starts the test cluster, prints
/// where it lives, and waits to be killed.
#[test]
#[ignore = "helper, run by test_cluster_is_removed_when_its_test_process_is_killed"]
fn helper_start_test_cluster_and_wait() {
    if std::env::var_os("STATEGRAPH_TEST_PG_HELPER").is_none() {
        return;
    }
    let db = pg::test_db();
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_class WHERE relname = 'nope'"),
        "0"
    );
    println!("CLUSTER {} {}", pg::cluster_dir().display(), db.url);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn test_cluster_is_removed_when_its_test_process_is_killed() {
    let mut child = StdCommand::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            // The test's name within the `it` binary: its module path.
            "embedded::helper_start_test_cluster_and_wait",
            "--nocapture",
        ])
        .env("STATEGRAPH_TEST_PG_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(
            n > 0,
            "the helper exited without starting a cluster: {:?}",
            child.wait_with_output()
        );
        if line.starts_with("CLUSTER ") {
            break;
        }
    }
    let mut words = line.split_whitespace().skip(1);
    let dir = PathBuf::from(words.next().unwrap());
    let url = words.next().unwrap().to_owned();
    let port: u16 = url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(dir.join("data/PG_VERSION").exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().unwrap(); // SIGKILL: no destructor, no atexit
    child.wait().unwrap();
    poll_until(Duration::from_secs(15), Duration::from_millis(50), || {
        !dir.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(!dir.exists(), "{} survived its test process", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the test PostgreSQL on port {port} survived its test process"
    );
}
