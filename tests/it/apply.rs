//! `stategraph plan` / `apply` end to end: the real terraform on
//! `fixtures/tf/chain`, the state in a real PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// The state every test here stores `fixtures/tf/chain` as.
const STATE: &str = "chain";
const CHANGE_A: &str = r#"gen={a="2",b="1",c="1"}"#;

/// Asserts that a stategraph run succeeded; its stdout and stderr.
#[track_caller]
fn ok(out: &std::process::Output) -> (String, String) {
    assert_ok("stategraph", out)
}

fn versions(db: &TestDb) -> BTreeMap<String, i64> {
    db.psql("SELECT address || '=' || version FROM instances ORDER BY address")
        .lines()
        .map(|l| {
            let (a, v) = l.rsplit_once('=').unwrap();
            (a.to_owned(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn apply_of_a_fresh_config_gives_a_state_terraform_accepts() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let before = files_under(wd.path());
    let (stdout, stderr) = ok(&sg_in(&db, &wd, STATE, &["apply", "-auto-approve"]));
    assert!(
        stdout.contains("Apply complete! Resources: 19 added"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Locking subgraph (19 exclusive, 0 shared)... ready"),
        "{stderr}"
    );
    assert!(stderr.contains("transaction"), "{stderr}");
    assert_eq!(
        files_under(wd.path()),
        before,
        "the user's directory changed"
    );

    // The stored state is one terraform itself finds up to date.
    let pulled = pull_to(&db, "chain", wd.path());
    let doc: Value = terraform::read_json(&pulled);
    assert_eq!(terraform::count_instances(&doc, |_| true), 19);
    assert_eq!(
        doc["outputs"].as_object().unwrap().len(),
        2,
        "outputs missing: {doc}"
    );
    std::fs::rename(&pulled, wd.state_path()).unwrap();
    wd.terraform(&["init", "-no-color"]);
    let plan = wd.terraform_allow_fail(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "terraform sees changes: {}",
        String::from_utf8_lossy(&plan.stdout)
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM locks"),
        "0",
        "locks left behind"
    );
}

#[test]
fn a_change_writes_only_its_cone_and_plan_writes_nothing() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    ok(&sg_in(&db, &wd, STATE, &["apply", "-auto-approve"]));
    let v1 = versions(&db);

    // plan: terraform's exit code 2 (changes) passes through; nothing written, nothing locked.
    let out = sg_in(
        &db,
        &wd,
        STATE,
        &["plan", "-detailed-exitcode", "-no-color", "-var", CHANGE_A],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"module.branch["a"].terraform_data.l1 must be replaced"#),
        "{stdout}"
    );
    assert!(
        !stdout.contains(r#"module.branch["b"]"#),
        "branch b appears in the plan: {stdout}"
    );
    assert_eq!(versions(&db), v1);
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");

    let (_, stderr) = ok(&sg_in(
        &db,
        &wd,
        STATE,
        &["apply", "-auto-approve", "-no-color", "-var", CHANGE_A],
    ));
    assert!(
        stderr.contains("Computing change cone... 17 of 19 instances (6 write, 11 read)"),
        "{stderr}"
    );
    let v2 = versions(&db);
    let bumped: Vec<&String> = v2
        .keys()
        .filter(|a| v2[*a] != v1.get(*a).copied().unwrap_or(0))
        .collect();
    // l1 is replaced, l2 updated in place; nothing outside branch a and join moves.
    assert!(!bumped.is_empty());
    for a in &bumped {
        assert!(
            a.starts_with(r#"module.branch["a"]"#) || a.as_str() == "terraform_data.join",
            "{a} was written outside the cone"
        );
    }
    for a in v1
        .keys()
        .filter(|a| a.contains(r#"["b"]"#) || a.contains(r#"["c"]"#) || a.contains("island"))
    {
        assert_eq!(v1[a], v2[a], "{a} changed");
    }
    let log: Value =
        serde_json::from_str(&sg_ok(&db, &["--state", "chain", "log", "--json"])).unwrap();
    assert_eq!(log[0]["kind"], "apply");
    assert_eq!(log[0]["cone"]["write"].as_array().unwrap().len(), 6);
}

#[test]
fn a_held_lock_fails_fast_naming_the_holder_or_is_waited_for() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    ok(&sg_in(&db, &wd, STATE, &["apply", "-auto-approve"]));
    let v1 = versions(&db);
    let holder = hold_as_bob(
        &db,
        "chain",
        "stategraph apply -var x",
        &[("terraform_data.join", "exclusive")],
    );

    let out = sg_in(
        &db,
        &wd,
        STATE,
        &["apply", "-auto-approve", "-no-color", "-var", CHANGE_A],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error acquiring the state lock"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bob") && stderr.contains("terraform_data.join"),
        "{stderr}"
    );
    assert!(stderr.contains(&holder), "{stderr}");
    assert_eq!(versions(&db), v1, "a refused apply wrote something");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "1");

    // With a timeout it waits for the holder to go, then applies.
    let releaser = free_every_lock_in(&db, std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    let (_, stderr) = ok(&sg_in(
        &db,
        &wd,
        STATE,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=60s",
            "-var",
            CHANGE_A,
        ],
    ));
    releaser.join().unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "did not wait"
    );
    assert!(stderr.contains("Waiting for lock"), "{stderr}");
    assert_ne!(versions(&db), v1);
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn a_configuration_error_passes_terraform_message_and_code_through() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    let out = sg_in(
        &db,
        &wd,
        STATE,
        &["plan", "-no-color", "-var", "nonexistent=1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Value for undeclared variable"), "{stderr}");
    // Refused as terraform refuses it, before the database was opened.
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'lock_holders'"),
        "0"
    );
}

#[test]
fn help_of_a_terraform_command_explains_and_runs_nothing() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    for cmd in ["plan", "apply", "destroy", "init"] {
        let (stdout, _) = ok(&sg_in(&db, &wd, STATE, &[cmd, "-help"]));
        assert!(
            stdout.contains(&format!("terraform {cmd} -help")),
            "{stdout}"
        );
    }
    // Nothing ran: no schema was even needed.
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'states'"),
        "0"
    );
    assert!(!wd.path().join(".terraform").exists());
}

#[test]
fn apply_asks_for_approval_as_terraform_does() {
    use std::io::Write as _;
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    ok(&sg_in(&db, &wd, STATE, &["apply", "-auto-approve"]));
    let v1 = versions(&db);
    let answer = |text: &str| {
        let mut child = spawn_piped(
            sg_tf(&db, &wd, STATE, &["apply", "-no-color", "-var", CHANGE_A])
                .env("TF_INPUT", "1")
                .stdin(std::process::Stdio::piped()),
        );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };

    let out = answer("no\n");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Do you want to perform these actions?"),
        "{stdout}"
    );
    assert!(stdout.contains("Apply cancelled."), "{stdout}");
    assert_eq!(versions(&db), v1, "a cancelled apply wrote something");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");

    // Without input, approval cannot be asked: terraform's advice.
    let out = sg_in(&db, &wd, STATE, &["apply", "-no-color", "-var", CHANGE_A]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-auto-approve"));

    let out = answer("yes\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Apply complete!"));
    assert_ne!(versions(&db), v1);
}

