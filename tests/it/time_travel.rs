//! History and time travel (issue 18, point 3): `stategraph history ADDR`
//! lists each version of an instance with its transaction and attribute
//! diff (sensitive values masked), and `state pull --at TXN|TIME` rebuilds
//! the state as it was, valid for terraform and ready for `state push
//! -force` (the README's restore path), on three generations applied by
//! the real terraform.

use serde_json::{json, Value};

use crate::common::*;

const CONFIG: &str = r#"
variable "gen" {
  type = string
}

resource "terraform_data" "a" {
  input = { gen = var.gen, secret = sensitive("pw-${var.gen}") }
}

resource "terraform_data" "b" {
  input = "b-${terraform_data.a.id}"
}

output "gen" {
  value = var.gen
}
"#;

/// Three applies (gen 1, 2, 3) of [`CONFIG`] into state `tt`: the workdir,
/// what `state pull` printed after the first, and the three transactions.
fn three_generations(db: &TestDb) -> (TfWorkdir, String, Vec<i64>) {
    let wd = TfWorkdir::empty();
    wd.write_file("main.tf", CONFIG);
    let mut first_pull = String::new();
    for gen in 1..=3 {
        let var = format!("-var=gen={gen}");
        assert_ok(
            &format!("apply of gen {gen}"),
            &sg_in(
                db,
                &wd,
                "tt",
                &["apply", "-auto-approve", "-no-color", &var],
            ),
        );
        if gen == 1 {
            first_pull = assert_ok("state pull", &sg_in(db, &wd, "tt", &["state", "pull"])).0;
        }
    }
    let txns = db
        .psql("SELECT string_agg(id::text, ' ' ORDER BY id) FROM transactions WHERE kind = 'apply'")
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect::<Vec<i64>>();
    assert_eq!(txns.len(), 3, "one transaction per apply: {txns:?}");
    (wd, first_pull, txns)
}

/// The change of `path` in a `history --json` version.
fn change<'v>(version: &'v Value, path: &str) -> Option<&'v Value> {
    version["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == path)
}

