//! `stategraph serve`: terraform's http backend and a read-only page.

use anyhow::Result;

use crate::cli::ServeArgs;
use crate::serve::{Auth, Options};
use crate::settings::Settings;

/// `stategraph serve [--listen ADDR] [--tokens FILE] [--tls-cert PEM --tls-key PEM]`.
pub async fn execute(settings: &Settings, args: &ServeArgs) -> Result<()> {
    let auth = match &args.tokens {
        Some(path) => {
            let path = settings.workdir.join(path);
            let auth = Auth::load(&path)?;
            warn_if_others_read(settings, &path);
            auth
        }
        None => Auth::open(),
    };
    let tls = args
        .tls_cert
        .clone()
        .zip(args.tls_key.clone())
        .map(|(c, k)| (settings.workdir.join(c), settings.workdir.join(k)));
    let options = Options {
        listen: args.listen,
        auth,
        tls,
        allow_unauthenticated: args.allow_unauthenticated,
    };
    crate::serve::run(settings, options).await
}

/// The tokens file holds secrets: says so when users other than its owner
/// may read it (the server starts all the same).
fn warn_if_others_read(settings: &Settings, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        settings.ui.warn(format!(
            "the tokens file {} may be read by other users (mode {mode:04o}): \
             `chmod 600 {}` keeps its secrets to its owner",
            path.display(),
            path.display()
        ));
    }
}
