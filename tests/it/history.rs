//! What a write leaves behind (issue 14): row versions stay above their
//! history whatever the sequence of pushes, forced pushes and merges (a
//! destroyed state pushed back and destroyed again included), values
//! PostgreSQL's `jsonb` cannot hold (U+0000) are stored and read back
//! unchanged, and a result the database refuses to write stays in the
//! transaction log as `failed`, naming its recovery file and what was not
//! written.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Value};
use stategraph::db::pool::PgTarget;
use stategraph::db::store::{Actor, Begin, Merge, Store};
use stategraph::tfstate::{self, State};

use crate::common::*;

/// SQL counting the rows of the state named by the SQL expression `name`
/// whose version is not above every version of them in the history
/// (instances and outputs): the next write of such a row collides with the
/// history's primary key. Must be 0.
fn behind_history(name: &str) -> String {
    format!(
        "SELECT
           (SELECT count(*) FROM instances c JOIN instance_history h
              ON h.state_id = c.state_id AND h.address = c.address AND h.deposed = c.deposed
            WHERE c.state_id = (SELECT id FROM states WHERE name = {name})
              AND h.version >= c.version)
         + (SELECT count(*) FROM outputs o JOIN output_history h
              ON h.state_id = o.state_id AND h.name = o.name
            WHERE o.state_id = (SELECT id FROM states WHERE name = {name})
              AND h.version >= o.version)"
    )
}

// ---------------------------------------------------------------------------
// History after a restore
// ---------------------------------------------------------------------------

#[test]
fn a_destroyed_state_pushed_back_is_destroyed_again() {
    let db = test_db();
    let wd = TfWorkdir::from_fixture("slow_chain");
    let sg = |args: &[&str]| sg_in(&db, &wd, "h", args);
    assert_ok("apply", &sg(&["apply", "-auto-approve", "-no-color"]));

    // state pull > b; destroy; state push -force b; destroy
    let (backup, _) = assert_ok("state pull", &sg(&["state", "pull"]));
    let b = wd.write_file("b.tfstate", &backup);
    assert_ok("destroy", &sg(&["destroy", "-auto-approve", "-no-color"]));
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "0");
    assert_ok(
        "state push -force of the backup",
        &sg(&["state", "push", "-force", b.to_str().unwrap()]),
    );
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "3");
    // The push used to copy the rows in at version 1, which the history
    // holds already (the first destroy put them there): the next write of
    // any of them failed with `duplicate key value violates unique
    // constraint "instance_history_pkey"`.
    assert_eq!(db.psql(&behind_history("'h'")), "0");
    let out = sg(&["destroy", "-auto-approve", "-no-color"]);
    let (_, stderr) = assert_ok("the second destroy", &out);
    assert!(!stderr.contains("duplicate key"), "{stderr}");
    assert_eq!(db.psql("SELECT count(*) FROM instances"), "0");
    assert_eq!(
        db.psql(
            "SELECT string_agg(DISTINCT versions, ',') FROM (
               SELECT address, string_agg(version::text, ' ' ORDER BY version) AS versions
               FROM instance_history GROUP BY address) v"
        ),
        "1 2",
        "each address's history: its first life, then its restored one"
    );
}

/// The addresses of the property test: `terraform_data.r0` ... `r3`.
const ADDRESSES: usize = 4;

/// A state's objects: address index -> generation of its content.
type Objects = BTreeMap<usize, u8>;

/// One write of a sequence.
#[derive(Debug, Clone)]
enum Write {
    /// `state push`: this state's lineage, the next serial.
    Push(Objects),
    /// `state push -force`: perhaps another lineage, perhaps an older serial.
    ForcePush {
        objects: Objects,
        new_lineage: bool,
        older: bool,
    },
    /// A run's merge of `write` (what it applied), after `checkpoints`
    /// checkpoint merges in its own transaction (each with other contents
    /// for the whole write set); without checkpoints, a merge of its own.
    Merge {
        objects: Objects,
        write: BTreeSet<usize>,
        checkpoints: u8,
    },
}

