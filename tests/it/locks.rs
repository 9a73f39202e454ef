//! Subgraph locks against a real PostgreSQL: compatibility of modes,
//! all-or-nothing, waiting, leases, fencing, force-unlock, and a randomized
//! stress run checking mutual exclusion and freedom from deadlock.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stategraph::db::locks::{LockError, LockMode, LockRequest};
use stategraph::db::pool::PgTarget;
use stategraph::db::store::{Actor, Store};

use crate::common::{test_db, TestDb};

const LEASE: Duration = Duration::from_secs(30);

struct Fixture {
    store: Arc<Store>,
    /// The store's pool, for looking at the tables directly.
    pool: deadpool_postgres::Pool,
    state_id: i64,
    _db: TestDb,
}

/// A fresh database with the schema and one empty state.
async fn fixture(pool_size: usize) -> Fixture {
    let db = test_db();
    let pool = PgTarget::from_url(&db.url)
        .expect("test URL")
        .connect(pool_size)
        .await
        .expect("connect");
    let mut client = pool.get().await.expect("client");
    stategraph::db::migrations::migrate(&mut client)
        .await
        .expect("migrate");
    let state_id: i64 = client
        .query_one(
            "INSERT INTO states (name, lineage, serial, terraform_version)
             VALUES ('prod', 'lineage-1', 1, '1.11.4') RETURNING id",
            &[],
        )
        .await
        .expect("insert state")
        .get(0);
    drop(client);
    Fixture {
        store: Arc::new(Store::new(pool.clone(), db.name.clone())),
        pool,
        state_id,
        _db: db,
    }
}

fn actor(user: &str) -> Actor {
    Actor {
        user: user.to_owned(),
        host: "test-host".to_owned(),
        ci_job: None,
        ..Actor::default()
    }
}

fn addrs(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| (*a).to_owned()).collect()
}

fn request<'a>(
    f: &Fixture,
    actor: &'a Actor,
    exclusive: &'a [String],
    shared: &'a [String],
) -> LockRequest<'a> {
    LockRequest {
        state_id: f.state_id,
        exclusive,
        shared,
        command: "stategraph apply",
        actor,
        lease: LEASE,
        txn_id: None,
    }
}

