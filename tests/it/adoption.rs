//! Adopting stategraph safely (issue 14), end to end with the real binary,
//! PostgreSQL and terraform: a state is named after the checkout it belongs
//! to (the normalized `origin` remote plus the root module's path) and
//! refuses runs from another checkout unless `--adopt-state`; a plan never
//! creates a state; a push over an empty state takes any lineage;
//! terraform's own refusals (no configuration, bad or undeclared `-var`,
//! required variables, flags after the command) come first and touch no
//! stored state; `init -migrate-state` brings a local, `backend "local"` or
//! `backend "http"` state in with its lineage, serial and discovery
//! baseline; a run killed with SIGKILL leaves no override file in the
//! user's directory; on a CI runner without a database the embedded
//! cluster is refused (unless `STATEGRAPH_ALLOW_EMBEDDED=1`), and recovery
//! files go where `STATEGRAPH_RECOVERY_DIR` says.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::terraform::{read_json, terraform_bin, tf_env};
use crate::common::*;

/// `git ARGS` in `dir`; panics saying git is needed.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("git is needed by the checkout tests (install git): {e}"));
    assert!(
        out.status.success(),
        "git {args:?} failed:\n{}",
        text(&out.stderr)
    );
}

/// An empty workdir made a git repository, with `origin` set to `remote`
/// when given.
fn git_repo(remote: Option<&str>) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    git(wd.path(), &["init", "-q"]);
    if let Some(url) = remote {
        git(wd.path(), &["remote", "add", "origin", url]);
    }
    wd
}

/// A configuration of one `terraform_data` per name.
fn resources(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("resource \"terraform_data\" \"{n}\" {{\n  input = \"{n}\"\n}}\n"))
        .collect()
}

/// Every stored state's name, sorted, comma-separated.
fn state_names(db: &TestDb) -> String {
    db.psql("SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM states")
}

/// Every stored row (state, address, version, writing transaction): what a
/// refused run must leave as it was.
fn rows(db: &TestDb) -> String {
    db.psql(
        "SELECT coalesce(string_agg(s.name || ' ' || i.address || ' v' || i.version || ' t' || i.txn_id,
                                    ',' ORDER BY s.name, i.address), '')
         FROM instances i JOIN states s ON s.id = i.state_id",
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run stategraph")
}

/// Asserts that `out` failed with exit code 1 and that its stderr holds
/// every one of `needles`; returns stderr.
#[track_caller]
fn assert_refused(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: expected exit code 1:\nstdout:\n{}\nstderr:\n{stderr}",
        text(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: stderr does not say {needle:?}:\n{stderr}"
        );
    }
    stderr
}

// ---------------------------------------------------------------------------
// State identity
// ---------------------------------------------------------------------------

#[test]
fn the_default_state_is_the_remote_plus_the_path_and_repositories_never_share_one() {
    let db = test_db();
    // Repository A: one root module at its top, one in infra/.
    let a = git_repo(Some("git@github.com:acme/repo-a.git"));
    a.write_file("main.tf", &resources(&["a1", "a2"]));
    a.write_file("infra/main.tf", &resources(&["net"]));
    // Repository B: another remote, its root module at its top.
    let b = git_repo(Some("https://github.com/acme/repo-b.git"));
    b.write_file("main.tf", &resources(&["b1"]));

    let apply = ["apply", "-auto-approve", "-no-color"];
    assert_ok("apply at A's top", &run(&mut sg_wd(&db, &a, &apply)));
    assert_ok(
        "apply in A's infra/",
        &run(sg_wd(&db, &a, &apply).current_dir(a.path().join("infra"))),
    );
    assert_eq!(
        state_names(&db),
        "github.com/acme/repo-a,github.com/acme/repo-a//infra"
    );

    // The state name used to be the root module's path in its repository
    // alone: `.` at the top of A and of B alike, so B's apply planned
    // against A's rows and destroyed a1 and a2, which B does not declare.
    let (stdout, _) = assert_ok("apply at B's top", &run(&mut sg_wd(&db, &b, &apply)));
    assert!(
        stdout.contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "B's apply planned more than its own resource:\n{stdout}"
    );
    assert!(
        !stdout.contains("will be destroyed") && stdout.contains("0 destroyed"),
        "{stdout}"
    );
    assert_eq!(
        state_names(&db),
        "github.com/acme/repo-a,github.com/acme/repo-a//infra,github.com/acme/repo-b"
    );
    assert_eq!(
        db.psql(
            "SELECT string_agg(s.name || ' ' || i.address, ',' ORDER BY s.name, i.address)
             FROM instances i JOIN states s ON s.id = i.state_id"
        ),
        "github.com/acme/repo-a terraform_data.a1,github.com/acme/repo-a terraform_data.a2,\
         github.com/acme/repo-a//infra terraform_data.net,github.com/acme/repo-b terraform_data.b1"
    );
}

