//! The change set of one run: what discovery found changing, its write set
//! (those instances and everything downstream, on the stored graph, plus new
//! instances) and its read set (what they depend on, also through the
//! configuration's references for new instances), the `-target`s that plan
//! it, and what terraform needs to evaluate the root outputs that change.
//!
//! The graph's own cone ([`crate::graph::Cone`]) knows stored instances
//! only; this adds what the configuration says of instances not stored yet.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Result;

use super::Kind;
use crate::address::{InstanceKey, Target};
use crate::db::store::GraphRow;
use crate::graph::{InstanceInput, StateGraph};
use crate::terraform::config::Narrowable;
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
    /// Whether terraform plans the whole configuration, with no
    /// `-target`: the write set holds every stored managed instance (a
    /// first apply, a destroy), or a root output that reads no resource may
    /// change (a targeted run never evaluates such an output, nor removes
    /// one). See [`ChangeSet::cover_outputs`].
    pub untargeted: bool,
    /// An untargeted run where nothing but root outputs changes: terraform
    /// plans the whole configuration without refreshing (no object is
    /// written), every stored instance locked shared.
    pub outputs_only: bool,
}

/// Root module calls narrowed to some of their instances for one run (see
/// [`ChangeSet::narrow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    /// By call name: its `for_each` expression and the keys kept.
    pub calls: BTreeMap<String, (String, BTreeSet<String>)>,
}

impl Narrowed {
    /// The override file's module blocks: each call's `for_each` filtered to
    /// the keys kept. `for k, v in` a map or object keeps its keys and
    /// values; over a set of strings, both are the element, as `each.key`
    /// and `each.value` are.
    pub fn override_file(&self) -> String {
        let mut out = String::new();
        for (name, (for_each, keys)) in &self.calls {
            let keys: Vec<String> = keys.iter().map(|k| hcl_literal(k)).collect();
            out.push_str(&format!(
                "\nmodule \"{name}\" {{\n  for_each = {{\n    for k, v in (\n{for_each}\n    ) : k => v if contains([{}], k)\n  }}\n}}\n",
                keys.join(", ")
            ));
        }
        out
    }

