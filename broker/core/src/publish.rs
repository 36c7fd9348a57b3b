//! The one publish path every ingest shares (MQTT, HTTP, WebSocket, NATS,
//! continuous queries): validate, append to every stream that keeps the
//! topic, and answer once all of those appends are durable.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use smallvec::SmallVec;
use tidewire_storage::{AppendTicket, Message, StorageError};

use crate::error::{PublishError, RejectReason};
use crate::metrics::{PublishMetrics, RejectLabel};
use crate::source::Source;
use crate::streams::Streams;
use crate::topic;

/// Default largest payload accepted.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Default longest topic name accepted.
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 4096;

/// Input limits of the publish path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, in bytes.
    pub max_payload_bytes: usize,
    /// Longest topic name, in bytes.
    pub max_topic_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_topic_bytes: DEFAULT_MAX_TOPIC_BYTES,
        }
    }
}

/// Where one stream stored a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The stream's name.
    pub stream: Arc<str>,
    /// The record's offset in it.
    pub offset: u64,
    /// The record's broker timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Receives every published message once it is durable in the streams:
/// the MQTT router (live subscribers, offline queues) and the retained
/// store. Kept behind a trait so the core does not depend on MQTT.
pub trait Fanout: Send + Sync + 'static {
    /// Keeps a message published with the RETAIN flag. Resolves once it is
    /// durable, so the publisher's ack can wait for it; called before
    /// [`Fanout::deliver`].
    fn retain(&self, message: Arc<Message>) -> BoxFuture<'static, Result<(), StorageError>>;

    /// Hands `message` to live subscribers and offline queues.
    fn deliver(&self, message: &Arc<Message>);
}

/// The appends of one publish: almost always one stream, so kept inline.
type Appends = SmallVec<[AppendTicket; 2]>;

/// A publish queued in a queue or a topic; resolves once it is durable
/// there.
pub type QueuedAppend = BoxFuture<'static, Result<(), PublishError>>;

/// Takes published messages into the buffers fed by their topic: queues,
/// and the fan-out topics. Kept behind a trait so the core depends on
/// neither.
pub trait Enqueue: Send + Sync + 'static {
    /// True when some buffer takes messages published to `topic` from
    /// `source`; cheap, asked on every publish.
    fn takes(&self, topic: &str, source: Source) -> bool;

    /// Checks `message` against every buffer that takes its topic and
    /// queues it in each; the futures resolve once it is durable there.
    fn enqueue<'a>(
        &'a self,
        message: &'a Arc<Message>,
        source: Source,
    ) -> BoxFuture<'a, Result<Vec<QueuedAppend>, PublishError>>;
}

/// A cheap, cloneable handle to the broker core.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("streams", &self.inner.streams)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

struct Inner {
    streams: Streams,
    limits: Limits,
    metrics: PublishMetrics,
    fanout: OnceLock<Arc<dyn Fanout>>,
    routes: OnceLock<Vec<Arc<dyn Enqueue>>>,
}

/// A publish that has been validated and queued in every stream that keeps
/// its topic, in order. [`PublishTicket::durable`] waits for it.
#[must_use = "a publish is only acknowledged once the ticket resolves"]
pub struct PublishTicket {
    broker: Broker,
    source: Source,
    message: Arc<Message>,
    appends: Appends,
    queued: Vec<QueuedAppend>,
}

impl PublishTicket {
    /// Waits until the message is durable in every stream, then hands it to
    /// the fan-out (subscribers, retained store); resolves when all of that
    /// is done, with where it was stored. Tickets from one caller resolve in
    /// the order submitted.
    pub async fn durable(self) -> Result<Vec<Stored>, PublishError> {
        let mut stored = Vec::with_capacity(self.appends.len());
        self.complete(Some(&mut stored)).await?;
        Ok(stored)
    }

    /// [`PublishTicket::durable`] for callers that need only the outcome
    /// (MQTT acks), without collecting where it was stored.
    pub async fn done(self) -> Result<(), PublishError> {
        self.complete(None).await
    }

    async fn complete(self, stored: Option<&mut Vec<Stored>>) -> Result<(), PublishError> {
        let PublishTicket {
            broker,
            source,
            message,
            appends,
            queued,
        } = self;
        let outcome = broker.finish(message, appends, queued, stored).await;
        match &outcome {
            Ok(()) => {
                broker.inner.metrics.accepted(source).inc();
            }
            Err(e) => broker.count_rejected(source, e.reason()),
        }
        outcome
    }
}

