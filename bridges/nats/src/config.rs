//! The NATS bridge's config (`[[bridge.nats]]`), its defaults, and its
//! validation into a [`NatsBridge`] that cannot be invalid.
//!
//! ```toml
//! [[bridge.nats]]
//! name = "uplink"
//! url = "nats://127.0.0.1:4222"        # or a list
//! node = "node1"                       # fills {node}; default: host name
//! [[bridge.nats.outbound]]             # tidewire -> NATS
//! from = "sensors/#"
//! subject = "edge.{node}.>"
//! jetstream = true
//! [[bridge.nats.inbound]]              # NATS -> tidewire
//! subject = "cmd.{node}.>"
//! to = "cmd/#"
//! durable = "tidewire-node1"
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tidewire_core::ConfigError;
use tidewire_core::stream_config::validate_stream_name;

use crate::mapping::{Pattern, Route, Side};
use crate::publisher::Publisher;

/// Default time allowed to connect to a server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default first wait before reconnecting.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Default longest wait between reconnect attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Default number of outbound messages awaiting their PubAck at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default time to wait for a JetStream PubAck.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time JetStream waits for an inbound ack before redelivering.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default QoS given to messages bridged in.
pub const DEFAULT_INBOUND_QOS: u8 = 1;
/// The `{node}` placeholder in subjects.
const NODE_PLACEHOLDER: &str = "{node}";

/// One or more server URLs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Urls {
    /// `url = "nats://host:4222"`.
    One(String),
    /// `url = ["nats://a:4222", "nats://b:4222"]`.
    Many(Vec<String>),
}

/// `[[bridge.nats]]`, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsBridgeConfig {
    /// The bridge's name: letters, digits, `_` or `-`. Names its state
    /// directory, its metrics and its API entry.
    pub name: String,
    /// Server URL(s), `nats://` or `tls://`; credentials in the URL work.
    pub url: Urls,
    /// This node's name, substituted for `{node}` in subjects. Default:
    /// the host name with `.`, `*`, `>` and whitespace replaced by `_`.
    pub node: Option<String>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// The tidewire user (`[[users]]`) inbound messages are published as:
    /// its publish rules apply, and what they refuse is counted and not
    /// stored. Without it the bridge may publish anywhere.
    pub publish_as: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    pub nkey: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// Insist on TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// PEM file of extra root certificates to trust.
    pub tls_ca_file: Option<PathBuf>,
    /// Time allowed for one connection attempt (default 5 s).
    #[serde(default = "connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First wait before reconnecting; it doubles each failure (default 250 ms).
    #[serde(default = "reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts (default 30 s).
    #[serde(default = "reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// `[[bridge.nats.outbound]]`: tidewire -> NATS.
    #[serde(default)]
    pub outbound: Vec<OutboundConfig>,
    /// `[[bridge.nats.inbound]]`: NATS -> tidewire.
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
}

/// Where an outbound link starts when it has no cursor yet.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// At the stream's end: only messages stored from now on.
    #[default]
    Latest,
    /// At the oldest retained record.
    Earliest,
}

/// `[[bridge.nats.outbound]]`, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// MQTT topic filter of the messages to send.
    pub from: String,
    /// Subject template, with the same wildcards as `from` in the same
    /// order (`+` -> `*`, `#` -> `>`), and `{node}`.
    pub subject: String,
    /// Publish to JetStream and wait for its PubAck (with `Nats-Msg-Id`
    /// for dedup); otherwise core NATS, confirmed by a flush.
    #[serde(default)]
    pub jetstream: bool,
    /// The tidewire stream to read. Default: the first stream that keeps
    /// topics matching `from`.
    pub stream: Option<String>,
    /// Where to begin when no cursor exists: `latest` (default) or `earliest`.
    #[serde(default)]
    pub start: Start,
    /// Messages awaiting acknowledgement at once (default 1024).
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
    /// Time to wait for a PubAck or flush before reconnecting (default 10 s).
    #[serde(default = "ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
}

