//! `/api/v1/streams`: each stream's definition, origin and live stats
//! (`GET`), and the catalog's run-time changes: create (`POST`, the same
//! definition as `[[streams]]`, as JSON), change filters or retention
//! (`PATCH`) and delete (`DELETE`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidewire_auth::Principal;
use tidewire_core::catalog::StreamPatch;
use tidewire_core::{CatalogError, Origin, Stream, StreamConfig};

use super::auth::require_admin;
use super::{ApiError, AppState, created, json_body};
use crate::time::rfc3339_ms;

/// Largest definition a request may send.
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// A stream's definition and stats.
#[derive(Debug, Serialize)]
pub struct StreamView {
    name: String,
    /// `config` (the config file) or `api` (created at run time; only
    /// these can be changed or deleted through the API).
    origin: Origin,
    filters: Vec<String>,
    fsync: String,
    retention: RetentionView,
    segment_bytes: u64,
    segment_age_ms: u128,
    schema: Vec<FieldView>,
    stats: StatsView,
}

#[derive(Debug, Serialize)]
struct FieldView {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
}

#[derive(Debug, Serialize)]
struct RetentionView {
    max_age_ms: Option<u128>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct StatsView {
    messages: u64,
    bytes: u64,
    segments: usize,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
    next_offset: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    first_time: Option<String>,
    last_time: Option<String>,
}

impl StreamView {
    fn of(stream: &Stream, origin: Origin) -> StreamView {
        let config = stream.log.config();
        let stats = stream.log.stats();
        let non_empty = stats.records > 0;
        StreamView {
            name: stream.spec.name.clone(),
            origin,
            filters: stream
                .spec
                .filters
                .iter()
                .map(ToString::to_string)
                .collect(),
            fsync: config.fsync.to_string(),
            retention: RetentionView {
                max_age_ms: config.retention.max_age.map(|d| d.as_millis()),
                max_bytes: config.retention.max_bytes,
            },
            segment_bytes: config.segment_bytes,
            segment_age_ms: config.segment_age.as_millis(),
            schema: stream
                .spec
                .schema
                .iter()
                .map(|f| FieldView {
                    name: f.name.clone(),
                    kind: f.kind.name(),
                    path: f.path.join("."),
                })
                .collect(),
            stats: StatsView {
                messages: stats.records,
                bytes: stats.bytes,
                segments: stats.segments,
                first_offset: non_empty.then_some(stats.first_offset),
                last_offset: non_empty.then(|| stats.next_offset - 1),
                next_offset: stats.next_offset,
                first_ts: stats.first_timestamp_ms,
                last_ts: stats.last_timestamp_ms,
                first_time: stats.first_timestamp_ms.map(rfc3339_ms),
                last_time: stats.last_timestamp_ms.map(rfc3339_ms),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StreamList {
    streams: Vec<StreamView>,
}

pub async fn list(State(state): State<AppState>) -> Json<StreamList> {
    let open = state.broker.streams().snapshot();
    let streams = open
        .iter()
        .map(|s| StreamView::of(s, origin(&state, &s.spec.name)))
        .collect();
    Json(StreamList { streams })
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let stream = state
        .broker
        .streams()
        .get(&name)
        .ok_or_else(|| ApiError::no_stream(&name))?;
    Ok(Json(StreamView::of(&stream, origin(&state, &name))))
}

/// `POST /api/v1/streams`: 201 with the new stream and its `Location`.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller, "create streams")?;
    let config: StreamConfig = definition(&body)?;
    let stream = state
        .catalog
        .create_stream(config)
        .await
        .map_err(catalog_error)?;
    let location = format!("/api/v1/streams/{}", stream.spec.name);
    Ok(created(location, StreamView::of(&stream, Origin::Api)))
}

/// `PATCH /api/v1/streams/{name}`: new filters or retention.
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<StreamView>, ApiError> {
    require_admin(&caller, "change streams")?;
    let patch: StreamPatch = definition(&body)?;
    let stream = state
        .catalog
        .update_stream(&name, patch)
        .await
        .map_err(catalog_error)?;
    Ok(Json(StreamView::of(&stream, Origin::Api)))
}

/// `DELETE /api/v1/streams/{name}`: 204 once its records, files and SQL
/// table are gone.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller, "delete streams")?;
    state
        .catalog
        .delete_stream(&name)
        .await
        .map_err(catalog_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn origin(state: &AppState, name: &str) -> Origin {
    state.catalog.origin(name).unwrap_or(Origin::Config)
}

/// A definition from a request body.
fn definition<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    json_body(body, "invalid definition")
}

/// The status each catalog refusal deserves.
pub(super) fn catalog_error(e: CatalogError) -> ApiError {
    let status = match &e {
        CatalogError::Invalid(_) => StatusCode::BAD_REQUEST,
        CatalogError::NotFound { .. } => StatusCode::NOT_FOUND,
        _ if e.is_user_error() => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "catalog change failed");
    }
    ApiError::new(status, e.to_string())
}
