//! Checkpoints: what terraform finishes during an apply is in PostgreSQL
//! before the apply ends, so a run killed with SIGKILL loses nothing it
//! recorded; the next run on the state finds the dead transaction once its
//! lease has expired, marks it aborted and says what it had recorded.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const FIRST_GEN: &str =
    "SELECT attributes->'input'->'value'->>'gen' FROM instances WHERE address = 'terraform_data.first'";

#[test]
fn a_killed_apply_keeps_its_checkpoints_and_the_next_run_reports_it() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("slow_chain");
    // A temp dir of its own: no other stategraph on the machine (another
    // test, a bench) may sweep this test's dead run before it looks.
    let tmp = wd.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = |args: &[&str]| {
        let mut cmd = sg_tf(&db, &wd, "slow", args);
        cmd.env("TMPDIR", &tmp);
        cmd
    };
    let out = run(&["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.psql(FIRST_GEN), "1");

    // gen 2: `first` is updated at once, `second` takes 60 s.
    let mut victim = run(&[
        "--lock-lease=5s",
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        "gen=2",
        "-var",
        "sleep_seconds=60",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();

    // `first` reaches the database while the apply is still running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.psql(FIRST_GEN) != "2" {
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the apply ended before its checkpoint was seen"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint recorded terraform_data.first"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the apply is over already"
    );
    let txn = db.psql("SELECT id FROM transactions WHERE status = 'running'");
    assert!(
        !txn.is_empty(),
        "no running transaction while the apply runs"
    );
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM lock_holders WHERE txn_id = {txn}"
        )),
        "1",
        "the running transaction is not linked to the lock"
    );
    // `second` is being replaced (destroyed, not yet created again): the
    // checkpoint shows it as terraform's state does, not with gen 2.
    assert_ne!(
        db.psql("SELECT attributes->'input'->'value'->>'gen' FROM instances WHERE address = 'terraform_data.second'"),
        "2"
    );

    // Its private dir (state inside, so secrets).
    let private: Vec<std::path::PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read_to_string(p.join("owner.pid"))
                .is_ok_and(|o| o.trim() == victim.id().to_string())
        })
        .collect();
    assert_eq!(private.len(), 1, "the run's private dir: {private:?}");

    // kill -9: stategraph cannot clean up; its terraform is told to stop.
    let children = String::from_utf8(
        std::process::Command::new("pgrep")
            .args(["-P", &victim.id().to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !children.trim().is_empty(),
        "no terraform under the running apply"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    while children
        .split_whitespace()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "terraform kept running unsupervised"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(db.psql(FIRST_GEN), "2", "the checkpoint was lost");
    // Terraform's provisioner (`sleep 60`) outlives it and still uses the
    // private dir, which is kept for as long; end it, as the end of a real
    // provisioner would.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let env = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let marker = format!("TF_DATA_DIR={}", private[0].display());
        if String::from_utf8_lossy(&env).contains(&marker) {
            let pid = p.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            eprintln!(
                "ending {pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            );
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    }

    let left: Vec<String> = std::fs::read_dir(&private[0])
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let serial = std::fs::read_to_string(private[0].join("terraform.tfstate"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["serial"].clone());
    let raw = std::fs::read(private[0].join("terraform.tfstate")).unwrap_or_default();
    eprintln!(
        "the dead run left {left:?}, its terraform's state has serial {serial:?} ({} bytes: {:?})",
        raw.len(),
        String::from_utf8_lossy(&raw[..raw.len().min(60)])
    );

    // The next run waits for the lease, then reports the dead run.
    let out = run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-lock-timeout=60s",
        "-var",
        "gen=2",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    eprintln!("the next run said:\n{stderr}");
    assert!(
        stderr.contains(&format!("transaction {txn} ")) && stderr.contains("died"),
        "the dead run is not reported:\n{stderr}"
    );
    assert!(
        stderr.contains("terraform_data.first"),
        "the report does not say what the dead run recorded:\n{stderr}"
    );
    assert_eq!(
        db.psql(&format!("SELECT status FROM transactions WHERE id = {txn}")),
        "aborted"
    );
    // The dead run's private dir is gone; what its terraform wrote after the
    // last checkpoint became a recovery file...
    assert!(
        !private[0].exists(),
        "the dead run's private dir is left behind"
    );
    let recovery = wd.path().join(".sg-data-unused/recovery");
    let kept: Vec<_> = std::fs::read_dir(&recovery)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    if serial.is_none() {
        // Terraform's state file was cut short as it stopped (it rewrites
        // the file in place), and its backup holds nothing newer than what
        // the run started from: nothing to rescue.
        eprintln!("the dead run's terraform left a truncated state: nothing to rescue");
        assert!(kept.is_empty(), "{kept:?}");
    } else {
        assert!(
            stderr.contains("left the last state its terraform wrote"),
            "{stderr}"
        );
        assert_eq!(kept.len(), 1, "{kept:?}");
        // ...which is stale now (this run wrote `second`): recover refuses it.
        let out = run(&["recover", kept[0].to_str().unwrap()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a stale rescue was written: {said}");
        assert!(said.contains("terraform_data.second"), "{said}");
        assert!(kept[0].exists());
    }
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE status = 'running'"),
        "0"
    );

    // Consistent: the configuration and the stored state agree.
    let out = run(&["plan", "-detailed-exitcode", "-no-color", "-var", "gen=2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
