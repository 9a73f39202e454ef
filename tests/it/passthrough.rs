//! `stategraph init` and the terraform commands stategraph passes on: the
//! real terraform on `fixtures/tf/chain`, the state in a real PostgreSQL.

use std::process::Output;

use serde_json::Value;

use crate::common::*;

/// The state the tests here store `fixtures/tf/chain` as.
const STATE: &str = "chain";

/// `stategraph --state chain ARGS` in the workdir, asserting success; its stdout.
#[track_caller]
fn run_ok(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> String {
    assert_ok(&format!("stategraph {args:?}"), &sg_in(db, wd, STATE, args)).0
}

fn pulled(db: &TestDb) -> Value {
    serde_json::from_str(&sg_ok(db, &["--state", "chain", "state", "pull"])).unwrap()
}

#[test]
fn read_only_commands_run_on_the_stored_state_and_leave_the_directory_alone() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    run_ok(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let stored = pulled(&db);
    let before = files_under(wd.path());

    // output -json: the stored outputs, values as stored.
    let out: Value = serde_json::from_str(&run_ok(&db, &wd, &["output", "-json"])).unwrap();
    let outputs = out.as_object().unwrap();
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        ["root_id", "tails"],
        "{out}"
    );
    for (name, o) in outputs {
        assert_eq!(
            o["value"], stored["outputs"][name]["value"],
            "output {name}"
        );
    }
    let tails = outputs["tails"]["value"].as_object().unwrap();
    assert_eq!(tails.len(), 3, "{out}");

    // One output, as terraform prints it, and raw.
    let root_id = stored["outputs"]["root_id"]["value"].as_str().unwrap();
    assert!(!root_id.is_empty());
    assert_eq!(
        run_ok(&db, &wd, &["output", "root_id"]),
        format!("\"{root_id}\"\n")
    );
    assert_eq!(run_ok(&db, &wd, &["output", "-raw", "root_id"]), root_id);

    // show lists the stored resources with their stored attributes.
    let shown = run_ok(&db, &wd, &["show", "-no-color"]);
    for needle in [
        "# terraform_data.root:",
        "# terraform_data.join:",
        "# terraform_data.island[1]:",
        r#"# module.branch["c"].terraform_data.l4:"#,
        root_id,
    ] {
        assert!(shown.contains(needle), "show lacks {needle}:\n{shown}");
    }

    let valid = run_ok(&db, &wd, &["validate", "-no-color"]);
    assert!(
        valid.contains("Success! The configuration is valid."),
        "{valid}"
    );
    let version = run_ok(&db, &wd, &["version"]);
    assert!(version.starts_with("Terraform v1."), "{version}");

    // Terraform's exit code passes through.
    let missing = sg_in(&db, &wd, STATE, &["output", "-no-color", "nonexistent"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("Output \"nonexistent\" not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    assert_eq!(
        files_under(wd.path()),
        before,
        "the user's directory changed"
    );
    assert_eq!(pulled(&db), stored, "a read-only command changed the state");
}

#[test]
fn without_a_stored_state_outputs_are_empty_and_nothing_is_created() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let args = ["output", "-json"];
    let (stdout, _) = assert_ok(
        "stategraph output -json",
        &sg_in(&db, &wd, "nothing", &args),
    );
    let out: Value = serde_json::from_str(&stdout).expect("output -json prints JSON");
    assert_eq!(out, serde_json::json!({}));
    assert_eq!(
        db.psql("SELECT count(*) FROM states WHERE name = 'nothing'"),
        "0"
    );
}

#[test]
fn commands_that_write_state_run_with_the_state_locked_and_are_merged() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    run_ok(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let before = files_under(wd.path());
    let status = |addr: &str| {
        db.psql(&format!(
            "SELECT coalesce(status, 'ok') FROM instances WHERE address = '{addr}'"
        ))
    };

    // A run of bob's holds the state shared, as every run does (whatever
    // rows it holds besides): taint, which may write anywhere, waits for
    // it or fails naming it.
    hold_as_bob(&db, "chain", "stategraph apply", &[("*", "shared")]);
    let out = sg_in(&db, &wd, STATE, &["taint", "terraform_data.root"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Error acquiring the state lock") && stderr.contains("bob"),
        "{stderr}"
    );
    assert_eq!(
        status("terraform_data.root"),
        "ok",
        "tainted under bob's lock"
    );
    db.psql("DELETE FROM lock_holders");

    let out = sg_in(&db, &wd, STATE, &["taint", "terraform_data.root"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Locking the whole state... ready"),
        "{stderr}"
    );
    assert_eq!(status("terraform_data.root"), "tainted");
    run_ok(&db, &wd, &["untaint", "terraform_data.root"]);
    assert_eq!(status("terraform_data.root"), "ok");

    run_ok(
        &db,
        &wd,
        &[
            "state",
            "mv",
            "terraform_data.island[1]",
            "terraform_data.island[7]",
        ],
    );
    run_ok(&db, &wd, &["state", "rm", "terraform_data.island[0]"]);
    let islands = db.psql(
        "SELECT string_agg(address, ',' ORDER BY address) FROM instances WHERE name = 'island'",
    );
    assert_eq!(islands, "terraform_data.island[7]");
    let kinds = db
        .psql("SELECT string_agg(kind, ',' ORDER BY id) FROM transactions WHERE kind = 'command'");
    assert_eq!(kinds, "command,command,command,command");

    // Commands with no meaning here are still refused, and write nothing.
    let stored = pulled(&db);
    let out = sg_in(&db, &wd, STATE, &["push"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported by stategraph"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Workspaces belong to a directory, not to an explicit --state.
    let out = sg_in(&db, &wd, STATE, &["workspace", "new", "other"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workspaces do not apply"));
    // Our own state commands are not shadowed by the pass-through.
    let listed = run_ok(&db, &wd, &["state", "list"]);
    assert!(
        listed.lines().any(|l| l == "terraform_data.root"),
        "{listed}"
    );

    assert_eq!(pulled(&db), stored, "a refused command changed the state");
    assert_eq!(
        files_under(wd.path()),
        before,
        "the user's directory changed"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn init_installs_modules_without_a_backend_and_plan_works_after_it() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");

    let out = sg_in(&db, &wd, STATE, &["init", "-reconfigure"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stategraph init does not configure a backend (-reconfigure given)")
            && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    assert!(!wd.path().join(".terraform").exists(), "a refused init ran");

    let stdout = run_ok(&db, &wd, &["init", "-no-color"]);
    assert!(
        stdout.contains("Terraform has been successfully initialized!"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\x1b'),
        "-no-color was not passed on: {stdout}"
    );
    let data = wd.path().join(".terraform");
    assert!(
        data.join("modules/modules.json").is_file(),
        "init installed no modules"
    );
    assert!(
        !data.join("terraform.tfstate").exists(),
        "init configured a backend"
    );
    assert!(!wd.state_path().exists());

    let before = files_under(wd.path());
    let plan = run_ok(&db, &wd, &["plan", "-no-color"]);
    assert!(plan.contains("Plan: 19 to add, 0 to change"), "{plan}");
    assert_eq!(
        files_under(wd.path()),
        before,
        "plan changed the user's directory"
    );
}

/// `stategraph ARGS` in the workdir without `--state`.
fn sg_ws(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> Output {
    sg_wd(db, wd, args).output().expect("run stategraph")
}

/// The state name of `wd`'s default workspace (a directory outside git:
/// its canonical path); other workspaces are `BASE:NAME`.
fn state_base(wd: &TfWorkdir) -> String {
    wd.path()
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn workspaces_are_stored_states_of_the_directory() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let ok = |args: &[&str]| assert_ok(&format!("stategraph {args:?}"), &sg_ws(&db, &wd, args)).0;
    let base = state_base(&wd);
    assert_eq!(ok(&["workspace", "show"]).trim(), "default");
    ok(&["apply", "-auto-approve", "-no-color"]);

    assert!(ok(&["workspace", "new", "staging"])
        .contains("Created and switched to workspace \"staging\""));
    assert_eq!(
        std::fs::read_to_string(wd.path().join(".terraform/environment")).unwrap(),
        "staging"
    );
    assert_eq!(ok(&["workspace", "show"]).trim(), "staging");
    assert_eq!(ok(&["workspace", "list"]), "  default\n* staging\n\n");
    // An apply now goes to the staging state, from scratch.
    let out = ok(&["apply", "-auto-approve", "-no-color"]);
    assert!(out.contains("19 added"), "{out}");
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM instances i JOIN states s ON s.id = i.state_id WHERE s.name = '{base}:staging'"
        )),
        "19"
    );

    let out = sg_ws(&db, &wd, &["workspace", "select", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("doesn't exist"));
    assert!(ok(&["workspace", "select", "default"]).contains("Switched to workspace \"default\""));
    assert_eq!(ok(&["workspace", "list"]), "* default\n  staging\n\n");
    let out = sg_ws(&db, &wd, &["workspace", "new", "staging"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn workspace_delete_refuses_what_terraform_refuses_holds_the_lock_and_deletes_the_state() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let ok = |args: &[&str]| assert_ok(&format!("stategraph {args:?}"), &sg_ws(&db, &wd, args)).0;
    let fails = |args: &[&str], says: &str| {
        let out = sg_ws(&db, &wd, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        stderr
    };
    let base = state_base(&wd);
    let staging = format!("{base}:staging");
    let rows_of = |name: &str| {
        db.psql(&format!(
            "SELECT count(*) FROM instances i JOIN states s ON s.id = i.state_id WHERE s.name = '{name}'"
        ))
    };
    ok(&["apply", "-auto-approve", "-no-color"]);
    ok(&["workspace", "new", "staging"]);
    ok(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(rows_of(&staging), "19");

    // What terraform refuses, with its words.
    fails(
        &["workspace", "delete", "staging"],
        "is your active workspace",
    );
    ok(&["workspace", "select", "default"]);
    fails(
        &["workspace", "delete", "default"],
        "cannot delete the default workspace",
    );
    fails(
        &["workspace", "delete", "nope"],
        "Workspace \"nope\" doesn't exist",
    );
    fails(
        &["workspace", "delete"],
        "Expected a single argument: NAME.",
    );
    fails(
        &["workspace", "delete", "-bogus", "staging"],
        "flag provided but not defined: -bogus",
    );
    fails(
        &["workspace", "delete", "-force=maybe", "staging"],
        "-force=maybe is not true or false",
    );
    let out = sg_in(
        &db,
        &wd,
        STATE,
        &["workspace", "delete", "-force", "staging"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workspaces do not apply"));
    let stderr = fails(
        &["workspace", "delete", "staging"],
        "Workspace is not empty",
    );
    assert!(stderr.contains("  - terraform_data.join"), "{stderr}");
    assert!(stderr.contains("use the -force option"), "{stderr}");
    assert_eq!(rows_of(&staging), "19", "a refused delete deleted");

    // A run holding the staging state: the delete fails naming it, and
    // waits for it with -lock-timeout.
    hold_as_bob(&db, &staging, "stategraph apply", &[("*", "shared")]);
    let stderr = fails(
        &["workspace", "delete", "-force", "staging"],
        "Error acquiring the state lock",
    );
    assert!(stderr.contains("bob"), "{stderr}");
    assert_eq!(rows_of(&staging), "19", "deleted under another run's lock");
    db.psql("DELETE FROM lock_holders");

    let args = [
        "workspace",
        "delete",
        "-force",
        "-lock-timeout=10s",
        "staging",
    ];
    let (out, stderr) = assert_ok("workspace delete -force", &sg_ws(&db, &wd, &args));
    assert!(out.contains("Deleted workspace \"staging\"!"), "{out}");
    // Its lock went with the state: nothing to warn about.
    assert_eq!(stderr.trim(), "Locking the whole state... ready");
    assert!(out.contains("WARNING: \"staging\" was non-empty."), "{out}");
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM states WHERE name = '{staging}'"
        )),
        "0"
    );
    assert_eq!(rows_of(&staging), "0");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(ok(&["workspace", "list"]), "* default\n\n");
    // The default workspace's state is untouched.
    assert_eq!(rows_of(&base), "19");
    let out = ok(&["plan", "-no-color"]);
    assert!(out.contains("No changes"), "{out}");

    // An empty workspace goes without -force, and a new one of that name
    // starts empty.
    ok(&["workspace", "new", "scratch"]);
    ok(&["workspace", "select", "default"]);
    let out = ok(&["workspace", "delete", "scratch"]);
    assert!(
        out.contains("Deleted workspace \"scratch\"!") && !out.contains("WARNING"),
        "{out}"
    );
}
