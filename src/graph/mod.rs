//! The resource graph of one state and the change cone computed on it.
//!
//! This module owns the petgraph model: one node per resource instance
//! (deposed objects are not nodes of their own), internal aggregation nodes
//! for dependencies, and one node per root output. Edges run from a
//! dependency to its dependent. State v4 `dependencies` name configuration
//! resources (module keys removed: `module.m.terraform_data.a` even when `m`
//! has `count`); the module steps a dependency shares with its dependent are
//! bound to the dependent's own module keys (see [`StateGraph::build`]), so
//! `module.m[0]` never depends on `module.m[1]`. An instance depends on an
//! aggregation node, which depends on every instance it stands for: the edge
//! count stays linear in the size of the state instead of instances².
//!
//! It must not do I/O: callers build it from rows or a parsed state, and
//! use the cone to decide what to lock, refresh and target.

mod cone;
pub mod render;

pub use cone::Cone;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::address::{self, AddressError, Target};

/// One resource instance as the graph needs it.
#[derive(Debug, Clone, Copy)]
pub struct InstanceInput<'a> {
    /// Full instance address, e.g. `module.m[0].terraform_data.x["a"]`.
    pub address: &'a str,
    /// The instance's resource address with module keys removed, e.g.
    /// `module.m.terraform_data.x`.
    pub config_resource: &'a str,
    /// State v4 `dependencies`: configuration resource addresses.
    pub dependencies: &'a [String],
}

/// Why a graph could not be built or queried.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A dependency names a resource with no instance in the state.
    #[error("{instance} depends on {dependency}, which has no instance in the state")]
    UnknownDependency {
        /// The instance (or `output.NAME`) holding the dependency.
        instance: String,
        /// The dependency as written.
        dependency: String,
    },
    /// The same instance address was given twice.
    #[error("resource instance {address} appears twice in the state")]
    DuplicateInstance {
        /// The repeated address.
        address: String,
    },
    /// The same output was added twice.
    #[error("output {name} was added twice")]
    DuplicateOutput {
        /// The output name.
        name: String,
    },
    /// An address asked about is not in the state.
    #[error("resource instance {address} is not in the state")]
    UnknownAddress {
        /// The address asked about.
        address: String,
    },
    /// The recorded dependencies form a cycle (terraform never writes one;
    /// a hand-edited or inconsistent state can).
    #[error("the dependencies recorded in the state form a cycle through {address}")]
    Cycle {
        /// One node on the cycle (an instance or resource address).
        address: String,
    },
    /// An output dependency that does not parse as an address.
    #[error(transparent)]
    InvalidAddress(#[from] AddressError),
}

/// What a graph node stands for. The string is the node's address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A resource instance: a real row of the state.
    Instance(Box<str>),
    /// A configuration resource: internal aggregation node, never reported.
    Resource(Box<str>),
    /// A root output, by name.
    Output(Box<str>),
}

/// The dependency graph of one state.
#[derive(Debug, Default)]
pub struct StateGraph {
    graph: DiGraph<Node, ()>,
    instances: HashMap<Box<str>, NodeIndex>,
    /// Configuration resource -> its instances.
    resources: HashMap<Box<str>, Vec<NodeIndex>>,
    outputs: HashMap<Box<str>, NodeIndex>,
    dependency_edges: usize,
}

