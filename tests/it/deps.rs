//! `stategraph deps [ADDR...] --format text|dot|mermaid|json` (issue 18,
//! point 4) on a state two real applies wrote: the whole graph and a cone,
//! each format read back (dot and Mermaid parsed, JSON by its fields) and
//! compared with the dependencies terraform recorded.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use stategraph::graph::render::{READ_COLOUR, WRITE_COLOUR};

use crate::common::*;

const BASE: &str = "terraform_data.base";
const NET: &str = "terraform_data.net";
const WEB: &str = r#"terraform_data.app["web"]"#;
const API: &str = r#"terraform_data.app["api"]"#;
const DB: &str = "terraform_data.db";
const LONELY: &str = "terraform_data.lonely";

/// Every dependency terraform recorded in the stored state (`state pull`),
/// as (dependency instance, dependent instance): terraform records
/// transitive dependencies too (`app` depends on `net` and `base`).
fn recorded_edges(db: &TestDb, wd: &TfWorkdir) -> BTreeSet<(String, String)> {
    let state: Value = serde_json::from_str(&sg_ok_in(db, wd, &["state", "pull"]))
        .expect("state pull prints JSON");
    let mut instances: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut edges = Vec::new();
    for r in state["resources"].as_array().unwrap() {
        let resource = format!(
            "{}.{}",
            r["type"].as_str().unwrap(),
            r["name"].as_str().unwrap()
        );
        for i in r["instances"].as_array().unwrap() {
            let address = match &i["index_key"] {
                Value::Null => resource.clone(),
                Value::String(k) => format!("{resource}[\"{k}\"]"),
                n => format!("{resource}[{n}]"),
            };
            instances
                .entry(resource.clone())
                .or_default()
                .push(address.clone());
            for d in i["dependencies"].as_array().into_iter().flatten() {
                edges.push((d.as_str().unwrap().to_owned(), address.clone()));
            }
        }
    }
    edges
        .into_iter()
        .flat_map(|(dep, to)| {
            instances[&dep]
                .iter()
                .map(move |from| (from.clone(), to.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn deps(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> String {
    let mut all = vec!["deps"];
    all.extend_from_slice(args);
    assert_ok("deps", &sg_in(db, wd, SMALL_GRAPH, &all)).0
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

#[test]
fn json_has_every_instance_and_edge_and_marks_a_cone() {
    let db = test_db();
    let wd = store_small_graph(&db);

    let whole: Value = serde_json::from_str(&deps(&db, &wd, &["--format", "json"])).unwrap();
    assert_eq!(whole["state"], SMALL_GRAPH);
    assert_eq!(whole["instances"], 6);
    let nodes: Vec<&str> = whole["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [API, WEB, BASE, DB, LONELY, NET],
        "sorted by address"
    );
    assert!(whole["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["role"].is_null() && n["changed"] == false));
    let edges: BTreeSet<(String, String)> = whole["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().into(),
                e["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    let recorded = recorded_edges(&db, &wd);
    assert_eq!(edges, recorded);
    assert!(recorded.is_superset(&pairs(&[(BASE, NET), (NET, WEB), (NET, API), (NET, DB)])));

    // The cone of `net`: it and what depends on it written, `base` read,
    // `lonely` left out; the same sets as `stategraph cone`.
    let cone: Value = serde_json::from_str(&deps(&db, &wd, &["--format", "json", NET])).unwrap();
    let roles: BTreeMap<&str, (&str, bool)> = cone["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["address"].as_str().unwrap(),
                (n["role"].as_str().unwrap(), n["changed"].as_bool().unwrap()),
            )
        })
        .collect();
    let expected: BTreeMap<&str, (&str, bool)> = [
        (BASE, ("read", false)),
        (NET, ("write", true)),
        (WEB, ("write", false)),
        (API, ("write", false)),
        (DB, ("write", false)),
    ]
    .into_iter()
    .collect();
    assert_eq!(roles, expected);
    assert_eq!(cone["instances"], 6);
    assert_eq!(cone["changed"], serde_json::json!([NET]));
    assert_eq!(
        cone["edges"].as_array().unwrap().len(),
        recorded
            .iter()
            .filter(|(a, b)| a != LONELY && b != LONELY)
            .count()
    );
    let by_cone: Value =
        serde_json::from_str(&sg_ok_in(&db, &wd, &["cone", "--json", NET])).unwrap();
    assert_eq!(cone["write"], by_cone["write"]);
    assert_eq!(cone["read"], by_cone["read"]);
}

fn sg_ok_in(db: &TestDb, wd: &TfWorkdir, args: &[&str]) -> String {
    assert_ok("stategraph", &sg_in(db, wd, SMALL_GRAPH, args)).0
}

/// A dot file as written by `deps`: node statements with their attributes,
/// edge statements, and the graph's own settings.
#[derive(Debug, Default)]
struct Dot {
    nodes: BTreeMap<String, BTreeMap<String, String>>,
    edges: BTreeSet<(String, String)>,
}

/// Parses the dot subset `deps` writes: `digraph NAME {`, then one
/// statement per line (`ID [k=v, ...];`, `ID -> ID;`, `k=v;`,
/// `node [...];`), then `}`. IDs are double-quoted with `\"` escapes.
fn parse_dot(text: &str) -> Dot {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("digraph stategraph {"), "{text}");
    assert_eq!(text.lines().last(), Some("}"), "{text}");
    let mut dot = Dot::default();
    for line in lines.filter(|l| *l != "}") {
        let stmt = line
            .trim()
            .strip_suffix(';')
            .unwrap_or_else(|| panic!("a statement ends with ';': {line}"));
        if !stmt.starts_with('"') {
            // Graph settings and node defaults.
            assert!(
                stmt.starts_with("node [") || stmt.contains('='),
                "unexpected statement {stmt}"
            );
            continue;
        }
        let (first, rest) = quoted(stmt);
        let rest = rest.trim_start();
        if let Some(to) = rest.strip_prefix("->") {
            let (second, tail) = quoted(to.trim_start());
            assert!(tail.is_empty(), "{line}");
            dot.edges.insert((first, second));
        } else {
            let attrs = match rest.strip_prefix('[') {
                Some(a) => attributes(a.strip_suffix(']').expect("attributes close")),
                None => BTreeMap::new(),
            };
            assert!(
                dot.nodes.insert(first, attrs).is_none(),
                "node twice: {line}"
            );
        }
    }
    for (a, b) in &dot.edges {
        assert!(
            dot.nodes.contains_key(a) && dot.nodes.contains_key(b),
            "{a} -> {b} joins undeclared nodes"
        );
    }
    dot
}

/// A leading double-quoted ID, unescaped, and what follows it.
fn quoted(s: &str) -> (String, &str) {
    let mut chars = s.char_indices();
    assert_eq!(chars.next().map(|c| c.1), Some('"'), "{s}");
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next().expect("escape").1),
            '"' => return (out, &s[i + 1..]),
            c => out.push(c),
        }
    }
    panic!("unterminated string in {s}")
}

/// `k=v, k="v", ...` into a map (quotes removed).
fn attributes(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let (value, after) = if after.starts_with('"') {
            quoted(after)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.insert(key.trim().to_owned(), value);
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[test]
fn dot_parses_back_to_the_graph_with_the_cone_coloured() {
    let db = test_db();
    let wd = store_small_graph(&db);

    let whole = parse_dot(&deps(&db, &wd, &["--format", "dot"]));
    assert_eq!(
        whole.nodes.keys().cloned().collect::<BTreeSet<_>>(),
        set([API, WEB, BASE, DB, LONELY, NET])
    );
    let recorded = recorded_edges(&db, &wd);
    assert_eq!(whole.edges, recorded);
    assert!(
        whole.nodes.values().all(|a| a.is_empty()),
        "no cone, no marks: {:?}",
        whole.nodes
    );

    let cone = parse_dot(&deps(&db, &wd, &["--format", "dot", DB]));
    assert_eq!(
        cone.nodes.keys().cloned().collect::<BTreeSet<_>>(),
        set([DB, NET, BASE])
    );
    assert_eq!(cone.nodes[DB]["fillcolor"], WRITE_COLOUR);
    assert_eq!(cone.nodes[DB]["class"], "write");
    assert_eq!(
        cone.nodes[DB]["penwidth"], "3",
        "the asked instance is bold"
    );
    for read in [NET, BASE] {
        assert_eq!(cone.nodes[read]["fillcolor"], READ_COLOUR, "{read}");
        assert_eq!(cone.nodes[read]["class"], "read", "{read}");
    }
    let within = |a: &String| [DB, NET, BASE].contains(&a.as_str());
    let expected: BTreeSet<_> = recorded
        .into_iter()
        .filter(|(a, b)| within(a) && within(b))
        .collect();
    assert!(expected.contains(&(NET.to_owned(), DB.to_owned())));
    assert_eq!(cone.edges, expected);
}

#[test]
fn mermaid_is_a_flowchart_of_the_graph_with_cone_classes() {
    let db = test_db();
    let wd = store_small_graph(&db);
    let text = deps(&db, &wd, &["--format", "mermaid", "terraform_data.app"]);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("flowchart LR"), "{text}");
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut edges = BTreeSet::new();
    let mut classes: BTreeMap<String, String> = BTreeMap::new();
    let mut class_defs = BTreeMap::new();
    for line in lines {
        let line = line.strip_prefix("  ").expect("statements are indented");
        if let Some((id, label)) = line.split_once("[\"") {
            let label = label.strip_suffix("\"]").expect("label closes");
            labels.insert(id.to_owned(), label.replace("#quot;", "\""));
        } else if let Some((a, b)) = line.split_once(" --> ") {
            edges.insert((a.to_owned(), b.to_owned()));
        } else if let Some(def) = line.strip_prefix("classDef ") {
            let (name, style) = def.split_once(' ').unwrap();
            class_defs.insert(name.to_owned(), style.to_owned());
        } else if let Some(class) = line.strip_prefix("class ") {
            let (ids, name) = class.split_once(' ').unwrap();
            for id in ids.split(',') {
                classes.insert(id.to_owned(), name.to_owned());
            }
        } else {
            panic!("unexpected Mermaid line {line:?} in\n{text}");
        }
    }
    let label = |id: &String| labels[id].clone();
    let named: BTreeSet<(String, String)> =
        edges.iter().map(|(a, b)| (label(a), label(b))).collect();
    let within = |a: &String| [WEB, API, NET, BASE].contains(&a.as_str());
    let expected: BTreeSet<_> = recorded_edges(&db, &wd)
        .into_iter()
        .filter(|(a, b)| within(a) && within(b))
        .collect();
    assert!(expected.contains(&(NET.to_owned(), WEB.to_owned())));
    assert_eq!(named, expected);
    let role: BTreeMap<String, String> = classes
        .iter()
        .map(|(id, c)| (label(id), c.clone()))
        .collect();
    assert_eq!(role[WEB], "write");
    assert_eq!(role[API], "write");
    assert_eq!(role[NET], "read");
    assert_eq!(role[BASE], "read");
    assert_eq!(labels.len(), 4, "only the cone: {labels:?}");
    assert!(class_defs["write"].contains(WRITE_COLOUR), "{text}");
    assert!(class_defs["read"].contains(READ_COLOUR), "{text}");
}

#[test]
fn text_lists_each_instance_with_its_dependencies_and_bad_input_fails_clearly() {
    let db = test_db();
    let wd = store_small_graph(&db);
    let text = deps(&db, &wd, &[]);
    assert!(
        text.contains(&format!("{NET}\n  depends on {BASE}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("{LONELY}\n{NET}")), "{text}");
    let cone = deps(&db, &wd, &[WEB]);
    assert_eq!(
        cone,
        format!("{WEB}  [write, changed]\n  depends on {BASE}\n  depends on {NET}\n{BASE}  [read]\n{NET}  [read]\n  depends on {BASE}\n")
    );

    let err = |args: &[&str]| {
        let out = sg_wd(&db, &wd, args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} must fail");
        text_of(&out.stderr)
    };
    let e = err(&["--state", SMALL_GRAPH, "deps", "terraform_data.nope"]);
    assert!(
        e.contains("terraform_data.nope matches no instance in state \"shop\""),
        "{e}"
    );
    let e = err(&["--state", "absent", "deps"]);
    assert!(e.contains("no state named \"absent\""), "{e}");
    let e = err(&["--state", SMALL_GRAPH, "deps", "--format", "svg"]);
    assert!(e.contains("svg") && e.contains("dot"), "{e}");
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
