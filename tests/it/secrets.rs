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

/// A configuration whose one resource runs a local-exec provisioner writing
/// its environment (what terraform gives its provisioners and providers) to
/// `dump`, again each time `var.round` changes.
const ENV_PROBE: &str = r#"
variable "round" {
  type = string
}

resource "terraform_data" "probe" {
  triggers_replace = var.round
  provisioner "local-exec" {
    command = "env > 'DUMP'"
  }
}
"#;

/// The names of the variables in the `env` output `dump`.
fn names_in(dump: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dump)
        .unwrap_or_else(|e| panic!("the provisioner wrote no {}: {e}", dump.display()))
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect()
}

#[test]
fn the_libpq_variables_stategraph_connects_with_never_reach_terraform() {
    let db = test_db();
    let wd = TfWorkdir::empty();
    let dump = wd.path().join("env-of-the-provisioner");
    wd.write_file(
        "main.tf",
        &ENV_PROBE.replace("DUMP", &dump.to_string_lossy()),
    );
    let port = crate::common::pg::cluster_port().to_string();
    let apply = |round: &str| {
        let mut cmd = sg_tf(
            &db,
            &wd,
            "probe",
            &["apply", "-auto-approve", "-no-color", "-var"],
        );
        cmd.arg(format!("round={round}"))
            .env_remove("STATEGRAPH_DATABASE_URL")
            // Not stategraph's: these reach terraform as they always did.
            .env("SG_TEST_VISIBLE", "yes")
            .env("PGTZ", "UTC");
        cmd
    };

    // Connected by the libpq variables alone.
    let out = apply("1")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", &port)
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name)
        .env("PGPASSWORD", SECRETS[0])
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "sg-test")
        .output()
        .unwrap();
    assert_ok("apply connected by PG* variables", &out);
    let seen = names_in(&dump);
    assert!(
        seen.contains(&"SG_TEST_VISIBLE".to_owned()) && seen.contains(&"PGTZ".to_owned()),
        "the provisioner's environment is not the one terraform got: {seen:?}"
    );
    let leaked: Vec<&String> = seen
        .iter()
        .filter(|k| k.starts_with("PG") && *k != "PGTZ")
        .collect();
    assert!(leaked.is_empty(), "terraform saw stategraph's {leaked:?}");
    assert!(!std::fs::read_to_string(&dump).unwrap().contains(SECRETS[0]));

    // Connected by a URL that the libpq variables complete: the URL's
    // variable and the ones used are hidden.
    let url = format!("postgres://127.0.0.1:{port}/{}", db.name);
    let out = apply("2")
        .env("STATEGRAPH_DATABASE_URL", &url)
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", SECRETS[0])
        .output()
        .unwrap();
    assert_ok("apply connected by a URL and PG* variables", &out);
    let seen = names_in(&dump);
    assert!(seen.contains(&"PGTZ".to_owned()), "{seen:?}");
    for hidden in ["STATEGRAPH_DATABASE_URL", "PGUSER", "PGPASSWORD"] {
        assert!(
            !seen.contains(&hidden.to_owned()),
            "terraform saw {hidden}: {seen:?}"
        );
    }
    assert_eq!(input_round(&db), "2", "the second apply was not recorded");
}

/// The `round` the probe was last applied with, as stored.
fn input_round(db: &TestDb) -> String {
    db.psql(
        "SELECT attributes->'triggers_replace'->>'value' FROM instances WHERE address = 'terraform_data.probe'",
    )
}