impl StateGraph {
    /// Builds the graph in O(instances + dependencies).
    ///
    /// Fails with [`GraphError::DuplicateInstance`] when an address repeats,
    /// [`GraphError::UnknownDependency`] when a dependency names a resource
    /// with no instance, and [`GraphError::Cycle`] when dependencies loop.
    pub fn build<'a>(
        instances: impl IntoIterator<Item = InstanceInput<'a>>,
    ) -> Result<StateGraph, GraphError> {
        let inputs: Vec<InstanceInput<'a>> = instances.into_iter().collect();
        let mut g = StateGraph {
            graph: DiGraph::with_capacity(inputs.len() * 2, inputs.len() * 2),
            instances: HashMap::with_capacity(inputs.len()),
            ..StateGraph::default()
        };

        // Pass 1: instance nodes, their module steps, and the instances of
        // every configuration resource.
        let mut nodes = Vec::with_capacity(inputs.len());
        // Module steps of every instance in one buffer (one allocation, not
        // one per instance), instance i's at `all_steps[ranges[i]]`.
        let mut all_steps: Vec<(&'a str, usize)> = Vec::with_capacity(inputs.len() * 2);
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(inputs.len());
        let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, input) in inputs.iter().enumerate() {
            if g.instances.contains_key(input.address) {
                return Err(GraphError::DuplicateInstance {
                    address: input.address.to_string(),
                });
            }
            let start = all_steps.len();
            if !module_steps(input.address, &mut all_steps) {
                // Only malformed input gets here; let the parser say why.
                return Err(match address::parse_instance(input.address) {
                    Err(e) => GraphError::InvalidAddress(e),
                    Ok(_) => GraphError::UnknownAddress {
                        address: input.address.to_string(),
                    },
                });
            }
            ranges.push(start..all_steps.len());
            let node = g.graph.add_node(Node::Instance(input.address.into()));
            g.instances.insert(input.address.into(), node);
            nodes.push(node);
            members.entry(input.config_resource).or_default().push(i);
        }

        // Pass 2: each dependency becomes an edge from a scoped aggregation
        // node. References inside a module instance can only reach the same
        // module instance (values cross module boundaries through variables
        // and outputs, recorded against the caller's resources), so the
        // module steps a dependency shares with its dependent are bound to
        // the dependent's own keys: `module.branch["a"]...l2` depending on
        // `module.branch.terraform_data.l1` depends on
        // `module.branch["a"].terraform_data.l1` only, not on every branch.
        // Keyed by (the dependent's address up to the shared module steps,
        // the dependency): borrowed slices, no allocation per edge.
        let mut scoped: HashMap<(&'a str, &'a str), NodeIndex> = HashMap::new();
        let mut needed: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut deps = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let steps = &all_steps[ranges[i].clone()];
            deps.clear();
            for dependency in input.dependencies {
                // Terraform records dependencies on resources that currently
                // have no instance (count = 0): no edge to draw.
                if !members.contains_key(dependency.as_str()) {
                    continue;
                }
                let (names, _) = split_config(dependency);
                let shared = names
                    .iter()
                    .zip(steps)
                    .take_while(|(n, (m, _))| *n == m)
                    .count();
                let key = (
                    bound_prefix(input.address, steps, shared),
                    dependency.as_str(),
                );
                let agg = match scoped.get(&key) {
                    Some(&n) => n,
                    None => {
                        let label = if key.0.is_empty() {
                            dependency.clone()
                        } else {
                            format!("{dependency} in {}", key.0)
                        };
                        let n = g.graph.add_node(Node::Resource(label.into()));
                        scoped.insert(key, n);
                        let levels = needed.entry(dependency.as_str()).or_default();
                        if !levels.contains(&shared) {
                            levels.push(shared);
                        }
                        n
                    }
                };
                deps.push(agg);
            }
            deps.sort_unstable();
            deps.dedup();
            for &agg in &deps {
                g.graph.add_edge(agg, nodes[i], ());
            }
            g.dependency_edges += deps.len();
        }

        // Pass 3: every instance of a depended-on resource feeds the
        // aggregation nodes its own module keys select.
        for (dependency, levels) in &needed {
            for &j in &members[dependency] {
                for &shared in levels {
                    let key = (
                        bound_prefix(inputs[j].address, &all_steps[ranges[j].clone()], shared),
                        *dependency,
                    );
                    if let Some(&agg) = scoped.get(&key) {
                        g.graph.add_edge(nodes[j], agg, ());
                    }
                }
            }
        }
        for (config, idx) in members {
            g.resources
                .insert(config.into(), idx.into_iter().map(|i| nodes[i]).collect());
        }

        // One O(V + E) pass so that every later cone can rely on a DAG.
        if let Err(cycle) = petgraph::algo::toposort(&g.graph, None) {
            return Err(GraphError::Cycle {
                address: g.graph[cycle.node_id()].address().to_string(),
            });
        }
        Ok(g)
    }

    /// Adds root output `name` depending on `depends_on`: instance addresses,
    /// configuration resource addresses (`module.m.t.x`, covering every
    /// instance) or resource addresses with module keys (`module.m[0].t.x`).
    ///
    /// State v4 records no edges for outputs; the caller derives them from
    /// configuration.
    pub fn add_output(&mut self, name: &str, depends_on: &[String]) -> Result<(), GraphError> {
        if self.outputs.contains_key(name) {
            return Err(GraphError::DuplicateOutput {
                name: name.to_string(),
            });
        }
        let unknown = |dependency: &str| GraphError::UnknownDependency {
            instance: format!("output.{name}"),
            dependency: dependency.to_string(),
        };
        let mut sources = Vec::new();
        for dependency in depends_on {
            let dependency = dependency.as_str();
            if let Some(&n) = self.instances.get(dependency) {
                sources.push(n);
            } else if let Some(members) = self.resources.get(dependency) {
                sources.extend(members);
            } else {
                let target = address::parse_target(dependency)?;
                let found = self.resolve_nodes(&target);
                if found.is_empty() {
                    return Err(unknown(dependency));
                }
                sources.extend(found);
            }
        }
        sources.sort_unstable();
        sources.dedup();
        let node = self.graph.add_node(Node::Output(name.into()));
        self.outputs.insert(name.into(), node);
        for source in sources {
            self.graph.add_edge(source, node, ());
        }
        Ok(())
    }

    /// Number of resource instances.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Number of (instance, configuration resource it depends on) pairs,
    /// duplicates removed: the rows a dependency edge table holds. Neither
    /// the internal instance-to-resource membership edges nor output edges
    /// are counted.
    pub fn edge_count(&self) -> usize {
        self.dependency_edges
    }

    /// Every instance address, sorted bytewise.
    pub fn instance_addresses(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.instances.keys().map(|a| &**a).collect();
        all.sort_unstable();
        all
    }

    /// The dependency edges between instances, (dependency, dependent),
    /// sorted: the internal aggregation nodes seen through. One edge per
    /// instance pair, whatever the number of paths.
    pub fn instance_edges(&self) -> Vec<(&str, &str)> {
        let mut edges = Vec::new();
        for &node in self.instances.values() {
            for agg in self.graph.neighbors_directed(node, Direction::Incoming) {
                for source in self.graph.neighbors_directed(agg, Direction::Incoming) {
                    if let Node::Instance(from) = &self.graph[source] {
                        edges.push((&**from, self.graph[node].address()));
                    }
                }
            }
        }
        edges.sort_unstable();
        edges.dedup();
        edges
    }

    /// Whether `address` is an instance of this state.
    pub fn contains(&self, address: &str) -> bool {
        self.instances.contains_key(address)
    }

    /// The instance addresses `target` selects (`terraform state list`
    /// semantics, see [`Target::matches`]), in terraform's state order.
    pub fn resolve(&self, target: &Target) -> Vec<String> {
        let mut found: Vec<(address::InstanceAddr, NodeIndex)> = self
            .resolve_nodes(target)
            .into_iter()
            .filter_map(|n| Some((address::parse_instance(self.graph[n].address()).ok()?, n)))
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|(_, n)| self.graph[n].address().to_string())
            .collect()
    }

    /// Instance nodes `target` selects, in no particular order. Only a
    /// module target scans every instance.
    fn resolve_nodes(&self, target: &Target) -> Vec<NodeIndex> {
        let matches = |n: NodeIndex| {
            address::parse_instance(self.graph[n].address())
                .map(|a| target.matches(&a))
                .unwrap_or(false)
        };
        match target {
            Target::Instance(instance) => self
                .instances
                .get(instance.to_string().as_str())
                .copied()
                .into_iter()
                .collect(),
            Target::Resource(resource) => {
                match self.resources.get(resource.config_address().as_str()) {
                    Some(members) => members.iter().copied().filter(|&n| matches(n)).collect(),
                    None => Vec::new(),
                }
            }
            Target::Module(path) => {
                // Cheap pre-filter before parsing: the first step's name.
                let prefix = path.0.first().map(|s| format!("module.{}", s.name));
                self.instances
                    .iter()
                    .filter(|(a, _)| prefix.as_deref().is_none_or(|p| a.starts_with(p)))
                    .map(|(_, &n)| n)
                    .filter(|&n| matches(n))
                    .collect()
            }
        }
    }
}