/// Rows of the `locks` table: (holder, address, mode), sorted.
async fn lock_rows(f: &Fixture) -> Vec<(i64, String, String)> {
    let client = f.pool.get().await.expect("client");
    client
        .query(
            "SELECT holder_id, address, mode FROM locks ORDER BY holder_id, address",
            &[],
        )
        .await
        .expect("query locks")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn expect_conflict(result: Result<impl std::fmt::Debug, LockError>) -> Vec<(i64, Vec<String>)> {
    match result {
        Err(LockError::Conflict(c)) => c
            .iter()
            .map(|c| {
                (
                    c.holder.id,
                    c.addresses.iter().map(|(a, _)| a.clone()).collect(),
                )
            })
            .collect(),
        other => panic!("expected a lock conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_exclusive_sets_both_acquire() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let a = addrs(&["aws_vpc.main", "aws_subnet.a"]);
    let b = addrs(&["aws_subnet.b"]);
    let ha = f
        .store
        .try_lock(&request(&f, &alice, &a, &[]))
        .await
        .unwrap();
    let hb = f.store.try_lock(&request(&f, &bob, &b, &[])).await.unwrap();
    assert_ne!(ha.id, hb.id);
    assert_eq!(ha.user, "alice");
    assert_eq!(ha.state, "prod");
    assert!(ha.lease_expires_at > ha.acquired_at);
    assert_eq!(lock_rows(&f).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_exclusive_conflicts_naming_holder_and_addresses() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let a = addrs(&["aws_vpc.main", "aws_subnet.a", "aws_subnet.b"]);
    let b = addrs(&["aws_subnet.b", "aws_subnet.c", "aws_vpc.main"]);
    let ha = f
        .store
        .try_lock(&request(&f, &alice, &a, &[]))
        .await
        .unwrap();
    let err = f
        .store
        .try_lock(&request(&f, &bob, &b, &[]))
        .await
        .unwrap_err();
    let conflicts = err.conflicts().expect("a conflict").to_vec();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].holder.id, ha.id);
    assert_eq!(conflicts[0].holder.user, "alice");
    assert_eq!(
        conflicts[0].addresses,
        vec![
            ("aws_subnet.b".to_owned(), LockMode::Exclusive),
            ("aws_vpc.main".to_owned(), LockMode::Exclusive),
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with("Error acquiring the state lock"), "{text}");
    assert!(
        text.contains(&format!("  ID:        {}\n", ha.id)),
        "{text}"
    );
    assert!(text.contains("alice@test-host"), "{text}");
    assert!(
        text.contains("aws_subnet.b (exclusive), aws_vpc.main (exclusive)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_locks_are_compatible() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let read = addrs(&["aws_vpc.main", "aws_subnet.a"]);
    f.store
        .try_lock(&request(&f, &alice, &[], &read))
        .await
        .unwrap();
    f.store
        .try_lock(&request(&f, &bob, &[], &read))
        .await
        .unwrap();
    assert_eq!(lock_rows(&f).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_exclusive_conflict_both_ways() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let vpc = addrs(&["aws_vpc.main"]);

    // Shared held, exclusive wanted.
    let reader = f
        .store
        .try_lock(&request(&f, &alice, &[], &vpc))
        .await
        .unwrap();
    let c = expect_conflict(f.store.try_lock(&request(&f, &bob, &vpc, &[])).await);
    assert_eq!(c, vec![(reader.id, vpc.clone())]);
    assert!(f.store.release(reader.id).await.unwrap());

    // Exclusive held, shared wanted.
    let writer = f
        .store
        .try_lock(&request(&f, &alice, &vpc, &[]))
        .await
        .unwrap();
    let c = expect_conflict(f.store.try_lock(&request(&f, &bob, &[], &vpc)).await);
    assert_eq!(c, vec![(writer.id, vpc.clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_conflicting_request_locks_nothing() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let held = f
        .store
        .try_lock(&request(&f, &alice, &addrs(&["z.contested"]), &[]))
        .await
        .unwrap();
    let before = lock_rows(&f).await;
    let free = addrs(&["a.free", "b.free", "z.contested"]);
    let read = addrs(&["c.free"]);
    expect_conflict(f.store.try_lock(&request(&f, &bob, &free, &read)).await);
    assert_eq!(lock_rows(&f).await, before);
    assert_eq!(
        before,
        vec![(held.id, "z.contested".into(), "exclusive".into())]
    );
    let holders = f.store.held_locks(None).await.unwrap();
    assert_eq!(holders.len(), 1, "no holder row left behind: {holders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_frees_at_once() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let x = addrs(&["aws_vpc.main"]);
    let h = f
        .store
        .try_lock(&request(&f, &alice, &x, &[]))
        .await
        .unwrap();
    assert!(f.store.release(h.id).await.unwrap());
    assert!(lock_rows(&f).await.is_empty());
    f.store.try_lock(&request(&f, &bob, &x, &[])).await.unwrap();
    // Releasing twice says the lock was no longer held.
    assert!(!f.store.release(h.id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_succeeds_once_the_holder_releases() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let x = addrs(&["aws_vpc.main", "aws_subnet.a"]);
    let h = f
        .store
        .try_lock(&request(&f, &alice, &x, &[]))
        .await
        .unwrap();
    let store = f.store.clone();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        store.release(h.id).await.unwrap();
    });
    let started = Instant::now();
    let mut seen: Vec<Vec<i64>> = Vec::new();
    let mut on_wait = |c: &[stategraph::db::locks::Conflict]| {
        seen.push(c.iter().map(|c| c.holder.id).collect());
    };
    let got = f
        .store
        .lock(
            &request(&f, &bob, &x, &[]),
            Duration::from_secs(20),
            &mut on_wait,
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    releaser.await.unwrap();
    assert!(
        waited >= Duration::from_millis(700),
        "waited only {waited:?}"
    );
    assert_eq!(got.user, "bob");
    assert_eq!(seen, vec![vec![h.id]], "told once who is in the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_zero_fails_at_once_and_a_timeout_reports_the_wait() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let x = addrs(&["aws_vpc.main"]);
    let h = f
        .store
        .try_lock(&request(&f, &alice, &x, &[]))
        .await
        .unwrap();
    let mut calls = 0;
    let r = f
        .store
        .lock(&request(&f, &bob, &x, &[]), Duration::ZERO, &mut |_| {
            calls += 1
        })
        .await;
    assert_eq!(expect_conflict(r), vec![(h.id, x.clone())]);
    assert_eq!(calls, 0, "no waiting with a zero timeout");

    match f
        .store
        .lock(
            &request(&f, &bob, &x, &[]),
            Duration::from_millis(300),
            &mut |_| {},
        )
        .await
    {
        Err(LockError::Timeout { waited, conflicts }) => {
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
            assert_eq!(conflicts[0].holder.id, h.id);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holder_is_reaped_and_fenced_out() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let x = addrs(&["aws_vpc.main"]);
    let mut req = request(&f, &alice, &x, &[]);
    req.lease = Duration::from_secs(1);
    let dead = f.store.try_lock(&req).await.unwrap();

    // While its lease runs, the fence lets it write.
    {
        let mut client = f.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        Store::check_fence(&tx, dead.id).await.unwrap();
        tx.rollback().await.unwrap();
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listed = f.store.held_locks(Some(f.state_id)).await.unwrap();
    assert!(listed[0].expired, "listed as expired: {listed:?}");

    let next = f.store.try_lock(&request(&f, &bob, &x, &[])).await.unwrap();
    let rows = lock_rows(&f).await;
    assert_eq!(
        rows,
        vec![(next.id, "aws_vpc.main".into(), "exclusive".into())]
    );

    let mut client = f.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    match Store::check_fence(&tx, dead.id).await {
        Err(LockError::LeaseLost { holder_id }) => assert_eq!(holder_id, dead.id),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert!(matches!(
        f.store.renew(dead.id, LEASE).await,
        Err(LockError::LeaseLost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_not_renewed_even_before_it_is_reaped() {
    let f = fixture(4).await;
    let alice = actor("alice");
    let x = addrs(&["aws_vpc.main"]);
    let mut req = request(&f, &alice, &x, &[]);
    req.lease = Duration::from_millis(300);
    let h = f.store.try_lock(&req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        f.store.renew(h.id, LEASE).await,
        Err(LockError::LeaseLost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_short_lease_alive() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let x = addrs(&["aws_vpc.main"]);
    let lease = Duration::from_secs(1);
    let mut req = request(&f, &alice, &x, &[]);
    req.lease = lease;
    let h = f.store.try_lock(&req).await.unwrap();
    let hb = f.store.heartbeat(h.id, lease);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!hb.is_lost());
    expect_conflict(f.store.try_lock(&request(&f, &bob, &x, &[])).await);
    let mut client = f.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    Store::check_fence(&tx, h.id).await.unwrap();
    tx.rollback().await.unwrap();
    hb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_unlock_frees_and_the_holder_learns_it_lost_the_lease() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let x = addrs(&["aws_vpc.main"]);
    let read = addrs(&["aws_subnet.a", "aws_subnet.b"]);
    let lease = Duration::from_millis(600);
    let mut req = request(&f, &alice, &x, &read);
    req.lease = lease;
    let h = f.store.try_lock(&req).await.unwrap();
    let hb = f.store.heartbeat(h.id, lease);
    let mut lost = hb.lost();

    let freed = f.store.force_unlock(h.id).await.unwrap().expect("a holder");
    assert_eq!(freed.holder.id, h.id);
    assert_eq!(freed.count(LockMode::Exclusive), 1);
    assert_eq!(freed.count(LockMode::Shared), 2);
    assert!(lock_rows(&f).await.is_empty());
    assert!(f.store.force_unlock(h.id).await.unwrap().is_none());

    f.store.try_lock(&request(&f, &bob, &x, &[])).await.unwrap();
    assert!(matches!(
        f.store.renew(h.id, lease).await,
        Err(LockError::LeaseLost { holder_id }) if holder_id == h.id
    ));
    tokio::time::timeout(Duration::from_secs(10), lost.wait_for(|l| *l))
        .await
        .expect("the heartbeat notices within its lease")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_adds_and_upgrades_all_or_nothing() {
    let f = fixture(4).await;
    let (alice, bob) = (actor("alice"), actor("bob"));
    let h = f
        .store
        .try_lock(&request(&f, &alice, &addrs(&["a.x"]), &addrs(&["a.y"])))
        .await
        .unwrap();
    let other = f
        .store
        .try_lock(&request(&f, &bob, &[], &addrs(&["a.z"])))
        .await
        .unwrap();
    // a.z is shared by bob: taking it exclusively conflicts, and nothing is added.
    let c = expect_conflict(f.store.extend(h.id, &addrs(&["a.w", "a.z"]), &[]).await);
    assert_eq!(c, vec![(other.id, addrs(&["a.z"]))]);
    f.store
        .extend(h.id, &addrs(&["a.y"]), &addrs(&["a.w", "a.z"]))
        .await
        .unwrap();
    let mine: Vec<(String, String)> = lock_rows(&f)
        .await
        .into_iter()
        .filter(|r| r.0 == h.id)
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(
        mine,
        vec![
            ("a.w".into(), "shared".into()),
            ("a.x".into(), "exclusive".into()),
            ("a.y".into(), "exclusive".into()),
            ("a.z".into(), "shared".into()),
        ]
    );
    f.store.release(h.id).await.unwrap();
    assert!(matches!(
        f.store.extend(h.id, &addrs(&["a.q"]), &[]).await,
        Err(LockError::LeaseLost { .. })
    ));
}

/// A small xorshift generator seeded at random (no extra dependency).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(RandomState::new().build_hasher().finish() | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_random_subsets_keep_mutual_exclusion_without_deadlock() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 20;
    const ADDRESSES: u64 = 30;
    let f = Arc::new(fixture(TASKS * 2 + 2).await);
    // Per address: (exclusive holders, shared holders) as seen by the tasks.
    let held: Arc<Mutex<HashMap<String, (u32, u32)>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let f = f.clone();
        let held = held.clone();
        tasks.push(tokio::spawn(async move {
            let me = actor(&format!("task{t}"));
            let mut rng = Rng::new();
            for _ in 0..ROUNDS {
                let (mut excl, mut shared) = (Vec::new(), Vec::new());
                for _ in 0..1 + rng.below(5) {
                    let a = format!("null_resource.r[{}]", rng.below(ADDRESSES));
                    if rng.below(3) == 0 {
                        excl.push(a);
                    } else {
                        shared.push(a);
                    }
                }
                let req = LockRequest {
                    state_id: f.state_id,
                    exclusive: &excl,
                    shared: &shared,
                    command: "stress",
                    actor: &me,
                    lease: LEASE,
                    txn_id: None,
                };
                let h = f
                    .store
                    .lock(&req, Duration::from_secs(10), &mut |_| {})
                    .await
                    .unwrap_or_else(|e| panic!("task {t} could not lock: {e}"));
                // What this holder effectively has (exclusive wins).
                let mut mine: HashMap<&str, LockMode> = shared
                    .iter()
                    .map(|a| (a.as_str(), LockMode::Shared))
                    .collect();
                mine.extend(excl.iter().map(|a| (a.as_str(), LockMode::Exclusive)));
                {
                    let mut held = held.lock().unwrap();
                    for (a, m) in &mine {
                        let e = held.entry((*a).to_owned()).or_default();
                        match m {
                            LockMode::Exclusive => e.0 += 1,
                            LockMode::Shared => e.1 += 1,
                        }
                        assert!(
                            e.0 == 0 || (e.0 == 1 && e.1 == 0),
                            "{a} held by {} exclusive and {} shared holders",
                            e.0,
                            e.1
                        );
                    }
                }
                let client = f.pool.get().await.unwrap();
                let bad = client
                    .query(
                        "SELECT a.address, a.holder_id, a.mode, b.holder_id, b.mode
                         FROM locks a JOIN locks b
                           ON a.state_id = b.state_id AND a.address = b.address
                          AND a.holder_id < b.holder_id
                         WHERE a.mode = 'exclusive' OR b.mode = 'exclusive'",
                        &[],
                    )
                    .await
                    .unwrap();
                assert!(
                    bad.is_empty(),
                    "incompatible locks held together: {:?}",
                    bad.iter()
                        .map(|r| format!(
                            "{} {}:{} {}:{}",
                            r.get::<_, String>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, String>(2),
                            r.get::<_, i64>(3),
                            r.get::<_, String>(4)
                        ))
                        .collect::<Vec<_>>()
                );
                let own: i64 = client
                    .query_one("SELECT count(*) FROM locks WHERE holder_id = $1", &[&h.id])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(own as usize, mine.len(), "holder {} has all its rows", h.id);
                drop(client);
                tokio::time::sleep(Duration::from_millis(1 + rng.below(5))).await;
                {
                    let mut held = held.lock().unwrap();
                    for (a, m) in &mine {
                        let e = held.get_mut(*a).unwrap();
                        match m {
                            LockMode::Exclusive => e.0 -= 1,
                            LockMode::Shared => e.1 -= 1,
                        }
                    }
                }
                assert!(f.store.release(h.id).await.unwrap());
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("every task finishes (no deadlock)")
            .expect("task did not panic");
    }
    eprintln!(
        "{} acquisitions in {:.2} s",
        TASKS * ROUNDS,
        started.elapsed().as_secs_f64()
    );
    assert!(lock_rows(&f).await.is_empty());
    assert!(f.store.held_locks(None).await.unwrap().is_empty());
}
