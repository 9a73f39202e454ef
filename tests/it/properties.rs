//! Property tests: the readers of hostile input (state v4 documents, plan
//! JSON, addresses) never panic and refuse bad input with one clear error,
//! and the graph built from whatever they accept behaves.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

use stategraph::address::{parse_instance, parse_module_path, parse_resource, parse_target};
use stategraph::graph::{InstanceInput, StateGraph};
use stategraph::terraform::plan;
use stategraph::tfstate;

/// 256 cases (about 13 s for the whole file in a debug build); set
/// `PROPTEST_CASES` to search longer.
fn config() -> ProptestConfig {
    config_with(256)
}

fn config_with(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(cases),
        // Only tests/it/properties.rs belongs to these tests: no regression
        // files next to it; a failure prints its minimal input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid small state v4 document (the one of the `tfstate` unit tests).
const SMALL_STATE: &str = r#"{
  "version": 4,
  "terraform_version": "1.11.4",
  "serial": 7,
  "lineage": "0b6e7e1c-1111-2222-3333-444455556666",
  "outputs": {
    "b": { "value": 1.50, "type": "number" },
    "a": { "value": "s3cret", "type": "string", "sensitive": true }
  },
  "resources": [
    {
      "module": "module.m[1]",
      "mode": "managed",
      "type": "terraform_data",
      "name": "x",
      "each": "map",
      "provider": "provider[\"terraform.io/builtin/terraform\"]",
      "instances": [
        { "index_key": "b", "schema_version": 0, "attributes": {"id": "2", "big": 123456789012345678901234567890}, "sensitive_attributes": [], "dependencies": ["terraform_data.base"] },
        { "index_key": "a", "status": "tainted", "schema_version": 0, "attributes": {"id": "1"}, "sensitive_attributes": [[{"type":"get_attr","value":"input"}]], "private": "eyJzY2hlbWFfdmVyc2lvbiI6IjAifQ==", "dependencies": ["terraform_data.base"], "create_before_destroy": true, "identity_schema_version": 0 }
      ]
    },
    {
      "mode": "managed",
      "type": "terraform_data",
      "name": "base",
      "provider": "provider[\"terraform.io/builtin/terraform\"]",
      "instances": [
        { "schema_version": 0, "attributes": {"id": "0"}, "sensitive_attributes": [] },
        { "deposed": "00000001", "schema_version": 0, "attributes": {"id": "old"}, "sensitive_attributes": [] }
      ]
    }
  ],
  "check_results": null
}"#;

// From the package root, so that where this file sits does not matter.
const CHAIN_PLAN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/terraform/testdata/chain_plan.json"
));

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Short strings mixing the characters that matter to the readers: address
/// punctuation, quotes, backslashes, control characters and unicode.
fn short_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.\\[\\]\"\\\\ -]{0,12}",
        "\\PC{0,8}",
        Just(String::new()),
        Just("4".to_string()),
        Just("managed".to_string()),
        Just("data".to_string()),
        Just("module.m[1]".to_string()),
        Just("terraform_data.base".to_string()),
        Just("1.2".to_string()),
        Just("tainted".to_string()),
        Just("a\nb".to_string()),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e30f64..1e30).prop_map(Value::from),
        // Numbers only arbitrary_precision keeps: huge, exponent, fraction.
        prop::sample::select(vec![
            "123456789012345678901234567890",
            "-0",
            "1e400",
            "4.0",
            "4e0",
            "-1",
            "0.000000000000000000001",
        ])
        .prop_map(|s| serde_json::from_str::<Value>(s).unwrap()),
    ]
}

/// Arbitrary JSON values, bounded in depth and size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        short_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((short_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// One edit of a valid document.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the node at (index into all paths) with a value.
    Replace(Index, Value),
    /// Delete the key at (index into all object keys).
    Delete(Index),
    /// Cut the text at a byte.
    Truncate(Index),
    /// Overwrite one byte of the text.
    Byte(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
    ]
}

/// A step of a path into a JSON document.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn all_paths(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Step::Key(k.clone()));
                all_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Step::At(i));
                all_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'v>(mut v: &'v mut Value, path: &[Step]) -> &'v mut Value {
    for step in path {
        v = match step {
            Step::Key(k) => &mut v[k.as_str()],
            Step::At(i) => &mut v[*i],
        };
    }
    v
}

