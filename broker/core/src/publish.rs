//! The one publish path every ingest shares (MQTT, HTTP, WebSocket, NATS,
//! continuous queries): validate, append to every stream that keeps the
//! topic, and answer once all of those appends are durable.

use std::sync::Arc;

use futures_util::future::join_all;
use tidewire_storage::Message;

use crate::error::{PublishError, RejectReason};
use crate::metrics::{PublishMetrics, RejectLabel, SourceLabel};
use crate::streams::Streams;
use crate::topic;

/// Default largest payload accepted.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Default longest topic name accepted.
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 4096;

/// Where a message entered tidewire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/v1/publish`.
    Http,
    /// An MQTT client, over TCP or WebSocket.
    Mqtt,
    /// The WebSocket JSON protocol.
    WebSocket,
    /// The NATS bridge, inbound. Messages from here are never sent back to
    /// NATS.
    Nats,
    /// A continuous query's results.
    Query,
}

impl Source {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Mqtt => "mqtt",
            Source::WebSocket => "websocket",
            Source::Nats => "nats",
            Source::Query => "query",
        }
    }
}

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
    pub stream: String,
    /// The record's offset in it.
    pub offset: u64,
    /// The record's broker timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// A cheap, cloneable handle to the broker core.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    streams: Streams,
    limits: Limits,
    metrics: PublishMetrics,
}

impl Broker {
    /// A broker over open streams.
    pub fn new(streams: Streams, limits: Limits, metrics: PublishMetrics) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                streams,
                limits,
                metrics,
            }),
        }
    }

    /// The open streams.
    pub fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    /// The input limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Publishes a message. Resolves once every stream that keeps its topic
    /// has made it durable under that stream's fsync policy; the result
    /// lists where it was stored (empty when no stream keeps the topic).
    pub async fn publish(
        &self,
        source: Source,
        message: Message,
    ) -> Result<Vec<Stored>, PublishError> {
        let outcome = self.store(message).await;
        let m = &self.inner.metrics;
        match &outcome {
            Ok(_) => {
                m.accepted
                    .get_or_create(&SourceLabel {
                        source: source.label(),
                    })
                    .inc();
            }
            Err(e) => self.count_rejected(source, e.reason()),
        }
        outcome
    }

    /// Counts a message refused before it reached [`Broker::publish`], such
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

    async fn store(&self, message: Message) -> Result<Vec<Stored>, PublishError> {
        let limits = self.inner.limits;
        topic::validate_name(&message.topic, limits.max_topic_bytes)?;
        if message.payload.len() > limits.max_payload_bytes {
            return Err(PublishError::PayloadTooLarge {
                size: message.payload.len(),
                max: limits.max_payload_bytes,
            });
        }
        let message = Arc::new(message);
        let appends = self.inner.streams.keeping(&message.topic).map(|stream| {
            let message = Arc::clone(&message);
            async move { (stream, stream.log.append(message).await) }
        });
        join_all(appends)
            .await
            .into_iter()
            .map(|(stream, result)| match result {
                Ok(appended) => Ok(Stored {
                    stream: stream.spec.name.clone(),
                    offset: appended.offset,
                    timestamp_ms: appended.timestamp_ms,
                }),
                Err(source) => Err(PublishError::Storage {
                    stream: stream.spec.name.clone(),
                    source,
                }),
            })
            .collect()
    }
}
