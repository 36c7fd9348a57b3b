//! The message actions: `SendMessage`, `SendMessageBatch`,
//! `ReceiveMessage` (with long polls), `DeleteMessage`,
//! `DeleteMessageBatch`, `ChangeMessageVisibility`,
//! `ChangeMessageVisibilityBatch` and `PurgeQueue`. Each needs the queue in
//! the caller's `queues` permission. The entries of a batch go to the queue
//! together, so they share one group commit (deletes one journal record).
//!
//! Bodies are text in SQS; a message whose body is not UTF-8 (an MQTT
//! publish may carry any bytes) is answered in base64, with the digest of
//! what is answered.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_queues::config::{MAX_DELAY, MAX_RECEIVE_WAIT, MAX_VISIBILITY};
use tidewire_queues::{Delivered, Outgoing, QueueError, QueueSpec, ReceiveOptions, Sent};

use super::codec::{BatchAnswer, Done, QueueUrl, answer, batch, parse, required, seconds};
use super::context::Context;
use super::errors::{Kind, from_queue, invalid, missing};
use super::md5;
use super::message_attributes::{self, AttributeValue};
use crate::AwsError;

/// What `SendMessage` and each entry of `SendMessageBatch` carry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEntry {
    /// Batch entries only.
    id: Option<String>,
    message_body: Option<String>,
    delay_seconds: Option<i64>,
    message_attributes: Option<BTreeMap<String, AttributeValue>>,
    message_system_attributes: Option<BTreeMap<String, Value>>,
    message_deduplication_id: Option<String>,
    message_group_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendRequest {
    queue_url: Option<String>,
    #[serde(flatten)]
    entry: SendEntry,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendBatchRequest {
    queue_url: Option<String>,
    entries: Option<Vec<SendEntry>>,
}

/// What a send answers (a batch entry also its id).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    message_id: String,
    #[serde(rename = "MD5OfMessageBody")]
    md5_of_message_body: String,
    #[serde(rename = "MD5OfMessageAttributes")]
    #[serde(skip_serializing_if = "Option::is_none")]
    md5_of_message_attributes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
}

/// The digests a send answers.
struct Digests {
    body: String,
    attributes: Option<String>,
}

impl Digests {
    fn answer(self, id: Option<String>, sent: Sent) -> SendAnswer {
        SendAnswer {
            id,
            message_id: sent.message_id,
            md5_of_message_body: self.body,
            md5_of_message_attributes: self.attributes,
            sequence_number: sent.sequence_number,
        }
    }
}

/// Checks a send's parameters (the queue checks size, attributes, FIFO
/// ids and delay against its definition): the message for the queue and
/// the digests to answer.
fn check(
    ctx: &Context<'_>,
    spec: &QueueSpec,
    entry: SendEntry,
) -> Result<(Outgoing, Digests), AwsError> {
    let body = entry
        .message_body
        .filter(|b| !b.is_empty())
        .ok_or_else(|| missing("MessageBody"))?;
    if !message_attributes::is_sqs_text(&body) {
        return Err(Kind::InvalidMessageContents.error(
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
        ));
    }
    if entry
        .message_system_attributes
        .is_some_and(|a| !a.is_empty())
    {
        return Err(invalid(
            "MessageSystemAttributes",
            "tidewire does not keep message system attributes (AWSTraceHeader)",
        ));
    }
    if spec.fifo && entry.message_group_id.is_none() {
        return Err(missing("MessageGroupId"));
    }
    let delay = seconds(entry.delay_seconds, "DelaySeconds", MAX_DELAY)?;
    let attributes = message_attributes::parse(entry.message_attributes)?;
    let digests = Digests {
        body: md5::of_body(&body),
        attributes: md5::of_attributes(&attributes),
    };
    let out = Outgoing {
        body: Bytes::from(body),
        attributes,
        delay,
        group: entry.message_group_id,
        dedup_id: entry.message_deduplication_id,
        sender: ctx.caller.sender(),
    };
    Ok((out, digests))
}