/// Applies `m` to the document `seed`, returning the bytes to parse.
fn mutate(seed: &str, m: &Mutation) -> Vec<u8> {
    let mut doc: Value = serde_json::from_str(seed).unwrap();
    let mut paths = Vec::new();
    all_paths(&doc, &mut Vec::new(), &mut paths);
    match m {
        Mutation::Replace(i, value) => {
            let path = &paths[i.index(paths.len())];
            *node_mut(&mut doc, path) = value.clone();
            serde_json::to_vec_pretty(&doc).unwrap()
        }
        Mutation::Delete(i) => {
            // Paths whose last step is an object key or array element.
            let deletable: Vec<&Vec<Step>> = paths.iter().filter(|p| !p.is_empty()).collect();
            if deletable.is_empty() {
                // An earlier mutation left a scalar or an empty container.
                return serde_json::to_vec_pretty(&doc).unwrap();
            }
            let path = deletable[i.index(deletable.len())];
            let (last, parent) = path.split_last().unwrap();
            match (node_mut(&mut doc, parent), last) {
                (Value::Object(map), Step::Key(k)) => {
                    map.shift_remove(k.as_str());
                }
                (Value::Array(a), Step::At(j)) => {
                    a.remove(*j);
                }
                _ => unreachable!("path steps match the document"),
            }
            serde_json::to_vec_pretty(&doc).unwrap()
        }
        Mutation::Truncate(_) | Mutation::Byte(..) if seed.is_empty() => Vec::new(),
        Mutation::Truncate(i) => {
            let bytes = seed.as_bytes();
            bytes[..i.index(bytes.len())].to_vec()
        }
        Mutation::Byte(i, b) => {
            let mut bytes = seed.as_bytes().to_vec();
            let at = i.index(bytes.len());
            bytes[at] = *b;
            bytes
        }
    }
}

// ---------------------------------------------------------------------------
// tfstate::parse
// ---------------------------------------------------------------------------

/// Found by `state_mutations`: error messages quoted strings from the input
/// raw, so a hostile name with a newline or a quote made a multi-line or
/// ambiguous error. They are escaped now (`{name:?}` in src/tfstate.rs).
#[test]
fn state_errors_escape_input_strings() {
    let cases = [
        r#"{"version": 4, "terraform_version": "1", "serial": 1, "lineage": "x", "outputs": {"a\nb": null}}"#,
        r#"{"version": 4, "terraform_version": "1", "serial": 1, "lineage": "x", "resources": [{"mode": "m\nx", "type": "t", "name": "n", "provider": "p", "instances": []}]}"#,
        r#"{"version": 4, "terraform_version": "1", "serial": 1, "lineage": "x", "resources": [{"mode": "managed", "type": "t", "name": "n", "each": "l\nx", "provider": "p", "instances": []}]}"#,
        r#"{"version": 4, "terraform_version": "1", "serial": 1, "lineage": "x", "resources": [{"mode": "managed", "type": "t", "name": "n", "provider": "p", "instances": [{"schema_version": 0, "attributes": {}, "dependencies": ["a\nb"]}]}]}"#,
    ];
    let mut multi_line = Vec::new();
    for doc in cases {
        let e = tfstate::parse(doc.as_bytes()).unwrap_err().to_string();
        if e.contains('\n') {
            multi_line.push(e);
        }
    }
    assert!(
        multi_line.is_empty(),
        "multi-line state errors: {multi_line:#?}"
    );
}

/// A state error must be one clear sentence: non-empty, one line, no panic
/// text, no Rust Debug output.
fn assert_clear(msg: &str, input: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        !msg.trim().is_empty(),
        "empty error for {:?}",
        String::from_utf8_lossy(input)
    );
    for bad in [
        "panicked", "Some(", "None", "Ok(", "Err(", "Object {", "String(", "Number(",
    ] {
        prop_assert!(!msg.contains(bad), "error {msg:?} contains {bad:?}");
    }
    prop_assert!(!msg.contains('\n'), "error {msg:?} spans several lines");
    Ok(())
}

fn check_state(bytes: &[u8]) -> Result<(), TestCaseError> {
    match tfstate::parse(bytes) {
        Ok(state) => {
            let json = state.to_json();
            let again = tfstate::parse(&json);
            prop_assert!(
                again.is_ok(),
                "re-parsing the written state fails: {}\n{}",
                again.unwrap_err(),
                String::from_utf8_lossy(&json)
            );
            prop_assert_eq!(&state, &again.unwrap());
            let _ = state.object_count();
        }
        Err(e) => assert_clear(&e.to_string(), bytes)?,
    }
    Ok(())
}