/// Where the instances live that a dependency of one instance binds to, by
/// their module instance: the rule [`StateGraph::build`] draws edges by,
/// for loading only the part of a stored graph a cone needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyScope<'a> {
    /// Instances of the dependency in exactly this module instance (`""`:
    /// the root module).
    Module(&'a str),
    /// Instances of the dependency in any module instance under this one
    /// (`""`: anywhere).
    Under(&'a str),
}

impl DependencyScope<'_> {
    /// Whether the instance at `address` lies in this scope.
    pub fn holds(&self, address: &str) -> bool {
        match *self {
            DependencyScope::Module(m) => module_of(address) == Some(m),
            DependencyScope::Under("") => true,
            DependencyScope::Under(p) => address
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }
}

/// The scope of `dependency` (a configuration resource address, as state
/// `dependencies` hold) for the instance at `address`; `None` if `address`
/// is malformed. The module steps they share are bound to the instance's
/// own keys.
pub fn dependency_scope<'a>(address: &'a str, dependency: &str) -> Option<DependencyScope<'a>> {
    let mut steps = Vec::new();
    if !module_steps(address, &mut steps) {
        return None;
    }
    let (names, _) = split_config(dependency);
    let shared = names
        .iter()
        .zip(&steps)
        .take_while(|(n, (m, _))| *n == m)
        .count();
    let prefix = bound_prefix(address, &steps, shared);
    Some(if shared == names.len() {
        DependencyScope::Module(prefix)
    } else {
        DependencyScope::Under(prefix)
    })
}

