//! Fan-out topics with SNS's semantics: a publisher does not know its
//! subscribers; each subscription filters what it gets and has it pushed
//! to its target (a webhook, a queue, MQTT, a stream, NATS, email) at
//! least once, from a durable cursor, with retries and dead letters.
//!
//! Layout: [`config`] (the `[[topics]]` and `[[topics.subscriptions]]`
//! shapes), [`message`] (a topic message as its log keeps it, with the
//! ids of the filters it matched), [`topic`] (one topic: its log, its
//! compiled matchers, publishing), [`subscription`] (one subscription's
//! pump on the delivery layer), `sink` (what a subscription adds to the
//! pump: filter, envelope, delivery policy, dead letters), [`envelope`]
//! (SNS's JSON documents and ARNs), [`Topics`] (the registry: catalog,
//! start-up, publish routes), [`metrics`] and [`error`].

pub mod config;
pub mod envelope;
pub mod error;
pub mod message;
pub mod metrics;
mod registry;
mod sink;
pub mod subscription;
pub mod topic;

pub use config::{
    Backoff, DeliveryPolicy, Scope, SubscriptionConfig, SubscriptionSpec, TopicConfig, TopicSpec,
};
pub use envelope::Naming;
pub use error::TopicError;
pub use metrics::{StatusSnapshot, TopicMetrics};
pub use registry::{
    DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_TOPICS, TopicLimits, Topics, TopicsSetup, Via,
};
pub use subscription::Subscription;
pub use topic::{Publication, Topic};
