//! A queue's definition: the `[[queues]]` shape (also the body of
//! `POST /api/v1/queues`, what `SetQueueAttributes` changes and what the
//! catalog keeps), and its validation into a [`QueueSpec`] with SQS's
//! limits.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tidewire_core::ConfigError;
use tidewire_core::topic::TopicFilter;
use tidewire_storage::FsyncPolicy;

/// Longest queue name, as in SQS (the `.fifo` suffix included).
pub const MAX_NAME_LEN: usize = 80;
/// Default time a received message stays hidden.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// Longest visibility timeout, as in SQS.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// Default time a message is kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);
/// Shortest and longest retention, as in SQS.
pub const RETENTION_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(14 * 24 * 3600));
/// Longest delivery delay, as in SQS.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Longest long poll, as in SQS.
pub const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// Default and largest message size.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 256 * 1024;
/// Smallest and largest `max_message_bytes`, as in SQS.
pub const MESSAGE_BYTES_RANGE: (u64, u64) = (1024, 1024 * 1024);
/// Most receives before a dead-letter move, as in SQS.
pub const MAX_RECEIVE_COUNT: u32 = 1000;
/// The FIFO group of messages that come from MQTT, unless set.
pub const DEFAULT_GROUP_TEMPLATE: &str = "{topic}";

/// A queue as written in the config file (`[[queues]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Letters, digits, `-` and `_`, at most 80 characters; a name ending
    /// in `.fifo` makes a FIFO queue.
    pub name: String,
    /// MQTT topic filters whose messages are enqueued, from every ingest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// How long a received message stays hidden (default 30 s, at most 12 h).
    #[serde(default = "default_visibility", with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// How long a message is kept (default 4 days, 1 min to 14 days).
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// How long a new message stays hidden (default 0, at most 15 min).
    #[serde(default, with = "humantime_serde")]
    pub delay: Duration,
    /// Largest message body (default 256 KiB; 1 KiB to 1 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// The long poll of a receive that does not set one (default 0, at most
    /// 20 s).
    #[serde(default, with = "humantime_serde")]
    pub receive_wait: Duration,
    /// Where messages go after too many receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterConfig>,
    /// FIFO only: deduplicate by the SHA-256 of the body when a send gives
    /// no deduplication id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub content_based_dedup: bool,
    /// FIFO only: the message group of messages from MQTT, a template over
    /// the topic: `{topic}` (default), `{N}` for level N (from 0), and
    /// `{client_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `always` (default; group commit), `interval:MS` or `never`.
    #[serde(default = "always")]
    pub fsync: String,
}

/// `dead_letter = { queue = "...", max_receive_count = N }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The dead-letter queue's name.
    pub queue: String,
    /// Receives after which the next receive moves the message (1 to 1000).
    pub max_receive_count: u32,
}

