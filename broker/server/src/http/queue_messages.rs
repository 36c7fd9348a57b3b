//! A queue's messages over HTTP: send one or a batch
//! (`POST .../messages`), receive with a long poll (`POST .../receive`),
//! delete by receipt handle (`POST .../delete`, `DELETE
//! .../messages/{handle}`), change visibility, purge, peek, and redrive
//! tasks (`POST`/`GET .../redrive`). Messages have the JSON shapes of
//! [`tidewire_queues::json`], which `/ws` shares.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tidewire_auth::Principal;
use tidewire_queues::json::{self, MessageView, ReceiveRequest, SendRequest, SentView, in_range};
use tidewire_queues::{MAX_RECEIVE, QueueError};

use super::auth::require_admin;
use super::queues::{queue_error, require_see, require_use};
use super::{ApiError, AppState, extracted, json_body};

/// Largest send request (a batch of ten large messages, base64).
pub const MAX_SEND_BYTES: usize = 4 * 1024 * 1024;
/// Most entries in a batch (messages, receipt handles), as in SQS.
pub const MAX_BATCH: usize = 10;

/// Who sent a message over HTTP: the user or token, else this.
const ANONYMOUS_SENDER: &str = "http";

/// `{"messages": [...]}`: a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBatch {
    messages: Vec<SendRequest>,
}

/// One entry's outcome in a batch.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum SendResult {
    Sent(SentView),
    Failed { error: String },
}

#[derive(Debug, Serialize)]
struct SendResults {
    results: Vec<SendResult>,
}

#[derive(Debug, Serialize)]
pub struct Messages {
    messages: Vec<MessageView>,
}

/// `POST /api/v1/queues/{name}/messages`: one message, answered with its
/// id once durable; or `{"messages": [...]}` (1 to 10), answered entry by
/// entry.
pub async fn send(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_use(&caller, &name)?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    let sender = caller.username().unwrap_or(ANONYMOUS_SENDER).to_owned();
    if !is_batch(&body) {
        let request: SendRequest = json_body(&body, "invalid message")?;
        let out = request.into_outgoing(sender).map_err(queue_error)?;
        let sent = queue.send(out).await.map_err(queue_error)?;
        return Ok(Json(SentView::from(sent)).into_response());
    }
    let batch: SendBatch = json_body(&body, "invalid batch")?;
    check_batch("messages", batch.messages.len())?;
    // Entries that are not messages are answered in place; the rest go to
    // the queue together (one group commit).
    let mut results: Vec<Option<SendResult>> = Vec::with_capacity(batch.messages.len());
    let mut outgoing = Vec::new();
    for request in batch.messages {
        match request.into_outgoing(sender.clone()) {
            Ok(out) => {
                outgoing.push(out);
                results.push(None);
            }
            Err(e) => results.push(Some(failed(&e))),
        }
    }
    let mut answers = queue.send_batch(outgoing).await.into_iter();
    let results = results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| match answers.next() {
                Some(Ok(sent)) => SendResult::Sent(sent.into()),
                Some(Err(e)) => failed(&e),
                None => SendResult::Failed {
                    error: "internal error (a bug): no answer for this entry".into(),
                },
            })
        })
        .collect();
    Ok(Json(SendResults { results }).into_response())
}

/// True when the body is an object whose first key is `messages`: a batch
/// has no other key, and a message has no such key. Reading only that far
/// spares parsing the body twice.
fn is_batch(body: &[u8]) -> bool {
    let rest = body.trim_ascii_start();
    rest.strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"messages\""))
}

fn failed(e: &QueueError) -> SendResult {
    SendResult::Failed {
        error: json::describe(e),
    }
}

/// A batch holds 1 to 10 entries.
fn check_batch(field: &str, len: usize) -> Result<(), ApiError> {
    if (1..=MAX_BATCH).contains(&len) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field}: a batch holds 1 to {MAX_BATCH} entries, not {len}"
        )))
    }
}

/// `POST /api/v1/queues/{name}/receive?max=N&wait_ms=MS&visibility_ms=MS`:
/// up to `max` messages (default 1), waiting up to `wait_ms` (default the
/// queue's `receive_wait`) for a first one, hidden for `visibility_ms`
/// (default the queue's).
pub async fn receive(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    params: Result<Query<ReceiveRequest>, QueryRejection>,
) -> Result<Json<Messages>, ApiError> {
    require_use(&caller, &name)?;
    let Query(params) = extracted(params)?;
    let options = params.options().map_err(queue_error)?;
    let delivered = state
        .queues
        .receive(&name, options)
        .await
        .map_err(queue_error)?;
    Ok(Json(Messages {
        messages: delivered.into_iter().map(MessageView::from).collect(),
    }))
}

/// `{"receipt_handles": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBatch {
    receipt_handles: Vec<String>,
}

