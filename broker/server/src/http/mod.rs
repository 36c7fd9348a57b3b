//! The HTTP API (axum): routes, shared state, the JSON error shape
//! `{"error": TEXT}` that every failure uses ([`json_errors`] holds the
//! whole listener to it), and the listener's connection handling
//! ([`serve`]).

pub mod auth;
mod exports;
mod ops;
mod publish;
mod queue_messages;
mod queues;
mod records;
mod serve;
mod streams;
mod topics;

pub use serve::{HttpMetrics, serve};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tidewire_core::{Broker, Catalog};
use tidewire_export::Exports;
use tidewire_queues::Queues;
use tidewire_topics::Topics;

use crate::reload::Reloader;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The broker core.
    pub broker: Broker,
    /// The run-time catalog of streams.
    pub catalog: Catalog,
    /// The queues.
    pub queues: Queues,
    /// The fan-out topics.
    pub topics: Topics,
    /// The stream exports.
    pub exports: Exports,
    /// Reloads the config file (`POST /api/v1/admin/reload`).
    pub reloader: Reloader,
    /// Every metric, for `/metrics`.
    pub registry: Arc<Registry>,
}

/// Builds the router for the HTTP listener.
pub fn router(state: AppState) -> Router {
    let body_limit = state.broker.limits().max_payload_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route(
            &format!("{}{{*topic}}", publish::ROUTE_PREFIX),
            post(publish::publish).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/api/v1/streams",
            get(streams::list)
                .post(streams::create)
                .layer(DefaultBodyLimit::max(streams::MAX_DEFINITION_BYTES)),
        )
        .route(
            "/api/v1/streams/{name}",
            get(streams::show)
                .patch(streams::update)
                .delete(streams::delete)
                .layer(DefaultBodyLimit::max(streams::MAX_DEFINITION_BYTES)),
        )
        .route("/api/v1/streams/{name}/records", get(records::read))
        .merge(queues::routes())
        .merge(topics::routes())
        .merge(exports::routes())
        .route("/api/v1/admin/reload", post(ops::reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 404 for a stream that does not exist.
    pub fn no_stream(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no stream named {name:?}"))
    }

    /// A 500 for a failure inside the server.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

/// Turns an extractor's rejection (bad path, query or body) into the JSON
/// error shape, keeping its status (400, 413, ...).
pub fn extracted<T, R>(result: Result<T, R>) -> Result<T, ApiError>
where
    R: IntoResponse + ToString,
{
    result.map_err(|rejection| {
        let message = rejection.to_string();
        ApiError::new(rejection.into_response().status(), message)
    })
}

/// A 201 Created answer: `Location` and the new resource as JSON.
pub fn created(location: String, view: impl serde::Serialize) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view),
    )
        .into_response()
}

/// A JSON object from a request body, read as written (raw JSON values
/// keep their text); a syntax error, a missing or unknown field or a value
/// of the wrong kind is a 400 that starts with `what` and names the field.
pub fn json_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let invalid = |message: String| ApiError::bad_request(format!("{what}: {message}"));
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(invalid("expected a JSON object".into()));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            invalid(inner.to_string())
        } else {
            invalid(format!("{path}: {inner}"))
        }
    })?;
    json.end().map_err(|e| invalid(e.to_string()))?;
    Ok(value)
}

/// A `PATCH`: `current` (a definition) with `changes` laid over it, field
/// by field (`null` restores a field's default); the fields in `fixed`
/// cannot change (a 400 says so, `what` naming the resource). A bad
/// result is a 400 naming the field.
pub fn patched<T>(
    current: &T,
    changes: serde_json::Map<String, serde_json::Value>,
    fixed: &[&str],
    what: &str,
) -> Result<T, ApiError>
where
    T: serde::Serialize + DeserializeOwned,
{
    use serde_json::Value;
    let Ok(Value::Object(mut fields)) = serde_json::to_value(current) else {
        return Err(ApiError::internal(format!(
            "a {what} definition is not a JSON object"
        )));
    };
    for (key, value) in changes {
        if fixed.contains(&key.as_str()) && fields.get(&key) != Some(&value) {
            return Err(ApiError::bad_request(format!(
                "invalid change: {key}: a {what} keeps its {key} (create another and delete this one)"
            )));
        }
        if value.is_null() {
            fields.remove(&key);
        } else {
            fields.insert(key, value);
        }
    }
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("invalid change: {path}: {}", e.into_inner()))
    })
}

/// Longest error text [`json_errors`] carries over; a longer body is
/// replaced by the status's name.
const MAX_ERROR_TEXT: usize = 64 * 1024;

/// Middleware holding every route of the listener to the API's error
/// shape: an error answer (4xx or 5xx) with a plain-text or empty body,
/// which is what axum's extractors and layers produce (a 413 from a body
/// limit, a 405 for a wrong method, ...), becomes `{"error": TEXT}` with
/// the same status and headers. JSON errors, and the other formats a
/// protocol asks for (XML, say), pass unchanged.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t.as_bytes().starts_with(b"text/plain"));
    if !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().map_or_else(
            || format!("HTTP status {}", status.as_u16()),
            str::to_lowercase,
        )
    } else {
        text
    };
    let body = serde_json::json!({ "error": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}
