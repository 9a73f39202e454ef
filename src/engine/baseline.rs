//! Discovery without terraform: which resource blocks may plan a change,
//! from the configuration's hashes ([`crate::terraform::config`]) and the
//! baseline recorded when the stored rows were last found converged.
//!
//! A block is left out of the plan only when its hash equals the recorded
//! one and its rows, and the rows they depend on, are byte for byte those
//! recorded (the digest). Everything else is a candidate: all its stored
//! instances, plus its resource address where instances may be added.
//! Terraform's targeted plan of the candidates' cone then says what really
//! changes.
//!
//! The baseline is written by terraform's own full plan (blocks it plans as
//! no-op), by a successful apply (blocks it applied: their rows are what the
//! configuration says), and by an apply whose targeted plan found nothing to
//! do.
//!
//! Root outputs have entries of their own (`output:NAME`, the hash of what
//! their value depends on in the configuration), recorded when terraform
//! evaluated them in an applied run or planned them as no-op in a full plan:
//! an output whose hash differs, or is not recorded, or a stored output the
//! configuration no longer declares, is a candidate ([`stale_outputs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::terraform::config::{Config, Unsupported};
use crate::tfstate::{strip_module_keys, State};

/// Baseline key of a module call.
fn call_key(path: &str) -> String {
    format!("module:{path}")
}

/// Baseline key of a root output.
fn output_key(name: &str) -> String {
    format!("output:{name}")
}

/// Root outputs whose stored value may differ from what terraform would
/// give them: added or edited since recorded (or never recorded), and
/// stored outputs the configuration no longer declares. Sorted.
pub fn stale_outputs(
    config: &Config,
    baseline: &HashMap<String, [String; 3]>,
    state: &State,
) -> Vec<String> {
    let mut out: BTreeSet<String> = config
        .outputs
        .iter()
        .filter(|(name, hash)| baseline.get(&output_key(name)).map(|[h, _, _]| h) != Some(*hash))
        .map(|(name, _)| name.clone())
        .collect();
    out.extend(
        state
            .outputs
            .iter()
            .filter(|(name, _)| !config.outputs.contains_key(name))
            .map(|(name, _)| name.clone()),
    );
    out.into_iter().collect()
}

/// Entries recording the root outputs `names` as converged (terraform
/// evaluated them, or planned them as no-op).
pub fn outputs_converged<'a>(
    config: &Config,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, [String; 3])> {
    names
        .into_iter()
        .filter_map(|name| {
            let hash = config.outputs.get(name)?;
            Some((
                output_key(name),
                [hash.clone(), String::new(), String::new()],
            ))
        })
        .collect()
}

/// The block (configuration address) of an instance or resource address.
pub fn block_of(address: &str) -> String {
    strip_module_keys(crate::address::strip_instance_key(address))
}

/// The prefix of a resource's baseline key (one module instance's part of
/// a block), for blocks with per-instance hashes
/// ([`crate::terraform::config::Keyed`]).
const KEYED: &str = "keyed:";

/// Baseline key of a resource: see [`KEYED`].
fn keyed_key(resource: &str) -> String {
    format!("{KEYED}{resource}")
}

/// The third part of a per-instance entry: the block's text hash and the
/// hash of the instance's map entries.
fn keyed_text(text: &str, entries: &str) -> String {
    format!("{text}|{entries}")
}

/// Digests of a state's stored rows and the rows they depend on.
pub struct Digests {
    /// By block (`module.m.t.n`).
    blocks: HashMap<String, String>,
    /// By managed resource (`module.m["a"].t.n`), for per-instance entries.
    resources: HashMap<String, String>,
}

/// How a resource's rows are digested.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    /// Every object's content hashed together: what baselines recorded
    /// before rows kept their own digest.
    Content,
    /// The objects' own digests in the state's order, hashed together:
    /// what baselines recorded before resources kept theirs (`v2:`).
    Ordered,
    /// The objects' own digests ([`crate::tfstate::Instance::digest`],
    /// kept with each row) sorted and hashed together, as PostgreSQL keeps
    /// it for each resource (`resource_digests`, migration 0012): computed
    /// without reading any row. Recorded with the [`CURRENT`] prefix.
    Rows,
}

/// The prefix of digests in the current format ([`Format::Rows`]).
const CURRENT: &str = "v3:";

/// The prefix of digests in the [`Format::Ordered`] format.
const ORDERED: &str = "v2:";

/// One stored resource as discovery digests it: from its rows, or as
/// PostgreSQL keeps it ([`crate::db::store::Store::resource_digests`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDigest {
    /// `module.m["a"].t.n`.
    pub address: String,
    /// The module instance holding it (`module.m["a"]`, or empty).
    pub module: String,
    pub managed: bool,
    /// Its objects (deposed ones included).
    pub objects: usize,
    /// The digest of its objects' digests.
    pub digest: String,
    /// What its objects depend on, sorted, each once.
    pub dependencies: Vec<String>,
}

