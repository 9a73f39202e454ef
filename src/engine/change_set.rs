//! The change set of one run: what discovery found changing, its write set
//! (those instances and everything downstream, on the stored graph, plus new
//! instances) and its read set (what they depend on, also through the
//! configuration's references for new instances), the `-target`s that plan
//! it, and the root outputs it may write.
//!
//! The graph's own cone ([`crate::graph::Cone`]) knows stored instances
//! only; this adds what the configuration says of instances not stored yet.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Result;

use super::Kind;
use crate::db::store::GraphRow;
use crate::graph::{InstanceInput, StateGraph};
use crate::terraform::plan::ConfigInfo;
use crate::tfstate::{Instance, State};

/// What one run writes and reads.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    /// What discovery found changing.
    pub changed: Vec<String>,
    /// Changed instances and everything downstream, canonical order.
    pub write: Vec<String>,
    /// Their dependencies, not written.
    pub read: Vec<String>,
    /// How many written instances are not in the state yet.
    pub new: usize,
    /// `-target` addresses that plan the write set: whole resources where
    /// every instance of a resource is written, instances otherwise (keeps
    /// argv short).
    pub targets: Vec<String>,
}

impl ChangeSet {
    /// `state` with only the instances this change set writes or reads (and
    /// every root output): the private state a targeted terraform run of
    /// it needs, since its targets and their dependencies are all there.
    pub fn cone_state(&self, state: &State) -> State {
        let keep: HashSet<&str> = self
            .write
            .iter()
            .chain(&self.read)
            .map(String::as_str)
            .collect();
        let mut cone = state.clone();
        for r in &mut cone.resources {
            let address = r.address();
            r.instances
                .retain(|i| keep.contains(i.address(&address).as_str()));
        }
        cone.resources.retain(|r| !r.instances.is_empty());
        cone
    }

    /// The change set of `changed` on the stored graph `rows`, with the
    /// configuration's edges for instances not stored yet.
    pub fn compute(
        rows: &[GraphRow],
        changed: &[String],
        config: &ConfigInfo,
    ) -> Result<ChangeSet> {
        let graph = StateGraph::build(rows.iter().map(|r| InstanceInput {
            address: &r.address,
            config_resource: &r.config_address,
            dependencies: &r.dependencies,
        }))?;
        let existing: Vec<&str> = changed
            .iter()
            .map(String::as_str)
            .filter(|a| graph.contains(a))
            .collect();
        let new: Vec<&String> = changed.iter().filter(|a| !graph.contains(a)).collect();
        let base = graph.cone(&existing)?;
        let mut write = base.write;
        let mut in_write: HashSet<String> = write.iter().cloned().collect();
        for n in &new {
            if in_write.insert((*n).clone()) {
                write.push((*n).clone());
            }
        }

        // Terraform's targeted plan of an instance whose block has
        // `replace_triggered_by` needs the plan of what triggers it (with a
        // `moved` block anywhere, it fails with "no change found for" a
        // trigger left out): those are targeted, so written, too.
        let written_blocks: HashSet<&str> = rows
            .iter()
            .filter(|r| in_write.contains(&r.address))
            .map(|r| r.config_address.as_str())
            .collect();
        for (block, trigger) in &config.triggers {
            if !written_blocks.contains(block.as_str()) {
                continue;
            }
            for r in rows.iter().filter(|r| r.config_address == *trigger) {
                if in_write.insert(r.address.clone()) {
                    write.push(r.address.clone());
                }
            }
        }

        // New instances read what their configuration references (and,
        // since state dependencies are transitive, what those depend on).
        let by_config: HashMap<&str, Vec<&GraphRow>> =
            rows.iter().fold(HashMap::new(), |mut m, r| {
                m.entry(r.config_address.as_str()).or_default().push(r);
                m
            });
        let edges = &config.edges;
        let mut read: BTreeSet<String> = base.read.into_iter().collect();
        for n in &new {
            let config = crate::tfstate::strip_module_keys(crate::address::strip_instance_key(n));
            // Module outputs are nodes of their own: follow them to the
            // resources they reference.
            let mut todo = vec![config];
            let mut seen: HashSet<String> = HashSet::new();
            while let Some(node) = todo.pop() {
                for (_, dep) in edges.iter().filter(|(from, _)| *from == node) {
                    if dep.contains("output.") && !by_config.contains_key(dep.as_str()) {
                        if seen.insert(dep.clone()) {
                            todo.push(dep.clone());
                        }
                        continue;
                    }
                    for row in by_config.get(dep.as_str()).into_iter().flatten() {
                        read.insert(row.address.clone());
                        for d in &row.dependencies {
                            for up in by_config.get(d.as_str()).into_iter().flatten() {
                                read.insert(up.address.clone());
                            }
                        }
                    }
                }
            }
        }
        let read: Vec<String> = read.into_iter().filter(|a| !in_write.contains(a)).collect();
        let targets = targets(rows, &write);
        Ok(ChangeSet {
            changed: changed.to_vec(),
            new: new.len(),
            write,
            read,
            targets,
        })
    }

