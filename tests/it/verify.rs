//! `stategraph plan -verify` and `STATEGRAPH_VERIFY`: the plan of the cone
//! checked against terraform's plan of the whole configuration, one line
//! when they agree, each difference named (and exit 1) when not; the
//! sampling rate never verifies at 0 and always at 1.

use crate::common::*;

const STATE: &str = "verify";

const TWO: &str = "resource \"terraform_data\" \"a\" {\n  input = \"1\"\n}\n\
                   resource \"terraform_data\" \"b\" {\n  input = \"1\"\n}\n";

/// A workdir holding [`TWO`], applied by stategraph into `state`.
fn applied(db: &TestDb, state: &str) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    wd.write_file("main.tf", TWO);
    assert_ok(
        "apply",
        &sg_in(db, &wd, state, &["apply", "-auto-approve", "-no-color"]),
    );
    wd
}

/// `stategraph plan -detailed-exitcode ARGS` on `state` with `env`: exit
/// code, stdout, stderr. Discovery runs as for a user (no oracle).
fn plan(
    db: &TestDb,
    wd: &TfWorkdir,
    state: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut all = vec!["plan", "-detailed-exitcode", "-no-color"];
    all.extend(args);
    let out = sg_tf(db, wd, state, &all)
        .env("STATEGRAPH_DISCOVERY_ORACLE", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn verify_agrees_in_one_line_and_exits_as_the_plan() {
    let db = test_db();
    let wd = applied(&db, STATE);
    // Nothing to plan: terraform's plan of the whole configuration agrees.
    let (code, stdout, stderr) = plan(&db, &wd, STATE, &["-verify"], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("terraform plans the same 0 changes"),
        "{stderr}"
    );
    // One change: the cone's plan is the whole plan's, and the exit code
    // the plan's (-verify is stategraph's own: terraform never sees it).
    wd.write_file("main.tf", &TWO.replacen("\"1\"", "\"2\"", 1));
    let (code, stdout, stderr) = plan(&db, &wd, STATE, &["-verify"], &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{stdout}"
    );
    let verified: Vec<&str> = stderr.lines().filter(|l| l.contains("Verifying")).collect();
    assert_eq!(
        verified,
        [
            "Verifying (terraform's plan of the whole configuration, without refresh)... \
          terraform plans the same 1 change"
        ],
        "{stderr}"
    );
}

#[test]
fn verify_names_each_difference_and_exits_non_zero() {
    // Discovery is made wrong on purpose: the baseline of `terraform_data.a`
    // is given the configuration hash of an edited `a` (recorded by a second
    // state that applied the edit) while the stored rows keep the old
    // input. Discovery then finds nothing to plan; terraform's plan of the
    // whole configuration updates `a`.
    let db = test_db();
    let wd = applied(&db, STATE);
    let edited = TWO.replacen("\"1\"", "\"2\"", 1);
    let other = TfWorkdir::empty();
    other.write_file("main.tf", &edited);
    assert_ok(
        "apply",
        &sg_in(
            &db,
            &other,
            "other",
            &["apply", "-auto-approve", "-no-color"],
        ),
    );
    db.psql(
        "UPDATE discovery_baseline a SET entries = jsonb_set(a.entries, '{terraform_data.a}', \
         jsonb_build_array(b.entries->'terraform_data.a'->0, a.entries->'terraform_data.a'->1, \
         b.entries->'terraform_data.a'->2)) \
         FROM discovery_baseline b, states sa, states sb \
         WHERE a.state_id = sa.id AND sa.name = 'verify' AND b.state_id = sb.id AND sb.name = 'other'",
    );
    wd.write_file("main.tf", &edited);
    let (code, stdout, _) = plan(&db, &wd, STATE, &[], &[]);
    assert_eq!(code, Some(0), "the baseline was not made wrong:\n{stdout}");

    let (code, stdout, stderr) = plan(&db, &wd, STATE, &["-verify"], &[]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("stategraph's plan differs from terraform's plan of the whole configuration (1 difference)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("terraform_data.a: terraform plans update, stategraph nothing"),
        "{stderr}"
    );
    assert!(!stderr.contains("terraform_data.b"), "{stderr}");
}

#[test]
fn the_sampling_rate_never_verifies_at_0_and_always_at_1() {
    let db = test_db();
    let wd = applied(&db, STATE);
    wd.write_file("main.tf", &TWO.replacen("\"1\"", "\"2\"", 1));
    for _ in 0..3 {
        let (code, _, stderr) = plan(&db, &wd, STATE, &[], &[("STATEGRAPH_VERIFY", "0")]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(!stderr.contains("Verifying"), "{stderr}");
        let (code, _, stderr) = plan(&db, &wd, STATE, &[], &[("STATEGRAPH_VERIFY", "1")]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("terraform plans the same 1 change"),
            "{stderr}"
        );
    }
    // Not a share of runs: refused in one line, nothing run.
    let (code, _, stderr) = plan(&db, &wd, STATE, &[], &[("STATEGRAPH_VERIFY", "often")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("STATEGRAPH_VERIFY=\"often\" is not a share of runs"),
        "{stderr}"
    );
    // A flag of plan only.
    let out = sg_in(&db, &wd, STATE, &["apply", "-verify", "-auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("-verify is a flag of `stategraph plan`"),
        "{}",
        text(&out.stderr)
    );
}
