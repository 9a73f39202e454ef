//! Types for `terraform show -json PLANFILE` (plan format 1.x) and the
//! questions stategraph asks of a plan: which addresses change, and which
//! configuration-level dependency edges the configuration declares.
//!
//! Pure: parsing and walking only. Values (`before`/`after`, resource
//! attribute values) are not kept: stategraph needs addresses and edges.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

/// Why a plan JSON was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("terraform's plan JSON is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "terraform's plan JSON has format_version {found:?}, and stategraph reads 1.x; \
         use a terraform (or OpenTofu) whose `show -json` writes format 1.x, or upgrade stategraph"
    )]
    Version { found: String },
}

/// A parsed plan.
#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    pub format_version: String,
    #[serde(default)]
    pub terraform_version: Option<String>,
    #[serde(default)]
    pub resource_changes: Vec<ResourceChange>,
    #[serde(default)]
    pub resource_drift: Vec<ResourceChange>,
    #[serde(default)]
    pub output_changes: BTreeMap<String, Change>,
    #[serde(default)]
    pub prior_state: Option<PriorState>,
    #[serde(default)]
    pub configuration: Option<Configuration>,
    #[serde(default)]
    pub relevant_attributes: Vec<RelevantAttribute>,
    /// False under `-target` (and whenever terraform left work out).
    #[serde(default = "yes")]
    pub complete: bool,
    #[serde(default)]
    pub errored: bool,
}

fn yes() -> bool {
    true
}

/// One entry of `resource_changes` / `resource_drift`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    /// Set when a `moved` block renamed the object.
    #[serde(default)]
    pub previous_address: Option<String>,
    #[serde(default)]
    pub module_address: Option<String>,
    pub mode: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    #[serde(default)]
    pub index: Option<Value>,
    /// Present for a deposed object.
    #[serde(default)]
    pub deposed: Option<String>,
    pub provider_name: String,
    pub change: Change,
    #[serde(default)]
    pub action_reason: Option<String>,
}

/// A planned change: its actions, and whether it imports.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub actions: Vec<String>,
    /// Set when an `import` block brings the object in.
    #[serde(default)]
    pub importing: Option<Value>,
}

impl Change {
    /// Anything but `no-op` and `read` (data sources read during plan), and
    /// an import (a no-op that writes a row).
    pub fn is_change(&self) -> bool {
        self.importing.as_ref().is_some_and(|i| !i.is_null())
            || !self.actions.iter().all(|a| a == "no-op" || a == "read")
    }
}

/// `prior_state`: the state the plan started from (after refresh).
#[derive(Debug, Clone, Deserialize)]
pub struct PriorState {
    #[serde(default)]
    pub format_version: Option<String>,
    #[serde(default)]
    pub values: Option<StateValues>,
}

/// `prior_state.values`.
#[derive(Debug, Clone, Deserialize)]
pub struct StateValues {
    pub root_module: StateModule,
}

/// A module of `prior_state` with its children.
#[derive(Debug, Clone, Deserialize)]
pub struct StateModule {
    /// Absent for the root module.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub resources: Vec<StateResource>,
    #[serde(default)]
    pub child_modules: Vec<StateModule>,
}

/// One instance in `prior_state`.
#[derive(Debug, Clone, Deserialize)]
pub struct StateResource {
    pub address: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    #[serde(default)]
    pub index: Option<Value>,
    pub provider_name: String,
    /// Config-level addresses (module keys removed), as in the state's `dependencies`.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

impl StateModule {
    /// Every resource instance of this module and its descendants.
    pub fn all_resources(&self) -> Vec<&StateResource> {
        let mut out: Vec<&StateResource> = self.resources.iter().collect();
        for child in &self.child_modules {
            out.extend(child.all_resources());
        }
        out
    }
}

/// `configuration`: the configuration as terraform decoded it.
#[derive(Debug, Clone, Deserialize)]
pub struct Configuration {
    pub root_module: ConfigModule,
}

/// One module of the configuration; addresses inside are module-relative.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigModule {
    #[serde(default)]
    pub resources: Vec<ConfigResource>,
    #[serde(default)]
    pub module_calls: BTreeMap<String, ModuleCall>,
    #[serde(default)]
    pub outputs: BTreeMap<String, ConfigOutput>,
}

