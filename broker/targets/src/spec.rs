//! A target as configured: a URL-like string ([`TargetSpec`]) and the
//! options some kinds take ([`TargetOptions`]). Parsing checks the shape;
//! whether the queue, stream or bridge exists is checked when the target
//! is built ([`crate::Targets::build`]).
//!
//! | written | delivers to |
//! |---|---|
//! | `http://host/path`, `https://...` | a webhook: one POST per message |
//! | `queue:NAME` | a tidewire queue |
//! | `mqtt:TOPIC` | an MQTT publish to `TOPIC` (`mqtt:` alone: the message's own topic) |
//! | `stream:NAME` | an append to a stream |
//! | `nats:BRIDGE/SUBJECT` | a NATS publish through the configured bridge `BRIDGE` |
//! | `mailto:a@example.com,b@example.com` | an email through `[smtp]` |

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewire_core::ConfigError;

/// Where a target delivers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetSpec {
    /// A webhook (`http` or `https`).
    Http {
        /// The URL POSTed to.
        url: String,
    },
    /// A tidewire queue.
    Queue {
        /// Its name.
        name: String,
    },
    /// An MQTT publish.
    Mqtt {
        /// The topic published to; none: the message's own topic.
        topic: Option<String>,
    },
    /// An append to a tidewire stream.
    Stream {
        /// Its name.
        name: String,
    },
    /// A NATS publish through a configured bridge.
    Nats {
        /// The bridge's name (`[[bridges.nats]]`).
        bridge: String,
        /// The subject.
        subject: String,
    },
    /// An email through `[smtp]`.
    Email {
        /// The recipients.
        to: Vec<String>,
    },
}

impl TargetSpec {
    /// The kind, as metrics and the API name it: `http`, `queue`, `mqtt`,
    /// `stream`, `nats` or `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetSpec::Http { .. } => "http",
            TargetSpec::Queue { .. } => "queue",
            TargetSpec::Mqtt { .. } => "mqtt",
            TargetSpec::Stream { .. } => "stream",
            TargetSpec::Nats { .. } => "nats",
            TargetSpec::Email { .. } => "email",
        }
    }

    /// Parses a target, naming `key` in the error.
    pub fn parse(text: &str, key: &str) -> Result<TargetSpec, ConfigError> {
        text.parse()
            .map_err(|reason: String| ConfigError::new(key, reason))
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<TargetSpec, String> {
        let text = text.trim();
        let (scheme, rest) = text.split_once(':').ok_or_else(|| {
            format!(
                "{text:?} is not a target: write https://..., queue:NAME, mqtt:TOPIC, stream:NAME, nats:BRIDGE/SUBJECT or mailto:ADDRESS"
            )
        })?;
        let named = |what: &str| {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                Err(format!(
                    "{scheme}: needs a {what} without spaces, e.g. {scheme}:name"
                ))
            } else {
                Ok(rest.to_owned())
            }
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{text:?} has no host"));
                }
                Ok(TargetSpec::Http {
                    url: url.to_string(),
                })
            }
            "queue" => Ok(TargetSpec::Queue {
                name: named("queue name")?,
            }),
            "stream" => Ok(TargetSpec::Stream {
                name: named("stream name")?,
            }),
            "mqtt" => {
                if rest.is_empty() {
                    return Ok(TargetSpec::Mqtt { topic: None });
                }
                if rest.contains(['+', '#']) {
                    return Err(format!(
                        "mqtt:{rest}: a topic to publish to cannot hold wildcards"
                    ));
                }
                Ok(TargetSpec::Mqtt {
                    topic: Some(rest.to_owned()),
                })
            }
            "nats" => {
                let (bridge, subject) = rest
                    .split_once('/')
                    .filter(|(b, s)| !b.is_empty() && !s.is_empty())
                    .ok_or_else(|| {
                        format!("nats:{rest}: write nats:BRIDGE/SUBJECT, naming a [[bridges.nats]] entry")
                    })?;
                if subject.contains(char::is_whitespace) || subject.contains(['*', '>']) {
                    return Err(format!(
                        "nats:{rest}: a subject to publish to has no spaces or wildcards"
                    ));
                }
                Ok(TargetSpec::Nats {
                    bridge: bridge.to_owned(),
                    subject: subject.to_owned(),
                })
            }
            "mailto" => {
                let to: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                if to.is_empty() {
                    return Err("mailto: needs at least one address".to_owned());
                }
                if let Some(bad) = to.iter().find(|a| !looks_like_address(a)) {
                    return Err(format!("mailto: {bad:?} is not an email address"));
                }
                Ok(TargetSpec::Email { to })
            }
            other => Err(format!(
                "unknown target kind {other:?}: write https://..., queue:NAME, mqtt:TOPIC, stream:NAME, nats:BRIDGE/SUBJECT or mailto:ADDRESS"
            )),
        }
    }
}

/// `local@domain`, each part non-empty and without spaces.
fn looks_like_address(address: &str) -> bool {
    address.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && d.contains('.') && !address.contains(char::is_whitespace)
    })
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Http { url } => f.write_str(url),
            TargetSpec::Queue { name } => write!(f, "queue:{name}"),
            TargetSpec::Mqtt { topic } => write!(f, "mqtt:{}", topic.as_deref().unwrap_or("")),
            TargetSpec::Stream { name } => write!(f, "stream:{name}"),
            TargetSpec::Nats { bridge, subject } => write!(f, "nats:{bridge}/{subject}"),
            TargetSpec::Email { to } => write!(f, "mailto:{}", to.join(",")),
        }
    }
}

impl Serialize for TargetSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Options of some target kinds; the others ignore them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOptions {
    /// Webhooks: how long one request may take, connecting included
    /// (default 10 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Webhooks: a secret; each request then carries
    /// `X-Tidewire-Signature: sha256=HEX`, the HMAC-SHA256 of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// Webhooks: extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Email: the subject template (default `{subject}`, else
    /// `tidewire: {topic}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_subject: Option<String>,
    /// Email: the body template (default `{message}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_body: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for text in [
            "https://example.com/hook?x=1",
            "http://127.0.0.1:8080/",
            "queue:orders",
            "mqtt:alerts/out",
            "mqtt:",
            "stream:archive",
            "nats:edge/alerts.high",
            "mailto:ops@example.com,oncall@example.com",
        ] {
            let spec: TargetSpec = text.parse().expect(text);
            assert_eq!(spec.to_string(), text);
            assert_eq!(spec.to_string().parse::<TargetSpec>().expect("again"), spec);
        }
    }

    #[test]
    fn bad_targets_say_why() {
        for (text, says) in [
            ("orders", "not a target"),
            ("ftp://x", "unknown target kind"),
            ("https://", "https://"),
            ("queue:", "queue name"),
            ("mqtt:a/+/b", "wildcards"),
            ("nats:subject", "nats:BRIDGE/SUBJECT"),
            ("nats:b/a.>", "wildcards"),
            ("mailto:nobody", "not an email address"),
        ] {
            let error = TargetSpec::parse(text, "subscriptions[0].target").expect_err(text);
            assert_eq!(error.key, "subscriptions[0].target");
            assert!(error.message.contains(says), "{text}: {}", error.message);
        }
    }
}
