//! Shared harness for the integration tests: an ephemeral PostgreSQL
//! (`pg`), terraform fixtures (`terraform`), a local AWS API (`moto`), child
//! processes and waiting (`process`), the `slow_chain` scenario of the
//! failure tests (`slow_chain`), and here the real `stategraph` binary wired
//! to them and what the tests assert about its runs.

pub mod gate;
pub mod moto;
pub mod pg;
pub mod process;
pub mod slow_chain;
pub mod small_graph;
pub mod terraform;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use assert_cmd::Command;

pub use pg::{test_db, TestDb};
pub use process::*;
pub use slow_chain::{assert_no_changes, SlowChain};
pub use small_graph::{store_small_graph, SMALL_GRAPH};
pub use terraform::{produce_state, TfWorkdir};

/// The real binary with plain output, none of the libpq variables, and no
/// database: no URL, and no embedded database to fall back on (a
/// misconfigured test fails instead of silently starting a cluster).
pub fn stategraph_without_db() -> Command {
    let mut cmd =
        Command::cargo_bin("stategraph").expect("the stategraph binary is built by cargo test");
    cmd.env("CI", "true")
        .env(
            "STATEGRAPH_DATA_DIR",
            "/nonexistent/stategraph-tests-must-not-use-the-embedded-db",
        )
        .env_remove("STATEGRAPH_DATABASE_URL")
        .env_remove("STATEGRAPH_STATE");
    for var in pg::LIBPQ_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// [`stategraph_without_db`] pointed at `db`.
pub fn stategraph(db: &TestDb) -> Command {
    let mut cmd = stategraph_without_db();
    cmd.env("STATEGRAPH_DATABASE_URL", &db.url);
    cmd
}

/// Text of a command's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The plan in terraform's output: each resource's heading and the summary.
pub fn plan_of(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("# ") || l.starts_with("Plan:"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that the run `what` succeeded, showing its status and output if
/// not; returns its stdout and stderr.
#[track_caller]
pub fn assert_ok(what: &str, out: &Output) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Runs `stategraph` with `args`, asserting success; returns stdout.
#[track_caller]
pub fn sg_ok(db: &TestDb, args: &[&str]) -> String {
    let out = stategraph(db).args(args).output().expect("run stategraph");
    assert_ok(&format!("stategraph {args:?}"), &out);
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

/// Where stategraph keeps its own files for runs in `wd` (its
/// `STATEGRAPH_DATA_DIR`): recovery files are in `recovery/` there.
pub fn data_dir(wd: &TfWorkdir) -> PathBuf {
    wd.path().join(".sg-data-unused")
}

/// `stategraph ARGS` run in the terraform workdir `wd`, with terraform's
/// test environment (CLI config, no checkpoint, no input) and no state name:
/// it comes from the directory and the workspace, as for a user.
pub fn sg_wd(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("stategraph"));
    terraform::tf_env(&mut cmd, wd.cli_config());
    cmd.current_dir(wd.path())
        .env("STATEGRAPH_DATABASE_URL", &db.url)
        .env("STATEGRAPH_DATA_DIR", data_dir(wd))
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

/// [`sg_tf`] run to completion: `stategraph --state STATE ARGS` in `wd`.
pub fn sg_in(db: &TestDb, wd: &TfWorkdir, state: &str, args: &[&str]) -> Output {
    sg_tf(db, wd, state, args).output().expect("run stategraph")
}

/// The `gen` that `address` (a `terraform_data` whose input holds `gen`)
/// was last applied with, as stored; empty if there is no such row.
pub fn input_gen(db: &TestDb, address: &str) -> String {
    db.psql(&format!(
        "SELECT attributes->'input'->'value'->>'gen' FROM instances WHERE address = '{address}'"
    ))
}

/// Waits until some run holds a lock in `db`, as the apply `apply` does
/// once it has planned; panics (with `what`) if `apply` ends first or
/// nothing is locked within 60 s.
#[track_caller]
/// Makes bob@laptop, running `command`, hold `locks` (address, mode) on
/// state `state` for an hour, as another run would; returns the holder's id.
pub fn hold_as_bob(db: &TestDb, state: &str, command: &str, locks: &[(&str, &str)]) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    let values: Vec<String> = locks
        .iter()
        .map(|(a, m)| format!("('{}', '{m}')", quote(a)))
        .collect();
    db.psql(&format!(
        "WITH h AS (INSERT INTO lock_holders (state_id, actor_user, actor_host, command, lease_expires_at)
                    SELECT id, 'bob', 'laptop', '{}', now() + interval '1 hour'
                    FROM states WHERE name = '{}' RETURNING id, state_id),
              l AS (INSERT INTO locks (state_id, address, mode, holder_id)
                    SELECT state_id, a, m, id FROM h, (VALUES {}) v(a, m))
         SELECT id FROM h",
        quote(command),
        quote(state),
        values.join(", ")
    ))
}

/// Starts `stategraph --state STATE ARGS` (an apply without
/// `-auto-approve`) in `wd` with input on: it takes its locks and waits for
/// its approval on its stdin for as long as the test needs; returns once
/// it holds them.
pub fn awaiting_approval(db: &TestDb, wd: &TfWorkdir, state: &str, args: &[&str]) -> Child {
    let mut holder = sg_tf(db, wd, state, args)
        .env("TF_INPUT", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_locked(db, &mut holder, "the holder never locked");
    holder
}

pub fn wait_until_locked(db: &TestDb, apply: &mut Child, what: &str) {
    wait_until(
        what,
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            if db.psql("SELECT count(*) FROM lock_holders") != "0" {
                return true;
            }
            assert_running(apply, &format!("{what}: the apply ended before it locked"));
            false
        },
    );
}

/// Every file under `dir` (relative name -> bytes; symlinked directories are
/// not entered), to check that nothing in a user's directory changed.
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            // stategraph's own data dir (see `data_dir`), not the user's files.
            if p.file_name().is_some_and(|n| n == ".sg-data-unused") {
                continue;
            }
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Makes PostgreSQL refuse every change to the stored row of `address`
/// (any state of `db`): a trigger raises an error on its UPDATE or DELETE,
/// so that a run's write of that row fails while the database stays
/// reachable (a constraint, a permission, a bug: not an outage). Undone by
/// [`allow_row_writes`].
pub fn refuse_row_writes(db: &TestDb, address: &str) {
    let literal = format!("'{}'", address.replace('\'', "''"));
    db.psql(&format!(
        "CREATE FUNCTION sg_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'test trigger: writes of % are refused', OLD.address; END $$;
         CREATE TRIGGER sg_test_refuse BEFORE UPDATE OR DELETE ON instances
         FOR EACH ROW WHEN (OLD.address = {literal}) EXECUTE FUNCTION sg_test_refuse();"
    ));
}

/// Undoes [`refuse_row_writes`].
pub fn allow_row_writes(db: &TestDb) {
    db.psql("DROP TRIGGER sg_test_refuse ON instances; DROP FUNCTION sg_test_refuse();");
}

/// The recovery files in `dir` (none if it does not exist).
pub fn recovery_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("a directory entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// A state of `n` generated instances (`fixtures/genstate.py`) at `path`.
pub fn generate_state(n: usize, path: &Path) {
    let python = moto::python_bin();
    let out = std::process::Command::new(&python)
        .arg(terraform::fixtures_dir().join("../genstate.py"))
        .args(["--instances", &n.to_string(), "--seed", "7", "-o"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("could not run {python} ({e}): genstate.py needs python3"));
    assert_ok("genstate.py", &out);
}
