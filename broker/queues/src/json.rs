//! The JSON shapes of queue messages that `/api/v1/queues` and the `/ws`
//! protocol share: a message to send ([`SendRequest`]), what a send
//! answers ([`SentView`]), a receive's parameters ([`ReceiveRequest`]), a
//! received or peeked message ([`MessageView`]), and [`describe`], which
//! words a refusal in those requests' field names rather than SQS's
//! parameter names.
//!
//! A body travels as text: `"body"` is any JSON value (a string is sent as
//! its text, anything else as its JSON text) and `"body_base64"` carries
//! bytes. A received body that is UTF-8 comes back in `"body"`; anything
//! else as `"body_base64"` with `"body": null`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{MAX_DELAY, MAX_RECEIVE_WAIT, MAX_VISIBILITY};
use crate::error::QueueError;
use crate::message::{Attribute, Delivered, Outgoing, Sent};
use crate::queue::MAX_RECEIVE;
use crate::registry::ReceiveOptions;

/// One message to send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Any JSON value: a string is sent as its text, anything else as its
    /// JSON text, as written.
    pub body: Option<Box<RawValue>>,
    /// Or: the body's bytes, base64.
    pub body_base64: Option<String>,
    /// Message attributes, by name.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeJson>,
    /// Standard queues: hide the message this long (at most 15 min).
    pub delay_ms: Option<u64>,
    /// FIFO: the message group.
    pub group: Option<String>,
    /// FIFO: the deduplication id.
    pub dedup_id: Option<String>,
}

/// `{"type": "String"|"Number"|"Binary"[.label], "value": TEXT}`; a
/// `Binary` value is base64.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttributeJson {
    /// The data type.
    #[serde(rename = "type")]
    pub data_type: String,
    /// The value; base64 for `Binary` types.
    pub value: String,
}

impl SendRequest {
    /// The message to give the queue, sent by `sender`.
    pub fn into_outgoing(self, sender: String) -> Result<Outgoing, QueueError> {
        let body = match (self.body, self.body_base64) {
            (Some(_), Some(_)) => {
                return Err(QueueError::invalid(
                    "body",
                    "give either body or body_base64, not both",
                ));
            }
            (None, None) => {
                return Err(QueueError::invalid(
                    "body",
                    "a message needs a body (or body_base64)",
                ));
            }
            (Some(raw), None) => text_of(&raw),
            (None, Some(encoded)) => BASE64
                .decode(encoded.trim())
                .map(Bytes::from)
                .map_err(|e| QueueError::invalid("body_base64", format!("not base64: {e}")))?,
        };
        if let Some(ms) = self.delay_ms {
            in_range("delay_ms", ms, 0, MAX_DELAY.as_millis() as u64)?;
        }
        let delay = self.delay_ms.map(Duration::from_millis);
        let mut attributes = BTreeMap::new();
        for (name, json) in self.attributes {
            let attribute = json.into_attribute().map_err(|message| {
                QueueError::invalid(&format!("attributes.{name}.value"), message)
            })?;
            attributes.insert(name, attribute);
        }
        Ok(Outgoing {
            body,
            attributes,
            delay,
            group: self.group,
            dedup_id: self.dedup_id,
            sender,
        })
    }
}

/// A JSON string's text, or any other JSON value as written.
fn text_of(raw: &RawValue) -> Bytes {
    match serde_json::from_str::<String>(raw.get()) {
        Ok(text) => Bytes::from(text),
        Err(_) => Bytes::copy_from_slice(raw.get().as_bytes()),
    }
}

impl AttributeJson {
    fn into_attribute(self) -> Result<Attribute, String> {
        if self.data_type.split('.').next() == Some("Binary") {
            let bytes = BASE64
                .decode(self.value.trim())
                .map_err(|e| format!("a Binary value is base64: {e}"))?;
            Ok(Attribute {
                data_type: self.data_type,
                string: None,
                binary: Some(bytes),
            })
        } else {
            Ok(Attribute {
                data_type: self.data_type,
                string: Some(self.value),
                binary: None,
            })
        }
    }

    fn of(attribute: Attribute) -> AttributeJson {
        let value = match (attribute.string, attribute.binary) {
            (Some(text), _) => text,
            (None, Some(bytes)) => BASE64.encode(bytes),
            (None, None) => String::new(),
        };
        AttributeJson {
            data_type: attribute.data_type,
            value,
        }
    }
}

