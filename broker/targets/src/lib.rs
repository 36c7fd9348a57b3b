//! Targets: where fan-out subscriptions (and later rules) deliver a
//! message. A target is one implementation of [`Target`]; the delivery
//! layer's pump reads the stream and retries, the subscription builds the
//! [`Delivery`] (filter, envelope, policies), and the target only sends.
//!
//! - [`spec`]: a target written as a URL-like string (`https://...`,
//!   `queue:NAME`, `mqtt:TOPIC`, `stream:NAME`, `nats:BRIDGE/SUBJECT`,
//!   `mailto:ADDRESS`) and its options, validated with the field named.
//! - [`local`]: the targets inside tidewire: a queue, an MQTT topic, a
//!   stream.
//! - [`http`]: a webhook ([`WebhookTarget`]), one POST per message over a
//!   shared keep-alive client, with a deadline, a cap on what is read of
//!   the answer, bounded concurrency and an optional HMAC signature.
//! - [`email`]: an email per message ([`EmailTarget`]) through the SMTP
//!   server of `[smtp]` ([`SmtpConfig`]), subject and body from templates.
//! - [`Targets`] ([`context`]): what a target needs to be built (the
//!   broker, the queues, the shared HTTP client, SMTP settings, NATS
//!   links), and the one place that turns a spec into a running target.
//!
//! Every target answers with the delivery layer's [`SinkError`]: `Retry`
//! for a failure that may pass (unreachable, timed out, a 5xx), `Rejected`
//! for one that will not (a 4xx, a message the target can never take).

pub mod context;
pub mod delivery;
pub mod email;
pub mod http;
pub mod local;
pub mod spec;

use std::fmt::Debug;

use futures_util::future::BoxFuture;
pub use tidewire_delivery::SinkError;

pub use context::{NatsLink, Targets};
pub use delivery::Delivery;
pub use email::{EmailTarget, Mailer, SmtpConfig, SmtpTls, Template};
pub use http::WebhookTarget;
pub use spec::{TargetOptions, TargetSpec};

/// One place a message can be delivered to.
pub trait Target: Send + Sync + Debug {
    /// Delivers one message; resolves once the target has accepted it
    /// (durably, where the target can say so).
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>>;
}
