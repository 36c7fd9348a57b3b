//! [`EmailTarget`]: one email per message, through the SMTP server of
//! `[smtp]` ([`SmtpConfig`]).
//!
//! - One pooled SMTP transport ([`Mailer`]) serves every `mailto:` target;
//!   it is built with [`crate::Targets`]. TLS is rustls over ring with the
//!   OS roots, by STARTTLS (the default) or from the first byte.
//! - The subject and the body are [`Template`]s, checked when the target
//!   is built: `{topic}`, `{subject}`, `{message}`, `{message_id}`,
//!   `{timestamp}` and `{attr.NAME}`.
//! - A permanent refusal (5xx) rejects the message for good, except an
//!   authentication failure (530, 534, 535, 538), which is about the
//!   broker's credentials, not the message, and is retried like a
//!   transient refusal (4xx), a lost connection or a timeout. Reasons
//!   carry the server's reply.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use tidewire_core::ConfigError;

use crate::{Delivery, SinkError, Target, TargetOptions};

/// The port with `tls = "starttls"` (message submission).
pub const STARTTLS_PORT: u16 = 587;
/// The port with `tls = "tls"` (submission over TLS).
pub const TLS_PORT: u16 = 465;
/// The port with `tls = "none"` (plain SMTP).
pub const PLAIN_PORT: u16 = 25;
/// How long one SMTP command may wait for the server, connecting
/// included, unless `timeout` says otherwise.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept open for reuse.
pub const MAX_IDLE_CONNECTIONS: u32 = 4;
/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The subject of a message without one, when the target sets no
/// `email_subject`.
pub const DEFAULT_SUBJECT: &str = "tidewire: {topic}";
/// The body when the target sets no `email_body`.
pub const DEFAULT_BODY: &str = "{message}";
/// SMTP replies that refuse the broker's credentials, not the message.
const AUTH_FAILURES: [u16; 4] = [530, 534, 535, 538];

/// `[smtp]`: the server `mailto:` targets send through.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name (also the name its TLS certificate is
    /// checked against).
    pub host: String,
    /// Its port; default by `tls`: 587 for `starttls`, 465 for `tls`, 25
    /// for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is protected (default `starttls`).
    #[serde(default)]
    pub tls: SmtpTls,
    /// The user name to log in with (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password (with `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, `alerts@example.com` or `Tidewire <alerts@example.com>`.
    pub from: String,
    /// How long one SMTP command may wait for the server, connecting
    /// included (default 10 s).
    #[serde(default = "default_smtp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_smtp_timeout() -> Duration {
    DEFAULT_SMTP_TIMEOUT
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain at first, then STARTTLS, required: a server that does not
    /// offer it is not sent anything.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS: for a relay on the same host or network.
    None,
}

impl SmtpConfig {
    /// The port: `port`, else the one of the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => STARTTLS_PORT,
            SmtpTls::Tls => TLS_PORT,
            SmtpTls::None => PLAIN_PORT,
        })
    }

    /// Checks every field; `key` is where the table is (`smtp`), and an
    /// error names the field (`smtp.from`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.sender(key).map(drop)
    }

    /// Validates, answering the sender's mailbox.
    fn sender(&self, key: &str) -> Result<Mailbox, ConfigError> {
        let error =
            |field: &str, message: String| ConfigError::new(format!("{key}.{field}"), message);
        if self.host.is_empty() || self.host.contains(char::is_whitespace) {
            return Err(error("host", format!("{:?} is not a host name", self.host)));
        }
        if self.port == Some(0) {
            return Err(error("port", "must be from 1 to 65535".to_owned()));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(_)) if u.is_empty() => {
                return Err(error("username", "must not be empty".to_owned()));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(error(
                    "username",
                    "username and password go together".to_owned(),
                ));
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err(error("timeout", "must be more than 0".to_owned()));
        }
        self.from.parse::<Mailbox>().map_err(|e| {
            error(
                "from",
                format!("{:?} is not an email address: {e}", self.from),
            )
        })
    }
}

