//! [`Targets`]: everything a target needs to be built, and the one place
//! that turns a [`TargetSpec`] into a running [`Target`]. It holds the one
//! HTTP client every webhook shares and the one SMTP transport every
//! `mailto:` target shares. NATS bridges register their links here
//! ([`NatsLink`]) when they start, so the targets crate does not depend
//! on the bridge.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tidewire_core::{Broker, ConfigError};
use tidewire_queues::Queues;

use crate::email::{EmailTarget, Mailer, SmtpConfig};
use crate::http::WebhookTarget;
use crate::local::{MqttTarget, QueueTarget, StreamTarget};
use crate::{Delivery, SinkError, Target, TargetOptions, TargetSpec};

/// A running NATS bridge's way to publish, as the `nats:` target uses it.
pub trait NatsLink: Send + Sync + Debug {
    /// Publishes `body` to `subject` with `headers`; resolves once NATS
    /// (JetStream, when the bridge publishes there) has accepted it.
    fn publish(
        &self,
        subject: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), SinkError>>;
}

/// What targets are built from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Targets {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Broker,
    queues: Queues,
    nats: RwLock<BTreeMap<String, Arc<dyn NatsLink>>>,
    /// The client every webhook shares (kept-alive connections).
    http: reqwest::Client,
    /// From `[smtp]`; none: `mailto:` targets cannot be built.
    mailer: Option<Mailer>,
}

impl Targets {
    /// Targets over `broker` (MQTT and streams) and `queues`, sending
    /// email through `smtp` (`[smtp]` in the config file; without it a
    /// `mailto:` target is a config error). Builds the shared HTTP client
    /// and, with `smtp`, the pooled SMTP transport; neither connects yet.
    /// Call it inside the tokio runtime (the SMTP pool starts a task).
    ///
    /// Errors: a field of `smtp` (`smtp.from`, ...), or `http` when the
    /// HTTP client cannot start (no usable certificate in the OS roots).
    pub fn new(
        broker: Broker,
        queues: Queues,
        smtp: Option<SmtpConfig>,
    ) -> Result<Targets, ConfigError> {
        let http = crate::http::client().map_err(|e| {
            ConfigError::new(
                "http",
                format!(
                    "the webhook client cannot start: {}",
                    crate::http::error_chain(&e)
                ),
            )
        })?;
        let mailer = smtp.map(|c| Mailer::new(&c, "smtp")).transpose()?;
        Ok(Targets {
            inner: Arc::new(Inner {
                broker,
                queues,
                nats: RwLock::default(),
                http,
                mailer,
            }),
        })
    }

    /// Checks, when a subscription is created through the API, that its
    /// target can be reached at all: a webhook's host resolves and takes
    /// a TCP connection within 5 s (`https://x/hook is unreachable:
    /// connection refused`). Other kinds answer `Ok` (what they name is
    /// checked by [`Targets::build`]).
    pub async fn probe(&self, spec: &TargetSpec) -> Result<(), String> {
        match spec {
            TargetSpec::Http { url } => crate::http::probe(url).await,
            _ => Ok(()),
        }
    }

    /// Replaces the NATS links, by bridge name (at start-up and reload).
    pub fn set_nats_links(&self, links: BTreeMap<String, Arc<dyn NatsLink>>) {
        *self.inner.nats.write().unwrap_or_else(|p| p.into_inner()) = links;
    }

    fn nats_link(&self, bridge: &str) -> Option<Arc<dyn NatsLink>> {
        self.inner
            .nats
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bridge)
            .cloned()
    }

    /// Builds the target `spec` with `options`, checking that what it
    /// names exists; `key` names the field in errors.
    pub fn build(
        &self,
        spec: &TargetSpec,
        options: &TargetOptions,
        key: &str,
    ) -> Result<Arc<dyn Target>, ConfigError> {
        let inner = &self.inner;
        match spec {
            TargetSpec::Queue { name } => {
                inner
                    .queues
                    .get(name)
                    .map_err(|_| ConfigError::new(key, format!("no queue named {name:?}")))?;
                Ok(Arc::new(QueueTarget::new(
                    inner.queues.clone(),
                    name.clone(),
                )))
            }
            TargetSpec::Stream { name } => {
                if inner.broker.streams().get(name).is_none() {
                    return Err(ConfigError::new(key, format!("no stream named {name:?}")));
                }
                Ok(Arc::new(StreamTarget::new(
                    inner.broker.clone(),
                    name.clone(),
                )))
            }
            TargetSpec::Mqtt { topic } => {
                if let Some(topic) = topic {
                    tidewire_core::topic::validate_name(
                        topic,
                        inner.broker.limits().max_topic_bytes,
                    )
                    .map_err(|e| ConfigError::new(key, format!("mqtt:{topic}: {e}")))?;
                }
                Ok(Arc::new(MqttTarget::new(
                    inner.broker.clone(),
                    topic.clone(),
                )))
            }
            TargetSpec::Nats { bridge, subject } => {
                if self.nats_link(bridge).is_none() {
                    return Err(ConfigError::new(
                        key,
                        format!("no NATS bridge named {bridge:?} ([[bridges.nats]])"),
                    ));
                }
                Ok(Arc::new(NatsTarget {
                    targets: self.clone(),
                    bridge: bridge.clone(),
                    subject: subject.clone(),
                }))
            }
            TargetSpec::Http { url } => Ok(Arc::new(WebhookTarget::new(
                inner.http.clone(),
                url,
                options,
                key,
            )?)),
            TargetSpec::Email { to } => {
                let mailer = inner.mailer.clone().ok_or_else(|| {
                    ConfigError::new(key, "mailto: targets need [smtp] in the config")
                })?;
                Ok(Arc::new(EmailTarget::new(mailer, to, options, key)?))
            }
        }
    }
}

/// Publishes to NATS through the bridge's link, looked up per message so
/// a bridge restarted by a reload is picked up.
#[derive(Debug)]
struct NatsTarget {
    targets: Targets,
    bridge: String,
    subject: String,
}

impl Target for NatsTarget {
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>> {
        let Some(link) = self.targets.nats_link(&self.bridge) else {
            let reason = format!("NATS bridge {:?} is not running", self.bridge);
            return Box::pin(async move { Err(SinkError::retry(reason)) });
        };
        let headers = delivery
            .string_attributes()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        link.publish(self.subject.clone(), headers, delivery.body)
    }
}