    /// What a run of `kind` locks: `(exclusive, shared)`. A plan writes
    /// nothing: it locks everything shared.
    pub fn locks(&self, kind: Kind) -> (Vec<String>, Vec<String>) {
        match kind {
            Kind::Plan => (
                Vec::new(),
                self.write.iter().chain(&self.read).cloned().collect(),
            ),
            _ => (self.write.clone(), self.read.clone()),
        }
    }

    /// Whether a run of `kind` holding the locks of `held` holds all that
    /// this change set needs.
    pub fn fits_in(&self, held: &ChangeSet, kind: Kind) -> bool {
        let (exclusive, shared) = held.locks(kind);
        let held_exclusive: HashSet<&String> = exclusive.iter().collect();
        let held_any: HashSet<&String> = exclusive.iter().chain(&shared).collect();
        self.read.iter().all(|a| held_any.contains(a))
            && self.write.iter().all(|a| match kind {
                Kind::Plan => held_any.contains(a),
                _ => held_exclusive.contains(a),
            })
    }

    /// Whether the objects of the change set (written or read) differ
    /// between `before` and `after`.
    pub fn rows_differ(&self, before: &State, after: &State) -> bool {
        let addresses: HashSet<&str> = self
            .write
            .iter()
            .chain(&self.read)
            .map(String::as_str)
            .collect();
        objects_in(before, &addresses) != objects_in(after, &addresses)
    }

    /// Root outputs this run may write: those whose references all lie in
    /// the change set.
    pub fn allowed_outputs(&self, config: &ConfigInfo, before: &State) -> Vec<String> {
        let cone_configs: HashSet<String> = self
            .write
            .iter()
            .chain(&self.read)
            .map(|a| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a)))
            .collect();
        let refs = &config.output_refs;
        let mut names: BTreeSet<String> = before.outputs.iter().map(|(n, _)| n.clone()).collect();
        names.extend(config.outputs.iter().cloned());
        names.retain(|name| {
            refs.iter().filter(|(o, _)| o == name).all(|(_, dep)| {
                match dep.split_once(".output.") {
                    Some((module, _)) => cone_configs
                        .iter()
                        .any(|c| c.starts_with(&format!("{module}."))),
                    None => cone_configs.contains(dep),
                }
            })
        });
        names.into_iter().collect()
    }
}

/// See [`ChangeSet::targets`].
fn targets(rows: &[GraphRow], write: &[String]) -> Vec<String> {
    let resource_of = |a: &str| crate::address::strip_instance_key(a).to_owned();
    let mut total: HashMap<String, usize> = HashMap::new();
    for r in rows {
        *total.entry(resource_of(&r.address)).or_default() += 1;
    }
    let mut written: HashMap<String, Vec<&String>> = HashMap::new();
    for a in write {
        written.entry(resource_of(a)).or_default().push(a);
    }
    let mut out: Vec<String> = Vec::new();
    for (resource, instances) in written {
        if total.get(&resource).is_some_and(|t| *t == instances.len()) && instances.len() > 1 {
            out.push(resource);
        } else {
            out.extend(instances.into_iter().cloned());
        }
    }
    out.sort();
    out
}

/// Object identity and content of the given addresses.
fn objects_in<'s>(state: &'s State, addresses: &HashSet<&str>) -> Vec<(String, &'s Instance)> {
    let mut out = Vec::new();
    for r in &state.resources {
        let raddr = r.address();
        for i in &r.instances {
            let a = i.address(&raddr);
            if addresses.contains(a.as_str()) {
                out.push((a, i));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.deposed.cmp(&b.1.deposed)));
    out
}
