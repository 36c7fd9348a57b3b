//! The targets inside tidewire: a queue ([`QueueTarget`]), an MQTT topic
//! ([`MqttTarget`]) and a stream ([`StreamTarget`]). Each answers once the
//! message is durable there.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tidewire_core::{Broker, Message, Properties, PublishError, Source};
use tidewire_queues::{Outgoing, QueueError, Queues};

use crate::{Delivery, SinkError, Target};

/// The client id messages delivered by fan-out carry.
pub const CLIENT_ID: &str = "tidewire-fanout";

/// Sends to a tidewire queue. A FIFO queue gets the message's topic as its
/// group and the message id as its deduplication id, so a redelivery after
/// a crash is dropped by the queue within its 5-minute window.
#[derive(Debug, Clone)]
pub struct QueueTarget {
    queues: Queues,
    name: String,
}

impl QueueTarget {
    /// Sends to queue `name` of `queues`.
    pub fn new(queues: Queues, name: String) -> QueueTarget {
        QueueTarget { queues, name }
    }
}

impl Target for QueueTarget {
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>> {
        let (queues, name) = (self.queues.clone(), self.name.clone());
        Box::pin(async move {
            let queue = queues.get(&name).map_err(SinkError::retry)?;
            let fifo = queue.spec().fifo;
            let out = Outgoing {
                body: delivery.body,
                attributes: delivery.attributes,
                delay: None,
                group: fifo.then(|| delivery.topic.clone()),
                dedup_id: fifo.then(|| delivery.message_id.clone()),
                sender: CLIENT_ID.to_owned(),
            };
            match queue.send(out).await {
                Ok(_) => Ok(()),
                Err(e) => Err(queue_error(&name, &e)),
            }
        })
    }
}

fn queue_error(name: &str, e: &QueueError) -> SinkError {
    let reason = format!("queue {name:?}: {e}");
    if e.is_user_error() {
        SinkError::rejected(reason)
    } else {
        SinkError::retry(reason)
    }
}

/// Publishes over MQTT, through the broker's publish path, so subscribers,
/// streams and queues all see it. Such a publish is never fed into a
/// fan-out topic again (`Source::Topic`), so subscriptions cannot loop.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    broker: Broker,
    topic: Option<String>,
}

impl MqttTarget {
    /// Publishes to `topic`, or to each message's own topic.
    pub fn new(broker: Broker, topic: Option<String>) -> MqttTarget {
        MqttTarget { broker, topic }
    }
}

impl Target for MqttTarget {
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>> {
        let broker = self.broker.clone();
        let topic = self.topic.clone().unwrap_or_else(|| delivery.topic.clone());
        Box::pin(async move {
            let message = message(topic, &delivery, 1);
            broker
                .publish(Source::Topic, message)
                .await
                .map(drop)
                .map_err(|e| publish_error(&e))
        })
    }
}

fn publish_error(e: &PublishError) -> SinkError {
    if e.is_client_error() {
        SinkError::rejected(e)
    } else {
        SinkError::retry(e)
    }
}

/// Appends to a stream directly, whatever its topic filters.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    broker: Broker,
    name: String,
}

impl StreamTarget {
    /// Appends to stream `name`.
    pub fn new(broker: Broker, name: String) -> StreamTarget {
        StreamTarget { broker, name }
    }
}

impl Target for StreamTarget {
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>> {
        let (broker, name) = (self.broker.clone(), self.name.clone());
        Box::pin(async move {
            let stream = broker
                .streams()
                .get(&name)
                .ok_or_else(|| SinkError::retry(format!("no stream named {name:?}")))?;
            let message = Arc::new(message(delivery.topic.clone(), &delivery, 1));
            stream
                .log
                .append(message)
                .await
                .map(drop)
                .map_err(|e| SinkError::retry(format!("stream {name:?}: {e}")))
        })
    }
}

/// The MQTT message for a delivery: string attributes become user
/// properties.
fn message(topic: String, delivery: &Delivery, qos: u8) -> Message {
    Message {
        topic,
        client_id: CLIENT_ID.to_owned(),
        qos,
        retain: false,
        payload: delivery.body.clone(),
        properties: Properties {
            user: delivery
                .string_attributes()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            content_type: delivery.content_type.clone(),
            ..Properties::default()
        },
    }
}
