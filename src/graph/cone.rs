//! The change cone: what a change must write, what it must read, and the one
//! order in which both are locked.
//!
//! Only the cone's own nodes are visited and ordered, never the whole graph,
//! so the cost follows the size of the cone, not of the state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::{GraphError, Node, StateGraph};

/// The instances and outputs a change touches.
///
/// `write` and `read` are each in canonical order: a topological order of
/// the cone (dependencies first) where, among instances whose dependencies
/// in the cone are all placed, the bytewise-smallest address comes next.
/// Both lists are slices of that one sequence. Because a cone is closed
/// under "is a dependency of", this sequence is the restriction of the same
/// canonical order of the whole state, so two transactions that lock in this
/// order always lock shared instances in the same relative order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cone {
    /// The changed instances and every instance that transitively depends on
    /// one of them.
    pub write: Vec<String>,
    /// Every transitive dependency of the write set and of `outputs` that is
    /// not itself written: terraform must be able to read (and refreshes)
    /// these.
    pub read: Vec<String>,
    /// Names (without `output.`) of root outputs that depend on the write
    /// set, sorted bytewise.
    pub outputs: Vec<String>,
}

impl StateGraph {
    /// Computes the cone of a change to `changed` (instance addresses).
    ///
    /// Besides the ancestors of the write set, `read` holds the ancestors of
    /// every output in the cone: terraform evaluates a root output under
    /// `-target` only when everything it references is targeted.
    pub fn cone(&self, changed: &[&str]) -> Result<Cone, GraphError> {
        let mut start = Vec::with_capacity(changed.len());
        for &address in changed {
            match self.instances.get(address) {
                Some(&n) => start.push(n),
                None => {
                    return Err(GraphError::UnknownAddress {
                        address: address.to_string(),
                    })
                }
            }
        }

        // Downstream: the changed instances and everything depending on them.
        let mut down: HashSet<NodeIndex> = start.iter().copied().collect();
        let mut stack = start;
        while let Some(n) = stack.pop() {
            for m in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if down.insert(m) {
                    stack.push(m);
                }
            }
        }
        let mut write = HashSet::new();
        let mut outputs = Vec::new();
        for &n in &down {
            match &self.graph[n] {
                Node::Instance(_) => {
                    write.insert(n);
                }
                Node::Output(name) => outputs.push(name.to_string()),
                Node::Resource(_) => {}
            }
        }
        outputs.sort_unstable();

        // Upstream of the write set and of the reached outputs. Resource
        // nodes reached only downstream (no dependent in the cone) are left
        // out: they order nothing.
        let mut cone: HashSet<NodeIndex> = down
            .iter()
            .copied()
            .filter(|&n| !matches!(self.graph[n], Node::Resource(_)))
            .collect();
        let mut stack: Vec<NodeIndex> = cone.iter().copied().collect();
        while let Some(n) = stack.pop() {
            for m in self.graph.neighbors_directed(n, Direction::Incoming) {
                if cone.insert(m) {
                    stack.push(m);
                }
            }
        }