/// A receive's parameters: `max` messages (1 to 10, default 1), a long
/// poll of `wait_ms` (at most 20 s; default the queue's `receive_wait`),
/// hidden for `visibility_ms` (at most 12 h; default the queue's).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    /// Most messages to receive.
    pub max: Option<usize>,
    /// How long to wait for a first message.
    pub wait_ms: Option<u64>,
    /// How long the received messages stay hidden.
    pub visibility_ms: Option<u64>,
}

impl ReceiveRequest {
    /// The options for [`crate::Queues::receive`], each checked against
    /// its range.
    pub fn options(&self) -> Result<ReceiveOptions, QueueError> {
        let max = self.max.unwrap_or(1);
        in_range("max", max as u64, 1, MAX_RECEIVE as u64)?;
        let millis = |field: &str, value: Option<u64>, max: Duration| {
            value
                .map(|ms| in_range(field, ms, 0, max.as_millis() as u64).map(|()| ms))
                .transpose()
                .map(|ms| ms.map(Duration::from_millis))
        };
        Ok(ReceiveOptions {
            max: Some(max),
            wait: millis("wait_ms", self.wait_ms, MAX_RECEIVE_WAIT)?,
            visibility: millis("visibility_ms", self.visibility_ms, MAX_VISIBILITY)?,
        })
    }
}

/// Refuses a `value` of `field` outside `min..=max`.
pub fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), QueueError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(QueueError::invalid(
            field,
            format!("must be from {min} to {max}, not {value}"),
        ))
    }
}

/// What a send answers.
#[derive(Debug, Serialize)]
pub struct SentView {
    /// The message's id.
    pub message_id: String,
    /// FIFO: its sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    /// True when a FIFO queue took it as a duplicate of an earlier send.
    pub duplicate: bool,
}

impl From<Sent> for SentView {
    fn from(sent: Sent) -> SentView {
        SentView {
            message_id: sent.message_id,
            sequence_number: sent.sequence_number,
            duplicate: sent.duplicate,
        }
    }
}

/// A received (or peeked) message.
#[derive(Debug, Serialize)]
pub struct MessageView {
    message_id: String,
    /// For delete and visibility changes; left out of a peek.
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt_handle: Option<String>,
    /// The body as UTF-8 text; null when it is not UTF-8.
    body: Option<String>,
    /// The body's bytes as base64, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    attributes: BTreeMap<String, AttributeJson>,
    /// The MQTT topic it was published to; null for a send.
    topic: Option<String>,
    /// An MQTT client id, or the sending user.
    sender: String,
    /// When it was sent, ms since the Unix epoch.
    sent_ts: i64,
    /// Receives so far, this one included.
    receive_count: u32,
    /// Its first receive, ms since the Unix epoch; null if never.
    first_receive_ts: Option<i64>,
    group: Option<String>,
    dedup_id: Option<String>,
    sequence_number: Option<String>,
}

impl From<Delivered> for MessageView {
    fn from(m: Delivered) -> MessageView {
        let (body, body_base64) = match std::str::from_utf8(&m.body) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(BASE64.encode(&m.body))),
        };
        MessageView {
            message_id: m.message_id,
            receipt_handle: Some(m.receipt_handle).filter(|h| !h.is_empty()),
            body,
            body_base64,
            attributes: m
                .attributes
                .into_iter()
                .map(|(name, a)| (name, AttributeJson::of(a)))
                .collect(),
            topic: Some(m.topic).filter(|t| !t.is_empty()),
            sender: m.sender,
            sent_ts: m.sent_ms,
            receive_count: m.receive_count,
            first_receive_ts: Some(m.first_receive_ms).filter(|ms| *ms > 0),
            group: m.group,
            dedup_id: m.dedup_id,
            sequence_number: m.sequence_number,
        }
    }
}

/// The request field that an engine parameter (named as in SQS) is.
pub fn field_of(parameter: &str) -> &str {
    match parameter {
        "MaxNumberOfMessages" => "max",
        "WaitTimeSeconds" => "wait_ms",
        "VisibilityTimeout" => "visibility_ms",
        "DelaySeconds" => "delay_ms",
        "MessageGroupId" => "group",
        "MessageDeduplicationId" => "dedup_id",
        "MessageAttributes" => "attributes",
        "DestinationArn" => "destination",
        "SourceArn" => "queue",
        "MaxNumberOfMessagesPerSecond" => "per_second",
        "TaskHandle" => "task",
        other => other,
    }
}

