//! Checkpoints: what terraform finishes during an apply is in PostgreSQL
//! before the apply ends, so a run killed with SIGKILL loses nothing it
//! recorded; the next run on the state takes in what the dead run's
//! terraform wrote after the last checkpoint (or, with nothing to take in,
//! finds the dead transaction once its lease has expired) and says so.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::*;

#[test]
fn a_killed_apply_keeps_its_checkpoints_and_the_next_run_reports_it() {
    let db = test_db();
    // Its own temp dir (see SlowChain::tmp): no other stategraph on the
    // machine may sweep this test's dead run before it looks.
    let chain = SlowChain::new(&db);
    let (wd, tmp) = (&chain.wd, &chain.tmp);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());
    assert_eq!(chain.gen("first"), "1");

    // gen 2: `first` is updated at once, `second` takes 60 s.
    let mut victim = spawn_quiet(&mut chain.apply_gen2(&["--lock-lease=5s"], 60));

    // `first` reaches the database while the apply is still running.
    chain.wait_until_first_is_recorded(&mut victim);
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
    assert_ne!(chain.gen("second"), "2");

    // Its private dir (state inside, so secrets).
    let private: Vec<std::path::PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read_to_string(p.join("owner.pid"))
                .is_ok_and(|o| o.trim() == victim.id().to_string())
        })
        .collect();
    assert_eq!(private.len(), 1, "the run's private dir: {private:?}");

    // kill -9: stategraph cannot clean up; its terraform is told to stop.
    let children = child_pids(victim.id());
    assert!(!children.is_empty(), "no terraform under the running apply");
    victim.kill().unwrap();
    victim.wait().unwrap();
    wait_until_gone(
        &children,
        Duration::from_secs(45),
        "terraform kept running unsupervised",
    );
    assert_eq!(chain.gen("first"), "2", "the checkpoint was lost");
    // Terraform's provisioner (`sleep 60`) outlives it and still uses the
    // private dir, which is kept for as long; end it, as the end of a real
    // provisioner would.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let env = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let marker = format!("TF_DATA_DIR={}", private[0].display());
        if String::from_utf8_lossy(&env).contains(&marker) {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            eprintln!(
                "ending {pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            );
            // It may be gone already.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
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

    // The next run takes in what the dead run's terraform wrote after the
    // last checkpoint (or, where there is nothing to take in, waits for the
    // dead run's lease), and says so.
    let out = chain
        .sg(&[
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
        stderr.contains(&format!("transaction {txn}")) && stderr.contains("died"),
        "the dead run is not reported:\n{stderr}"
    );
    assert!(
        stderr.contains("terraform_data.first"),
        "the report does not say what the dead run was writing:\n{stderr}"
    );
    // The dead run's private dir is gone, and nothing of it is left in a
    // recovery file for someone to find later.
    assert!(
        !private[0].exists(),
        "the dead run's private dir is left behind"
    );
    let recovery = wd.path().join(".terraform/stategraph/recovery");
    let kept: Vec<_> = std::fs::read_dir(&recovery)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        kept.is_empty(),
        "the dead run's work was left in a recovery file: {kept:?}"
    );
    let status = db.psql(&format!("SELECT status FROM transactions WHERE id = {txn}"));
    if serial.is_none() {
        // Terraform's state file was cut short as it stopped (it rewrites
        // the file in place), and its backup holds nothing newer than what
        // the run started from: nothing to take in; its lease ran out.
        eprintln!("the dead run's terraform left a truncated state: nothing to take in");
        assert_eq!(status, "aborted");
    } else {
        assert!(
            stderr.contains("had applied more than its checkpoints recorded"),
            "{stderr}"
        );
        assert_eq!(status, "failed");
        assert_ne!(
            db.psql(&format!(
                "SELECT summary->>'recovered_by' FROM transactions WHERE id = {txn}"
            )),
            "",
            "the log does not say which transaction finished the dead run"
        );
    }
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE status = 'running'"),
        "0"
    );

    // Consistent: the configuration and the stored state agree.
    assert_no_changes(&chain.plan_gen2().output().unwrap());
}

/// A run killed (with its terraform) after it took its locks and before
/// terraform wrote anything: the next run on the state frees the dead
/// run's locks at once and says so, instead of failing on them until their
/// lease (60 s here) runs out.
#[test]
fn a_run_killed_before_terraform_wrote_anything_leaves_no_lock_behind() {
    use crate::common::gate::{gated_workdir, Gate};
    let db = test_db();
    let gate = Gate::start();
    let wd = gated_workdir();
    let (fast, hold) = (gate.var("fast"), gate.var("hold"));
    let args = |url: &str, gen: &str| -> Vec<String> {
        ["apply", "-auto-approve", "-no-color", "-var", url, "-var"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("gen={gen}")])
            .collect()
    };
    // Its own temp dir, where the runs below are the only ones.
    let tmp = tempfile::tempdir().unwrap();
    let apply = |url: &str, gen: &str| {
        let a = args(url, gen);
        let mut cmd = sg_tf(
            &db,
            &wd,
            "killed",
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        cmd.env("TMPDIR", tmp.path());
        cmd
    };
    assert_ok("first apply", &apply(&fast, "1").output().unwrap());

    // Each read of the gate holds terraform; the one after the lock is
    // taken is where the run dies, with its terraform.
    let mut victim = spawn_quiet(&mut apply(&hold, "2"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the apply never held its lock while reading the gate"
        );
        if gate.held.recv_timeout(Duration::from_millis(100)).is_err() {
            assert_running(&mut victim, "the apply ended before it was killed");
            continue;
        }
        if db.psql("SELECT count(*) FROM lock_holders") == "1" {
            break;
        }
        gate.release.send(()).unwrap();
    }
    let family: Vec<u32> = descendants(victim.id());
    for pid in &family {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    wait_until_gone(&family, Duration::from_secs(30), "the dead run's terraform");
    assert_eq!(
        db.psql("SELECT count(*) FROM lock_holders"),
        "1",
        "the lock is gone already"
    );
    drop(gate);

    // A run against another database on this machine leaves the dead
    // run's dir alone: its note is what frees the lock early. (It removed
    // it, and the lock stayed until its lease ran out.)
    let run_dirs = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("stategraph-run-")
            })
            .count()
    };
    assert_eq!(run_dirs(), 1, "the dead run left no dir");
    let elsewhere = test_db();
    let other = TfWorkdir::empty();
    other.write_file(
        "main.tf",
        "resource \"terraform_data\" \"y\" { input = 1 }\n",
    );
    let mut cmd = sg_tf(&elsewhere, &other, "other", &["apply", "-auto-approve"]);
    assert_ok(
        "an apply against another database",
        &cmd.env("TMPDIR", tmp.path()).output().unwrap(),
    );
    assert_eq!(
        run_dirs(),
        1,
        "a run against another database removed the dead run's dir"
    );

    // No -lock-timeout: before, this failed on the dead run's lock.
    let out = apply(&fast, "2").output().unwrap();
    let (_, stderr) = assert_ok("the next apply", &out);
    assert!(
        stderr.contains("a run that died") && stderr.contains("freed"),
        "the freed locks are not reported:\n{stderr}"
    );
    assert_eq!(input_gen(&db, "terraform_data.x"), "2");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
    assert!(
        db.psql("SELECT string_agg(status, ',' ORDER BY id) FROM transactions")
            .ends_with("committed"),
        "{}",
        db.psql("SELECT string_agg(status, ',' ORDER BY id) FROM transactions")
    );
}
