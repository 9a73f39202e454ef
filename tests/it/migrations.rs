//! Embedded migrations: applied once, concurrently safe, tamper-evident.

use crate::common::*;

#[test]
fn ten_processes_starting_at_once_on_an_empty_database_all_succeed() {
    let db = test_db();
    let children: Vec<_> = (0..10)
        .map(|_| {
            let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("stategraph"));
            cmd.env("STATEGRAPH_DATABASE_URL", &db.url)
                .env("CI", "true")
                .args(["--state", "empty", "log"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn stategraph")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each migration applied exactly once.
    assert_eq!(
        db.psql("SELECT count(*) FROM stategraph_migrations"),
        stategraph::db::migrations::MIGRATIONS.len().to_string()
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'instances'"),
        "1"
    );
}

#[test]
fn a_changed_migration_is_refused() {
    let db = test_db();
    sg_ok(&db, &["--state", "x", "log"]);
    db.psql("UPDATE stategraph_migrations SET checksum = 'deadbeef' WHERE version = 1");
    let err = sg_err(&db, &["--state", "x", "log"]);
    assert!(
        err.contains("migration 1") && err.contains("changed"),
        "{err}"
    );
}

#[test]
fn a_newer_schema_asks_for_an_upgrade() {
    let db = test_db();
    sg_ok(&db, &["--state", "x", "log"]);
    db.psql(
        "INSERT INTO stategraph_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
    );
    let err = sg_err(&db, &["--state", "x", "log"]);
    assert!(err.contains("upgrade stategraph"), "{err}");
}