impl ResourceDigest {
    /// The resources of `state`, from their rows.
    pub fn of_state(state: &State) -> Vec<ResourceDigest> {
        resource_digests(&state.resources, Format::Rows)
    }

    /// The resources as PostgreSQL keeps them (a resource with no objects
    /// digested here, as from its rows).
    pub fn of_summaries(stored: &[crate::db::store::Summary]) -> Vec<ResourceDigest> {
        stored
            .iter()
            .map(|s| {
                let r = &s.resource;
                let digest = match &s.digest {
                    Some(d) => d.clone(),
                    None => {
                        crate::tfstate::resource_digest(&r.provider, &r.mode, r.each.as_deref(), [])
                    }
                };
                let dependencies: BTreeSet<&String> = s.dependencies.iter().collect();
                ResourceDigest {
                    address: r.address(),
                    module: r.module.clone(),
                    managed: r.mode == "managed",
                    objects: s.objects,
                    digest,
                    dependencies: dependencies.into_iter().cloned().collect(),
                }
            })
            .collect()
    }
}

impl Digests {
    pub fn of(state: &State) -> Digests {
        Digests::in_format(state, Format::Rows)
    }

    fn in_format(state: &State, format: Format) -> Digests {
        Digests::from_resources(&resource_digests(&state.resources, format), format)
    }

    /// From the resources' digests alone: those PostgreSQL keeps, and the
    /// state's resources without objects.
    pub fn of_resources(resources: &[ResourceDigest]) -> Digests {
        Digests::from_resources(resources, Format::Rows)
    }

    fn from_resources(resources: &[ResourceDigest], format: Format) -> Digests {
        let prefix = match format {
            Format::Content => "",
            Format::Ordered => ORDERED,
            Format::Rows => CURRENT,
        };
        let mut parts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_resource = HashMap::new();
        for (address, line) in lines(resources) {
            by_resource.insert(
                address.clone(),
                format!("{prefix}{}", hash(line.as_bytes())),
            );
            parts.entry(block_of(&address)).or_default().push(line);
        }
        let blocks = parts
            .into_iter()
            .map(|(block, mut lines)| {
                lines.sort();
                (
                    block,
                    format!("{prefix}{}", hash(lines.join("\n").as_bytes())),
                )
            })
            .collect();
        Digests {
            blocks,
            resources: by_resource,
        }
    }

    fn block(&self, key: &str) -> String {
        self.blocks.get(key).cloned().unwrap_or_else(empty_digest)
    }
}

fn hash(bytes: &[u8]) -> String {
    crate::tfstate::short_digest(bytes)
}

/// One line per managed resource: its rows' digest and those of the rows
/// its instances depend on.
fn lines(resources: &[ResourceDigest]) -> Vec<(String, String)> {
    // Dependencies name resources without module keys: keyless address ->
    // (address, digest) of every resource it may name.
    let mut by_config: HashMap<String, Vec<(&str, &str)>> = HashMap::new();
    for r in resources {
        by_config
            .entry(strip_module_keys(&r.address))
            .or_default()
            .push((&r.address, &r.digest));
    }
    // Sorted, so that the resources under one module instance are a run.
    for named in by_config.values_mut() {
        named.sort_unstable();
    }
    let mut out = Vec::new();
    for r in resources.iter().filter(|r| r.managed) {
        let address = &r.address;
        let mut line = format!("{address}={}", r.digest);
        for d in &r.dependencies {
            // Inside module.m["x"], module.m.t.n is module.m["x"].t.n.
            let prefix = shared_prefix(address, d);
            let all = by_config.get(d.as_str()).map_or(&[][..], Vec::as_slice);
            let from = all.partition_point(|(a, _)| *a < prefix);
            let mut named: Vec<String> = all[from..]
                .iter()
                .take_while(|(a, _)| a.starts_with(prefix))
                .filter(|(a, _)| {
                    a.strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                })
                .map(|(a, digest)| format!("{a}={digest}"))
                .collect();
            named.sort();
            match named.is_empty() {
                true => line.push_str(&format!(" {d}=-")),
                false => line.push_str(&format!(" {d}=[{}]", named.join(","))),
            }
        }
        out.push((address.clone(), line));
    }
    out
}