/// `[[bridge.nats.inbound]]`, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// NATS subject (wildcards allowed), with `{node}`.
    pub subject: String,
    /// MQTT topic template, with the same wildcards as `subject`.
    pub to: String,
    /// A JetStream durable pull consumer's name. Without it, a core NATS
    /// subscription (at most once).
    pub durable: Option<String>,
    /// The JetStream stream holding `subject` (with `durable`). Default:
    /// looked up by subject.
    pub stream: Option<String>,
    /// QoS given to bridged messages (default 1).
    #[serde(default = "inbound_qos")]
    pub qos: u8,
    /// With `durable`: how long JetStream waits for the bridge's ack
    /// before redelivering, e.g. after a crash (default 30 s).
    #[serde(default = "ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
}

fn connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn reconnect_min() -> Duration {
    DEFAULT_RECONNECT_MIN
}
fn reconnect_max() -> Duration {
    DEFAULT_RECONNECT_MAX
}
fn max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn ack_timeout() -> Duration {
    DEFAULT_ACK_TIMEOUT
}
fn ack_wait() -> Duration {
    DEFAULT_ACK_WAIT
}
fn inbound_qos() -> u8 {
    DEFAULT_INBOUND_QOS
}

/// How the bridge authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Nothing beyond what the URL carries.
    None,
    /// User and password.
    UserPassword(String, String),
    /// A token.
    Token(String),
    /// An NKey seed.
    Nkey(String),
    /// A credentials file.
    CredentialsFile(PathBuf),
}

/// A validated NATS bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsBridge {
    /// Its name.
    pub name: String,
    /// Server URLs.
    pub urls: Vec<String>,
    /// The node name `{node}` was replaced with; also part of every
    /// `Nats-Msg-Id`.
    pub node: String,
    /// Authentication.
    pub auth: Auth,
    /// The tidewire user inbound messages are published as.
    pub publish_as: Option<String>,
    /// Insist on TLS.
    pub tls_required: bool,
    /// Extra root certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Time allowed for one connection attempt.
    pub connect_timeout: Duration,
    /// First reconnect wait.
    pub reconnect_min: Duration,
    /// Longest reconnect wait.
    pub reconnect_max: Duration,
    /// Outbound links.
    pub outbound: Vec<Outbound>,
    /// Inbound links.
    pub inbound: Vec<Inbound>,
    /// Publishes on the bridge's connection for fan-out's `nats:` targets.
    pub publisher: Arc<Publisher>,
}

/// A validated outbound link.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// Topic filter -> subject template.
    pub route: Route,
    /// JetStream (PubAck) or core NATS (flush).
    pub jetstream: bool,
    /// The stream to read, if named.
    pub stream: Option<String>,
    /// Where a new cursor starts.
    pub start: Start,
    /// Messages awaiting acknowledgement at once.
    pub max_in_flight: usize,
    /// PubAck / flush timeout.
    pub ack_timeout: Duration,
}

/// A validated inbound link.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// Subject pattern -> topic template.
    pub route: Route,
    /// Durable pull consumer, or a core subscription when `None`.
    pub durable: Option<String>,
    /// The JetStream stream, if named.
    pub stream: Option<String>,
    /// QoS of bridged messages.
    pub qos: u8,
    /// Durable consumer's ack wait.
    pub ack_wait: Duration,
}

impl NatsBridgeConfig {
    /// Validates every `[[bridge.nats]]` entry; `list_key` is the list's
    /// path (`bridge.nats`). Names are unique among NATS bridges.
    pub fn validate_all(
        entries: &[NatsBridgeConfig],
        list_key: &str,
    ) -> Result<Vec<NatsBridge>, ConfigError> {
        tidewire_bridge::validate_kind(entries, list_key, |b| b.name.as_str(), Self::validate)
    }