#[test]
fn refresh_only_covers_the_whole_state() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    ok(&sg_in(&db, &wd, STATE, &["apply", "-auto-approve"]));
    let (_, stderr) = ok(&sg_in(
        &db,
        &wd,
        STATE,
        &["apply", "-refresh-only", "-auto-approve", "-no-color"],
    ));
    assert!(
        stderr.contains("Locking subgraph (19 exclusive, 0 shared)"),
        "{stderr}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    let (stdout, _) = ok(&sg_in(
        &db,
        &wd,
        STATE,
        &["plan", "-refresh-only", "-no-color"],
    ));
    assert!(stdout.contains("No changes"), "{stdout}");
}

#[test]
fn an_overlapping_apply_waits_then_plans_again_on_the_first_ones_result() {
    // The second (a newer checkout) has team a's change too, plus team b's.
    let (_, db) = overlapping_applies("1", |_| {}, &["-var", r#"gen={a="2",b="2"}"#]);
    // Both changes landed, each once: team a was not replaced a second time.
    assert_eq!(
        bases(&db),
        r#"module.team["a"].terraform_data.base=2@v2,module.team["b"].terraform_data.base=2@v2,module.team["c"].terraform_data.base=1@v1"#
    );
}

/// Two checkouts of `teams`, applied once: the first changes team a slowly
/// (its base's creation sleeps), holding its locks, while the second,
/// `edit`ed, applies with `second_args` and `-lock-timeout`, with the
/// discovery oracle as `oracle` says. Both must succeed, the second after
/// waiting and planning again on the first's result, and three applies be
/// committed. Returns the second's stderr
/// and the database.
fn overlapping_applies(
    oracle: &str,
    edit: impl Fn(&Path),
    second_args: &[&str],
) -> (String, TestDb) {
    let db = test_db();
    let first = TfWorkdir::from_fixture("teams");
    let second = TfWorkdir::from_fixture("teams");
    let run = |wd: &TfWorkdir, args: &[&str]| {
        let mut cmd = sg_tf(&db, wd, "teams", args);
        cmd.env("STATEGRAPH_DISCOVERY_ORACLE", oracle);
        cmd
    };
    let out = run(&first, &["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    assert!(out.status.success());
    edit(second.path());

    let mut slow = spawn_piped(&mut run(
        &first,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            "sleep_seconds=4",
            "-var",
            r#"gen={a="2"}"#,
        ],
    ));
    wait_until_locked(&db, &mut slow, "the first apply never locked");
    let mut args = vec!["apply", "-auto-approve", "-no-color", "-lock-timeout=60s"];
    args.extend_from_slice(second_args);
    let out = run(&second, &args).output().unwrap();
    let first_out = slow.wait_with_output().unwrap();
    assert!(
        first_out.status.success(),
        "{}",
        String::from_utf8_lossy(&first_out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Waiting for lock"), "{stderr}");
    assert!(
        stderr.contains("planning again"),
        "it did not re-plan on the new state: {stderr}"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE kind = 'apply' AND status = 'committed'"),
        "3"
    );
    (stderr, db)
}

/// The team bases as stored: `ADDRESS=GEN@vVERSION`, by address.
fn bases(db: &TestDb) -> String {
    db.psql(
        "SELECT string_agg(address || '=' || (attributes->'input'->'value'->>'gen') || '@v' || version, ',' ORDER BY address)
         FROM instances WHERE name = 'base'",
    )
}

/// `state push` holds the state's lock while it writes, as terraform's
/// does: a run holding rows (and so the state, shared) makes it fail at
/// once naming the holder, or wait with -lock-timeout; -lock=false writes
/// regardless.
#[test]
fn state_push_takes_the_states_lock_as_terraforms_does() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("chain");
    ok(&sg_in(&db, &wd, STATE, &["apply", "-auto-approve"]));
    let pulled = sg_in(&db, &wd, STATE, &["state", "pull"]);
    let mut doc: serde_json::Value = serde_json::from_slice(&ok(&pulled).0.into_bytes()).unwrap();
    let serial = doc["serial"].as_i64().unwrap();
    doc["serial"] = (serial + 1).into();
    let file = wd.path().join("next.tfstate");
    std::fs::write(&file, doc.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let stored_serial = || db.psql("SELECT serial FROM states WHERE name = 'chain'");
    // A run of bob's holds one row exclusively and the state shared, as
    // every run does.
    hold_as_bob(
        &db,
        "chain",
        "stategraph apply -var x",
        &[("terraform_data.join", "exclusive"), ("*", "shared")],
    );

    let out = sg_in(&db, &wd, STATE, &["state", "push", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Error acquiring the state lock") && stderr.contains("bob"),
        "{stderr}"
    );
    assert_eq!(stored_serial(), serial.to_string(), "a refused push wrote");

    // With a timeout it waits for bob's run to end, then writes.
    let releaser = free_every_lock_in(&db, std::time::Duration::from_secs(2));
    let (_, stderr) = ok(&sg_in(
        &db,
        &wd,
        STATE,
        &["state", "push", "-lock-timeout=60s", file],
    ));
    assert!(stderr.contains("Locking the whole state"), "{stderr}");
    releaser.join().unwrap();
    assert_eq!(stored_serial(), (serial + 1).to_string());
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");

    // -lock=false: written while another holds the lock.
    db.psql(
        "INSERT INTO lock_holders (state_id, actor_user, actor_host, command, lease_expires_at)
         SELECT id, 'bob', 'laptop', 'stategraph apply', now() + interval '1 hour'
         FROM states WHERE name = 'chain'",
    );
    db.psql(
        "INSERT INTO locks (state_id, address, mode, holder_id)
         SELECT state_id, '*', 'shared', id FROM lock_holders",
    );
    doc["serial"] = (serial + 2).into();
    std::fs::write(file, doc.to_string()).unwrap();
    ok(&sg_in(
        &db,
        &wd,
        STATE,
        &["state", "push", "-lock=false", file],
    ));
    assert_eq!(stored_serial(), (serial + 2).to_string());
}

/// Frees every lock of `db` (the holders' rows gone, as when their runs end)
/// after `delay`, on a thread of its own.
fn free_every_lock_in(db: &TestDb, delay: std::time::Duration) -> std::thread::JoinHandle<()> {
    let url = db.url.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let out = std::process::Command::new("psql")
            .args(["-XAtq", &url, "-c", "DELETE FROM lock_holders"])
            .output()
            .unwrap();
        assert!(out.status.success());
    })
}

/// The same where the waiting run reads the state light (the discovery
/// oracle off, as users run, and a change the configuration alone
/// answers: the shared resource's text edited in a newer checkout): its
/// re-check under the lock compares the versions of its cone's rows, finds
/// team a's rewritten, and plans again on the rows read whole.
#[test]
fn an_overlapping_apply_reading_rows_light_plans_again_on_the_first_ones_result() {
    let edit = |dir: &Path| {
        let main = dir.join("main.tf");
        let text = std::fs::read_to_string(&main).unwrap();
        let edited = text.replace("input = \"shared\"", "input = \"shared-2\"");
        assert_ne!(text, edited, "the fixture's shared resource moved");
        std::fs::write(&main, edited).unwrap();
    };
    let (stderr, db) = overlapping_applies("0", edit, &[]);
    assert!(
        stderr.contains(
            "Discovering changes (configuration against the baseline)... 1 block changed"
        ),
        "{stderr}"
    );
    // Both runs' changes landed on each other: team a's generation 2, then
    // the second checkout's configuration (generation 1, its default) on
    // that, and the shared resource's edit.
    assert_eq!(
        bases(&db),
        r#"module.team["a"].terraform_data.base=1@v3,module.team["b"].terraform_data.base=1@v1,module.team["c"].terraform_data.base=1@v1"#
    );
    assert_eq!(
        db.psql("SELECT attributes->'input'->>'value' FROM instances WHERE address = 'terraform_data.shared'"),
        "shared-2"
    );
}