/// A resource block.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigResource {
    /// Module-relative: `aws_x.y`, `data.aws_z.w`.
    pub address: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    /// Attribute and nested-block expressions (walked for `references`).
    #[serde(default)]
    pub expressions: Value,
    #[serde(default)]
    pub count_expression: Option<Value>,
    #[serde(default)]
    pub for_each_expression: Option<Value>,
    #[serde(default)]
    pub provisioners: Option<Value>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub depends_on: Vec<String>,
}

/// A `module` block and the module it calls.
#[derive(Debug, Clone, Deserialize)]
pub struct ModuleCall {
    #[serde(default)]
    pub source: Option<String>,
    /// Input variable expressions.
    #[serde(default)]
    pub expressions: BTreeMap<String, Value>,
    #[serde(default)]
    pub count_expression: Option<Value>,
    #[serde(default)]
    pub for_each_expression: Option<Value>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub module: ConfigModule,
}

/// An `output` block.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigOutput {
    #[serde(default)]
    pub expression: Value,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub sensitive: bool,
}

/// One `relevant_attributes` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct RelevantAttribute {
    pub resource: String,
    #[serde(default)]
    pub attribute: Value,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Parses the output of `terraform show -json PLANFILE`, refusing an unknown major format.
pub fn parse(bytes: &[u8]) -> Result<Plan, PlanError> {
    #[derive(Deserialize)]
    struct Head {
        format_version: String,
    }
    let head: Head = serde_json::from_slice(bytes)?;
    if head.format_version.split('.').next() != Some("1") {
        return Err(PlanError::Version {
            found: head.format_version,
        });
    }
    Ok(serde_json::from_slice(bytes)?)
}

impl Plan {
    /// Instance addresses whose actions are not `no-op`/`read`, sorted, deduplicated.
    pub fn changed_addresses(&self) -> Vec<String> {
        let mut set: BTreeSet<&str> = BTreeSet::new();
        for rc in &self.resource_changes {
            // A move (a `moved` block) changes the stored rows of both
            // addresses, whatever its action.
            let moved = rc.previous_address.as_deref().filter(|p| *p != rc.address);
            if rc.change.is_change() || moved.is_some() {
                set.insert(rc.address.as_str());
            }
            set.extend(moved);
        }
        set.into_iter().map(str::to_owned).collect()
    }

    /// `(dependent, dependency)` pairs of absolute configuration addresses
    /// (module keys removed: `module.m.aws_x.y`), from expression
    /// references, `count`/`for_each`, provisioners and `depends_on`.
    ///
    /// Nodes are resources (`module.m.aws_x.y`, `data.` included) and module
    /// outputs (`module.m.output.o`). A module's input variables are
    /// resolved through the calling block's expressions; `local.*` cannot be
    /// (plan JSON has no locals) and is dropped, as are root `var.*`,
    /// `each.*`, `count.*`, `path.*`, `terraform.*` and `self`. Everything in
    /// a module also depends on its call's `count`/`for_each`/`depends_on`.
    pub fn configuration_edges(&self) -> Vec<(String, String)> {
        let mut edges = BTreeSet::new();
        if let Some(config) = &self.configuration {
            let root = Scope {
                prefix: String::new(),
                module: &config.root_module,
                parent: None,
            };
            walk_module(&root, &[], &mut edges);
        }
        edges.into_iter().collect()
    }

    /// `(root output name, dependency)` pairs, dependencies as in
    /// [`Plan::configuration_edges`].
    pub fn output_references(&self) -> Vec<(String, String)> {
        let mut out = BTreeSet::new();
        if let Some(config) = &self.configuration {
            let root = Scope {
                prefix: String::new(),
                module: &config.root_module,
                parent: None,
            };
            for (name, output) in &config.root_module.outputs {
                let mut refs = references(&output.expression);
                refs.extend(output.depends_on.iter().cloned());
                for dep in resolve_all(&root, &refs) {
                    out.insert((name.clone(), dep));
                }
            }
        }
        out.into_iter().collect()
    }
}

/// What the cone needs of a configuration, independent of variable values
/// and of the state: its dependency edges, root outputs and what they
/// reference. Cached by a fingerprint of the configuration's files, so that
/// most runs need no `show -json` (one terraform run fewer).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ConfigInfo {
    /// See [`Plan::configuration_edges`].
    pub edges: Vec<(String, String)>,
    /// See [`Plan::output_references`].
    pub output_refs: Vec<(String, String)>,
    /// Names of the root module's outputs.
    pub outputs: Vec<String>,
    /// `(block, trigger)`: resource blocks and what their
    /// `replace_triggered_by` names (configuration addresses), from the
    /// configuration's HCL (terraform's plan JSON does not say).
    #[serde(default)]
    pub triggers: Vec<(String, String)>,
}