fn objects() -> impl Strategy<Value = Objects> {
    prop::collection::btree_map(0..ADDRESSES, 0u8..3, 0..=ADDRESSES)
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        objects().prop_map(Write::Push),
        (objects(), any::<bool>(), any::<bool>()).prop_map(|(objects, new_lineage, older)| {
            Write::ForcePush {
                objects,
                new_lineage,
                older,
            }
        }),
        (
            objects(),
            prop::collection::btree_set(0..ADDRESSES, 1..=ADDRESSES),
            0u8..3
        )
            .prop_map(|(objects, write, checkpoints)| Write::Merge {
                objects,
                write,
                checkpoints
            }),
    ]
}

fn address(i: usize) -> String {
    format!("terraform_data.r{i}")
}

/// A state holding `objects` (one `terraform_data` each) and, when it holds
/// any, an output counting them.
fn state_of(lineage: &str, serial: i64, objects: &Objects) -> State {
    let resources: Vec<Value> = objects
        .iter()
        .map(|(i, gen)| {
            json!({
                "mode": "managed",
                "type": "terraform_data",
                "name": format!("r{i}"),
                "provider": "provider[\"terraform.io/builtin/terraform\"]",
                "instances": [{
                    "schema_version": 0,
                    "attributes": {
                        "id": format!("id-{i}-{gen}"),
                        "input": {"value": format!("gen {gen}"), "type": "string"},
                        "output": {"value": format!("gen {gen}"), "type": "string"},
                        "triggers_replace": null
                    },
                    "sensitive_attributes": []
                }]
            })
        })
        .collect();
    let outputs = match objects.len() {
        0 => json!({}),
        n => json!({"count": {"value": n, "type": "number"}}),
    };
    let doc = json!({
        "version": 4,
        "terraform_version": "1.11.4",
        "serial": serial,
        "lineage": lineage,
        "outputs": outputs,
        "resources": resources,
        "check_results": null
    });
    tfstate::parse(doc.to_string().as_bytes()).expect("a valid state")
}

/// Address -> input of every object of `state`.
fn contents(state: &State) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in &state.resources {
        let raddr = r.address();
        for i in &r.instances {
            let input = &i.attributes.as_ref().unwrap()["input"]["value"];
            out.insert(i.address(&raddr), input.as_str().unwrap().to_owned());
        }
    }
    out
}

fn expected(objects: &Objects) -> BTreeMap<String, String> {
    objects
        .iter()
        .map(|(i, gen)| (address(*i), format!("gen {gen}")))
        .collect()
}

/// What every merge of one run shares.
struct Run<'a> {
    name: &'a str,
    write_set: &'a [String],
    before: &'a State,
    actor: &'a Actor,
}

impl<'a> Run<'a> {
    /// The merge of `after` (in the run's transaction `txn_id`, fenced by
    /// `holder_id`, when given); `finish`: the final one.
    fn merge(
        &self,
        after: &'a State,
        txn_id: Option<i64>,
        holder_id: Option<i64>,
        finish: bool,
    ) -> Merge<'a> {
        Merge {
            state_name: self.name,
            holder_id,
            write_set: self.write_set,
            before: self.before,
            after,
            kind: "apply",
            command: "apply",
            actor: self.actor,
            cone: json!({"write": self.write_set}),
            started_at: None,
            summary: json!({}),
            txn_id,
            finish,
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what} failed: {e}"))
}