/// Each resource's digest in `format`, hashed on every core for large
/// states (most of discovery's time at 100,000 instances).
fn resource_digests(resources: &[crate::tfstate::Resource], format: Format) -> Vec<ResourceDigest> {
    /// Instances worth a thread of their own.
    const PER_THREAD: usize = 5_000;
    let digest = |r: &crate::tfstate::Resource| {
        let digest = match format {
            Format::Rows => {
                let digests: Vec<std::borrow::Cow<str>> =
                    r.instances.iter().map(|i| i.digest()).collect();
                crate::tfstate::resource_digest(
                    &r.provider,
                    &r.mode,
                    r.each.as_deref(),
                    digests.iter().map(|d| d.as_ref()),
                )
            }
            Format::Content | Format::Ordered => {
                let mut bytes = format!("{}|{}|{:?}|", r.provider, r.mode, r.each).into_bytes();
                for i in &r.instances {
                    match format {
                        Format::Content => i.write_canonical(&mut bytes),
                        _ => {
                            bytes.extend_from_slice(i.digest().as_bytes());
                            bytes.push(b'\n');
                        }
                    }
                }
                hash(&bytes)
            }
        };
        let dependencies: BTreeSet<&String> =
            r.instances.iter().flat_map(|i| &i.dependencies).collect();
        ResourceDigest {
            address: r.address(),
            module: r.module.clone(),
            managed: r.mode == "managed",
            objects: r.instances.len(),
            digest,
            dependencies: dependencies.into_iter().cloned().collect(),
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let instances: usize = resources.iter().map(|r| r.instances.len()).sum();
    let threads = cores.min(instances / PER_THREAD).max(1);
    if threads == 1 {
        return resources.iter().map(digest).collect();
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = resources
            .chunks(resources.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(digest).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("a digest thread panicked"))
            .collect()
    })
}

/// The part of the resource address `address` naming the module steps it
/// shares with the keyless dependency `dep`, keys included:
/// (`module.m["x"].module.k[0].t.n`, `module.m.module.j.u.v`) -> `module.m["x"]`.
fn shared_prefix<'a>(address: &'a str, dep: &str) -> &'a str {
    let (mut rest, mut dep_rest, mut end) = (address, dep, 0);
    while let (Some(after), Some(dep_after)) = (
        rest.strip_prefix("module."),
        dep_rest.strip_prefix("module."),
    ) {
        let Some(name_end) = after.find(['.', '[']) else {
            break;
        };
        let Some(dep_tail) = dep_after
            .strip_prefix(&after[..name_end])
            .and_then(|t| t.strip_prefix('.'))
        else {
            break;
        };
        let mut tail = &after[name_end..];
        if tail.starts_with('[') {
            let Some(close) = crate::address::key_end(tail) else {
                break;
            };
            tail = &tail[close + 1..];
        }
        end = address.len() - tail.len();
        let Some(next) = tail.strip_prefix('.') else {
            break;
        };
        (rest, dep_rest) = (next, dep_tail);
    }
    &address[..end]
}

/// `module.m["k"].type.name`, or `type.name` at the root.
fn join_module(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        local.to_owned()
    } else {
        format!("{prefix}.{local}")
    }
}

/// Digest of a block with no stored rows (the same in every format).
fn empty_digest() -> String {
    hash(b"")
}

/// The format a recorded digest is in; `None` for one that is the same
/// in every format (no rows, or none recorded).
fn format_of(digest: &str) -> Option<Format> {
    if digest.is_empty() || digest == empty_digest() {
        None
    } else if digest.starts_with(CURRENT) {
        Some(Format::Rows)
    } else if digest.starts_with(ORDERED) {
        Some(Format::Ordered)
    } else {
        Some(Format::Content)
    }
}

/// Whether every digest `baseline` records is in the current format:
/// then discovery compares it with the digests PostgreSQL keeps for each
/// resource, and needs no row.
pub fn current(baseline: &HashMap<String, [String; 3]>) -> bool {
    baseline
        .values()
        .all(|[_, d, _]| matches!(format_of(d), None | Some(Format::Rows)))
}

/// Whether [`upgraded`] can carry `baseline` over from rows read light
/// (their digests, not their content).
pub fn upgradable_light(baseline: &HashMap<String, [String; 3]>) -> bool {
    !baseline
        .values()
        .any(|[_, d, _]| format_of(d) == Some(Format::Content))
}

/// The entries of `baseline` recorded in an earlier format, in the current
/// one: those whose rows in `state` are still as recorded get the current
/// digest of those rows, the others one that matches no rows (a
/// candidate, as it was). Checked once, on the first read of the rows
/// after an upgrade, so that no block is planned again for the change of
/// format.
pub fn upgraded(
    baseline: &HashMap<String, [String; 3]>,
    state: &State,
) -> Vec<(String, [String; 3])> {
    if current(baseline) {
        return Vec::new();
    }
    let now = Digests::of(state);
    let mut was: HashMap<bool, Digests> = HashMap::new();
    let mut out = Vec::new();
    for (key, [h, d, text]) in baseline {
        let format = match format_of(d) {
            Some(f @ (Format::Content | Format::Ordered)) => f,
            _ => continue,
        };
        let was = was
            .entry(format == Format::Content)
            .or_insert_with(|| Digests::in_format(state, format));
        let pair = match key.strip_prefix(KEYED) {
            Some(resource) => (was.resources.get(resource), now.resources.get(resource)),
            None => (was.blocks.get(key), now.blocks.get(key)),
        };
        let digest = match pair {
            (Some(was), Some(now)) if was == d => now.clone(),
            _ => format!("{CURRENT}changed"),
        };
        out.push((key.clone(), [h.clone(), digest, text.clone()]));
    }
    out
}

