//! `stategraph query` (issue 18, point 2): SQL over the `stategraph_api`
//! views of a pushed state, read-only, with a timeout, sensitive values
//! masked unless asked for; and every example query the README ships, run
//! against a state it is meant for and checked row by row.

use serde_json::{json, Value};

use crate::common::*;

const AWS: &str = r#"provider[\"registry.terraform.io/hashicorp/aws\"]"#;

/// A state of three S3 buckets (one versioned on the bucket, one by an
/// `aws_s3_bucket_versioning`, one not at all), a database with a
/// sensitive password in a module, and a sensitive output; `logs_tag` is
/// the `logs` bucket's tag, `with_data` keeps the `data` bucket.
fn state(serial: u32, logs_tag: &str, with_data: bool) -> String {
    let bucket = |name: &str, enabled: bool, tag: &str| {
        format!(
            r#"{{ "mode": "managed", "type": "aws_s3_bucket", "name": "{name}", "provider": "{AWS}",
              "instances": [{{ "schema_version": 0, "sensitive_attributes": [],
                "attributes": {{ "id": "{name}", "bucket": "{name}", "arn": "arn:aws:s3:::{name}",
                  "versioning": [{{ "enabled": {enabled}, "mfa_delete": false }}],
                  "tags": {{ "team": "{tag}" }} }} }}] }}"#
        )
    };
    let mut resources = vec![
        bucket("logs", false, logs_tag),
        bucket("assets", false, "web"),
    ];
    if with_data {
        resources.push(bucket("data", true, "analytics"));
    }
    resources.push(format!(
        r#"{{ "mode": "managed", "type": "aws_s3_bucket_versioning", "name": "assets", "provider": "{AWS}",
          "instances": [{{ "schema_version": 0, "sensitive_attributes": [],
            "attributes": {{ "id": "assets", "bucket": "assets",
              "versioning_configuration": [{{ "status": "Enabled", "mfa_delete": "" }}] }},
            "dependencies": ["aws_s3_bucket.assets"] }}] }}"#
    ));
    resources.push(format!(
        r#"{{ "module": "module.db", "mode": "managed", "type": "aws_db_instance", "name": "main", "provider": "{AWS}",
          "instances": [{{ "schema_version": 2,
            "sensitive_attributes": [[{{ "type": "get_attr", "value": "password" }}]],
            "attributes": {{ "id": "db-1", "engine": "postgres", "username": "app", "password": "hunter2-secret" }},
            "dependencies": ["aws_s3_bucket.logs"] }}] }}"#
    ));
    // terraform_data's input is dynamic: its sensitive path skips the
    // {"value", "type"} wrapping.
    resources.push(
        r#"{ "module": "module.db", "mode": "managed", "type": "terraform_data", "name": "cfg",
          "provider": "provider[\"terraform.io/builtin/terraform\"]",
          "instances": [{ "schema_version": 0,
            "sensitive_attributes": [[{ "type": "get_attr", "value": "input" }, { "type": "get_attr", "value": "token" }]],
            "attributes": { "id": "cfg", "input": { "value": { "name": "n", "token": "tok-hunter2" },
              "type": ["object", { "name": "string", "token": "string" }] } } }] }"#
            .to_owned(),
    );
    format!(
        r#"{{ "version": 4, "terraform_version": "1.11.4", "serial": {serial},
          "lineage": "7c0b3c52-query-test",
          "outputs": {{
            "logs_arn": {{ "value": "arn:aws:s3:::logs", "type": "string" }},
            "db_password": {{ "value": "hunter2-secret", "type": "string", "sensitive": true }}
          }},
          "resources": [{}], "check_results": null }}"#,
        resources.join(",\n")
    )
}

/// `stategraph --state prod ARGS` as user `who`, with its output.
fn sg(db: &TestDb, who: &str, args: &[&str]) -> std::process::Output {
    stategraph(db)
        .env("USER", who)
        .args(["--state", "prod"])
        .args(args)
        .output()
        .expect("run stategraph")
}

/// The state pushed twice: first by alice (transaction 1), then by bob
/// (the `logs` bucket's tag changed, the `data` bucket removed). Returns
/// bob's transaction ID.
fn pushed(db: &TestDb) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("1.tfstate");
    std::fs::write(&first, state(1, "ops", true)).unwrap();
    assert_ok(
        "first push",
        &sg(db, "alice", &["state", "push", first.to_str().unwrap()]),
    );
    let second = dir.path().join("2.tfstate");
    std::fs::write(&second, state(2, "platform", false)).unwrap();
    assert_ok(
        "second push",
        &sg(db, "bob", &["state", "push", second.to_str().unwrap()]),
    );
    db.psql("SELECT max(id) FROM transactions").parse().unwrap()
}

