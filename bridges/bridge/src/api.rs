//! `GET /api/v1/bridges` and `GET /api/v1/bridges/{name}`: every bridge's
//! live status, as JSON.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::status::{BridgeState, BridgeStatus};

type Boards = Arc<[Arc<BridgeState>]>;

/// The bridges API, to merge into the HTTP router. Bridge names are unique
/// per kind; `{name}` answers every bridge of that name.
pub fn router(boards: Arc<[Arc<BridgeState>]>) -> Router {
    Router::new()
        .route("/api/v1/bridges", get(list))
        .route("/api/v1/bridges/{name}", get(show))
        .with_state(boards)
}

#[derive(Debug, Serialize)]
struct BridgeList {
    bridges: Vec<BridgeStatus>,
}

async fn list(State(boards): State<Boards>) -> Json<BridgeList> {
    Json(BridgeList {
        bridges: boards.iter().map(|b| b.snapshot()).collect(),
    })
}

async fn show(State(boards): State<Boards>, Path(name): Path<String>) -> Response {
    let found: Vec<BridgeStatus> = boards
        .iter()
        .filter(|b| b.name() == name)
        .map(|b| b.snapshot())
        .collect();
    if found.is_empty() {
        let body = serde_json::json!({ "error": format!("no bridge named {name:?}") });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    Json(BridgeList { bridges: found }).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::BridgeMetrics;
    use crate::status::Direction;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_json(router: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let response = router
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn lists_and_shows_bridges() {
        let metrics = BridgeMetrics::default();
        let state = BridgeState::new(
            "nats",
            "uplink",
            [(Direction::Outbound, "events".into(), "edge.>".into())],
            &metrics,
        );
        let boards: Boards = Arc::from(vec![state]);
        let (status, list) = get_json(router(boards.clone()), "/api/v1/bridges").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["bridges"][0]["name"], "uplink");
        assert_eq!(list["bridges"][0]["health"], "starting");
        assert_eq!(list["bridges"][0]["links"][0]["direction"], "outbound");
        let (status, one) = get_json(router(boards.clone()), "/api/v1/bridges/uplink").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["bridges"][0]["kind"], "nats");
        let (status, missing) = get_json(router(boards), "/api/v1/bridges/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(missing["error"].as_str().expect("text").contains("nope"));
    }
}