    /// The module instances terraform is given, for the step line:
    /// `module.team["a"]`, or how many where there are more than three.
    pub fn describe(&self) -> String {
        self.calls
            .iter()
            .map(|(name, (_, keys))| match keys.len() {
                0 => format!("no instance of module.{name}"),
                1..=3 => keys
                    .iter()
                    .map(|k| format!("module.{name}[{}]", hcl_literal(k)))
                    .collect::<Vec<_>>()
                    .join(", "),
                n => format!("{n} instances of module.{name}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `key` as an HCL string literal, quoted as terraform prints a key.
fn hcl_literal(key: &str) -> String {
    InstanceKey::Str(key.to_owned()).to_string()
}

impl ChangeSet {
    /// `state` with only what a targeted terraform run of this change set
    /// needs: the instances it writes or reads and every instance its
    /// `-target`s cover (a module target plans all of that module's); and
    /// **every** instance of each resource terraform evaluates besides
    /// them. Terraform plans (and evaluates over) all instances of a
    /// resource a target depends on, and a root output over all instances
    /// of what it reads (`aws_subnet.private[*].id`): an instance missing
    /// from the state would be planned as new, or left out of the output.
    /// What is evaluated is followed in the configuration (`info`'s edges,
    /// through module outputs: a reference to a module output brings in
    /// every resource of that module, as terraform's targeted plan does)
    /// and in the state's recorded dependencies, from the cone and from
    /// every root output the run evaluates ([`ChangeSet::evaluated_outputs`]).
    /// With `catalog` (every stored resource), `state` may hold the rows of
    /// some resources only: what is evaluated whole is followed through
    /// the catalog, and [`ChangeSet::needs`] says which rows must be there.
    pub fn cone_state(&self, state: &State, info: &ConfigInfo, catalog: Option<&Catalog>) -> State {
        let config_of =
            |a: &str| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a));
        let of_state;
        let catalog = match catalog {
            Some(c) => c,
            None => {
                of_state = Catalog::of_state(state);
                &of_state
            }
        };
        let (kept, whole) = self.kept_and_whole(state, info, catalog);
        // Only what is kept is copied: cloning the whole state first costs
        // half a second at 100,000 instances.
        let mut resources = Vec::new();
        for r in &state.resources {
            let address = r.address();
            let instances: Vec<Instance> = match whole.contains(&config_of(&address)) {
                true => r.instances.clone(),
                false => r
                    .instances
                    .iter()
                    .filter(|i| kept.contains(&i.address(&address)))
                    .cloned()
                    .collect(),
            };
            if !instances.is_empty() {
                resources.push(crate::tfstate::Resource {
                    module: r.module.clone(),
                    mode: r.mode.clone(),
                    type_: r.type_.clone(),
                    name: r.name.clone(),
                    each: r.each.clone(),
                    provider: r.provider.clone(),
                    instances,
                    extra: r.extra.clone(),
                });
            }
        }
        state.with_resources(resources)
    }

    /// What [`ChangeSet::cone_state`] keeps of `state`: the instances
    /// written, read or targeted, by address, and the configuration
    /// addresses every instance of which it keeps (what terraform
    /// evaluates besides), followed through `catalog` (every stored
    /// resource, whether `state` holds its rows or not).
    fn kept_and_whole(
        &self,
        state: &State,
        info: &ConfigInfo,
        catalog: &Catalog,
    ) -> (HashSet<String>, HashSet<String>) {
        let listed = self.touched();
        let targeted = |a: &str| {
            self.targets.iter().any(|t| {
                a == t
                    || a.strip_prefix(t.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
        };
        let config_of =
            |a: &str| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a));
        let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
        for (from, to) in &info.edges {
            edges.entry(from.as_str()).or_default().push(to.as_str());
        }
        let evaluated = self.evaluated_outputs(info);
        let mut kept: HashSet<String> = HashSet::new();
        // Dependencies: configuration addresses (resources, data sources,
        // module outputs) whose every instance is kept.
        let mut todo: Vec<String> = Vec::new();
        let mut cone_blocks: HashSet<String> = HashSet::new();
        for r in &state.resources {
            let address = r.address();
            for i in &r.instances {
                let a = i.address(&address);
                if listed.contains(a.as_str()) || targeted(&a) {
                    todo.extend(i.dependencies.iter().cloned());
                    cone_blocks.insert(config_of(&a));
                    kept.insert(a);
                }
            }
        }
        // New instances too: what their configuration reads.
        cone_blocks.extend(self.write.iter().chain(&self.targets).map(|a| config_of(a)));
        for block in &cone_blocks {
            todo.extend(
                edges
                    .get(block.as_str())
                    .into_iter()
                    .flatten()
                    .map(|d| (*d).to_owned()),
            );
        }
        for (name, dep) in &info.output_refs {
            if evaluated.contains(name) {
                todo.push(dep.clone());
            }
        }
        let mut whole: HashSet<String> = HashSet::new();
        while let Some(node) = todo.pop() {
            if !whole.insert(node.clone()) {
                continue;
            }
            if let Some((module, _)) = node.split_once(".output.") {
                // Every resource of the module, nested modules included.
                let under = format!("{module}.");
                todo.extend(
                    catalog
                        .by_config
                        .keys()
                        .filter(|c| c.starts_with(&under))
                        .cloned(),
                );
            }
            todo.extend(
                edges
                    .get(node.as_str())
                    .into_iter()
                    .flatten()
                    .map(|d| (*d).to_owned()),
            );
            for &n in catalog.by_config.get(&node).into_iter().flatten() {
                todo.extend(catalog.entries[n].dependencies.iter().cloned());
            }
        }
        (kept, whole)
    }

    /// Narrows `partial` (this change set's [`ChangeSet::cone_state`]) to
    /// the instances of the root module calls in `narrowable` that this run
    /// touches: for each call, the keys of the module instances it writes,
    /// reads or targets, and the keys the root module names. A call the run
    /// targets whole (`module.team`) is not narrowed; one it does not touch
    /// is narrowed to the keys named alone (often none). Returns the state
    /// without the other instances' rows and, by call, the keys kept;
    /// terraform must then be given the configuration of
    /// [`Narrowed::override_file`], where the same calls expand to those
    /// keys only: it plans the same, without expanding and evaluating every
    /// other module instance (1.2 s of a 24-instance change's plan at 1,000
    /// module instances).
    pub fn narrow(
        &self,
        partial: State,
        narrowable: &BTreeMap<String, Narrowable>,
    ) -> (State, Option<Narrowed>) {
        let Some(calls) = self.narrowed_calls(narrowable) else {
            return (partial, None);
        };
        let resources = partial
            .resources
            .iter()
            .filter(|r| module_kept(&calls, &r.module))
            .cloned()
            .collect();
        let narrowed = Narrowed {
            calls: calls
                .into_iter()
                .map(|(name, keys)| {
                    let for_each = narrowable[&name].for_each.clone();
                    (name, (for_each, keys))
                })
                .collect(),
        };
        (partial.with_resources(resources), Some(narrowed))
    }

    /// The keys [`ChangeSet::narrow`] keeps, by call; `None` where it
    /// narrows nothing.
    fn narrowed_calls(
        &self,
        narrowable: &BTreeMap<String, Narrowable>,
    ) -> Option<BTreeMap<String, BTreeSet<String>>> {
        let mut keys: BTreeMap<&str, Option<BTreeSet<String>>> = narrowable
            .iter()
            .map(|(name, n)| (name.as_str(), Some(n.named.clone())))
            .collect();
        for address in self.write.iter().chain(&self.read).chain(&self.targets) {
            let module = match crate::address::parse_target(address) {
                Ok(Target::Module(m)) => m,
                Ok(Target::Resource(r)) => r.module,
                Ok(Target::Instance(i)) => i.resource.module,
                // Not an address this reads: narrow nothing.
                Err(_) => return None,
            };
            let Some(step) = module.0.first() else {
                continue;
            };
            let Some(kept) = keys.get_mut(step.name.as_str()) else {
                continue;
            };
            match (&step.key, kept.as_mut()) {
                (Some(InstanceKey::Str(k)), Some(set)) => {
                    set.insert(k.clone());
                }
                // Every instance, or a key that is not a for_each key.
                _ => *kept = None,
            }
        }
        let calls: BTreeMap<String, BTreeSet<String>> = keys
            .into_iter()
            .filter_map(|(name, k)| Some((name.to_owned(), k?)))
            .collect();
        (!calls.is_empty()).then_some(calls)
    }

    /// The stored resources (addresses) whose rows this change set and its
    /// partial state consult, computed on `rows` (all rows of the
    /// resources in `catalog`'s [`Catalog::read`]): each row it writes or
    /// reads, what depends on a written one and what each depends on, the
    /// triggers of written instances, what new instances and the root
    /// outputs it evaluates read (`stale`: discovery's), what its targets
    /// cover, and every resource of the blocks terraform evaluates whole
    /// (of the module instances `narrowable` keeps, where the partial
    /// state is narrowed). Those outside [`Catalog::read`] are to be read
    /// before the change set stands: its computation on fewer rows may
    /// have missed what they add.
    pub fn needs(
        &self,
        rows: &[GraphRow],
        info: &ConfigInfo,
        stale: &[String],
        catalog: &Catalog,
        partial: Option<(&State, Option<&BTreeMap<String, Narrowable>>)>,
    ) -> BTreeSet<String> {
        let config_of =
            |a: &str| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a));
        let mut out: BTreeSet<String> = BTreeSet::new();
        let with_deps = |e: &CatalogEntry, out: &mut BTreeSet<String>| {
            out.insert(e.address.clone());
            for d in &e.dependencies {
                out.extend(catalog.in_scope(&e.address, d).map(|x| x.address.clone()));
            }
        };
        let in_write: HashSet<&str> = self.write.iter().map(String::as_str).collect();
        let touched = self.touched();
        let stored: HashSet<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        // The cone on the stored graph: what depends on what it writes,
        // transitively, and what all of it depends on, transitively
        // (resource by resource: more than the instances' own edges reach,
        // never less).
        let mut down: Vec<(String, String)> = rows
            .iter()
            .filter(|r| in_write.contains(r.address.as_str()))
            .map(|r| (r.address.clone(), r.config_address.clone()))
            .collect();
        let mut up: Vec<&CatalogEntry> = Vec::new();
        for r in rows.iter().filter(|r| touched.contains(r.address.as_str())) {
            for d in &r.dependencies {
                up.extend(catalog.in_scope(&r.address, d));
            }
        }
        let mut reached: HashSet<String> = HashSet::new();
        while let Some((address, config)) = down.pop() {
            for &n in catalog.dependents.get(&config).into_iter().flatten() {
                let e = &catalog.entries[n];
                let binds = crate::graph::dependency_scope(&e.address, &config)
                    .is_none_or(|s| s.holds(&address));
                if binds && reached.insert(e.address.clone()) {
                    up.push(e);
                    down.push((
                        e.address.clone(),
                        crate::tfstate::strip_module_keys(&e.address),
                    ));
                }
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
        while let Some(e) = up.pop() {
            if !seen.insert(&e.address) {
                continue;
            }
            out.insert(e.address.clone());
            for d in &e.dependencies {
                up.extend(catalog.in_scope(&e.address, d));
            }
        }
        // Triggers of written instances.
        for (block, trigger) in &info.triggers {
            for w in self.write.iter().filter(|w| config_of(w) == *block) {
                out.extend(catalog.in_scope(w, trigger).map(|x| x.address.clone()));
            }
        }
        // What new instances read, through module outputs.
        for n in self.write.iter().filter(|w| !stored.contains(w.as_str())) {
            let mut todo = vec![config_of(n)];
            let mut seen: HashSet<String> = HashSet::new();
            while let Some(node) = todo.pop() {
                for (_, dep) in info.edges.iter().filter(|(from, _)| *from == node) {
                    if dep.contains("output.") && !catalog.by_config.contains_key(dep.as_str()) {
                        if seen.insert(dep.clone()) {
                            todo.push(dep.clone());
                        }
                        continue;
                    }
                    for e in catalog.in_scope(n, dep) {
                        with_deps(e, &mut out);
                    }
                }
            }
        }
        // What the root outputs it evaluates read.
        let written: HashSet<String> = self.write.iter().map(|a| config_of(a)).collect();
        for (name, deps) in &output_reads(info) {
            if stale.contains(name) || deps.iter().any(|d| written.contains(d)) {
                for dep in deps {
                    for &n in catalog.by_config.get(dep).into_iter().flatten() {
                        with_deps(&catalog.entries[n], &mut out);
                    }
                }
            }
        }
        // What its targets cover.
        for t in &self.targets {
            out.extend(
                catalog
                    .entries
                    .iter()
                    .filter(|e| {
                        e.address == *t
                            || e.address
                                .strip_prefix(t.as_str())
                                .is_some_and(|rest| rest.starts_with(['.', '[']))
                    })
                    .map(|e| e.address.clone()),
            );
        }
        // The blocks terraform evaluates whole, as the partial state keeps them.
        if let Some((state, narrowable)) = partial {
            let calls = narrowable.and_then(|n| self.narrowed_calls(n));
            let (_, whole) = self.kept_and_whole(state, info, catalog);
            for block in &whole {
                for &n in catalog.by_config.get(block).into_iter().flatten() {
                    let e = &catalog.entries[n];
                    if calls.as_ref().is_none_or(|c| module_kept(c, &e.module)) {
                        out.insert(e.address.clone());
                    }
                }
            }
        }
        out
    }

    /// The change set of `changed` on the stored graph `rows`, with the
    /// configuration's edges for instances not stored yet.
    /// With `catalog` (every stored resource), `rows` may be those of
    /// some resources only: see [`ChangeSet::needs`].
    pub fn compute(
        rows: &[GraphRow],
        changed: &[String],
        config: &ConfigInfo,
        catalog: Option<&Catalog>,
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
        // Each written instance's trigger is the one its reference binds
        // to (in its own module instance), not every module instance's.
        let by_config = by_config(rows);
        let mut written_by_block: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in rows.iter().filter(|r| in_write.contains(&r.address)) {
            written_by_block
                .entry(r.config_address.as_str())
                .or_default()
                .push(r.address.as_str());
        }
        for (block, trigger) in &config.triggers {
            for written in written_by_block.get(block.as_str()).into_iter().flatten() {
                for r in in_scope(&by_config, written, trigger) {
                    if in_write.insert(r.address.clone()) {
                        write.push(r.address.clone());
                    }
                }
            }
        }

        // New instances read what their configuration references (and,
        // since state dependencies are transitive, what those depend on).
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
                    // Bound as terraform binds the reference (and as the
                    // stored graph draws edges): inside module.m["a"],
                    // module.m.t.n is module.m["a"].t.n, not every team's.
                    for row in in_scope(&by_config, n, dep) {
                        read.insert(row.address.clone());
                        for d in &row.dependencies {
                            for up in in_scope(&by_config, &row.address, d) {
                                read.insert(up.address.clone());
                            }
                        }
                    }
                }
            }
        }
        let read: Vec<String> = read.into_iter().filter(|a| !in_write.contains(a)).collect();
        let targets = targets(rows, &write, catalog);
        let managed = |a: &str| {
            crate::address::parse_instance(a)
                .is_ok_and(|i| i.resource.mode == crate::address::Mode::Managed)
        };
        let untargeted = rows
            .iter()
            .filter(|r| managed(&r.address))
            .all(|r| in_write.contains(&r.address))
            && catalog.is_none_or(Catalog::holds_every_managed);
        Ok(ChangeSet {
            changed: changed.to_vec(),
            new: new.len(),
            write,
            read,
            targets,
            untargeted,
            outputs_only: false,
        })
    }

    /// Brings into the change set what terraform needs to evaluate the
    /// root outputs that may change: those discovery found (`stale`: added,
    /// removed, or reading a changed value) and every output reading a
    /// written resource. Terraform evaluates a root output in a targeted run
    /// only when every resource (or data source) it reads is a target or a
    /// dependency of one: those it reads outside the cone are written too
    /// (their stored instances, without what depends on them: they are
    /// targeted, not changed), until no output reads half in the cone. An
    /// output that reads no resource at all, or one removed from the
    /// configuration, is evaluated only by a run of the whole
    /// configuration: the set is then [`ChangeSet::untargeted`].
    pub fn cover_outputs(
        &mut self,
        rows: &[GraphRow],
        info: &ConfigInfo,
        stale: &[String],
        catalog: Option<&Catalog>,
    ) {
        let outputs_only = self.write.is_empty();
        let reads = output_reads(info);
        if stale.iter().any(|o| !reads.contains_key(o)) {
            // Removed from the configuration.
            self.untargeted = true;
        }
        let by_config = by_config(rows);
        let config_of =
            |a: &str| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a));
        let mut in_write: HashSet<String> = self.write.iter().cloned().collect();
        let mut read: BTreeSet<String> = self.read.iter().cloned().collect();
        loop {
            let written: HashSet<String> = self.write.iter().map(|a| config_of(a)).collect();
            let mut cone: HashSet<String> = written.clone();
            cone.extend(read.iter().map(|a| config_of(a)));
            let mut grew = false;
            for (name, deps) in &reads {
                let needed = stale.contains(name) || deps.iter().any(|d| written.contains(d));
                if !needed {
                    continue;
                }
                if deps.is_empty() {
                    self.untargeted = true;
                    continue;
                }
                for dep in deps.iter().filter(|d| !cone.contains(*d)) {
                    let rows = by_config.get(dep.as_str()).map(Vec::as_slice);
                    let Some(rows) = rows.filter(|r| !r.is_empty()) else {
                        // Nothing stored: the resource address, as for a new one.
                        grew |= in_write.insert(dep.clone());
                        if !self.write.contains(dep) {
                            self.write.push(dep.clone());
                        }
                        continue;
                    };
                    for row in rows {
                        if in_write.insert(row.address.clone()) {
                            self.write.push(row.address.clone());
                            grew = true;
                        }
                        for d in &row.dependencies {
                            for up in in_scope(&by_config, &row.address, d) {
                                read.insert(up.address.clone());
                            }
                        }
                    }
                }
            }
            if !grew {
                break;
            }
        }
        if self.untargeted && outputs_only {
            // Only outputs change: nothing is written but them.
            self.outputs_only = true;
            self.write.clear();
            in_write.clear();
            read = rows.iter().map(|r| r.address.clone()).collect();
        } else if self.untargeted {
            // Terraform plans (and refreshes) every resource: all are written.
            for r in rows {
                let managed = crate::address::parse_instance(&r.address)
                    .is_ok_and(|i| i.resource.mode == crate::address::Mode::Managed);
                if managed && in_write.insert(r.address.clone()) {
                    self.write.push(r.address.clone());
                }
            }
            read = rows.iter().map(|r| r.address.clone()).collect();
        }
        self.read = read.into_iter().filter(|a| !in_write.contains(a)).collect();
        self.targets = targets(rows, &self.write, catalog);
    }

    /// The root outputs terraform's run of this change set evaluates: a
    /// run of the whole configuration evaluates them all, a targeted one
    /// those reading resources, all of them in the cone.
    pub fn evaluated_outputs(&self, info: &ConfigInfo) -> BTreeSet<String> {
        let reads = output_reads(info);
        if self.untargeted {
            return reads.into_keys().collect();
        }
        let cone: HashSet<String> = self
            .write
            .iter()
            .chain(&self.read)
            .map(|a| crate::tfstate::strip_module_keys(crate::address::strip_instance_key(a)))
            .collect();
        reads
            .into_iter()
            .filter(|(_, deps)| !deps.is_empty() && deps.iter().all(|d| cone.contains(d)))
            .map(|(name, _)| name)
            .collect()
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
        let addresses = self.touched();
        objects_in(before, &addresses) != objects_in(after, &addresses)
    }

    /// [`ChangeSet::rows_differ`] from the versions two snapshots read
    /// (object key -> version and transaction; see
    /// [`crate::db::store::Snapshot::versions`]): for a snapshot read light,
    /// whose rows hold no content to compare. A row is rewritten only when
    /// its content changes.
    pub fn versions_differ(
        &self,
        before: &BTreeMap<String, (i64, i64)>,
        after: &BTreeMap<String, (i64, i64)>,
    ) -> bool {
        self.versions_in(before) != self.versions_in(after)
    }

    /// The entries of `versions` (object key -> version and transaction)
    /// of the objects written or read.
    pub fn versions_in(
        &self,
        versions: &BTreeMap<String, (i64, i64)>,
    ) -> BTreeMap<String, (i64, i64)> {
        let listed = self.touched();
        versions
            .iter()
            .filter(|(key, _)| listed.contains(key.split(" deposed ").next().unwrap_or(key)))
            .map(|(key, v)| (key.clone(), *v))
            .collect()
    }

    /// The instances written or read.
    fn touched(&self) -> HashSet<&str> {
        self.write
            .iter()
            .chain(&self.read)
            .map(String::as_str)
            .collect()
    }
}