/// The module instance of an instance address (`""` for the root module).
fn module_of(address: &str) -> Option<&str> {
    let mut steps = Vec::new();
    if !module_steps(address, &mut steps) {
        return None;
    }
    Some(bound_prefix(address, &steps, steps.len()))
}

/// Appends the module steps of an instance address to `out`, each as
/// (name, offset just past the step's key), without allocating a parsed
/// address: `module.a["x.y"].module.b.t.n` -> ("a", 15), ("b", 24). False if
/// the module part is malformed.
fn module_steps<'a>(address: &'a str, out: &mut Vec<(&'a str, usize)>) -> bool {
    let mut rest = address;
    while let Some(after) = rest.strip_prefix("module.") {
        let Some(end) = after.find(['.', '[']) else {
            return false;
        };
        let name = &after[..end];
        let mut tail = &after[end..];
        if tail.starts_with('[') {
            let Some(close) = address::key_end(tail) else {
                return false;
            };
            tail = &tail[close + 1..];
        }
        out.push((name, address.len() - tail.len()));
        let Some(next) = tail.strip_prefix('.') else {
            return false;
        };
        rest = next;
    }
    true
}

/// The part of `address` naming its first `shared` module steps with keys
/// (`module.a["x"].module.b[1]`), or "" for none.
fn bound_prefix<'a>(address: &'a str, steps: &[(&'a str, usize)], shared: usize) -> &'a str {
    match shared {
        0 => "",
        n => &address[..steps[n - 1].1],
    }
}

/// `module.a.module.b.t.n` -> (["a", "b"], "t.n"). Configuration addresses
/// carry no keys, so plain string splitting is exact.
fn split_config(config: &str) -> (Vec<&str>, &str) {
    let mut names = Vec::new();
    let mut rest = config;
    while let Some(after) = rest.strip_prefix("module.") {
        match after.split_once('.') {
            Some((name, tail)) => {
                names.push(name);
                rest = tail;
            }
            None => break,
        }
    }
    (names, rest)
}

impl Node {
    fn address(&self) -> &str {
        match self {
            Node::Instance(a) | Node::Resource(a) | Node::Output(a) => a,
        }
    }
}

/// Builds a graph from `(address, dependencies)` pairs, deriving each
/// configuration resource from the address.
#[cfg(test)]
fn graph_of(specs: &[(&str, &[&str])]) -> Result<StateGraph, GraphError> {
    let owned: Vec<(String, Vec<String>)> = specs
        .iter()
        .map(|(a, deps)| {
            let config = address::parse_instance(a)
                .unwrap()
                .resource
                .config_address();
            (config, deps.iter().map(|d| d.to_string()).collect())
        })
        .collect();
    StateGraph::build(
        specs
            .iter()
            .zip(&owned)
            .map(|((a, _), (config, deps))| InstanceInput {
                address: a,
                config_resource: config,
                dependencies: deps,
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(specs: &[(&str, &[&str])]) -> String {
        graph_of(specs).unwrap_err().to_string()
    }

    #[test]
    fn counts_instances_and_dependency_pairs() {
        let g = graph_of(&[
            ("t.a[0]", &[]),
            ("t.a[1]", &[]),
            ("t.b", &["t.a"]),
            ("t.c", &["t.a", "t.b", "t.a"]),
        ])
        .unwrap();
        assert_eq!(g.instance_count(), 4);
        // t.b -> t.a, t.c -> t.a, t.c -> t.b (the repeated t.a counts once).
        assert_eq!(g.edge_count(), 3);
        assert!(g.contains("t.a[1]"));
        assert!(!g.contains("t.a"));
    }

    #[test]
    fn module_steps_split_keys_with_dots_and_brackets() {
        let addr = r#"module.a["x.y]"].module.b[2].module.c.t.n["k"]"#;
        let mut steps = Vec::new();
        assert!(module_steps(addr, &mut steps));
        let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(bound_prefix(addr, &steps, 0), "");
        assert_eq!(bound_prefix(addr, &steps, 1), r#"module.a["x.y]"]"#);
        assert_eq!(
            bound_prefix(addr, &steps, 2),
            r#"module.a["x.y]"].module.b[2]"#
        );
        assert_eq!(
            bound_prefix(addr, &steps, 3),
            r#"module.a["x.y]"].module.b[2].module.c"#
        );
        let mut none = Vec::new();
        assert!(module_steps("t.n[0]", &mut none) && none.is_empty());
        assert!(!module_steps(r#"module.a["open.t.n"#, &mut none));
    }

    #[test]
    fn dependency_on_a_resource_without_instances_draws_no_edge() {
        // terraform records a dependency on a resource with count = 0.
        let g = graph_of(&[("t.a", &[]), ("module.m[0].t.b", &["module.m.t.a"])]).unwrap();
        assert_eq!(g.edge_count(), 0);
        let c = g.cone(&["module.m[0].t.b"]).unwrap();
        assert!(c.read.is_empty());
    }

    #[test]
    fn dependency_scopes_follow_the_edges_build_draws() {
        let specs: &[(&str, &[&str])] = &[
            ("t.root", &[]),
            ("module.m[0].t.a", &["t.root"]),
            ("module.m[1].t.a", &["t.root"]),
            ("module.m[0].module.n[\"x.y\"].t.b", &["module.m.t.a"]),
            ("module.m[0].module.n[\"z\"].t.b", &["module.m.t.a"]),
            ("module.m[1].t.c", &["module.m.module.n.t.b"]),
            (
                "module.m[0].t.c",
                &["module.m.module.n.t.b", "module.m.t.a"],
            ),
            ("t.all", &["module.m.module.n.t.b"]),
        ];
        let g = graph_of(specs).unwrap();
        // For every pair (dependent, instance of one of its dependencies):
        // an edge of the graph exactly when the scope holds the instance.
        for (dependent, deps) in specs {
            for dependency in *deps {
                let scope = dependency_scope(dependent, dependency).unwrap();
                for (other, _) in specs {
                    let config = address::parse_instance(other)
                        .unwrap()
                        .resource
                        .config_address();
                    if config != *dependency {
                        continue;
                    }
                    let edge = g
                        .cone(&[other])
                        .unwrap()
                        .write
                        .iter()
                        .any(|w| w == dependent);
                    assert_eq!(scope.holds(other), edge, "{dependent} on {other}");
                }
            }
        }
        assert_eq!(
            dependency_scope("module.m[0].t.c", "module.m.module.n.t.b"),
            Some(DependencyScope::Under("module.m[0]"))
        );
        assert_eq!(
            dependency_scope("module.m[0].module.n[\"z\"].t.b", "module.m.t.a"),
            Some(DependencyScope::Module("module.m[0]"))
        );
        assert_eq!(
            dependency_scope("t.all", "module.m.module.n.t.b"),
            Some(DependencyScope::Under(""))
        );
    }

    #[test]
    fn rejects_duplicate_instance() {
        assert_eq!(
            err(&[("t.a[0]", &[]), ("t.b", &[]), ("t.a[0]", &[])]),
            "resource instance t.a[0] appears twice in the state"
        );
    }

    #[test]
    fn rejects_cycles() {
        assert_eq!(
            err(&[("t.a[0]", &[]), ("t.a[1]", &["t.a"])])
                .split(" through ")
                .next(),
            Some("the dependencies recorded in the state form a cycle")
        );
        assert!(matches!(
            graph_of(&[("t.a", &["t.b"]), ("t.b", &["t.a"])]),
            Err(GraphError::Cycle { .. })
        ));
    }

    #[test]
    fn output_dependencies_resolve_every_address_form() {
        let mut g = graph_of(&[
            ("module.m[0].t.a", &[]),
            ("module.m[1].t.a", &[]),
            ("t.x[0]", &[]),
            ("t.x[1]", &[]),
        ])
        .unwrap();
        g.add_output("inst", &["t.x[1]".into()]).unwrap();
        g.add_output("config", &["module.m.t.a".into()]).unwrap();
        g.add_output("keyed", &["module.m[1].t.a".into()]).unwrap();
        g.add_output("none", &[]).unwrap();
        assert_eq!(g.cone(&["t.x[0]"]).unwrap().outputs, Vec::<String>::new());
        assert_eq!(g.cone(&["t.x[1]"]).unwrap().outputs, ["inst"]);
        assert_eq!(g.cone(&["module.m[0].t.a"]).unwrap().outputs, ["config"]);
        assert_eq!(
            g.cone(&["module.m[1].t.a"]).unwrap().outputs,
            ["config", "keyed"]
        );

        assert_eq!(
            g.add_output("inst", &[]).unwrap_err().to_string(),
            "output inst was added twice"
        );
        assert_eq!(
            g.add_output("bad", &["module.m[2].t.a".into()])
                .unwrap_err()
                .to_string(),
            "output.bad depends on module.m[2].t.a, which has no instance in the state"
        );
        assert!(matches!(
            g.add_output("worse", &["not an address".into()]),
            Err(GraphError::InvalidAddress(_))
        ));
    }

    #[test]
    fn resolves_targets_in_state_list_order() {
        let g = graph_of(&[
            ("module.m[1].t.a", &[]),
            ("module.m[0].t.a", &[]),
            ("module.m[0].module.n.t.b", &[]),
            ("module.mm.t.a", &[]),
            ("t.a[\"k\"]", &[]),
            ("t.a[10]", &[]),
            ("t.a[2]", &[]),
            ("data.t.a", &[]),
        ])
        .unwrap();
        let resolve = |s: &str| g.resolve(&address::parse_target(s).unwrap());
        assert_eq!(
            resolve("module.m"),
            [
                "module.m[0].t.a",
                "module.m[1].t.a",
                "module.m[0].module.n.t.b"
            ]
        );
        assert_eq!(
            resolve("module.m[0]"),
            ["module.m[0].t.a", "module.m[0].module.n.t.b"]
        );
        assert_eq!(resolve("module.m.t.a"), Vec::<String>::new());
        assert_eq!(resolve("module.m[1].t.a"), ["module.m[1].t.a"]);
        assert_eq!(resolve("t.a"), ["t.a[2]", "t.a[10]", "t.a[\"k\"]"]);
        assert_eq!(resolve("t.a[10]"), ["t.a[10]"]);
        assert_eq!(resolve("data.t.a"), ["data.t.a"]);
        assert_eq!(resolve("module.x"), Vec::<String>::new());
    }
}
