//! Discovery. Where the configuration can be compared with the recorded
//! baseline, no terraform plan of the whole configuration runs: edited,
//! added and removed blocks, blocks reading a changed variable, and blocks
//! whose rows changed behind the baseline are planned, with one targeted
//! plan. Otherwise terraform's refresh-less plan says what changes, its
//! changes read from the streamed output and the configuration's edges from
//! a cache keyed by the configuration files: a second plan of an unchanged
//! configuration runs no `show -json` (and, in an initialized directory, no
//! `init`); a changed file brings `show` back, with the new edges.
//! (The other tests run every discovery with the oracle on: the
//! configuration's reading must cover every change terraform's full plan
//! finds, and the changes read from the stream must equal those of the
//! plan file.)

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn an_unchanged_configuration_needs_no_show_json_nor_init() {
    let db = test_db();
    // The real terraform, behind a wrapper that logs each subcommand.
    let sg = Logged::new("chain");
    let run = |args: &[&str]| {
        let (code, _, stderr, ran) = sg.run(&db, args, false);
        assert_eq!(code, 0, "{stderr}");
        (stderr, ran)
    };
    run(&["apply", "-auto-approve", "-no-color"]);
    // The directory initialized as a user would (modules installed).
    run(&["init", "-no-color"]);

    let change = ["plan", "-no-color", "-var", r#"gen={a="2"}"#];
    let (_, first) = run(&change);
    let (said, second) = run(&change);
    assert!(
        !second.iter().any(|c| c == "show"),
        "an unchanged configuration ran show again: {second:?} (first run: {first:?})"
    );
    assert!(said.contains("to change"), "{said}");
    // Nor init: the backend hash of this terraform is known by now, and the
    // user's directory is initialized.
    assert!(
        !second.iter().any(|c| c == "init"),
        "an initialized directory ran init again: {second:?}"
    );

    // A new resource reading branch a's tail: the configuration changed, its
    // edges are read again, and the new resource's cone reads the tail and what it depends on.
    std::fs::write(
        sg.wd.path().join("extra.tf"),
        "resource \"terraform_data\" \"extra\" {\n  input = module.branch[\"a\"].tail_id\n}\n",
    )
    .unwrap();
    // With a module's for_each changed too: terraform's refresh-less plan of
    // that module call (not of the whole configuration) says what changes,
    // with the edges read from the files, not from the stale cache.
    let (said, third) = run(&[
        "plan",
        "-no-color",
        "-var",
        r#"gen={a="1",b="1",c="1",d="1"}"#,
    ]);
    assert!(
        !third.iter().any(|c| c == "show"),
        "a changed configuration reused stale edges: {third:?}"
    );
    assert!(
        !said.contains("may have changed") && said.contains("plan of those without refresh"),
        "{said}"
    );
    assert!(said.contains("6 to change"), "{said}");
    // Without: the configuration alone says what changes (one new block),
    // with its edges read from the files.
    let (said, fourth) = run(&["plan", "-no-color"]);
    assert_eq!(
        fourth
            .iter()
            .filter(|c| *c == "plan" || *c == "show")
            .count(),
        1,
        "{fourth:?}\n{said}"
    );
    assert!(
        said.contains("(1 write, ") && !said.contains("(1 write, 0 read)"),
        "the new resource's cone does not read what it references:\n{said}"
    );
}

/// The real terraform behind a wrapper that logs each subcommand, for one
/// checkout of `fixture`.
struct Logged {
    wd: TfWorkdir,
    state: String,
    log: std::path::PathBuf,
    wrapper: std::path::PathBuf,
}

impl Logged {
    fn new(fixture: &str) -> Logged {
        let wd = TfWorkdir::from_fixture(fixture);
        let log = wd.path().join("terraform.log");
        let wrapper = wd.path().join("terraform-logged");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$1\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                terraform::terraform_bin().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Logged {
            wd,
            state: fixture.to_owned(),
            log,
            wrapper,
        }
    }

    /// Runs stategraph; its exit code, stdout, stderr and the terraform
    /// subcommands it ran. `oracle`: also run terraform's full plan and check
    /// the configuration's reading against it.
    fn run(&self, db: &TestDb, args: &[&str], oracle: bool) -> (i32, String, String, Vec<String>) {
        let _ = std::fs::remove_file(&self.log);
        let mut cmd = sg_tf(db, &self.wd, &self.state, args);
        cmd.env("STATEGRAPH_TERRAFORM", &self.wrapper);
        if !oracle {
            cmd.env_remove("STATEGRAPH_DISCOVERY_ORACLE");
        }
        let out = cmd.output().unwrap();
        let ran = std::fs::read_to_string(&self.log).unwrap_or_default();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            ran.lines().map(str::to_owned).collect(),
        )
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.wd.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
}

fn plans(ran: &[String]) -> usize {
    ran.iter().filter(|c| *c == "plan").count()
}

#[test]
fn edited_blocks_are_planned_without_a_plan_of_the_whole_configuration() {
    let db = test_db();
    let sg = Logged::new("chain");
    let (code, _, err, _) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], true);
    assert_eq!(code, 0, "{err}");

    // Nothing changed: stategraph says so without running a plan at all.
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], false);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        plans(&ran),
        0,
        "an unchanged configuration ran terraform plan: {ran:?}\n{err}\n{out}"
    );
    assert!(out.contains("No changes."), "{out}");

    // An edited block: one targeted plan, with what terraform would plan.
    sg.edit(
        "main.tf",
        r#""island-${count.index}""#,
        r#""isle-${count.index}""#,
    );
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(err.contains("1 block changed"), "{err}");
    assert!(out.contains("0 to add, 2 to change, 0 to destroy"), "{out}");
    // The oracle (terraform's full plan) agrees that this covers every change.
    let (code, out, err, _) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], true);
    assert_eq!(code, 2, "{out}{err}");
    let (code, out, err, ran) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], false);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}");
    assert!(out.contains("0 added, 2 changed, 0 destroyed"), "{out}");
    // Applied blocks are converged again: no plan, and the oracle agrees.
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], false);
    assert_eq!((code, plans(&ran)), (0, 0), "{out}{err}{ran:?}");
    let (code, out, err, _) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], true);
    assert_eq!(code, 0, "{out}{err}");

    // A new block, and one more instance of a counted block (terraform
    // plans the new instance outside the locked cone: it is locked too).
    std::fs::write(
        sg.wd.path().join("extra.tf"),
        "resource \"terraform_data\" \"extra\" {\n  input = terraform_data.root.id\n}\n",
    )
    .unwrap();
    sg.edit("main.tf", "count = 2", "count = 3");
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], true);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("2 to add, 0 to change, 0 to destroy"), "{out}");
    let (code, out, err, ran2) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 added, 0 changed, 0 destroyed"),
        "{out}\n{err}"
    );
    assert!(!ran2.iter().any(|c| c == "init") || ran.iter().any(|c| c == "init"));
    let listed = sg_ok(&db, &["--state", "chain", "state", "list"]);
    assert!(
        listed.contains("terraform_data.island[2]") && listed.contains("terraform_data.extra"),
        "{listed}"
    );

    // A removed block: its instances are destroyed.
    std::fs::remove_file(sg.wd.path().join("extra.tf")).unwrap();
    let (code, out, err, ran) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], false);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}");
    assert!(out.contains("0 added, 0 changed, 1 destroyed"), "{out}");

    // A variable read by one block: that block only (the oracle checks it).
    let (code, out, err, _) = sg.run(
        &db,
        &[
            "plan",
            "-no-color",
            "-detailed-exitcode",
            "-var",
            "sleep_seconds=0",
        ],
        true,
    );
    assert_eq!(code, 0, "{out}{err}");

    // Terraform's plan of the exported state agrees that all is applied.
    let (code, out, err, _) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], true);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn rows_changed_behind_the_baseline_are_planned_again() {
    let db = test_db();
    let sg = Logged::new("chain");
    let (code, _, err, _) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], true);
    assert_eq!(code, 0, "{err}");
    // A row removed outside any apply: its block is no longer as recorded.
    sg_ok(
        &db,
        &[
            "--state",
            "chain",
            "state",
            "rm",
            "terraform_data.island[1]",
        ],
    );
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(out.contains("1 to add, 0 to change, 0 to destroy"), "{out}");
}

