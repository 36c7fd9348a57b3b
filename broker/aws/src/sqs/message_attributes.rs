//! Message attributes on the wire: a send's (binary values in base64; the
//! queue checks names, types and values as SQS does), which of them a
//! receive asks for (`All`, `.*`, `prefix.*` or names), and the system
//! attributes a receive answers (`SenderId`, `SentTimestamp`, receive
//! counts, FIFO group, deduplication id and sequence number).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tidewire_queues::{Attribute, Delivered};

use super::codec::attribute_names;
use super::errors::invalid;
use crate::AwsError;

/// The system attributes a receive may ask for. `AWSTraceHeader` and
/// `DeadLetterQueueSourceArn` are never set on tidewire's messages.
const SYSTEM: [&str; 9] = [
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
];

/// An attribute value as a request carries it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeValue {
    data_type: Option<String>,
    string_value: Option<String>,
    /// Base64.
    binary_value: Option<String>,
}

/// An attribute value as an answer carries it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeOut<'a> {
    data_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    string_value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary_value: Option<String>,
}

/// The attributes of a send, decoded (the queue checks their names, types
/// and values as SQS does).
pub fn parse(
    given: Option<BTreeMap<String, AttributeValue>>,
) -> Result<BTreeMap<String, Attribute>, AwsError> {
    let mut out = BTreeMap::new();
    for (name, value) in given.unwrap_or_default() {
        let attribute = attribute(&name, value)?;
        out.insert(name, attribute);
    }
    Ok(out)
}

fn attribute(name: &str, value: AttributeValue) -> Result<Attribute, AwsError> {
    let fail = |reason: String| invalid("MessageAttributes", reason);
    let data_type = value
        .data_type
        .ok_or_else(|| fail(format!("the message attribute {name:?} has no DataType")))?;
    if data_type.split('.').next() == Some("Binary") {
        let bytes = value
            .binary_value
            .map(|b| STANDARD.decode(b))
            .transpose()
            .map_err(|e| fail(format!("the message attribute {name:?} is not base64: {e}")))?;
        return Ok(Attribute {
            data_type,
            string: None,
            binary: Some(bytes.unwrap_or_default()),
        });
    }
    if let Some(text) = &value.string_value
        && !is_sqs_text(text)
    {
        return Err(fail(format!(
            "the message attribute {name:?} contains characters SQS does not allow"
        )));
    }
    Ok(Attribute {
        data_type,
        string: Some(value.string_value.unwrap_or_default()),
        binary: None,
    })
}

/// True for text SQS accepts in a body or attribute: `#x9 | #xA | #xD |
/// #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`.
pub fn is_sqs_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

/// The attributes of `attributes` a receive asks for by `names`.
pub fn select<'a>(
    names: &[String],
    attributes: &'a BTreeMap<String, Attribute>,
) -> BTreeMap<&'a String, &'a Attribute> {
    attributes
        .iter()
        .filter(|(name, _)| {
            names.iter().any(|wanted| match wanted.as_str() {
                "All" | ".*" => true,
                pattern => match pattern.strip_suffix(".*") {
                    Some(prefix) => name
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('.')),
                    None => *name == pattern,
                },
            })
        })
        .collect()
}

/// Attributes as an answer carries them.
pub fn to_wire<'a>(
    attributes: impl IntoIterator<Item = (&'a String, &'a Attribute)>,
) -> BTreeMap<&'a str, AttributeOut<'a>> {
    attributes
        .into_iter()
        .map(|(name, a)| {
            (
                name.as_str(),
                AttributeOut {
                    data_type: &a.data_type,
                    string_value: a.string.as_deref(),
                    binary_value: a.binary.as_ref().map(|b| STANDARD.encode(b)),
                },
            )
        })
        .collect()
}

/// The system attributes a receive asks for (`All`, or names).
pub fn system_names<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeSet<&'static str>, AwsError> {
    attribute_names(names, &SYSTEM, &[])
}

/// The values of the `wanted` system attributes of a received message.
pub fn system_values(
    message: &Delivered,
    wanted: &BTreeSet<&'static str>,
) -> BTreeMap<&'static str, String> {
    wanted
        .iter()
        .filter_map(|&name| {
            let value = match name {
                "SenderId" => Some(message.sender.clone()),
                "SentTimestamp" => Some(message.sent_ms.to_string()),
                "ApproximateReceiveCount" => Some(message.receive_count.to_string()),
                "ApproximateFirstReceiveTimestamp" => Some(message.first_receive_ms.to_string()),
                "SequenceNumber" => message.sequence_number.clone(),
                "MessageDeduplicationId" => message.dedup_id.clone(),
                "MessageGroupId" => message.group.clone(),
                _ => None,
            };
            value.map(|v| (name, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(data_type: &str, string: Option<&str>, binary: Option<&str>) -> AttributeValue {
        AttributeValue {
            data_type: Some(data_type.into()),
            string_value: string.map(str::to_owned),
            binary_value: binary.map(str::to_owned),
        }
    }

    #[test]
    fn sends_are_decoded() {
        let one = |name: &str, v: AttributeValue| parse(Some(BTreeMap::from([(name.into(), v)])));
        let decoded = one("bin", value("Binary.raw", None, Some("AAEC"))).expect("decoded");
        assert_eq!(decoded["bin"].binary.as_deref(), Some(&[0u8, 1, 2][..]));
        let decoded = one("n", value("Number", Some("1.5"), None)).expect("decoded");
        assert_eq!(decoded["n"].string.as_deref(), Some("1.5"));
        for v in [
            value("Binary", None, Some("not base64!")),
            value("String", Some("\u{0}"), None),
            AttributeValue {
                data_type: None,
                string_value: Some("v".into()),
                binary_value: None,
            },
        ] {
            let err = one("a", v).expect_err("refused");
            assert_eq!(err.code, "InvalidParameterValue");
        }
    }

    #[test]
    fn receives_select_by_name_and_prefix() {
        let attributes: BTreeMap<String, Attribute> = ["a", "a.x", "ab", "b"]
            .into_iter()
            .map(|n| {
                (
                    n.to_owned(),
                    Attribute {
                        data_type: "String".into(),
                        string: Some("v".into()),
                        binary: None,
                    },
                )
            })
            .collect();
        let names = |wanted: &[&str]| {
            let wanted: Vec<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
            select(&wanted, &attributes)
                .into_keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&["All"]).len(), 4);
        assert_eq!(names(&["a.*"]), ["a.x"]);
        assert_eq!(names(&["b", "ab"]), ["ab", "b"]);
        assert!(names(&[]).is_empty());
    }
}
