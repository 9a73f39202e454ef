//! `Store::merge`: only the write set's rows are written, concurrent disjoint
//! merges keep each other's changes, and a lost lease writes nothing.

use serde_json::{json, Value};
use stategraph::db::pool::PgTarget;
use stategraph::db::store::{Actor, Merge, Store, StoreError};
use stategraph::tfstate::State;

use crate::common::*;

async fn store(db: &TestDb) -> Store {
    let target = PgTarget::from_url(&db.url).unwrap();
    let pool = target.connect(4).await.unwrap();
    Store::new(pool, target.display)
}

fn actor() -> Actor {
    Actor {
        user: "tester".into(),
        host: "here".into(),
        ci_job: None,
        ..Actor::default()
    }
}

/// `after` with the `input` of `address` set to `value`.
fn with_input(state: &State, address: &str, value: &str) -> State {
    let mut s = state.clone();
    for r in &mut s.resources {
        let raddr = r.address();
        for i in &mut r.instances {
            if i.address(&raddr) == address {
                i.attributes.as_mut().unwrap()["input"] = json!({"value": value, "type": "string"});
            }
        }
    }
    s.serial += 1;
    s
}

fn input_of(state: &State, address: &str) -> Value {
    for r in &state.resources {
        let raddr = r.address();
        for i in &r.instances {
            if i.address(&raddr) == address && i.deposed.is_none() {
                return i.attributes.as_ref().unwrap()["input"].clone();
            }
        }
    }
    panic!("{address} not in state")
}

fn merge<'a>(
    before: &'a State,
    after: &'a State,
    write: &'a [String],
    actor: &'a Actor,
) -> Merge<'a> {
    Merge {
        state_name: "m",
        holder_id: None,
        write_set: write,
        before,
        after,
        kind: "apply",
        command: "apply",
        actor,
        cone: json!({"write": write}),
        started_at: None,
        summary: json!({}),
        txn_id: None,
        finish: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_writes_only_the_write_set_and_keeps_concurrent_changes() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "m", &wd.state_path());
    let store = store(&db).await;
    let actor = actor();
    let base = store.pull("m").await.unwrap().unwrap();
    let serial = base.serial;

    let a = r#"module.branch["a"].terraform_data.l2"#.to_string();
    let b = r#"module.branch["b"].terraform_data.l2"#.to_string();
    // Two runs start from the same snapshot and change disjoint rows.
    let after_a = with_input(&base, &a, "from-a");
    let after_b = with_input(&base, &b, "from-b");
    let wa = vec![a.clone()];
    let wb = vec![b.clone()];
    let ra = store
        .merge(&merge(&base, &after_a, &wa, &actor))
        .await
        .unwrap();
    let rb = store
        .merge(&merge(&base, &after_b, &wb, &actor))
        .await
        .unwrap();
    assert_eq!((ra.changed, ra.added, ra.removed), (1, 0, 0));
    assert_eq!((rb.changed, rb.added, rb.removed), (1, 0, 0));

    let now = store.pull("m").await.unwrap().unwrap();
    assert_eq!(input_of(&now, &a)["value"], "from-a", "first merge lost");
    assert_eq!(
        input_of(&now, &b)["value"],
        "from-b",
        "second merge overwrote the first"
    );
    assert_eq!(now.serial, serial + 2, "each merge bumps the serial once");
    assert_eq!(
        db.psql("SELECT string_agg(kind || ':' || status, ',' ORDER BY id) FROM transactions"),
        "push:committed,apply:committed,apply:committed"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM instances WHERE version > 1"),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_outside_the_write_set_is_refused_and_nothing_written() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "m", &wd.state_path());
    let store = store(&db).await;
    let actor = actor();
    let base = store.pull("m").await.unwrap().unwrap();

    let inside = r#"module.branch["a"].terraform_data.l2"#.to_string();
    let after = with_input(
        &with_input(&base, &inside, "ok"),
        "terraform_data.island[0]",
        "sneaky",
    );
    let write = vec![inside.clone()];
    let err = store
        .merge(&merge(&base, &after, &write, &actor))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::OutsideWriteSet { addresses } if addresses == &["terraform_data.island[0]".to_string()]),
        "{err}"
    );
    assert_eq!(
        store.pull("m").await.unwrap().unwrap(),
        base,
        "a refused merge wrote something"
    );
    assert_eq!(db.psql("SELECT count(*) FROM transactions"), "1");

    // Removing an instance of the write set is a write like any other.
    let mut removed = base.clone();
    removed
        .resources
        .iter_mut()
        .find(|r| r.name == "island")
        .unwrap()
        .instances
        .pop();
    let write = vec!["terraform_data.island[1]".to_string()];
    let report = store
        .merge(&merge(&base, &removed, &write, &actor))
        .await
        .unwrap();
    assert_eq!(report.removed, 1);
    assert_eq!(
        db.psql("SELECT count(*) FROM instance_history WHERE removed"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_writes_nothing() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "m", &wd.state_path());
    let store = store(&db).await;
    let actor = actor();
    let base = store.pull("m").await.unwrap().unwrap();
    let a = r#"module.branch["a"].terraform_data.l2"#.to_string();
    let after = with_input(&base, &a, "late");
    let write = vec![a];
    // A holder whose lease has already expired.
    let holder = db.psql(
        "INSERT INTO lock_holders (state_id, actor_user, actor_host, command, lease_expires_at)
         SELECT id, 'x', 'y', 'apply', now() - interval '1 second' FROM states WHERE name = 'm'
         RETURNING id",
    );
    let mut m = merge(&base, &after, &write, &actor);
    m.holder_id = Some(holder.parse().unwrap());
    let err = store.merge(&m).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(store.pull("m").await.unwrap().unwrap(), base);
}