#[test]
fn a_changed_value_is_planned_on_the_blocks_that_read_it_only() {
    let db = test_db();
    let sg = Logged::new("teams");
    let (code, _, err, _) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], true);
    assert_eq!(code, 0, "{err}");
    // var.sleep_seconds reaches every team's base through the module call:
    // which bases change takes a plan of those blocks, not of the
    // configuration (none does: it only reaches a provisioner).
    let (code, out, err, ran) = sg.run(
        &db,
        &[
            "plan",
            "-no-color",
            "-detailed-exitcode",
            "-var",
            "sleep_seconds=1",
        ],
        false,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(err.contains("may change: plan of those"), "{err}");
    assert!(out.contains("No changes."), "{out}");
    // The same with terraform's full plan as the oracle.
    let (code, out, err, _) = sg.run(
        &db,
        &[
            "plan",
            "-no-color",
            "-detailed-exitcode",
            "-var",
            "sleep_seconds=1",
        ],
        true,
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// `gen = lookup(var.gen, each.key, "1")` in a `for_each` module call: a
/// team's entry of the map changes that team's module instance only, known
/// from the configuration without a plan of every team.
#[test]
fn a_map_entry_read_by_instance_key_plans_that_instance_only() {
    let db = test_db();
    let sg = Logged::new("teams");
    let (code, _, err, _) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], true);
    assert_eq!(code, 0, "{err}");
    let plan = |gen: &str, oracle: bool| {
        sg.run(
            &db,
            &[
                "plan",
                "-no-color",
                "-detailed-exitcode",
                "-var",
                &format!("gen={gen}"),
            ],
            oracle,
        )
    };
    let (code, out, err, ran) = plan(r#"{c="2"}"#, false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(err.contains("1 block changed, 1 to plan"), "{err}");
    // Team c only: its base and 2 services written, the shared resource read.
    assert!(err.contains("(3 write, 1 read)"), "{err}");
    assert!(out.contains("1 to add, 2 to change, 1 to destroy"), "{out}");
    // terraform's full plan, as the oracle, finds nothing else.
    let (code, out, err, _) = plan(r#"{c="2"}"#, true);
    assert_eq!(code, 2, "{out}{err}");

    // Applied: then another team's entry is the only change.
    let (code, out, err, _) = sg.run(
        &db,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            r#"gen={c="2"}"#,
        ],
        false,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err, ran) = plan(r#"{c="2",a="2"}"#, false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(err.contains("(3 write, 1 read)"), "{err}");
    assert!(
        out.contains(r#"module.team["a"].terraform_data.base must be replaced"#)
            && !out.contains(r#"module.team["c"]"#),
        "{out}"
    );
    let (code, out, err, _) = plan(r#"{c="2",a="2"}"#, true);
    assert_eq!(code, 2, "{out}{err}");
    // Leaving the entry out brings team c back to the default.
    let (code, out, err, ran) = plan("{}", false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(
        out.contains(r#"module.team["c"].terraform_data.base must be replaced"#),
        "{out}"
    );
    // As applied: nothing to plan at all.
    let (code, out, err, ran) = plan(r#"{c="2"}"#, false);
    assert_eq!((code, plans(&ran)), (0, 0), "{out}{err}{ran:?}");

    // A row of one team removed behind the baseline: that team's block only.
    sg_ok(
        &db,
        &[
            "--state",
            "teams",
            "state",
            "rm",
            r#"module.team["b"].terraform_data.service[1]"#,
        ],
    );
    let (code, out, err, ran) = plan(r#"{c="2"}"#, false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(plans(&ran), 1, "{ran:?}\n{err}");
    assert!(out.contains("1 to add, 0 to change, 0 to destroy"), "{out}");
    let (code, out, err, _) = plan(r#"{c="2"}"#, true);
    assert_eq!(code, 2, "{out}{err}");
}

#[test]
fn instances_a_changed_block_adds_through_for_each_are_planned() {
    let db = test_db();
    let sg = Logged::new("chain");
    std::fs::remove_dir_all(sg.wd.path().join("modules")).unwrap();
    sg.wd.write_file(
        "main.tf",
        r#"
resource "terraform_data" "src" {
  input = {}
}

resource "terraform_data" "each" {
  for_each = terraform_data.src.input
  input    = each.value
}

# Unrelated: keeps the change below a small part of the state.
resource "terraform_data" "other" {
  count = 4
  input = count.index
}
"#,
    );
    let (code, out, err, _) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], true);
    assert_eq!(code, 0, "{out}{err}");
    // `each` has no instance yet, so nothing in the state depends on src:
    // its for_each reading src is what brings it into the plan.
    sg.edit("main.tf", "input = {}", r#"input = { a = "1" }"#);
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], true);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("1 to add, 1 to change, 0 to destroy"), "{out}");
    assert!(err.contains("2 blocks changed"), "{err}");
    let (code, out, err, ran2) = sg.run(&db, &["apply", "-auto-approve", "-no-color"], false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 added, 1 changed, 0 destroyed"),
        "{out}\n{err}"
    );
    let _ = (ran, ran2);
    let (code, out, err, ran) = sg.run(&db, &["plan", "-no-color", "-detailed-exitcode"], false);
    assert_eq!((code, plans(&ran)), (0, 0), "{out}{err}{ran:?}");
}

/// The first plan after a `state push` has no discovery baseline: it says
/// up front that terraform plans every instance once and how long that
/// should take, then shows the step as plain lines (stderr is not a
/// terminal here); the next plan compares with the baseline it recorded
/// and says neither.
#[test]
fn the_first_plan_after_a_push_says_how_long_it_will_take() {
    let db = test_db();
    let wd = produce_state("chain");
    let state = wd.state_path();
    let pushed = sg_in(
        &db,
        &wd,
        "first",
        &["state", "push", state.to_str().unwrap()],
    );
    assert_ok("state push", &pushed);
    let plan = || {
        let out = sg_tf(&db, &wd, "first", &["plan", "-no-color"])
            .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
            .output()
            .unwrap();
        assert_ok("stategraph plan", &out).1
    };
    let said = plan();
    let lines: Vec<&str> = said.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("First plan of this state"))
        .unwrap_or_else(|| panic!("no estimate line:\n{said}"));
    assert_eq!(
        lines[first],
        "First plan of this state: no discovery baseline yet, so terraform plans all 19 \
         instances once, without refresh: about 1 s (3 ms per instance until a plan of 500 or \
         more is measured on this database).",
        "{said}"
    );
    // Then the step itself, as a plain line.
    assert!(
        lines[first + 1..].contains(
            &"Discovering changes (plan without refresh: no baseline yet for this state)... 0 to change"
        ),
        "{said}"
    );
    // 19 instances are too few to measure a rate by.
    let measured = db.psql("SELECT count(*) FROM config_cache WHERE fingerprint LIKE 'measured:%'");
    assert_eq!(measured.trim(), "0");

    let again = plan();
    assert!(
        !again.contains("First plan") && !again.contains("plan without refresh"),
        "{again}"
    );
}

/// Each row keeps the digest of its content, and discovery reads those
/// instead of the rows' content. Rows stored before they kept one (here:
/// cleared) get it on the next plan, which plans nothing again for it; a
/// row changed behind the baseline (a pushed state, or by hand in SQL) is
/// still planned.
#[test]
fn rows_keep_their_digest_and_a_row_changed_behind_the_baseline_is_planned() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "digests", &wd.state_path());
    let plan = || {
        let out = sg_tf(&db, &wd, "digests", &["plan", "-no-color"])
            .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
            .output()
            .unwrap();
        assert_ok("stategraph plan", &out).0 + &assert_ok("stategraph plan", &out).1
    };
    let undigested = || db.psql("SELECT count(*) FROM instances WHERE digest IS NULL");
    let said = plan();
    assert!(said.contains("No changes."), "{said}");
    assert_eq!(undigested().trim(), "0", "pushed rows keep their digest");
    let stored = db.psql("SELECT string_agg(digest, ',' ORDER BY address) FROM instances");

    db.psql("UPDATE instances SET digest = NULL");
    let said = plan();
    assert!(said.contains("No changes."), "{said}");
    assert!(!said.contains("plan without refresh"), "{said}");
    assert_eq!(undigested().trim(), "0", "the plan filled them in");
    assert_eq!(
        db.psql("SELECT string_agg(digest, ',' ORDER BY address) FROM instances"),
        stored,
        "the digest filled in is the one written with the row"
    );

    // island[1] edited behind the baseline.
    let pulled = pull_to(&db, "digests", wd.path());
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pulled).unwrap()).unwrap();
    doc["serial"] = serde_json::json!(doc["serial"].as_i64().unwrap() + 1);
    let island = doc["resources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "island")
        .unwrap();
    island["instances"][1]["attributes"]["input"]["value"] = serde_json::json!("edited");
    std::fs::write(&pulled, serde_json::to_vec(&doc).unwrap()).unwrap();
    push(&db, "digests", &pulled);
    let said = plan();
    assert!(
        // Its two instances and its resource address (count may add one).
        said.contains(
            "Discovering changes (configuration against the baseline)... 1 block changed, 3 to plan"
        ),
        "{said}"
    );
    assert!(
        said.contains("terraform_data.island[1] will be updated in-place"),
        "{said}"
    );
    assert!(
        said.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{said}"
    );

    // A row's content changed by hand, its digest left as it was: the
    // database clears the digest, and the next plan reads the rows whole
    // and plans it.
    db.psql(
        "UPDATE instances SET attributes = jsonb_set(attributes, '{input,value}', '\"by hand\"')
         WHERE address = 'terraform_data.island[0]'",
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM instances WHERE digest IS NULL"),
        "1",
        "the stale digest was kept"
    );
    let said = plan();
    assert!(
        said.contains("terraform_data.island[0] will be updated in-place"),
        "{said}"
    );
    assert!(
        said.contains("Plan: 0 to add, 2 to change, 0 to destroy."),
        "{said}"
    );
    assert_eq!(undigested().trim(), "0", "filled in again");
}

/// A plan or apply that finds nothing to change reads no row of the state:
/// what PostgreSQL keeps of each resource (migration 0012), moved by every
/// write, answers discovery. Shown with a login that may read everything
/// but the rows: it plans and applies nothing to change, and is refused
/// where there is something.
#[test]
fn a_plan_or_apply_with_nothing_to_change_reads_no_row() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "kept", &wd.state_path());
    let schema = db.psql("SELECT schemaname FROM pg_tables WHERE tablename = 'instances'");
    let user = format!("{}_norows", db.name);
    db.psql(&format!(
        "CREATE ROLE {user} LOGIN;
         GRANT USAGE ON SCHEMA {schema} TO {user};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {user};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {user};
         REVOKE ALL ON {schema}.instances, {schema}.instance_history FROM {user}"
    ));
    let norows = TestDb {
        url: db
            .url
            .replacen("postgres://postgres@", &format!("postgres://{user}@"), 1),
        name: db.name.clone(),
    };
    let run = |who: &TestDb, args: &[&str]| {
        sg_tf(who, &wd, "kept", args)
            .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
            .output()
            .unwrap()
    };
    let nothing =
        "Discovering changes (configuration against the baseline)... 0 blocks changed, 0 to plan";
    // The first plan (the owner's) fills the baseline.
    assert_ok("first plan", &run(&db, &["plan", "-no-color"]));
    let (out, err) = assert_ok("plan without rows", &run(&norows, &["plan", "-no-color"]));
    assert!(
        err.contains(nothing) && out.contains("No changes."),
        "{out}{err}"
    );
    let (out, err) = assert_ok(
        "apply without rows",
        &run(&norows, &["apply", "-auto-approve", "-no-color"]),
    );
    assert!(
        err.contains(nothing) && out.contains("No changes."),
        "{out}{err}"
    );

    // Branch a changed: its rows must be read, which this login may not.
    let gen2 = r#"gen={a="2",b="1",c="1"}"#;
    let refused = run(&norows, &["plan", "-no-color", "-var", gen2]);
    let err = text(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("permission denied"),
        "a plan with changes read no row: {err}"
    );
    // Applied by the owner: what is kept of each resource moved with the
    // rows, and agrees with the baseline the apply recorded.
    assert_ok(
        "owner's apply",
        &run(&db, &["apply", "-auto-approve", "-no-color", "-var", gen2]),
    );
    let (out, err) = assert_ok(
        "plan without rows after the apply",
        &run(&norows, &["plan", "-no-color", "-var", gen2]),
    );
    assert!(
        err.contains(nothing) && out.contains("No changes."),
        "{out}{err}"
    );
    assert_eq!(
        db.psql(
            "SELECT count(*) FROM resource_digests r
             WHERE objects <> (SELECT count(*) FROM instances i WHERE i.state_id = r.state_id
                               AND i.module = r.module AND i.config_address = r.config_address)"
        ),
        "0",
        "every resource's objects counted"
    );
}

