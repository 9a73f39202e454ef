//! Saved plans: stale only when something the plan read or writes changed.

use crate::common::*;

/// The `gen` team `team`'s base is stored with.
fn gen_of(db: &TestDb, team: &str) -> String {
    input_gen(db, &format!(r#"module.team["{team}"].terraform_data.base"#))
}

/// `stategraph --state teams ARGS` in `wd`, run to completion.
fn run(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> std::process::Output {
    sg_in(db, wd, "teams", args)
}

/// Asserts that a stategraph run succeeded; its stderr.
#[track_caller]
fn ok(out: &std::process::Output) -> String {
    assert_ok("stategraph", out).1
}

#[test]
fn a_saved_plan_survives_unrelated_changes_and_is_applied_elsewhere() {
    let db = test_db();
    let planner = TfWorkdir::from_fixture("teams");
    ok(&run(
        &db,
        &planner,
        &["apply", "-auto-approve", "-no-color"],
    ));

    let stderr = ok(&run(
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
    ok(&run(
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
    ok(&run(&db, &applier, &["apply", "-no-color", "a.sgplan"]));
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
    ok(&run(&db, &wd, &["apply", "-auto-approve", "-no-color"]));
    ok(&run(
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
    ok(&run(
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

#[test]
fn a_saved_plan_of_a_new_state_creates_it_with_its_outputs() {
    // Its root outputs were refused as "outside the locked write set".
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    ok(&sg_in(
        &db,
        &wd,
        "new",
        &["plan", "-no-color", "-out=new.sgplan"],
    ));
    ok(&sg_in(
        &db,
        &wd,
        "new",
        &["apply", "-no-color", "new.sgplan"],
    ));
    let pulled = sg_ok(&db, &["--state", "new", "state", "pull"]);
    let state: serde_json::Value = serde_json::from_str(&pulled).unwrap();
    for output in ["root_id", "tails"] {
        assert!(
            state["outputs"][output]["value"].is_string()
                || state["outputs"][output]["value"].is_object(),
            "{output}: {}",
            state["outputs"]
        );
    }
    let instances: usize = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instances"].as_array().unwrap().len())
        .sum();
    assert_eq!(instances, 19);
}

#[test]
fn an_applied_saved_plan_records_the_discovery_baseline() {
    // Applying a saved plan recorded no baseline: the plan after the first
    // one fell back to terraform's plan of the whole configuration ("no
    // baseline yet"), and the blocks later ones applied were compared again.
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let state = "saved-baseline";
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "-no-color", "-detailed-exitcode"];
        args.extend(extra);
        sg_in(&db, &wd, state, &args)
    };
    assert_eq!(plan(&["-out=first.sgplan"]).status.code(), Some(2));
    ok(&sg_in(
        &db,
        &wd,
        state,
        &["apply", "-no-color", "first.sgplan"],
    ));

    let out = plan(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("configuration against the baseline"),
        "{stderr}"
    );
    // (the fallback's line names its reason; the test oracle's has none)
    assert!(!stderr.contains("plan without refresh:"), "{stderr}");

    // An edit applied from a saved plan: the next plan finds nothing to
    // compare (only the edited branch's blocks changed, and they converged).
    let var = r#"-var=gen={a="2",b="1",c="1"}"#;
    assert_eq!(plan(&[var, "-out=edit.sgplan"]).status.code(), Some(2));
    ok(&sg_in(
        &db,
        &wd,
        state,
        &["apply", "-no-color", "edit.sgplan"],
    ));
    let out = plan(&[var]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("plan without refresh:"), "{stderr}");
    assert!(
        stderr.contains("(configuration against the baseline)... 0 blocks changed, 0 to plan"),
        "the applied blocks were compared again:\n{stderr}"
    );
}