impl Plan {
    /// The plan's [`ConfigInfo`].
    pub fn config_info(&self) -> ConfigInfo {
        ConfigInfo {
            edges: self.configuration_edges(),
            output_refs: self.output_references(),
            outputs: self
                .configuration
                .as_ref()
                .map(|c| c.root_module.outputs.keys().cloned().collect())
                .unwrap_or_default(),
            triggers: Vec::new(),
        }
    }
}

/// What a `terraform plan -json` run printed: the instances it plans to
/// change (as [`Plan::changed_addresses`] reads them from `show -json`), and
/// whether it reported errors.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Streamed {
    pub changed: Vec<String>,
    /// Root outputs the plan adds, changes or removes.
    pub outputs: Vec<String>,
    pub errors: usize,
}

/// Reads terraform's machine-readable UI output (`plan -json`, one JSON
/// object per line). Lines that are not JSON objects are ignored.
pub fn parse_stream(bytes: &[u8]) -> Streamed {
    let mut changed = BTreeSet::new();
    let mut outputs = BTreeSet::new();
    let mut errors = 0;
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        match msg.get("type").and_then(Value::as_str) {
            Some("planned_change") => {
                let change = &msg["change"];
                // No-op and read are not changes; an import (a no-op that
                // writes a row) is, and a move (a `moved` block) is, of
                // both addresses.
                let moved = change["previous_resource"]["addr"].as_str();
                let is_change = moved.is_some()
                    || !change["importing"].is_null()
                    || matches!(
                        change["action"].as_str(),
                        Some("create" | "update" | "replace" | "delete" | "remove" | "move")
                    );
                if let (true, Some(addr)) = (is_change, change["resource"]["addr"].as_str()) {
                    changed.insert(addr.to_owned());
                    changed.extend(moved.filter(|p| *p != addr).map(str::to_owned));
                }
            }
            Some("outputs") => {
                for (name, o) in msg["outputs"].as_object().into_iter().flatten() {
                    if o["action"].as_str().is_some_and(|a| a != "noop") {
                        outputs.insert(name.clone());
                    }
                }
            }
            Some("diagnostic") if msg["@level"] == "error" => errors += 1,
            _ => {}
        }
    }
    Streamed {
        changed: changed.into_iter().collect(),
        outputs: outputs.into_iter().collect(),
        errors,
    }
}

/// A module being walked: its absolute prefix (`module.a.module.b.`), and
/// the calling module with the call's name, for resolving `var.*`.
struct Scope<'a> {
    prefix: String,
    module: &'a ConfigModule,
    parent: Option<(&'a Scope<'a>, &'a ModuleCall)>,
}

fn walk_module(scope: &Scope<'_>, inherited: &[String], edges: &mut BTreeSet<(String, String)>) {
    for r in &scope.module.resources {
        let from = format!("{}{}", scope.prefix, r.address);
        let mut refs = references(&r.expressions);
        for e in [&r.count_expression, &r.for_each_expression, &r.provisioners]
            .into_iter()
            .flatten()
        {
            refs.extend(references(e));
        }
        refs.extend(r.depends_on.iter().cloned());
        for dep in resolve_all(scope, &refs) {
            if dep != from {
                edges.insert((from.clone(), dep));
            }
        }
        for dep in inherited {
            edges.insert((from.clone(), dep.clone()));
        }
    }
    for (name, output) in &scope.module.outputs {
        if scope.parent.is_none() {
            continue; // root outputs: Plan::output_references
        }
        let from = format!("{}output.{name}", scope.prefix);
        let mut refs = references(&output.expression);
        refs.extend(output.depends_on.iter().cloned());
        for dep in resolve_all(scope, &refs) {
            edges.insert((from.clone(), dep));
        }
    }
    for (name, call) in &scope.module.module_calls {
        // What everything inside depends on through the call itself.
        let mut call_refs = Vec::new();
        for e in [&call.count_expression, &call.for_each_expression]
            .into_iter()
            .flatten()
        {
            call_refs.extend(references(e));
        }
        call_refs.extend(call.depends_on.iter().cloned());
        let mut inner_inherited: Vec<String> = inherited.to_vec();
        inner_inherited.extend(resolve_all(scope, &call_refs));
        inner_inherited.sort();
        inner_inherited.dedup();
        let child = Scope {
            prefix: format!("{}module.{name}.", scope.prefix),
            module: &call.module,
            parent: Some((scope, call)),
        };
        walk_module(&child, &inner_inherited, edges);
    }
}

