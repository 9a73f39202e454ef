//! Discovery reads the changes from terraform's streamed plan and the
//! configuration's edges from a cache keyed by the configuration files:
//! a second plan of an unchanged configuration runs no `show -json` (and,
//! in an initialized directory, no `init`); a changed file brings `show`
//! back, with the new edges.
//! (The other tests run every discovery with the oracle on: changes read
//! from the stream must equal those read from the plan file.)

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn an_unchanged_configuration_needs_no_show_json_nor_init() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    // The real terraform, behind a wrapper that logs each subcommand.
    let log = wd.path().join("terraform.log");
    let wrapper = wd.path().join("terraform-logged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            common::terraform::terraform_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        let _ = std::fs::remove_file(&log);
        let out = sg_tf(&db, &wd, "chain", args)
            .env("STATEGRAPH_TERRAFORM", &wrapper)
            .env_remove("STATEGRAPH_DISCOVERY_ORACLE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        (stderr, ran.lines().map(str::to_owned).collect::<Vec<_>>())
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
        wd.path().join("extra.tf"),
        "resource \"terraform_data\" \"extra\" {\n  input = module.branch[\"a\"].tail_id\n}\n",
    )
    .unwrap();
    let (said, third) = run(&["plan", "-no-color"]);
    assert!(
        third.iter().any(|c| c == "show"),
        "a changed configuration reused stale edges: {third:?}"
    );
    assert!(
        said.contains("(1 write, ") && !said.contains("(1 write, 0 read)"),
        "the new resource's cone does not read what it references:\n{said}"
    );
}
