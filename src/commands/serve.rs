//! `stategraph serve`: terraform's http backend and a read-only page.

use anyhow::Result;

use crate::cli::ServeArgs;
use crate::settings::Settings;

/// `stategraph serve [--listen ADDR]`.
pub async fn execute(settings: &Settings, args: &ServeArgs) -> Result<()> {
    crate::serve::run(settings, args.listen).await
}
