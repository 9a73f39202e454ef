//! Ctrl-C: terraform stops gracefully, what it finished is recorded, the
//! locks are free at once, and the exit status is non-zero.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::*;

#[test]
fn sigint_mid_apply_records_what_terraform_finished_and_frees_the_locks() {
    let db = test_db();
    sg_ok(&db, &["--state", "teams", "log"]); // creates the schema, for polling
    let wd = TfWorkdir::from_fixture("teams");
    let mut child = spawn_piped(&mut sg_tf(
        &db,
        &wd,
        "teams",
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            "sleep_seconds=5",
        ],
    ));
    wait_until_locked(&db, &mut child, "the apply never took its locks");
    // Let terraform create the shared resource and start the slow bases.
    std::thread::sleep(Duration::from_millis(2500));
    send_signal(child.id(), Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an interrupted apply exited 0:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("Interrupt received").count(),
        1,
        "terraform should see the interrupt exactly once:\n{stdout}"
    );
    // Locks are free at once, not after the lease.
    assert_eq!(
        db.psql("SELECT count(*) FROM lock_holders"),
        "0",
        "{stderr}"
    );
    // What terraform finished is recorded; what it did not start is not.
    let recorded = db.psql("SELECT string_agg(address, ',' ORDER BY address) FROM instances");
    assert!(
        recorded.contains("terraform_data.shared"),
        "{recorded}\n{stderr}"
    );
    assert!(
        !recorded.contains("service"),
        "services were created after the interrupt: {recorded}"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE kind = 'apply' AND status = 'committed'"),
        "1",
        "{stderr}"
    );
}

#[test]
fn a_second_interrupt_warns_then_forces_terraform_and_still_records_and_unlocks() {
    let db = test_db();
    let chain = SlowChain::new(&db);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());

    let mut child = spawn_piped(&mut chain.apply_gen2(&[], 60));
    // Terraform is in the 60 s step once `first` is recorded.
    chain.wait_until_first_is_recorded(&mut child);
    // Terraform answers an interrupt within milliseconds here (the
    // provisioner is killed at once), too fast to interrupt it twice. Hold
    // it stopped meanwhile: both interrupts reach stategraph while terraform
    // still runs. (Terraform itself then sees one: a stopped process keeps
    // one pending SIGINT.)
    let terraform = child_pids(child.id());
    assert_eq!(
        terraform.len(),
        1,
        "expected one terraform child: {terraform:?}"
    );
    let sg = child.id();
    send_signal(terraform[0], Signal::SIGSTOP);
    send_signal(sg, Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    send_signal(sg, Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    send_signal(terraform[0], Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a forced stop exited 0:\n{stdout}\n{stderr}"
    );
    // stategraph explains the risk, and terraform got the second interrupt.
    assert!(
        stderr.contains("Second interrupt") && stderr.contains("may exist without being recorded"),
        "no warning before forcing:\n{stderr}\nstdout:\n{stdout}"
    );
    assert_eq!(stderr.matches("Second interrupt").count(), 1, "{stderr}");
    assert!(
        stdout.contains("Interrupt received"),
        "the interrupts were not passed on to terraform:\n{stdout}"
    );
    // What terraform finished is recorded; nothing is locked or left running.
    assert_eq!(chain.gen("first"), "2");
    assert_eq!(
        db.psql("SELECT count(*) FROM lock_holders"),
        "0",
        "{stderr}"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE status = 'running'"),
        "0"
    );
}
