//! The same result as terraform on the paths real configurations take:
//! each test applies a small configuration with stategraph, changes it the
//! way real modules do, and checks that the stored state is what terraform
//! would hold (plain terraform on the pulled state plans no change).

use crate::common::*;

const STATE: &str = "parity";

/// `stategraph --state parity ARGS` in `wd`, asserting success.
fn sg(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> (String, String) {
    assert_ok(&format!("stategraph {args:?}"), &sg_in(db, wd, STATE, args))
}

/// Plain terraform, on the state stategraph stored, finds nothing to do.
fn terraform_agrees(db: &TestDb, wd: &TfWorkdir) {
    let (code, plan) = terraform_plan(db, wd);
    assert_eq!(
        code,
        Some(0),
        "terraform plans changes on the state stategraph stored:\n{plan}"
    );
}

#[test]
fn a_create_before_destroy_resource_and_its_dependencies_are_recorded() {
    // Terraform sets create_before_destroy on what such a resource depends
    // on (and clears it when no such dependent is in a targeted run); that
    // flag on the cone's dependencies made stategraph refuse its own result
    // ("changed an instance outside the locked write set") after terraform
    // had applied it: `c` existed, unrecorded.
    let db = test_db();
    let wd = TfWorkdir::empty();
    let ab = "resource \"terraform_data\" \"a\" {\n  input = \"a\"\n}\n\
              resource \"terraform_data\" \"b\" {\n  input = \"b\"\n}\n";
    wd.write_file("main.tf", ab);
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    wd.write_file(
        "main.tf",
        &format!(
            "{ab}resource \"terraform_data\" \"c\" {{\n  input = terraform_data.a.output\n  \
             lifecycle {{\n    create_before_destroy = true\n  }}\n}}\n"
        ),
    );
    let (stdout, _) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert!(stdout.contains("1 added"), "{stdout}");
    assert_eq!(
        db.psql("SELECT count(*) FROM instances WHERE address = 'terraform_data.c'"),
        "1"
    );
    terraform_agrees(&db, &wd);

    // vpc; sg (reads vpc, create_before_destroy); subnet (reads vpc): a
    // change of subnet alone is written, the flag terraform clears on vpc
    // (sg is outside that run) notwithstanding.
    let net = |subnet: &str| {
        format!(
            "resource \"terraform_data\" \"vpc\" {{\n  input = \"vpc\"\n}}\n\
             resource \"terraform_data\" \"sg\" {{\n  input = terraform_data.vpc.output\n  \
             lifecycle {{\n    create_before_destroy = true\n  }}\n}}\n\
             resource \"terraform_data\" \"subnet\" {{\n  input = \"{subnet}-${{terraform_data.vpc.output}}\"\n}}\n"
        )
    };
    let wd = TfWorkdir::empty();
    let db = test_db();
    wd.write_file("main.tf", &net("one"));
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    wd.write_file("main.tf", &net("two"));
    let (stdout, _) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert!(stdout.contains("1 changed"), "{stdout}");
    assert!(
        db.psql(
            "SELECT attributes->'input'->>'value' FROM instances WHERE address = 'terraform_data.subnet'"
        )
        .starts_with("two-"),
        "the change of subnet was not recorded"
    );
    let (plan, _) = sg(&db, &wd, &["plan", "-detailed-exitcode", "-no-color"]);
    assert!(plan.contains("No changes"), "{plan}");
    terraform_agrees(&db, &wd);
}

#[test]
fn variables_in_tf_cli_args_reach_the_plan_and_break_nothing_stategraph_runs_itself() {
    // TF_CLI_ARGS is added to every terraform command; `terraform version`
    // (which stategraph runs to check the binary) has no -var and failed.
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let out = sg_tf(
        &db,
        &wd,
        STATE,
        &["plan", "-detailed-exitcode", "-no-color"],
    )
    .env("TF_CLI_ARGS", r#"-var=gen={a="2",b="1",c="1"}"#)
    .output()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stderr.contains("flag provided but not defined"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains(r#"module.branch["a"]"#) && !stdout.contains(r#"module.branch["b"]"#),
        "{stdout}"
    );
}

#[test]
fn adding_many_resources_to_a_small_state_needs_no_full_plan() {
    // The fallback compared candidate addresses (new resources included)
    // with the stored instances: "8 of 2 instances may change: one full
    // plan costs less", a count above the total.
    let db = test_db();
    let wd = TfWorkdir::empty();
    let resource =
        |n: usize| format!("resource \"terraform_data\" \"r{n}\" {{\n  input = \"{n}\"\n}}\n");
    wd.write_file("main.tf", &(0..2).map(resource).collect::<String>());
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    wd.write_file("main.tf", &(0..8).map(resource).collect::<String>());
    let (stdout, stderr) = sg(&db, &wd, &["plan", "-no-color"]);
    assert!(
        stdout.contains("Plan: 6 to add, 0 to change, 0 to destroy"),
        "{stdout}"
    );
    assert!(!stderr.contains("may change: one full plan"), "{stderr}");
    assert!(
        stderr.contains("configuration against the baseline"),
        "{stderr}"
    );
}

/// `terraform plan -detailed-exitcode` of plain terraform on the state
/// stategraph stored and the configuration in `wd`: its exit code and output.
fn terraform_plan(db: &TestDb, wd: &TfWorkdir) -> (Option<i32>, String) {
    let pulled = sg_in(db, wd, STATE, &["state", "pull"]);
    assert_ok("state pull", &pulled);
    let check = TfWorkdir::empty();
    copy_configuration(wd, &check);
    std::fs::write(check.state_path(), &pulled.stdout).unwrap();
    check.terraform(&["init", "-no-color"]);
    let plan = check.terraform_allow_fail(&["plan", "-detailed-exitcode", "-no-color"]);
    (
        plan.status.code(),
        String::from_utf8_lossy(&plan.stdout).into_owned(),
    )
}

/// The `.tf` files of `from` (and its `modules/`), copied into `to`.
fn copy_configuration(from: &TfWorkdir, to: &TfWorkdir) {
    for e in walk(from.path()) {
        let rel = e.strip_prefix(from.path()).unwrap();
        let name = rel.to_string_lossy();
        if name.ends_with(".tf") && !name.contains("zzzz_") && !name.starts_with('.') {
            let target = to.path().join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&e, target).unwrap();
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// `stategraph plan -detailed-exitcode` exits 2 and says `moved`, as
/// terraform's plan of a move does.
#[track_caller]
fn plans_a_move(db: &TestDb, wd: &TfWorkdir, moved: &str) {
    let out = sg_in(db, wd, STATE, &["plan", "-detailed-exitcode", "-no-color"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(moved), "{stdout}");
}

#[test]
fn moved_blocks_are_planned_and_applied_as_terraform_does() {
    // A `moved` block gave "No changes" (terraform: "has moved to", exit 2)
    // and kept the old address; the next plan then failed with "Moved
    // resource instances excluded by targeting".
    let db = test_db();
    let wd = TfWorkdir::empty();
    wd.write_file(
        "main.tf",
        "resource \"terraform_data\" \"a\" {\n  input = \"1\"\n}\n\
         resource \"terraform_data\" \"b\" {\n  input = terraform_data.a.output\n}\n",
    );
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    wd.write_file(
        "main.tf",
        "resource \"terraform_data\" \"a2\" {\n  input = \"1\"\n}\n\
         resource \"terraform_data\" \"b\" {\n  input = terraform_data.a2.output\n}\n\
         moved {\n  from = terraform_data.a\n  to   = terraform_data.a2\n}\n",
    );
    let (tf_code, tf_plan) = terraform_plan(&db, &wd);
    assert_eq!(tf_code, Some(2), "{tf_plan}");
    for _ in 0..2 {
        plans_a_move(&db, &wd, "terraform_data.a has moved to terraform_data.a2");
    }
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let (listed, _) = sg(&db, &wd, &["state", "list"]);
    assert_eq!(listed, "terraform_data.a2\nterraform_data.b\n");
    let (plan, _) = sg(&db, &wd, &["plan", "-detailed-exitcode", "-no-color"]);
    assert!(plan.contains("No changes"), "{plan}");
    terraform_agrees(&db, &wd);

    // Into a module.
    wd.write_file(
        "modules/m/main.tf",
        "resource \"terraform_data\" \"a2\" {\n  input = \"1\"\n}\n\
         output \"out\" {\n  value = terraform_data.a2.output\n}\n",
    );
    wd.write_file(
        "main.tf",
        "module \"m\" {\n  source = \"./modules/m\"\n}\n\
         resource \"terraform_data\" \"b\" {\n  input = module.m.out\n}\n\
         moved {\n  from = terraform_data.a2\n  to   = module.m.terraform_data.a2\n}\n",
    );
    sg(&db, &wd, &["init", "-no-color"]);
    plans_a_move(
        &db,
        &wd,
        "terraform_data.a2 has moved to module.m.terraform_data.a2",
    );
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let (listed, _) = sg(&db, &wd, &["state", "list"]);
    assert_eq!(listed, "terraform_data.b\nmodule.m.terraform_data.a2\n");
    terraform_agrees(&db, &wd);
}

/// Three teams of one `for_each` module; `size` grows a team's `svc`; the
/// root output reads team a by its key.
fn teams(size: &str, extra: &str) -> String {
    format!(
        "locals {{\n  size = {size}\n}}\n\
         resource \"terraform_data\" \"org\" {{\n  input = \"acme\"\n}}\n\
         module \"team\" {{\n  source   = \"./modules/team\"\n  for_each = toset([\"a\", \"b\", \"c\"])\n  \
         org      = terraform_data.org.id\n  size     = lookup(local.size, each.key, 1)\n}}\n\
         output \"a_base\" {{\n  value = module.team[\"a\"].base\n}}\n{extra}"
    )
}

const TEAM: &str = "variable \"org\" {}\nvariable \"size\" {}\n\
    resource \"terraform_data\" \"base\" {\n  input = var.org\n}\n\
    resource \"terraform_data\" \"svc\" {\n  count = var.size\n  input = terraform_data.base.id\n}\n\
    output \"base\" {\n  value = terraform_data.base.id\n}\n";

const NARROWED: &str = "Narrowing the module calls terraform expands...";

#[test]
fn a_module_call_is_expanded_only_for_the_instances_a_change_touches() {
    // Terraform's targeted plan of one team expands every instance of the
    // call and evaluates (refreshes) every team's `base`: 1.2 s of a
    // 24-instance change at 1,000 teams. Given a `for_each` filtered to the
    // teams the run touches (and those the root module names), and only
    // their rows, it plans the same.
    let db = test_db();
    let wd = TfWorkdir::empty();
    wd.write_file("modules/team/main.tf", TEAM);
    wd.write_file("main.tf", &teams("{}", ""));
    sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    let versions = |team: &str| {
        db.psql(&format!(
            "SELECT string_agg(address || '=' || version, ',' ORDER BY address) FROM instances
             WHERE address LIKE 'module.team[\"{team}\"]%'"
        ))
    };
    let c_before = versions("c");

    // Team b grows: terraform is given teams a (named) and b (touched).
    wd.write_file("main.tf", &teams("{ b = 2 }", ""));
    let (stdout, stderr) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert!(
        stderr.contains(&format!(r#"{NARROWED} module.team["a"], module.team["b"]"#)),
        "{stderr}"
    );
    assert!(
        stdout.contains("1 added, 0 changed, 0 destroyed"),
        "{stdout}"
    );
    assert!(!stdout.contains(r#"module.team["c"]"#), "{stdout}");
    assert_eq!(versions("c"), c_before);
    terraform_agrees(&db, &wd);

    // A saved plan of the narrowed configuration, applied.
    wd.write_file("main.tf", &teams("{ b = 3 }", ""));
    let (_, stderr) = sg(&db, &wd, &["plan", "-no-color", "-out=grow.sgplan"]);
    assert!(stderr.contains(NARROWED), "{stderr}");
    let (stdout, _) = sg(&db, &wd, &["apply", "-no-color", "grow.sgplan"]);
    assert!(
        stdout.contains("1 added, 0 changed, 0 destroyed"),
        "{stdout}"
    );
    terraform_agrees(&db, &wd);

    // A change outside the call: no team is touched, team a is named.
    let solo = "resource \"terraform_data\" \"solo\" {\n  input = \"x\"\n}\n";
    wd.write_file("main.tf", &teams("{ b = 3 }", solo));
    let (stdout, stderr) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert!(
        stderr.contains(&format!(r#"{NARROWED} module.team["a"]"#)),
        "{stderr}"
    );
    assert!(
        stdout.contains("1 added, 0 changed, 0 destroyed"),
        "{stdout}"
    );
    assert_eq!(versions("c"), c_before);
    terraform_agrees(&db, &wd);

    // Read whole by a root output: every team is given, as before.
    let all = format!("{solo}output \"teams\" {{\n  value = keys(module.team)\n}}\n");
    wd.write_file("main.tf", &teams("{ b = 3, c = 2 }", &all));
    let (stdout, stderr) = sg(&db, &wd, &["apply", "-auto-approve", "-no-color"]);
    assert!(!stderr.contains(NARROWED), "{stderr}");
    assert!(stdout.contains("1 added"), "{stdout}");
    terraform_agrees(&db, &wd);
    let (outputs, _) = sg(&db, &wd, &["output", "-json", "teams"]);
    assert_eq!(outputs.trim().replace([' ', '\n'], ""), r#"["a","b","c"]"#);
}