#[test]
fn a_state_made_from_another_checkout_is_refused_until_adopted() {
    let db = test_db();
    // Two repositories without a remote, each with its root module at its
    // top: both default to the state `.`.
    let x = git_repo(None);
    let y = git_repo(None);
    for wd in [&x, &y] {
        wd.write_file("main.tf", &resources(&["shared"]));
    }
    let apply = ["apply", "-auto-approve", "-no-color"];
    assert_ok("apply in X", &run(&mut sg_wd(&db, &x, &apply)));
    assert_eq!(state_names(&db), ".");
    let x_rows = rows(&db);
    let x_top = x.path().canonicalize().unwrap().display().to_string();
    let y_top = y.path().canonicalize().unwrap().display().to_string();

    // Y's runs used to plan (and apply) against X's rows without a word:
    // with another configuration, that destroys what X declares.
    for args in [&["plan", "-no-color"][..], &apply[..]] {
        let out = run(&mut sg_wd(&db, &y, args));
        assert_refused(
            &format!("{args:?} from Y"),
            &out,
            &[
                "state \".\" was created from another checkout",
                &x_top,
                "--state",
                "--adopt-state",
            ],
        );
    }
    assert_eq!(rows(&db), x_rows, "a refused run changed X's rows");

    // The checkout moved (same configuration): --adopt-state accepts it.
    let out = run(&mut sg_wd(
        &db,
        &y,
        &["--adopt-state", "apply", "-auto-approve", "-no-color"],
    ));
    let (_, stderr) = assert_ok("apply --adopt-state from Y", &out);
    assert!(stderr.contains("now comes from"), "{stderr}");
    assert_eq!(
        rows(&db),
        x_rows,
        "adopting an unchanged configuration wrote"
    );
    let out = run(&mut sg_wd(
        &db,
        &y,
        &["plan", "-detailed-exitcode", "-no-color"],
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "Y's plan after adopting:\n{}",
        text(&out.stderr)
    );
    // Now X is the other checkout.
    let out = run(&mut sg_wd(&db, &x, &["plan", "-no-color"]));
    assert_refused(
        "plan from X after Y adopted",
        &out,
        &["was created from another checkout", &y_top],
    );
}

#[test]
fn a_plan_creates_no_state_and_its_saved_plan_creates_it_when_applied() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("slow_chain");
    // A plan used to create the state it planned (empty, with a lineage of
    // its own): a typo in --state, or a plan before the migration, left a
    // state behind that the real one could not be pushed over.
    let out = run(&mut sg_wd(&db, &wd, &["plan", "-no-color"]));
    let (stdout, stderr) = assert_ok("plan of a state that does not exist", &out);
    assert!(stderr.contains("there is no state"), "{stderr}");
    assert!(
        stdout.contains("Plan: 3 to add, 0 to change, 0 to destroy"),
        "terraform's plan is not shown:\n{stdout}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM states"), "0");

    let out = run(&mut sg_wd(&db, &wd, &["plan", "-no-color", "-out=tfplan"]));
    assert_ok("plan -out of a state that does not exist", &out);
    assert_eq!(db.psql("SELECT count(*) FROM states"), "0");
    let out = run(&mut sg_wd(&db, &wd, &["apply", "-no-color", "tfplan"]));
    let (stdout, _) = assert_ok("apply of the saved plan", &out);
    assert!(stdout.contains("3 added"), "{stdout}");
    assert_eq!(db.psql("SELECT count(*) FROM states"), "1");
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "3");
    let out = run(&mut sg_wd(
        &db,
        &wd,
        &["plan", "-detailed-exitcode", "-no-color"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_push_over_an_empty_state_takes_any_lineage_but_not_over_resources() {
    let db = test_db();
    // A configuration with nothing in it: the apply creates the state, empty.
    let wd = TfWorkdir::empty();
    wd.write_file(
        "main.tf",
        "terraform {\n  required_version = \">= 1.5.0\"\n}\n",
    );
    let out = sg_in(&db, &wd, "e", &["apply", "-auto-approve", "-no-color"]);
    let (_, stderr) = assert_ok("apply of an empty configuration", &out);
    assert!(stderr.contains("created state \"e\""), "{stderr}");
    let lineage = db.psql("SELECT lineage FROM states WHERE name = 'e'");

    // Another terraform state (another lineage) is accepted over it, as
    // terraform's `state push` accepts it over an empty state. It used to
    // be refused for its lineage: the state the apply made up was in the
    // way of the real one.
    let real = produce_state("slow_chain");
    let pushed = read_json(&real.state_path());
    assert_ne!(pushed["lineage"], lineage.as_str());
    let path = real.state_path();
    let out = sg_in(&db, &wd, "e", &["state", "push", path.to_str().unwrap()]);
    assert_ok("push over an empty state", &out);
    assert_eq!(
        db.psql("SELECT lineage FROM states WHERE name = 'e'"),
        pushed["lineage"].as_str().unwrap()
    );
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "3");

    // Over resources, another lineage is refused, and nothing written.
    let before = rows(&db);
    let other = produce_state("slow_chain");
    let path = other.state_path();
    let out = sg_in(&db, &wd, "e", &["state", "push", path.to_str().unwrap()]);
    assert_refused("push of another lineage over resources", &out, &["lineage"]);
    assert_eq!(rows(&db), before);
}

// ---------------------------------------------------------------------------
// Terraform's own refusals
// ---------------------------------------------------------------------------

/// `terraform ARGS` in `wd` (no stategraph, no state): its exit code.
fn terraform_code(wd: &TfWorkdir, args: &[&str]) -> Option<i32> {
    wd.terraform_allow_fail(args).status.code()
}

#[test]
fn a_directory_without_configuration_is_refused_and_the_stored_state_untouched() {
    let db = test_db();
    let held = produce_state("slow_chain");
    push(&db, "held", &held.state_path());
    let before = rows(&db);
    let serial = db.psql("SELECT serial FROM states");

    // No .tf file here. stategraph used to plan the stored state against
    // nothing: every resource in it to destroy, and apply destroyed them.
    let empty = TfWorkdir::empty();
    for args in [
        &["apply", "-auto-approve", "-no-color"][..],
        &["plan", "-no-color"][..],
    ] {
        let out = sg_in(&db, &empty, "held", args);
        assert_refused(&format!("{args:?}"), &out, &["No configuration files"]);
        assert_eq!(
            terraform_code(&empty, args),
            Some(1),
            "terraform {args:?} in the same directory"
        );
        assert_eq!(rows(&db), before, "{args:?} touched the stored state");
        assert_eq!(db.psql("SELECT serial FROM states"), serial);
    }

    // -destroy is what terraform accepts without configuration.
    let out = sg_in(&db, &empty, "held", &["plan", "-destroy", "-no-color"]);
    let (stdout, stderr) = assert_ok("plan -destroy without configuration", &out);
    assert!(!stderr.contains("No configuration files"), "{stderr}");
    assert!(stdout.contains("3 to destroy"), "{stdout}");
    assert_eq!(rows(&db), before, "a plan wrote");
}

#[test]
fn variables_and_flags_terraform_refuses_are_refused_before_anything_runs() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("slow_chain");
    assert_ok(
        "first apply",
        &sg_in(&db, &wd, "vars", &["apply", "-auto-approve", "-no-color"]),
    );
    let before = rows(&db);
    // Nothing changed since: discovery needs no terraform run (the oracle,
    // which would run one anyway, is off), and such a plan used to exit 0
    // "no changes" without terraform ever seeing the bad variable.
    let plan = |args: &[&str]| -> (Output, Vec<String>) {
        let mut all = vec!["plan", "-no-color"];
        all.extend_from_slice(args);
        let out = sg_tf(&db, &wd, "vars", &all)
            .env_remove("STATEGRAPH_DISCOVERY_ORACLE")
            .output()
            .unwrap();
        (out, all.iter().map(|a| a.to_string()).collect())
    };
    let (out, _) = plan(&["-detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    for (args, said) in [
        (
            &["-var", "nosuchvar=1"][..],
            "Value for undeclared variable",
        ),
        (&["-var", "novalue"][..], "Invalid -var option"),
        (&["-chdir=.."][..], "flag provided but not defined: -chdir"),
    ] {
        let (out, all) = plan(args);
        assert_refused(&format!("stategraph {all:?}"), &out, &[said]);
        assert_eq!(
            terraform_code(&wd, &all.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(1),
            "terraform {all:?} in the same directory"
        );
    }

    // A required variable with no value.
    wd.write_file("required.tf", "variable \"needed\" {\n  type = string\n}\n");
    let (out, all) = plan(&[]);
    assert_refused(
        "plan without a required variable",
        &out,
        &["No value for required variable", "needed"],
    );
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(terraform_code(&wd, &all), Some(1));
    assert_eq!(rows(&db), before, "a refused plan wrote");
}

// ---------------------------------------------------------------------------
// Migration
// ---------------------------------------------------------------------------

/// (lineage, serial) of the stored state `name`.
fn stored_identity(db: &TestDb, name: &str) -> (String, String) {
    let row = db.psql(&format!(
        "SELECT lineage || ' ' || serial FROM states WHERE name = '{name}'"
    ));
    let (lineage, serial) = row
        .split_once(' ')
        .unwrap_or_else(|| panic!("no state {name:?}: {row:?}"));
    (lineage.to_owned(), serial.to_owned())
}

/// (lineage, serial) of a terraform state file.
fn file_identity(path: &Path) -> (String, String) {
    let v = read_json(path);
    (
        v["lineage"].as_str().unwrap().to_owned(),
        v["serial"].to_string(),
    )
}

/// The instances of state `name`, pulled, as (address-ordered) JSON.
fn pulled_resources(db: &TestDb, name: &str) -> serde_json::Value {
    let pulled = sg_ok(db, &["--state", name, "state", "pull"]);
    let v: serde_json::Value = serde_json::from_str(&pulled).unwrap();
    v["resources"].clone()
}

#[test]
fn init_migrate_state_brings_a_local_state_in_and_leaves_the_file_alone() {
    let db = test_db();
    // Applied with plain terraform: the state is terraform.tfstate.
    let wd = produce_state("slow_chain");
    let file = wd.state_path();
    let bytes = std::fs::read(&file).unwrap();

    // A plan used to start an empty state here and plan every resource as
    // new (and an apply to create them all again).
    let out = run(&mut sg_wd(&db, &wd, &["plan", "-no-color"]));
    assert_refused(
        "plan of an unmigrated configuration",
        &out,
        &["stategraph init -migrate-state", "terraform.tfstate"],
    );
    assert_eq!(state_names(&db), "");

    let out = run(&mut sg_wd(
        &db,
        &wd,
        &["init", "-migrate-state", "-no-color"],
    ));
    assert_ok("init -migrate-state", &out);
    let name = db.psql("SELECT name FROM states");
    assert_eq!(stored_identity(&db, &name), file_identity(&file));
    assert_eq!(
        pulled_resources(&db, &name),
        read_json(&file)["resources"],
        "the stored state is not the file's"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the local state file changed"
    );

    // The discovery baseline is recorded: the next plan compares the
    // configuration with it, and runs no plan of the whole configuration.
    assert_eq!(db.psql("SELECT count(*) FROM discovery_baseline"), "1");
    let out = sg_wd(&db, &wd, &["plan", "-detailed-exitcode", "-no-color"])
        .env_remove("STATEGRAPH_DISCOVERY_ORACLE")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("configuration against the baseline"),
        "{stderr}"
    );
    assert!(!stderr.contains("plan without refresh"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

#[test]
fn a_local_backend_path_is_migrated_from_that_path() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("slow_chain");
    wd.write_file(
        "backend.tf",
        "terraform {\n  backend \"local\" {\n    path = \"other.tfstate\"\n  }\n}\n",
    );
    wd.terraform(&["init", "-input=false", "-no-color"]);
    wd.terraform(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let file = wd.path().join("other.tfstate");
    assert!(file.is_file() && !wd.state_path().exists());

    let out = run(&mut sg_wd(
        &db,
        &wd,
        &["init", "-migrate-state", "-no-color"],
    ));
    let (_, stderr) = assert_ok("init -migrate-state", &out);
    assert!(stderr.contains("other.tfstate"), "{stderr}");
    let name = db.psql("SELECT name FROM states");
    assert_eq!(stored_identity(&db, &name), file_identity(&file));
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "3");
}

#[test]
fn migrating_over_a_state_of_another_lineage_is_refused_and_writes_nothing() {
    let db = test_db();
    let wd = produce_state("slow_chain");
    let other = produce_state("slow_chain");
    push(&db, "target", &other.state_path());
    let before = (
        rows(&db),
        stored_identity(&db, "target"),
        db.psql("SELECT count(*) FROM transactions"),
    );
    let out = sg_in(&db, &wd, "target", &["init", "-migrate-state", "-no-color"]);
    assert_refused(
        "migration over another lineage",
        &out,
        &["another lineage", "nothing was written"],
    );
    let after = (
        rows(&db),
        stored_identity(&db, "target"),
        db.psql("SELECT count(*) FROM transactions"),
    );
    assert_eq!(after, before);
}

/// A tiny HTTP server (python's http.server) on 127.0.0.1 serving one
/// terraform state at every GET, as terraform's `http` backend reads it;
/// any other method is answered 405. Killed when dropped.
struct StateServer {
    child: Child,
    port: u16,
}

const STATE_SERVER: &str = r#"
import http.server, sys
body = open(sys.argv[1], 'rb').read()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def refuse(self):
        self.send_response(405)
        self.send_header('Content-Length', '0')
        self.end_headers()
    do_POST = do_PUT = do_DELETE = do_LOCK = do_UNLOCK = refuse
    def log_message(self, *args):
        sys.stderr.write('%s %s\n' % (self.command, self.path))
server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl StateServer {
    fn start(state: &Path) -> StateServer {
        let python = crate::common::moto::python_bin();
        let mut child = Command::new(&python)
            .args(["-c", STATE_SERVER])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("this test needs python3 ({python}): {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the state server printed no port: {line:?}")
        });
        StateServer { child, port }
    }
}

impl Drop for StateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_http_backend_is_migrated_through_terraform() {
    let db = test_db();
    let source = produce_state("slow_chain");
    let server = StateServer::start(&source.state_path());
    let wd = TfWorkdir::from_fixture("slow_chain");
    wd.write_file(
        "backend.tf",
        &format!(
            "terraform {{\n  backend \"http\" {{\n    address = \"http://127.0.0.1:{}/state\"\n  }}\n}}\n",
            server.port
        ),
    );
    // A plan stops: the configuration keeps its state elsewhere.
    let out = run(&mut sg_wd(&db, &wd, &["plan", "-no-color"]));
    assert_refused(
        "plan of a configuration with an http backend",
        &out,
        &["backend \"http\"", "stategraph init -migrate-state"],
    );
    let out = run(&mut sg_wd(
        &db,
        &wd,
        &["init", "-migrate-state", "-no-color"],
    ));
    assert_ok("init -migrate-state from the http backend", &out);
    let name = db.psql("SELECT name FROM states");
    assert_eq!(
        stored_identity(&db, &name),
        file_identity(&source.state_path())
    );
    assert_eq!(
        pulled_resources(&db, &name),
        read_json(&source.state_path())["resources"]
    );
    drop(server);
}

// ---------------------------------------------------------------------------
// Nothing left in the user's directory
// ---------------------------------------------------------------------------

/// Ends what is left of a killed run of `chain`: the processes whose
/// terraform data dir is in the scenario's temp dir (its terraform, and the
/// provisioner's `sleep`), started by this test.
fn end_leftovers(chain: &SlowChain) {
    let marker = format!("TF_DATA_DIR={}", chain.tmp.display());
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let env = std::fs::read(p.path().join("environ")).unwrap_or_default();
        if String::from_utf8_lossy(&env).contains(&marker) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn a_run_killed_with_sigkill_leaves_no_override_file() {
    let db = test_db();
    let chain = SlowChain::new(&db);
    let override_file = chain
        .wd
        .path()
        .join(stategraph::terraform::rundir::OVERRIDE_FILE);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());
    assert!(!override_file.exists());

    let mut victim = spawn_quiet(&mut chain.apply_gen2(&[], 30));
    chain.wait_until_first_is_recorded(&mut victim);
    assert!(
        override_file.exists(),
        "no override file while terraform applies"
    );
    // kill -9: stategraph cannot clean up. The override file used to stay
    // in the user's directory, where the user's own `terraform plan` then
    // read it (a local backend instead of theirs).
    victim.kill().unwrap();
    victim.wait().unwrap();
    let gone = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        !override_file.exists()
    });
    end_leftovers(&chain);
    assert!(
        gone,
        "{} is still there 10 s after the run was killed",
        override_file.display()
    );
}

