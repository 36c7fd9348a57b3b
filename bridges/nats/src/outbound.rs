//! Outbound links: tidewire stream -> NATS, at least once.
//!
//! A link is a [`tidewire_delivery::Pump`] (the durable cursor, the tail,
//! in-flight acknowledgements, commits and loss counting) driving
//! [`NatsSink`], which holds only what is NATS's own: it publishes each
//! record whose topic matches `from` (records bridged in from NATS are
//! skipped: see [`crate::is_from_nats`]) to the mapped subject, with the
//! MQTT properties as headers. JetStream publishes are pending until
//! their PubAck; core NATS publishes are confirmed by a flush. After a
//! crash the records after the committed cursor are sent again, and
//! JetStream drops those repeats by their `Nats-Msg-Id`
//! (`<node>:<stream>:<offset>`; the node name keeps ids of different edge
//! nodes apart in a shared stream).

use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::Client;
use async_nats::jetstream::{self, context::PublishAckFuture};
use futures_util::FutureExt;
use tidewire_bridge::{BridgeError, LinkState};
use tidewire_core::{Record, StreamHold};
use tidewire_delivery::{Cursor, Pump, PumpConfig, Sent, Sink, SinkError};
use tokio_util::sync::CancellationToken;

use crate::config::{Outbound, Start};
use crate::error::LinkError;
use crate::headers;

/// One outbound link and its position, kept across sessions.
#[derive(Debug)]
pub struct OutboundLink {
    spec: Outbound,
    stream: StreamHold,
    node: String,
    state: Arc<LinkState>,
    pump: Pump,
}

impl OutboundLink {
    /// Opens the link's cursor (`cursor_dir/outbound-<index>.json`), or
    /// starts one per `spec.start`.
    pub fn open(
        spec: Outbound,
        stream: StreamHold,
        cursor_dir: &std::path::Path,
        index: usize,
        node: &str,
        state: Arc<LinkState>,
    ) -> Result<OutboundLink, BridgeError> {
        let path = cursor_dir.join(format!("outbound-{index}.json"));
        // The link's identity: a changed stream, filter or subject starts
        // afresh.
        let cursor = Cursor::new(
            path.clone(),
            [
                ("stream", stream.stream().spec.name.clone()),
                ("from", spec.route.source().to_string()),
                ("subject", spec.route.target().to_string()),
            ],
        );
        let config = PumpConfig {
            max_in_flight: spec.max_in_flight,
            ack_timeout: spec.ack_timeout,
            ..PumpConfig::default()
        };
        let start = match spec.start {
            Start::Latest => tidewire_delivery::Start::Latest,
            Start::Earliest => tidewire_delivery::Start::Earliest,
        };
        let pump = Pump::open(
            stream.stream().log.clone(),
            cursor,
            start,
            config,
            Arc::clone(&state) as _,
        )
        .map_err(|e| match e {
            tidewire_delivery::DeliveryError::Cursor { path, source } => BridgeError::Io {
                action: "use cursor file",
                path,
                source,
            },
            other => BridgeError::Io {
                action: "use cursor file",
                path,
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        Ok(OutboundLink {
            spec,
            stream,
            node: node.to_owned(),
            state,
            pump,
        })
    }

    /// Its status board and the stream it reads, for lag tracking.
    pub fn watch(&self) -> (Arc<LinkState>, tidewire_core::Stream) {
        (Arc::clone(&self.state), self.stream.stream().clone())
    }

    /// Sends from the cursor until `ended` is cancelled or something
    /// fails. Acknowledged progress is committed before returning.
    pub async fn run(
        &mut self,
        client: &Client,
        ended: &CancellationToken,
    ) -> Result<(), LinkError> {
        let js = jetstream::ContextBuilder::new()
            .ack_timeout(self.spec.ack_timeout)
            .max_ack_inflight(self.spec.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let mut sink = NatsSink {
            client,
            js,
            spec: &self.spec,
            node: &self.node,
            stream: &self.stream.stream().spec.name,
            state: &self.state,
        };
        Ok(self.pump.run(&mut sink, ended).await?)
    }
}

/// Publishes a link's records to NATS, for the pump.
struct NatsSink<'a> {
    client: &'a Client,
    js: jetstream::Context,
    spec: &'a Outbound,
    node: &'a str,
    stream: &'a str,
    state: &'a LinkState,
}

/// A JetStream PubAck on its way.
type PubAck = futures_util::future::Map<
    <PublishAckFuture as IntoFuture>::IntoFuture,
    fn(
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Result<(), SinkError>,
>;

impl Sink for NatsSink<'_> {
    type Ack = PubAck;

    async fn send(&mut self, record: &Record) -> Result<Sent<PubAck>, SinkError> {
        let message = &record.message;
        if crate::is_from_nats(message) || !self.spec.route.matches(&message.topic) {
            return Ok(Sent::Skipped);
        }
        let subject = self
            .spec
            .route
            .map(&message.topic)
            .map_err(|e| SinkError::rejected(format!("cannot be sent to NATS: {e}")))?;
        let id = self
            .spec
            .jetstream
            .then(|| format!("{}:{}:{}", self.node, self.stream, record.offset));
        let (headers, dropped) = headers::to_headers(message, id.as_deref());
        if dropped > 0 {
            self.state.error(format!(
                "offset {}: {dropped} properties NATS headers cannot carry",
                record.offset
            ));
        }
        let payload = message.payload.clone();
        if self.spec.jetstream {
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| SinkError::retry(LinkError::nats("JetStream publish", e)))?;
            let to_outcome: fn(_) -> _ = |acked: Result<_, _>| {
                acked
                    .map(drop)
                    .map_err(|e| SinkError::retry(LinkError::nats("JetStream PubAck", e)))
            };
            Ok(Sent::Pending(ack.into_future().map(to_outcome)))
        } else {
            self.client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| SinkError::retry(LinkError::nats("publish", e)))?;
            Ok(Sent::Accepted)
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.client
            .flush()
            .await
            .map_err(|e| SinkError::retry(LinkError::nats("flush", e)))
    }
}