/// `SendMessage`.
pub async fn send(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: SendRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let (out, digests) = check(ctx, &queue.spec(), request.entry)?;
    let sent = queue.send(out).await.map_err(from_queue)?;
    answer(digests.answer(None, sent))
}

/// `SendMessageBatch`: the entries that pass their checks go to the queue
/// together; the batch as a whole may carry at most the queue's message
/// size limit.
pub async fn send_batch(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: SendBatchRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let entries = batch(request.entries, |e| e.id.as_deref().unwrap_or(""))?;
    let spec = queue.spec();
    let mut outgoing = Vec::with_capacity(entries.len());
    let mut checked = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry.id.clone().unwrap_or_default();
        let digests = check(ctx, &spec, entry).map(|(out, digests)| {
            outgoing.push(out);
            digests
        });
        checked.push((id, digests));
    }
    let total: usize = outgoing.iter().map(Outgoing::size).sum();
    let max = spec.config.max_message_bytes.as_u64();
    if total as u64 > max {
        return Err(Kind::BatchRequestTooLong.error(format!(
            "Batch requests cannot be longer than {max} bytes. You have sent {total} bytes."
        )));
    }
    let mut sent = queue.send_batch(outgoing).await.into_iter();
    let mut result = BatchAnswer::with_capacity(checked.len());
    for (id, digests) in checked {
        let outcome = digests.and_then(|digests| {
            let sent = sent
                .next()
                .unwrap_or_else(|| Err(QueueError::State("no answer".into())))
                .map_err(from_queue)?;
            Ok(digests.answer(Some(id.clone()), sent))
        });
        result.push(id, outcome);
    }
    answer(result)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveRequest {
    queue_url: Option<String>,
    attribute_names: Option<Vec<String>>,
    message_system_attribute_names: Option<Vec<String>>,
    message_attribute_names: Option<Vec<String>>,
    max_number_of_messages: Option<i64>,
    visibility_timeout: Option<i64>,
    wait_time_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveAnswer<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    messages: Vec<MessageOut<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct MessageOut<'a> {
    message_id: &'a str,
    receipt_handle: &'a str,
    body: String,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    message_attributes: BTreeMap<&'a str, message_attributes::AttributeOut<'a>>,
    #[serde(rename = "MD5OfMessageAttributes")]
    #[serde(skip_serializing_if = "Option::is_none")]
    md5_of_message_attributes: Option<String>,
}

