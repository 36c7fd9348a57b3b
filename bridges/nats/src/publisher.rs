//! The bridge as a fan-out target: [`Publisher`] publishes on the bridge's
//! current connection, for topic subscriptions with a `nats:BRIDGE/SUBJECT`
//! target. It is made with the bridge's config (so the targets can find it
//! before the bridge runs) and follows its sessions: while the bridge is
//! disconnected a publish fails with a retry, and the subscription's pump
//! backs off and tries again.

use std::str::FromStr;
use std::sync::RwLock;

use async_nats::{Client, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tidewire_delivery::SinkError;
use tidewire_targets::NatsLink;

use crate::error::LinkError;

/// Publishes on a bridge's current connection.
#[derive(Debug, Default)]
pub struct Publisher {
    client: RwLock<Option<Client>>,
}

impl Publisher {
    /// The connection to publish on from now on; none while disconnected.
    pub(crate) fn connected(&self, client: Option<Client>) {
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
    }
}

/// The handle is the same whatever its connection: two bridges with equal
/// definitions are equal.
impl PartialEq for Publisher {
    fn eq(&self, _: &Publisher) -> bool {
        true
    }
}

impl NatsLink for Publisher {
    fn publish(
        &self,
        subject: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        let client = self
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Box::pin(async move {
            let client =
                client.ok_or_else(|| SinkError::retry("the NATS bridge is not connected"))?;
            let mut map = HeaderMap::new();
            for (name, value) in &headers {
                // A header NATS cannot carry is left off, as for outbound
                // links.
                if let (Ok(n), Ok(v)) = (HeaderName::from_str(name), HeaderValue::from_str(value)) {
                    map.append(n, v);
                }
            }
            client
                .publish_with_headers(subject, map, body)
                .await
                .map_err(|e| SinkError::retry(LinkError::nats("publish", e)))?;
            client
                .flush()
                .await
                .map_err(|e| SinkError::retry(LinkError::nats("flush", e)))
        })
    }
}
