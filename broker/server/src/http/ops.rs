//! Operational endpoints: `/healthz`, `/metrics` and
//! `POST /api/v1/admin/reload`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::require_admin;
use super::{ApiError, AppState};
use axum::Extension;
use tidewire_auth::Principal;

/// 200 `{"status":"ok"}` while every stream accepts writes; 503 with the
/// failed streams otherwise.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let failed: serde_json::Map<_, _> = state
        .broker
        .streams()
        .snapshot()
        .iter()
        .filter_map(|s| Some((s.spec.name.clone(), s.log.failure()?.into())))
        .collect();
    if failed.is_empty() {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        let body = json!({ "status": "failed", "streams": failed });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Every metric in Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry)
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// Reloads the config file, as SIGHUP does: 200 once the new users, tokens
/// and rules are in force; 400 with the reason when the file is bad or
/// changes what only a restart can (nothing changes then).
pub async fn reload(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, ApiError> {
    require_admin(&caller, "reload the config")?;
    let reloader = state.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .map_err(|e| ApiError::internal(format!("reload task: {e}")))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(axum::Json(json!({ "reloaded": true })).into_response())
}
