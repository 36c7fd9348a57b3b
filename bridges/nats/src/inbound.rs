//! Inbound links: NATS -> tidewire.
//!
//! A core subscription stores what arrives while connected (core NATS is
//! at most once). A JetStream durable pull consumer acknowledges each
//! message only after [`Broker::publish`] resolved, i.e. once it is
//! durable in every stream that keeps its topic; a failure leaves it
//! unacknowledged for JetStream to redeliver. Bridged messages carry the
//! client id `$nats:<bridge>` so outbound links never send them back.

use std::sync::Arc;

use async_nats::Client;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use tidewire_bridge::LinkState;
use tidewire_core::{Broker, Message, Source};
use tokio_util::sync::CancellationToken;

use crate::config::Inbound;
use tidewire_auth::{Auth, LiveAcl, Principal};

use crate::error::LinkError;
use crate::headers;

/// One inbound link.
#[derive(Debug)]
pub struct InboundLink {
    spec: Inbound,
    broker: Broker,
    client_id: String,
    state: Arc<LinkState>,
    /// The rules of the user it publishes as (`publish_as`), following
    /// reloads; none: it may publish anywhere.
    acl: Option<LiveAcl>,
}

/// What became of one inbound message.
enum Stored {
    /// Durable in tidewire.
    Yes,
    /// Refused for good (e.g. a topic tidewire cannot take): counted.
    Refused,
}

impl InboundLink {
    /// An inbound link of the bridge `bridge`, publishing as `user`
    /// (under its rules) when given.
    pub fn new(
        spec: Inbound,
        broker: Broker,
        bridge: &str,
        state: Arc<LinkState>,
        user: Option<(Auth, Principal)>,
    ) -> InboundLink {
        let client_id = crate::client_id(bridge);
        InboundLink {
            acl: user.map(|(auth, principal)| LiveAcl::new(auth, principal, &client_id)),
            spec,
            broker,
            client_id,
            state,
        }
    }

    /// Receives until `ended` is cancelled or something fails.
    pub async fn run(&self, client: &Client, ended: &CancellationToken) -> Result<(), LinkError> {
        let outcome = match &self.spec.durable {
            None => self.run_core(client, ended).await,
            Some(durable) => self.run_durable(client, durable, ended).await,
        };
        if let Err(e) = &outcome {
            self.state.error(e);
        }
        outcome
    }

    async fn run_core(&self, client: &Client, ended: &CancellationToken) -> Result<(), LinkError> {
        let mut sub = client
            .subscribe(self.spec.route.source().to_string())
            .await
            .map_err(|e| LinkError::nats("subscribe", e))?;
        loop {
            let message = tokio::select! {
                m = sub.next() => m,
                () = ended.cancelled() => return Ok(()),
            };
            let Some(message) = message else {
                return Err(LinkError::nats("subscription", "ended"));
            };
            self.store(&message.subject, message.payload, message.headers.as_ref())
                .await?;
        }
    }

    async fn run_durable(
        &self,
        client: &Client,
        durable: &str,
        ended: &CancellationToken,
    ) -> Result<(), LinkError> {
        let js = jetstream::new(client.clone());
        let subject = self.spec.route.source().to_string();
        let stream_name = match &self.spec.stream {
            Some(name) => name.clone(),
            None => js
                .stream_by_subject(subject.clone())
                .await
                .map_err(|e| LinkError::nats("find the JetStream stream for the subject", e))?,
        };
        let stream = js
            .get_stream(&stream_name)
            .await
            .map_err(|e| LinkError::nats("get JetStream stream", e))?;
        let consumer = stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subject: subject,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.spec.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| LinkError::nats("create durable consumer", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| LinkError::nats("pull messages", e))?;
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                () = ended.cancelled() => return Ok(()),
            };
            let message = match message {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(LinkError::nats("pull messages", e)),
                None => return Err(LinkError::nats("pull messages", "ended")),
            };
            let outcome = self
                .store(
                    &message.subject,
                    message.payload.clone(),
                    message.headers.as_ref(),
                )
                .await;
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Not stored: ask for redelivery now rather than after
                    // the ack wait. If the nak is lost, the ack wait does it.
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return Err(e);
                }
            };
            let ack = match outcome {
                Stored::Yes => message.ack().await,
                // Redelivering it would fail the same way forever.
                Stored::Refused => message.ack_with(AckKind::Term).await,
            };
            ack.map_err(|e| LinkError::nats("ack", e))?;
        }
    }

    async fn store(
        &self,
        subject: &str,
        payload: bytes::Bytes,
        headers: Option<&async_nats::HeaderMap>,
    ) -> Result<Stored, LinkError> {
        let topic = match self.spec.route.map(subject) {
            Ok(topic) => topic,
            Err(e) => {
                tracing::warn!(subject, error = %e, "NATS message cannot be bridged in");
                self.state.error(&e);
                self.state.lost(1);
                return Ok(Stored::Refused);
            }
        };
        if let Some(acl) = &self.acl
            && !acl.acl().may_publish(&topic)
        {
            let user = acl.principal();
            let reason = format!(
                "not allowed to publish to {topic:?} (the publish permission of user {:?})",
                user.username().unwrap_or_default()
            );
            tracing::warn!(subject, "{reason}");
            self.state.error(&reason);
            self.state.lost(1);
            return Ok(Stored::Refused);
        }
        let message = Message {
            topic,
            client_id: self.client_id.clone(),
            qos: self.spec.qos,
            retain: false,
            payload,
            properties: headers::to_properties(headers),
        };
        match self.broker.publish(Source::Nats, message).await {
            Ok(_) => {
                self.state.delivered(1);
                Ok(Stored::Yes)
            }
            Err(e) if e.is_client_error() => {
                tracing::warn!(subject, error = %e, "tidewire refused a NATS message");
                self.state.error(&e);
                self.state.lost(1);
                Ok(Stored::Refused)
            }
            Err(e) => Err(LinkError::Store(e)),
        }
    }
}