/// Runs one sequence of writes on the new state `name`, checking after
/// each that it succeeded, that the stored state holds what was written,
/// and that no row is behind its history.
async fn check_sequence(
    store: &Store,
    pool: &deadpool_postgres::Pool,
    name: &str,
    first: &Objects,
    writes: &[Write],
) -> Result<(), TestCaseError> {
    let actor = Actor {
        user: "tester".into(),
        host: "here".into(),
        ci_job: None,
        ..Actor::default()
    };
    let mut lineages = 0;
    let mut new_lineage = || {
        lineages += 1;
        format!("{name}-lineage-{lineages}")
    };
    let mut model = first.clone();
    let lineage = new_lineage();
    store
        .push(name, &state_of(&lineage, 1, first), false, &actor, "push")
        .await
        .map_err(|e| fail("the first push", e))?;
    let client = pool.get().await.map_err(|e| fail("a connection", e))?;
    for (n, w) in writes.iter().enumerate() {
        let stored = store
            .pull(name)
            .await
            .map_err(|e| fail("pull", e))?
            .expect("the state exists");
        let what = format!("write {n} ({w:?})");
        match w {
            Write::Push(objects) => {
                let state = state_of(&stored.lineage, stored.serial + 1, objects);
                store
                    .push(name, &state, false, &actor, "state push")
                    .await
                    .map_err(|e| fail(&what, e))?;
                model = objects.clone();
            }
            Write::ForcePush {
                objects,
                new_lineage: another,
                older,
            } => {
                let lineage = match another {
                    true => new_lineage(),
                    false => stored.lineage.clone(),
                };
                let serial = match older {
                    true => (stored.serial - 1).max(0),
                    false => stored.serial + 1,
                };
                let state = state_of(&lineage, serial, objects);
                store
                    .push(name, &state, true, &actor, "state push -force")
                    .await
                    .map_err(|e| fail(&what, e))?;
                model = objects.clone();
            }
            Write::Merge {
                objects,
                write,
                checkpoints,
            } => {
                let write_set: Vec<String> = write.iter().map(|i| address(*i)).collect();
                let mut after = model.clone();
                for i in write {
                    match objects.get(i) {
                        Some(gen) => after.insert(*i, *gen),
                        None => after.remove(i),
                    };
                }
                let run = Run {
                    name,
                    write_set: &write_set,
                    before: &stored,
                    actor: &actor,
                };
                let last = state_of(&stored.lineage, stored.serial + 1, &after);
                if *checkpoints == 0 {
                    store
                        .merge(&run.merge(&last, None, None, true))
                        .await
                        .map_err(|e| fail(&what, e))?;
                } else {
                    // A run holding its locks: its transaction, checkpoints
                    // (every address of the write set at a generation of
                    // its own), then the final merge.
                    let holder: i64 = client
                        .query_one(
                            "INSERT INTO lock_holders (state_id, actor_user, actor_host, command,
                                                       lease_expires_at)
                             SELECT id, 'tester', 'here', 'apply', now() + interval '1 hour'
                             FROM states WHERE name = $1 RETURNING id",
                            &[&name],
                        )
                        .await
                        .map_err(|e| fail("a lock holder", e))?
                        .get(0);
                    let txn_id = store
                        .begin(&Begin {
                            state_name: name,
                            holder_id: holder,
                            kind: "apply",
                            command: "apply",
                            actor: &actor,
                            cone: json!({"write": write_set}),
                            summary: json!({}),
                        })
                        .await
                        .map_err(|e| fail(&what, e))?;
                    for k in 0..*checkpoints {
                        let mut during = model.clone();
                        for i in write {
                            during.insert(*i, 10 + k);
                        }
                        let state = state_of(&stored.lineage, stored.serial + 1, &during);
                        store
                            .merge(&run.merge(&state, Some(txn_id), Some(holder), false))
                            .await
                            .map_err(|e| fail(&format!("checkpoint {k} of {what}"), e))?;
                    }
                    store
                        .merge(&run.merge(&last, Some(txn_id), Some(holder), true))
                        .await
                        .map_err(|e| fail(&what, e))?;
                    client
                        .execute("DELETE FROM lock_holders WHERE id = $1", &[&holder])
                        .await
                        .map_err(|e| fail("releasing the holder", e))?;
                }
                model = after;
            }
        }
        let now = store
            .pull(name)
            .await
            .map_err(|e| fail("pull", e))?
            .expect("the state exists");
        prop_assert_eq!(contents(&now), expected(&model), "after {}", what);
        let behind: i64 = client
            .query_one(&behind_history("$1"), &[&name])
            .await
            .map_err(|e| fail("the history check", e))?
            .get(0);
        prop_assert_eq!(behind, 0, "rows behind their history after {}", what);
    }
    Ok(())
}

