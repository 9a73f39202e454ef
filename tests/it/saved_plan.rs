//! Saved plans: stale only when something the plan read or writes changed.

use crate::common::*;

fn gen_of(db: &TestDb, team: &str) -> String {
    db.psql(&format!(
        r#"SELECT attributes->'input'->'value'->>'gen' FROM instances WHERE address = 'module.team["{team}"].terraform_data.base'"#
    ))
}

fn run(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> std::process::Output {
    sg_tf(db, wd, "teams", args).output().unwrap()
}

fn assert_ok(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "failed: {}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn a_saved_plan_survives_unrelated_changes_and_is_applied_elsewhere() {
    let db = test_db();
    let planner = TfWorkdir::from_fixture("teams");
    assert_ok(&run(
        &db,
        &planner,
        &["apply", "-auto-approve", "-no-color"],
    ));

    let stderr = assert_ok(&run(
        &db,
        &planner,
        &[
            "plan",
            "-no-color",
            "-out=a.sgplan",
            "-var",
            r#"gen={a="2"}"#,
        ],
    ));
    assert!(stderr.contains("saved plan written"), "{stderr}");
    let plan = planner.path().join("a.sgplan");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&plan).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(gen_of(&db, "a"), "1", "plan -out wrote to the state");

    // Someone changes team b in between: unrelated to the plan.
    assert_ok(&run(
        &db,
        &planner,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            r#"gen={b="2"}"#,
        ],
    ));

    // Another checkout (another CI job) applies the saved plan.
    let applier = TfWorkdir::from_fixture("teams");
    std::fs::copy(&plan, applier.path().join("a.sgplan")).unwrap();
    assert_ok(&run(&db, &applier, &["apply", "-no-color", "a.sgplan"]));
    assert_eq!(gen_of(&db, "a"), "2");
    assert_eq!(
        gen_of(&db, "b"),
        "2",
        "applying the saved plan lost team b's change"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn a_saved_plan_whose_rows_changed_is_refused_naming_them() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("teams");
    assert_ok(&run(&db, &wd, &["apply", "-auto-approve", "-no-color"]));
    assert_ok(&run(
        &db,
        &wd,
        &[
            "plan",
            "-no-color",
            "-out=a.sgplan",
            "-var",
            r#"gen={a="2"}"#,
        ],
    ));
    // Team a itself changes before the plan is applied.
    assert_ok(&run(
        &db,
        &wd,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            r#"gen={a="3"}"#,
        ],
    ));
    let txn = db.psql("SELECT max(id) FROM transactions");

    let out = run(&db, &wd, &["apply", "-no-color", "a.sgplan"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Saved plan is stale"), "{stderr}");
    assert!(
        stderr.contains(r#"module.team["a"].terraform_data.base"#),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("transaction {txn}")), "{stderr}");
    assert_eq!(gen_of(&db, "a"), "3", "a stale plan was applied");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");

    let err = run(&db, &wd, &["apply", "main.tf"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("not a stategraph saved plan"));
}