/// A change in one module instance reads the rows it reaches, not every
/// row of the state: discovery from what PostgreSQL keeps of each resource,
/// the change cone computed on the rows of the resources it reaches (read
/// until they hold everything it consults), for a plan and an apply; and
/// terraform agrees with the result.
#[test]
fn a_change_reads_the_rows_it_reaches_not_the_state() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("teams");
    let run = |args: &[&str], oracle: &str| {
        let mut all = args.to_vec();
        all.extend(["-no-color", "-var", "teams=10", "-var", "per_team=20"]);
        let out = sg_tf(&db, &wd, "teams", &all)
            .env("STATEGRAPH_DISCOVERY_ORACLE", oracle)
            .output()
            .unwrap();
        assert_ok(&format!("stategraph {args:?}"), &out)
    };
    run(&["apply", "-auto-approve"], "1");
    // The first plan records the baseline.
    run(&["plan"], "1");
    // One shared resource and 10 teams of a base and 20 services: 211
    // instances in 21 resources. Team a's base is replaced (its services
    // updated): its rows, the shared one it reads and every team's base
    // (terraform's targeted plan evaluates every instance of the module
    // call, whose `for_each` cannot be narrowed here) are read, no other
    // team's services.
    let gen = r#"gen={a="2"}"#;
    let reading = "Reading the rows it reaches... 31 of 211 rows (12 of 21 resources)";
    // With the oracle: the change set and partial state from the rows read
    // by resource are those from every row.
    run(&["plan", "-var", gen], "1");
    let (out, err) = run(&["plan", "-var", gen], "0");
    assert!(err.contains(reading), "{err}");
    assert!(
        out.contains("Plan: 1 to add, 20 to change, 1 to destroy."),
        "{out}"
    );
    let (out, err) = run(&["apply", "-auto-approve", "-var", gen], "0");
    assert!(err.contains(reading), "{err}");
    assert!(
        out.contains("Apply complete! Resources: 1 added, 20 changed, 1 destroyed."),
        "{out}"
    );
    // Nothing left to do, by stategraph and by terraform on the state it keeps.
    let (out, err) = run(&["plan", "-var", gen], "0");
    assert!(
        err.contains("0 blocks changed, 0 to plan") && out.contains("No changes."),
        "{out}{err}"
    );
    let pulled = pull_to(&db, "teams", wd.path());
    let state_flag = format!("-state={}", pulled.display());
    wd.terraform(&["init", "-no-color"]);
    let plain = wd.terraform_allow_fail(&[
        "plan",
        "-no-color",
        "-detailed-exitcode",
        &state_flag,
        "-var",
        "teams=10",
        "-var",
        "per_team=20",
        "-var",
        gen,
    ]);
    assert_eq!(
        plain.status.code(),
        Some(0),
        "terraform plans changes on the state stategraph keeps:\n{}{}",
        text(&plain.stdout),
        text(&plain.stderr)
    );
}
