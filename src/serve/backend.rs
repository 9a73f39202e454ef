//! terraform's `http` backend protocol over the stored states.

use axum::Router;

use super::App;

/// The backend's routes.
pub fn router(app: App) -> Router {
    Router::new().with_state(app)
}