impl Broker {
    /// A broker over open streams.
    pub fn new(streams: Streams, limits: Limits, metrics: PublishMetrics) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                streams,
                limits,
                metrics,
                fanout: OnceLock::new(),
                routes: OnceLock::new(),
            }),
        }
    }

    /// Installs the fan-out that receives every durable message. It can be
    /// set once; returns false if one was already set.
    pub fn set_fanout(&self, fanout: Arc<dyn Fanout>) -> bool {
        self.inner.fanout.set(fanout).is_ok()
    }

    /// Installs the buffers that take published messages by topic (the
    /// queues, the fan-out topics), asked in this order. They can be set
    /// once; returns false if they were already set.
    pub fn set_routes(&self, routes: Vec<Arc<dyn Enqueue>>) -> bool {
        self.inner.routes.set(routes).is_ok()
    }

    /// The open streams.
    pub fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    /// The input limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Publishes a message: [`Broker::submit`], then
    /// [`PublishTicket::durable`]. The result lists where it was stored
    /// (empty when no stream keeps the topic).
    pub async fn publish(
        &self,
        source: Source,
        message: Message,
    ) -> Result<Vec<Stored>, PublishError> {
        self.submit(source, message).await?.durable().await
    }

    /// Validates a message and queues it in every stream that keeps its
    /// topic. Waits only while a stream's queue is full (backpressure).
    pub async fn submit(
        &self,
        source: Source,
        message: Message,
    ) -> Result<PublishTicket, PublishError> {
        let queued = self.queue(message, source).await;
        match queued {
            Ok((message, appends, queued)) => Ok(PublishTicket {
                broker: self.clone(),
                source,
                message,
                appends,
                queued,
            }),
            Err(e) => {
                self.count_rejected(source, e.reason());
                Err(e)
            }
        }
    }

    /// Counts a message refused before it reached [`Broker::submit`], such
    /// as a body over the HTTP limit, so every refusal shows in metrics.
    pub fn count_rejected(&self, source: Source, reason: RejectReason) {
        self.inner
            .metrics
            .rejected
            .get_or_create(&RejectLabel {
                source: source.label(),
                reason: reason.label(),
            })
            .inc();
    }

    /// Waits for every append (all are queued already, so waiting in turn
    /// takes as long as waiting together), then fans the message out.
    async fn finish(
        &self,
        message: Arc<Message>,
        appends: Appends,
        queued: Vec<QueuedAppend>,
        mut stored: Option<&mut Vec<Stored>>,
    ) -> Result<(), PublishError> {
        for ticket in appends {
            let stream = Arc::clone(ticket.stream());
            let appended = ticket.await.map_err(|source| PublishError::Storage {
                stream: stream.to_string(),
                source,
            })?;
            if let Some(stored) = stored.as_deref_mut() {
                stored.push(Stored {
                    stream,
                    offset: appended.offset,
                    timestamp_ms: appended.timestamp_ms,
                });
            }
        }
        for append in queued {
            append.await?;
        }
        if let Some(fanout) = self.inner.fanout.get() {
            if message.retain {
                fanout
                    .retain(Arc::clone(&message))
                    .await
                    .map_err(PublishError::Retained)?;
            }
            fanout.deliver(&message);
        }
        Ok(())
    }

    async fn queue(
        &self,
        message: Message,
        source: Source,
    ) -> Result<(Arc<Message>, Appends, Vec<QueuedAppend>), PublishError> {
        let limits = self.inner.limits;
        topic::validate_name(&message.topic, limits.max_topic_bytes)?;
        if message.payload.len() > limits.max_payload_bytes {
            return Err(PublishError::PayloadTooLarge {
                size: message.payload.len(),
                max: limits.max_payload_bytes,
            });
        }
        let message = Arc::new(message);
        // Queues and topics first: one that refuses the message (over its
        // size limit) refuses the publish before any stream has stored it.
        let mut queued = Vec::new();
        for route in self.inner.routes.get().into_iter().flatten() {
            if route.takes(&message.topic, source) {
                queued.extend(route.enqueue(&message, source).await?);
            }
        }
        let mut appends = Appends::new();
        let streams = self.inner.streams.snapshot();
        for stream in streams.keeping(&message.topic) {
            let ticket = stream
                .log
                .enqueue(Arc::clone(&message))
                .await
                .map_err(|source| PublishError::Storage {
                    stream: stream.spec.name.clone(),
                    source,
                })?;
            appends.push(ticket);
        }
        Ok((message, appends, queued))
    }
}
