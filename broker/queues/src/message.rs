//! A queued message as the queue's log stores it, and as a consumer gets
//! it. The log's record is the ordinary stream record ([`Message`]): the
//! topic and client id of an MQTT publish (empty topic for API sends), its
//! MQTT 5 properties, and a payload that is a small header followed by the
//! body:
//!
//! ```text
//! header_len u32 LE | header (JSON, absent when empty) | body
//! ```
//!
//! The header holds what SQS adds to a message: its attributes, FIFO group
//! and deduplication id, a per-message delay, and for a message moved from
//! another queue (dead letters, redrive) its identity and history.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use tidewire_storage::{Message, Properties};

use crate::error::QueueError;

/// A message attribute, as SQS has them: a data type (`String`, `Number`,
/// `Binary`, optionally with a `.custom` suffix) and a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// `String`, `Number` or `Binary`, optionally followed by `.label`.
    #[serde(rename = "t")]
    pub data_type: String,
    /// The value of a `String` or `Number` attribute.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// The value of a `Binary` attribute.
    #[serde(
        rename = "b",
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub binary: Option<Vec<u8>>,
}

/// Where a message moved from another queue came from, and its history
/// there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The queue it was moved from.
    pub from: String,
    /// Its MessageId there (kept).
    pub id: String,
    /// When it was first sent, ms since the Unix epoch.
    pub sent_ms: i64,
    /// Receives so far.
    pub receive_count: u32,
    /// Its first receive, ms since the Unix epoch (0: never).
    pub first_receive_ms: i64,
}

/// The header in front of a queued body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Message attributes, by name.
    #[serde(rename = "a", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Attribute>,
    /// FIFO message group.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// FIFO deduplication id.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub dedup_id: Option<String>,
    /// Per-message delay in ms, when it differs from the queue's.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Set on a message moved from another queue.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
}

impl Header {
    fn is_empty(&self) -> bool {
        *self == Header::default()
    }
}

/// Builds the record for a queued message.
pub fn encode(
    topic: &str,
    client_id: &str,
    properties: Properties,
    header: &Header,
    body: &[u8],
) -> Message {
    let header_json = if header.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(header).unwrap_or_default()
    };
    let mut payload = Vec::with_capacity(4 + header_json.len() + body.len());
    payload.extend_from_slice(&u32::try_from(header_json.len()).unwrap_or(0).to_le_bytes());
    payload.extend_from_slice(&header_json);
    payload.extend_from_slice(body);
    Message {
        topic: topic.to_owned(),
        client_id: client_id.to_owned(),
        qos: 1,
        retain: false,
        payload: Bytes::from(payload),
        properties,
    }
}

/// Splits a queued record's payload into its header and body. A payload
/// that is not one (damage the CRC did not catch) reads as a bare body.
pub fn decode(payload: &Bytes) -> (Header, Bytes) {
    let mut rest = payload.clone();
    if rest.len() < 4 {
        return (Header::default(), rest);
    }
    let len = rest.get_u32_le() as usize;
    if len > rest.len() {
        return (Header::default(), payload.clone());
    }
    let header = if len == 0 {
        Header::default()
    } else {
        serde_json::from_slice(&rest[..len]).unwrap_or_default()
    };
    rest.advance(len);
    (header, rest)
}

/// A message as a consumer receives it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The message's id (an SQS `MessageId`).
    pub message_id: String,
    /// The handle of this receive, for delete and change visibility.
    pub receipt_handle: String,
    /// The body.
    pub body: Bytes,
    /// Message attributes, by name (an MQTT message's user properties are
    /// `String` attributes).
    pub attributes: BTreeMap<String, Attribute>,
    /// The MQTT topic it was published to; empty for API sends.
    pub topic: String,
    /// Who sent it: an MQTT client id, or the sending user.
    pub sender: String,
    /// When it was sent, ms since the Unix epoch.
    pub sent_ms: i64,
    /// Receives so far, this one included.
    pub receive_count: u32,
    /// Its first receive, ms since the Unix epoch.
    pub first_receive_ms: i64,
    /// FIFO: its group, deduplication id and sequence number.
    pub group: Option<String>,
    pub dedup_id: Option<String>,
    pub sequence_number: Option<String>,
}