#[test]
fn state_seed_is_valid() {
    let s = tfstate::parse(SMALL_STATE.as_bytes()).unwrap();
    assert_eq!(s, tfstate::parse(&s.to_json()).unwrap());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn state_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_state(&bytes)?;
    }

    #[test]
    fn state_arbitrary_json(v in json_value()) {
        check_state(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn state_arbitrary_json_with_version_4(mut v in json_value()) {
        // Get past the version check more often than random values do.
        if let Value::Object(m) = &mut v {
            m.insert("version".into(), Value::from(4));
        }
        check_state(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn state_mutations(ms in prop::collection::vec(mutation(), 1..3)) {
        // Mutations apply one after the other while the text stays JSON.
        let mut text = SMALL_STATE.to_string();
        let mut bytes = text.clone().into_bytes();
        for m in &ms {
            bytes = mutate(&text, m);
            match String::from_utf8(bytes.clone()) {
                Ok(t) if serde_json::from_str::<Value>(&t).is_ok() => text = t,
                _ => break,
            }
        }
        check_state(&bytes)?;
    }
}

// ---------------------------------------------------------------------------
// terraform::plan::parse
// ---------------------------------------------------------------------------

fn check_plan(bytes: &[u8]) -> Result<(), TestCaseError> {
    match plan::parse(bytes) {
        Ok(p) => {
            let _ = p.changed_addresses();
            let _ = p.configuration_edges();
            let _ = p.output_references();
            if let Some(prior) = p.prior_state.as_ref().and_then(|s| s.values.as_ref()) {
                let _ = prior.root_module.all_resources();
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.trim().is_empty());
            prop_assert!(!msg.contains("panicked"));
        }
    }
    Ok(())
}

#[test]
fn plan_seed_is_valid() {
    let p = plan::parse(CHAIN_PLAN.as_bytes()).unwrap();
    assert!(!p.changed_addresses().is_empty());
    assert!(!p.configuration_edges().is_empty());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plan_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_plan(&bytes)?;
    }

    #[test]
    fn plan_arbitrary_json(mut v in json_value(), format_1 in any::<bool>()) {
        if format_1 {
            if let Value::Object(m) = &mut v {
                m.insert("format_version".into(), Value::from("1.2"));
            }
        }
        check_plan(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn plan_mutations(ms in prop::collection::vec(mutation(), 1..4)) {
        let mut text = CHAIN_PLAN.to_string();
        let mut bytes = text.clone().into_bytes();
        for m in &ms {
            bytes = mutate(&text, m);
            match String::from_utf8(bytes.clone()) {
                Ok(t) if serde_json::from_str::<Value>(&t).is_ok() => text = t,
                _ => break,
            }
        }
        check_plan(&bytes)?;
    }
}

// ---------------------------------------------------------------------------
// address parsers
// ---------------------------------------------------------------------------

/// Strings built from the pieces of the address syntax.
fn address_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("module.".to_string()),
        Just("data.".to_string()),
        Just("module".to_string()),
        Just("data".to_string()),
        Just(".".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\\"".to_string()),
        Just("\\n".to_string()),
        Just("\\u00e9".to_string()),
        Just("\\U0001F600".to_string()),
        Just("$${".to_string()),
        Just("%%{".to_string()),
        Just("${".to_string()),
        Just("*".to_string()),
        Just("-".to_string()),
        Just(" ".to_string()),
        Just("é".to_string()),
        Just("\u{200b}".to_string()),
        Just("\u{e000}".to_string()),
        "[a-z_][a-z0-9_-]{0,4}",
        "[0-9]{1,3}",
        Just("99999999999999999999".to_string()),
        Just("-1".to_string()),
        Just("aws_instance".to_string()),
    ];
    prop::collection::vec(token, 0..12).prop_map(|t| t.concat())
}

/// Well-formed-ish instance addresses, so round trips get exercised often.
fn address_shaped() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just(String::new()),
        (0u32..20).prop_map(|i| format!("[{i}]")),
        "\\PC{0,4}".prop_map(|s| format!("[{}]", serde_json::to_string(&s).unwrap())),
        "[a-z\"\\\\$%{}]{0,4}".prop_map(|s| format!("[\"{s}\"]")),
    ];
    let step = ("[a-z_][a-z0-9_-]{0,3}", key.clone()).prop_map(|(n, k)| format!("module.{n}{k}."));
    (
        prop::collection::vec(step, 0..3),
        prop::bool::ANY,
        "[a-z_][a-z0-9_-]{0,3}",
        "[a-z_][a-z0-9_-]{0,3}",
        key,
    )
        .prop_map(|(steps, data, t, n, k)| {
            format!(
                "{}{}{t}.{n}{k}",
                steps.concat(),
                if data { "data." } else { "" }
            )
        })
}

