//! Bad input gets a clear error, a non-zero exit, and nothing written.

use serde_json::Value;

use crate::common::*;

fn chain_state() -> (TfWorkdir, Value) {
    let wd = produce_state("chain");
    let doc = terraform::read_json(&wd.state_path());
    (wd, doc)
}

/// Pushes `bytes` as state `name`; asserts refusal and returns stderr.
fn refused(db: &TestDb, wd: &TfWorkdir, name: &str, bytes: &[u8]) -> String {
    let p = wd.path().join(format!("{name}.input"));
    std::fs::write(&p, bytes).unwrap();
    sg_err(db, &["--state", name, "state", "push", p.to_str().unwrap()])
}

#[test]
fn malformed_states_are_refused_with_where_and_why() {
    let db = test_db();
    // Create the schema, so that "nothing written" below is a real check.
    sg_ok(&db, &["--state", "x", "log"]);
    let (wd, doc) = chain_state();
    let text = serde_json::to_string_pretty(&doc).unwrap();

    let err = refused(&db, &wd, "trunc", &text.as_bytes()[..text.len() / 2]);
    assert!(
        err.contains("not valid JSON") && err.contains("line"),
        "{err}"
    );

    let err = refused(&db, &wd, "nonjson", b"<html>oops</html>");
    assert!(
        err.contains("not valid JSON") && err.contains("line 1, column 1"),
        "{err}"
    );

    let err = refused(&db, &wd, "empty", b"");
    assert!(err.contains("empty"), "{err}");

    // Plainly not a state: said before the database is reached (none
    // answers here), not hidden behind the connection error.
    for (bytes, said) in [(&b"  \n<html>"[..], "line 2, column 1"), (b"", "empty")] {
        let p = wd.path().join("unreachable.input");
        std::fs::write(&p, bytes).unwrap();
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("stategraph"))
            .env(
                "STATEGRAPH_DATABASE_URL",
                "postgres://nobody@127.0.0.1:1/none",
            )
            .args(["--state", "x", "state", "push", p.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(said) && err.contains("nothing was written"),
            "{err}"
        );
        assert!(!err.contains("127.0.0.1:1"), "{err}");
    }

    let v3 = br#"{"version": 3, "terraform_version": "0.11.14", "serial": 4, "lineage": "x", "modules": [{"path": ["root"], "outputs": {}, "resources": {}}]}"#;
    let err = refused(&db, &wd, "v3", v3);
    assert!(err.contains("version 3 is not supported"), "{err}");

    let mut wrong = doc.clone();
    wrong["resources"][1]["instances"][0]["schema_version"] = Value::from("zero");
    let addr = {
        let r = &doc["resources"][1];
        let module = r["module"]
            .as_str()
            .map(|m| format!("{m}."))
            .unwrap_or_default();
        format!(
            "{module}{}.{}",
            r["type"].as_str().unwrap(),
            r["name"].as_str().unwrap()
        )
    };
    let err = refused(&db, &wd, "types", &serde_json::to_vec(&wrong).unwrap());
    assert!(
        err.contains("schema_version") && err.contains(&addr),
        "{err}"
    );

    let mut wrong = doc.clone();
    wrong["serial"] = Value::from("12");
    let err = refused(&db, &wd, "serial", &serde_json::to_vec(&wrong).unwrap());
    assert!(err.contains("\"serial\" must be"), "{err}");

    let mut dup = doc.clone();
    let first = dup["resources"][0]["instances"][0].clone();
    dup["resources"][0]["instances"]
        .as_array_mut()
        .unwrap()
        .push(first);
    let err = refused(&db, &wd, "dup", &serde_json::to_vec(&dup).unwrap());
    assert!(err.contains("appears twice"), "{err}");

    let mut dangling = doc.clone();
    let inst = dangling["resources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "join")
        .unwrap();
    inst["instances"][0]["dependencies"] = serde_json::json!(["terraform_data.vanished[0]"]);
    let err = refused(
        &db,
        &wd,
        "dangling",
        &serde_json::to_vec(&dangling).unwrap(),
    );
    assert!(
        err.contains("terraform_data.vanished[0]") && err.contains("terraform_data.join"),
        "{err}"
    );

    let err = sg_err(
        &db,
        &[
            "--state",
            "missing",
            "state",
            "push",
            "/nonexistent/x.tfstate",
        ],
    );
    assert!(err.contains("cannot read /nonexistent/x.tfstate"), "{err}");

    // Nothing was written by any of the refused pushes.
    assert_eq!(db.psql("SELECT count(*) FROM states"), "0");
    assert_eq!(db.psql("SELECT count(*) FROM transactions"), "0");
}

#[test]
fn refused_push_leaves_the_stored_state_exactly_as_before() {
    let db = test_db();
    let (wd, doc) = chain_state();
    push(&db, "keep", &wd.state_path());
    let before = pull_to(&db, "keep", wd.path());
    let before = std::fs::read(before).unwrap();
    let rows_before =
        db.psql("SELECT md5(string_agg(to_jsonb(i)::text, '' ORDER BY id)) FROM instances i");

    let mut dup = doc.clone();
    dup["serial"] = Value::from(doc["serial"].as_i64().unwrap() + 5);
    let first = dup["resources"][0]["instances"][0].clone();
    dup["resources"][0]["instances"]
        .as_array_mut()
        .unwrap()
        .push(first);
    refused(&db, &wd, "keep", &serde_json::to_vec(&dup).unwrap());

    let after = std::fs::read(pull_to(&db, "keep", wd.path())).unwrap();
    assert_eq!(before, after);
    assert_eq!(
        rows_before,
        db.psql("SELECT md5(string_agg(to_jsonb(i)::text, '' ORDER BY id)) FROM instances i")
    );
}

#[test]
fn unreachable_database_names_host_and_database_not_password() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://alice:hunter2secret@127.0.0.1:{port}/tfstate?sslmode=disable");
    let out = assert_cmd::Command::cargo_bin("stategraph")
        .unwrap()
        .env("STATEGRAPH_DATABASE_URL", &url)
        .env("CI", "true")
        .args(["--state", "x", "state", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}/tfstate")), "{err}");
    assert!(!err.contains("hunter2secret"), "the password leaked: {err}");
    assert!(err.contains("--database-url"), "no next step in: {err}");
}

#[test]
fn misconfigured_database_urls_are_explained() {
    for (url, expect) in [
        ("postgres://u@h/db?sslmode=sometimes", "sslmode=sometimes"),
        ("postgres://u:pw@h:notaport/db", "not valid"),
    ] {
        let out = assert_cmd::Command::cargo_bin("stategraph")
            .unwrap()
            .args(["--database-url", url, "state", "list"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{url}: {err}");
        assert!(!err.contains("pw@"), "{url}: the password leaked: {err}");
    }
}

#[test]
fn pull_of_an_unknown_state_says_how_to_create_one() {
    let db = test_db();
    let err = sg_err(&db, &["--state", "nothing-here", "state", "pull"]);
    assert!(err.contains("no state named \"nothing-here\""), "{err}");
    assert!(err.contains("state push"), "{err}");
}

#[test]
fn usage_errors_exit_1_as_terraforms_do_and_help_exits_0() {
    // clap's usage errors exited 2, which `-detailed-exitcode` means
    // "changes present" to a CI step.
    let db = test_db();
    let out = stategraph(&db).args(["--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = stategraph(&db).args(["cone"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a missing argument");
    let out = stategraph(&db).args(["--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

#[test]
fn apply_json_without_approval_is_refused_before_anything_runs() {
    // It used to plan, then write a human approval prompt into the JSON.
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let out = sg_in(&db, &wd, "json", &["apply", "-json", "-input=true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Plan file or auto-approve required"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'states'"),
        "0"
    );
}

#[test]
fn state_list_of_a_state_that_does_not_exist_says_so() {
    // terraform: "No state file was found!", exit 1. An empty state lists
    // nothing; one that does not exist is not empty.
    let db = test_db();
    let out = stategraph(&db)
        .args(["--state", "nothing-here", "state", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no state named \"nothing-here\""), "{err}");
    assert!(err.contains("stategraph apply"), "no next step in: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_undefined_flag_is_refused_before_the_database_is_touched() {
    // A database nobody listens on: refusing must not need it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wd = TfWorkdir::from_fixture("chain");
    for command in ["plan", "apply", "destroy"] {
        let out = stategraph_without_db()
            .env(
                "STATEGRAPH_DATABASE_URL",
                format!("postgres://u@127.0.0.1:{port}/x?sslmode=disable"),
            )
            .current_dir(wd.path())
            .args([command, "-bogus"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("Error: Failed to parse command-line flags")
                && err.contains("flag provided but not defined: -bogus"),
            "{command}: {err}"
        );
        assert!(!err.contains(&port.to_string()), "{command}: {err}");
    }
}

#[test]
fn stategraphs_own_flags_are_refused_by_the_commands_that_do_not_have_them() {
    // A database nobody listens on: refusing must not need it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wd = TfWorkdir::from_fixture("chain");
    for (args, said) in [
        (
            &["taint", "-verify", "terraform_data.a"][..],
            "-verify is a flag of `stategraph plan`, not of `taint`",
        ),
        (
            &["state", "rm", "-allow-revert", "terraform_data.a"][..],
            "-allow-revert is a flag of `stategraph apply`, not of `state rm`",
        ),
        (
            &["workspace", "new", "-verify", "x"][..],
            "-verify is a flag of `stategraph plan`, not of `workspace new`",
        ),
        (
            &["plan", "-allow-revert"][..],
            "-allow-revert is a flag of `stategraph apply`",
        ),
        (
            &["apply", "-verify"][..],
            "-verify is a flag of `stategraph plan`",
        ),
    ] {
        let out = stategraph_without_db()
            .env(
                "STATEGRAPH_DATABASE_URL",
                format!("postgres://u@127.0.0.1:{port}/x?sslmode=disable"),
            )
            .current_dir(wd.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
    }
}

#[test]
fn a_terraform_path_that_does_not_exist_is_named() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let out = sg_tf(&db, &wd, "s", &["plan"])
        .env("STATEGRAPH_TERRAFORM", "/nonexistent/bin/terraform")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/bin/terraform does not exist")
            && err.contains("STATEGRAPH_TERRAFORM"),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 0, "{err}");
}

#[test]
fn one_hcl_mistake_gets_one_error() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    assert_ok(
        "apply",
        &sg_in(&db, &wd, "s", &["apply", "-auto-approve", "-no-color"]),
    );
    // Discovery now reads the configuration's HCL, and this does not parse.
    wd.write_file(
        "broken.tf",
        "resource \"terraform_data\" \"broken\" {\n  input = \"x\" +\n}\n",
    );
    let out = sg_in(&db, &wd, "s", &["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.matches("Invalid expression").count(), 1, "{err}");
    assert!(!err.contains("HCL parse error"), "stategraph's own: {err}");
    assert!(err.contains("broken.tf line 2"), "{err}");
}

#[test]
fn one_hcl_mistake_in_a_new_directory_gets_one_error() {
    // terraform's init (run in stategraph's private dir) adds a preamble
    // diagnostic and its progress lines; terraform's plan shows the error alone.
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    wd.write_file(
        "broken.tf",
        "resource \"terraform_data\" \"broken\" {\n  input = \"x\" +\n}\n",
    );
    let out = sg_in(&db, &wd, "s", &["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(stderr.matches("Error:").count(), 1, "{stderr}");
    assert!(stderr.contains("Invalid expression"), "{stderr}");
    assert!(!stdout.contains("Initializing"), "{stdout}");
}
