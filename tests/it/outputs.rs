//! Root outputs and what terraform's targeted runs leave out: each test
//! applies with stategraph and checks the stored outputs against what plain
//! terraform computes on the pulled state (`terraform plan` of it plans no
//! change). Outputs added, changed or removed with no resource change;
//! outputs of constants and variables; outputs reading a replaced resource;
//! `destroy` and `plan -destroy`; and an apply whose result falls partly
//! outside its locks, which is locked and written instead of discarded.

use crate::common::*;

const STATE: &str = "outputs";

/// `stategraph --state outputs ARGS` in `wd`, asserting success.
fn sg(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> (String, String) {
    assert_ok(&format!("stategraph {args:?}"), &sg_in(db, wd, STATE, args))
}

/// `stategraph plan -detailed-exitcode`: its exit code and stdout.
fn sg_plan(db: &TestDb, wd: &TfWorkdir, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["plan", "-detailed-exitcode", "-no-color"];
    args.extend_from_slice(extra);
    let out = sg_in(db, wd, STATE, &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "stategraph plan failed:\n{stdout}{stderr}"
    );
    (out.status.code(), stdout)
}

/// The stored root outputs, `name=value` by name.
fn stored_outputs(db: &TestDb) -> String {
    db.psql("SELECT coalesce(string_agg(name || '=' || value::text, ' ' ORDER BY name), '') FROM outputs")
}

/// A workdir with the configuration of `wd` and the state stategraph
/// stored, initialized for plain terraform.
fn pulled_copy(db: &TestDb, wd: &TfWorkdir) -> TfWorkdir {
    let (pulled, _) = sg(db, wd, &["state", "pull"]);
    let check = TfWorkdir::empty();
    copy_configuration(wd.path(), check.path());
    std::fs::write(check.state_path(), pulled).unwrap();
    check.terraform(&["init", "-no-color"]);
    check
}

/// Plain terraform's `plan -detailed-exitcode ARGS` on the state
/// stategraph stored: its exit code and output.
fn terraform_plan(db: &TestDb, wd: &TfWorkdir, extra: &[&str]) -> (Option<i32>, String) {
    let check = pulled_copy(db, wd);
    let mut args = vec!["plan", "-detailed-exitcode", "-no-color"];
    args.extend_from_slice(extra);
    let plan = check.terraform_allow_fail(&args);
    (plan.status.code(), text(&plan.stdout) + &text(&plan.stderr))
}

/// Plain terraform, on the state stategraph stored, finds nothing to do
/// (outputs included), and stategraph's own plan agrees.
#[track_caller]
fn converged(db: &TestDb, wd: &TfWorkdir) {
    let (code, plan) = terraform_plan(db, wd, &[]);
    assert_eq!(
        code,
        Some(0),
        "terraform plans changes on the state stategraph stored:\n{plan}"
    );
    let (code, plan) = sg_plan(db, wd, &[]);
    assert_eq!(code, Some(0), "stategraph plans changes again:\n{plan}");
}

/// The `.tf` files of `from` (and of its subdirectories), copied into `to`.
fn copy_configuration(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (p, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
        if name.starts_with('.') || name.contains("zzzz_") {
            continue;
        }
        if p.is_dir() {
            std::fs::create_dir_all(to.join(&name)).unwrap();
            copy_configuration(&p, &to.join(&name));
        } else if name.ends_with(".tf") || name.ends_with(".json") && !name.ends_with("tfstate") {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

const AB: &str = "resource \"terraform_data\" \"a\" {\n  input = \"a\"\n}\n\
                  resource \"terraform_data\" \"b\" {\n  input = \"b\"\n}\n";

#[test]
fn outputs_added_changed_or_removed_alone_are_planned_and_stored() {
    // No resource change: stategraph said "No changes" (terraform: "Changes
    // to Outputs", exit code 2) and never wrote them.
    let db = test_db();
    let wd = TfWorkdir::empty();
    let a_out = "output \"a\" {\n  value = terraform_data.a.output\n}\n";
    wd.write_file("main.tf", &format!("{AB}{a_out}"));
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert_eq!(stored_outputs(&db), r#"a="a""#);

    let steps: [(&str, String, &str); 3] = [
        (
            "added (one reads a resource, one a constant)",
            format!(
                "{AB}{a_out}output \"b\" {{\n  value = terraform_data.b.output\n}}\n\
                 output \"greeting\" {{\n  value = \"hello\"\n}}\n"
            ),
            r#"a="a" b="b" greeting="hello""#,
        ),
        (
            "changed",
            format!(
                "{AB}output \"a\" {{\n  value = \"${{terraform_data.a.output}}-x\"\n}}\n\
                 output \"b\" {{\n  value = terraform_data.b.output\n}}\n\
                 output \"greeting\" {{\n  value = \"hi\"\n}}\n"
            ),
            r#"a="a-x" b="b" greeting="hi""#,
        ),
        ("removed", format!("{AB}{a_out}"), r#"a="a""#),
    ];
    for (what, config, stored) in steps {
        wd.write_file("main.tf", &config);
        let (tf_code, tf_plan) = terraform_plan(&db, &wd, &[]);
        assert_eq!(tf_code, Some(2), "{what}: {tf_plan}");
        let (code, plan) = sg_plan(&db, &wd, &[]);
        assert_eq!(code, Some(2), "{what}: {plan}");
        assert!(plan.contains("Changes to Outputs"), "{what}: {plan}");
        let (_, stderr) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
        assert!(stderr.contains("root output"), "{what}: {stderr}");
        assert_eq!(stored_outputs(&db), stored, "{what}");
        converged(&db, &wd);
    }
}

#[test]
fn outputs_of_constants_variables_and_modules_are_stored_by_the_first_apply() {
    // A networking module's outputs that read only variables were missing
    // after its first apply: a targeted run never evaluates them.
    let db = test_db();
    let wd = TfWorkdir::empty();
    wd.write_file(
        "modules/net/main.tf",
        "variable \"cidr\" {}\n\
         resource \"terraform_data\" \"vpc\" {\n  input = var.cidr\n}\n\
         output \"cidr\" {\n  value = var.cidr\n}\n\
         output \"vpc_id\" {\n  value = terraform_data.vpc.id\n}\n",
    );
    wd.write_file(
        "main.tf",
        "variable \"region\" {\n  default = \"eu\"\n}\n\
         locals {\n  name = \"net-${var.region}\"\n}\n\
         module \"net\" {\n  source = \"./modules/net\"\n  cidr   = \"10.0.0.0/16\"\n}\n\
         output \"region\" {\n  value = var.region\n}\n\
         output \"name\" {\n  value = local.name\n}\n\
         output \"cidr\" {\n  value = module.net.cidr\n}\n\
         output \"vpc_id\" {\n  value = module.net.vpc_id\n}\n\
         output \"fixed\" {\n  value = { ok = true, n = 1.5 }\n}\n",
    );
    sg(&db, &wd, &["init", "-no-color"]);
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let vpc = db.psql(
        "SELECT attributes->>'id' FROM instances WHERE address = 'module.net.terraform_data.vpc'",
    );
    assert_eq!(
        stored_outputs(&db),
        format!(
            r#"cidr="10.0.0.0/16" fixed={{"n": 1.5, "ok": true}} name="net-eu" region="eu" vpc_id="{vpc}""#
        )
    );
    converged(&db, &wd);

    // A variable read by outputs only.
    let (code, plan) = sg_plan(&db, &wd, &["-var=region=us"]);
    assert_eq!(code, Some(2), "{plan}");
    assert!(plan.contains("Changes to Outputs"), "{plan}");
    sg(
        &db,
        &wd,
        &["apply", "-auto-approve", "-no-color", "-var=region=us"],
    );
    let stored = stored_outputs(&db);
    assert!(
        stored.contains(r#"name="net-us""#) && stored.contains(r#"region="us""#),
        "{stored}"
    );
    let (code, plan) = terraform_plan(&db, &wd, &["-var=region=us"]);
    assert_eq!(code, Some(0), "{plan}");
}

#[test]
fn outputs_reading_a_replaced_resource_get_its_new_id() {
    let db = test_db();
    let wd = TfWorkdir::empty();
    let config = |trigger: &str| {
        format!(
            "resource \"terraform_data\" \"a\" {{\n  triggers_replace = \"{trigger}\"\n}}\n\
             resource \"terraform_data\" \"b\" {{\n  input = \"b\"\n}}\n\
             output \"a_id\" {{\n  value = terraform_data.a.id\n}}\n\
             output \"ids\" {{\n  value = [terraform_data.a.id, terraform_data.b.id]\n}}\n"
        )
    };
    let ids = |db: &TestDb| {
        let id = |a: &str| {
            db.psql(&format!(
                "SELECT attributes->>'id' FROM instances WHERE address = '{a}'"
            ))
        };
        (id("terraform_data.a"), id("terraform_data.b"))
    };
    let expect = |db: &TestDb| {
        let (a, b) = ids(db);
        format!(r#"a_id="{a}" ids=["{a}", "{b}"]"#)
    };
    wd.write_file("main.tf", &config("1"));
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert_eq!(stored_outputs(&db), expect(&db));
    let first = ids(&db).0;

    sg(
        &db,
        &wd,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-replace=terraform_data.a",
        ],
    );
    assert_ne!(ids(&db).0, first, "terraform_data.a was not replaced");
    assert_eq!(stored_outputs(&db), expect(&db), "after -replace");
    converged(&db, &wd);

    let replaced = ids(&db).0;
    wd.write_file("main.tf", &config("2"));
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert_ne!(ids(&db).0, replaced, "terraform_data.a was not replaced");
    assert_eq!(
        stored_outputs(&db),
        expect(&db),
        "after a forced replacement"
    );
    converged(&db, &wd);
}

#[test]
fn destroy_leaves_no_outputs_and_no_data_sources() {
    let db = test_db();
    let wd = TfWorkdir::empty();
    wd.write_file(
        "remote-state.json",
        "{\"version\": 4, \"terraform_version\": \"1.5.0\", \"serial\": 1, \
         \"lineage\": \"3f1c2b9e-0d8a-4c1e-9f2b-6a7d8e9f0a1b\", \
         \"outputs\": {\"vpc_id\": {\"value\": \"vpc-1\", \"type\": \"string\"}}, \
         \"resources\": []}\n",
    );
    wd.write_file(
        "main.tf",
        "data \"terraform_remote_state\" \"net\" {\n  backend = \"local\"\n  \
         config = {\n    path = \"${path.module}/remote-state.json\"\n  }\n}\n\
         resource \"terraform_data\" \"a\" {\n  input = data.terraform_remote_state.net.outputs.vpc_id\n}\n\
         resource \"terraform_data\" \"b\" {\n  input = \"b\"\n}\n\
         output \"a\" {\n  value = terraform_data.a.output\n}\n\
         output \"vpc\" {\n  value = data.terraform_remote_state.net.outputs.vpc_id\n}\n\
         output \"fixed\" {\n  value = \"x\"\n}\n",
    );
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert_eq!(stored_outputs(&db), r#"a="vpc-1" fixed="x" vpc="vpc-1""#);
    assert_eq!(
        db.psql("SELECT count(*) FROM instances WHERE mode = 'data'"),
        "1"
    );

    // plan -destroy plans what terraform's does, outputs included.
    let (tf_code, tf_plan) = terraform_plan(&db, &wd, &["-destroy"]);
    let (code, plan) = sg_plan(&db, &wd, &["-destroy"]);
    assert_eq!((code, tf_code), (Some(2), Some(2)), "{plan}\n{tf_plan}");
    for line in [
        "Plan: 0 to add, 0 to change, 2 to destroy",
        "Changes to Outputs",
    ] {
        assert!(tf_plan.contains(line), "terraform: {tf_plan}");
        assert!(plan.contains(line), "stategraph: {plan}");
    }

    // destroy leaves what terraform's destroy leaves: nothing.
    let check = pulled_copy(&db, &wd);
    let destroyed = check.terraform(&["destroy", "-auto-approve", "-no-color"]);
    assert!(destroyed.status.success());
    sg(&db, &wd, &["destroy", "-auto-approve", "-no-color"]);
    let (pulled, _) = sg(&db, &wd, &["state", "pull"]);
    let pulled: serde_json::Value = serde_json::from_str(&pulled).unwrap();
    let theirs = crate::common::terraform::read_json(&check.state_path());
    for key in ["outputs", "resources"] {
        assert_eq!(pulled[key], theirs[key], "{key}: stategraph {pulled}");
    }
    assert_eq!(pulled["resources"], serde_json::json!([]));
    assert_eq!(pulled["outputs"], serde_json::json!({}));
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "0");
    assert_eq!(stored_outputs(&db), "");
}

#[test]
fn a_result_partly_outside_the_locks_is_locked_and_written() {
    // Terraform's targeted apply refreshes what the cone reads and writes
    // it back: a dependency that changed outside terraform (here its stored
    // row lacks an attribute terraform writes) comes back changed, outside
    // the locked write set. The run kept the result in a recovery file and
    // wrote nothing, although terraform had changed infrastructure.
    let db = test_db();
    let wd = TfWorkdir::empty();
    let config = |b: &str| {
        format!(
            "resource \"terraform_data\" \"a\" {{\n  input = \"a\"\n}}\n\
             resource \"terraform_data\" \"b\" {{\n  input = \"{b}-${{terraform_data.a.output}}\"\n}}\n"
        )
    };
    wd.write_file("main.tf", &config("b"));
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    db.psql(
        "UPDATE instances SET attributes = attributes - 'triggers_replace' \
         WHERE address = 'terraform_data.a'; DELETE FROM discovery_baseline",
    );
    wd.write_file("main.tf", &config("b2"));
    let (stdout, stderr) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert!(stdout.contains("1 changed"), "{stdout}");
    assert!(
        stderr.contains("terraform_data.a"),
        "the extra row is named: {stderr}"
    );
    assert_eq!(
        db.psql(
            "SELECT attributes->'input'->>'value' FROM instances WHERE address = 'terraform_data.b'"
        ),
        "b2-a"
    );
    assert_eq!(
        db.psql(
            "SELECT attributes ? 'triggers_replace' FROM instances WHERE address = 'terraform_data.a'"
        ),
        "t",
        "terraform's refreshed terraform_data.a was not written"
    );
    assert!(recovery_files(&wd.path().join(".terraform/stategraph/recovery")).is_empty());
    assert_eq!(
        db.psql("SELECT status FROM transactions ORDER BY id DESC LIMIT 1"),
        "committed"
    );
    converged(&db, &wd);

    // When another run holds such a row (here: reads it, locked shared),
    // it cannot be locked: the result is kept, failed in the log, naming
    // the row and the holder, and `recover` writes it once the row is free.
    db.psql(
        "UPDATE instances SET attributes = attributes - 'triggers_replace' \
         WHERE address = 'terraform_data.a'; DELETE FROM discovery_baseline",
    );
    hold_as_bob(
        &db,
        STATE,
        "stategraph apply (reading a)",
        &[("terraform_data.a", "shared")],
    );
    wd.write_file("main.tf", &config("b3"));
    let out = sg_in(&db, &wd, STATE, &["apply", "-auto-approve", "-no-color"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("outside the locked write set (terraform_data.a)")
            && stderr.contains("another run holds it")
            && stderr.contains("bob"),
        "{stderr}"
    );
    let kept = recovery_files(&wd.path().join(".terraform/stategraph/recovery"));
    assert_eq!(kept.len(), 1, "{stderr}");
    assert_eq!(
        db.psql("SELECT status FROM transactions ORDER BY id DESC LIMIT 1"),
        "failed"
    );
    db.psql("DELETE FROM lock_holders WHERE actor_user = 'bob'");
    sg(&db, &wd, &["recover", kept[0].to_str().unwrap()]);
    assert_eq!(
        db.psql(
            "SELECT attributes->'input'->>'value' FROM instances WHERE address = 'terraform_data.b'"
        ),
        "b3-a"
    );
    converged(&db, &wd);
}