/// `rows` by configuration address.
fn by_config(rows: &[GraphRow]) -> HashMap<&str, Vec<&GraphRow>> {
    let mut out: HashMap<&str, Vec<&GraphRow>> = HashMap::new();
    for r in rows {
        out.entry(r.config_address.as_str()).or_default().push(r);
    }
    out
}

/// The rows of the configuration resource `dependency` that `address` (an
/// instance or resource address) may reference: those in the module
/// instances they share ([`crate::graph::dependency_scope`]); every one of
/// them where `address` names no module instance (a module call).
fn in_scope<'r>(
    by_config: &HashMap<&str, Vec<&'r GraphRow>>,
    address: &str,
    dependency: &str,
) -> Vec<&'r GraphRow> {
    let scope = crate::graph::dependency_scope(address, dependency);
    let rows = by_config.get(dependency).map_or(&[][..], Vec::as_slice);
    rows.iter()
        .copied()
        .filter(|r| scope.is_none_or(|s| s.holds(&r.address)))
        .collect()
}

/// Whether [`ChangeSet::narrow`] keeps the resources of module instance
/// `module`, narrowing the calls `calls` to their keys.
fn module_kept(calls: &BTreeMap<String, BTreeSet<String>>, module: &str) -> bool {
    if module.is_empty() {
        return true;
    }
    let Ok(path) = crate::address::parse_module_path(module) else {
        return true;
    };
    let Some(step) = path.0.first() else {
        return true;
    };
    match (calls.get(&step.name), &step.key) {
        (None, _) => true,
        (Some(keys), Some(InstanceKey::Str(k))) => keys.contains(k),
        (Some(_), _) => false,
    }
}

