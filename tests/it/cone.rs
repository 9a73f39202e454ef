//! `stategraph cone` on a state written by terraform.

use serde_json::Value;

use crate::common::*;

fn cone_json(db: &TestDb, args: &[&str]) -> Value {
    let mut all = vec!["--state", "chain", "cone", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&sg_ok(db, &all)).expect("cone --json prints JSON")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn cone_of_one_branch_leaves_the_other_branches_alone() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "chain", &wd.state_path());

    let c = cone_json(&db, &[r#"module.branch["a"].terraform_data.l1"#]);
    assert_eq!(c["instances"], 19);
    // Dependencies first, ties by address: the lock order.
    assert_eq!(
        strings(&c["write"]),
        [
            r#"module.branch["a"].terraform_data.l1"#,
            r#"module.branch["a"].terraform_data.l2"#,
            r#"module.branch["a"].terraform_data.l3[0]"#,
            r#"module.branch["a"].terraform_data.l3[1]"#,
            r#"module.branch["a"].terraform_data.l4"#,
            "terraform_data.join",
        ]
    );
    // Read: the shared root, and the other branches because `join` reads them.
    let read = strings(&c["read"]);
    assert_eq!(read.len(), 11, "{read:?}");
    assert_eq!(read[0], "terraform_data.root");
    assert!(read.iter().all(|a| !a.contains(r#"["a"]"#)), "{read:?}");
    for k in ["load_ms", "build_ms", "cone_ms"] {
        assert!(c["timings"][k].as_f64().is_some(), "timing {k} missing");
    }

    // A resource address names all its instances; an island has no read set.
    let c = cone_json(&db, &["terraform_data.island"]);
    assert_eq!(
        strings(&c["write"]),
        ["terraform_data.island[0]", "terraform_data.island[1]"]
    );
    assert!(strings(&c["read"]).is_empty());

    // A module instance names everything inside it.
    let c = cone_json(&db, &[r#"module.branch["b"]"#]);
    assert_eq!(c["write"].as_array().unwrap().len(), 6);
    assert_eq!(strings(&c["write"])[5], "terraform_data.join");
    assert_eq!(c["read"].as_array().unwrap().len(), 11);

    // A leaf of one branch: nothing of the other branches, not even read.
    let c = cone_json(&db, &[r#"module.branch["c"].terraform_data.l3[1]"#]);
    assert_eq!(
        strings(&c["write"]),
        [
            r#"module.branch["c"].terraform_data.l3[1]"#,
            r#"module.branch["c"].terraform_data.l4"#,
            "terraform_data.join"
        ]
    );
    assert!(strings(&c["read"]).contains(&r#"module.branch["c"].terraform_data.l2"#));

    // The shared root reaches everything but the islands.
    let c = cone_json(&db, &["terraform_data.root"]);
    assert_eq!(c["write"].as_array().unwrap().len(), 17);
    assert!(strings(&c["read"]).is_empty());
}

#[test]
fn cone_reports_counts_for_humans() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "chain", &wd.state_path());
    let out = stategraph(&db)
        .args(["--state", "chain", "cone", "terraform_data.island[1]"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("1 of 19 instances"), "{stdout}");
    assert!(stdout.contains("  terraform_data.island[1]"), "{stdout}");
    assert!(
        stderr.contains("Computing change cone... 1 of 19 instances"),
        "{stderr}"
    );
}

#[test]
fn cone_of_unknown_or_malformed_addresses_fails_clearly() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "chain", &wd.state_path());
    let err = sg_err(&db, &["--state", "chain", "cone", "terraform_data.nope"]);
    assert!(
        err.contains("terraform_data.nope matches no instance"),
        "{err}"
    );
    let err = sg_err(&db, &["--state", "chain", "cone", "module.[oops"]);
    assert!(err.contains("module.[oops"), "{err}");
    let err = sg_err(&db, &["--state", "absent", "cone", "terraform_data.root"]);
    assert!(err.contains("no state named \"absent\""), "{err}");
}

/// `cone` reads only the rows the cone reaches (by index); on a generated
/// state of nested `for_each` and `count` modules, its cone of every kind
/// of address equals the cone on the whole stored graph.
#[test]
fn cone_read_by_index_equals_the_cone_of_the_whole_graph() {
    use stategraph::address::{self, Target};
    use stategraph::db::pool::PgTarget;
    use stategraph::db::store::Store;
    use stategraph::graph::{InstanceInput, StateGraph};

    let db = test_db();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.tfstate");
    generate_state(2_000, &path);
    push(&db, "gen", &path);

    let rows = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let target = PgTarget::from_url(&db.url).unwrap();
        let store = Store::new(target.connect(1).await.unwrap(), target.display);
        store
            .graph_rows("gen", stategraph::db::store::View::Latest)
            .await
            .unwrap()
            .unwrap()
    });
    let graph = StateGraph::build(rows.iter().map(|r| InstanceInput {
        address: &r.address,
        config_resource: &r.config_address,
        dependencies: &r.dependencies,
    }))
    .unwrap();
    let mut all: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
    all.sort();

    // Instances, their resources and module instances, module calls, from
    // all over the state; and a few sets of several at once.
    let mut cases: Vec<Vec<String>> = Vec::new();
    for a in all.iter().step_by(53) {
        let parsed = address::parse_instance(a).unwrap();
        cases.push(vec![a.to_string()]);
        cases.push(vec![parsed.resource.to_string()]);
        if let Some(first) = parsed.resource.module.0.first() {
            cases.push(vec![parsed.resource.module.to_string()]);
            cases.push(vec![format!("module.{}", first.name)]);
        }
    }
    for set in all.chunks(211) {
        cases.push(set.iter().step_by(41).map(|a| a.to_string()).collect());
    }
    cases.sort();
    cases.dedup();
    assert!(cases.len() > 80, "{} cases", cases.len());

    for case in &cases {
        let mut changed: Vec<String> = Vec::new();
        for text in case {
            let target: Target = address::parse_target(text).unwrap();
            changed.extend(graph.resolve(&target));
        }
        changed.sort();
        changed.dedup();
        let refs: Vec<&str> = changed.iter().map(String::as_str).collect();
        let expected = graph.cone(&refs).unwrap();

        let mut args = vec!["--state", "gen", "cone", "--json"];
        args.extend(case.iter().map(String::as_str));
        let got: Value = serde_json::from_str(&sg_ok(&db, &args)).unwrap();
        assert_eq!(
            strings(&got["write"]),
            expected.write,
            "write set of {case:?}"
        );
        assert_eq!(strings(&got["read"]), expected.read, "read set of {case:?}");
        assert_eq!(got["instances"], rows.len(), "{case:?}");
    }
}

/// The instance count `cone` reports is kept by triggers (migration 0009),
/// not counted: it follows a push, a `state rm` and an apply that creates
/// the removed instance again.
#[test]
fn the_instance_count_follows_every_write() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "chain", &wd.state_path());
    let kept = |db: &TestDb| db.psql("SELECT instance_count FROM states WHERE name = 'chain'");
    let counted = |db: &TestDb| {
        db.psql(
            "SELECT count(*) FROM instances i JOIN states s ON s.id = i.state_id
             WHERE s.name = 'chain' AND i.deposed = ''",
        )
    };
    assert_eq!((kept(&db), counted(&db)), ("19".into(), "19".into()));

    let l4 = r#"module.branch["a"].terraform_data.l4"#;
    sg_ok(&db, &["--state", "chain", "state", "rm", l4]);
    assert_eq!((kept(&db), counted(&db)), ("18".into(), "18".into()));
    assert_eq!(cone_json(&db, &["terraform_data.join"])["instances"], 18);

    let out = sg_in(&db, &wd, "chain", &["apply", "-auto-approve", "-no-color"]);
    let (stdout, _) = assert_ok("apply", &out);
    assert!(stdout.contains("1 added"), "{stdout}");
    assert_eq!((kept(&db), counted(&db)), ("19".into(), "19".into()));
    assert_eq!(cone_json(&db, &["terraform_data.join"])["instances"], 19);
}
