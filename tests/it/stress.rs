//! Stress: six checkouts apply random, overlapping sets of teams of one
//! 249-instance state, ten times each. Overlapping applies queue on the
//! subgraph locks, disjoint ones run together; afterwards nothing is lost
//! (the last committed writer of every team wins), versions count the
//! transactions that wrote each row, no lock or running transaction is left,
//! and terraform accepts the exported state with no changes.
//!
//! The random choices come from a per-worker xorshift generator; the base
//! seed is printed and can be set with `STATEGRAPH_STRESS_SEED`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const STATE: &str = "teams";
const TEAMS: usize = 8;
const PER_TEAM: usize = 30;
const WORKERS: usize = 6;
const ROUNDS: usize = 10;
const SIZE: [&str; 4] = ["-var", "teams=8", "-var", "per_team=30"];

fn team_names() -> Vec<String> {
    (0..TEAMS)
        .map(|i| char::from(b'a' + i as u8).to_string())
        .collect()
}

/// xorshift64: small, deterministic, good enough to pick subsets.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 1–3 distinct teams, sorted.
fn pick_teams(rng: &mut XorShift, names: &[String]) -> Vec<String> {
    let want = 1 + rng.below(3);
    let mut chosen = BTreeSet::new();
    while chosen.len() < want {
        chosen.insert(names[rng.below(names.len())].clone());
    }
    chosen.into_iter().collect()
}

/// `gen={a="x",b="y"}`.
fn gen_var(gens: &BTreeMap<String, String>) -> String {
    let body: Vec<String> = gens.iter().map(|(t, g)| format!("{t}=\"{g}\"")).collect();
    format!("gen={{{}}}", body.join(","))
}

/// N from `stategraph: transaction N wrote ...`.
fn txn_id(stderr: &str) -> Option<i64> {
    stderr.lines().find_map(|l| {
        let rest = l.split("stategraph: transaction ").nth(1)?;
        let (n, tail) = rest.split_once(' ')?;
        tail.starts_with("wrote").then(|| n.parse().ok())?
    })
}

struct Apply {
    worker: usize,
    round: usize,
    gens: BTreeMap<String, String>,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    start: Instant,
    end: Instant,
    txn: Option<i64>,
}

impl Apply {
    fn committed(&self) -> bool {
        self.status.success() && self.txn.is_some()
    }
    fn duration(&self) -> Duration {
        self.end - self.start
    }
    fn describe(&self) -> String {
        format!(
            "worker {} round {} gens {:?}: {} (txn {:?}) in {:?}\nstdout:\n{}\nstderr:\n{}",
            self.worker,
            self.round,
            self.gens,
            self.status,
            self.txn,
            self.duration(),
            self.stdout,
            self.stderr
        )
    }
}

fn worker(db: &TestDb, w: usize, seed: u64) -> Vec<Apply> {
    let wd = TfWorkdir::from_fixture("teams");
    let names = team_names();
    let mut rng = XorShift::new(seed);
    let mut applies = Vec::with_capacity(ROUNDS);
    for r in 0..ROUNDS {
        let gens: BTreeMap<String, String> = pick_teams(&mut rng, &names)
            .into_iter()
            .map(|t| {
                let g = format!("w{w}r{r}{t}");
                (t, g)
            })
            .collect();
        let gen = gen_var(&gens);
        let targets: Vec<String> = gens
            .keys()
            .map(|t| format!("-target=module.team[\"{t}\"]"))
            .collect();
        let mut args = vec![
            "apply",
            "-auto-approve",
            "-no-color",
            "-lock-timeout=120s",
            "-var",
            &gen,
        ];
        args.extend(SIZE);
        args.extend(targets.iter().map(String::as_str));
        let start = Instant::now();
        let out = sg_in(db, &wd, STATE, &args);
        let end = Instant::now();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        applies.push(Apply {
            worker: w,
            round: r,
            gens,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            txn: txn_id(&stderr),
            stderr,
            start,
            end,
        });
    }
    applies
}

