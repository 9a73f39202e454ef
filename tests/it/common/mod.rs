//! Shared harness for the integration tests: an ephemeral PostgreSQL
//! (`pg`), terraform fixtures (`terraform`), a local AWS API (`moto`), and
//! the real `stategraph` binary wired to them.

pub mod moto;
pub mod pg;
pub mod terraform;

use std::path::Path;

use assert_cmd::Command;

pub use pg::{test_db, TestDb};
pub use terraform::{produce_state, TfWorkdir};

/// The real binary, pointed at `db`, with plain output and no embedded
/// database to fall back on (a misconfigured test fails instead of
/// silently starting a cluster).
pub fn stategraph(db: &TestDb) -> Command {
    let mut cmd =
        Command::cargo_bin("stategraph").expect("the stategraph binary is built by cargo test");
    cmd.env("STATEGRAPH_DATABASE_URL", &db.url)
        .env("CI", "true")
        .env(
            "STATEGRAPH_DATA_DIR",
            "/nonexistent/stategraph-tests-must-not-use-the-embedded-db",
        )
        .env_remove("STATEGRAPH_STATE")
        .env_remove("PGHOST")
        .env_remove("PGDATABASE")
        .env_remove("PGSERVICE");
    cmd
}

/// Runs `stategraph` with `args`, asserting success; returns stdout.
pub fn sg_ok(db: &TestDb, args: &[&str]) -> String {
    let out = stategraph(db).args(args).output().expect("run stategraph");
    assert!(
        out.status.success(),
        "stategraph {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs `stategraph` with `args`, asserting failure; returns stderr.
pub fn sg_err(db: &TestDb, args: &[&str]) -> String {
    let out = stategraph(db).args(args).output().expect("run stategraph");
    assert!(
        !out.status.success(),
        "stategraph {args:?} unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// Pushes the state file at `path` into state `name`.
pub fn push(db: &TestDb, name: &str, path: &Path) -> String {
    sg_ok(
        db,
        &[
            "--state",
            name,
            "state",
            "push",
            path.to_str().expect("utf-8 path"),
        ],
    )
}

/// Pulls state `name` into `dir/pulled.tfstate` and returns its path.
pub fn pull_to(db: &TestDb, name: &str, dir: &Path) -> std::path::PathBuf {
    let out = sg_ok(db, &["--state", name, "state", "pull"]);
    let path = dir.join("pulled.tfstate");
    std::fs::write(&path, out).expect("write pulled state");
    path
}

/// `stategraph ARGS` run in the terraform workdir `wd`, with terraform's
/// test environment (CLI config, no checkpoint, no input) and no state name:
/// it comes from the directory and the workspace, as for a user.
pub fn sg_wd(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("stategraph"));
    terraform::tf_env(&mut cmd, wd.cli_config());
    cmd.current_dir(wd.path())
        .env("STATEGRAPH_DATABASE_URL", &db.url)
        .env("STATEGRAPH_DATA_DIR", wd.path().join(".sg-data-unused"))
        .env("STATEGRAPH_TERRAFORM", terraform::terraform_bin())
        // Every discovery in the tests reads the changes both ways (streamed
        // and from the plan file) and fails if they differ.
        .env("STATEGRAPH_DISCOVERY_ORACLE", "1")
        .env("CI", "true")
        .env_remove("STATEGRAPH_STATE")
        .args(args);
    cmd
}

/// Like [`sg_wd`], on the stored state `state` (`--state STATE ARGS`).
pub fn sg_tf(db: &TestDb, wd: &TfWorkdir, state: &str, args: &[&str]) -> std::process::Command {
    let mut all = vec!["--state", state];
    all.extend_from_slice(args);
    sg_wd(db, wd, &all)
}
