//! A topic's and a subscription's definitions: the `[[topics]]` and
//! `[[topics.subscriptions]]` shapes (also the bodies of the HTTP API, and
//! what the catalog keeps), validated into [`TopicSpec`] and
//! [`SubscriptionSpec`] with each bad field named.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_core::ConfigError;
use tidewire_core::topic::TopicFilter;
use tidewire_patterns::{FilterPolicyScope, Pattern};
use tidewire_storage::FsyncPolicy;
use tidewire_targets::{TargetOptions, TargetSpec};

/// Longest topic name, as in SNS.
pub const MAX_NAME_LEN: usize = 256;
/// Longest subscription name.
pub const MAX_SUBSCRIPTION_NAME_LEN: usize = 128;
/// Default time a message waits for subscriptions that are behind.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Shortest and longest retention.
pub const RETENTION_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(14 * 24 * 3600));
/// Default and largest message size, as in SNS.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 256 * 1024;
/// Smallest and largest `max_message_bytes`.
pub const MESSAGE_BYTES_RANGE: (u64, u64) = (1024, 1024 * 1024);
/// Default deliveries in flight per subscription.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Most deliveries in flight per subscription.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most retries a delivery policy may ask for.
pub const MAX_RETRIES: u32 = 100;
/// Longest delay a delivery policy may ask for, as in SNS.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A topic as written in the config file (`[[topics]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Letters, digits, `-` and `_`, at most 256 characters.
    pub name: String,
    /// MQTT topic filters whose messages the topic takes, from every ingest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// How long a message is kept for subscriptions that are behind
    /// (default 24 h, 1 min to 14 days).
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Largest message (default 256 KiB; 1 KiB to 1 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// `always` (default; group commit), `interval:MS` or `never`.
    #[serde(default = "always")]
    pub fsync: String,
    /// The subscriptions the config file defines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// A subscription (`[[topics.subscriptions]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Letters, digits, `-` and `_`, unique within the topic.
    pub name: String,
    /// Where messages go: `https://...`, `queue:NAME`, `mqtt:TOPIC`,
    /// `stream:NAME`, `nats:BRIDGE/SUBJECT` or `mailto:ADDRESS`.
    pub target: TargetSpec,
    /// A pattern in EventBridge's syntax (a table, or a JSON string);
    /// none: every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// What the filter looks at: `attributes` (default, SNS's
    /// `MessageAttributes`), `body` (`MessageBody`, a JSON body) or
    /// `envelope` (topic, levels, client id, user properties, content type
    /// and payload).
    #[serde(default, skip_serializing_if = "Scope::is_default")]
    pub filter_scope: Scope,
    /// Deliver the message body as is (default), or in SNS's JSON envelope
    /// (`raw = false`).
    #[serde(default = "yes")]
    pub raw: bool,
    /// Deliveries in flight at once (default 16, at most 1024); 1 keeps
    /// strict order at the target.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Retries per message; none: retry until the message leaves the
    /// topic's retention (1 s doubling to 20 s between attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryPolicy>,
    /// Where a message goes when its retries are exhausted or the target
    /// refuses it for good: `queue:NAME` or `stream:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<TargetSpec>,
    /// Target options (webhook timeout, HMAC secret, headers, email
    /// templates).
    #[serde(flatten)]
    pub options: TargetOptions,
}

/// What a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Scope {
    /// SNS's `MessageAttributes`.
    #[default]
    Attributes,
    /// SNS's `MessageBody`.
    Body,
    /// The message's envelope and payload.
    Envelope,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Attributes, Scope::Body, Scope::Envelope];

    fn is_default(&self) -> bool {
        *self == Scope::Attributes
    }

    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Attributes => "attributes",
            Scope::Body => "body",
            Scope::Envelope => "envelope",
        }
    }

    /// Parses a filter in this scope, within its limits.
    pub fn parse(self, filter: &Value) -> Result<Pattern, String> {
        let parsed = match self {
            Scope::Attributes => FilterPolicyScope::MessageAttributes.parse_policy(filter),
            Scope::Body => FilterPolicyScope::MessageBody.parse_policy(filter),
            Scope::Envelope => Pattern::parse(filter),
        };
        parsed.map_err(|e| e.to_string())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "attributes" | "MessageAttributes" => Ok(Scope::Attributes),
            "body" | "MessageBody" => Ok(Scope::Body),
            "envelope" => Ok(Scope::Envelope),
            other => Err(format!(
                "filter_scope must be attributes (MessageAttributes), body (MessageBody) or envelope, not {other:?}"
            )),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How often a message is tried before it goes to the dead letters.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Retries after the first attempt (0 to 100).
    pub retries: u32,
    /// The first wait (default 1 s).
    #[serde(default = "default_min_delay", with = "humantime_serde")]
    pub min_delay: Duration,
    /// The longest wait (default 20 s, at most 1 h).
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
    /// How the wait grows: `exponential` (default), `linear` or
    /// `constant`.
    #[serde(default)]
    pub backoff: Backoff,
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Doubling from `min_delay` to `max_delay`.
    #[default]
    Exponential,
    /// In equal steps from `min_delay` to `max_delay` over the retries.
    Linear,
    /// Always `min_delay`.
    Constant,
}

