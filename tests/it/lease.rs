//! A holder killed with SIGKILL on another machine blocks others no longer
//! than its lease. (On the same machine the next run sees the dead run's
//! dir and frees its locks at once: see `checkpoints::`.)

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn a_killed_apply_blocks_the_next_one_only_until_its_lease_expires() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("teams");
    assert_ok(
        "the first apply",
        &sg_in(&db, &wd, "teams", &["apply", "-auto-approve", "-no-color"]),
    );

    // An apply of team a that takes 60 s, with an 8 s lease (long enough that
    // the next apply surely finds it still held, short enough for a test).
    // Its run dir lives in a temp dir of its own, as on another machine: the
    // next run cannot see that it died, only that its lease runs out.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut victim = spawn_quiet(
        sg_tf(
            &db,
            &wd,
            "teams",
            &[
                "--lock-lease=8s",
                "apply",
                "-auto-approve",
                "-no-color",
                "-var",
                "sleep_seconds=60",
                "-var",
                r#"gen={a="2"}"#,
            ],
        )
        .env("TMPDIR", elsewhere.path()),
    );
    wait_until_locked(&db, &mut victim, "the first apply never took its lock");
    // kill -9: no chance to release. Its terraform must not run on
    // unsupervised: the kernel tells it to stop (SIGINT) when we die.
    // Between two terraform commands there is a moment with no child:
    // wait for one (the 60 s apply comes after the locks).
    let terraform_pids = wait_for(
        "no terraform child found under stategraph",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || Some(child_pids(victim.id())).filter(|pids| !pids.is_empty()),
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    wait_until_gone(
        &terraform_pids,
        Duration::from_secs(45),
        "terraform kept running after stategraph was killed",
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM lock_holders"),
        "1",
        "the killed holder's lock should still be there"
    );

    // The next apply of the same team waits for the lease, then proceeds.
    let started = Instant::now();
    let out = sg_in(
        &db,
        &wd,
        "teams",
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=120s",
            "-var",
            r#"gen={a="3"}"#,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Waiting for lock"),
        "it did not wait for the dead holder: {stderr}"
    );
    eprintln!(
        "waited {:?} for a dead holder with an 8 s lease",
        started.elapsed()
    );
    assert_eq!(
        input_gen(&db, r#"module.team["a"].terraform_data.base"#),
        "3"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}
