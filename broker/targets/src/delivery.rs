//! [`Delivery`]: one message on its way to a target, already shaped by
//! the subscription (raw or in an envelope).

use std::collections::BTreeMap;

use bytes::Bytes;
use tidewire_queues::Attribute;

/// One message for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id, unique per published message (SNS `MessageId`).
    pub message_id: String,
    /// The MQTT topic it was published to, or the fan-out topic's name for
    /// a message published to the topic directly. Templates (`{topic}`)
    /// and the MQTT target's default use it.
    pub topic: String,
    /// The subject, when the publisher gave one (SNS `Subject`).
    pub subject: Option<String>,
    /// What to send: the message body, or the envelope around it.
    pub body: Bytes,
    /// The body's content type, when known.
    pub content_type: Option<String>,
    /// Typed attributes, as SNS and SQS have them: a queue target keeps
    /// them, MQTT and NATS targets send the string-valued ones as user
    /// properties and headers.
    pub attributes: BTreeMap<String, Attribute>,
    /// Extra headers for targets that carry headers (HTTP), e.g. SNS's
    /// `x-amz-sns-message-type`.
    pub headers: Vec<(String, String)>,
    /// Broker time of the publish, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Delivery {
    /// The attributes with a string value (`String`, `Number`, arrays), as
    /// `(name, value)` pairs for targets that carry only text.
    pub fn string_attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes
            .iter()
            .filter_map(|(name, a)| a.string.as_deref().map(|v| (name.as_str(), v)))
    }
}