/// `ReceiveMessage`: up to `MaxNumberOfMessages` (1 to 10), waiting up
/// to `WaitTimeSeconds` for a first one.
pub async fn receive(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: ReceiveRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let system = message_attributes::system_names(
        request
            .attribute_names
            .iter()
            .chain(&request.message_system_attribute_names)
            .flatten(),
    )?;
    let max = request
        .max_number_of_messages
        .map(|n| {
            usize::try_from(n).map_err(|_| invalid("MaxNumberOfMessages", "must be from 1 to 10"))
        })
        .transpose()?;
    let options = ReceiveOptions {
        max,
        wait: seconds(
            request.wait_time_seconds,
            "WaitTimeSeconds",
            MAX_RECEIVE_WAIT,
        )?,
        visibility: seconds(
            request.visibility_timeout,
            "VisibilityTimeout",
            MAX_VISIBILITY,
        )?,
    };
    let delivered: Vec<Delivered> = ctx
        .queues
        .receive(&queue.name(), options)
        .await
        .map_err(from_queue)?;
    let wanted = request.message_attribute_names.unwrap_or_default();
    let messages = delivered
        .iter()
        .map(|m| {
            let body = match std::str::from_utf8(&m.body) {
                Ok(text) => text.to_owned(),
                Err(_) => STANDARD.encode(&m.body),
            };
            let selected = message_attributes::select(&wanted, &m.attributes);
            MessageOut {
                message_id: &m.message_id,
                receipt_handle: &m.receipt_handle,
                md5_of_body: md5::of_body(&body),
                body,
                attributes: message_attributes::system_values(m, &system),
                md5_of_message_attributes: md5::of_attributes(
                    selected.iter().map(|(n, a)| (*n, *a)),
                ),
                message_attributes: message_attributes::to_wire(selected),
            }
        })
        .collect();
    answer(ReceiveAnswer { messages })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandleEntry {
    id: Option<String>,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandleRequest {
    queue_url: Option<String>,
    #[serde(flatten)]
    entry: HandleEntry,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandleBatchRequest {
    queue_url: Option<String>,
    entries: Option<Vec<HandleEntry>>,
}

/// `DeleteMessage`.
pub async fn delete(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: HandleRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let handle = required(request.entry.receipt_handle, "ReceiptHandle")?;
    queue.delete(&handle).await.map_err(from_queue)?;
    answer(serde_json::json!({}))
}

/// `ChangeMessageVisibility`.
pub async fn change_visibility(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: HandleRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let (handle, timeout) = visibility_change(request.entry)?;
    queue
        .change_visibility(&handle, timeout)
        .await
        .map_err(from_queue)?;
    answer(serde_json::json!({}))
}

/// The handle and new timeout of a visibility change.
fn visibility_change(entry: HandleEntry) -> Result<(String, Duration), AwsError> {
    let handle = required(entry.receipt_handle, "ReceiptHandle")?;
    let timeout = seconds(
        entry.visibility_timeout,
        "VisibilityTimeout",
        MAX_VISIBILITY,
    )?;
    Ok((handle, required(timeout, "VisibilityTimeout")?))
}

/// `DeleteMessageBatch`: the entries' messages are deleted together, in
/// order, with one journal record.
pub async fn delete_batch(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: HandleBatchRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let entries = batch(request.entries, |e| e.id.as_deref().unwrap_or(""))?;
    let (ids, handles): (Vec<String>, Vec<Result<String, AwsError>>) = entries
        .into_iter()
        .map(|e| {
            let handle = required(e.receipt_handle, "ReceiptHandle");
            (e.id.unwrap_or_default(), handle)
        })
        .unzip();
    let given: Vec<&str> = handles.iter().filter_map(|h| h.as_deref().ok()).collect();
    let mut deleted = queue.delete_batch(&given).await.into_iter();
    let outcomes = handles.into_iter().map(|handle| {
        handle.and_then(|_| {
            deleted
                .next()
                .unwrap_or_else(|| Err(QueueError::State("no answer".into())))
                .map_err(from_queue)
        })
    });
    batch_answer(ids, outcomes)
}

/// `ChangeMessageVisibilityBatch`: the entries run together, so that their
/// journal records share a group commit.
pub async fn change_visibility_batch(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: HandleBatchRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let entries = batch(request.entries, |e| e.id.as_deref().unwrap_or(""))?;
    let mut ids = Vec::with_capacity(entries.len());
    let mut changes = Vec::with_capacity(entries.len());
    for entry in entries {
        ids.push(entry.id.clone().unwrap_or_default());
        let queue = &queue;
        changes.push(async move {
            let (handle, timeout) = visibility_change(entry)?;
            queue
                .change_visibility(&handle, timeout)
                .await
                .map_err(from_queue)
        });
    }
    batch_answer(ids, join_all(changes).await)
}

/// The answer of a batch whose entries answer only their ids.
fn batch_answer(
    ids: Vec<String>,
    outcomes: impl IntoIterator<Item = Result<(), AwsError>>,
) -> Result<Value, AwsError> {
    let mut result = BatchAnswer::with_capacity(ids.len());
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        result.push(id.clone(), outcome.map(|()| Done { id }));
    }
    answer(result)
}

/// `PurgeQueue`.
pub async fn purge(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: QueueUrl = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    queue.purge().await.map_err(from_queue)?;
    answer(serde_json::json!({}))
}