/// One handle's outcome.
#[derive(Debug, Serialize)]
struct Deleted {
    receipt_handle: String,
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeleteResults {
    results: Vec<Deleted>,
}

/// `POST /api/v1/queues/{name}/delete`: deletes 1 to 10 messages by
/// receipt handle (one journal commit), answered handle by handle once
/// durable.
pub async fn delete_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<DeleteResults>, ApiError> {
    require_use(&caller, &name)?;
    let batch: DeleteBatch = json_body(&body, "invalid request")?;
    check_batch("receipt_handles", batch.receipt_handles.len())?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    let handles: Vec<&str> = batch.receipt_handles.iter().map(String::as_str).collect();
    let outcomes = queue.delete_batch(&handles).await;
    Ok(Json(DeleteResults {
        results: batch
            .receipt_handles
            .into_iter()
            .zip(outcomes)
            .map(|(receipt_handle, outcome)| Deleted {
                receipt_handle,
                deleted: outcome.is_ok(),
                error: outcome.err().map(|e| json::describe(&e)),
            })
            .collect(),
    }))
}

/// `DELETE /api/v1/queues/{name}/messages/{receipt_handle}`: 204 once
/// durable.
pub async fn delete_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((name, handle)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_use(&caller, &name)?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    queue.delete(&handle).await.map_err(queue_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"receipt_handle": H, "visibility_ms": MS}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibilityChange {
    receipt_handle: String,
    visibility_ms: u64,
}

/// `POST /api/v1/queues/{name}/visibility`: hides a received message
/// `visibility_ms` from now (0: visible at once); 204.
pub async fn visibility(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    require_use(&caller, &name)?;
    let change: VisibilityChange = json_body(&body, "invalid request")?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    queue
        .change_visibility(
            &change.receipt_handle,
            Duration::from_millis(change.visibility_ms),
        )
        .await
        .map_err(queue_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/queues/{name}/purge`: deletes every message; 204.
pub async fn purge(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller, "purge queues")?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    queue.purge().await.map_err(queue_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?max=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeekParams {
    max: Option<usize>,
}

/// `GET /api/v1/queues/{name}/peek`: up to `max` (default 10) messages
/// in queue order, without receiving them (no receipt handles).
pub async fn peek(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    params: Result<Query<PeekParams>, QueryRejection>,
) -> Result<Json<Messages>, ApiError> {
    require_see(&caller, &name)?;
    let Query(params) = extracted(params)?;
    let max = params.max.unwrap_or(MAX_RECEIVE);
    in_range("max", max as u64, 1, MAX_RECEIVE as u64).map_err(queue_error)?;
    let queue = state.queues.get(&name).map_err(queue_error)?;
    let messages = queue.peek(max).await.map_err(queue_error)?;
    Ok(Json(Messages {
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}

/// `{"destination"?: NAME, "per_second"?: N}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    destination: Option<String>,
    per_second: Option<u32>,
}

#[derive(Debug, Serialize)]
struct TaskStarted {
    task: String,
}

/// `POST /api/v1/queues/{name}/redrive`: starts moving the messages of a
/// dead-letter queue back to the queues they came from, or to
/// `destination`, at most `per_second` a second; 202 with the task's
/// handle. An empty body takes the defaults.
pub async fn redrive(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller, "redrive queues")?;
    let request: RedriveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveRequest::default()
    } else {
        json_body(&body, "invalid request")?
    };
    let task = state
        .queues
        .start_move(&name, request.destination.as_deref(), request.per_second)
        .map_err(queue_error)?;
    Ok((StatusCode::ACCEPTED, Json(TaskStarted { task })).into_response())
}

/// A redrive task.
#[derive(Debug, Serialize)]
struct TaskView {
    task: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    status: String,
    moved: u64,
    to_move: u64,
    /// Null: each message's source queue.
    destination: Option<String>,
    per_second: Option<u32>,
    started_ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Tasks {
    tasks: Vec<TaskView>,
}

/// `GET /api/v1/queues/{name}/redrive`: its redrive tasks, newest first.
pub async fn redrive_tasks(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Tasks>, ApiError> {
    require_see(&caller, &name)?;
    state.queues.get(&name).map_err(queue_error)?;
    let tasks = state
        .queues
        .move_tasks(&name)
        .into_iter()
        .map(|task| {
            let (status, failure) = task.status();
            TaskView {
                task: task.handle().to_owned(),
                status: status.as_str().to_ascii_lowercase(),
                moved: task.moved(),
                to_move: task.to_move(),
                destination: task.destination().map(str::to_owned),
                per_second: task.per_second(),
                started_ts: task.started_ms(),
                failure,
            }
        })
        .collect();
    Ok(Json(Tasks { tasks }))
}