/// The SMTP transport (pooled connections) and the sender, built once
/// from `[smtp]` and shared by every `mailto:` target. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for failure reasons.
    server: String,
}

impl Mailer {
    /// Validates `config` (`key` names it in errors, e.g. `smtp`) and
    /// builds the transport. No connection is opened yet. Call it inside
    /// the tokio runtime: the pool starts a task that closes idle
    /// connections.
    pub fn new(config: &SmtpConfig, key: &str) -> Result<Mailer, ConfigError> {
        let from = config.sender(key)?;
        let host = config.host.as_str();
        let builder = match config.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| ConfigError::new(format!("{key}.tls"), format!("TLS for {host}: {e}")))?;
        let mut builder = builder
            .port(config.port())
            .timeout(Some(config.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(MAX_IDLE_CONNECTIONS)
                    .idle_timeout(IDLE_TIMEOUT),
            );
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            server: format!("{host}:{}", config.port()),
        })
    }
}

/// Sends each message as an email to a fixed list of recipients.
#[derive(Debug, Clone)]
pub struct EmailTarget {
    mailer: Mailer,
    to: Vec<Mailbox>,
    /// None: the message's own subject, else [`DEFAULT_SUBJECT`].
    subject: Option<Template>,
    body: Template,
    default_subject: Template,
}

impl EmailTarget {
    /// Mails `to` through `mailer`, with `options`' subject and body
    /// templates; `key` names the target in errors (an address lettre
    /// cannot parse, an unknown placeholder).
    pub fn new(
        mailer: Mailer,
        to: &[String],
        options: &TargetOptions,
        key: &str,
    ) -> Result<EmailTarget, ConfigError> {
        let error = |message: String| ConfigError::new(key, message);
        let to = to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| error(format!("mailto: {a:?} is not an email address: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(error("mailto: needs at least one address".to_owned()));
        }
        let subject = options
            .email_subject
            .as_deref()
            .map(|t| Template::parse(t).map_err(|m| error(format!("email_subject: {m}"))))
            .transpose()?;
        let body = Template::parse(options.email_body.as_deref().unwrap_or(DEFAULT_BODY))
            .map_err(|m| error(format!("email_body: {m}")))?;
        let default_subject = Template::parse(DEFAULT_SUBJECT).map_err(error)?;
        Ok(EmailTarget {
            mailer,
            to,
            subject,
            body,
            default_subject,
        })
    }

    /// The email for `delivery`.
    fn message(&self, delivery: &Delivery) -> Result<Message, String> {
        let subject = match (&self.subject, &delivery.subject) {
            (Some(template), _) => template.render(delivery),
            (None, Some(subject)) => subject.clone(),
            (None, None) => self.default_subject.render(delivery),
        };
        // A header is one line.
        let subject: String = subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut builder = Message::builder()
            .from(self.mailer.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .message_id(message_id(&delivery.message_id));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(self.body.render(delivery))
            .map_err(|e| format!("the email cannot be built: {e}"))
    }
}

/// `<ID@tidewire>` from the message's id, so a resent message keeps its
/// Message-ID; None (lettre makes one up) for an id that has characters
/// a Message-ID cannot hold.
fn message_id(id: &str) -> Option<String> {
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    plain.then(|| format!("<{id}@tidewire>"))
}

impl Target for EmailTarget {
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>> {
        let message = self.message(&delivery);
        let mailer = self.mailer.clone();
        Box::pin(async move {
            let message =
                message.map_err(|m| SinkError::rejected(format!("SMTP {}: {m}", mailer.server)))?;
            match mailer.transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) => Err(smtp_error(&mailer.server, &e)),
            }
        })
    }
}