/// Every stored resource at a glance, its instances aside: what the change
/// set and the partial state consult beyond the rows a run read (see
/// [`ChangeSet::needs`]). From a state read whole, or from what PostgreSQL
/// keeps of each resource ([`crate::db::store::Store::resources`]).
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    /// Configuration address -> its resources.
    by_config: HashMap<String, Vec<usize>>,
    /// Configuration address depended on -> the resources depending on it.
    dependents: HashMap<String, Vec<usize>>,
    /// The resources whose rows the run read (all of each).
    pub read: BTreeSet<String>,
}

/// One resource of a [`Catalog`].
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// `module.m["a"].t.n`.
    pub address: String,
    /// `module.m["a"]`, or empty.
    pub module: String,
    pub managed: bool,
    /// Its objects, deposed ones included.
    pub objects: usize,
    /// What its objects depend on, each once.
    pub dependencies: Vec<String>,
}

impl From<&super::baseline::ResourceDigest> for CatalogEntry {
    fn from(r: &super::baseline::ResourceDigest) -> CatalogEntry {
        CatalogEntry {
            address: r.address.clone(),
            module: r.module.clone(),
            managed: r.managed,
            objects: r.objects,
            dependencies: r.dependencies.clone(),
        }
    }
}

impl Catalog {
    pub fn new(entries: Vec<CatalogEntry>) -> Catalog {
        let mut by_config: HashMap<String, Vec<usize>> = HashMap::new();
        let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
        for (n, e) in entries.iter().enumerate() {
            by_config
                .entry(crate::tfstate::strip_module_keys(&e.address))
                .or_default()
                .push(n);
            for d in &e.dependencies {
                dependents.entry(d.clone()).or_default().push(n);
            }
        }
        Catalog {
            entries,
            by_config,
            dependents,
            read: BTreeSet::new(),
        }
    }

