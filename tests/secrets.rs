//! Secrets: stategraph prints no sensitive value in plan, apply, log, locks,
//! cone or errors, and leaves no private temporary file behind.

mod common;

use common::*;

const SECRETS: &[&str] = &["hunter2-not-a-real-secret", "tok-0123456789"];

fn temp_entries() -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stategraph-run-") || n.starts_with("stategraph-plan-"))
        .collect()
}

#[test]
fn no_command_prints_a_sensitive_value() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("rich");
    let before = temp_entries();
    let mut seen = String::new();
    let mut run = |args: &[&str]| {
        let out = sg_tf(&db, &wd, "rich", args).output().unwrap();
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    };
    let out = run(&["apply", "-auto-approve", "-no-color"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The secret really is in the stored state (so the checks below mean something).
    assert!(
        db.psql("SELECT count(*) FROM instances WHERE attributes::text LIKE '%hunter2-not-a-real-secret%'") != "0",
        "the fixture's secret is not in the state"
    );
    run(&["plan", "-no-color", "-var", "region=us-east-2"]);
    run(&[
        "plan",
        "-no-color",
        "-out=p.sgplan",
        "-var",
        "region=us-east-2",
    ]);
    run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        "region=us-east-2",
    ]);
    run(&["log", "--json"]);
    run(&["locks", "--json"]);
    run(&["state", "list"]);
    run(&["output"]);
    for addr in ["terraform_data.db", "terraform_data.zone[0]"] {
        run(&["state", "show", addr]);
        run(&["cone", "--json", addr]);
    }
    for secret in SECRETS {
        assert!(
            !seen.contains(secret),
            "a sensitive value was printed:\n{seen}"
        );
    }
    // Temporary state files (they hold secrets) are gone; the saved plan is private.
    let left: Vec<String> = temp_entries()
        .into_iter()
        .filter(|e| !before.contains(e))
        .collect();
    assert!(left.is_empty(), "private temp dirs left behind: {left:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(wd.path().join("p.sgplan"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the saved plan is readable by others");
}
