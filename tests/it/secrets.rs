//! Secrets: stategraph prints no sensitive value in plan, apply, log, locks,
//! cone or errors, and leaves no private temporary file behind.

use crate::common::*;

const SECRETS: &[&str] = &["hunter2-not-a-real-secret", "tok-0123456789"];

/// What stategraph left in the temp dir `tmp`, but for the empty lock files
/// of the directories' override guards (they stay by design).
fn temp_entries(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("stategraph-override-"))
        .collect()
}

#[test]
fn no_command_prints_a_sensitive_value() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("rich");
    // A temp dir of its own, so that what other processes create does not count.
    let tmp = wd.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut seen = String::new();
    let mut run = |args: &[&str]| {
        let out = sg_tf(&db, &wd, "rich", args)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
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
    let left = temp_entries(&tmp);
    assert!(left.is_empty(), "private temp files left behind: {left:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(wd.path().join("p.sgplan"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the saved plan is readable by others");
}

#[test]
fn the_database_password_is_in_no_argv_and_no_environment_of_terraform() {
    let db = test_db();
    // The test cluster trusts local connections: the password is carried
    // in the URL (as a real one would be) and never needed.
    const PASSWORD: &str = "pw-must-not-leak-4711";
    let url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    );
    assert!(
        url.contains(PASSWORD),
        "unexpected test URL shape: {}",
        db.url
    );
    let with_password = TestDb {
        url,
        name: db.name.clone(),
    };
    // Its own temp dir (SlowChain::tmp), so that the other test's count of
    // private temp dirs is not disturbed (and this one's can be checked).
    let chain = SlowChain::new(&with_password);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());

    let child = spawn_piped(&mut chain.apply_gen2(&[], 5));
    // Look at every process under stategraph while terraform applies.
    let mut looked = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while looked < 3 && std::time::Instant::now() < deadline {
        let pids = descendants(child.id());
        let own_exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).ok();
        for pid in &pids {
            // A child between fork and exec still shows stategraph's own
            // environment: what it runs with is known only after exec.
            if std::fs::read_link(format!("/proc/{pid}/exe")).ok() == own_exe {
                continue;
            }
            for what in ["cmdline", "environ"] {
                let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}")) else {
                    continue; // already gone
                };
                let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
                assert!(
                    !text.contains(PASSWORD),
                    "the password is in /proc/{pid}/{what} (exe {exe:?}, ours {own_exe:?}): {}",
                    &text[..text.len().min(300)]
                );
            }
        }
        if !pids.is_empty() {
            looked += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(looked, 3, "never saw terraform running under stategraph");
    // stategraph's own argv: the URL came from the environment.
    let own = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&own).contains(PASSWORD));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(PASSWORD));
    }
    let left = temp_entries(&chain.tmp);
    assert!(left.is_empty(), "private temp files left behind: {left:?}");
}