/// A 5xx other than an authentication failure rejects the message;
/// anything else may pass.
fn smtp_error(server: &str, e: &lettre::transport::smtp::Error) -> SinkError {
    let reason = format!("SMTP {server}: {e}");
    let auth = e
        .status()
        .is_some_and(|code| AUTH_FAILURES.contains(&u16::from(code)));
    if e.is_permanent() && !auth {
        SinkError::rejected(reason)
    } else {
        SinkError::retry(reason)
    }
}

/// A subject or body template: text with placeholders, checked once.
///
/// | placeholder | becomes |
/// |---|---|
/// | `{topic}` | the message's topic |
/// | `{subject}` | its subject, or nothing |
/// | `{message}` | its body, as UTF-8 (invalid bytes replaced) |
/// | `{message_id}` | its id |
/// | `{timestamp}` | its publish time, RFC 3339 in UTC |
/// | `{attr.NAME}` | its string attribute `NAME`, or nothing |
///
/// `{{` and `}}` are a literal `{` and `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Topic,
    Subject,
    Message,
    MessageId,
    Timestamp,
    Attribute(String),
}

impl Template {
    /// Parses `text`; an error names an unknown placeholder or an
    /// unclosed `{`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
                literal.push_str(&tail[..1]);
                rest = after;
                continue;
            }
            if let Some(after) = tail.strip_prefix('}') {
                literal.push('}');
                rest = after;
                continue;
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("{{ without a closing }} in {text:?}"))?;
            let name = &tail[1..end];
            let part = match name {
                "topic" => Part::Topic,
                "subject" => Part::Subject,
                "message" => Part::Message,
                "message_id" => Part::MessageId,
                "timestamp" => Part::Timestamp,
                _ => match name.strip_prefix("attr.") {
                    Some(attribute) if !attribute.is_empty() => {
                        Part::Attribute(attribute.to_owned())
                    }
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}}: use {{topic}}, {{subject}}, {{message}}, {{message_id}}, {{timestamp}} or {{attr.NAME}}"
                        ));
                    }
                },
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The text for `delivery`.
    pub fn render(&self, delivery: &Delivery) -> String {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Topic => text.push_str(&delivery.topic),
                Part::Subject => text.push_str(delivery.subject.as_deref().unwrap_or("")),
                Part::Message => text.push_str(&String::from_utf8_lossy(&delivery.body)),
                Part::MessageId => text.push_str(&delivery.message_id),
                Part::Timestamp => text.push_str(&rfc3339(delivery.timestamp_ms)),
                Part::Attribute(name) => text.push_str(
                    delivery
                        .attributes
                        .get(name)
                        .and_then(|a| a.string.as_deref())
                        .unwrap_or(""),
                ),
            }
        }
        text
    }
}

