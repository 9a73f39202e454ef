//! Ctrl-C: terraform stops gracefully, what it finished is recorded, the
//! locks are free at once, and the exit status is non-zero.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigint_mid_apply_records_what_terraform_finished_and_frees_the_locks() {
    let db = test_db();
    sg_ok(&db, &["--state", "teams", "state", "list"]); // creates the schema, for polling
    let wd = TfWorkdir::from_fixture("teams");
    let child = sg_tf(
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
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.psql("SELECT count(*) FROM lock_holders") == "0" {
        assert!(Instant::now() < deadline, "the apply never took its locks");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let terraform create the shared resource and start the slow bases.
    std::thread::sleep(Duration::from_millis(2500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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