// ---------------------------------------------------------------------------
// CI runners
// ---------------------------------------------------------------------------

/// `stategraph ARGS` in `wd` as on a CI runner with no database configured
/// (no URL, no PG* variable) and the data dir `data`.
fn on_ci_runner(wd: &TfWorkdir, data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("stategraph"));
    tf_env(&mut cmd, wd.cli_config());
    cmd.current_dir(wd.path())
        .env("CI", "true")
        .env("STATEGRAPH_DATA_DIR", data)
        .env("STATEGRAPH_TERRAFORM", terraform_bin())
        .env_remove("STATEGRAPH_DATABASE_URL")
        .env_remove("STATEGRAPH_STATE")
        .env_remove("STATEGRAPH_ALLOW_EMBEDDED")
        .env_remove("STATEGRAPH_PG_USER")
        .args(args);
    for var in pg::LIBPQ_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Stops the embedded cluster of a test when it ends, passed or failed.
struct StopEmbedded<'a> {
    wd: &'a TfWorkdir,
    data: PathBuf,
}

impl Drop for StopEmbedded<'_> {
    fn drop(&mut self) {
        if self.data.join("pg").exists() {
            let _ = on_ci_runner(self.wd, &self.data, &["db", "stop"]).output();
        }
    }
}

#[test]
fn a_ci_runner_without_a_database_gets_no_embedded_cluster_unless_allowed() {
    let wd = TfWorkdir::from_fixture("slow_chain");
    // The server user (when we are root) must traverse the data dir's parent.
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = tmp.path().join("sg");
    let _stop = StopEmbedded {
        wd: &wd,
        data: data.clone(),
    };

    // A CI runner used to get a cluster of its own, thrown away with the
    // runner after the job: the next job planned every resource as new.
    let out = run(&mut on_ci_runner(&wd, &data, &["plan", "-no-color"]));
    assert_refused(
        "plan on a CI runner without a database",
        &out,
        &["--database-url", "STATEGRAPH_ALLOW_EMBEDDED"],
    );
    assert!(!data.exists(), "the refused run created {}", data.display());

    let out =
        run(on_ci_runner(&wd, &data, &["plan", "-no-color"]).env("STATEGRAPH_ALLOW_EMBEDDED", "1"));
    let (stdout, stderr) = assert_ok("plan with STATEGRAPH_ALLOW_EMBEDDED=1", &out);
    assert!(
        stderr.contains("Creating the embedded PostgreSQL"),
        "{stderr}"
    );
    assert!(stdout.contains("Plan: 3 to add"), "{stdout}");
    assert!(data.join("pg").is_dir());
}