/// What a send gives a queue.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The body.
    pub body: Bytes,
    /// Message attributes.
    pub attributes: BTreeMap<String, Attribute>,
    /// Delay for this message (standard queues); none: the queue's.
    pub delay: Option<std::time::Duration>,
    /// FIFO: the message group (required).
    pub group: Option<String>,
    /// FIFO: the deduplication id (required unless content-based).
    pub dedup_id: Option<String>,
    /// Who sends it.
    pub sender: String,
}

impl Outgoing {
    /// Its size against the queue's limit, as SQS counts it: the body and
    /// each attribute's name, data type and value.
    pub fn size(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(name, a)| {
                name.len()
                    + a.data_type.len()
                    + a.string.as_ref().map_or(0, String::len)
                    + a.binary.as_ref().map_or(0, Vec::len)
            })
            .sum();
        self.body.len() + attributes
    }
}

/// What a send answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message's id.
    pub message_id: String,
    /// FIFO: its sequence number.
    pub sequence_number: Option<String>,
    /// True when a FIFO queue took it as a duplicate of an earlier send
    /// (the earlier message's id is answered, nothing is stored).
    pub duplicate: bool,
}

/// Most message attributes a message may carry, as in SQS.
pub const MAX_ATTRIBUTES: usize = 10;
/// Longest attribute name and data type, as in SQS.
const MAX_ATTRIBUTE_NAME: usize = 256;

/// Checks message attributes as SQS does: at most 10; names of letters,
/// digits, `_`, `-` and `.` (not first or last, never two in a row, and
/// not starting with `AWS.` or `Amazon.`); a data type of `String`,
/// `Number` or `Binary`, optionally followed by `.label`; a non-empty
/// value of that type (a `Number` must be a number).
pub fn check_attributes(attributes: &BTreeMap<String, Attribute>) -> Result<(), QueueError> {
    let invalid = |message: String| QueueError::invalid("MessageAttributes", message);
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(invalid(format!(
            "{} attributes, more than the limit of {MAX_ATTRIBUTES}",
            attributes.len()
        )));
    }
    for (name, attribute) in attributes {
        check_attribute_name(name).map_err(|m| invalid(format!("attribute {name:?}: {m}")))?;
        check_attribute_value(attribute)
            .map_err(|m| invalid(format!("attribute {name:?}: {m}")))?;
    }
    Ok(())
}

fn check_attribute_name(name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME {
        Err(format!("a name is 1 to {MAX_ATTRIBUTE_NAME} characters"))
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Err("a name holds only letters, digits, '_', '-' and '.'".into())
    } else if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        Err("a name cannot start or end with '.', or have two in a row".into())
    } else if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        Err("names starting with AWS. or Amazon. are reserved".into())
    } else {
        Ok(())
    }
}

fn check_attribute_value(attribute: &Attribute) -> Result<(), String> {
    let data_type = &attribute.data_type;
    let (base, label) = data_type
        .split_once('.')
        .map_or((data_type.as_str(), None), |(b, l)| (b, Some(l)));
    if data_type.len() > MAX_ATTRIBUTE_NAME || label.is_some_and(str::is_empty) {
        return Err(format!("invalid data type {data_type:?}"));
    }
    match (base, &attribute.string, &attribute.binary) {
        ("String", Some(s), None) if !s.is_empty() => Ok(()),
        ("Number", Some(s), None) => {
            if s.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                Ok(())
            } else {
                Err(format!("{s:?} is not a number"))
            }
        }
        ("Binary", None, Some(b)) if !b.is_empty() => Ok(()),
        ("String" | "Number" | "Binary", _, _) => {
            Err(format!("needs a non-empty value of type {base}"))
        }
        _ => Err(format!(
            "the data type must be String, Number or Binary, optionally followed by .label, not {data_type:?}"
        )),
    }
}

