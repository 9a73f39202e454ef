//! `state push` / `state pull` / `state list` / `state show` against a real
//! PostgreSQL, on states written by the real terraform binary.

use std::path::Path;

use serde_json::Value;

use stategraph::ui::thousands;

use crate::common::*;

/// Pushes the workdir's state, pulls it back, and checks the round trip is lossless.
fn assert_round_trip(db: &TestDb, name: &str, wd: &TfWorkdir) -> Value {
    let original = wd.state_path();
    push(db, name, &original);
    let pulled = pull_to(db, name, wd.path());

    let a: Value = terraform::read_json(&original);
    let b: Value = terraform::read_json(&pulled);
    assert_eq!(a["serial"], b["serial"], "serial must be kept");
    assert_eq!(a["lineage"], b["lineage"], "lineage must be kept");
    // Stronger than required: the whole document is equal as JSON.
    assert_eq!(a, b, "pulled state differs from the pushed one");
    // What the issue asks: terraform's own reading of both is the same.
    assert_eq!(
        wd.show_json(&original),
        wd.show_json(&pulled),
        "terraform show -json differs"
    );
    b
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

/// `stategraph state list [filter]` prints what `terraform state list` prints.
fn assert_list_matches_terraform(db: &TestDb, name: &str, wd: &TfWorkdir, filters: &[&str]) {
    let state = wd.state_path();
    let state_flag = format!("-state={}", state.display());
    let mut tf_args = vec!["state", "list", state_flag.as_str()];
    tf_args.extend_from_slice(filters);
    let tf = wd.terraform(&tf_args);
    let mut sg_args = vec!["--state", name, "state", "list"];
    sg_args.extend_from_slice(filters);
    let ours = sg_ok(db, &sg_args);
    assert_eq!(
        lines(&ours),
        lines(&String::from_utf8_lossy(&tf.stdout)),
        "state list {filters:?} differs from terraform's"
    );
}

#[test]
fn rich_terraform_data_state_round_trips() {
    let db = test_db();
    let wd = produce_state("rich");
    let state = assert_round_trip(&db, "rich", &wd);

    // The fixture really has what we claim to keep.
    let count = |pred: &dyn Fn(&Value) -> bool| terraform::count_instances(&state, pred);
    assert!(
        count(&|i| i["status"] == "tainted") >= 1,
        "no tainted instance in the fixture"
    );
    assert!(
        count(&|i| i["sensitive_attributes"]
            .as_array()
            .is_some_and(|a| !a.is_empty()))
            >= 1,
        "no sensitive attribute in the fixture"
    );
    assert!(
        state["outputs"]
            .as_object()
            .unwrap()
            .values()
            .any(|o| o["sensitive"] == true),
        "no sensitive output in the fixture"
    );

    assert_list_matches_terraform(&db, "rich", &wd, &[]);
    let all = sg_ok(&db, &["--state", "rich", "state", "list"]);
    // Filters: a module, a resource, an instance, as terraform interprets them.
    let mut filters: Vec<String> = Vec::new();
    for line in all.lines() {
        if let Some(i) = line.find("].") {
            if line.starts_with("module.") {
                let module_call = line[..line.find('[').unwrap()].to_owned();
                filters.push(module_call);
                filters.push(line[..i + 1].to_owned());
            }
        }
        if let Some(i) = line.rfind('[') {
            filters.push(line[..i].to_owned());
        }
        filters.push(line.to_owned());
    }
    filters.sort();
    filters.dedup();
    for f in filters.iter().take(40) {
        assert_list_matches_terraform(&db, "rich", &wd, &[f.as_str()]);
    }
}

#[test]
fn deposed_objects_round_trip() {
    let db = test_db();
    let wd = produce_state("deposed");
    let state = assert_round_trip(&db, "deposed", &wd);
    assert_eq!(
        terraform::count_instances(&state, |i| i.get("deposed").is_some()),
        2,
        "deposed objects lost"
    );
    assert!(terraform::count_instances(&state, |i| i["create_before_destroy"] == true) >= 1);
    // The state's instance count (what `cone` reports) leaves them out.
    assert_eq!(
        db.psql("SELECT instance_count FROM states WHERE name = 'deposed'"),
        terraform::count_instances(&state, |i| i.get("deposed").is_none()).to_string()
    );
    // Deposed objects are not listed, as in terraform.
    assert_list_matches_terraform(&db, "deposed", &wd, &[]);
}

#[test]
fn chain_state_round_trips_and_state_show_matches_terraform() {
    let db = test_db();
    let wd = produce_state("chain");
    assert_round_trip(&db, "chain", &wd);
    assert_list_matches_terraform(&db, "chain", &wd, &[]);
    let state_flag = format!("-state={}", wd.state_path().display());
    for addr in [
        "terraform_data.root",
        r#"module.branch["b"].terraform_data.l3[1]"#,
        "terraform_data.island[0]",
    ] {
        let tf = wd.terraform(&["state", "show", "-no-color", &state_flag, addr]);
        let ours = stategraph(&db)
            .current_dir(wd.path())
            .args(["--state", "chain", "state", "show", addr])
            .env("STATEGRAPH_TERRAFORM", terraform::terraform_bin())
            .env("TF_CLI_CONFIG_FILE", wd.cli_config())
            .output()
            .unwrap();
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&tf.stdout),
            "state show {addr}"
        );
    }
    let err = sg_err(
        &db,
        &["--state", "chain", "state", "show", "terraform_data.nope"],
    );
    assert!(err.contains("no instance found"), "{err}");
    // No temporary state file left behind in the user's directory.
    assert!(
        !std::fs::read_dir(wd.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("stategraph")),
        "state show left a file in the working directory"
    );
}