fn any_address() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => address_like(),
        2 => address_shaped(),
        1 => "\\PC{0,16}",
        1 => any::<String>(),
    ]
}

fn check_address_error(
    s: &str,
    e: &stategraph::address::AddressError,
) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert_eq!(&e.input, s);
    prop_assert!(
        msg.contains(&format!("{s:?}")),
        "error {msg:?} does not show the input"
    );
    prop_assert!(
        msg.contains(&format!("column {}", e.column)),
        "error {msg:?} has no column"
    );
    prop_assert!(e.column >= 1, "column 0 in {msg:?}");
    prop_assert!(
        e.column <= s.chars().count() + 1,
        "column {} past the end of {s:?}",
        e.column
    );
    prop_assert!(!e.message.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(config_with(1024))]

    #[test]
    fn address_instance(s in any_address()) {
        match parse_instance(&s) {
            Ok(addr) => {
                let printed = addr.to_string();
                let again = parse_instance(&printed);
                prop_assert!(again.is_ok(), "{s:?} -> {printed:?} does not parse: {}", again.unwrap_err());
                prop_assert_eq!(again.unwrap(), addr);
            }
            Err(e) => check_address_error(&s, &e)?,
        }
    }

    #[test]
    fn address_resource(s in any_address()) {
        match parse_resource(&s) {
            Ok(addr) => {
                let printed = addr.to_string();
                let again = parse_resource(&printed);
                prop_assert!(again.is_ok(), "{s:?} -> {printed:?} does not parse: {}", again.unwrap_err());
                prop_assert_eq!(again.unwrap(), addr);
            }
            Err(e) => check_address_error(&s, &e)?,
        }
    }

    #[test]
    fn address_module_path(s in any_address()) {
        match parse_module_path(&s) {
            Ok(path) => {
                let printed = path.to_string();
                let again = parse_module_path(&printed);
                prop_assert!(again.is_ok(), "{s:?} -> {printed:?} does not parse: {}", again.unwrap_err());
                prop_assert_eq!(again.unwrap(), path);
            }
            Err(e) => check_address_error(&s, &e)?,
        }
    }

    #[test]
    fn address_target(s in any_address()) {
        match parse_target(&s) {
            Ok(target) => {
                let printed = target.to_string();
                let again = parse_target(&printed);
                prop_assert!(again.is_ok(), "{s:?} -> {printed:?} does not parse: {}", again.unwrap_err());
                prop_assert_eq!(again.unwrap(), target);
            }
            Err(e) => check_address_error(&s, &e)?,
        }
    }
}

// ---------------------------------------------------------------------------
// StateGraph::build and cone
// ---------------------------------------------------------------------------

/// A generated instance: module steps (name, key text), resource, key, and
/// dependencies (configuration addresses).
#[derive(Debug, Clone)]
struct GenInstance {
    steps: Vec<(String, String)>,
    resource: String,
    key: String,
    dependencies: Vec<String>,
}

impl GenInstance {
    fn address(&self) -> String {
        let mut s = String::new();
        for (name, key) in &self.steps {
            s.push_str(&format!("module.{name}{key}."));
        }
        s.push_str(&self.resource);
        s.push_str(&self.key);
        s
    }

    fn config(&self) -> String {
        let mut s = String::new();
        for (name, _) in &self.steps {
            s.push_str(&format!("module.{name}."));
        }
        s.push_str(&self.resource);
        s
    }
}

fn module_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b"]).prop_map(str::to_string),
        0..3,
    )
}

fn resource_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["t.x", "t.y", "t.z", "data.t.x"]).prop_map(str::to_string)
}

fn config_address() -> impl Strategy<Value = String> {
    (module_names(), resource_name()).prop_map(|(m, r)| {
        let mut s: String = m.iter().map(|n| format!("module.{n}.")).collect();
        s.push_str(&r);
        s
    })
}

