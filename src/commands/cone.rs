//! `stategraph cone ADDR... [--json]`: the write and read sets of a change,
//! computed on the rows the cone reaches (read by index), not the whole state.

use std::io::Write;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::address;
use crate::cli::ConeArgs;
use crate::db;
use crate::graph::{InstanceInput, StateGraph};
use crate::settings::Settings;
use crate::ui::{duration, thousands};

/// `stategraph cone ADDR... [--json]`.
pub async fn execute(settings: &Settings, args: &ConeArgs) -> Result<()> {
    let targets = args
        .addresses
        .iter()
        .map(|a| address::parse_target(a).map_err(|e| anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let name = settings.state_name();
    let store = db::open_for_reading(settings).await?;

    let step = settings.ui.step("Computing change cone");
    let started = Instant::now();
    // Only the rows the cone reaches, not the whole state.
    let loaded_rows = store.cone_rows(&name, &targets).await?.ok_or_else(|| {
        anyhow!(
            "no state named \"{name}\" in {}\n\nStore one with `stategraph state push terraform.tfstate`, or name another with --state.",
            store.display()
        )
    })?;
    let loaded = started.elapsed();
    let rows = loaded_rows.rows;

    let t = Instant::now();
    let graph = StateGraph::build(rows.iter().map(|r| InstanceInput {
        address: &r.address,
        config_resource: &r.config_address,
        dependencies: &r.dependencies,
    }))
    .with_context(|| format!("the stored graph of state \"{name}\" is inconsistent"))?;
    let built = t.elapsed();

    let t = Instant::now();
    let changed = match crate::engine::deps::instances_of(&graph, &targets, &args.addresses, &name)
    {
        Ok(changed) => changed,
        Err(e) => {
            step.fail();
            return Err(e);
        }
    };
    let refs: Vec<&str> = changed.iter().map(String::as_str).collect();
    let cone = graph.cone(&refs)?;
    let computed = t.elapsed();

    let total = loaded_rows.instances;
    let size = cone.write.len() + cone.read.len();
    step.done(format!(
        "{} of {} instances ({} write, {} read) in {}",
        thousands(size),
        thousands(total),
        thousands(cone.write.len()),
        thousands(cone.read.len()),
        duration(computed)
    ));

    let mut out = settings.ui.data();
    if args.json {
        let doc = json!({
            "state": name,
            "write": cone.write,
            "read": cone.read,
            "outputs": cone.outputs,
            "instances": total,
            "timings": {
                "load_ms": loaded.as_secs_f64() * 1e3,
                "build_ms": built.as_secs_f64() * 1e3,
                "cone_ms": computed.as_secs_f64() * 1e3,
            },
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Write set ({}): changed instances and everything downstream",
            cone.write.len()
        )?;
        for a in &cone.write {
            writeln!(out, "  {a}")?;
        }
        writeln!(
            out,
            "Read set ({}): their dependencies, refreshed but not written",
            cone.read.len()
        )?;
        for a in &cone.read {
            writeln!(out, "  {a}")?;
        }
        writeln!(
            out,
            "\n{} of {} instances. Graph loaded in {}, built in {}, cone computed in {}.",
            thousands(size),
            thousands(total),
            duration(loaded),
            duration(built),
            duration(computed)
        )?;
    }
    out.flush()?;
    Ok(())
}
