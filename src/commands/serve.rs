//! `stategraph serve`: terraform's http backend and a read-only page.

use anyhow::Result;

use crate::cli::ServeArgs;
use crate::serve::{Auth, Options};
use crate::settings::Settings;

/// `stategraph serve [--listen ADDR] [--tokens FILE] [--tls-cert PEM --tls-key PEM]`.
pub async fn execute(settings: &Settings, args: &ServeArgs) -> Result<()> {
    let auth = match &args.tokens {
        Some(path) => Auth::load(&settings.workdir.join(path))?,
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
