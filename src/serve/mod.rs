//! `stategraph serve`: the stored states over HTTP.
//!
//! One axum server composed of two routers that share [`App`]:
//! [`backend`] speaks terraform's `http` backend protocol (one URL per
//! stored state, under `/state/`) and [`web`] serves the read-only page and
//! the JSON it reads. This file owns what both need: the listener (plain
//! or TLS, [`tls`]), the authentication layer in front of every route
//! ([`auth`]), the shared handle on the store, and shutting down on Ctrl-C
//! (freeing the HTTP locks still held).

mod auth;
mod backend;
mod tls;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use auth::Auth;

use crate::db::store::Store;
use crate::settings::Settings;
use crate::ui::Ui;

/// What every handler gets: the store (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct App {
    pub store: Store,
    /// Who may do what.
    pub auth: Arc<Auth>,
    /// terraform's locks held through this server.
    pub locks: backend::HttpLocks,
    /// The lease of an HTTP lock (renewed while held): `--lock-lease`.
    pub lease: Duration,
    /// This machine, recorded as the host of what the server writes.
    pub host: String,
    pub ui: Ui,
}

/// How `serve` listens and whom it lets in.
pub struct Options {
    pub listen: SocketAddr,
    pub auth: Auth,
    /// PEM certificate chain and private key: HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve without a tokens file on an address other than loopback.
    pub allow_unauthenticated: bool,
}

/// Everything `serve` answers, on one router, behind the authentication layer.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(backend::router(app.clone()))
        .merge(web::router(app.clone()))
        .layer(axum::middleware::from_fn_with_state(app, authenticate))
}

/// Lets a request through with its caller's [`auth::Identity`] attached, or
/// answers 401 (no or unknown credentials) or 403 (the page, which lists
/// every state, to a caller whose scope is narrower).
async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Ok(identity) = app.auth.authenticate(given) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"stategraph\"")],
            "credentials needed: a token (Authorization: Bearer, or as the password of basic \
             auth) or a username and password of the server's tokens file\n",
        )
            .into_response();
    };
    let backend = req.uri().path().starts_with("/state/");
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !backend && !(identity.reads_everything() && (reads || identity.allows("", true))) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "\"{}\" may not read the page: it lists every state, and this scope covers only some\n",
                identity.name
            ),
        )
            .into_response();
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// Serves until Ctrl-C or SIGTERM, then finishes the requests in flight and
/// frees the HTTP locks still held.
pub async fn run(settings: &Settings, options: Options) -> Result<()> {
    let Options {
        listen,
        auth,
        tls,
        allow_unauthenticated,
    } = options;
    if auth.is_open() && !listen.ip().is_loopback() && !allow_unauthenticated {
        bail!(
            "refusing to serve {listen} without a tokens file: anyone who can reach it could read \
             and overwrite every state\n\n\
             Give --tokens FILE (STATEGRAPH_SERVE_TOKENS), listen on 127.0.0.1, or pass \
             --allow-unauthenticated if a proxy in front authenticates."
        );
    }
    let tls = match tls {
        Some((cert, key)) => Some(tls::config(&cert, &key)?),
        None => None,
    };
    let store = crate::db::open(settings).await?;
    let app = App {
        store,
        auth: Arc::new(auth),
        locks: backend::HttpLocks::default(),
        lease: settings.lock_lease,
        host: settings.actor.host.clone(),
        ui: settings.ui,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    settings.ui.info(format!(
        "Serving the states of {} on {scheme}://{bound} (Ctrl-C stops); terraform's http backend \
         at {scheme}://{bound}/state/NAME",
        app.store.display()
    ));
    if app.auth.is_open() {
        settings.ui.warn(format!(
            "no tokens file: anyone who can reach {bound} can read and write every state"
        ));
    }
    let locks = app.locks.clone();
    let served = match tls {
        Some(config) => {
            axum::serve(
                tls::TlsListener::new(listener, config)?,
                router(app.clone()),
            )
            .with_graceful_shutdown(crate::terraform::interrupted())
            .await
        }
        None => {
            axum::serve(listener, router(app.clone()))
                .with_graceful_shutdown(crate::terraform::interrupted())
                .await
        }
    };
    for (state, holder, heartbeat) in locks.drain() {
        heartbeat.stop().await;
        if app.store.release(holder).await.is_ok() {
            settings.ui.warn(format!(
                "freed lock {holder} on state \"{state}\": terraform still held it when the server stopped"
            ));
        }
    }
    served.context("the server stopped")
}