    /// The resources of `state`, every one of them read.
    pub fn of_state(state: &State) -> Catalog {
        let mut catalog = Catalog::new(
            state
                .resources
                .iter()
                .map(|r| {
                    let deps: BTreeSet<&String> =
                        r.instances.iter().flat_map(|i| &i.dependencies).collect();
                    CatalogEntry {
                        address: r.address(),
                        module: r.module.clone(),
                        managed: r.mode == "managed",
                        objects: r.instances.len(),
                        dependencies: deps.into_iter().cloned().collect(),
                    }
                })
                .collect(),
        );
        catalog.read = catalog.entries.iter().map(|e| e.address.clone()).collect();
        catalog
    }

    /// The resources of block `dependency` that `address` may reference
    /// (as [`in_scope`] binds rows).
    fn in_scope<'c>(
        &'c self,
        address: &'c str,
        dependency: &str,
    ) -> impl Iterator<Item = &'c CatalogEntry> + 'c {
        let scope = crate::graph::dependency_scope(address, dependency);
        self.by_config
            .get(dependency)
            .into_iter()
            .flatten()
            .map(|&n| &self.entries[n])
            .filter(move |e| scope.as_ref().is_none_or(|s| s.holds(&e.address)))
    }

    /// Whether every managed resource's rows were read.
    fn holds_every_managed(&self) -> bool {
        self.entries
            .iter()
            .filter(|e| e.managed && e.objects > 0)
            .all(|e| self.read.contains(&e.address))
    }

    /// Whether a stored resource with objects lies under the module
    /// instance `module`.
    fn holds_under(&self, module: &str) -> bool {
        let under = format!("{module}.");
        self.entries
            .iter()
            .any(|e| e.objects > 0 && e.address.starts_with(&under))
    }

    /// Whether `address` is a stored resource's.
    pub fn holds(&self, address: &str) -> bool {
        self.by_config
            .get(&crate::tfstate::strip_module_keys(address))
            .is_some_and(|n| n.iter().any(|&n| self.entries[n].address == address))
    }

    /// Objects in all.
    pub fn objects(&self) -> usize {
        self.entries.iter().map(|e| e.objects).sum()
    }

    /// The objects of the resources `addresses`.
    pub fn objects_of<'a>(&self, addresses: impl IntoIterator<Item = &'a String>) -> usize {
        let wanted: HashSet<&String> = addresses.into_iter().collect();
        self.entries
            .iter()
            .filter(|e| wanted.contains(&e.address))
            .map(|e| e.objects)
            .sum()
    }

    /// The module instance and configuration address of each of
    /// `addresses` (resources of this catalog), to read their rows.
    pub fn keys_of<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a String>,
    ) -> Vec<(String, String)> {
        let wanted: HashSet<&String> = addresses.into_iter().collect();
        self.entries
            .iter()
            .filter(|e| wanted.contains(&e.address))
            .map(|e| {
                (
                    e.module.clone(),
                    crate::tfstate::strip_module_keys(&e.address),
                )
            })
            .collect()
    }
}

