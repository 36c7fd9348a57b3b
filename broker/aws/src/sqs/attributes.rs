//! Queue attributes: how SQS's names and string values (`CreateQueue`,
//! `SetQueueAttributes`) map onto a [`QueueConfig`], and what
//! `GetQueueAttributes` answers from a queue's definition and depth.
//! Durations are whole seconds and timestamps seconds since the epoch, as
//! in SQS. The attributes SQS has and tidewire does not (policies, KMS,
//! throughput settings) are never set: asking for them answers nothing, as
//! SQS does for unset ones, and setting them is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tidewire_queues::config::{
    MAX_DELAY, MAX_RECEIVE_WAIT, MAX_VISIBILITY, MESSAGE_BYTES_RANGE, RETENTION_RANGE,
};
use tidewire_queues::{DeadLetterConfig, Queue, QueueConfig};

use super::codec::attribute_names;
use super::context::Context;
use super::errors::{Kind, unknown_attribute};
use crate::AwsError;

/// What `All` answers (those that apply to the queue).
const READABLE: [&str; 14] = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
];

/// SQS's queue attributes that tidewire has no equivalent of.
const ABSENT: [&str; 7] = [
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
];

/// The attributes a `GetQueueAttributes` asks for (`All`, or names).
pub fn requested(names: &[String]) -> Result<BTreeSet<&'static str>, AwsError> {
    attribute_names(names, &READABLE, &ABSENT)
}

/// The values of the `wanted` attributes of `queue`.
pub async fn values(
    ctx: &Context<'_>,
    queue: &Queue,
    wanted: &BTreeSet<&'static str>,
) -> BTreeMap<&'static str, String> {
    let spec = queue.spec();
    let config = &spec.config;
    let depth = if wanted.iter().any(|n| n.starts_with("Approximate")) {
        Some(queue.depth().await)
    } else {
        None
    };
    let secs = |d: Duration| Some(d.as_secs().to_string());
    let mut out = BTreeMap::new();
    for &name in wanted {
        let value = match name {
            "ApproximateNumberOfMessages" => depth.map(|d| d.visible.to_string()),
            "ApproximateNumberOfMessagesNotVisible" => depth.map(|d| d.in_flight.to_string()),
            "ApproximateNumberOfMessagesDelayed" => depth.map(|d| d.delayed.to_string()),
            "CreatedTimestamp" => Some((queue.created_ms() / 1000).to_string()),
            "LastModifiedTimestamp" => Some((queue.modified_ms() / 1000).to_string()),
            "QueueArn" => Some(ctx.arn(spec.name())),
            "VisibilityTimeout" => secs(config.visibility_timeout),
            "MessageRetentionPeriod" => secs(config.retention),
            "DelaySeconds" => secs(config.delay),
            "MaximumMessageSize" => Some(config.max_message_bytes.as_u64().to_string()),
            "ReceiveMessageWaitTimeSeconds" => secs(config.receive_wait),
            "RedrivePolicy" => config.dead_letter.as_ref().map(|dl| {
                serde_json::json!({
                    "deadLetterTargetArn": ctx.arn(&dl.queue),
                    "maxReceiveCount": dl.max_receive_count,
                })
                .to_string()
            }),
            "FifoQueue" => spec.fifo.then(|| "true".to_owned()),
            "ContentBasedDeduplication" => {
                spec.fifo.then(|| config.content_based_dedup.to_string())
            }
            _ => None,
        };
        if let Some(value) = value {
            out.insert(name, value);
        }
    }
    out
}

/// Sets `attributes` (SQS names and values) on `config`; the rest stays.
pub fn apply(
    ctx: &Context<'_>,
    config: &mut QueueConfig,
    attributes: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    let fifo = config.name.ends_with(".fifo");
    for (name, value) in attributes {
        match name.as_str() {
            "VisibilityTimeout" => {
                config.visibility_timeout = seconds(name, value, Duration::ZERO, MAX_VISIBILITY)?;
            }
            "MessageRetentionPeriod" => {
                config.retention = seconds(name, value, RETENTION_RANGE.0, RETENTION_RANGE.1)?;
            }
            "DelaySeconds" => config.delay = seconds(name, value, Duration::ZERO, MAX_DELAY)?,
            "MaximumMessageSize" => {
                let (min, max) = MESSAGE_BYTES_RANGE;
                config.max_message_bytes = ByteSize::b(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| bad_value(name, &format!("must be from {min} to {max}")))?,
                );
            }
            "ReceiveMessageWaitTimeSeconds" => {
                config.receive_wait = seconds(name, value, Duration::ZERO, MAX_RECEIVE_WAIT)?;
            }
            "RedrivePolicy" => config.dead_letter = redrive_policy(ctx, value)?,
            "FifoQueue" => {
                if flag(name, value)? != fifo {
                    return Err(bad_value(
                        name,
                        "a queue is FIFO exactly when its name ends in .fifo",
                    ));
                }
            }
            "ContentBasedDeduplication" if fifo => config.content_based_dedup = flag(name, value)?,
            other if ABSENT.contains(&other) => {
                return Err(Kind::InvalidAttributeName.error(format!(
                    "tidewire does not support the queue attribute {other}"
                )));
            }
            other => return Err(unknown_attribute(other)),
        }
    }
    Ok(())
}

/// `RedrivePolicy` as SQS writes it; empty: none.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedrivePolicy {
    dead_letter_target_arn: String,
    /// A number, or a number in a string (SQS takes both).
    max_receive_count: serde_json::Value,
}

fn redrive_policy(ctx: &Context<'_>, value: &str) -> Result<Option<DeadLetterConfig>, AwsError> {
    if value.is_empty() {
        return Ok(None);
    }
    let fail = |reason: &str| bad_value("RedrivePolicy", reason);
    let policy: RedrivePolicy = serde_json::from_str(value).map_err(|e| {
        fail(&format!(
            "expected {{\"deadLetterTargetArn\": ARN, \"maxReceiveCount\": N}}: {e}"
        ))
    })?;
    let queue = ctx
        .name_of_arn(&policy.dead_letter_target_arn, "deadLetterTargetArn")
        .map_err(|e| fail(&e.message))?;
    let max_receive_count = match &policy.max_receive_count {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .ok_or_else(|| fail("maxReceiveCount must be a whole number"))?;
    Ok(Some(DeadLetterConfig {
        queue: queue.to_owned(),
        max_receive_count,
    }))
}

fn seconds(name: &str, value: &str, min: Duration, max: Duration) -> Result<Duration, AwsError> {
    value
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .filter(|d| (min..=max).contains(d))
        .ok_or_else(|| {
            bad_value(
                name,
                &format!(
                    "must be from {} to {} seconds",
                    min.as_secs(),
                    max.as_secs()
                ),
            )
        })
}

fn flag(name: &str, value: &str) -> Result<bool, AwsError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_value(name, "must be true or false")),
    }
}

fn bad_value(name: &str, reason: &str) -> AwsError {
    Kind::InvalidAttributeValue.error(format!("Invalid value for the parameter {name}: {reason}"))
}