/// A refusal in the words of the JSON requests: a bad parameter is named
/// by its field there.
pub fn describe(error: &QueueError) -> String {
    match error {
        QueueError::InvalidParameter { name, message } => {
            format!("{}: {message}", field_of(name))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> SendRequest {
        serde_json::from_str(text).expect("a send request")
    }

    #[test]
    fn bodies_and_attributes_decode() {
        let out = request(
            r#"{"body":{"t": 1},"attributes":{"n":{"type":"Number","value":"2"},
                "b":{"type":"Binary","value":"AAE="}},"delay_ms":5}"#,
        )
        .into_outgoing("me".into())
        .expect("valid");
        assert_eq!(&out.body[..], br#"{"t": 1}"#);
        assert_eq!(out.attributes["b"].binary.as_deref(), Some(&[0u8, 1][..]));
        assert_eq!(out.attributes["n"].string.as_deref(), Some("2"));
        assert_eq!(out.delay, Some(Duration::from_millis(5)));
        let text = request(r#"{"body":"hi \"you\""}"#)
            .into_outgoing(String::new())
            .expect("valid");
        assert_eq!(&text.body[..], b"hi \"you\"");
        let bytes = request(r#"{"body_base64":"/wA="}"#)
            .into_outgoing(String::new())
            .expect("valid");
        assert_eq!(&bytes.body[..], &[0xff, 0][..]);

        for (bad, field) in [
            (r#"{}"#, "body"),
            (r#"{"body":"a","body_base64":"YQ=="}"#, "body"),
            (r#"{"body_base64":"%%"}"#, "body_base64"),
            (r#"{"body":"a","delay_ms":900001}"#, "delay_ms"),
            (
                r#"{"body":"a","attributes":{"x":{"type":"Binary","value":"!"}}}"#,
                "attributes.x.value",
            ),
        ] {
            let err = request(bad).into_outgoing(String::new()).expect_err(bad);
            assert!(
                describe(&err).starts_with(&format!("{field}: ")),
                "{bad}: {err}"
            );
        }
        assert!(serde_json::from_str::<SendRequest>(r#"{"body":"a","bdoy":1}"#).is_err());
    }

    #[test]
    fn receive_parameters_have_ranges() {
        let options = ReceiveRequest {
            max: Some(10),
            wait_ms: Some(20_000),
            visibility_ms: Some(0),
        }
        .options()
        .expect("valid");
        assert_eq!(options.max, Some(10));
        assert_eq!(options.wait, Some(Duration::from_secs(20)));
        assert_eq!(
            ReceiveRequest::default().options().expect("valid").max,
            Some(1)
        );
        for (bad, field) in [
            (
                ReceiveRequest {
                    max: Some(0),
                    ..Default::default()
                },
                "max",
            ),
            (
                ReceiveRequest {
                    max: Some(11),
                    ..Default::default()
                },
                "max",
            ),
            (
                ReceiveRequest {
                    wait_ms: Some(20_001),
                    ..Default::default()
                },
                "wait_ms",
            ),
            (
                ReceiveRequest {
                    visibility_ms: Some(43_200_001),
                    ..Default::default()
                },
                "visibility_ms",
            ),
        ] {
            let err = bad.options().expect_err(field);
            assert!(describe(&err).starts_with(&format!("{field}: ")), "{err}");
        }
    }

    #[test]
    fn messages_render_text_or_base64() {
        let delivered = |body: &'static [u8]| Delivered {
            message_id: "m".into(),
            receipt_handle: String::new(),
            body: Bytes::from_static(body),
            attributes: BTreeMap::new(),
            topic: String::new(),
            sender: "s".into(),
            sent_ms: 1,
            receive_count: 0,
            first_receive_ms: 0,
            group: None,
            dedup_id: None,
            sequence_number: None,
        };
        let text = serde_json::to_value(MessageView::from(delivered(b"hi"))).expect("json");
        assert_eq!(text["body"], "hi");
        assert!(text.get("body_base64").is_none());
        assert!(text.get("receipt_handle").is_none(), "a peek has none");
        assert!(text["topic"].is_null() && text["first_receive_ts"].is_null());
        let binary = serde_json::to_value(MessageView::from(delivered(&[0xff]))).expect("json");
        assert!(binary["body"].is_null());
        assert_eq!(binary["body_base64"], "/w==");
    }
}