/// `stategraph query --json SQL` parsed.
fn query_json(db: &TestDb, sql: &str) -> Value {
    let (stdout, _) = assert_ok(sql, &sg(db, "carol", &["query", "--json", sql]));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The ```sql blocks of the README's "Querying the stored states" section.
fn readme_examples() -> Vec<String> {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let section = readme
        .split("### Querying the stored states")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("the README has a section \"Querying the stored states\"");
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_example_query_of_the_readme_answers_what_it_says() {
    let db = test_db();
    let second = pushed(&db);
    let examples = readme_examples();
    assert_eq!(examples.len(), 4, "the README ships four example queries");

    // Every S3 bucket without versioning: only `logs` (`data` is versioned
    // on the bucket and removed anyway, `assets` by its versioning resource).
    assert_eq!(
        query_json(&db, &examples[0]),
        json!([{"state": "prod", "address": "aws_s3_bucket.logs", "bucket": "logs"}])
    );

    // What the second push changed: `logs` rewritten, `data` removed.
    let changed = examples[1].replace("42", &second.to_string());
    assert_eq!(
        query_json(&db, &changed),
        json!([
            {"address": "aws_s3_bucket.data", "deposed": "", "version": 1, "change": "removed"},
            {"address": "aws_s3_bucket.logs", "deposed": "", "version": 2, "change": "written"}
        ])
    );

    // Who last changed aws_s3_bucket.logs: bob's push.
    let who = query_json(&db, &examples[2]);
    assert_eq!(who.as_array().unwrap().len(), 1, "{who}");
    assert_eq!(who[0]["txn"], json!(second));
    assert_eq!(who[0]["actor_user"], json!("bob"));
    assert_eq!(who[0]["command"], json!("state push"));
    assert!(who[0]["finished_at"].is_string(), "{who}");

    // Resources per module.
    assert_eq!(
        query_json(&db, &examples[3]),
        json!([
            {"module": "(root)", "resources": 3, "instances": 3},
            {"module": "module.db", "resources": 2, "instances": 2}
        ])
    );
}

#[test]
fn sensitive_values_are_masked_unless_asked_for() {
    let db = test_db();
    pushed(&db);
    let sql = "SELECT i.attributes->>'password' AS password, i.attributes->>'username' AS username,
                      o.value AS output
               FROM instances i, outputs o
               WHERE i.type = 'aws_db_instance' AND o.name = 'db_password'";
    for format in ["--json", "--csv", "--table"] {
        let args: Vec<&str> = match format {
            "--table" => vec!["query", sql],
            f => vec!["query", f, sql],
        };
        let (stdout, stderr) = assert_ok(format, &sg(&db, "carol", &args));
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{format}: {stdout}"
        );
        assert!(stdout.contains("(sensitive value)"), "{format}: {stdout}");
        assert!(stdout.contains("app"), "{format}: {stdout}");
    }
    // Inside a dynamic value (terraform_data's input) too.
    let input = query_json(
        &db,
        "SELECT attributes->'input' AS input FROM instances WHERE type = 'terraform_data'",
    );
    assert_eq!(
        input[0]["input"]["value"],
        json!({"name": "n", "token": "(sensitive value)"}),
        "{input}"
    );
    // The history view masks too.
    let history = query_json(
        &db,
        "SELECT attributes FROM stategraph_api.history WHERE type = 'aws_db_instance'",
    );
    assert_eq!(
        history[0]["attributes"]["password"],
        json!("(sensitive value)")
    );

    let (shown, _) = assert_ok(
        "--show-sensitive",
        &sg(&db, "carol", &["query", "--json", "--show-sensitive", sql]),
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown,
        json!([{"password": "hunter2-secret", "username": "app", "output": "hunter2-secret"}])
    );
}

#[test]
fn tables_and_csv_show_the_rows() {
    let db = test_db();
    pushed(&db);
    let sql = "SELECT address, version, address LIKE '%logs' AS is_logs FROM instances \
               WHERE type = 'aws_s3_bucket' ORDER BY address";
    let (table, stderr) = assert_ok("table", &sg(&db, "carol", &["query", sql]));
    assert_eq!(
        table,
        "address               version  is_logs\n\
         --------------------  -------  -------\n\
         aws_s3_bucket.assets        1  false\n\
         aws_s3_bucket.logs          2  true\n"
    );
    assert!(stderr.contains("(2 rows)"), "{stderr}");
    let (csv, _) = assert_ok("csv", &sg(&db, "carol", &["query", "-csv", sql]));
    assert_eq!(
        csv,
        "address,version,is_logs\naws_s3_bucket.assets,1,false\naws_s3_bucket.logs,2,true\n"
    );
    // One row per edge.
    let edges = query_json(
        &db,
        "SELECT address, depends_on FROM dependencies ORDER BY 1",
    );
    assert_eq!(
        edges,
        json!([
            {"address": "aws_s3_bucket_versioning.assets", "depends_on": "aws_s3_bucket.assets"},
            {"address": "module.db.aws_db_instance.main", "depends_on": "aws_s3_bucket.logs"}
        ])
    );
}

#[test]
fn a_query_that_writes_is_refused_and_errors_are_postgresqls() {
    let db = test_db();
    pushed(&db);
    let before = db.psql("SELECT count(*) FROM instances");
    for sql in [
        "DELETE FROM public.instances",
        "UPDATE public.states SET serial = 99",
        "CREATE TABLE public.x (i int)",
    ] {
        let out = sg(&db, "carol", &["query", sql]);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("stategraph query is read-only")
                && stderr.contains("read-only transaction"),
            "{sql}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    assert_eq!(db.psql("SELECT count(*) FROM instances"), before);
    assert_eq!(db.psql("SELECT max(serial) FROM states"), "2");

    let out = sg(&db, "carol", &["query", "SELEC address FROM instances"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("syntax error at or near \"SELEC\"") && stderr.contains("42601"),
        "{stderr}"
    );
    let out = sg(&db, "carol", &["query", "SELECT nope FROM instances"]);
    assert!(
        text(&out.stderr).contains("column \"nope\" does not exist"),
        "{}",
        text(&out.stderr)
    );
    // The transaction cannot be made writable from inside.
    let out = sg(&db, "carol", &["query", "SET TRANSACTION READ WRITE"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // One statement only.
    let out = sg(
        &db,
        "carol",
        &["query", "SELECT 1; DELETE FROM public.instances"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(db.psql("SELECT count(*) FROM instances"), before);

    // The statement timeout cancels a statement that outlives it.
    let out = sg(
        &db,
        "carol",
        &["query", "--timeout", "200ms", "SELECT pg_sleep(30)"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("longer than its 200ms timeout") && stderr.contains("--timeout"),
        "{stderr}"
    );
}
