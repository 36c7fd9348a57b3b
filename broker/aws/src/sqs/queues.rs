//! The queue actions: `CreateQueue`, `DeleteQueue` and
//! `SetQueueAttributes` (which need the `admin` permission),
//! `GetQueueUrl` and `GetQueueAttributes` (which need the queue in the
//! caller's `queues` permission), and `ListQueues` and
//! `ListDeadLetterSourceQueues` (which list only the queues the caller may
//! use).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_queues::QueueConfig;

use super::attributes;
use super::codec::{QueueUrl, answer, page, parse, required};
use super::context::Context;
use super::errors::{Kind, from_queue, invalid, no_such_queue};
use crate::AwsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    queue_name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default, rename = "tags")]
    tags: BTreeMap<String, String>,
}

/// The answer of the actions that answer a queue's URL.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UrlAnswer {
    queue_url: String,
}

/// `CreateQueue`: an existing queue is answered when the attributes given
/// match its own, as SQS does; otherwise `QueueAlreadyExists`.
pub async fn create(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    ctx.must_be_admin("CreateQueue")?;
    let request: CreateRequest = parse(body)?;
    let name = required(request.queue_name, "QueueName")?;
    if !request.tags.is_empty() {
        return Err(invalid("tags", "tidewire does not keep queue tags"));
    }
    if let Ok(existing) = ctx.queues.get(&name) {
        let current = existing.spec().config.clone();
        let mut wanted = current.clone();
        attributes::apply(ctx, &mut wanted, &request.attributes)?;
        if wanted != current {
            return Err(Kind::QueueNameExists.error(format!(
                "A queue named {name:?} already exists with different attributes."
            )));
        }
        return answer(UrlAnswer {
            queue_url: ctx.url(&name),
        });
    }
    let mut config = QueueConfig::named(&name);
    attributes::apply(ctx, &mut config, &request.attributes)?;
    let (queue, _) = ctx.queues.create(config).await.map_err(from_queue)?;
    answer(UrlAnswer {
        queue_url: ctx.url(&queue.name()),
    })
}

/// `DeleteQueue`.
pub async fn delete(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    ctx.must_be_admin("DeleteQueue")?;
    let request: QueueUrl = parse(body)?;
    let name = ctx.queue_name(request.queue_url.as_deref())?;
    ctx.queues.delete(name).await.map_err(from_queue)?;
    answer(serde_json::json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetUrlRequest {
    queue_name: Option<String>,
    #[serde(rename = "QueueOwnerAWSAccountId")]
    owner: Option<String>,
}

/// `GetQueueUrl`.
pub fn get_url(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: GetUrlRequest = parse(body)?;
    let name = required(request.queue_name, "QueueName")?;
    if request.owner.is_some_and(|owner| owner != ctx.account) {
        return Err(no_such_queue());
    }
    let queue = ctx.usable(Some(&name))?;
    answer(UrlAnswer {
        queue_url: ctx.url(&queue.name()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    queue_name_prefix: Option<String>,
    /// `ListDeadLetterSourceQueues` only.
    queue_url: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAnswer {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    queue_urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// `ListQueues`: the queues the caller may use, by name.
pub fn list(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: ListRequest = parse(body)?;
    let prefix = request.queue_name_prefix.unwrap_or_default();
    let names = ctx
        .queues
        .list()
        .into_iter()
        .map(|q| q.name())
        .filter(|name| name.starts_with(&prefix) && ctx.caller.principal.may_use_queue(name));
    let (names, next_token) = page(names, request.max_results, request.next_token.as_deref())?;
    answer(ListAnswer {
        queue_urls: names.iter().map(|n| ctx.url(n)).collect(),
        next_token,
    })
}

/// `ListDeadLetterSourceQueues`'s answer (its list is `queueUrls`, and
/// always there).
#[derive(Debug, Serialize)]
struct SourcesAnswer {
    #[serde(rename = "queueUrls")]
    queue_urls: Vec<String>,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

/// `ListDeadLetterSourceQueues`: the queues whose dead-letter queue this
/// is, among those the caller may use.
pub fn dead_letter_sources(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: ListRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let mut names = ctx.queues.dead_letter_sources(&queue.name());
    names.retain(|name| ctx.caller.principal.may_use_queue(name));
    names.sort();
    let (names, next_token) = page(names, request.max_results, request.next_token.as_deref())?;
    answer(SourcesAnswer {
        queue_urls: names.iter().map(|n| ctx.url(n)).collect(),
        next_token,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttributesRequest {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AttributesAnswer {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<&'static str, String>,
}

/// `GetQueueAttributes`.
pub async fn get_attributes(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    let request: GetAttributesRequest = parse(body)?;
    let queue = ctx.usable(request.queue_url.as_deref())?;
    let wanted = attributes::requested(&request.attribute_names)?;
    answer(AttributesAnswer {
        attributes: attributes::values(ctx, &queue, &wanted).await,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetAttributesRequest {
    queue_url: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
}

/// `SetQueueAttributes`: the queue's definition with the attributes given
/// changed.
pub async fn set_attributes(ctx: &Context<'_>, body: &[u8]) -> Result<Value, AwsError> {
    ctx.must_be_admin("SetQueueAttributes")?;
    let request: SetAttributesRequest = parse(body)?;
    let name = ctx.queue_name(request.queue_url.as_deref())?;
    let changes = required(request.attributes, "Attributes")?;
    let queue = ctx.queues.get(name).map_err(from_queue)?;
    let mut config = queue.spec().config.clone();
    attributes::apply(ctx, &mut config, &changes)?;
    ctx.queues.update(config).await.map_err(from_queue)?;
    answer(serde_json::json!({}))
}