    /// Validates this bridge; `key` names it in errors (`bridge.nats[0]`).
    pub fn validate(&self, key: &str) -> Result<NatsBridge, ConfigError> {
        let err =
            |field: &str, message: String| ConfigError::new(format!("{key}.{field}"), message);
        validate_stream_name(&self.name).map_err(|m| err("name", m.replace("stream", "bridge")))?;
        let urls = match &self.url {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(list) => list.clone(),
        };
        if urls.is_empty() {
            return Err(err("url", "needs at least one server URL".into()));
        }
        for u in &urls {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| err("url", format!("{u:?}: {e}")))?;
        }
        let node = match &self.node {
            Some(n) => {
                if n.is_empty() || n.contains(['.', '*', '>']) || n.chars().any(char::is_whitespace)
                {
                    return Err(err(
                        "node",
                        format!("{n:?} must be one NATS token: no '.', '*', '>' or whitespace"),
                    ));
                }
                n.clone()
            }
            None => default_node(),
        };
        let auth = match (
            &self.user,
            &self.password,
            &self.token,
            &self.nkey,
            &self.credentials_file,
        ) {
            (None, None, None, None, None) => Auth::None,
            (Some(u), Some(p), None, None, None) => Auth::UserPassword(u.clone(), p.clone()),
            (None, None, Some(t), None, None) => Auth::Token(t.clone()),
            (None, None, None, Some(n), None) => Auth::Nkey(n.clone()),
            (None, None, None, None, Some(f)) => Auth::CredentialsFile(f.clone()),
            (Some(_), None, None, None, None) | (None, Some(_), None, None, None) => {
                return Err(err("user", "user and password go together".into()));
            }
            _ => {
                return Err(err(
                    "user",
                    "use one of user/password, token, nkey or credentials_file".into(),
                ));
            }
        };
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(err(
                "reconnect_max",
                "reconnect_min must be more than 0 and at most reconnect_max".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(err("connect_timeout", "must be more than 0".into()));
        }
        let outbound = self
            .outbound
            .iter()
            .enumerate()
            .map(|(i, o)| o.validate(&format!("{key}.outbound[{i}]"), &node))
            .collect::<Result<_, _>>()?;
        let inbound = self
            .inbound
            .iter()
            .enumerate()
            .map(|(i, o)| o.validate(&format!("{key}.inbound[{i}]"), &node))
            .collect::<Result<_, _>>()?;
        Ok(NatsBridge {
            name: self.name.clone(),
            urls,
            node,
            auth,
            publish_as: self.publish_as.clone(),
            tls_required: self.tls_required,
            tls_ca_file: self.tls_ca_file.clone(),
            connect_timeout: self.connect_timeout,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            outbound,
            inbound,
            publisher: Arc::default(),
        })
    }
}

impl OutboundConfig {
    fn validate(&self, key: &str, node: &str) -> Result<Outbound, ConfigError> {
        let err =
            |field: &str, message: String| ConfigError::new(format!("{key}.{field}"), message);
        let from = Pattern::parse(Side::Mqtt, &self.from).map_err(|m| err("from", m))?;
        let subject = Pattern::parse(Side::Nats, &self.subject.replace(NODE_PLACEHOLDER, node))
            .map_err(|m| err("subject", m))?;
        let route = Route::new(from, subject).map_err(|m| err("subject", m))?;
        if let Some(stream) = &self.stream {
            validate_stream_name(stream).map_err(|m| err("stream", m))?;
        }
        if self.max_in_flight == 0 {
            return Err(err("max_in_flight", "must be more than 0".into()));
        }
        if self.ack_timeout.is_zero() {
            return Err(err("ack_timeout", "must be more than 0".into()));
        }
        Ok(Outbound {
            route,
            jetstream: self.jetstream,
            stream: self.stream.clone(),
            start: self.start,
            max_in_flight: self.max_in_flight,
            ack_timeout: self.ack_timeout,
        })
    }
}

impl InboundConfig {
    fn validate(&self, key: &str, node: &str) -> Result<Inbound, ConfigError> {
        let err =
            |field: &str, message: String| ConfigError::new(format!("{key}.{field}"), message);
        let subject = Pattern::parse(Side::Nats, &self.subject.replace(NODE_PLACEHOLDER, node))
            .map_err(|m| err("subject", m))?;
        let to = Pattern::parse(Side::Mqtt, &self.to).map_err(|m| err("to", m))?;
        let route = Route::new(subject, to).map_err(|m| err("to", m))?;
        if self.qos > 2 {
            return Err(err("qos", format!("{} is not 0, 1 or 2", self.qos)));
        }
        for (field, name) in [("durable", &self.durable), ("stream", &self.stream)] {
            if let Some(name) = name
                && (name.is_empty()
                    || name.contains(['.', '*', '>', '/', '\\'])
                    || name.chars().any(char::is_whitespace))
            {
                return Err(err(
                    field,
                    format!("{name:?} is not a valid JetStream name"),
                ));
            }
        }
        if self.ack_wait.is_zero() {
            return Err(err("ack_wait", "must be more than 0".into()));
        }
        if self.stream.is_some() && self.durable.is_none() {
            return Err(err("stream", "only used with durable".into()));
        }
        Ok(Inbound {
            route,
            durable: self.durable.clone(),
            stream: self.stream.clone(),
            qos: self.qos,
            ack_wait: self.ack_wait,
        })
    }
}