#[test]
fn no_sequence_of_pushes_and_merges_collides_with_the_history() {
    let db = test_db();
    sg_ok(&db, &["--state", "none", "log"]); // creates the schema
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, pool) = rt.block_on(async {
        let target = PgTarget::from_url(&db.url).unwrap();
        let pool = target.connect(4).await.unwrap();
        (Store::new(pool.clone(), target.display), pool)
    });
    // ~20 cases (a few seconds); PROPTEST_CASES searches longer.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = Cell::new(0);
    let result = runner.run(
        &(objects(), prop::collection::vec(write(), 1..8)),
        |(first, writes)| {
            // Every case (shrinking included) on a state of its own.
            case.set(case.get() + 1);
            let name = format!("seq{}", case.get());
            rt.block_on(check_sequence(&store, &pool, &name, &first, &writes))
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Values jsonb cannot hold
// ---------------------------------------------------------------------------

#[test]
fn strings_holding_nul_are_pushed_and_pulled_back_unchanged() {
    let db = test_db();
    // U+0000 in attribute values and keys, in outputs, next to U+E000 (the
    // escape character) and to text that only looks like an escape.
    let doc = json!({
        "version": 4,
        "terraform_version": "1.11.4",
        "serial": 3,
        "lineage": "0c0c0c0c-0000-4000-8000-000000000000",
        "outputs": {
            "nul": {"value": "x\u{0}y", "type": "string"},
            "tricky": {
                "value": {"k\u{0}ey": "\u{E000}0", "\u{E000}": "\\u0000", "plain": "p"},
                "type": ["map", "string"]
            }
        },
        "resources": [{
            "mode": "managed",
            "type": "terraform_data",
            "name": "nul",
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{
                "schema_version": 0,
                "attributes": {
                    "id": "i\u{0}d",
                    "input": {
                        "value": {"a\u{0}b": ["\u{0}", "\u{E000}", "\u{E000}\u{E000}0", "\u{0}\u{0}"]},
                        "type": ["map", ["list", "string"]]
                    },
                    "output": {"value": "\u{0}", "type": "string"},
                    "triggers_replace": null
                },
                "sensitive_attributes": []
            }]
        }],
        "check_results": null
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nul.tfstate");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    assert!(std::fs::read_to_string(&file).unwrap().contains("\\u0000"));

    // jsonb refuses U+0000 ("unsupported Unicode escape sequence"): such a
    // push used to fail, and a run's write of such a value to leave its
    // result in a recovery file.
    push(&db, "nul", &file);
    let pulled: Value = serde_json::from_str(&sg_ok(&db, &["--state", "nul", "state", "pull"]))
        .expect("the pulled state is JSON");
    assert_eq!(pulled, doc, "the state pulled back differs");

    // Pushed again, nothing differs (the stored form compares equal).
    push(&db, "nul", &file);
    assert_eq!(
        db.psql(
            "SELECT (summary->>'added') || (summary->>'changed') || (summary->>'removed')
                    || (summary->>'outputs_changed')
             FROM transactions ORDER BY id DESC LIMIT 1"
        ),
        "0000"
    );
    assert_eq!(db.psql("SELECT count(*) FROM transactions"), "2");
}

#[test]
fn an_applied_nul_is_recorded_and_the_next_plan_finds_no_changes() {
    let db = test_db();
    let wd = TfWorkdir::empty();
    wd.write_file(
        "main.tf",
        r#"variable "gen" {
  type    = string
  default = "1"
}

resource "terraform_data" "nul" {
  input = "a${"\u0000"}b${var.gen}"
}

output "nul" {
  value = terraform_data.nul.output
}
"#,
    );
    for gen in ["1", "2"] {
        let var = format!("gen={gen}");
        let out = sg_in(
            &db,
            &wd,
            "nul",
            &["apply", "-auto-approve", "-no-color", "-var", &var],
        );
        let (_, stderr) = assert_ok(&format!("apply at gen {gen}"), &out);
        assert!(!stderr.contains("recover"), "{stderr}");
        let out = sg_in(
            &db,
            &wd,
            "nul",
            &["plan", "-detailed-exitcode", "-no-color", "-var", &var],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "the plan after the apply at gen {gen} finds changes:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let pulled: Value =
            serde_json::from_str(&sg_ok(&db, &["--state", "nul", "state", "pull"])).unwrap();
        let value = format!("a\u{0}b{gen}");
        assert_eq!(
            pulled["resources"][0]["instances"][0]["attributes"]["input"]["value"],
            value.as_str()
        );
        assert_eq!(pulled["outputs"]["nul"]["value"], value.as_str());
    }
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE status <> 'committed'"),
        "0"
    );
}

// ---------------------------------------------------------------------------
// A failed write is never invisible
// ---------------------------------------------------------------------------

#[test]
fn a_write_the_database_refuses_stays_in_the_log_as_failed() {
    let db = test_db();
    let chain = SlowChain::new(&db);
    assert_ok("apply of gen 1", &chain.apply_gen1().output().unwrap());
    // The database stays reachable and refuses the run's write of `first`.
    refuse_row_writes(&db, "terraform_data.first");
    let out = chain.apply_gen2(&[], 0).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the apply succeeded:\n{stderr}");
    let kept = recovery_files(&chain.wd.path().join(".terraform/stategraph/recovery"));
    assert_eq!(kept.len(), 1, "{kept:?}\n{stderr}");
    let file = kept[0].display().to_string();
    assert!(
        stderr.contains("writes of terraform_data.first are refused"),
        "the cause is not said:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("stategraph recover {file}")),
        "{stderr}"
    );
    // The advice used to be the outage's whatever the cause.
    assert!(
        !stderr
            .to_lowercase()
            .contains("once the database is reachable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reachable but refused the write"),
        "{stderr}"
    );
    assert_eq!(chain.gen("first"), "1", "a refused write was written");

    // The run's transaction used to stay `running` until its lease ran
    // out (then `aborted`): nothing in the log said what terraform had
    // changed nor where its result was.
    let log = chain.sg(&["log", "--json"]).output().unwrap();
    let (log, _) = assert_ok("log --json", &log);
    let log: Value = serde_json::from_str(&log).unwrap();
    let failed: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{log:#}");
    let entry = failed[0];
    assert_eq!(entry["kind"], "apply", "{entry:#}");
    let summary = &entry["summary"];
    assert_eq!(summary["recovery_file"], file.as_str(), "{entry:#}");
    let mut not_written: Vec<&str> = summary["not_written"]["changed"]
        .as_array()
        .unwrap_or_else(|| panic!("no not_written.changed: {entry:#}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    not_written.sort();
    assert_eq!(
        not_written,
        ["terraform_data.first", "terraform_data.second"],
        "{entry:#}"
    );
    // Why it failed, as the log and the recovery file keep it (checked last).
    let logged_cause = summary["failed"].as_str().unwrap_or_default().to_owned();
    let kept_cause = crate::common::terraform::read_json(&kept[0])["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        db.psql("SELECT count(*) FROM transactions WHERE status = 'running'"),
        "0"
    );
    assert_eq!(db.psql("SELECT count(*) FROM lock_holders"), "0");

    // Once the cause is gone, the recovery file finishes the job.
    allow_row_writes(&db);
    let out = chain.sg(&["recover", &file]).output().unwrap();
    assert_ok("recover", &out);
    assert_eq!(chain.gen("first"), "2");
    assert_no_changes(&chain.plan_gen2().output().unwrap());

    // The log and the recovery file say why the write failed in
    // PostgreSQL's words, as stderr did, not only "database error: db
    // error" (tokio_postgres's text for every error the server reports).
    for (what, cause) in [
        ("the log", &logged_cause),
        ("the recovery file", &kept_cause),
    ] {
        assert!(
            cause.contains("writes of terraform_data.first are refused"),
            "{what} does not say why the write failed: {cause:?}"
        );
    }
}
