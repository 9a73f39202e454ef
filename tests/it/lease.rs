//! A holder killed with SIGKILL blocks others no longer than its lease.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn a_killed_apply_blocks_the_next_one_only_until_its_lease_expires() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("teams");
    let out = sg_tf(&db, &wd, "teams", &["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An apply of team a that takes 60 s, with an 8 s lease (long enough that
    // the next apply surely finds it still held, short enough for a test).
    let mut victim = sg_tf(
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
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.psql("SELECT count(*) FROM lock_holders") == "0" {
        assert!(
            Instant::now() < deadline,
            "the first apply never took its lock"
        );
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the first apply ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // kill -9: no chance to release. Its terraform must not run on
    // unsupervised: the kernel tells it to stop (SIGINT) when we die.
    let pid = victim.id().to_string();
    // Between two terraform commands there is a moment with no child:
    // wait for one (the 60 s apply comes after the locks).
    let deadline = Instant::now() + Duration::from_secs(60);
    let terraform_pids: Vec<String> = loop {
        let children = String::from_utf8(
            std::process::Command::new("pgrep")
                .args(["-P", &pid])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let pids: Vec<String> = children.split_whitespace().map(str::to_owned).collect();
        if !pids.is_empty() {
            break pids;
        }
        assert!(
            Instant::now() < deadline,
            "no terraform child found under stategraph"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    victim.kill().unwrap();
    victim.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    while terraform_pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "terraform kept running after stategraph was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        db.psql("SELECT count(*) FROM lock_holders"),
        "1",
        "the killed holder's lock should still be there"
    );

    // The next apply of the same team waits for the lease, then proceeds.
    let started = Instant::now();
    let out = sg_tf(
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
    )
    .output()
    .unwrap();
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
        db.psql(r#"SELECT attributes->'input'->'value'->>'gen' FROM instances WHERE address = 'module.team["a"].terraform_data.base'"#),
        "3"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}
