//! The HTTP API of this crate, as an axum [`Router`] the server merges:
//! `POST /api/v1/sql` and `POST|GET /api/v1/queries`,
//! `GET|DELETE /api/v1/queries/{id}`.
//!
//! Status codes: 400 for SQL that does not parse or plan, that the
//! sandbox refuses, or that fails on its data (division by zero, a bad
//! cast); 404 for an unknown continuous query; 409 for a duplicate id; 413
//! when a query exceeds its memory limit; 408 when it exceeds its timeout;
//! 503 (with `Retry-After`) when the executor is full or shutting down, or
//! a stream cannot be read; 500 for a failure inside the engine; 403 when
//! the caller may not read a stream the query reads (its `sql`
//! permission) or may not start or stop continuous queries (`admin`).
//!
//! The caller is the [`Principal`] the server's auth layer puts in each
//! request's extensions; without that layer (embedding, tests) every
//! request may do everything.

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tidewire_auth::Principal;

use crate::access::ReadAccess;
use crate::config::QueryConfig;
use crate::continuous::ContinuousQueries;
use crate::engine::{QueryOutput, SqlEngine};
use crate::error::SqlError;
use crate::output;

/// Media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// The query.
    pub sql: String,
}

#[derive(Clone)]
struct ApiState {
    engine: SqlEngine,
    queries: ContinuousQueries,
}

/// The SQL routes, with their own state.
pub fn router(engine: SqlEngine, queries: ContinuousQueries) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/queries", post(create_query).get(list_queries))
        .route("/api/v1/queries/{id}", get(get_query).delete(delete_query))
        .with_state(ApiState { engine, queries })
}

/// A JSON error response `{"error": TEXT}`.
fn error(status: StatusCode, text: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": text.to_string() }))).into_response()
}

impl IntoResponse for SqlError {
    fn into_response(self) -> Response {
        let status = match &self {
            SqlError::Invalid(_) | SqlError::Rejected(_) | SqlError::Evaluation(_) => {
                StatusCode::BAD_REQUEST
            }
            SqlError::Forbidden(_) => StatusCode::FORBIDDEN,
            SqlError::UnknownQuery(_) => StatusCode::NOT_FOUND,
            SqlError::DuplicateQuery(_) => StatusCode::CONFLICT,
            SqlError::MemoryLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SqlError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            SqlError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            SqlError::Busy { .. } | SqlError::BudgetExhausted(_) | SqlError::ShuttingDown => {
                let retry = [(header::RETRY_AFTER, "1")];
                return (retry, error(StatusCode::SERVICE_UNAVAILABLE, self)).into_response();
            }
            SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self)
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {e}"),
        ))
    })
}

/// Turns a result into the bytes of one response format.
type Encoder = fn(&QueryOutput) -> Result<Vec<u8>, String>;

/// The caller, as the auth layer found it.
type Caller = Option<Extension<Principal>>;

fn read_access(caller: &Caller) -> ReadAccess {
    caller
        .as_ref()
        .map_or_else(ReadAccess::all, |Extension(p)| ReadAccess::of(p))
}

/// Refuses a caller who may not start or stop continuous queries.
fn require_admin(caller: &Caller) -> Result<(), Box<Response>> {
    match caller {
        Some(Extension(principal)) if !principal.is_admin() => Err(Box::new(
            SqlError::Forbidden(
                "starting and stopping continuous queries needs the admin permission".into(),
            )
            .into_response(),
        )),
        _ => Ok(()),
    }
}

async fn sql(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: SqlRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (content_type, encode): (&str, Encoder) = if accept.contains("text/csv") {
        ("text/csv", |out| {
            output::to_csv(out).map_err(|e| e.to_string())
        })
    } else if accept.contains(ARROW_STREAM) {
        (ARROW_STREAM, |out| {
            output::to_arrow_ipc(out).map_err(|e| e.to_string())
        })
    } else {
        ("application/json", |out| {
            let json = output::to_json(out).map_err(|e| e.to_string())?;
            serde_json::to_vec(&json).map_err(|e| e.to_string())
        })
    };
    let encoded = state
        .engine
        .query_into(&request.sql, read_access(&caller), move |out| {
            encode(&out).map_err(SqlError::encoding)
        })
        .await;
    match encoded {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_query(State(state): State<ApiState>, caller: Caller, body: Bytes) -> Response {
    if let Err(response) = require_admin(&caller) {
        return *response;
    }
    let config: QueryConfig = match parse_body(&body) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    match state.queries.start(config).await {
        Ok(info) => (StatusCode::CREATED, axum::Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_queries(State(state): State<ApiState>) -> Response {
    axum::Json(json!({ "queries": state.queries.list() })).into_response()
}

async fn get_query(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.queries.get(&id) {
        Ok(info) => axum::Json(info).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_query(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = require_admin(&caller) {
        return *response;
    }
    match state.queries.stop(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