#[test]
fn dependency_on_a_resource_with_no_instances_round_trips() {
    // terraform records `terraform_data.none` (count = 0) as a dependency.
    let db = test_db();
    let wd = produce_state("count0");
    let state = assert_round_trip(&db, "count0", &wd);
    let deps = &state["resources"][0]["instances"][0]["dependencies"];
    assert_eq!(deps, &serde_json::json!(["terraform_data.none"]), "{state}");
    let c: Value = serde_json::from_str(&sg_ok(
        &db,
        &[
            "--state",
            "count0",
            "cone",
            "--json",
            "terraform_data.uses_none",
        ],
    ))
    .unwrap();
    assert_eq!(c["write"], serde_json::json!(["terraform_data.uses_none"]));
}

#[test]
fn aws_state_from_moto_round_trips() {
    let db = test_db();
    let moto = moto::Moto::start();
    let wd = moto::produce_aws_state(&moto, "aws_small");
    let state = assert_round_trip(&db, "aws", &wd);
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "aws_vpc"),
        "the aws fixture has no VPC"
    );
    assert_list_matches_terraform(&db, "aws", &wd, &[]);
}

fn stored(db: &TestDb, name: &str, dir: &Path) -> Value {
    terraform::read_json(&pull_to(db, name, dir))
}

