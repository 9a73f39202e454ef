//! The dependency graph of a stored state, or the change cone of addresses
//! in it, read from the store and ready to draw (`stategraph deps` and the
//! page of `stategraph serve` both call [`load`]).
//!
//! It reads and computes; drawing is [`crate::graph::render`]'s, printing
//! the caller's.

use anyhow::{anyhow, bail, Context, Result};

use crate::address;
use crate::db::store::{GraphRow, Store, View};
use crate::graph::render::Drawing;
use crate::graph::{InstanceInput, StateGraph};

/// What to draw of state `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The cone's instances only (read by index, as `stategraph cone` does);
    /// the whole graph when no address is given.
    Cone,
    /// Every instance, the cone (if any) marked on it.
    Whole,
}

/// The drawing of state `name`: with no `addresses`, its whole graph;
/// with addresses (instances, resources or modules), their change cone,
/// alone or on the whole graph as `extent` says.
pub async fn load(
    store: &Store,
    name: &str,
    addresses: &[String],
    extent: Extent,
) -> Result<Drawing> {
    let targets = addresses
        .iter()
        .map(|a| address::parse_target(a).map_err(|e| anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let missing = || {
        anyhow!(
            "no state named \"{name}\" in {}\n\nStore one with `stategraph state push terraform.tfstate`, or name another with --state.",
            store.display()
        )
    };
    let (rows, instances) = if targets.is_empty() || extent == Extent::Whole {
        let rows = store
            .graph_rows(name, View::Latest)
            .await?
            .ok_or_else(missing)?;
        let n = rows.len();
        (rows, n)
    } else {
        let loaded = store.cone_rows(name, &targets).await?.ok_or_else(missing)?;
        (loaded.rows, loaded.instances)
    };
    let graph = build(name, &rows)?;
    if targets.is_empty() {
        return Ok(Drawing::new(name, instances, &graph, None, false));
    }
    let changed = instances_of(&graph, &targets, addresses, name)?;
    let refs: Vec<&str> = changed.iter().map(String::as_str).collect();
    let cone = graph.cone(&refs)?;
    Ok(Drawing::new(
        name,
        instances,
        &graph,
        Some((&cone, &changed)),
        extent == Extent::Cone,
    ))
}

fn build(name: &str, rows: &[GraphRow]) -> Result<StateGraph> {
    StateGraph::build(rows.iter().map(|r| InstanceInput {
        address: &r.address,
        config_resource: &r.config_address,
        dependencies: &r.dependencies,
    }))
    .with_context(|| format!("the stored graph of state \"{name}\" is inconsistent"))
}

/// The instances `targets` (as the user wrote them: `texts`) name in the
/// graph of state `name`, sorted, each once; a target naming none is an
/// error that says so.
pub fn instances_of(
    graph: &StateGraph,
    targets: &[address::Target],
    texts: &[String],
    name: &str,
) -> Result<Vec<String>> {
    let mut changed: Vec<String> = Vec::new();
    for (target, text) in targets.iter().zip(texts) {
        let found = graph.resolve(target);
        if found.is_empty() {
            bail!(
                "{text} matches no instance in state \"{name}\"\n\n\
                 List what the state holds with `stategraph state list`."
            );
        }
        changed.extend(found);
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
}
