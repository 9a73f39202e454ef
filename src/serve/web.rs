//! The read-only web page and the JSON it reads.

use axum::Router;

use super::App;

/// The page's routes.
pub fn router(app: App) -> Router {
    Router::new().with_state(app)
}