fn default_visibility() -> Duration {
    DEFAULT_VISIBILITY
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

impl QueueConfig {
    /// A queue with every default.
    pub fn named(name: &str) -> QueueConfig {
        QueueConfig {
            name: name.to_owned(),
            from: Vec::new(),
            visibility_timeout: DEFAULT_VISIBILITY,
            retention: DEFAULT_RETENTION,
            delay: Duration::ZERO,
            max_message_bytes: default_max_message_bytes(),
            receive_wait: Duration::ZERO,
            dead_letter: None,
            content_based_dedup: false,
            group: None,
            fsync: always(),
        }
    }

    /// Checks every field; `key` is where the definition is, for messages
    /// (e.g. `queues[2]`).
    pub fn validate(&self, key: &str) -> Result<QueueSpec, ConfigError> {
        let field = |name: &str| format!("{key}.{name}");
        validate_name(&self.name).map_err(|m| ConfigError::new(field("name"), m))?;
        let fifo = self.name.ends_with(".fifo");
        let mut from = Vec::with_capacity(self.from.len());
        for (i, filter) in self.from.iter().enumerate() {
            from.push(
                TopicFilter::new(filter, u16::MAX.into())
                    .map_err(|e| ConfigError::new(format!("{key}.from[{i}]"), e.to_string()))?,
            );
        }
        at_most(self.visibility_timeout, MAX_VISIBILITY)
            .map_err(|m| ConfigError::new(field("visibility_timeout"), m))?;
        if self.retention < RETENTION_RANGE.0 || self.retention > RETENTION_RANGE.1 {
            return Err(ConfigError::new(
                field("retention"),
                "must be from 1 minute to 14 days",
            ));
        }
        at_most(self.delay, MAX_DELAY).map_err(|m| ConfigError::new(field("delay"), m))?;
        at_most(self.receive_wait, MAX_RECEIVE_WAIT)
            .map_err(|m| ConfigError::new(field("receive_wait"), m))?;
        let max_bytes = self.max_message_bytes.as_u64();
        if max_bytes < MESSAGE_BYTES_RANGE.0 || max_bytes > MESSAGE_BYTES_RANGE.1 {
            return Err(ConfigError::new(
                field("max_message_bytes"),
                "must be from 1 KiB to 1 MiB",
            ));
        }
        if let Some(dl) = &self.dead_letter {
            validate_name(&dl.queue)
                .map_err(|m| ConfigError::new(field("dead_letter.queue"), m))?;
            if dl.queue == self.name {
                return Err(ConfigError::new(
                    field("dead_letter.queue"),
                    "a queue cannot be its own dead-letter queue",
                ));
            }
            if dl.queue.ends_with(".fifo") != fifo {
                return Err(ConfigError::new(
                    field("dead_letter.queue"),
                    "the dead-letter queue of a FIFO queue must be FIFO, and of a standard queue standard",
                ));
            }
            if dl.max_receive_count == 0 || dl.max_receive_count > MAX_RECEIVE_COUNT {
                return Err(ConfigError::new(
                    field("dead_letter.max_receive_count"),
                    "must be from 1 to 1000",
                ));
            }
        }
        if !fifo && self.content_based_dedup {
            return Err(ConfigError::new(
                field("content_based_dedup"),
                "only FIFO queues (names ending in .fifo) deduplicate",
            ));
        }
        let group = match &self.group {
            Some(_) if !fifo => {
                return Err(ConfigError::new(
                    field("group"),
                    "only FIFO queues (names ending in .fifo) have message groups",
                ));
            }
            Some(template) => {
                GroupTemplate::parse(template).map_err(|m| ConfigError::new(field("group"), m))?
            }
            None => GroupTemplate::parse(DEFAULT_GROUP_TEMPLATE)
                .map_err(|m| ConfigError::new(field("group"), m))?,
        };
        let fsync: FsyncPolicy = self
            .fsync
            .parse()
            .map_err(|m: String| ConfigError::new(field("fsync"), m))?;
        Ok(QueueSpec {
            config: self.clone(),
            fifo,
            from,
            group,
            fsync,
        })
    }
}

/// A validated queue definition.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// As written.
    pub config: QueueConfig,
    /// True for a FIFO queue.
    pub fifo: bool,
    /// Parsed `from` filters.
    pub from: Vec<TopicFilter>,
    /// FIFO group of messages from MQTT.
    pub group: GroupTemplate,
    /// When appends are durable.
    pub fsync: FsyncPolicy,
}

impl QueueSpec {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True when messages published to `topic` are enqueued here.
    pub fn takes(&self, topic: &str) -> bool {
        self.from.iter().any(|f| f.matches(topic))
    }
}

/// A queue name SQS would accept: 1 to 80 letters, digits, `-` or `_`,
/// optionally ending in `.fifo`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("queue name must be 1 to {MAX_NAME_LEN} characters"));
    }
    if stem.is_empty()
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "invalid queue name {name:?}: use letters, digits, '-' and '_', optionally ending in .fifo"
        ));
    }
    Ok(())
}