#[test]
fn history_shows_each_version_with_its_transaction_and_diff() {
    let db = test_db();
    let (wd, _, txns) = three_generations(&db);
    let (stdout, _) = assert_ok(
        "history --json",
        &sg_in(&db, &wd, "tt", &["history", "-json", "terraform_data.a"]),
    );
    let versions: Value = serde_json::from_str(&stdout).unwrap();
    let versions = versions.as_array().unwrap();
    // terraform marks input.secret sensitive (terraform_data's output, a
    // copy of the input, it does not mark: that is printed as terraform
    // prints it).
    for v in versions {
        for c in v["changes"].as_array().unwrap() {
            if c["path"].as_str().unwrap().starts_with("input") {
                assert!(
                    !c.to_string().contains("pw-"),
                    "a sensitive value was printed: {c}"
                );
            }
        }
    }
    assert_eq!(versions.len(), 3, "{stdout}");
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(v["transaction"], json!(txns[i]), "{v}");
        assert_eq!(v["kind"], json!("apply"));
        assert!(
            v["command"]
                .as_str()
                .unwrap()
                .contains("apply -auto-approve"),
            "{v}"
        );
        assert_eq!(
            v["superseded_by"],
            txns.get(i + 1).map_or(Value::Null, |t| json!(t)),
            "{v}"
        );
    }
    // The first version: every attribute added.
    let gen = change(&versions[0], "input.value.gen").expect("gen in the first version");
    assert_eq!((&gen["before"], &gen["after"]), (&Value::Null, &json!("1")));
    assert!(change(&versions[0], "id").is_some(), "{}", versions[0]);
    // Then each generation's change, the secret masked on both sides.
    for (i, (old, new)) in [("1", "2"), ("2", "3")].into_iter().enumerate() {
        let v = &versions[i + 1];
        let gen = change(v, "input.value.gen").expect("gen changed");
        assert_eq!((&gen["before"], &gen["after"]), (&json!(old), &json!(new)));
        let secret = change(v, "input.value.secret").expect("the secret changed");
        assert_eq!(secret["before"], json!("(sensitive value)"));
        assert_eq!(secret["after"], json!("(sensitive value)"));
        assert!(change(v, "triggers_replace").is_none(), "{v}");
    }

    let (table, _) = assert_ok(
        "history",
        &sg_in(&db, &wd, "tt", &["history", "terraform_data.a"]),
    );
    assert!(
        !table
            .lines()
            .any(|l| l.contains("input") && l.contains("pw-")),
        "{table}"
    );
    assert!(
        table.contains(&format!("version 3  transaction {}", txns[2]))
            && table.contains("~ input.value.gen: \"2\" -> \"3\"")
            && table
                .contains("~ input.value.secret: \"(sensitive value)\" -> \"(sensitive value)\""),
        "{table}"
    );

    // The history view of `stategraph query` holds the same versions.
    let (csv, _) = assert_ok(
        "query",
        &sg_in(
            &db,
            &wd,
            "tt",
            &[
                "query",
                "-csv",
                "SELECT version, written_by FROM history \
                 WHERE address = 'terraform_data.a' ORDER BY written_by",
            ],
        ),
    );
    let expected: String = versions
        .iter()
        .map(|v| format!("{},{}\n", v["version"], v["transaction"]))
        .collect();
    assert_eq!(csv, format!("version,written_by\n{expected}"));

    let out = sg_in(&db, &wd, "tt", &["history", "terraform_data.nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has never held terraform_data.nope"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pull_at_rebuilds_the_state_of_a_transaction_and_restores_it() {
    let db = test_db();
    let (wd, first_pull, txns) = three_generations(&db);
    let pull_at = |at: &str| {
        assert_ok(
            &format!("state pull --at {at}"),
            &sg_in(&db, &wd, "tt", &["state", "pull", "-at", at]),
        )
        .0
    };

    // After the first apply, byte for byte.
    let at_first = pull_at(&txns[0].to_string());
    assert_eq!(at_first, first_pull);
    // At the latest transaction: plain `state pull`.
    let now = assert_ok("state pull", &sg_in(&db, &wd, "tt", &["state", "pull"])).0;
    assert_eq!(pull_at(&txns[2].to_string()), now);
    assert_ne!(at_first, now);

    // Valid for terraform.
    let file = wd.write_file("at-first.tfstate", &at_first);
    let shown = wd.show_json(&file);
    assert_eq!(
        shown["values"]["root_module"]["resources"][0]["values"]["input"]["gen"],
        json!("1"),
        "{shown}"
    );

    // By time: the second transaction's commit time is the second generation.
    let finished = db.psql(&format!(
        "SELECT to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
         FROM transactions WHERE id = {}",
        txns[1]
    ));
    let at_time: Value = serde_json::from_str(&pull_at(&finished)).unwrap();
    assert_eq!(
        at_time["resources"][0]["instances"][0]["attributes"]["input"]["value"]["gen"],
        json!("2"),
        "{at_time}"
    );

    // Nothing that is not one of the state's transactions or a time.
    for (at, says) in [
        ("999999", "transaction 999999 is not one of state \"tt\"'s"),
        ("yesterday", "neither a transaction ID nor a time"),
        ("2000-01-01 00:00:00", "had no committed transaction at"),
    ] {
        let out = sg_in(&db, &wd, "tt", &["state", "pull", "-at", at]);
        assert_eq!(out.status.code(), Some(1), "{at}");
        assert!(
            text(&out.stderr).contains(says),
            "{at}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }

    // The README's restore path: pull --at, then state push -force.
    assert_ok(
        "state push -force",
        &sg_in(
            &db,
            &wd,
            "tt",
            &["state", "push", "-force", "at-first.tfstate"],
        ),
    );
    let restored = wd.write_file(
        "restored.tfstate",
        &assert_ok("state pull", &sg_in(&db, &wd, "tt", &["state", "pull"])).0,
    );
    assert_eq!(wd.show_json(&restored), shown);
    let plan = sg_in(
        &db,
        &wd,
        "tt",
        &["plan", "-detailed-exitcode", "-no-color", "-var=gen=1"],
    );
    assert_eq!(
        plan.status.code(),
        Some(0),
        "the restored state is generation 1 again:\n{}\n{}",
        text(&plan.stdout),
        text(&plan.stderr)
    );
}

/// A hand-written state of serial `serial` with one `terraform_data` whose
/// input is `gen` and the given outputs (JSON object members).
fn pushed_state(serial: u32, gen: &str, outputs: &str) -> String {
    format!(
        r#"{{ "version": 4, "terraform_version": "1.11.4", "serial": {serial},
          "lineage": "5b1c9a4e-time-travel", "outputs": {{ {outputs} }},
          "resources": [{{ "mode": "managed", "type": "terraform_data", "name": "a",
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{{ "schema_version": 0, "sensitive_attributes": [],
              "attributes": {{ "id": "a", "input": {{ "value": "{gen}", "type": "string" }},
                "output": {{ "value": "{gen}", "type": "string" }}, "triggers_replace": null }} }}] }}],
          "check_results": null }}"#
    )
}

#[test]
fn pull_at_brings_back_outputs_changed_and_removed_since() {
    let db = test_db();
    let dir = tempfile::tempdir().unwrap();
    let states = [
        pushed_state(
            1,
            "1",
            r#""gen": { "value": "1", "type": "string" },
               "token": { "value": "t-1", "type": "string", "sensitive": true }"#,
        ),
        pushed_state(2, "2", r#""gen": { "value": "2", "type": "string" }"#),
    ];
    let mut pulled = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let path = dir.path().join(format!("{i}.tfstate"));
        std::fs::write(&path, state).unwrap();
        push(&db, "pushed", &path);
        pulled.push(sg_ok(&db, &["--state", "pushed", "state", "pull"]));
    }
    let txns: Vec<String> = db
        .psql("SELECT string_agg(id::text, ' ' ORDER BY id) FROM transactions")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(txns.len(), 2);
    for (txn, expected) in txns.iter().zip(&pulled) {
        let at = sg_ok(&db, &["--state", "pushed", "state", "pull", "--at", txn]);
        assert_eq!(&at, expected, "state pull --at {txn}");
    }
    let first: Value = serde_json::from_str(&pulled[0]).unwrap();
    assert_eq!(first["outputs"]["token"]["value"], json!("t-1"));
    assert_eq!(first["serial"], json!(1));
}