/// See [`ChangeSet::targets`].
fn targets(rows: &[GraphRow], write: &[String], catalog: Option<&Catalog>) -> Vec<String> {
    let resource_of = |a: &str| crate::address::strip_instance_key(a).to_owned();
    let mut total: HashMap<String, usize> = HashMap::new();
    for r in rows {
        *total.entry(resource_of(&r.address)).or_default() += 1;
    }
    let mut written: HashMap<String, Vec<&String>> = HashMap::new();
    for a in write {
        written.entry(resource_of(a)).or_default().push(a);
    }
    // A module instance with no stored rows is new as a whole: it is
    // targeted whole (its outermost new module instance), as terraform
    // evaluates what reads a module instance (`for ... in module.m`) only
    // when all of it is in the run, its resources of count 0 included.
    let stored: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
    let new_module = |a: &str| -> Option<String> {
        let module = crate::address::parse_instance(a).ok()?.resource.module;
        (1..=module.0.len())
            .map(|k| crate::address::ModulePath(module.0[..k].to_vec()).to_string())
            .find(|m| match catalog {
                Some(c) => !c.holds_under(m),
                None => {
                    let under = format!("{m}.");
                    !stored.iter().any(|s| s.starts_with(&under))
                }
            })
    };
    let mut out: BTreeSet<String> = BTreeSet::new();
    for (resource, instances) in written {
        // The resource's own address is written where instances may be
        // added: its target covers every instance. Naming them besides
        // costs terraform time (a second at 1,000 module instances).
        let whole = instances.iter().any(|a| **a == resource);
        let all_stored = total.get(&resource).is_some_and(|t| *t == instances.len());
        if let Some(module) = new_module(&resource) {
            out.insert(module);
        } else if whole || (all_stored && instances.len() > 1) {
            out.insert(resource);
        } else {
            out.extend(instances.into_iter().cloned());
        }
    }
    out.into_iter().collect()
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

/// The resources and data sources (configuration addresses) each root
/// output reads, through module outputs.
fn output_reads(info: &ConfigInfo) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = info
        .outputs
        .iter()
        .map(|o| (o.clone(), BTreeSet::new()))
        .collect();
    // Module outputs are nodes of their own: what each reads.
    let mut module_outputs: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, to) in info.edges.iter().filter(|(f, _)| f.contains(".output.")) {
        module_outputs.entry(from).or_default().push(to);
    }
    for (name, dep) in &info.output_refs {
        let mut todo = vec![dep.as_str()];
        let mut seen: HashSet<&str> = HashSet::new();
        while let Some(node) = todo.pop() {
            if !seen.insert(node) {
                continue;
            }
            if node.contains(".output.") {
                todo.extend(module_outputs.get(node).into_iter().flatten());
            } else {
                out.entry(name.clone()).or_default().insert(node.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that read the state light re-checks its cone under the lock
    /// by the versions of its rows: a row outside the cone, or none,
    /// changing does not make it plan again; a cone row rewritten, added
    /// or removed does.
    #[test]
    fn the_cone_changed_since_the_snapshot_by_its_rows_versions() {
        let cs = ChangeSet {
            changed: vec!["a.x".into()],
            write: vec!["a.x".into()],
            read: vec!["b.y[0]".into()],
            new: 0,
            targets: vec!["a.x".into()],
            untargeted: false,
            outputs_only: false,
        };
        let versions = |rows: &[(&str, i64, i64)]| -> BTreeMap<String, (i64, i64)> {
            rows.iter()
                .map(|(k, v, t)| (k.to_string(), (*v, *t)))
                .collect()
        };
        let before = versions(&[("a.x", 1, 1), ("b.y[0]", 2, 3), ("c.z", 1, 1)]);
        assert!(!cs.versions_differ(&before, &before));
        let elsewhere = versions(&[("a.x", 1, 1), ("b.y[0]", 2, 3), ("c.z", 2, 9)]);
        assert!(!cs.versions_differ(&before, &elsewhere));
        let read_row = versions(&[("a.x", 1, 1), ("b.y[0]", 3, 9), ("c.z", 1, 1)]);
        assert!(cs.versions_differ(&before, &read_row));
        let deposed = versions(&[
            ("a.x", 1, 1),
            ("a.x deposed 00aa", 1, 9),
            ("b.y[0]", 2, 3),
            ("c.z", 1, 1),
        ]);
        assert!(cs.versions_differ(&before, &deposed));
        let removed = versions(&[("b.y[0]", 2, 3), ("c.z", 1, 1)]);
        assert!(cs.versions_differ(&before, &removed));
    }

    #[test]
    fn a_narrowed_call_names_its_keys_as_hcl_reads_them() {
        let keys = ["a", "b c", "q\"d", "t${x}", "p%{y}", "n\nl"];
        let narrowed = Narrowed {
            calls: BTreeMap::from([(
                "team".to_owned(),
                (
                    "var.teams".to_owned(),
                    keys.iter().map(|k| k.to_string()).collect(),
                ),
            )]),
        };
        let file = narrowed.override_file();
        assert!(
            file.contains(r#"contains(["a", "b c", "n\nl", "p%%{y}", "q\"d", "t$${x}"], k)"#),
            "{file}"
        );
        assert!(file.contains("for k, v in (\nvar.teams\n    )"), "{file}");
        assert_eq!(narrowed.describe(), "6 instances of module.team");
    }

    fn row(address: &str, deps: &[&str]) -> GraphRow {
        GraphRow {
            address: address.to_owned(),
            config_address: crate::tfstate::strip_module_keys(crate::address::strip_instance_key(
                address,
            )),
            dependencies: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    /// `vpc`; `subnet[0..2]` and `sg` read it; `other` alone; outputs:
    /// `ids` (sg and other), `subnets` (every subnet), `region` (nothing).
    fn fixture() -> (Vec<GraphRow>, ConfigInfo) {
        let rows = vec![
            row("terraform_data.vpc", &[]),
            row("terraform_data.subnet[0]", &["terraform_data.vpc"]),
            row("terraform_data.subnet[1]", &["terraform_data.vpc"]),
            row("terraform_data.sg", &["terraform_data.vpc"]),
            row("terraform_data.other", &[]),
        ];
        let refs = |o: &str, d: &str| (o.to_owned(), d.to_owned());
        let info = ConfigInfo {
            edges: Vec::new(),
            output_refs: vec![
                refs("ids", "terraform_data.sg"),
                refs("ids", "terraform_data.other"),
                refs("subnets", "terraform_data.subnet"),
            ],
            outputs: vec!["ids".into(), "region".into(), "subnets".into()],
            triggers: Vec::new(),
        };
        (rows, info)
    }

    /// The catalog of `rows`, every resource read where `read` is `None`.
    fn catalog_of_rows(rows: &[GraphRow], read: Option<&[&str]>) -> Catalog {
        let mut by_resource: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        for r in rows {
            let e = by_resource
                .entry(crate::address::strip_instance_key(&r.address).to_owned())
                .or_default();
            e.0 += 1;
            e.1.extend(r.dependencies.iter().cloned());
        }
        let mut catalog = Catalog::new(
            by_resource
                .into_iter()
                .map(|(address, (objects, deps))| CatalogEntry {
                    module: crate::address::parse_target(&address)
                        .ok()
                        .and_then(|t| match t {
                            Target::Resource(r) => Some(r.module.to_string()),
                            _ => None,
                        })
                        .unwrap_or_default(),
                    address,
                    managed: true,
                    objects,
                    dependencies: deps.into_iter().collect(),
                })
                .collect(),
        );
        catalog.read = match read {
            Some(read) => read.iter().map(|r| (*r).to_owned()).collect(),
            None => catalog.entries.iter().map(|e| e.address.clone()).collect(),
        };
        catalog
    }

    /// The change set of one team's base computed on its rows alone names
    /// what else it must read: that team's services (they depend on it)
    /// and the root resource (it depends on it), not the other team's;
    /// once those are read, nothing more, and the change set is the one
    /// of every row.
    #[test]
    fn a_change_set_on_some_rows_names_the_resources_it_needs() {
        let base = |t: &str| format!(r#"module.team["{t}"].terraform_data.base"#);
        let svc = |t: &str, i: usize| format!(r#"module.team["{t}"].terraform_data.svc[{i}]"#);
        let mut rows = vec![row("terraform_data.org", &[])];
        for t in ["a", "b"] {
            rows.push(row(&base(t), &["terraform_data.org"]));
            for i in 0..2 {
                rows.push(row(
                    &svc(t, i),
                    &["module.team.terraform_data.base", "terraform_data.org"],
                ));
            }
        }
        let info = fixture().1;
        let info = ConfigInfo {
            output_refs: Vec::new(),
            outputs: Vec::new(),
            ..info
        };
        let changed = vec![base("a")];
        let whole = ChangeSet::compute(&rows, &changed, &info, None).unwrap();

        let read = [r#"module.team["a"].terraform_data.base"#];
        let catalog = catalog_of_rows(&rows, Some(&read));
        let some: Vec<GraphRow> = rows
            .iter()
            .filter(|r| r.address == base("a"))
            .cloned()
            .collect();
        let cs = ChangeSet::compute(&some, &changed, &info, Some(&catalog)).unwrap();
        let needs = cs.needs(&some, &info, &[], &catalog, None);
        assert_eq!(
            needs.into_iter().collect::<Vec<_>>(),
            [
                r#"module.team["a"].terraform_data.base"#,
                r#"module.team["a"].terraform_data.svc"#,
                "terraform_data.org",
            ]
        );

        let read = [
            r#"module.team["a"].terraform_data.base"#,
            r#"module.team["a"].terraform_data.svc"#,
            "terraform_data.org",
        ];
        let catalog = catalog_of_rows(&rows, Some(&read));
        let some: Vec<GraphRow> = rows
            .iter()
            .filter(|r| !r.address.contains(r#"["b"]"#))
            .cloned()
            .collect();
        let cs = ChangeSet::compute(&some, &changed, &info, Some(&catalog)).unwrap();
        assert!(cs
            .needs(&some, &info, &[], &catalog, None)
            .is_subset(&catalog.read));
        assert_eq!(
            (&cs.write, &cs.read, &cs.targets, cs.untargeted),
            (&whole.write, &whole.read, &whole.targets, whole.untargeted)
        );
        // Not every managed resource read: never a run of everything.
        assert!(!cs.untargeted);
    }

    fn cover(changed: &[&str], stale: &[&str]) -> ChangeSet {
        let (rows, info) = fixture();
        let changed: Vec<String> = changed.iter().map(|a| (*a).to_owned()).collect();
        let stale: Vec<String> = stale.iter().map(|a| (*a).to_owned()).collect();
        let mut cs = ChangeSet::compute(&rows, &changed, &info, None).unwrap();
        cs.cover_outputs(&rows, &info, &stale, None);
        cs
    }

    #[test]
    fn an_output_reading_a_written_resource_brings_in_what_else_it_reads() {
        let cs = cover(&["terraform_data.sg"], &[]);
        assert!(
            cs.write.contains(&"terraform_data.other".to_owned()),
            "{cs:?}"
        );
        assert!(!cs.untargeted);
        // One subnet written: the resource is in the run, the output is
        // evaluated on its sibling as stored, nothing is added.
        let cs = cover(&["terraform_data.subnet[0]"], &[]);
        assert_eq!(cs.write, ["terraform_data.subnet[0]"]);
        assert!(cs.evaluated_outputs(&fixture().1).contains("subnets"));
    }

    /// Instances may be added to `svc` of one team module instance: it
    /// reads that team's `base` (and what it reads), not every team's.
    #[test]
    fn a_resource_that_may_grow_reads_its_own_module_instance_only() {
        let rows = vec![
            row("terraform_data.org", &[]),
            row(
                r#"module.team["a"].terraform_data.base"#,
                &["terraform_data.org"],
            ),
            row(
                r#"module.team["b"].terraform_data.base"#,
                &["terraform_data.org"],
            ),
            row(
                r#"module.team["a"].terraform_data.svc[0]"#,
                &["module.team.terraform_data.base", "terraform_data.org"],
            ),
            row(
                r#"module.team["b"].terraform_data.svc[0]"#,
                &["module.team.terraform_data.base", "terraform_data.org"],
            ),
        ];
        let info = ConfigInfo {
            edges: vec![(
                "module.team.terraform_data.svc".to_owned(),
                "module.team.terraform_data.base".to_owned(),
            )],
            output_refs: Vec::new(),
            outputs: Vec::new(),
            triggers: Vec::new(),
        };
        let changed = [
            r#"module.team["a"].terraform_data.svc"#.to_owned(),
            r#"module.team["a"].terraform_data.svc[0]"#.to_owned(),
        ];
        let cs = ChangeSet::compute(&rows, &changed, &info, None).unwrap();
        assert_eq!(
            cs.read,
            [
                r#"module.team["a"].terraform_data.base"#,
                "terraform_data.org"
            ],
            "{cs:?}"
        );
    }

    /// `svc` is replaced when its module instance's `base` changes: the
    /// trigger targeted with a written `svc` is that module instance's.
    #[test]
    fn a_trigger_is_the_written_instances_own_module_instances() {
        let rows: Vec<GraphRow> = ["a", "b"]
            .iter()
            .flat_map(|k| {
                [
                    row(&format!(r#"module.team["{k}"].terraform_data.base"#), &[]),
                    row(&format!(r#"module.team["{k}"].terraform_data.svc[0]"#), &[]),
                ]
            })
            .collect();
        let info = ConfigInfo {
            edges: Vec::new(),
            output_refs: Vec::new(),
            outputs: Vec::new(),
            triggers: vec![(
                "module.team.terraform_data.svc".to_owned(),
                "module.team.terraform_data.base".to_owned(),
            )],
        };
        let changed = [r#"module.team["a"].terraform_data.svc[0]"#.to_owned()];
        let cs = ChangeSet::compute(&rows, &changed, &info, None).unwrap();
        assert_eq!(
            cs.write,
            [
                r#"module.team["a"].terraform_data.svc[0]"#,
                r#"module.team["a"].terraform_data.base"#
            ],
            "{cs:?}"
        );
    }

    #[test]
    fn a_written_resource_address_is_targeted_alone_not_with_its_instances() {
        let (rows, _) = fixture();
        let write = |a: &[&str]| a.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        // Instances may be added to subnet: its target covers them all.
        let both = write(&[
            "terraform_data.subnet",
            "terraform_data.subnet[0]",
            "terraform_data.subnet[1]",
        ]);
        assert_eq!(targets(&rows, &both, None), ["terraform_data.subnet"]);
        let one = write(&["terraform_data.subnet", "terraform_data.subnet[0]"]);
        assert_eq!(targets(&rows, &one, None), ["terraform_data.subnet"]);
        // Every stored instance written: the resource.
        let all = write(&["terraform_data.subnet[0]", "terraform_data.subnet[1]"]);
        assert_eq!(targets(&rows, &all, None), ["terraform_data.subnet"]);
        // Some of them: those instances only.
        let some = write(&["terraform_data.subnet[1]", "terraform_data.sg"]);
        assert_eq!(
            targets(&rows, &some, None),
            ["terraform_data.sg", "terraform_data.subnet[1]"]
        );
    }

    #[test]
    fn a_stale_output_is_targeted_through_what_it_reads_without_their_dependents() {
        let cs = cover(&[], &["subnets"]);
        assert_eq!(
            cs.write,
            ["terraform_data.subnet[0]", "terraform_data.subnet[1]"]
        );
        assert_eq!(cs.read, ["terraform_data.vpc"]);
        assert!(!cs.untargeted && !cs.outputs_only);
    }

    #[test]
    fn an_output_reading_no_resource_needs_the_whole_configuration() {
        // Only outputs change: nothing written, everything read.
        let cs = cover(&[], &["region", "subnets"]);
        assert!(cs.untargeted && cs.outputs_only, "{cs:?}");
        assert!(cs.write.is_empty());
        assert_eq!(cs.read.len(), 5);
        // With a resource change: every instance written.
        let cs = cover(&["terraform_data.other"], &["region"]);
        assert!(cs.untargeted && !cs.outputs_only);
        assert_eq!(cs.write.len(), 5);
        // An output removed from the configuration too.
        assert!(cover(&[], &["gone"]).untargeted);
    }

    /// A tfstate v4 of `terraform_data` instances: `(module, name, key,
    /// dependencies)`.
    fn state_of(instances: &[(&str, &str, Option<u32>, &[&str])]) -> State {
        let resources: Vec<serde_json::Value> = instances
            .iter()
            .map(|(module, name, key, deps)| {
                let mut r = serde_json::json!({
                    "mode": "managed", "type": "terraform_data", "name": name,
                    "provider": "provider[\"terraform.io/builtin/terraform\"]",
                    "instances": [{"schema_version": 0, "attributes": {"id": name},
                                   "dependencies": deps}],
                });
                if !module.is_empty() {
                    r["module"] = serde_json::json!(module);
                }
                if let Some(k) = key {
                    r["instances"][0]["index_key"] = serde_json::json!(k);
                }
                r
            })
            .collect();
        // One resource entry per instance: merged by the reader.
        let mut merged: Vec<serde_json::Value> = Vec::new();
        for r in resources {
            let same = merged
                .iter_mut()
                .find(|m| m["name"] == r["name"] && m.get("module") == r.get("module"));
            match same {
                Some(m) => m["instances"]
                    .as_array_mut()
                    .unwrap()
                    .push(r["instances"][0].clone()),
                None => merged.push(r),
            }
        }
        let doc = serde_json::json!({
            "version": 4, "terraform_version": "1.11.4", "serial": 1,
            "lineage": "l", "outputs": {}, "resources": merged,
        });
        crate::tfstate::parse(doc.to_string().as_bytes()).unwrap()
    }

    fn kept(state: &State) -> BTreeSet<String> {
        state.instance_addresses().collect()
    }

    #[test]
    fn the_partial_state_holds_every_instance_an_evaluated_output_reads() {
        // `subnets = terraform_data.subnet[*].id`: one subnet written, the
        // output is evaluated over both.
        let (rows, info) = fixture();
        let state = state_of(&[
            ("", "vpc", None, &[]),
            ("", "subnet", Some(0), &["terraform_data.vpc"]),
            ("", "subnet", Some(1), &["terraform_data.vpc"]),
            ("", "sg", None, &["terraform_data.vpc"]),
            ("", "other", None, &[]),
        ]);
        let mut cs =
            ChangeSet::compute(&rows, &["terraform_data.subnet[0]".to_owned()], &info, None)
                .unwrap();
        cs.cover_outputs(&rows, &info, &[], None);
        let partial = cs.cone_state(&state, &info, None);
        assert_eq!(
            kept(&partial),
            BTreeSet::from([
                "terraform_data.subnet[0]".to_owned(),
                "terraform_data.subnet[1]".to_owned(),
                "terraform_data.vpc".to_owned(),
            ])
        );
    }

    #[test]
    fn a_module_output_read_by_the_cone_brings_in_every_resource_of_that_module() {
        // `replication` reads `module.bucket[each.key].id`: terraform's
        // targeted plan of it plans every resource of every bucket.
        let rows = vec![
            row("module.bucket[\"a\"].terraform_data.bucket", &[]),
            row(
                "module.bucket[\"a\"].terraform_data.policy",
                &["module.bucket.terraform_data.bucket"],
            ),
            row("module.bucket[\"b\"].terraform_data.bucket", &[]),
            row("terraform_data.unrelated", &[]),
        ];
        let info = ConfigInfo {
            edges: vec![
                (
                    "terraform_data.replication".into(),
                    "module.bucket.output.id".into(),
                ),
                (
                    "module.bucket.output.id".into(),
                    "module.bucket.terraform_data.bucket".into(),
                ),
            ],
            output_refs: Vec::new(),
            outputs: Vec::new(),
            triggers: Vec::new(),
        };
        let state = state_of(&[
            ("module.bucket[\"a\"]", "bucket", None, &[]),
            (
                "module.bucket[\"a\"]",
                "policy",
                None,
                &["module.bucket.terraform_data.bucket"],
            ),
            ("module.bucket[\"b\"]", "bucket", None, &[]),
            ("", "unrelated", None, &[]),
        ]);
        let new = "terraform_data.replication[\"a\"]".to_owned();
        let cs = ChangeSet::compute(&rows, &[new], &info, None).unwrap();
        let partial = cs.cone_state(&state, &info, None);
        assert_eq!(
            kept(&partial),
            BTreeSet::from([
                "module.bucket[\"a\"].terraform_data.bucket".to_owned(),
                "module.bucket[\"a\"].terraform_data.policy".to_owned(),
                "module.bucket[\"b\"].terraform_data.bucket".to_owned(),
            ])
        );
    }
}