fn gen_instance() -> impl Strategy<Value = GenInstance> {
    let key = || prop::sample::select(vec!["", "[0]", "[1]", "[\"k\"]"]).prop_map(str::to_string);
    (
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b"]).prop_map(str::to_string),
                key(),
            ),
            0..3,
        ),
        resource_name(),
        key(),
        prop::collection::vec(config_address(), 0..4),
    )
        .prop_map(|(steps, resource, key, dependencies)| GenInstance {
            steps,
            resource,
            key,
            dependencies,
        })
}

/// The instances `dependency` of instance `i` stands for: the dependency's
/// instances in the same instances of the module steps both share.
fn dependency_instances<'g>(
    i: &GenInstance,
    dependency: &str,
    all: &'g [GenInstance],
) -> Vec<&'g GenInstance> {
    let names: Vec<&str> = {
        let mut names = Vec::new();
        let mut rest = dependency;
        while let Some(after) = rest.strip_prefix("module.") {
            let (name, tail) = after.split_once('.').unwrap();
            names.push(name);
            rest = tail;
        }
        names
    };
    let shared = names
        .iter()
        .zip(&i.steps)
        .take_while(|(n, (m, _))| *n == m)
        .count();
    all.iter()
        .filter(|j| j.config() == dependency && j.steps[..shared] == i.steps[..shared])
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn graph_build_and_cone(
        instances in prop::collection::vec(gen_instance(), 0..12),
        picks in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let addresses: Vec<String> = instances.iter().map(GenInstance::address).collect();
        let configs: Vec<String> = instances.iter().map(GenInstance::config).collect();
        let inputs = instances.iter().enumerate().map(|(n, i)| InstanceInput {
            address: &addresses[n],
            config_resource: &configs[n],
            dependencies: &i.dependencies,
        });
        let graph = match StateGraph::build(inputs) {
            Ok(g) => g,
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty() && !msg.contains("panicked"));
                return Ok(());
            }
        };
        prop_assert_eq!(graph.instance_count(), instances.len());
        if instances.is_empty() {
            prop_assert_eq!(graph.cone(&[]).unwrap(), Default::default());
            return Ok(());
        }
        let changed: Vec<&str> = picks
            .iter()
            .map(|p| addresses[p.index(addresses.len())].as_str())
            .collect();
        let cone = graph.cone(&changed);
        prop_assert!(cone.is_ok(), "cone of {changed:?} fails: {}", cone.unwrap_err());
        let cone = cone.unwrap();

        let write: HashSet<&str> = cone.write.iter().map(String::as_str).collect();
        let read: HashSet<&str> = cone.read.iter().map(String::as_str).collect();
        prop_assert_eq!(write.len(), cone.write.len(), "write repeats an instance");
        prop_assert_eq!(read.len(), cone.read.len(), "read repeats an instance");
        prop_assert!(write.is_disjoint(&read), "write and read overlap: {:?}", cone);
        for c in &changed {
            prop_assert!(write.contains(c), "changed {c} not in write {:?}", cone.write);
        }
        for a in write.iter().chain(&read) {
            prop_assert!(graph.contains(a), "cone names {a}, not an instance");
        }
        for (n, inst) in instances.iter().enumerate() {
            if !write.contains(addresses[n].as_str()) {
                continue;
            }
            for dep in &inst.dependencies {
                for j in dependency_instances(inst, dep, &instances) {
                    let a = j.address();
                    prop_assert!(
                        write.contains(a.as_str()) || read.contains(a.as_str()),
                        "{} (written) depends on {dep}: {a} is neither written nor read in {:?}",
                        addresses[n],
                        cone
                    );
                }
            }
        }
        // Downstream closure: every dependent of a written instance is written.
        for (n, inst) in instances.iter().enumerate() {
            for dep in &inst.dependencies {
                if dependency_instances(inst, dep, &instances)
                    .iter()
                    .any(|j| write.contains(j.address().as_str()))
                {
                    prop_assert!(
                        write.contains(addresses[n].as_str()),
                        "{} depends on a written instance through {dep} but is not written: {:?}",
                        addresses[n],
                        cone
                    );
                }
            }
        }
        // An unknown address is refused, not a panic.
        prop_assert!(graph.cone(&["module.zz.t.nope"]).is_err());
    }
}
