//! A subscription on the delivery layer: [`SubscriptionSink`] is the
//! [`Sink`] its pump delivers through. It adds only what is the
//! subscription's own: the filter (a look-up in the message's matched
//! list), the envelope, the delivery policy's retries and the dead
//! letters. Reading, ordering, the cursor, backoff between sessions, lag
//! and losses are the pump's.
//!
//! Each message is delivered on a task of its own, so up to the pump's
//! in-flight limit run at once; the pump awaits them in order and commits
//! past those that finished. A task is aborted when its session ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tidewire_delivery::{Sent, Sink, SinkError};
use tidewire_queues::Attribute;
use tidewire_storage::Record;
use tidewire_targets::{Delivery, Target};
use tokio::task::JoinHandle;

use crate::config::DeliveryPolicy;
use crate::envelope::{self, Naming};
use crate::message::{self, Stored};
use crate::metrics::SubscriptionStatus;

/// The content type of an envelope, as SNS sends it.
const ENVELOPE_CONTENT_TYPE: &str = "text/plain; charset=UTF-8";

/// What a subscription does with a message; rebuilt when it changes.
#[derive(Debug)]
pub(crate) struct Shape {
    pub topic: String,
    pub subscription: String,
    /// The id its filter is compiled under, when it has a filter.
    pub filter_id: Option<u64>,
    pub raw: bool,
    pub naming: Naming,
    pub target: Arc<dyn Target>,
    pub dead_letter: Option<Arc<dyn Target>>,
    pub policy: Option<DeliveryPolicy>,
}

impl Shape {
    /// The delivery of `stored`, read from `record`.
    fn delivery(&self, stored: Stored, record: &Record) -> Delivery {
        let message = &record.message;
        let mut headers = vec![
            (
                "x-amz-sns-message-type".to_owned(),
                "Notification".to_owned(),
            ),
            ("x-amz-sns-message-id".to_owned(), stored.header.id.clone()),
            (
                "x-amz-sns-topic-arn".to_owned(),
                self.naming.topic_arn(&self.topic),
            ),
            (
                "x-amz-sns-subscription-arn".to_owned(),
                self.naming
                    .subscription_arn(&self.topic, &self.subscription),
            ),
        ];
        let (body, content_type, attributes) = if self.raw {
            headers.push(("x-amz-sns-rawdelivery".to_owned(), "true".to_owned()));
            (
                stored.body.clone(),
                message.properties.content_type.clone(),
                stored.header.attributes.clone(),
            )
        } else {
            (
                envelope::notification(
                    &self.naming,
                    &self.topic,
                    &self.subscription,
                    &stored,
                    record.timestamp_ms,
                ),
                Some(ENVELOPE_CONTENT_TYPE.to_owned()),
                Default::default(),
            )
        };
        Delivery {
            message_id: stored.header.id,
            topic: message.topic.clone(),
            subject: stored.header.subject,
            body,
            content_type,
            attributes,
            headers,
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// The sink of one subscription's pump.
pub(crate) struct SubscriptionSink {
    pub shape: Arc<Shape>,
    pub status: Arc<SubscriptionStatus>,
}

impl Sink for SubscriptionSink {
    type Ack = Attempts;

    async fn send(&mut self, record: &Record) -> Result<Sent<Attempts>, SinkError> {
        let payload = &record.message.payload;
        if let Some(id) = self.shape.filter_id
            && !message::matched(payload, id).map_err(SinkError::rejected)?
        {
            return Ok(Sent::Skipped);
        }
        let stored = message::decode(payload).map_err(SinkError::rejected)?;
        let delivery = self.shape.delivery(stored, record);
        let task = tokio::spawn(attempt(
            Arc::clone(&self.shape),
            Arc::clone(&self.status),
            delivery,
        ));
        Ok(Sent::Pending(Attempts(task)))
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Delivers one message under the subscription's policy: once without a
/// policy (a failure ends the pump's session, which retries with backoff
/// until retention), else up to `retries + 1` times with the policy's
/// waits; then to the dead letters.
async fn attempt(
    shape: Arc<Shape>,
    status: Arc<SubscriptionStatus>,
    delivery: Delivery,
) -> Result<(), SinkError> {
    let mut attempts = 0;
    let failure = loop {
        attempts += 1;
        let error = match shape.target.deliver(delivery.clone()).await {
            Ok(()) => {
                status.delivered();
                return Ok(());
            }
            Err(error) => error,
        };
        status.failed(&error.to_string());
        match (&error, &shape.policy) {
            (SinkError::Retry { .. }, None) => return Err(error),
            (SinkError::Retry { .. }, Some(policy)) if attempts <= policy.retries => {
                status.retried();
                tokio::time::sleep(policy.delay(attempts)).await;
            }
            _ => break error,
        }
    };
    let reason = match &failure {
        SinkError::Retry { reason } | SinkError::Rejected { reason } => reason.clone(),
    };
    let Some(dead_letter) = &shape.dead_letter else {
        return Err(SinkError::rejected(format!(
            "{reason} (after {attempts} attempts, no dead letters)"
        )));
    };
    dead_letter
        .deliver(dead_letter_delivery(&shape, delivery, &reason, attempts))
        .await?;
    status.dead_lettered();
    Ok(())
}

/// A failed message as its dead letter: the same body (raw or envelope)
/// and attributes, plus why and after how many attempts.
fn dead_letter_delivery(
    shape: &Shape,
    mut delivery: Delivery,
    reason: &str,
    attempts: u32,
) -> Delivery {
    let string = |data_type: &str, value: String| Attribute {
        data_type: data_type.to_owned(),
        string: Some(value),
        binary: None,
    };
    let attributes = &mut delivery.attributes;
    attributes.insert(
        "tidewire.failure".to_owned(),
        string("String", reason.to_owned()),
    );
    attributes.insert(
        "tidewire.attempts".to_owned(),
        string("Number", attempts.to_string()),
    );
    attributes.insert(
        "tidewire.subscription".to_owned(),
        string(
            "String",
            shape
                .naming
                .subscription_arn(&shape.topic, &shape.subscription),
        ),
    );
    delivery
}

/// One message's delivery task, as the pump awaits it; dropping it aborts
/// the task.
pub(crate) struct Attempts(JoinHandle<Result<(), SinkError>>);

impl Future for Attempts {
    type Output = Result<(), SinkError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| Err(SinkError::retry(format!("delivery task: {e}"))))
        })
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        self.0.abort();
    }
}
