//! `/api/v1/exports`: stream exports to Parquet.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/exports` | every export, with its figures |
//! | `POST /api/v1/exports` | create (an `[[exports]]` entry as JSON; admin) |
//! | `GET /api/v1/exports/{name}` | one export |
//! | `DELETE /api/v1/exports/{name}` | delete an API export (admin): it stops, its files stay |
//!
//! S3 secrets are never shown.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::Value;
use tidewire_auth::Principal;
use tidewire_core::Origin;
use tidewire_export::{Export, ExportConfig, ExportError, StatusSnapshot};

use super::auth::require_admin;
use super::streams::catalog_error;
use super::{ApiError, AppState, created, json_body};

/// Largest definition.
const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// Every route under `/api/v1/exports`.
pub fn routes() -> Router<AppState> {
    let small = || DefaultBodyLimit::max(MAX_DEFINITION_BYTES);
    Router::new()
        .route("/api/v1/exports", get(list).post(create).layer(small()))
        .route(
            "/api/v1/exports/{name}",
            get(show).delete(remove).layer(small()),
        )
}

/// An export and its figures.
#[derive(Debug, Serialize)]
struct ExportView {
    name: String,
    /// `config` or `api` (only these can be deleted through the API).
    origin: Origin,
    /// As written, defaults filled in; S3 secrets hidden.
    definition: Value,
    /// The columns of its files.
    columns: Vec<ColumnView>,
    stats: StatusSnapshot,
}

#[derive(Debug, Serialize)]
struct ColumnView {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

impl ExportView {
    fn of(export: &Export) -> ExportView {
        let mut definition = serde_json::to_value(&export.spec().config).unwrap_or(Value::Null);
        if let Some(secret) = definition
            .get_mut("s3")
            .and_then(|s3| s3.get_mut("secret_access_key"))
        {
            *secret = Value::String("(hidden)".to_owned());
        }
        ExportView {
            name: export.spec().name().to_owned(),
            origin: export.origin(),
            definition,
            columns: export
                .schema()
                .fields()
                .iter()
                .map(|f| ColumnView {
                    name: f.name().clone(),
                    kind: f.data_type().to_string(),
                })
                .collect(),
            stats: export.status().snapshot(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ExportList {
    exports: Vec<ExportView>,
}

/// `GET /api/v1/exports`.
async fn list(State(state): State<AppState>) -> Json<ExportList> {
    Json(ExportList {
        exports: state
            .exports
            .list()
            .iter()
            .map(|e| ExportView::of(e))
            .collect(),
    })
}

/// `GET /api/v1/exports/{name}`.
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ExportView>, ApiError> {
    let export = state
        .exports
        .get(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no export named {name:?}")))?;
    Ok(Json(ExportView::of(&export)))
}

/// `POST /api/v1/exports`: 201 once it runs (its stream, destination and
/// projection checked); 200 when one of that name and definition exists.
async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller, "create exports")?;
    let config: ExportConfig = json_body(&body, "invalid definition")?;
    let (export, new) = state.exports.create(config).await.map_err(export_error)?;
    let view = ExportView::of(&export);
    if !new {
        return Ok(Json(view).into_response());
    }
    Ok(created(format!("/api/v1/exports/{}", view.name), view))
}

/// `DELETE /api/v1/exports/{name}`: 204 once it stopped.
async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller, "delete exports")?;
    state.exports.delete(&name).await.map_err(export_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn export_error(e: ExportError) -> ApiError {
    match e {
        ExportError::Catalog(catalog) => catalog_error(catalog),
        ExportError::State(message) => {
            tracing::error!(error = %message, "export operation failed");
            ApiError::internal(message)
        }
    }
}
