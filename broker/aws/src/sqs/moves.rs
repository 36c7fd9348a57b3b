//! Message move tasks (redrive): `StartMessageMoveTask` and
//! `CancelMessageMoveTask` (which need the `admin` permission), and
//! `ListMessageMoveTasks` (which needs the source queue in the caller's
//! `queues` permission). Queues are named by ARN here, as in SQS.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_queues::{MoveStatus, MoveTask, QueueError};

use super::codec::{answer, count, parse, required};
use super::context::Context;
use super::errors::{Kind, from_queue};
use crate::AwsError;

/// Most tasks one list answers, as in SQS.
const MAX_LISTED: u64 = 10;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequest {
    source_arn: Option<String>,
    destination_arn: Option<String>,
    max_number_of_messages_per_second: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct StartAnswer {
    task_handle: String,
}

/// `StartMessageMoveTask`: moves the messages of a dead-letter queue back
/// to where they came from, or to `DestinationArn`.
pub fn start(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    ctx.must_be_admin("StartMessageMoveTask")?;
    let request: StartRequest = parse(body)?;
    let source_arn = required(request.source_arn, "SourceArn")?;
    let source = ctx.name_of_arn(&source_arn, "SourceArn")?;
    let destination = request
        .destination_arn
        .as_deref()
        .map(|arn| ctx.name_of_arn(arn, "DestinationArn"))
        .transpose()?;
    let per_second = count(
        request.max_number_of_messages_per_second,
        "MaxNumberOfMessagesPerSecond",
        1,
        u32::MAX.into(),
    )?
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let task_handle = ctx
        .queues
        .start_move(source, destination, per_second)
        .map_err(not_found_is_resource)?;
    answer(StartAnswer { task_handle })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    source_arn: Option<String>,
    max_results: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAnswer {
    results: Vec<TaskOut>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaskOut {
    /// Only while it runs, as in SQS.
    #[serde(skip_serializing_if = "Option::is_none")]
    task_handle: Option<String>,
    status: &'static str,
    source_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_number_of_messages_per_second: Option<u32>,
    approximate_number_of_messages_moved: u64,
    approximate_number_of_messages_to_move: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    started_timestamp: i64,
}

/// `ListMessageMoveTasks`: the newest tasks of a source, at most
/// `MaxResults` (1 to 10, default 1).
pub fn list(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: ListRequest = parse(body)?;
    let source_arn = required(request.source_arn, "SourceArn")?;
    let source = ctx.name_of_arn(&source_arn, "SourceArn")?;
    ctx.may_use(source)?;
    ctx.queues.get(source).map_err(not_found_is_resource)?;
    let max = count(request.max_results, "MaxResults", 1, MAX_LISTED)?.unwrap_or(1);
    let results = ctx
        .queues
        .move_tasks(source)
        .iter()
        .take(max as usize)
        .map(|task| {
            let (status, failure_reason) = task.status();
            TaskOut {
                task_handle: (status == MoveStatus::Running).then(|| task.handle().to_owned()),
                status: status.as_str(),
                source_arn: ctx.arn(task.source()),
                destination_arn: task.destination().map(|d| ctx.arn(d)),
                max_number_of_messages_per_second: task.per_second(),
                approximate_number_of_messages_moved: task.moved(),
                approximate_number_of_messages_to_move: task.to_move(),
                failure_reason,
                started_timestamp: task.started_ms(),
            }
        })
        .collect();
    answer(ListAnswer { results })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CancelRequest {
    task_handle: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CancelAnswer {
    approximate_number_of_messages_moved: u64,
}

/// `CancelMessageMoveTask`: stops a running task.
pub fn cancel(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    ctx.must_be_admin("CancelMessageMoveTask")?;
    let request: CancelRequest = parse(body)?;
    let handle = required(request.task_handle, "TaskHandle")?;
    let known = ctx.queues.list().iter().any(|q| {
        ctx.queues
            .move_tasks(&q.name())
            .iter()
            .any(|t| t.handle() == handle)
    });
    if !known {
        return Err(Kind::ResourceNotFound.error(format!("no message move task {handle:?}")));
    }
    let task: Arc<MoveTask> = ctx.queues.cancel_move(&handle).map_err(from_queue)?;
    answer(CancelAnswer {
        approximate_number_of_messages_moved: task.moved(),
    })
}

/// Move tasks name queues that are not there as SQS does.
fn not_found_is_resource(error: QueueError) -> AwsError {
    match error {
        QueueError::NotFound(name) => {
            Kind::ResourceNotFound.error(format!("the queue {name:?} does not exist"))
        }
        other => from_queue(other),
    }
}