#[test]
fn six_workers_apply_overlapping_teams_and_nothing_is_lost() {
    let db = Arc::new(test_db());
    let first = TfWorkdir::from_fixture("teams");
    let mut args = vec!["apply", "-auto-approve", "-no-color"];
    args.extend(SIZE);
    let out = sg_in(&db, &first, STATE, &args);
    assert_ok("initial apply", &out);
    let initial_txn = txn_id(&String::from_utf8_lossy(&out.stderr))
        .expect("the initial apply printed its transaction");
    assert_eq!(
        db.psql("SELECT count(*) FROM instances"),
        (1 + TEAMS * (1 + PER_TEAM)).to_string()
    );

    let base_seed: u64 = std::env::var("STATEGRAPH_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("stress: base seed {base_seed} (rerun with STATEGRAPH_STRESS_SEED={base_seed})");

    let started = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let db = Arc::clone(&db);
            let seed = base_seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(w as u64 + 1));
            eprintln!("stress: worker {w} seed {seed}");
            thread::spawn(move || worker(&db, w, seed))
        })
        .collect();
    let applies: Vec<Apply> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker panicked"))
        .collect();
    let elapsed = started.elapsed();

    // Figures.
    let ok: Vec<&Apply> = applies.iter().filter(|a| a.committed()).collect();
    let waited = applies
        .iter()
        .filter(|a| a.stderr.contains("Waiting for lock"))
        .count();
    let longest = applies
        .iter()
        .max_by_key(|a| a.duration())
        .expect("some applies");
    let mean = applies.iter().map(Apply::duration).sum::<Duration>() / applies.len() as u32;
    eprintln!(
        "stress: {} applies ({} committed) by {WORKERS} workers in {elapsed:.1?}: {:.1} applies/min",
        applies.len(),
        ok.len(),
        ok.len() as f64 / elapsed.as_secs_f64() * 60.0
    );
    eprintln!(
        "stress: {waited} applies waited for a lock; longest apply {:.1?} (worker {} round {}, {:?}); mean {mean:.1?}",
        longest.duration(),
        longest.worker,
        longest.round,
        longest.gens.keys().collect::<Vec<_>>()
    );

    let mut problems: Vec<String> = Vec::new();

    // Every apply committed; a failure shows its output.
    for a in &applies {
        if !a.committed() {
            let clean = !a.status.success() && a.stderr.to_lowercase().contains("error");
            problems.push(format!(
                "apply did not commit ({}):\n{}",
                if clean {
                    "failed with an error"
                } else {
                    "NO clear error / no transaction id"
                },
                a.describe()
            ));
        }
    }

    // Nothing left locked or running.
    for table in ["lock_holders", "locks"] {
        let n = db.psql(&format!("SELECT count(*) FROM {table}"));
        if n != "0" {
            problems.push(format!(
                "{n} rows left in {table}: {}",
                db.psql(&format!("SELECT to_jsonb(t) FROM {table} t"))
            ));
        }
    }
    let running = db.psql(
        "SELECT coalesce(string_agg(id || ' ' || kind || ' ' || command, E'\\n'), '')
         FROM transactions WHERE status = 'running'",
    );
    if !running.is_empty() {
        problems.push(format!("transactions left running:\n{running}"));
    }

    // Committed transactions are exactly the initial one and the successful applies.
    let committed: BTreeSet<i64> = db
        .psql("SELECT id FROM transactions WHERE kind = 'apply' AND status = 'committed'")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut expected: BTreeSet<i64> = ok.iter().filter_map(|a| a.txn).collect();
    if expected.len() != ok.len() {
        problems.push("two applies printed the same transaction id".to_owned());
    }
    expected.insert(initial_txn);
    if committed != expected {
        problems.push(format!(
            "committed apply transactions {committed:?} != initial + successful applies {expected:?}"
        ));
    }
    let others = db.psql(
        "SELECT coalesce(string_agg(id || ' ' || kind || ' ' || status, ', '), '')
         FROM transactions WHERE NOT (kind = 'apply' AND status = 'committed')",
    );
    eprintln!(
        "stress: the initial apply (txn {initial_txn}) has {} addresses in its write set",
        db.psql(&format!(
            "SELECT jsonb_array_length(cone->'write') FROM transactions WHERE id = {initial_txn}"
        ))
    );
    eprintln!(
        "stress: other transactions: {}",
        if others.is_empty() { "none" } else { &others }
    );

    // What each committed transaction set each team's gen to.
    let names = team_names();
    let mut by_txn: BTreeMap<i64, &BTreeMap<String, String>> = BTreeMap::new();
    for a in &ok {
        by_txn.insert(a.txn.unwrap(), &a.gens);
    }
    let initial_gens: BTreeMap<String, String> =
        names.iter().map(|t| (t.clone(), "1".to_owned())).collect();
    by_txn.insert(initial_txn, &initial_gens);

    // Each base: gen of the writer recorded in txn_id; version = 1 + writers.
    let rows = db.psql(&format!(
        "SELECT i.address, i.attributes->'input'->'value'->>'gen', i.txn_id, i.version,
                (SELECT count(*) FROM transactions t
                 WHERE t.state_id = i.state_id AND t.status = 'committed'
                   AND t.id <> {initial_txn} AND t.cone->'write' ? i.address),
                (SELECT count(*) FROM transactions t
                 WHERE t.state_id = i.state_id AND t.status = 'committed'
                   AND t.cone->'write' ? i.address)
         FROM instances i WHERE i.name = 'base' AND i.deposed = '' ORDER BY i.address"
    ));
    let mut final_gens: BTreeMap<String, String> = BTreeMap::new();
    let mut writes_per_team: BTreeMap<String, usize> = BTreeMap::new();
    for a in &ok {
        for t in a.gens.keys() {
            *writes_per_team.entry(t.clone()).or_default() += 1;
        }
    }
    for line in rows.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let [address, gen, txn, version, writers_after_initial, writers_all] = f[..] else {
            panic!("unexpected row {line}");
        };
        let team = address
            .strip_prefix("module.team[\"")
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("unexpected base address {address}"))
            .to_owned();
        let txn: i64 = txn.parse().unwrap();
        let version: i64 = version.parse().unwrap();
        let writers: i64 = writers_after_initial.parse().unwrap();
        match by_txn.get(&txn).and_then(|g| g.get(&team)) {
            Some(want) if want == gen => {}
            other => problems.push(format!(
                "{address}: gen {gen:?} written by txn {txn}, whose apply chose {other:?} \
                 (lost update?)"
            )),
        }
        if version != 1 + writers {
            problems.push(format!(
                "{address}: version {version} != 1 + {writers} committed transactions writing it \
                 after the initial one ({writers_all} counting the initial apply)"
            ));
        }
        let applied = writes_per_team.get(&team).copied().unwrap_or(0) as i64;
        if writers != applied {
            problems.push(format!(
                "{address}: {writers} committed transactions have it in their write set, \
                 but {applied} successful applies chose team {team}"
            ));
        }
        final_gens.insert(team, gen.to_owned());
    }
    if final_gens.len() != TEAMS {
        problems.push(format!("base rows for {final_gens:?}, want {TEAMS} teams"));
    }

    // Services are written together with their base.
    let split = db.psql(
        "SELECT coalesce(string_agg(s.address || ' txn ' || s.txn_id || ' base txn ' || b.txn_id, E'\\n'), '')
         FROM instances s JOIN instances b
           ON b.state_id = s.state_id AND b.module = s.module AND b.name = 'base' AND b.deposed = ''
         WHERE s.name = 'service' AND s.txn_id <> b.txn_id",
    );
    if !split.is_empty() {
        problems.push(format!("services not written with their base:\n{split}"));
    }
    let counts =
        db.psql("SELECT count(*) || ' ' || count(*) FILTER (WHERE deposed <> '') FROM instances");
    let want_counts = format!("{} 0", 1 + TEAMS * (1 + PER_TEAM));
    if counts != want_counts {
        problems.push(format!(
            "instances (total, deposed) = {counts}, want {want_counts}"
        ));
    }

    // Terraform accepts the exported state with the final gens, no changes.
    let check = TfWorkdir::from_fixture("teams");
    let pulled = stategraph(&db)
        .args(["--state", STATE, "state", "pull"])
        .output()
        .unwrap();
    assert_ok("state pull", &pulled);
    std::fs::write(check.state_path(), &pulled.stdout).unwrap();
    check.terraform(&["init", "-no-color"]);
    let gen = gen_var(&final_gens);
    let mut plan = vec!["plan", "-detailed-exitcode", "-no-color", "-var", &gen];
    plan.extend(SIZE);
    let plan = check.terraform_allow_fail(&plan);
    if plan.status.code() != Some(0) {
        problems.push(format!(
            "terraform plan of the exported state with {gen} exited {}:\n{}\n{}",
            plan.status,
            String::from_utf8_lossy(&plan.stdout),
            String::from_utf8_lossy(&plan.stderr)
        ));
    }

    eprintln!(
        "stress: final gens {final_gens:?}; checks took {:.1?}",
        started.elapsed() - elapsed
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}