        let order = self.canonical_order(&cone)?;
        let (write, read) = order
            .into_iter()
            .map(|n| (n, self.graph[n].address().to_string()))
            .partition::<Vec<_>, _>(|(n, _)| write.contains(n));
        Ok(Cone {
            write: write.into_iter().map(|(_, a)| a).collect(),
            read: read.into_iter().map(|(_, a)| a).collect(),
            outputs,
        })
    }

    /// Kahn's algorithm over `nodes` only (which must be closed under
    /// "is a dependency of"), returning the instance nodes. Ready instances
    /// leave in bytewise address order; a resource node leaves as soon as it
    /// is ready, so the aggregation nodes never influence tie-breaking.
    fn canonical_order(&self, nodes: &HashSet<NodeIndex>) -> Result<Vec<NodeIndex>, GraphError> {
        let mut pending: HashMap<NodeIndex, usize> = HashMap::with_capacity(nodes.len());
        let mut heap = BinaryHeap::new();
        let mut eager = Vec::new();
        // In-cone edges, collected from the incoming side: a shared base
        // resource has an outgoing edge to nearly every instance of the
        // state, so walking outgoing edges would cost O(state), not O(cone).
        let mut children: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::with_capacity(nodes.len());
        for &n in nodes {
            let mut count = 0;
            for m in self.graph.neighbors_directed(n, Direction::Incoming) {
                if nodes.contains(&m) {
                    children.entry(m).or_default().push(n);
                    count += 1;
                }
            }
            if count == 0 {
                self.make_ready(n, &mut heap, &mut eager);
            } else {
                pending.insert(n, count);
            }
        }

        let mut order = Vec::with_capacity(nodes.len());
        loop {
            let n = match eager.pop() {
                Some(n) => n,
                None => match heap.pop() {
                    Some(Reverse((_, n))) => {
                        order.push(n);
                        n
                    }
                    None => break,
                },
            };
            for &m in children.get(&n).map(Vec::as_slice).unwrap_or_default() {
                if let Some(count) = pending.get_mut(&m) {
                    *count -= 1;
                    if *count == 0 {
                        pending.remove(&m);
                        self.make_ready(m, &mut heap, &mut eager);
                    }
                }
            }
        }
        match pending.keys().min() {
            // build() rejects cycles, so this only guards the invariant.
            Some(&n) => Err(GraphError::Cycle {
                address: self.graph[n].address().to_string(),
            }),
            None => Ok(order),
        }
    }

    fn make_ready<'g>(
        &'g self,
        n: NodeIndex,
        heap: &mut BinaryHeap<Reverse<(&'g str, NodeIndex)>>,
        eager: &mut Vec<NodeIndex>,
    ) {
        match &self.graph[n] {
            Node::Instance(address) => heap.push(Reverse((address, n))),
            Node::Resource(_) | Node::Output(_) => eager.push(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::graph_of;
    use super::*;

    fn cone(g: &StateGraph, changed: &[&str]) -> (Vec<String>, Vec<String>) {
        let c = g.cone(changed).unwrap();
        (c.write, c.read)
    }

    #[test]
    fn chain() {
        // State v4 `dependencies` are transitive.
        let g = graph_of(&[
            ("t.a", &[]),
            ("t.b", &["t.a"]),
            ("t.c", &["t.a", "t.b"]),
            ("t.d", &[]),
        ])
        .unwrap();
        assert_eq!(
            cone(&g, &["t.b"]),
            (vec!["t.b".into(), "t.c".into()], vec!["t.a".into()])
        );
        assert_eq!(
            cone(&g, &["t.c"]),
            (vec!["t.c".into()], vec!["t.a".into(), "t.b".into()])
        );
        assert_eq!(cone(&g, &["t.a"]).0, ["t.a", "t.b", "t.c"]);
        assert_eq!(cone(&g, &["t.d"]), (vec!["t.d".into()], vec![]));
    }

    #[test]
    fn diamond() {
        let g = graph_of(&[
            ("t.a", &[]),
            ("t.b", &["t.a"]),
            ("t.c", &["t.a"]),
            ("t.d", &["t.a", "t.b", "t.c"]),
        ])
        .unwrap();
        let c = g.cone(&["t.b"]).unwrap();
        assert_eq!(c.write, ["t.b", "t.d"]);
        // t.c is read: t.d needs it.
        assert_eq!(c.read, ["t.a", "t.c"]);
        assert_eq!(cone(&g, &["t.a"]).0, ["t.a", "t.b", "t.c", "t.d"]);
        assert_eq!(
            cone(&g, &["t.b", "t.c"]),
            (
                vec!["t.b".into(), "t.c".into(), "t.d".into()],
                vec!["t.a".into()]
            )
        );
    }

    /// Instances and `dependencies` as terraform 1.11.4 wrote them for
    /// `module "m" { count = 2 }` whose `b` references `a[0]`, plus a root
    /// resource referencing `module.m[0]`'s output (observed; module keys are
    /// dropped in `dependencies`).
    const MODULE_COUNT: &[(&str, &[&str])] = &[
        ("module.m[0].terraform_data.a[0]", &[]),
        ("module.m[0].terraform_data.a[1]", &[]),
        (
            "module.m[0].terraform_data.b",
            &["module.m.terraform_data.a"],
        ),
        ("module.m[1].terraform_data.a[0]", &[]),
        ("module.m[1].terraform_data.a[1]", &[]),
        (
            "module.m[1].terraform_data.b",
            &["module.m.terraform_data.a"],
        ),
        (
            "terraform_data.root_dep",
            &["module.m.terraform_data.a", "module.m.terraform_data.b"],
        ),
    ];

    #[test]
    fn module_with_count_dependency_binds_the_module_instance() {
        let g = graph_of(MODULE_COUNT).unwrap();
        assert_eq!(g.edge_count(), 4);
        // Inside `module.m[0]`, `module.m.terraform_data.a` can only mean
        // `module.m[0]`'s own `a`: a change there never reaches `module.m[1]`.
        let c = g.cone(&["module.m[0].terraform_data.a[1]"]).unwrap();
        assert_eq!(
            c.write,
            [
                "module.m[0].terraform_data.a[1]",
                "module.m[0].terraform_data.b",
                "terraform_data.root_dep",
            ]
        );
        // The root resource reads every instance of both module resources.
        assert_eq!(
            c.read,
            [
                "module.m[0].terraform_data.a[0]",
                "module.m[1].terraform_data.a[0]",
                "module.m[1].terraform_data.a[1]",
                "module.m[1].terraform_data.b",
            ]
        );
        let c = g.cone(&["module.m[1].terraform_data.b"]).unwrap();
        assert_eq!(
            c.write,
            ["module.m[1].terraform_data.b", "terraform_data.root_dep"]
        );
        assert_eq!(
            c.read,
            [
                "module.m[0].terraform_data.a[0]",
                "module.m[0].terraform_data.a[1]",
                "module.m[0].terraform_data.b",
                "module.m[1].terraform_data.a[0]",
                "module.m[1].terraform_data.a[1]",
            ]
        );
        // Reading the root resource needs every instance of both resources.
        let c = g.cone(&["terraform_data.root_dep"]).unwrap();
        assert_eq!(c.write, ["terraform_data.root_dep"]);
        assert_eq!(c.read.len(), 6);
    }

    #[test]
    fn for_each_module_instances() {
        let g = graph_of(&[
            ("module.fe[\"k1\"].terraform_data.a", &[]),
            ("module.fe[\"k2\"].terraform_data.a", &[]),
            (
                "module.fe[\"k1\"].module.inner.terraform_data.c",
                &["module.fe.terraform_data.a"],
            ),
            (
                "module.fe[\"k2\"].module.inner.terraform_data.c",
                &["module.fe.terraform_data.a"],
            ),
        ])
        .unwrap();
        let c = g
            .cone(&["module.fe[\"k2\"].module.inner.terraform_data.c"])
            .unwrap();
        assert_eq!(c.write, ["module.fe[\"k2\"].module.inner.terraform_data.c"]);
        // The shared step `module.fe` is bound to the dependent's key "k2".
        assert_eq!(c.read, ["module.fe[\"k2\"].terraform_data.a"]);
        let c = g.cone(&["module.fe[\"k1\"].terraform_data.a"]).unwrap();
        assert_eq!(
            c.write,
            [
                "module.fe[\"k1\"].terraform_data.a",
                "module.fe[\"k1\"].module.inner.terraform_data.c"
            ]
        );
    }

    #[test]
    fn data_source() {
        // As observed: a resource reading a data source lists it as
        // `data.TYPE.NAME`; data sources themselves record no dependencies.
        let g = graph_of(&[
            ("terraform_data.single", &[]),
            ("data.terraform_remote_state.y", &[]),
            (
                "terraform_data.uses_data",
                &["data.terraform_remote_state.y", "terraform_data.single"],
            ),
        ])
        .unwrap();
        assert_eq!(
            cone(&g, &["terraform_data.uses_data"]),
            (
                vec!["terraform_data.uses_data".into()],
                vec![
                    "data.terraform_remote_state.y".into(),
                    "terraform_data.single".into()
                ]
            )
        );
        assert_eq!(
            cone(&g, &["data.terraform_remote_state.y"]),
            (
                vec![
                    "data.terraform_remote_state.y".into(),
                    "terraform_data.uses_data".into()
                ],
                vec!["terraform_data.single".into()]
            )
        );
    }

    #[test]
    fn fan_out() {
        let mut specs: Vec<(String, Vec<&str>)> = vec![("t.root".into(), vec![])];
        for i in (0..12).rev() {
            specs.push((format!("t.leaf[{i}]"), vec!["t.root"]));
        }
        let specs: Vec<(&str, &[&str])> = specs
            .iter()
            .map(|(a, d)| (a.as_str(), d.as_slice()))
            .collect();
        let g = graph_of(&specs).unwrap();
        let c = g.cone(&["t.root"]).unwrap();
        assert_eq!(c.write.len(), 13);
        assert_eq!(c.write[0], "t.root");
        // Ties broken bytewise: "[10]" < "[1]" is false, "[10]" < "[2]" is true.
        assert_eq!(&c.write[1..4], ["t.leaf[0]", "t.leaf[10]", "t.leaf[11]"]);
        assert!(c.read.is_empty());
        // One leaf needs the root, and nothing else.
        assert_eq!(
            cone(&g, &["t.leaf[5]"]),
            (vec!["t.leaf[5]".into()], vec!["t.root".into()])
        );
    }

    #[test]
    fn canonical_order_is_topological_then_bytewise() {
        let g = graph_of(&[
            ("z.first", &[]),
            ("a.second", &["z.first"]),
            ("m.free", &[]),
            ("b.third", &["a.second", "z.first"]),
            ("c.other", &["m.free"]),
        ])
        .unwrap();
        let c = g.cone(&["z.first", "m.free"]).unwrap();
        // m.free and z.first are ready first; m.free frees c.other, which
        // sorts before z.first.
        assert_eq!(
            c.write,
            ["m.free", "c.other", "z.first", "a.second", "b.third"]
        );
        // The order of a sub-cone is the restriction of the full order.
        let c = g.cone(&["b.third", "c.other"]).unwrap();
        assert_eq!(c.write, ["c.other", "b.third"]);
        assert_eq!(c.read, ["m.free", "z.first", "a.second"]);
        // Duplicates in `changed` are harmless.
        assert_eq!(
            g.cone(&["a.second", "a.second"]).unwrap().write,
            ["a.second", "b.third"]
        );
    }

    #[test]
    fn outputs_join_the_cone_and_pull_their_dependencies_into_read() {
        let mut g =
            graph_of(&[("t.a", &[]), ("t.b", &["t.a"]), ("t.x", &[]), ("t.y", &[])]).unwrap();
        g.add_output("both", &["t.b".into(), "t.x".into()]).unwrap();
        g.add_output("only_y", &["t.y".into()]).unwrap();
        g.add_output("a_too", &["t.a".into()]).unwrap();
        let c = g.cone(&["t.a"]).unwrap();
        assert_eq!(c.write, ["t.a", "t.b"]);
        // Terraform evaluates `both` under -target only if t.x is targeted.
        assert_eq!(c.read, ["t.x"]);
        assert_eq!(c.outputs, ["a_too", "both"]);
        let c = g.cone(&["t.y"]).unwrap();
        assert_eq!(
            (c.write, c.read, c.outputs),
            (vec!["t.y".into()], vec![], vec!["only_y".into()])
        );
    }

    #[test]
    fn unknown_changed_address() {
        let g = graph_of(&[("t.a[0]", &[])]).unwrap();
        assert_eq!(
            g.cone(&["t.a"]).unwrap_err().to_string(),
            "resource instance t.a is not in the state"
        );
    }

    /// 100,000 instances: `terraform_data.base` with count = 10, then 9,999
    /// chains of 10 resources; each link depends on every earlier link of its
    /// chain (transitive, as terraform writes it), and every 1,000th chain
    /// starts from `base`.
    #[test]
    fn cone_of_twelve_in_a_hundred_thousand() {
        let mut addresses = Vec::with_capacity(100_000);
        let mut configs = Vec::with_capacity(100_000);
        let mut deps: Vec<Vec<String>> = Vec::with_capacity(100_000);
        for i in 0..10 {
            addresses.push(format!("terraform_data.base[{i}]"));
            configs.push("terraform_data.base".to_string());
            deps.push(Vec::new());
        }
        for chain in 0..9_999 {
            for link in 0..10 {
                let address = format!("terraform_data.c{chain}_{link}");
                let mut d: Vec<String> = (0..link)
                    .map(|l| format!("terraform_data.c{chain}_{l}"))
                    .collect();
                if chain % 1_000 == 0 {
                    d.push("terraform_data.base".into());
                }
                configs.push(address.clone());
                addresses.push(address);
                deps.push(d);
            }
        }
        let g = StateGraph::build((0..addresses.len()).map(|i| super::super::InstanceInput {
            address: &addresses[i],
            config_resource: &configs[i],
            dependencies: &deps[i],
        }))
        .unwrap();
        assert_eq!(g.instance_count(), 100_000);

        let mut changed: Vec<String> = (1..=11).map(|c| format!("terraform_data.c{c}_5")).collect();
        changed.push("terraform_data.base[3]".into());
        let changed: Vec<&str> = changed.iter().map(String::as_str).collect();
        let c = g.cone(&changed).unwrap();
        // 11 chains × links 5..=9, base[3], and the 10 chains hanging off base.
        assert_eq!(c.write.len(), 11 * 5 + 1 + 10 * 10);
        // 11 chains × links 0..=4, and the other 9 base instances.
        assert_eq!(c.read.len(), 11 * 5 + 9);
        assert_eq!(c.write[0], "terraform_data.base[3]");
        assert_eq!(c.read[0], "terraform_data.base[0]");
        assert_eq!(c.read[9], "terraform_data.c10_0");
    }
}