/// `2024-05-01T12:00:00.000Z`; the raw milliseconds if out of range.
fn rfc3339(timestamp_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(timestamp_ms).map_or_else(
        || timestamp_ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use tidewire_queues::Attribute;

    use super::*;

    fn delivery() -> Delivery {
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "severity".to_owned(),
            Attribute {
                data_type: "String".to_owned(),
                string: Some("high".to_owned()),
                binary: None,
            },
        );
        attributes.insert(
            "raw".to_owned(),
            Attribute {
                data_type: "Binary".to_owned(),
                string: None,
                binary: Some(vec![1, 2]),
            },
        );
        Delivery {
            message_id: "m-1".to_owned(),
            topic: "plant/boiler/temp".to_owned(),
            subject: Some("Too hot".to_owned()),
            body: Bytes::from_static(b"98.5 \xff"),
            content_type: None,
            attributes,
            headers: Vec::new(),
            timestamp_ms: 1_714_564_800_123,
        }
    }

    fn render(template: &str) -> String {
        Template::parse(template)
            .expect(template)
            .render(&delivery())
    }

    #[test]
    fn every_placeholder_renders() {
        assert_eq!(
            render("[{topic}] {subject}: {message} ({message_id} at {timestamp})"),
            "[plant/boiler/temp] Too hot: 98.5 \u{fffd} (m-1 at 2024-05-01T12:00:00.123Z)"
        );
        assert_eq!(
            render("{attr.severity}/{attr.raw}/{attr.missing}"),
            "high//"
        );
        assert_eq!(render("{message}"), "98.5 \u{fffd}");
    }

    #[test]
    fn text_and_escapes_pass_through() {
        assert_eq!(render(""), "");
        assert_eq!(render("no placeholders"), "no placeholders");
        assert_eq!(
            render("{{\"topic\": \"{topic}\"}}"),
            "{\"topic\": \"plant/boiler/temp\"}"
        );
        assert_eq!(render("a } b"), "a } b");
        let mut no_subject = delivery();
        no_subject.subject = None;
        assert_eq!(
            Template::parse("<{subject}>")
                .expect("parses")
                .render(&no_subject),
            "<>"
        );
    }

    #[test]
    fn unknown_placeholders_are_named() {
        for (template, says) in [
            ("{topik}", "unknown placeholder {topik}"),
            ("x {attr.} y", "unknown placeholder {attr.}"),
            ("{}", "unknown placeholder {}"),
            ("{message", "without a closing }"),
        ] {
            let error = Template::parse(template).expect_err(template);
            assert!(error.contains(says), "{template}: {error}");
        }
    }

    #[test]
    fn smtp_config_names_the_bad_field() {
        let good = SmtpConfig {
            host: "smtp.example.com".to_owned(),
            port: None,
            tls: SmtpTls::Starttls,
            username: Some("u".to_owned()),
            password: Some("p".to_owned()),
            from: "Tidewire <alerts@example.com>".to_owned(),
            timeout: DEFAULT_SMTP_TIMEOUT,
        };
        good.validate("smtp").expect("valid");
        assert_eq!(good.port(), STARTTLS_PORT);
        assert!(
            !format!("{good:?}").contains("\"p\""),
            "the password is not shown"
        );
        type Spoil = fn(&mut SmtpConfig);
        let cases: [(Spoil, &str); 5] = [
            (|c| c.host = String::new(), "smtp.host"),
            (|c| c.port = Some(0), "smtp.port"),
            (|c| c.password = None, "smtp.username"),
            (|c| c.from = "nobody".to_owned(), "smtp.from"),
            (|c| c.timeout = Duration::ZERO, "smtp.timeout"),
        ];
        for (spoil, key) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            assert_eq!(bad.validate("smtp").expect_err(key).key, key);
        }
    }

    #[test]
    fn smtp_config_parses_with_defaults_and_refuses_unknown_keys() {
        let config: SmtpConfig =
            serde_json::from_str(r#"{"host": "mx", "tls": "tls", "from": "a@example.com"}"#)
                .expect("parses");
        assert_eq!(config.port(), TLS_PORT);
        assert_eq!(config.timeout, DEFAULT_SMTP_TIMEOUT);
        let none: SmtpConfig = serde_json::from_str(
            r#"{"host": "mx", "tls": "none", "from": "a@example.com", "timeout": "3s"}"#,
        )
        .expect("parses");
        assert_eq!(
            (none.port(), none.timeout),
            (PLAIN_PORT, Duration::from_secs(3))
        );
        let error = serde_json::from_str::<SmtpConfig>(
            r#"{"host": "mx", "from": "a@example.com", "user": "x"}"#,
        )
        .expect_err("unknown key");
        assert!(error.to_string().contains("user"), "{error}");
    }

    #[test]
    fn message_ids_are_kept_when_they_fit() {
        assert_eq!(
            message_id("3f2a-11.x_y").as_deref(),
            Some("<3f2a-11.x_y@tidewire>")
        );
        assert_eq!(message_id("a b"), None);
        assert_eq!(message_id(""), None);
    }
}