/// What the configuration alone says may change.
pub struct Candidates {
    /// The candidate blocks' instance addresses (and resource addresses
    /// where instances may be added), sorted.
    pub addresses: Vec<String>,
    /// How many blocks are candidates.
    pub blocks: usize,
    /// Whether every candidate's own text changed (or it is new, removed,
    /// or its rows changed, or, hashed per module instance, that instance's
    /// map entries changed): then all its instances are planned. Otherwise
    /// a value a candidate reads changed, and which of its instances change
    /// takes terraform's plan of the candidates.
    pub precise: bool,
    /// The stored resources whose instances the candidates name (for a
    /// [`Stored::summarized`] state, whose instances were not read: those
    /// to read before the addresses are whole).
    pub listed: BTreeSet<String>,
}

impl Candidates {
    /// Whether nothing at all may change.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.listed.is_empty()
    }
}

/// The stored rows discovery compares a configuration with.
pub struct Stored<'a> {
    state: &'a State,
    digests: Digests,
    /// Managed objects in all.
    total: usize,
    /// Whether `state` holds every instance, not only its resources.
    instances: bool,
}

impl<'a> Stored<'a> {
    /// A state read with its instances.
    pub fn of(state: &'a State) -> Stored<'a> {
        let total = state
            .resources
            .iter()
            .filter(|r| r.mode == "managed")
            .map(|r| r.instances.len())
            .sum();
        Stored {
            state,
            digests: Digests::of(state),
            total,
            instances: true,
        }
    }

    /// A state whose every resource is in `state` without its instances,
    /// and in `resources` with its digest as PostgreSQL keeps it: what may
    /// change is known once [`Candidates::listed`]'s instances are read.
    pub fn summarized(state: &'a State, resources: &[ResourceDigest]) -> Stored<'a> {
        Stored {
            state,
            digests: Digests::of_resources(resources),
            total: resources
                .iter()
                .filter(|r| r.managed)
                .map(|r| r.objects)
                .sum(),
            instances: false,
        }
    }
}

/// Why the first plan of a state plans the whole configuration.
pub const NO_BASELINE: &str = "no baseline yet for this state";

/// What may change, from the configuration alone. `Err` says why
/// terraform's full plan is needed instead.
pub fn candidates(
    config: &Config,
    baseline: &HashMap<String, [String; 3]>,
    stored_rows: &Stored<'_>,
) -> Result<Candidates, Unsupported> {
    let state = stored_rows.state;
    if baseline.is_empty() {
        return Err(Unsupported(NO_BASELINE.into()));
    }
    // Module calls whose instances may have changed (their count/for_each
    // or what it reads): terraform's refresh-less plan of the whole call,
    // its new instances included, says what changes. Below a module with
    // count/for_each, terraform can target only the outermost such module
    // (`module.a` is every instance of a; `module.a.module.b` none): that
    // one is planned.
    let mut changed_calls: Vec<&str> = Vec::new();
    for (path, call) in &config.calls {
        let recorded = baseline.get(&call_key(path)).map(|[h, _, _]| h);
        if call.hash.is_some() && call.hash.as_ref() == recorded {
            continue;
        }
        let outermost_expanded = config
            .calls
            .iter()
            .filter(|(p, c)| c.expanded && path.starts_with(&format!("{p}.")))
            .map(|(p, _)| p.as_str())
            .min_by_key(|p| p.len());
        let target = outermost_expanded.unwrap_or(path);
        if !changed_calls.contains(&target) {
            changed_calls.push(target);
        }
    }
    let in_changed_call = |address: &str| {
        changed_calls.iter().any(|c| {
            address == *c
                || address
                    .strip_prefix(c)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    };
    let (digests, total) = (&stored_rows.digests, stored_rows.total);
    let mut stored: BTreeMap<String, Vec<&crate::tfstate::Resource>> = BTreeMap::new();
    for r in state.resources.iter().filter(|r| r.mode == "managed") {
        stored.entry(block_of(&r.address())).or_default().push(r);
    }
    // Every instance of `r`, named (and `r` recorded as listed).
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut instances_of = |r: &crate::tfstate::Resource, address: &str| -> Vec<String> {
        listed.insert(address.to_owned());
        r.instances.iter().map(|i| i.address(address)).collect()
    };
    // Module instance prefixes seen in the state, by module path.
    let mut prefixes: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for r in &state.resources {
        prefixes
            .entry(strip_module_keys(&r.module))
            .or_default()
            .insert(r.module.as_str());
    }

    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut blocks = 0;
    let mut precise = true;
    let mut candidate_blocks: BTreeSet<&str> = BTreeSet::new();
    for (key, block) in &config.blocks {
        let digest = digests.block(key);
        let recorded = baseline.get(key);
        let same = match (&block.hash, recorded) {
            (Some(h), Some([rh, rd, _])) => h == rh && &digest == rd,
            _ => false,
        };
        if same {
            continue;
        }
        let resources = stored.get(key).map(Vec::as_slice).unwrap_or_default();
        if let (Some(keyed), false) = (&block.keyed, resources.is_empty()) {
            // Per module instance: only those whose own hash or rows
            // changed are planned, every instance of them.
            let local = key[block.module.len()..].trim_start_matches('.');
            let mut changed: Vec<String> = Vec::new();
            let mut held: BTreeSet<&str> = BTreeSet::new();
            for r in resources {
                held.insert(r.module.as_str());
                let address = r.address();
                let recorded = baseline.get(&keyed_key(&address));
                let (converged, value) = match (keyed.hash_in(&r.module), recorded) {
                    (Some(h), Some([rh, rd, rt])) => {
                        let same_rows = digests.resources.get(&address) == Some(rd);
                        let same_text = *rt == keyed_text(&block.text, &h.entries);
                        // The entries are the module instance's, read by
                        // this block or not: its hash says whether it
                        // reads them. Same text, rows and entries with
                        // another hash: another value it reads changed.
                        (h.hash == *rh && same_rows, same_rows && same_text)
                    }
                    _ => (false, false),
                };
                if !converged {
                    if value {
                        precise = false;
                    }
                    changed.extend(instances_of(r, &address));
                    if block.expanded {
                        changed.push(address);
                    }
                }
            }
            // Module instances holding none of its rows: it may be added there.
            for p in prefixes.get(&block.module).into_iter().flatten() {
                if !held.contains(p) {
                    changed.push(join_module(p, local));
                }
            }
            if !changed.is_empty() {
                blocks += 1;
                candidate_blocks.insert(key.as_str());
                out.extend(changed);
            }
            continue;
        }
        blocks += 1;
        candidate_blocks.insert(key.as_str());
        // Same text, same rows: a value it reads changed (or it reads data).
        let text_same = recorded.is_some_and(|[_, rd, rt]| *rt == block.text && *rd == digest);
        if block.hash.is_none() || text_same {
            precise = false;
        }
        for r in resources {
            let address = r.address();
            out.extend(instances_of(r, &address));
        }
        if block.expanded || resources.is_empty() {
            let local = &key[block.module.len()..].trim_start_matches('.');
            let module_expanded = config.calls.get(&block.module).is_some_and(|c| c.expanded);
            if in_changed_call(key) {
                // Planned with its module call (below).
            } else if !module_expanded {
                out.insert(key.clone());
            } else {
                let known = prefixes.get(&block.module).cloned().unwrap_or_default();
                if known.is_empty() {
                    return Err(Unsupported(format!(
                        "{key} is new in module instances that hold nothing yet"
                    )));
                }
                out.extend(known.into_iter().map(|p| join_module(p, local)));
            }
        }
    }
    // Blocks whose count/for_each reads a candidate may gain or lose
    // instances: their resource addresses are planned too.
    for (key, block) in &config.blocks {
        let reads_candidate =
            block
                .expansion_reads
                .iter()
                .any(|r| match r.split_once(".output.") {
                    Some((module, _)) => candidate_blocks
                        .iter()
                        .any(|c| c.starts_with(&format!("{module}."))),
                    None => candidate_blocks.contains(r.as_str()),
                });
        if !reads_candidate || candidate_blocks.contains(key.as_str()) {
            continue;
        }
        blocks += 1;
        let local = key[block.module.len()..].trim_start_matches('.');
        let known: BTreeSet<&str> = stored
            .get(key)
            .into_iter()
            .flatten()
            .map(|r| r.module.as_str())
            .collect();
        if known.is_empty() {
            out.insert(key.clone());
        }
        out.extend(known.into_iter().map(|p| join_module(p, local)));
    }
    for (key, resources) in &stored {
        if !config.blocks.contains_key(key) {
            blocks += 1;
            for r in resources {
                let address = r.address();
                out.extend(instances_of(r, &address));
            }
        }
    }
    // Stored instances only: resource and module addresses where instances
    // may be added are not instances of the state.
    let held: BTreeSet<String> = state
        .resources
        .iter()
        .filter(|r| r.mode == "managed")
        .flat_map(|r| {
            let address = r.address();
            r.instances
                .iter()
                .map(move |i| i.address(&address))
                .collect::<Vec<_>>()
        })
        .collect();
    // A `moved` block whose old address still holds rows: terraform moves
    // them (whatever the baseline says of either block), so both addresses
    // are planned.
    for (from, to) in &config.moved {
        let under = |a: &str| {
            a == from
                || a.strip_prefix(from.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        let moving: Vec<&String> = held.iter().filter(|a| under(a)).collect();
        if !stored_rows.instances {
            // Instances not read: every resource that may hold one.
            for r in &state.resources {
                let address = r.address();
                let holds = from
                    .strip_prefix(address.as_str())
                    .is_some_and(|key| key.starts_with('['));
                if under(&address) || holds {
                    listed.insert(address);
                }
            }
        }
        if !moving.is_empty() {
            blocks += 1;
            out.extend(moving.into_iter().cloned());
            out.insert(to.clone());
        }
    }
    for call in &changed_calls {
        blocks += 1;
        precise = false;
        out.extend(held.iter().filter(|a| in_changed_call(a)).cloned());
        out.insert((*call).to_owned());
    }
    // An `import` whose target holds no row yet: terraform imports it.
    for to in &config.imports {
        if !stored_rows.instances {
            // Instances not read: the resource that may hold it.
            let resource = crate::address::strip_instance_key(to);
            listed.extend(
                state
                    .resources
                    .iter()
                    .map(|r| r.address())
                    .filter(|a| a == resource),
            );
        }
        if !held.contains(to) {
            blocks += 1;
            out.insert(to.clone());
        }
    }
    // When most stored instances may change, terraform's refresh-less plan
    // of the candidate blocks (never more than a plan of the whole
    // configuration) says which do, before the cone is refreshed.
    let instances = out.iter().filter(|a| held.contains(*a)).count();
    if total > 0 && instances * 2 > total {
        precise = false;
    }
    Ok(Candidates {
        addresses: out.into_iter().collect(),
        blocks,
        precise,
        listed,
    })
}

/// Entries to record after terraform's refresh-less plan of `state`
/// planned `changed` (exact instance addresses): every block with nothing
/// planned, among those of `only` when the plan was targeted at them, and,
/// for a plan of the whole configuration, every module call with nothing
/// planned inside.
pub fn after_plan_of(
    config: &Config,
    state: &State,
    changed: &[String],
    only: Option<&[String]>,
) -> Vec<(String, [String; 3])> {
    let changed_blocks: BTreeSet<String> = changed.iter().map(|a| block_of(a)).collect();
    let planned: Option<BTreeSet<String>> = only.map(|o| o.iter().map(|a| block_of(a)).collect());
    let digests = Digests::of(state);
    let mut out = Vec::new();
    // Module instances of keyed blocks with nothing planned inside.
    let changed_resources: BTreeSet<&str> = changed
        .iter()
        .map(|a| crate::address::strip_instance_key(a))
        .collect();
    let planned_resources: Option<BTreeSet<&str>> = only.map(|o| {
        o.iter()
            .map(|a| crate::address::strip_instance_key(a))
            .collect()
    });
    let quiet = state.resources.iter().filter(|r| {
        let a = r.address();
        !changed_resources.contains(a.as_str())
            && planned_resources
                .as_ref()
                .is_none_or(|p| p.contains(a.as_str()))
    });
    out.extend(keyed_entries(config, &digests, quiet));
    for (key, block) in &config.blocks {
        if changed_blocks.contains(key) || planned.as_ref().is_some_and(|p| !p.contains(key)) {
            continue;
        }
        if let Some(h) = &block.hash {
            out.push((
                key.clone(),
                [h.clone(), digests.block(key), block.text.clone()],
            ));
        }
    }
    // Module calls with nothing planned inside, of a plan of the whole
    // configuration or of the call (or a call above it).
    for (path, call) in &config.calls {
        let prefix = format!("{path}.");
        let quiet = !changed_blocks.iter().any(|b| b.starts_with(&prefix));
        let covered = only.is_none_or(|o| {
            o.iter()
                .any(|t| t == path || path.starts_with(&format!("{t}.")))
        });
        if let (Some(h), true, true) = (&call.hash, quiet, covered) {
            out.push((call_key(path), [h.clone(), String::new(), String::new()]));
        }
    }
    out
}

/// Entries to record for `blocks` whose rows in `state` are what the
/// configuration says (applied, or planned as no-op by terraform); with
/// `calls`, every module call too (a whole plan was applied).
pub fn converged<'a>(
    config: &Config,
    state: &State,
    blocks: impl IntoIterator<Item = &'a str>,
    calls: bool,
) -> Vec<(String, [String; 3])> {
    let digests = Digests::of(state);
    let addresses: Vec<&str> = blocks.into_iter().collect();
    let resources: BTreeSet<&str> = addresses
        .iter()
        .map(|a| crate::address::strip_instance_key(a))
        .collect();
    let (inside, outside): (Vec<_>, Vec<_>) = state
        .resources
        .iter()
        .filter(|r| r.mode == "managed")
        .partition(|r| resources.contains(r.address().as_str()));
    let mut out = keyed_entries(config, &digests, inside.into_iter());
    // Blocks with rows outside the write set: for a keyed block, its
    // per-instance entries say which module instances are converged; the
    // block's entry would say it of all of them.
    let partly: BTreeSet<String> = outside.iter().map(|r| block_of(&r.address())).collect();
    let keys: BTreeSet<String> = addresses.into_iter().map(block_of).collect();
    for key in keys {
        let Some(block) = config.blocks.get(&key) else {
            continue;
        };
        if block.keyed.is_some() && partly.contains(&key) {
            continue;
        }
        if let Some(h) = &block.hash {
            let d = digests.block(&key);
            out.push((key, [h.clone(), d, block.text.clone()]));
        }
    }
    if calls {
        for (path, call) in &config.calls {
            if let Some(h) = &call.hash {
                out.push((call_key(path), [h.clone(), String::new(), String::new()]));
            }
        }
    }
    out
}

/// Per-instance entries ([`crate::terraform::config::Keyed`]) recording
/// `resources` (managed, of keyed blocks) as converged.
fn keyed_entries<'a>(
    config: &Config,
    digests: &Digests,
    resources: impl Iterator<Item = &'a crate::tfstate::Resource>,
) -> Vec<(String, [String; 3])> {
    let mut out = Vec::new();
    if config.blocks.values().all(|b| b.keyed.is_none()) {
        return out;
    }
    for r in resources.filter(|r| r.mode == "managed") {
        let address = r.address();
        let Some(block) = config.blocks.get(&block_of(&address)) else {
            continue;
        };
        let Some(h) = block.keyed.as_ref().and_then(|k| k.hash_in(&r.module)) else {
            continue;
        };
        if let Some(d) = digests.resources.get(&address) {
            out.push((
                keyed_key(&address),
                [
                    h.hash.clone(),
                    d.clone(),
                    keyed_text(&block.text, &h.entries),
                ],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_module_steps_take_the_dependents_keys() {
        let p = |a, d| shared_prefix(a, d);
        assert_eq!(
            p(r#"module.m["x"].module.k[0].t.n"#, "module.m.module.j.u.v"),
            r#"module.m["x"]"#
        );
        assert_eq!(
            p(
                r#"module.m["x.y"].module.k[0].t.n"#,
                "module.m.module.k.u.v"
            ),
            r#"module.m["x.y"].module.k[0]"#
        );
        assert_eq!(p("module.m.t.n", "module.m.u.v"), "module.m");
        assert_eq!(p(r#"module.m["x"].t.n"#, "u.v"), "");
        assert_eq!(p("t.n", "module.m.u.v"), "");
        assert_eq!(p("module.mm.t.n", "module.m.u.v"), "");
    }

    /// A row a block depends on, inside a `for_each` module instance, changed:
    /// so does the block's digest (terraform records that dependency without
    /// the module's key).
    #[test]
    fn a_dependency_in_a_module_instance_changes_the_digest() {
        let state = |gen_a: &str| {
            let text = format!(
                r#"{{"version": 4, "terraform_version": "1.11.4", "serial": 1, "lineage": "l",
                "outputs": {{}}, "resources": [
                {{"module": "module.t[\"a\"]", "mode": "managed", "type": "terraform_data", "name": "base",
                  "provider": "provider[\"terraform.io/builtin/terraform\"]",
                  "instances": [{{"schema_version": 0, "attributes": {{"id": "{gen_a}"}}}}]}},
                {{"module": "module.t[\"a\"]", "mode": "managed", "type": "terraform_data", "name": "svc",
                  "provider": "provider[\"terraform.io/builtin/terraform\"]",
                  "instances": [{{"schema_version": 0, "attributes": {{"id": "s"}},
                                  "dependencies": ["module.t.terraform_data.base"]}}]}},
                {{"module": "module.t[\"b\"]", "mode": "managed", "type": "terraform_data", "name": "base",
                  "provider": "provider[\"terraform.io/builtin/terraform\"]",
                  "instances": [{{"schema_version": 0, "attributes": {{"id": "b"}}}}]}},
                {{"module": "module.t[\"b\"]", "mode": "managed", "type": "terraform_data", "name": "svc",
                  "provider": "provider[\"terraform.io/builtin/terraform\"]",
                  "instances": [{{"schema_version": 0, "attributes": {{"id": "s"}},
                                  "dependencies": ["module.t.terraform_data.base"]}}]}}
                ]}}"#
            );
            crate::tfstate::parse(text.as_bytes()).unwrap()
        };
        let (before, after) = (
            Digests::of(&state("1")).blocks,
            Digests::of(&state("2")).blocks,
        );
        // One block (module.t.terraform_data.svc) holds both instances' rows.
        assert_ne!(
            before["module.t.terraform_data.svc"],
            after["module.t.terraform_data.svc"]
        );
    }

    /// Recorded baselines hold digests of rows: the bytes a row is digested
    /// from must not move between versions of stategraph, or every block
    /// of every stored state would be planned again once.
    #[test]
    fn an_instance_is_digested_from_the_same_bytes_as_before() {
        let text = r#"{"version": 4, "terraform_version": "1.11.4", "serial": 1, "lineage": "l",
            "outputs": {}, "resources": [
            {"mode": "managed", "type": "terraform_data", "name": "n", "each": "map",
             "provider": "provider[\"terraform.io/builtin/terraform\"]",
             "instances": [{"index_key": "k\"1", "schema_version": 0, "status": "tainted",
               "attributes": {"zeta": [1, 2.50, {"b": null, "a": "x\ny"}], "alpha": true},
               "sensitive_attributes": [], "private": "cHJpdg==",
               "dependencies": ["z.b", "a.c"]}]}]}"#;
        let state = crate::tfstate::parse(text.as_bytes()).unwrap();
        let mut bytes = Vec::new();
        state.resources[0].instances[0].write_canonical(&mut bytes);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "\"k\\\"1\"|Some(\"tainted\")|None|0|Some(\"cHJpdg==\")|false|\
             {\"alpha\":true,\"zeta\":[1,2.50,{\"a\":\"x\\ny\",\"b\":null,},],}\
             -[]a.c,z.b{}\n"
        );
        // As baselines recorded it before rows kept their digest.
        let digests = Digests::in_format(&state, Format::Content);
        assert_eq!(
            digests.resources["terraform_data.n"],
            "af50cc6693ab26695dc31d01657f9ac4"
        );
        // As baselines recorded it before resources kept their digest.
        let digests = Digests::in_format(&state, Format::Ordered);
        assert_eq!(
            digests.resources["terraform_data.n"],
            "v2:ad28c58d435345587323b917ce6b4c35"
        );
        let digests = Digests::of(&state);
        assert_eq!(
            digests.resources["terraform_data.n"],
            "v3:c814276ee8aad4d37d4180207355b35f"
        );
    }

    /// A baseline recorded before rows kept their digest is carried over
    /// without planning again what it recorded converged; what it recorded
    /// of rows that changed since stays a candidate.
    #[test]
    fn a_baseline_of_the_former_digests_is_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.tf"),
            "resource \"terraform_data\" \"a\" { input = \"1\" }\n\
             resource \"terraform_data\" \"b\" { input = \"2\" }\n",
        )
        .unwrap();
        let inputs = crate::terraform::config::Inputs::default();
        let config = crate::terraform::config::read(dir.path(), &inputs).unwrap();
        let state_of = |b: &str| {
            let text = format!(
                r#"{{"version": 4, "terraform_version": "1.11.4", "serial": 1, "lineage": "l",
                "outputs": {{}}, "resources": [
                {{"mode": "managed", "type": "terraform_data", "name": "a",
                  "provider": "provider[\"terraform.io/builtin/terraform\"]",
                  "instances": [{{"schema_version": 0, "attributes": {{"input": "1"}}}}]}},
                {{"mode": "managed", "type": "terraform_data", "name": "b",
                  "provider": "provider[\"terraform.io/builtin/terraform\"]",
                  "instances": [{{"schema_version": 0, "attributes": {{"input": "{b}"}}}}]}}]}}"#
            );
            crate::tfstate::parse(text.as_bytes()).unwrap()
        };
        let recorded = state_of("2");
        for format in [Format::Content, Format::Ordered] {
            carried_over(&config, &recorded, &state_of("3"), format);
        }
    }

    fn carried_over(config: &Config, recorded: &State, now: &State, format: Format) {
        let old_entries: HashMap<String, [String; 3]> = {
            let digests = Digests::in_format(recorded, format);
            config
                .blocks
                .iter()
                .map(|(key, b)| {
                    (
                        key.clone(),
                        [b.hash.clone().unwrap(), digests.block(key), b.text.clone()],
                    )
                })
                .collect()
        };
        assert!(!current(&old_entries));
        assert_eq!(
            upgradable_light(&old_entries),
            format == Format::Ordered,
            "content is needed for the first format only"
        );
        // b's row changed behind the baseline since.
        let mut baseline = old_entries.clone();
        baseline.extend(upgraded(&old_entries, now));
        assert!(current(&baseline));
        assert!(upgraded(&baseline, now).is_empty(), "upgraded once");
        let found = candidates(config, &baseline, &Stored::of(now)).unwrap();
        assert_eq!(found.addresses, ["terraform_data.b"]);
        // The same from the rows' stored digests, with no content read.
        let mut light = now.clone();
        for r in &mut light.resources {
            for i in &mut r.instances {
                i.stored_digest = crate::tfstate::StoredDigest(Some(i.content_digest()));
                i.attributes = None;
            }
        }
        let found = candidates(config, &baseline, &Stored::of(&light)).unwrap();
        assert_eq!(found.addresses, ["terraform_data.b"]);
        // And from the resources' digests alone (as PostgreSQL keeps them):
        // b's instances are to be read.
        let skeleton = light.with_resources(
            light
                .resources
                .iter()
                .map(|r| crate::tfstate::Resource {
                    instances: Vec::new(),
                    ..r.clone()
                })
                .collect(),
        );
        let kept = ResourceDigest::of_state(&light);
        let found = candidates(config, &baseline, &Stored::summarized(&skeleton, &kept)).unwrap();
        assert!(found.addresses.is_empty());
        assert_eq!(
            found.listed.into_iter().collect::<Vec<_>>(),
            ["terraform_data.b"]
        );
        let unchanged = baseline
            .iter()
            .map(|(k, [h, _, t])| {
                let d = Digests::of(now).block(k);
                (k.clone(), [h.clone(), d, t.clone()])
            })
            .collect();
        let found = candidates(config, &unchanged, &Stored::summarized(&skeleton, &kept)).unwrap();
        assert!(found.is_empty(), "{:?} {:?}", found.addresses, found.listed);
    }
}
