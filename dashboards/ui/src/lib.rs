//! The browser dashboard, served from the binary: the single-page app
//! ([`assets`], embedded at build time, so users need no build step and
//! no network) and the dashboard definitions it charts ([`definition`]),
//! loaded at start-up from TOML files.
//!
//! The page talks only to the public API: `/api/v1/*`, `/metrics` and
//! the `/ws` JSON protocol.

pub mod assets;
pub mod definition;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

pub use definition::{Dashboard, DashboardError, Panel};

/// Routes: `/` and `/assets/*` (the app) and `GET /api/v1/dashboards`.
pub fn router(dashboards: Vec<Dashboard>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::asset))
        .route("/api/v1/dashboards", get(list))
        .with_state(Arc::new(dashboards))
}

async fn list(State(dashboards): State<Arc<Vec<Dashboard>>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "dashboards": *dashboards }))
}