fn at_most(value: Duration, max: Duration) -> Result<(), String> {
    if value > max {
        Err(format!(
            "{} is more than the limit of {}",
            humantime::format_duration(value),
            humantime::format_duration(max)
        ))
    } else {
        Ok(())
    }
}

/// A FIFO group template over a message's topic and client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Topic,
    Level(usize),
    ClientId,
}

impl GroupTemplate {
    /// Parses `{topic}`, `{N}` and `{client_id}` placeholders among text.
    pub fn parse(template: &str) -> Result<GroupTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in group template {template:?}"))?;
            let field = &rest[open + 1..open + close];
            parts.push(match field {
                "topic" => Part::Topic,
                "client_id" => Part::ClientId,
                level => Part::Level(level.parse().map_err(|_| {
                    format!(
                        "unknown field {{{level}}} in group template {template:?}: use {{topic}}, {{client_id}} or a level number such as {{1}}"
                    )
                })?),
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("the group template is empty".into());
        }
        Ok(GroupTemplate { parts })
    }

    /// The group of a message; the whole topic when the template yields
    /// nothing (a level the topic does not have).
    pub fn render(&self, topic: &str, client_id: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Topic => out.push_str(topic),
                Part::ClientId => out.push_str(client_id),
                Part::Level(n) => out.push_str(topic.split('/').nth(*n).unwrap_or("")),
            }
        }
        if out.is_empty() {
            topic.to_owned()
        } else {
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> QueueConfig {
        toml::from_str(text).expect("parse")
    }

    #[test]
    fn defaults_and_fifo() {
        let spec = parse("name = \"jobs\"")
            .validate("queues[0]")
            .expect("valid");
        assert!(!spec.fifo);
        assert_eq!(spec.config.visibility_timeout, DEFAULT_VISIBILITY);
        assert_eq!(spec.config.retention, DEFAULT_RETENTION);
        let spec = parse("name = \"orders.fifo\"\nfrom = [\"orders/#\"]\ngroup = \"{1}\"")
            .validate("queues[0]")
            .expect("valid");
        assert!(spec.fifo);
        assert!(spec.takes("orders/dev-1/x"));
        assert_eq!(spec.group.render("orders/dev-1/x", "c"), "dev-1");
        assert_eq!(spec.group.render("orders", "c"), "orders");
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, key) in [
            ("name = \"a b\"", "queues[0].name"),
            ("name = \"\"", "queues[0].name"),
            (
                "name = \"q\"\nvisibility_timeout = \"13h\"",
                "queues[0].visibility_timeout",
            ),
            (
                "name = \"q\"\nretention = \"15days\"",
                "queues[0].retention",
            ),
            ("name = \"q\"\ndelay = \"16m\"", "queues[0].delay"),
            (
                "name = \"q\"\nreceive_wait = \"21s\"",
                "queues[0].receive_wait",
            ),
            (
                "name = \"q\"\nmax_message_bytes = \"2MiB\"",
                "queues[0].max_message_bytes",
            ),
            ("name = \"q\"\nfrom = [\"a/#/b\"]", "queues[0].from[0]"),
            (
                "name = \"q\"\ncontent_based_dedup = true",
                "queues[0].content_based_dedup",
            ),
            ("name = \"q.fifo\"\ngroup = \"{x}\"", "queues[0].group"),
            ("name = \"q\"\nfsync = \"sometimes\"", "queues[0].fsync"),
            (
                "name = \"q\"\ndead_letter = { queue = \"d.fifo\", max_receive_count = 3 }",
                "queues[0].dead_letter.queue",
            ),
            (
                "name = \"q\"\ndead_letter = { queue = \"d\", max_receive_count = 0 }",
                "queues[0].dead_letter.max_receive_count",
            ),
        ] {
            let err = parse(text).validate("queues[0]").expect_err(text);
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }
}
