//! The MQTT side of the publish path: once a message is durable in the
//! streams, keep it as retained when flagged, and queue it for every
//! matching subscriber. Installed into the core `Broker`, so messages from
//! every ingest (HTTP, WebSocket, NATS, queries) reach MQTT subscribers.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tidewire_core::{Fanout, Message, StorageError};

use crate::retained::RetainedStore;
use crate::router::Router;

/// Routes durable messages to subscribers and the retained store.
#[derive(Debug)]
pub struct MqttFanout {
    router: Arc<Router>,
    retained: Arc<RetainedStore>,
}

impl MqttFanout {
    /// A fan-out over `router` and `retained`.
    pub fn new(router: Arc<Router>, retained: Arc<RetainedStore>) -> MqttFanout {
        MqttFanout { router, retained }
    }
}

impl Fanout for MqttFanout {
    fn retain(&self, message: Arc<Message>) -> BoxFuture<'static, Result<(), StorageError>> {
        let retained = Arc::clone(&self.retained);
        Box::pin(async move { retained.set(message).await })
    }

    fn deliver(&self, message: &Arc<Message>) {
        for (session, delivery) in self.router.route(message) {
            session.enqueue(delivery);
        }
    }
}
