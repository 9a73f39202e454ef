//! Disjoint applies of one state run at the same time; terraform alone on
//! one shared state cannot. And on a 211-instance state, a change to one
//! team touches only that team.

use std::io::Write;
use std::process::Output;
use std::time::Instant;

use serde_json::Value;

use crate::common::*;

/// The state every test here stores `fixtures/tf/teams` as.
const STATE: &str = "teams";

/// The `gen` each team's base was last applied with.
fn gens(db: &TestDb) -> Vec<(String, String)> {
    db.psql(
        "SELECT address || ' ' || (attributes->'input'->'value'->>'gen') FROM instances
         WHERE name = 'base' ORDER BY address",
    )
    .lines()
    .map(|l| {
        let (a, g) = l.split_once(' ').unwrap();
        (a.to_owned(), g.to_owned())
    })
    .collect()
}

#[test]
fn three_disjoint_applies_from_three_checkouts_run_at_the_same_time() {
    let db = test_db();
    let first = TfWorkdir::from_fixture("teams");
    assert_ok(
        "initial apply",
        &sg_in(&db, &first, STATE, &["apply", "-auto-approve", "-no-color"]),
    );

    // Three checkouts, each changing its own team; each base replacement sleeps 6 s.
    let checkouts: Vec<(TfWorkdir, &str)> = ["a", "b", "c"]
        .into_iter()
        .map(|t| (TfWorkdir::from_fixture("teams"), t))
        .collect();
    let started = Instant::now();
    let children: Vec<_> = checkouts
        .iter()
        .map(|(wd, team)| {
            let gen = format!("gen={{{team}=\"2\"}}");
            spawn_piped(&mut sg_tf(
                &db,
                wd,
                STATE,
                &[
                    "apply",
                    "-auto-approve",
                    "-no-color",
                    "-var",
                    "sleep_seconds=6",
                    "-var",
                    &gen,
                ],
            ))
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let elapsed = started.elapsed();
    for (out, (_, team)) in outputs.iter().zip(&checkouts) {
        assert_ok(&format!("apply of team {team}"), out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("Waiting for"),
            "team {team} waited for a lock:\n{stderr}"
        );
    }

    // All three changes are in the final state.
    assert_eq!(
        gens(&db),
        [
            (
                r#"module.team["a"].terraform_data.base"#.to_owned(),
                "2".to_owned()
            ),
            (
                r#"module.team["b"].terraform_data.base"#.to_owned(),
                "2".to_owned()
            ),
            (
                r#"module.team["c"].terraform_data.base"#.to_owned(),
                "2".to_owned()
            ),
        ]
    );
    // Their lock-to-merge intervals overlap: they ran at the same time.
    let overlap = db.psql(
        "SELECT max(started_at) < min(finished_at) FROM transactions WHERE kind = 'apply' AND id > (
            SELECT min(id) FROM transactions WHERE kind = 'apply')",
    );
    assert_eq!(overlap, "t", "the three applies did not overlap in time");
    eprintln!("three disjoint applies with a 6 s step each took {elapsed:?}");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn terraform_alone_on_one_shared_state_refuses_concurrent_applies() {
    let first = TfWorkdir::from_fixture("teams");
    first.terraform(&["init", "-no-color"]);
    first.terraform(&["apply", "-auto-approve", "-no-color"]);
    let shared = first.state_path();
    let checkouts: Vec<(TfWorkdir, &str)> = ["a", "b", "c"]
        .into_iter()
        .map(|t| {
            let wd = TfWorkdir::from_fixture("teams");
            wd.terraform(&["init", "-no-color"]);
            (wd, t)
        })
        .collect();
    let state_flag = format!("-state={}", shared.display());
    let children: Vec<_> = checkouts
        .iter()
        .map(|(wd, team)| {
            let gen = format!("gen={{{team}=\"2\"}}");
            let mut cmd = wd.command(&[
                "apply",
                "-auto-approve",
                "-no-color",
                "-lock-timeout=0s",
                &state_flag,
                "-var",
                "sleep_seconds=4",
                "-var",
                &gen,
            ]);
            spawn_piped(&mut cmd)
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let refused = outputs
        .iter()
        .filter(|o| {
            !o.status.success()
                && String::from_utf8_lossy(&o.stderr).contains("Error acquiring the state lock")
        })
        .count();
    assert!(
        refused >= 1,
        "terraform let concurrent applies share one state"
    );
}

#[test]
fn on_211_instances_a_change_to_one_team_refreshes_and_writes_only_that_team() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("teams");
    let size = ["-var", "teams=10", "-var", "per_team=20"];
    let mut args = vec!["apply", "-auto-approve", "-no-color"];
    args.extend(size);
    assert_ok("initial apply", &sg_in(&db, &wd, STATE, &args));
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "211");
    let before = db
        .psql("SELECT string_agg(address || '=' || version, ',' ORDER BY address) FROM instances");

    // The plan refreshes the cone only.
    let mut plan = vec!["plan", "-no-color", "-var", r#"gen={c="2"}"#];
    plan.extend(size);
    let out = sg_in(&db, &wd, STATE, &plan);
    assert_ok("plan", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let refreshed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("Refreshing state..."))
        .collect();
    assert_eq!(refreshed.len(), 22, "{stdout}");
    assert!(
        refreshed
            .iter()
            .all(|l| l.contains(r#"module.team["c"]"#) || l.contains("terraform_data.shared")),
        "{stdout}"
    );

    let mut apply = vec![
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        r#"gen={c="2"}"#,
    ];
    apply.extend(size);
    let out = sg_in(&db, &wd, STATE, &apply);
    assert_ok("apply", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("22 of 211 instances (21 write, 1 read)"),
        "{stderr}"
    );
    let after = db
        .psql("SELECT string_agg(address || '=' || version, ',' ORDER BY address) FROM instances");
    for (b, a) in before.split(',').zip(after.split(',')) {
        if b != a {
            assert!(
                b.starts_with(r#"module.team["c"]"#),
                "{b} -> {a} outside team c"
            );
        }
    }
    assert_ne!(before, after);
    let log: Value =
        serde_json::from_str(&sg_ok(&db, &["--state", "teams", "log", "--json"])).unwrap();
    assert_eq!(log[0]["cone"]["write"].as_array().unwrap().len(), 21);
}

/// Two teams of one `for_each` module: `svc` grows with `size` (a count),
/// `base` carries `gen`.
const TEAM_MODULES: &str = r#"
variable "size" {
  type    = map(number)
  default = {}
}

variable "gen" {
  type    = map(string)
  default = {}
}

resource "terraform_data" "org" {
  input = "acme"
}

module "team" {
  source   = "./modules/team"
  for_each = toset(["a", "b"])
  org      = terraform_data.org.id
  size     = lookup(var.size, each.key, 1)
  gen      = lookup(var.gen, each.key, "1")
}
"#;

const TEAM_MODULE: &str = r#"
variable "org" {}
variable "size" {}
variable "gen" {}

resource "terraform_data" "base" {
  input = "${var.org}-${var.gen}"
}

resource "terraform_data" "svc" {
  count = var.size
  input = "${terraform_data.base.id}-${count.index}"
}
"#;

/// [`TEAM_MODULES`] in a fresh directory, applied into its stored state
/// (returned with it); with `whole`, a root output also reads the module
/// call whole, so that terraform is given every team's rows (the call is
/// not narrowed to the teams a run touches).
fn applied_team_modules(db: &TestDb, whole: bool) -> (TfWorkdir, &'static str) {
    let wd = TfWorkdir::empty();
    let teams_output = "output \"teams\" {\n  value = keys(module.team)\n}\n";
    let main = match whole {
        true => format!("{TEAM_MODULES}{teams_output}"),
        false => TEAM_MODULES.to_owned(),
    };
    wd.write_file("main.tf", &main);
    wd.write_file("modules/team/main.tf", TEAM_MODULE);
    let state = "team-modules";
    assert_ok(
        "first apply",
        &sg_in(db, &wd, state, &["apply", "-auto-approve", "-no-color"]),
    );
    (wd, state)
}

/// Team b's apply replacing its `base` (and what reads it), never waiting.
fn replace_team_b_base(db: &TestDb, wd: &TfWorkdir, state: &str) -> Output {
    sg_in(
        db,
        wd,
        state,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=0s",
            "-var",
            r#"gen={b="2"}"#,
        ],
    )
}

const B_BASE: &str = r#"module.team["b"].terraform_data.base"#;

/// Team b's stored `base` loses an attribute terraform writes back when it
/// refreshes the row (as a row changed outside terraform would); the
/// baseline goes, so that discovery does not plan that row itself.
fn drift_team_b_base(db: &TestDb) {
    db.psql(&format!(
        "UPDATE instances SET attributes = attributes - 'triggers_replace'
         WHERE address = '{B_BASE}'; DELETE FROM discovery_baseline"
    ));
}

/// Team a's `svc` grows (instances added: its read set is found from the
/// configuration) while team b's `base` is replaced: neither waits for the
/// other. Team a's apply reads team a's `base`, not every team's (it held
/// a shared lock on team b's, and b's apply failed naming it).
#[test]
fn growing_one_module_instance_does_not_hold_the_others() {
    let db = test_db();
    let (wd, state) = applied_team_modules(&db, false);
    let mut a = awaiting_approval(
        &db,
        &wd,
        state,
        &["apply", "-no-color", "-var", r#"size={a=2}"#],
    );
    let b = replace_team_b_base(&db, &wd, state);
    let (_, b_err) = assert_ok("team b's apply beside team a's", &b);
    a.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let (a_out, a_err) = assert_ok("team a's apply", &a.wait_with_output().unwrap());
    assert!(a_out.contains("1 added, 0 changed, 0 destroyed"), "{a_out}");
    assert!(a_err.contains("(2 write, 2 read)"), "{a_err}");
    assert!(
        b_err.contains("3 of 5 instances (2 write, 1 read)"),
        "{b_err}"
    );
    let stored = db.psql(
        "SELECT string_agg(address, ',' ORDER BY address) FROM instances
         WHERE address LIKE 'module.team[\"a\"].terraform_data.svc%'",
    );
    assert_eq!(
        stored,
        r#"module.team["a"].terraform_data.svc[0],module.team["a"].terraform_data.svc[1]"#
    );
    let b_base = db.psql(
        "SELECT attributes->'input'->>'value' FROM instances
         WHERE address = 'module.team[\"b\"].terraform_data.base'",
    );
    assert!(b_base.ends_with("-2"), "{b_base}");
}

/// Terraform's targeted run of one team evaluates (and refreshes) every
/// team's `base` where the module call is read whole (else it is given the
/// touched teams alone), and writes back what changed outside terraform. Another
/// team's row that another run holds is left as that run has it (nothing
/// this run changes reads it), and the apply succeeds; once the row is
/// free, the next apply locks and writes terraform's refreshed copy.
#[test]
fn a_refreshed_row_of_another_module_instance_that_another_run_holds_is_left_to_it() {
    let db = test_db();
    let (wd, state) = applied_team_modules(&db, true);
    let b_base = B_BASE;
    let refreshed = || {
        db.psql(&format!(
            "SELECT attributes ? 'triggers_replace' FROM instances WHERE address = '{b_base}'"
        ))
    };
    drift_team_b_base(&db);
    hold_as_bob(
        &db,
        state,
        "stategraph apply (team b)",
        &[(b_base, "exclusive")],
    );
    let grow = |size: &str| {
        sg_in(
            &db,
            &wd,
            state,
            &["apply", "-auto-approve", "-no-color", "-var", size],
        )
    };
    let (stdout, stderr) = assert_ok("team a's apply", &grow("size={a=2}"));
    assert!(
        stdout.contains("1 added, 0 changed, 0 destroyed"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "terraform also refreshed {b_base} (bob@laptop holds it)"
        )),
        "{stderr}"
    );
    assert_eq!(refreshed(), "f", "bob's row was written over");
    assert!(recovery_files(&wd.path().join(".terraform/stategraph/recovery")).is_empty());
    assert_eq!(
        db.psql("SELECT status FROM transactions ORDER BY id DESC LIMIT 1"),
        "committed"
    );

    db.psql("DELETE FROM lock_holders WHERE actor_user = 'bob'");
    let (_, stderr) = assert_ok("team a's next apply", &grow("size={a=3}"));
    assert!(
        stderr.contains(&format!("terraform also wrote {b_base}")),
        "{stderr}"
    );
    assert_eq!(refreshed(), "t");
}

/// As above, but the other run has already applied: team b's `base` was
/// replaced after team a's snapshot, while team a waited for its approval.
/// Team a's refreshed copy of the old row is not written over team b's.
#[test]
fn a_refreshed_row_another_run_replaced_since_the_snapshot_is_left_to_it() {
    let db = test_db();
    let (wd, state) = applied_team_modules(&db, true);
    let b_base = B_BASE;
    drift_team_b_base(&db);
    let mut a = awaiting_approval(
        &db,
        &wd,
        state,
        &["apply", "-no-color", "-var", "size={a=2}"],
    );
    assert_ok("team b's apply", &replace_team_b_base(&db, &wd, state));
    a.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let (a_out, a_err) = assert_ok("team a's apply", &a.wait_with_output().unwrap());
    assert!(a_out.contains("1 added, 0 changed, 0 destroyed"), "{a_out}");
    assert!(
        a_err.contains(&format!(
            "terraform also refreshed {b_base} (another run changed it since this run's snapshot)"
        )),
        "{a_err}"
    );
    let b_input = db.psql(&format!(
        "SELECT attributes->'input'->>'value' FROM instances WHERE address = '{b_base}'"
    ));
    assert!(
        b_input.ends_with("-2"),
        "team b's base written over: {b_input}"
    );
    assert!(recovery_files(&wd.path().join(".terraform/stategraph/recovery")).is_empty());
}