/// Every `references` list (of strings) anywhere inside an expression tree.
fn references(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_references(v, &mut out);
    out
}

fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("references", Value::Array(items)) if items.iter().all(Value::is_string) => {
                        out.extend(items.iter().filter_map(|s| s.as_str().map(str::to_owned)));
                    }
                    _ => collect_references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_references(i, out)),
        _ => {}
    }
}

fn resolve_all(scope: &Scope<'_>, refs: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in refs {
        resolve(scope, r, &mut out, 0);
    }
    out
}

/// Turns one module-relative reference into absolute dependency nodes.
fn resolve(scope: &Scope<'_>, reference: &str, out: &mut BTreeSet<String>, depth: usize) {
    let parts = split_reference(reference);
    let Some(first) = parts.first() else { return };
    match first.as_str() {
        "var" => {
            let (Some(name), Some((parent, call))) = (parts.get(1), scope.parent) else {
                return;
            };
            if depth > 64 {
                return;
            }
            if let Some(expr) = call.expressions.get(name) {
                for r in references(expr) {
                    resolve(parent, &r, out, depth + 1);
                }
            }
        }
        "module" => {
            let Some(name) = parts.get(1) else { return };
            let Some(call) = scope.module.module_calls.get(name) else {
                return;
            };
            match parts.get(2) {
                Some(output) if call.module.outputs.contains_key(output) => {
                    out.insert(format!("{}module.{name}.output.{output}", scope.prefix));
                }
                _ => {
                    // The whole module object: every output of it.
                    for output in call.module.outputs.keys() {
                        out.insert(format!("{}module.{name}.output.{output}", scope.prefix));
                    }
                }
            }
        }
        "data" => {
            if let (Some(t), Some(n)) = (parts.get(1), parts.get(2)) {
                out.insert(format!("{}data.{t}.{n}", scope.prefix));
            }
        }
        "local" | "each" | "count" | "path" | "terraform" | "self" => {}
        t => {
            if let Some(n) = parts.get(1) {
                out.insert(format!("{}{t}.{n}", scope.prefix));
            }
        }
    }
}