impl DeliveryPolicy {
    /// The wait before retry `n` (1 for the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let (min, max) = (self.min_delay, self.max_delay.max(self.min_delay));
        match self.backoff {
            Backoff::Constant => min,
            Backoff::Exponential => min
                .saturating_mul(1u32 << n.saturating_sub(1).min(20))
                .min(max),
            Backoff::Linear => {
                let steps = self.retries.saturating_sub(1).max(1);
                min + (max - min)
                    .mul_f64(f64::from(n.saturating_sub(1).min(steps)) / f64::from(steps))
            }
        }
    }
}

fn default_retention() -> Duration {
    DEFAULT_RETENTION
}
fn default_max_message_bytes() -> ByteSize {
    ByteSize::b(DEFAULT_MAX_MESSAGE_BYTES)
}
fn always() -> String {
    "always".to_owned()
}
fn yes() -> bool {
    true
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_min_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(20)
}

/// A validated topic.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// As written, without its subscriptions.
    pub config: TopicConfig,
    /// Parsed `from` filters.
    pub from: Vec<TopicFilter>,
    /// Parsed `fsync`.
    pub fsync: FsyncPolicy,
}

impl TopicSpec {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True when the topic takes messages published to `topic`.
    pub fn takes(&self, topic: &str) -> bool {
        self.from.iter().any(|f| f.matches(topic))
    }
}

impl TopicConfig {
    /// A topic with every default.
    pub fn named(name: &str) -> TopicConfig {
        TopicConfig {
            name: name.to_owned(),
            from: Vec::new(),
            retention: DEFAULT_RETENTION,
            max_message_bytes: default_max_message_bytes(),
            fsync: always(),
            subscriptions: Vec::new(),
        }
    }

    /// Checks the topic's own fields (not its subscriptions); `key` is
    /// where the definition is (e.g. `topics[2]`).
    pub fn validate(&self, key: &str) -> Result<TopicSpec, ConfigError> {
        let field = |name: &str| format!("{key}.{name}");
        validate_name(&self.name, MAX_NAME_LEN, "topic")
            .map_err(|m| ConfigError::new(field("name"), m))?;
        let mut from = Vec::with_capacity(self.from.len());
        for (i, filter) in self.from.iter().enumerate() {
            from.push(
                TopicFilter::new(filter, u16::MAX.into())
                    .map_err(|e| ConfigError::new(format!("{key}.from[{i}]"), e.to_string()))?,
            );
        }
        if self.retention < RETENTION_RANGE.0 || self.retention > RETENTION_RANGE.1 {
            return Err(ConfigError::new(
                field("retention"),
                "must be from 1 minute to 14 days",
            ));
        }
        let bytes = self.max_message_bytes.as_u64();
        if bytes < MESSAGE_BYTES_RANGE.0 || bytes > MESSAGE_BYTES_RANGE.1 {
            return Err(ConfigError::new(
                field("max_message_bytes"),
                "must be from 1 KiB to 1 MiB",
            ));
        }
        let fsync: FsyncPolicy = self
            .fsync
            .parse()
            .map_err(|m: String| ConfigError::new(field("fsync"), m))?;
        Ok(TopicSpec {
            config: TopicConfig {
                subscriptions: Vec::new(),
                ..self.clone()
            },
            from,
            fsync,
        })
    }
}

/// A validated subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// As written.
    pub config: SubscriptionConfig,
    /// The parsed filter.
    pub filter: Option<Pattern>,
}

impl SubscriptionConfig {
    /// A subscription of every default delivering to `target`.
    pub fn new(name: &str, target: TargetSpec) -> SubscriptionConfig {
        SubscriptionConfig {
            name: name.to_owned(),
            target,
            filter: None,
            filter_scope: Scope::Attributes,
            raw: true,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            delivery: None,
            dead_letter: None,
            options: TargetOptions::default(),
        }
    }