#[test]
fn a_recovery_file_goes_to_stategraph_recovery_dir() {
    let db = test_db();
    let chain = SlowChain::new(&db);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());
    let chosen = tempfile::tempdir().unwrap();
    let dir = chosen.path().join("artifacts");
    // The final write fails (the database is reachable and refuses it):
    // terraform's result is kept in a recovery file.
    refuse_row_writes(&db, "terraform_data.first");
    let out = chain
        .apply_gen2(&[], 0)
        .env("STATEGRAPH_RECOVERY_DIR", &dir)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the apply succeeded:\n{stderr}");
    // It used to go to the system temp dir, gone with a CI runner.
    let kept = recovery_files(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}\n{stderr}");
    assert!(
        recovery_files(&chain.wd.path().join(".terraform/stategraph/recovery")).is_empty(),
        "a recovery file in the default place too"
    );
    // CI is set: the message says to keep it as an artifact of the job.
    assert!(
        stderr.contains(&format!("save {} as an artifact", kept[0].display())),
        "{stderr}"
    );
}

/// Runs `cmd` on a terminal of its own (`script`), typing each answer once
/// `prompt` (its text so far) shows the awaited text: (exit code, all it
/// showed).
fn at_a_terminal(cmd: &std::process::Command, answers: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line = std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    let mut child = script
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs a command on a terminal: install util-linux");
    let shown = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let shown = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    let mut from = 0;
    for (awaited, answer) in answers {
        let started = std::time::Instant::now();
        let at = loop {
            let text = shown.lock().unwrap().clone();
            if let Some(i) = text[from..].find(awaited) {
                break from + i;
            }
            if started.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("the prompt {awaited:?} never showed; it showed:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        from = at + awaited.len();
        // Typed a moment after the prompt, as a person would: terraform
        // turns echo off for a sensitive value after printing its prompt,
        // and an answer typed before that was echoed, or lost with the
        // terminal's pending input (terraform's own plan then waited, and
        // ended without its plan, on a loaded machine).
        std::thread::sleep(Duration::from_millis(300));
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let shown = shown.lock().unwrap().replace("\r\n", "\n");
    (status.code(), shown)
}

#[test]
fn at_a_terminal_a_required_variable_is_asked_for_as_terraform_asks() {
    let db = test_db();
    let wd = TfWorkdir::empty();
    wd.write_file(
        "main.tf",
        r#"variable "name" {
  description = "The team's name.\nSecond line."
}
variable "token" {
  sensitive = true
}
variable "opt" {
  default = "x"
}
resource "terraform_data" "a" {
  input = "${var.name}-${var.opt}"
}
"#,
    );
    let vars = ["-var", "name=blue", "-var", "token=t0"];
    let mut first = vec!["apply", "-auto-approve", "-no-color"];
    first.extend(vars);
    assert_ok("first apply", &sg_in(&db, &wd, "asked", &first));
    wd.terraform(&["init", "-backend=false"]);

    let answers = [("Enter a value:", "green"), ("Enter a value:", "s3cret")];
    let args = ["plan", "-no-color", "-detailed-exitcode"];
    // The tests' TF_INPUT=0 off: terraform (and stategraph) may ask.
    let mut ours = sg_tf(&db, &wd, "asked", &args);
    let mut theirs = wd.command(&args);
    let (code, ours) = at_a_terminal(ours.env_remove("TF_INPUT"), &answers);
    let (tf_code, theirs) = at_a_terminal(theirs.env_remove("TF_INPUT"), &answers);
    // The prompts, as terraform shows them: in name order, the description
    // indented, a sensitive value typed unseen.
    let prompts = |shown: &str| -> String {
        let start = shown.find("var.name").expect("no prompt for var.name");
        let end = shown[start..].rfind("Enter a value:").unwrap() + start;
        shown[start..end].to_owned()
    };
    assert_eq!(prompts(&ours), prompts(&theirs), "{ours}\n---\n{theirs}");
    assert!(
        ours.contains("var.name\n  The team's name.\n  Second line.\n\n  Enter a value: green\n\nvar.token\n  Enter a value: \n"),
        "{ours}"
    );
    assert!(
        !ours.contains("s3cret"),
        "the sensitive answer was shown: {ours}"
    );
    // The answers reach every terraform command of the run: the change is
    // found and planned as terraform plans it.
    assert_eq!(tf_code, Some(2), "{theirs}");
    assert_eq!(code, Some(2), "{ours}");
    assert!(
        ours.contains(r#"~ input  = "blue-x" -> "green-x""#),
        "{ours}"
    );

    // -input=false: refused in terraform's words, as before.
    let out = sg_in(&db, &wd, "asked", &["plan", "-no-color", "-input=false"]);
    assert_refused(
        "-input=false",
        &out,
        &["No value for required variable", "name"],
    );
}