#[test]
fn push_follows_terraform_lineage_and_serial_rules() {
    let db = test_db();
    let wd = produce_state("chain");
    let path = wd.state_path();
    push(&db, "rules", &path);
    let before = stored(&db, "rules", wd.path());

    let mut doc: Value = terraform::read_json(&path);
    let write = |doc: &Value, file: &str| {
        let p = wd.path().join(file);
        std::fs::write(&p, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        p
    };

    // Another lineage: refused, nothing written.
    let mut other = doc.clone();
    other["lineage"] = Value::from("11111111-2222-3333-4444-555555555555");
    let other_path = write(&other, "other.json");
    let err = sg_err(
        &db,
        &[
            "--state",
            "rules",
            "state",
            "push",
            other_path.to_str().unwrap(),
        ],
    );
    assert!(err.contains("lineage"), "{err}");
    assert!(err.contains("-force"), "{err}");
    assert_eq!(stored(&db, "rules", wd.path()), before);

    // A lower serial: refused.
    let mut older = doc.clone();
    older["serial"] = Value::from(doc["serial"].as_i64().unwrap() - 1);
    let older_path = write(&older, "older.json");
    let err = sg_err(
        &db,
        &[
            "--state",
            "rules",
            "state",
            "push",
            older_path.to_str().unwrap(),
        ],
    );
    assert!(err.contains("newer state"), "{err}");
    assert_eq!(stored(&db, "rules", wd.path()), before);

    // Same serial, different content: refused.
    let res = doc["resources"].as_array_mut().unwrap();
    let root = res.iter_mut().find(|r| r["name"] == "root").unwrap();
    root["instances"][0]["attributes"]["input"] = Value::from("changed");
    let same_serial = write(&doc, "same.json");
    let err = sg_err(
        &db,
        &[
            "--state",
            "rules",
            "state",
            "push",
            same_serial.to_str().unwrap(),
        ],
    );
    assert!(err.contains("same serial"), "{err}");
    assert_eq!(stored(&db, "rules", wd.path()), before);

    // Higher serial: accepted, and only the changed row gets a new version.
    doc["serial"] = Value::from(doc["serial"].as_i64().unwrap() + 1);
    doc["outputs"]["root_id"]["value"] = Value::from("replaced-output");
    let newer = write(&doc, "newer.json");
    let versions_before = db.psql("SELECT count(*) FROM instances WHERE version > 1");
    assert_eq!(versions_before, "0");
    let err_out = stategraph(&db)
        .args(["--state", "rules", "state", "push", newer.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(err_out.status.success());
    let msg = String::from_utf8_lossy(&err_out.stderr);
    assert!(msg.contains("0 added, 1 changed, 0 removed"), "{msg}");
    assert_eq!(
        db.psql("SELECT address || ' v' || version FROM instances WHERE version > 1"),
        "terraform_data.root v2"
    );
    assert_eq!(
        db.psql(
            "SELECT address || ' ' || (row->'attributes'->'input'->>'value') FROM instance_history"
        ),
        "terraform_data.root root",
        "the replaced version is kept in the history"
    );
    assert_eq!(
        db.psql("SELECT name || ' v' || version FROM output_history"),
        "root_id v1",
        "the replaced output is kept in the history"
    );
    assert_eq!(
        db.psql("SELECT version FROM outputs WHERE name = 'root_id'"),
        "2"
    );
    assert_eq!(stored(&db, "rules", wd.path()), doc);

    // -force replaces another lineage.
    let forced = stategraph(&db)
        .args([
            "--state",
            "rules",
            "state",
            "push",
            "-force",
            other_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(stored(&db, "rules", wd.path()), other);
    assert_eq!(
        db.psql("SELECT string_agg(kind || ':' || status, ',' ORDER BY id) FROM transactions"),
        "push:committed,push:committed,push:committed",
        "refused pushes leave no transaction behind"
    );
}

#[test]
fn push_from_stdin_and_removal_of_instances() {
    let db = test_db();
    let wd = produce_state("chain");
    let path = wd.state_path();
    let bytes = std::fs::read(&path).unwrap();
    stategraph(&db)
        .args(["--state", "stdin", "state", "push", "-"])
        .write_stdin(bytes)
        .assert()
        .success();
    let mut doc: Value = terraform::read_json(&path);
    let n_before = terraform::count_instances(&doc, |_| true);
    doc["resources"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["name"] != "island");
    doc["serial"] = Value::from(doc["serial"].as_i64().unwrap() + 1);
    let p = wd.path().join("fewer.json");
    std::fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = stategraph(&db)
        .args(["--state", "stdin", "state", "push", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("0 added, 0 changed, 2 removed"), "{msg}");
    assert_eq!(stored(&db, "stdin", wd.path()), doc);
    assert_eq!(
        db.psql("SELECT count(*) FROM instances")
            .parse::<usize>()
            .unwrap(),
        n_before - 2
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM instance_history WHERE removed"),
        "2"
    );
}

/// `state push` streams the file into PostgreSQL one resource at a time;
/// a large state still round-trips exactly, and a file that breaks off (or
/// turns invalid) after thousands of rows were copied writes nothing, into
/// a new state (rows copied straight into the table) or over a stored one
/// (rows copied into the staging table).
#[test]
fn a_large_state_streams_in_round_trips_and_a_break_midway_writes_nothing() {
    let db = test_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tfstate");
    generate_state(20_000, &path);
    let original = std::fs::read(&path).unwrap();
    let doc: Value = serde_json::from_slice(&original).unwrap();
    let objects = terraform::count_instances(&doc, |_| true);
    assert!(objects >= 20_000, "{objects} objects generated");

    let out = stategraph(&db)
        .args(["--state", "big", "state", "push", path.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = assert_ok("state push", &out);
    assert!(
        stderr.contains(&format!("{} added, 0 changed", thousands(objects))),
        "{stderr}"
    );
    let pulled = pull_to(&db, "big", dir.path());
    let pulled_bytes = std::fs::read(&pulled).unwrap();
    // Equal as JSON (jsonb keeps an object's keys in an order of its own).
    assert_eq!(
        serde_json::from_slice::<Value>(&pulled_bytes).unwrap(),
        doc,
        "the pulled state differs from the pushed one"
    );
    let stored_rows = || db.psql("SELECT count(*) || ' ' || count(DISTINCT txn_id) FROM instances");
    let rows_before = stored_rows();
    assert_eq!(rows_before, format!("{objects} 1"));

    // Broken off after 60% of the file: JSON error, nothing written.
    let cut = dir.path().join("cut.tfstate");
    std::fs::write(&cut, &original[..original.len() * 6 / 10]).unwrap();
    for name in ["fresh", "big"] {
        let err = sg_err(
            &db,
            &[
                "--state",
                name,
                "state",
                "push",
                "-force",
                cut.to_str().unwrap(),
            ],
        );
        assert!(
            err.contains("cut.tfstate is not a state stategraph can store"),
            "{err}"
        );
        assert!(err.contains("EOF while parsing"), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
    }
    // Valid JSON, but a resource near the end repeats an earlier one.
    let mut dup = doc.clone();
    let resources = dup["resources"].as_array_mut().unwrap();
    let n = resources.len();
    resources[n - 2] = resources[1].clone();
    let dup_path = dir.path().join("dup.tfstate");
    std::fs::write(&dup_path, serde_json::to_vec_pretty(&dup).unwrap()).unwrap();
    for name in ["fresh", "big"] {
        let err = sg_err(
            &db,
            &[
                "--state",
                name,
                "state",
                "push",
                "-force",
                dup_path.to_str().unwrap(),
            ],
        );
        assert!(err.contains("appears twice in the state"), "{err}");
    }
    assert_eq!(db.psql("SELECT string_agg(name, ',') FROM states"), "big");
    assert_eq!(stored_rows(), rows_before);
    assert_eq!(db.psql("SELECT count(*) FROM instance_history"), "0");
    assert_eq!(
        db.psql("SELECT string_agg(kind || ':' || status, ',') FROM transactions"),
        "push:committed",
        "a refused push leaves no transaction behind"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(pull_to(&db, "big", dir.path())).unwrap())
            .unwrap(),
        doc
    );

    // Pushed again unchanged: every row compared, none written.
    let out = stategraph(&db)
        .args(["--state", "big", "state", "push", path.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = assert_ok("state push", &out);
    assert!(
        stderr.contains(&format!(
            "0 added, 0 changed, 0 removed, {} unchanged",
            thousands(objects)
        )),
        "{stderr}"
    );
    assert_eq!(stored_rows(), rows_before);
}
