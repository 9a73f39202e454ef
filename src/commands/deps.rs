//! `stategraph deps [ADDR...] --format text|dot|mermaid|json`: the stored
//! dependency graph, or a change cone in it, drawn.

use std::io::Write;

use anyhow::Result;

use crate::cli::{DepsArgs, DepsFormat};
use crate::db;
use crate::engine::deps::{self, Extent};
use crate::settings::Settings;

/// `stategraph deps`.
pub async fn execute(settings: &Settings, args: &DepsArgs) -> Result<()> {
    let name = settings.state_name();
    let store = db::open(settings).await?;
    let drawing = deps::load(&store, &name, &args.addresses, Extent::Cone).await?;
    let mut out = settings.ui.data();
    match args.format {
        DepsFormat::Text => out.write_all(drawing.to_text().as_bytes())?,
        DepsFormat::Dot => out.write_all(drawing.to_dot().as_bytes())?,
        DepsFormat::Mermaid => out.write_all(drawing.to_mermaid().as_bytes())?,
        DepsFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &drawing)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}
