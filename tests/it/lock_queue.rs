//! The lock queue: runs that wait for the same resources are served in the
//! order they asked (first come, first served), `locks` shows who waits in
//! which order, and a waiter interrupted with Ctrl-C leaves the queue at
//! once.

use std::io::Write;
use std::process::Child;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::*;

const STATE: &str = "hot";

/// One resource every apply replaces: each apply of `gen` writes a new
/// version of it, so its history is the order the applies ran in.
const HOT: &str = r#"
variable "gen" {
  type    = string
  default = "0"
}

resource "terraform_data" "hot" {
  input            = var.gen
  triggers_replace = [var.gen]
}
"#;

fn queued(db: &TestDb) -> usize {
    db.psql("SELECT count(*) FROM lock_waiters")
        .parse()
        .unwrap()
}

/// Starts `stategraph apply -var gen=GEN` waiting up to 10 minutes for
/// locks, and waits until it has taken ticket number `place` in the queue.
fn queue_apply(db: &TestDb, wd: &TfWorkdir, gen: usize, place: usize) -> Child {
    let gen = format!("gen={gen}");
    let mut child = spawn_piped(&mut sg_tf(
        db,
        wd,
        STATE,
        &[
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=10m",
            "-var",
            &gen,
        ],
    ));
    wait_until(
        &format!("apply {gen} never queued"),
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            assert_running(&mut child, &format!("apply {gen} ended before it queued"));
            queued(db) == place
        },
    );
    child
}

/// [`HOT`] in a fresh directory, applied (`gen` 0) into the state `hot`.
fn applied_hot(db: &TestDb) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    wd.write_file("main.tf", HOT);
    assert_ok(
        "first apply",
        &sg_in(db, &wd, STATE, &["apply", "-auto-approve", "-no-color"]),
    );
    wd
}

/// Starts `stategraph apply -var gen=1`, which locks `hot` and waits for
/// its approval (on its stdin) for as long as the test needs.
fn holder_awaiting_approval(db: &TestDb, wd: &TfWorkdir) -> Child {
    awaiting_approval(db, wd, STATE, &["apply", "-no-color", "-var", "gen=1"])
}

/// A waiter read the state before the holder applied (the holder's rows
/// as they were): once it holds the locks it reads the state again and
/// plans from what the holder wrote. A run reads the state again only when
/// something in it changed since its first read; this is that check
/// finding the change.
#[test]
fn a_waiter_plans_from_what_the_holder_wrote_not_from_its_first_read() {
    let db = test_db();
    let wd = applied_hot(&db);
    let mut holder = holder_awaiting_approval(&db, &wd);
    let waiter = queue_apply(&db, &wd, 2, 1);
    holder.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    assert_ok("the holder", &holder.wait_with_output().unwrap());
    let (stdout, stderr) = assert_ok("the waiter", &waiter.wait_with_output().unwrap());
    assert!(
        stderr.contains(
            "Rows of the cone changed before the locks were taken; planning again on the new state."
        ),
        "{stderr}"
    );
    // Replaced from the holder's value, not from the first apply's.
    assert!(stdout.contains(r#""1" -> "2""#), "{stdout}");
    assert!(!stdout.contains(r#""0" -> "2""#), "{stdout}");
    let stored = db.psql(
        "SELECT attributes->'input'->>'value' FROM instances WHERE address = 'terraform_data.hot'",
    );
    assert_eq!(stored, "2");
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}

#[test]
fn overlapping_applies_are_served_in_the_order_they_asked() {
    let db = test_db();
    let wd = applied_hot(&db);

    // The holder locks `hot` and waits for its approval for as long as
    // the test needs.
    let mut holder = holder_awaiting_approval(&db, &wd);

    // Twelve applies of the same resource arrive one after the other.
    let waiters: Vec<(usize, Child)> = (2..=13)
        .map(|gen| (gen, queue_apply(&db, &wd, gen, gen - 1)))
        .collect();

    // `locks` shows them in arrival order, behind the holder.
    let listed = sg_in(&db, &wd, STATE, &["locks", "--json"]);
    let (stdout, _) = assert_ok("locks --json", &listed);
    let items: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let tickets: Vec<i64> = items
        .iter()
        .filter(|i| i["queued"] == true)
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(tickets.len(), 12, "{stdout}");
    assert!(tickets.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    assert_eq!(
        items.iter().filter(|i| i["queued"] == false).count(),
        1,
        "{stdout}"
    );
    let (table, _) = assert_ok("locks", &sg_in(&db, &wd, STATE, &["locks"]));
    assert!(table.contains("Waiting, served in this order:"), "{table}");

    // A thirteenth waiter interrupted with Ctrl-C gives up its place at once.
    let mut impatient = queue_apply(&db, &wd, 99, 13);
    send_signal(impatient.id(), Signal::SIGINT);
    let out = wait_for(
        "the interrupted apply did not exit",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || impatient.try_wait().unwrap(),
    );
    let stderr = leftover_output(&mut impatient);
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted while waiting for locks: nothing was locked"),
        "{stderr}"
    );
    assert_eq!(queued(&db), 12, "the interrupted apply kept its ticket");

    // The holder applies; the twelve follow, each in its turn.
    holder.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    assert_ok("the holder", &holder.wait_with_output().unwrap());
    for (gen, child) in waiters {
        assert_ok(
            &format!("apply gen={gen}"),
            &child.wait_with_output().unwrap(),
        );
    }
    let order = db.psql(
        "SELECT string_agg(gen, ',' ORDER BY version) FROM (
             SELECT version, row->'attributes'->'input'->>'value' AS gen FROM instance_history
             WHERE address = 'terraform_data.hot'
             UNION ALL
             SELECT version, attributes->'input'->>'value' FROM instances
             WHERE address = 'terraform_data.hot') v",
    );
    assert_eq!(order, "0,1,2,3,4,5,6,7,8,9,10,11,12,13");
    assert_eq!(queued(&db), 0);
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");
}
