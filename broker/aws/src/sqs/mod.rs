//! The SQS-compatible endpoint: AWS JSON 1.0 (`POST /` with
//! `X-Amz-Target: AmazonSQS.<Action>`) over the queue engine
//! ([`tidewire_queues`]), answering the AWS SDKs and CLI unchanged.
//!
//! - [`messages`]: send, receive, delete, change visibility, purge;
//! - [`queues`]: create, delete, URLs, lists, queue attributes;
//! - [`moves`]: message move tasks (redrive);
//! - [`context`]: queue URLs and ARNs, and the caller's permissions;
//! - [`codec`], [`attributes`], [`message_attributes`]: the wire shapes;
//! - [`md5`]: the digests SDKs check; [`errors`]: SQS's error codes.

mod attributes;
mod codec;
mod context;
mod errors;
mod md5;
mod message_attributes;
mod messages;
mod moves;
mod queues;

use serde_json::Value;

pub use context::Context;
use errors::Kind;

use crate::AwsError;

/// Runs the SQS `action` on a JSON request `body`.
pub async fn handle(ctx: &Context<'_>, action: &str, body: &[u8]) -> Result<Value, AwsError> {
    match action {
        "SendMessage" => messages::send(ctx, body).await,
        "SendMessageBatch" => messages::send_batch(ctx, body).await,
        "ReceiveMessage" => messages::receive(ctx, body).await,
        "DeleteMessage" => messages::delete(ctx, body).await,
        "DeleteMessageBatch" => messages::delete_batch(ctx, body).await,
        "ChangeMessageVisibility" => messages::change_visibility(ctx, body).await,
        "ChangeMessageVisibilityBatch" => messages::change_visibility_batch(ctx, body).await,
        "PurgeQueue" => messages::purge(ctx, body).await,
        "CreateQueue" => queues::create(ctx, body).await,
        "DeleteQueue" => queues::delete(ctx, body).await,
        "GetQueueUrl" => queues::get_url(ctx, body),
        "ListQueues" => queues::list(ctx, body),
        "GetQueueAttributes" => queues::get_attributes(ctx, body).await,
        "SetQueueAttributes" => queues::set_attributes(ctx, body).await,
        "ListDeadLetterSourceQueues" => queues::dead_letter_sources(ctx, body),
        "StartMessageMoveTask" => moves::start(ctx, body),
        "ListMessageMoveTasks" => moves::list(ctx, body),
        "CancelMessageMoveTask" => moves::cancel(ctx, body),
        "AddPermission" | "RemovePermission" | "TagQueue" | "UntagQueue" | "ListQueueTags" => {
            Err(Kind::UnsupportedOperation.error(format!(
                "tidewire does not serve {action}: queues have no tags, and who may use them is set by its users' `queues` and `admin` permissions"
            )))
        }
        other => Err(Kind::UnknownOperation.error(format!(
            "AmazonSQS.{other} is not an SQS action"
        ))),
    }
}