/// The host name, made a valid NATS token.
fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tidewire".to_owned());
    host.chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '>') || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[bridge]` section as the server reads it, NATS only.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        nats: Vec<NatsBridgeConfig>,
    }

    impl Section {
        fn validate(&self, key: &str) -> Result<Vec<NatsBridge>, ConfigError> {
            NatsBridgeConfig::validate_all(&self.nats, &format!("{key}.nats"))
        }
    }

    fn section(text: &str) -> Section {
        toml::from_str(text).expect("parse")
    }

    #[test]
    fn parses_the_issue_example() {
        let bridges = section(
            r#"
            [[nats]]
            name = "uplink"
            url = "nats://127.0.0.1:4222"
            node = "node1"
            [[nats.outbound]]
            from = "sensors/#"
            subject = "edge.{node}.>"
            jetstream = true
            [[nats.inbound]]
            subject = "cmd.{node}.>"
            to = "cmd/#"
            durable = "tidewire-node1"
            "#,
        )
        .validate("bridge")
        .expect("valid");
        let b = &bridges[0];
        assert_eq!(b.urls, ["nats://127.0.0.1:4222"]);
        assert_eq!(b.auth, Auth::None);
        let out = &b.outbound[0];
        assert!(out.jetstream);
        assert_eq!(out.start, Start::Latest);
        assert_eq!(out.route.map("sensors/a").as_deref(), Ok("edge.node1.a"));
        let inb = &b.inbound[0];
        assert_eq!(inb.durable.as_deref(), Some("tidewire-node1"));
        assert_eq!(inb.route.map("cmd.node1.open").as_deref(), Ok("cmd/open"));
        assert_eq!(inb.qos, 1);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[[nats]]\nname = \"b\"\nurl = \"nats://h:4222\"\n";
        let out = "[[nats.outbound]]\nfrom = \"a/#\"\nsubject = \"x.>\"\n";
        let cases = [
            (format!("{base}user = \"u\"\n{out}"), "bridge.nats[0].user"),
            (
                format!("{base}token = \"t\"\nnkey = \"n\"\n{out}"),
                "bridge.nats[0].user",
            ),
            (
                format!("{base}node = \"a.b\"\n{out}"),
                "bridge.nats[0].node",
            ),
            (
                format!("{base}[[nats.outbound]]\nfrom = \"a/+\"\nsubject = \"x.>\"\n"),
                "bridge.nats[0].outbound[0].subject",
            ),
            (
                format!("{base}[[nats.outbound]]\nfrom = \"a/#/b\"\nsubject = \"x.>\"\n"),
                "bridge.nats[0].outbound[0].from",
            ),
            (
                format!("{base}[[nats.inbound]]\nsubject = \"a.*\"\nto = \"x/+\"\nqos = 3\n"),
                "bridge.nats[0].inbound[0].qos",
            ),
            (
                format!("{base}{out}[[nats]]\nname = \"b\"\nurl = \"nats://h:4222\"\n{out}"),
                "bridge.nats[1].name",
            ),
            (
                "[[nats]]\nname = \"b\"\nurl = []\n".to_owned() + out,
                "bridge.nats[0].url",
            ),
        ];
        for (text, key) in cases {
            let err = section(&text).validate("bridge").expect_err(&text);
            assert_eq!(err.key, key, "{text}");
        }
        let typo = toml::from_str::<Section>(&format!("{base}{out}jetsream = true\n"))
            .expect_err("unknown key");
        assert!(typo.to_string().contains("jetsream"), "{typo}");
    }

    #[test]
    fn a_bridge_without_links_serves_fan_out_targets() {
        let bridges = section("[[nats]]\nname = \"edge\"\nurl = \"nats://h:4222\"\n")
            .validate("bridge")
            .expect("valid");
        assert!(bridges[0].outbound.is_empty() && bridges[0].inbound.is_empty());
    }

    #[test]
    fn default_node_is_one_token() {
        let node = default_node();
        assert!(!node.is_empty());
        assert!(!node.contains(['.', '*', '>']));
    }
}