/// The `String` attributes an MQTT message carries: its user properties
/// (the first of repeated names) and its content type.
pub fn attributes_of_properties(properties: &Properties) -> BTreeMap<String, Attribute> {
    let mut out = BTreeMap::new();
    for (name, value) in &properties.user {
        out.entry(name.clone()).or_insert_with(|| Attribute {
            data_type: "String".into(),
            string: Some(value.clone()),
            binary: None,
        });
    }
    if let Some(content_type) = &properties.content_type {
        out.entry("content-type".into())
            .or_insert_with(|| Attribute {
                data_type: "String".into(),
                string: Some(content_type.clone()),
                binary: None,
            });
    }
    out
}

/// An SQS-style MessageId (a UUID's shape) from the queue's incarnation
/// and the message's offset: unique, and stored nowhere.
pub fn message_id(incarnation: u64, offset: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        incarnation >> 32,
        (incarnation >> 16) & 0xffff,
        incarnation & 0xffff,
        (offset >> 48) & 0xffff,
        offset & 0xffff_ffff_ffff
    )
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_body_round_trip() {
        let mut header = Header {
            group: Some("g".into()),
            ..Header::default()
        };
        header.attributes.insert(
            "bin".into(),
            Attribute {
                data_type: "Binary".into(),
                string: None,
                binary: Some(vec![0, 1, 255]),
            },
        );
        let record = encode("t", "c", Properties::default(), &header, b"hello");
        let (back, body) = decode(&record.payload);
        assert_eq!(back, header);
        assert_eq!(&body[..], b"hello");

        let plain = encode("", "c", Properties::default(), &Header::default(), b"{}");
        assert_eq!(plain.payload.len(), 4 + 2);
        assert_eq!(
            decode(&plain.payload),
            (Header::default(), Bytes::from_static(b"{}"))
        );
    }

    #[test]
    fn attributes_are_checked_as_sqs_does() {
        let string = |v: &str| Attribute {
            data_type: "String".into(),
            string: Some(v.into()),
            binary: None,
        };
        let of = |pairs: Vec<(&str, Attribute)>| {
            pairs
                .into_iter()
                .map(|(n, a)| (n.to_owned(), a))
                .collect::<BTreeMap<_, _>>()
        };
        let good = of(vec![
            ("a.b-c_d", string("x")),
            (
                "n",
                Attribute {
                    data_type: "Number.float".into(),
                    string: Some("-1.5e3".into()),
                    binary: None,
                },
            ),
            (
                "b",
                Attribute {
                    data_type: "Binary".into(),
                    string: None,
                    binary: Some(vec![0]),
                },
            ),
        ]);
        assert!(check_attributes(&good).is_ok());
        let number = |v: &str| Attribute {
            data_type: "Number".into(),
            string: Some(v.into()),
            binary: None,
        };
        let typed = |t: &str| Attribute {
            data_type: t.into(),
            string: Some("x".into()),
            binary: None,
        };
        for bad in [
            of(vec![("", string("x"))]),
            of(vec![(".a", string("x"))]),
            of(vec![("a..b", string("x"))]),
            of(vec![("a b", string("x"))]),
            of(vec![("AWS.x", string("x"))]),
            of(vec![("amazon.x", string("x"))]),
            of(vec![("a", string(""))]),
            of(vec![("a", number("ten"))]),
            of(vec![("a", typed("Text"))]),
            of(vec![("a", typed("String."))]),
            of((0..11)
                .map(|i| {
                    (
                        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"][i],
                        string("x"),
                    )
                })
                .collect()),
        ] {
            let err = check_attributes(&bad).expect_err("refused");
            assert!(
                matches!(&err, QueueError::InvalidParameter { name, .. } if name == "MessageAttributes"),
                "{err}"
            );
        }
    }

    #[test]
    fn message_ids_are_distinct_per_queue_and_offset() {
        assert_ne!(message_id(1, 2), message_id(1, 3));
        assert_ne!(message_id(1, 2), message_id(2, 2));
        assert_eq!(message_id(0xdead_beef_0000_0001, 7).len(), 36);
    }
}