/// `module.m["a"].out` -> `["module", "m", "out"]`: dot-separated names with
/// index brackets (and what is quoted inside them) dropped.
fn split_reference(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for c in s.chars() {
        if depth > 0 {
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_str = false;
                }
            } else if c == '"' {
                in_str = true;
            } else if c == '[' {
                depth += 1;
            } else if c == ']' {
                depth -= 1;
            }
            continue;
        }
        match c {
            '[' => depth += 1,
            '.' => {
                if !cur.is_empty() {
                    parts.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refresh-less plan of `fixtures/tf/chain` changing `gen["a"]`, from
    /// terraform 1.11.4 (values trimmed).
    const CHAIN: &str = include_str!("testdata/chain_plan.json");

    fn chain() -> Plan {
        parse(CHAIN.as_bytes()).expect("the chain plan parses")
    }

    #[test]
    fn an_import_is_a_change_in_the_stream() {
        // As terraform 1.11 streams an `import` block's planned change.
        let stream = br#"{"type":"planned_change","change":{"resource":{"addr":"terraform_data.legacy"},"action":"import","importing":{"id":"legacy-1"}}}
{"type":"planned_change","change":{"resource":{"addr":"terraform_data.a"},"action":"noop"}}"#;
        assert_eq!(parse_stream(stream).changed, ["terraform_data.legacy"]);
    }

    #[test]
    fn changed_addresses_of_chain() {
        let plan = chain();
        assert!(plan.complete && !plan.errored);
        assert_eq!(
            plan.changed_addresses(),
            [
                r#"module.branch["a"].terraform_data.l1"#,
                r#"module.branch["a"].terraform_data.l2"#,
            ]
        );
        let l1 = &plan
            .resource_changes
            .iter()
            .find(|rc| rc.name == "l1")
            .unwrap();
        assert_eq!(l1.change.actions, ["delete", "create"]);
        assert_eq!(l1.module_address.as_deref(), Some(r#"module.branch["a"]"#));
    }

    #[test]
    fn configuration_edges_of_chain() {
        let edges = chain().configuration_edges();
        let has = |a: &str, b: &str| edges.iter().any(|(x, y)| x == a && y == b);
        // Through the module input variable root_id.
        assert!(
            has("module.branch.terraform_data.l1", "terraform_data.root"),
            "{edges:?}"
        );
        assert!(has(
            "module.branch.terraform_data.l2",
            "module.branch.terraform_data.l1"
        ));
        assert!(has(
            "module.branch.terraform_data.l4",
            "module.branch.terraform_data.l3"
        ));
        assert!(has(
            "module.branch.output.tail_id",
            "module.branch.terraform_data.l4"
        ));
        // `module.branch` as a whole object: all its outputs.
        assert!(has("terraform_data.join", "module.branch.output.tail_id"));
        // No var/local/count/each nodes.
        assert!(edges
            .iter()
            .all(|(a, b)| !b.starts_with("var.") && !b.contains("count") && a != b));
        assert!(!edges.iter().any(|(a, _)| a == "terraform_data.island"));
        assert_eq!(edges.len(), 6, "{edges:?}");
    }

    #[test]
    fn output_references_of_chain() {
        assert_eq!(
            chain().output_references(),
            [
                ("root_id".to_owned(), "terraform_data.root".to_owned()),
                (
                    "tails".to_owned(),
                    "module.branch.output.tail_id".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn prior_state_depends_on() {
        let plan = chain();
        let root = &plan
            .prior_state
            .as_ref()
            .unwrap()
            .values
            .as_ref()
            .unwrap()
            .root_module;
        let all = root.all_resources();
        assert_eq!(all.len(), 19);
        let l2 = all
            .iter()
            .find(|r| r.address == r#"module.branch["a"].terraform_data.l2"#)
            .unwrap();
        assert_eq!(
            l2.depends_on,
            ["module.branch.terraform_data.l1", "terraform_data.root"]
        );
    }

    #[test]
    fn refuses_unknown_major_format() {
        let err = parse(br#"{"format_version":"2.0"}"#).unwrap_err();
        assert!(err.to_string().contains("\"2.0\""), "{err}");
        assert!(parse(br#"{"format_version":"1.9","complete":false}"#).is_ok());
    }

    #[test]
    fn splits_references() {
        assert_eq!(
            split_reference(r#"module.m["a.b"].out"#),
            ["module", "m", "out"]
        );
        assert_eq!(split_reference("aws_x.y[0].id"), ["aws_x", "y", "id"]);
        assert_eq!(split_reference("data.t.n"), ["data", "t", "n"]);
    }

    #[test]
    fn resolves_nested_modules_and_depends_on() {
        let json = r#"{
          "format_version": "1.2",
          "configuration": {"root_module": {
            "resources": [
              {"address": "aws_vpc.main", "mode": "managed", "type": "aws_vpc", "name": "main", "expressions": {}},
              {"address": "data.aws_ami.x", "mode": "data", "type": "aws_ami", "name": "x", "expressions": {}}
            ],
            "module_calls": {"net": {
              "expressions": {"vpc_id": {"references": ["aws_vpc.main.id", "aws_vpc.main"]}},
              "depends_on": ["data.aws_ami.x"],
              "module": {
                "module_calls": {"sub": {
                  "expressions": {"v": {"references": ["var.vpc_id"]}},
                  "module": {"resources": [
                    {"address": "aws_subnet.s", "mode": "managed", "type": "aws_subnet", "name": "s",
                     "expressions": {"vpc_id": {"references": ["var.v"]},
                                     "tags": [{"x": {"references": ["local.t"]}}]}}
                  ]}
                }}
              }
            }}
          }}
        }"#;
        let edges = parse(json.as_bytes()).unwrap().configuration_edges();
        assert_eq!(
            edges,
            [
                (
                    "module.net.module.sub.aws_subnet.s".to_owned(),
                    "aws_vpc.main".to_owned()
                ),
                (
                    "module.net.module.sub.aws_subnet.s".to_owned(),
                    "data.aws_ami.x".to_owned()
                ),
            ]
        );
    }
}
