//! tidewire's WebSocket gateway on the HTTP listener:
//!
//! - `/mqtt` ([`mqtt`]): MQTT 3.1.1 and 5.0 over WebSocket, served by the
//!   same session layer as the TCP listener;
//! - `/ws` ([`socket`]): the JSON protocol for browsers and scripts
//!   ([`frames`]): publish, subscribe, one-shot SQL, continuous-query
//!   watches and queue consumers (send, receive, delete), authenticated
//!   like MQTT ([`auth`]).
//!
//! Wiring: build a [`Gateway`] from the MQTT context, the SQL engine and
//! the queues, merge [`Gateway::router`] into the HTTP router, and call
//! [`Gateway::drain`] at shutdown.

pub mod auth;
pub mod config;
pub mod frames;
pub mod metrics;
pub mod mqtt;
mod socket;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use tidewire_core::Broker;
use tidewire_mqtt::Context;
use tidewire_queues::Queues;
use tidewire_sql::{ContinuousQueries, SqlEngine};
use tidewire_topics::Topics;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{WebSocketConfig, WebSocketSettings};
pub use metrics::WsMetrics;

/// Bytes a socket reads at a time: small, so thousands of idle sockets
/// stay cheap (tungstenite allocates this up front per socket).
const READ_BUFFER: usize = 4 * 1024;
/// Bytes buffered before a write reaches the socket; a flush sends them
/// regardless.
const WRITE_BUFFER: usize = 64 * 1024;
/// Most bytes buffered for a peer that does not read.
pub(crate) const MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;

/// What both endpoints share.
#[derive(Debug)]
pub struct Gateway {
    mqtt: Arc<Context>,
    sql: SqlEngine,
    queries: ContinuousQueries,
    queues: Queues,
    topics: Topics,
    settings: WebSocketSettings,
    metrics: WsMetrics,
    shutdown: CancellationToken,
    sockets: TaskTracker,
    socket_slots: Arc<Semaphore>,
    next_socket: AtomicU64,
}

/// What the sockets reach: MQTT sessions, SQL, queues and topics.
#[derive(Debug, Clone)]
pub struct Services {
    /// The MQTT session layer (`/mqtt`, and `/ws` subscriptions).
    pub mqtt: Arc<Context>,
    /// SQL for `query`.
    pub sql: SqlEngine,
    /// Continuous queries for `watch`.
    pub queries: ContinuousQueries,
    /// Queues for the queue ops.
    pub queues: Queues,
    /// Fan-out topics for `topic_publish`.
    pub topics: Topics,
}

impl Gateway {
    /// A gateway over `services` whose sockets close when `shutdown` is
    /// cancelled.
    pub fn new(
        services: Services,
        settings: WebSocketSettings,
        metrics: WsMetrics,
        shutdown: CancellationToken,
    ) -> Arc<Gateway> {
        let Services {
            mqtt,
            sql,
            queries,
            queues,
            topics,
        } = services;
        Arc::new(Gateway {
            socket_slots: Arc::new(Semaphore::new(settings.max_sockets)),
            mqtt,
            sql,
            queries,
            queues,
            topics,
            settings,
            metrics,
            shutdown,
            sockets: TaskTracker::new(),
            next_socket: AtomicU64::new(1),
        })
    }

    /// The routes `/mqtt` and `/ws`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/mqtt", get(mqtt::upgrade))
            .route("/ws", get(socket::upgrade))
            .with_state(Arc::clone(self))
    }

    /// Waits up to `deadline` for `/ws` sockets to close after shutdown
    /// (`/mqtt` connections are drained with the MQTT server's). Returns
    /// false when some did not.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.sockets.close();
        tokio::time::timeout(deadline, self.sockets.wait())
            .await
            .is_ok()
    }

    fn broker(&self) -> &Broker {
        &self.mqtt.broker
    }

    /// Applies the buffer sizes and limits every socket gets.
    fn configure(&self, ws: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
        ws.read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .max_message_size(max_message)
            .max_frame_size(max_message)
    }
}

/// Whether a WebSocket read failed because the peer sent a frame or
/// message over the configured limit; the socket must then be closed with
/// status 1009 (Message Too Big).
pub(crate) fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
