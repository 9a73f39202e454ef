//! Help that is complete and true: every command stategraph runs is listed,
//! usage lines name `stategraph`, and a misspelled flag is echoed as the
//! user wrote it.

use crate::common::*;

/// `stategraph ARGS` with no database (help and usage errors need none).
fn run(args: &[&str]) -> std::process::Output {
    stategraph_without_db().args(args).output().unwrap()
}

#[test]
fn the_top_level_help_lists_every_command_stategraph_runs() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    let terraform_commands = stategraph::tfargs::READ_STATE
        .iter()
        .chain(stategraph::tfargs::NO_STATE)
        .chain(stategraph::tfargs::WRITE_STATE)
        .map(|c| c.to_string())
        .chain(
            stategraph::tfargs::WRITE_STATE_SUBCOMMANDS
                .iter()
                .map(|c| format!("state {c}")),
        );
    let own = [
        "plan",
        "apply",
        "destroy",
        "init",
        "workspace",
        "cone",
        "deps",
        "log",
        "query",
        "history",
        "locks",
        "serve",
        "force-unlock",
        "recover",
        "db",
    ];
    for command in terraform_commands.chain(own.iter().map(|c| c.to_string())) {
        let listed = help.lines().any(|l| {
            l.split([',', ' ', '|'])
                .collect::<Vec<_>>()
                .windows(command.split(' ').count())
                .any(|w| w.join(" ") == command)
        });
        assert!(listed, "`{command}` is not in the help:\n{help}");
    }
    // And `state`'s own help names the state commands terraform runs.
    let state = text(&run(&["state", "--help"]).stdout);
    for c in stategraph::tfargs::WRITE_STATE_SUBCOMMANDS {
        assert!(state.contains(&format!("`state {c}`")), "{state}");
    }
}

#[test]
fn plan_help_describes_discovery_with_stategraphs_usage_line() {
    for args in [&["plan", "-help"][..], &["help", "plan"][..]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = text(&out.stdout);
        assert!(help.contains("baseline"), "{args:?}: {help}");
        assert!(help.contains("refresh-less plan"), "{args:?}: {help}");
        let usage = help
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_default();
        assert!(
            usage.starts_with("Usage: stategraph ") && usage.contains(" plan "),
            "{args:?}: {usage}"
        );
        assert!(!help.contains("stategraph-plan"), "{args:?}: {help}");
    }
}

#[test]
fn environment_values_are_not_shown_in_help() {
    // Unset: no `[env: STATEGRAPH_STATE=]`; set: its value is not printed.
    for flag in ["--help", "-h"] {
        let unset = text(&run(&[flag]).stdout);
        assert!(unset.contains("[env: STATEGRAPH_STATE]"), "{flag}: {unset}");
        assert!(!unset.contains("=]"), "{flag}: {unset}");
    }
    let out = stategraph_without_db()
        .env("STATEGRAPH_STATE", "team-secret-name")
        .args(["log", "--help"])
        .output()
        .unwrap();
    assert!(!text(&out.stdout).contains("team-secret-name"));
}

#[test]
fn a_misspelled_flag_is_echoed_as_written() {
    // stategraph's own commands: clap read `-bogus` as `--bogus`.
    let out = run(&["log", "-bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("'-bogus'") && !err.contains("--bogus"),
        "{err}"
    );
    let out = run(&["locks", "-jsn=1"]);
    let err = text(&out.stderr);
    assert!(err.contains("'-jsn") && !err.contains("--jsn"), "{err}");
    // terraform's commands: in terraform's words.
    let wd = TfWorkdir::from_fixture("chain");
    let out = stategraph_without_db()
        .current_dir(wd.path())
        .args(["apply", "-auto-aprove"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("flag provided but not defined: -auto-aprove") && !err.contains("--auto"),
        "{err}"
    );
}

#[test]
fn usage_lines_say_stategraph_whatever_the_binary_is_called() {
    // clap names the program after argv[0] unless told otherwise.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sg-renamed");
    // A link, not a copy: executing a file just written races with other
    // tests' forks holding it open ("text file busy").
    std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin("stategraph"), &copy).unwrap();
    for args in [
        &["log", "-bogus"][..],
        &["state", "--help"][..],
        &["--help"][..],
    ] {
        let out = std::process::Command::new(&copy)
            .args(args)
            .env("CI", "true")
            .output()
            .unwrap();
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(all.contains("Usage: stategraph "), "{args:?}: {all}");
        assert!(!all.contains("sg-renamed"), "{args:?}: {all}");
    }
}
