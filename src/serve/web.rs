//! The read-only web page and the JSON it reads.
//!
//! `/` is the page, `/assets/...` its script, style sheet and the vendored
//! graph library (cytoscape.js with its dagre layout, embedded in the
//! binary: no CDN, no network at run time), `/api/...` the JSON it draws:
//! the stored states, a state's dependency graph with a cone marked (the
//! same [`Drawing`] as `stategraph deps --format json`), an instance's
//! history (as `stategraph history`, sensitive values masked), the
//! transaction log (as `stategraph log`) and the locks held and queued (as
//! `stategraph locks`). Every route is a GET and reads only; authentication
//! is a layer around the whole server, not this file's.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::App;
use crate::address;
use crate::db::store::StoreError;
use crate::engine::deps::{self, Extent};
use crate::graph::render::Drawing;

/// The page's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/{*path}", get(asset))
        .route("/api/states", get(states))
        .route("/api/graph", get(graph))
        .route("/api/history", get(history))
        .route("/api/log", get(log))
        .route("/api/locks", get(locks))
        .with_state(app)
}

/// The files the page loads, by path under `/assets/`, and their type.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/app.css"),
    ),
    (
        "vendor/cytoscape/cytoscape.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/cytoscape/cytoscape.min.js"),
    ),
    (
        "vendor/cytoscape/LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/cytoscape/LICENSE"),
    ),
    (
        "vendor/cytoscape-dagre/cytoscape-dagre.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/cytoscape-dagre/cytoscape-dagre.min.js"),
    ),
    (
        "vendor/cytoscape-dagre/LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/cytoscape-dagre/LICENSE"),
    ),
    (
        "vendor/cytoscape-dagre/LICENSE.dagre",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/cytoscape-dagre/LICENSE.dagre"),
    ),
];

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("../../assets/index.html"),
    )
        .into_response()
}

/// The page runs only its own scripts, reads only this server, and is
/// never framed by another site.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found(format!("no asset {path}")).into_response(),
    }
}

/// An error as JSON: `{"error": "..."}` with its status.
struct ApiError(StatusCode, String);

impl ApiError {
    fn not_found(message: String) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, message)
    }

    fn bad_request(message: String) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<crate::db::locks::LockError> for ApiError {
    fn from(e: crate::db::locks::LockError) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The id of state `name`, or a 404 naming it.
async fn state_id(app: &App, name: &str) -> Result<i64, ApiError> {
    app.store
        .state_id(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no state named \"{name}\"")))
}

/// `/api/states`: the names of the stored states.
async fn states(State(app): State<App>) -> ApiResult<serde_json::Value> {
    let names = app.store.state_names().await?;
    Ok(Json(json!({ "states": names })))
}

#[derive(Deserialize)]
struct GraphQuery {
    state: String,
    /// An address whose cone is marked (instance, resource or module).
    cone: Option<String>,
}

/// `/api/graph?state=S[&cone=ADDR]`: every instance and dependency of the
/// state, the cone's write and read sets marked.
async fn graph(State(app): State<App>, Query(q): Query<GraphQuery>) -> ApiResult<Drawing> {
    state_id(&app, &q.state).await?;
    let addresses: Vec<String> = q.cone.into_iter().filter(|c| !c.is_empty()).collect();
    match deps::load(&app.store, &q.state, &addresses, Extent::Whole).await {
        Ok(drawing) => Ok(Json(drawing)),
        Err(e) => match e.downcast::<StoreError>() {
            Ok(e) => Err(e.into()),
            // A malformed address, or one that matches no instance.
            Err(e) => Err(ApiError::bad_request(format!("{e:#}"))),
        },
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    state: String,
    address: String,
}

/// `/api/history?state=S&address=A`: every version of one instance, as
/// `stategraph history --json` prints it.
async fn history(
    State(app): State<App>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Vec<crate::db::query::Version>> {
    let wanted = address::parse_instance(&q.address)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .to_string();
    let versions = app
        .store
        .history(&q.state, &wanted)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no state named \"{}\"", q.state)))?;
    Ok(Json(versions))
}

#[derive(Deserialize)]
struct LogQuery {
    /// Only this state's transactions (all states' without it).
    state: Option<String>,
    limit: Option<i64>,
}

/// `/api/log[?state=S][&limit=N]`: the newest transactions first, as
/// `stategraph log --json` prints them.
async fn log(
    State(app): State<App>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Vec<crate::db::store::LogEntry>> {
    if let Some(name) = &q.state {
        state_id(&app, name).await?;
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(app.store.log(q.state.as_deref(), limit).await?))
}

#[derive(Deserialize)]
struct LocksQuery {
    state: Option<String>,
}

/// `/api/locks[?state=S]`: `{"held": [...], "queue": [...]}`, each item as
/// `stategraph locks --json` prints it, the queue in the order it is served.
async fn locks(
    State(app): State<App>,
    Query(q): Query<LocksQuery>,
) -> ApiResult<serde_json::Value> {
    let id = match &q.state {
        Some(name) => Some(state_id(&app, name).await?),
        None => None,
    };
    let held = app.store.held_locks(id).await?;
    let queue = app.store.queue(id).await?;
    Ok(Json(json!({
        "held": held.iter().map(|l| l.to_json()).collect::<Vec<_>>(),
        "queue": queue.iter().map(|w| w.to_json()).collect::<Vec<_>>(),
    })))
}
