//! `stategraph serve`: the stored states over HTTP.
//!
//! One axum server composed of two routers that share [`App`]:
//! [`backend`] speaks terraform's `http` backend protocol (one URL per
//! stored state) and [`web`] serves the read-only page and the JSON it
//! reads. This file owns what both need: the listener, the shared handle
//! on the store, and shutting down on Ctrl-C.

mod backend;
mod web;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;

use crate::db::store::Store;
use crate::settings::Settings;

/// What every handler gets: the store (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct App {
    pub store: Store,
}

/// Everything `serve` answers, on one router.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(backend::router(app.clone()))
        .merge(web::router(app))
}

/// Serves until Ctrl-C or SIGTERM, then finishes the requests in flight.
pub async fn run(settings: &Settings, listen: SocketAddr) -> Result<()> {
    let store = crate::db::open(settings).await?;
    let app = App { store };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    settings.ui.info(format!(
        "Serving the states of {} on http://{bound} (Ctrl-C stops)",
        app.store.display()
    ));
    axum::serve(listener, router(app))
        .with_graceful_shutdown(crate::terraform::interrupted())
        .await
        .context("the server stopped")
}
