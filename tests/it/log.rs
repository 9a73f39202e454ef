//! `stategraph log`: the transaction log, newest first.

use serde_json::Value;

use crate::common::*;

#[test]
fn log_lists_pushes_newest_first_with_who_and_serials() {
    let db = test_db();
    let wd = produce_state("chain");
    push(&db, "one", &wd.state_path());
    let mut doc: Value = terraform::read_json(&wd.state_path());
    doc["serial"] = Value::from(doc["serial"].as_i64().unwrap() + 1);
    doc["resources"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["name"] != "island");
    let newer = wd.path().join("newer.json");
    std::fs::write(&newer, serde_json::to_vec(&doc).unwrap()).unwrap();
    push(&db, "one", &newer);
    push(&db, "two", &wd.state_path());

    let log: Value =
        serde_json::from_str(&sg_ok(&db, &["--state", "one", "log", "--json"])).unwrap();
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), 2, "only state one: {log}");
    assert_eq!(entries[0]["kind"], "push");
    assert_eq!(entries[0]["status"], "committed");
    assert_eq!(entries[0]["serial_after"], doc["serial"]);
    assert_eq!(entries[0]["summary"]["removed"], 2);
    assert!(
        entries[0]["id"].as_i64() > entries[1]["id"].as_i64(),
        "newest first"
    );
    assert!(
        entries[1]["serial_before"].is_null(),
        "the first push created the state"
    );

    let all: Value = serde_json::from_str(&sg_ok(&db, &["log", "--all", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);

    let text = sg_ok(&db, &["--state", "one", "log"]);
    assert!(text.starts_with("    ID  STATE"), "{text}");
    assert!(text.contains("+0 ~0 -2"), "{text}");
}
