//! `/api/v1/queues`: each queue's definition, origin and depth (`GET`),
//! and the catalog's run-time changes: create (`POST`, a `[[queues]]`
//! entry as JSON), change (`PATCH`: the fields given replace the current
//! ones, `null` restores a default) and delete (`DELETE`). The routes of
//! the messages (send, receive, delete, ...) are in
//! [`super::queue_messages`]; [`routes`] holds them all.
//!
//! Who may do what: admins create, change, delete, purge and redrive; a
//! caller whose `queues` permission names a queue sends to it, receives
//! from it and deletes its messages; both see it (list, get, peek).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use tidewire_auth::Principal;
use tidewire_core::{Origin, StorageError};
use tidewire_queues::queue::now_ms;
use tidewire_queues::{Queue, QueueConfig, QueueError, json};

use super::auth::{forbidden, require_admin};
use super::queue_messages as messages;
use super::streams::catalog_error;
use super::{ApiError, AppState, created, json_body, patched};

/// Largest request body besides a send's.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Every route under `/api/v1/queues`.
pub fn routes() -> Router<AppState> {
    let small = || DefaultBodyLimit::max(MAX_REQUEST_BYTES);
    Router::new()
        .route("/api/v1/queues", get(list).post(create).layer(small()))
        .route(
            "/api/v1/queues/{name}",
            get(show).patch(update).delete(remove).layer(small()),
        )
        .route(
            "/api/v1/queues/{name}/messages",
            post(messages::send).layer(DefaultBodyLimit::max(messages::MAX_SEND_BYTES)),
        )
        .route(
            "/api/v1/queues/{name}/messages/{receipt_handle}",
            delete(messages::delete_one).layer(small()),
        )
        .route(
            "/api/v1/queues/{name}/receive",
            post(messages::receive).layer(small()),
        )
        .route(
            "/api/v1/queues/{name}/delete",
            post(messages::delete_batch).layer(small()),
        )
        .route(
            "/api/v1/queues/{name}/visibility",
            post(messages::visibility).layer(small()),
        )
        .route(
            "/api/v1/queues/{name}/purge",
            post(messages::purge).layer(small()),
        )
        .route("/api/v1/queues/{name}/peek", get(messages::peek))
        .route(
            "/api/v1/queues/{name}/redrive",
            get(messages::redrive_tasks)
                .post(messages::redrive)
                .layer(small()),
        )
}

/// A queue's definition and depth.
#[derive(Debug, Serialize)]
pub struct QueueView {
    name: String,
    fifo: bool,
    /// `config` (the config file) or `api` (created at run time; only
    /// these can be changed or deleted through the API).
    origin: Origin,
    /// As written in `[[queues]]`, defaults filled in.
    definition: QueueConfig,
    depth: DepthView,
    /// The queues whose dead-letter queue this is.
    dead_letter_sources: Vec<String>,
    /// When it was created, ms since the Unix epoch.
    created_ts: i64,
}

#[derive(Debug, Serialize)]
struct DepthView {
    visible: u64,
    in_flight: u64,
    delayed: u64,
    /// Age of the oldest message; null when the queue is empty.
    oldest_age_ms: Option<i64>,
}

impl QueueView {
    async fn of(state: &AppState, queue: &Queue) -> QueueView {
        let spec = queue.spec();
        let depth = queue.depth().await;
        let name = spec.name().to_owned();
        QueueView {
            fifo: spec.fifo,
            origin: state.queues.origin(&name).unwrap_or(Origin::Config),
            definition: spec.config.clone(),
            depth: DepthView {
                visible: depth.visible,
                in_flight: depth.in_flight,
                delayed: depth.delayed,
                oldest_age_ms: depth.oldest_sent_ms.map(|sent| (now_ms() - sent).max(0)),
            },
            dead_letter_sources: state.queues.dead_letter_sources(&name),
            created_ts: queue.created_ms(),
            name,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct QueueList {
    queues: Vec<QueueView>,
}

/// `GET /api/v1/queues`: the queues the caller may see.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Json<QueueList> {
    let mut queues = Vec::new();
    for queue in state.queues.list() {
        if may_see(&caller, &queue.name()) {
            queues.push(QueueView::of(&state, &queue).await);
        }
    }
    Json(QueueList { queues })
}

/// `GET /api/v1/queues/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    require_see(&caller, &name)?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    Ok(Json(QueueView::of(&state, &queue).await))
}

/// `POST /api/v1/queues`: 201 with the new queue and its `Location`; 200
/// when a queue of that name and definition exists (as SQS answers).
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller, "create queues")?;
    let config: QueueConfig = json_body(&body, "invalid definition")?;
    let (queue, new) = state.queues.create(config).await.map_err(queue_error)?;
    let view = QueueView::of(&state, &queue).await;
    if !new {
        return Ok(Json(view).into_response());
    }
    Ok(created(format!("/api/v1/queues/{}", queue.name()), view))
}

/// `PATCH /api/v1/queues/{name}`: the fields given replace the current
/// ones (`null` restores a field's default); the name stays.
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<QueueView>, ApiError> {
    require_admin(&caller, "change queues")?;
    let changes: Map<String, Value> = json_body(&body, "invalid change")?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    let config = patched(&queue.spec().config, changes, &["name"], "queue")?;
    let queue = state.queues.update(config).await.map_err(queue_error)?;
    Ok(Json(QueueView::of(&state, &queue).await))
}

/// `DELETE /api/v1/queues/{name}`: 204 once its messages are gone.
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller, "delete queues")?;
    state.queues.delete(&name).await.map_err(queue_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// May the caller see the queue `name` (list, get, peek)?
pub(super) fn may_see(caller: &Principal, name: &str) -> bool {
    caller.is_admin() || caller.may_use_queue(name)
}

/// Refuses a caller that may not see the queue `name`.
pub(super) fn require_see(caller: &Principal, name: &str) -> Result<(), ApiError> {
    if may_see(caller, name) {
        Ok(())
    } else {
        Err(forbidden(format!("see queue {name:?}"), "queues"))
    }
}

/// Refuses a caller that may not send to, receive from or delete from the
/// queue `name`.
pub(super) fn require_use(caller: &Principal, name: &str) -> Result<(), ApiError> {
    if caller.may_use_queue(name) {
        Ok(())
    } else {
        Err(forbidden(format!("use queue {name:?}"), "queues"))
    }
}

/// The status each queue refusal deserves, with a message that names the
/// request's field.
pub(super) fn queue_error(e: QueueError) -> ApiError {
    let e = match e {
        QueueError::Catalog(catalog) => return catalog_error(catalog),
        other => other,
    };
    let status = match &e {
        QueueError::NotFound(_) => StatusCode::NOT_FOUND,
        QueueError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        QueueError::OverLimit(_) => StatusCode::TOO_MANY_REQUESTS,
        QueueError::Storage(StorageError::Closed(_)) => StatusCode::SERVICE_UNAVAILABLE,
        _ if e.is_user_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "queue operation failed");
    }
    ApiError::new(status, json::describe(&e))
}