    /// Checks every field that needs no other resource (whether the
    /// target exists is checked when it is built); `key` is where the
    /// definition is (e.g. `topics[0].subscriptions[1]`).
    pub fn validate(&self, key: &str) -> Result<SubscriptionSpec, ConfigError> {
        let field = |name: &str| format!("{key}.{name}");
        validate_name(&self.name, MAX_SUBSCRIPTION_NAME_LEN, "subscription")
            .map_err(|m| ConfigError::new(field("name"), m))?;
        let filter = match &self.filter {
            None => None,
            Some(filter) => {
                let parsed;
                let filter = match filter {
                    Value::String(text) => {
                        parsed = serde_json::from_str::<Value>(text).map_err(|e| {
                            ConfigError::new(field("filter"), format!("not JSON: {e}"))
                        })?;
                        &parsed
                    }
                    other => other,
                };
                Some(
                    self.filter_scope
                        .parse(filter)
                        .map_err(|m| ConfigError::new(field("filter"), m))?,
                )
            }
        };
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(ConfigError::new(
                field("max_in_flight"),
                format!("must be from 1 to {MAX_IN_FLIGHT}"),
            ));
        }
        if let Some(policy) = &self.delivery {
            if policy.retries > MAX_RETRIES {
                return Err(ConfigError::new(
                    field("delivery.retries"),
                    format!("must be at most {MAX_RETRIES}"),
                ));
            }
            if policy.max_delay > MAX_DELAY || policy.min_delay > policy.max_delay {
                return Err(ConfigError::new(
                    field("delivery.max_delay"),
                    "min_delay must be at most max_delay, and max_delay at most 1 h",
                ));
            }
        }
        if let Some(dead_letter) = &self.dead_letter
            && !matches!(
                dead_letter,
                TargetSpec::Queue { .. } | TargetSpec::Stream { .. }
            )
        {
            return Err(ConfigError::new(
                field("dead_letter"),
                "must be a queue (queue:NAME) or a stream (stream:NAME)",
            ));
        }
        Ok(SubscriptionSpec {
            config: self.clone(),
            filter,
        })
    }
}

/// Letters, digits, `-` and `_`, 1 to `max` characters.
fn validate_name(name: &str, max: usize, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!("a {what} name must be 1 to {max} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "a {what} name holds only letters, digits, '-' and '_', not {name:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn subscription(toml_text: &str) -> SubscriptionConfig {
        toml::from_str(toml_text).expect("valid toml")
    }

    #[test]
    fn a_subscription_from_toml() {
        let config = subscription(
            r#"
            name = "ops"
            target = "https://ops.example.com/hook"
            filter = { severity = ["critical", { prefix = "sev-" }] }
            raw = false
            delivery = { retries = 3, min_delay = "2s" }
            dead_letter = "queue:alerts-dlq"
            hmac_secret = "s3cret"
            "#,
        );
        let spec = config
            .validate("topics[0].subscriptions[0]")
            .expect("valid");
        assert!(spec.filter.is_some());
        let policy = config.delivery.expect("policy");
        assert_eq!(policy.max_delay, Duration::from_secs(20));
        assert_eq!(policy.delay(1), Duration::from_secs(2));
        assert_eq!(policy.delay(2), Duration::from_secs(4));
        assert_eq!(policy.delay(9), Duration::from_secs(20));
        assert_eq!(config.options.hmac_secret.as_deref(), Some("s3cret"));
        // It goes into the catalog as JSON and comes back the same.
        let json = serde_json::to_value(&config).expect("encodes");
        assert_eq!(
            serde_json::from_value::<SubscriptionConfig>(json).expect("decodes"),
            config
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (json!({"name": "a b", "target": "queue:q"}), "s.name"),
            (
                json!({"name": "a", "target": "queue:q", "filter": {"x": [{"prefix": 1}]}}),
                "s.filter",
            ),
            (
                json!({"name": "a", "target": "queue:q", "filter": "{not json"}),
                "s.filter",
            ),
            (
                json!({"name": "a", "target": "queue:q", "max_in_flight": 0}),
                "s.max_in_flight",
            ),
            (
                json!({"name": "a", "target": "queue:q", "dead_letter": "mqtt:x"}),
                "s.dead_letter",
            ),
            (
                json!({"name": "a", "target": "queue:q", "delivery": {"retries": 500}}),
                "s.delivery.retries",
            ),
        ];
        for (value, key) in cases {
            let config: SubscriptionConfig = serde_json::from_value(value.clone()).expect("shape");
            let error = config.validate("s").expect_err(&value.to_string());
            assert_eq!(error.key, key, "{value}: {error}");
        }
        let unknown = serde_json::from_value::<SubscriptionConfig>(
            json!({"name": "a", "target": "queue:q", "fliter": {}}),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn linear_and_constant_backoff() {
        let policy = DeliveryPolicy {
            retries: 5,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            backoff: Backoff::Linear,
        };
        let delays: Vec<u64> = (1..=5).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 3, 4, 5]);
        let constant = DeliveryPolicy {
            backoff: Backoff::Constant,
            ..policy
        };
        assert_eq!(constant.delay(4), Duration::from_secs(1));
    }
}
