//! MQTT 5 properties <-> NATS headers.
//!
//! User properties travel as headers of the same name and value (several
//! values of one name stay in order; NATS does not keep the order between
//! different names). The other MQTT 5 properties use reserved `Mqtt-`
//! headers; `Nats-Msg-Id` carries the dedup id outbound. Inbound, headers
//! starting with `Nats-` (JetStream's own) are not turned into user
//! properties. A user property NATS cannot carry (a non-ASCII name, a name
//! with `:`, a value with a line break) is left off and counted.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tidewire_core::{Message, Properties};

/// JetStream's dedup header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// MQTT content type.
pub const CONTENT_TYPE: &str = "Mqtt-Content-Type";
/// MQTT response topic.
pub const RESPONSE_TOPIC: &str = "Mqtt-Response-Topic";
/// MQTT correlation data, base64.
pub const CORRELATION_DATA: &str = "Mqtt-Correlation-Data";
/// MQTT message expiry interval, seconds.
pub const MESSAGE_EXPIRY: &str = "Mqtt-Message-Expiry";
/// MQTT payload format indicator: present with value `utf8` when set.
pub const PAYLOAD_FORMAT: &str = "Mqtt-Payload-Format";

const RESERVED_PREFIXES: [&str; 2] = ["nats-", "mqtt-"];

/// The headers for an outbound message, and how many user properties had
/// to be left off.
pub fn to_headers(message: &Message, msg_id: Option<&str>) -> (HeaderMap, u64) {
    let mut headers = HeaderMap::new();
    let mut dropped = 0;
    let mut put = |name: &str, value: &str| -> bool {
        match (HeaderName::from_str(name), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
                true
            }
            _ => false,
        }
    };
    let p = &message.properties;
    for (name, value) in &p.user {
        if !put(name, value) {
            dropped += 1;
        }
    }
    if let Some(id) = msg_id {
        put(MSG_ID, id);
    }
    if let Some(ct) = &p.content_type
        && !put(CONTENT_TYPE, ct)
    {
        dropped += 1;
    }
    if let Some(rt) = &p.response_topic
        && !put(RESPONSE_TOPIC, rt)
    {
        dropped += 1;
    }
    if let Some(cd) = &p.correlation_data {
        put(CORRELATION_DATA, &STANDARD.encode(cd));
    }
    if let Some(secs) = p.message_expiry_secs {
        put(MESSAGE_EXPIRY, &secs.to_string());
    }
    if p.payload_format_utf8 {
        put(PAYLOAD_FORMAT, "utf8");
    }
    (headers, dropped)
}

/// The MQTT 5 properties of an inbound message's headers.
pub fn to_properties(headers: Option<&HeaderMap>) -> Properties {
    let mut p = Properties::default();
    let Some(headers) = headers else {
        return p;
    };
    let last = |name: &str| headers.get_last(name).map(|v| v.as_str().to_owned());
    p.content_type = last(CONTENT_TYPE);
    p.response_topic = last(RESPONSE_TOPIC);
    p.correlation_data = last(CORRELATION_DATA)
        .and_then(|v| STANDARD.decode(v).ok())
        .map(Into::into);
    p.message_expiry_secs = last(MESSAGE_EXPIRY).and_then(|v| v.parse().ok());
    p.payload_format_utf8 = last(PAYLOAD_FORMAT).is_some_and(|v| v == "utf8");
    let mut user: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_string().to_ascii_lowercase();
            !RESERVED_PREFIXES.iter().any(|r| lower.starts_with(r))
        })
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect();
    // Header maps do not keep the order between names: make it stable.
    user.sort_by(|a, b| a.0.cmp(&b.0));
    p.user = user;
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn properties_survive_a_round_trip() {
        let message = Message {
            topic: "t".into(),
            properties: Properties {
                user: vec![
                    ("a".into(), "1".into()),
                    ("b".into(), "2".into()),
                    ("a".into(), "3".into()),
                ],
                content_type: Some("application/json".into()),
                response_topic: Some("reply/here".into()),
                correlation_data: Some(Bytes::from_static(b"\x00\xffid")),
                message_expiry_secs: Some(60),
                payload_format_utf8: true,
            },
            ..Message::default()
        };
        let (headers, dropped) = to_headers(&message, Some("n1:events:7"));
        assert_eq!(dropped, 0);
        assert_eq!(headers.get(MSG_ID).map(|v| v.as_str()), Some("n1:events:7"));
        let back = to_properties(Some(&headers));
        let mut expected = message.properties.clone();
        // Order between names is not kept; within a name it is.
        expected.user.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, expected);
        assert_eq!(
            back.user[..2],
            [("a".into(), "1".into()), ("a".into(), "3".into())]
        );
    }

    #[test]
    fn properties_nats_cannot_carry_are_counted() {
        let message = Message {
            properties: Properties {
                user: vec![
                    ("ok".into(), "fine".into()),
                    ("bad:name".into(), "x".into()),
                    ("näme".into(), "x".into()),
                    ("v".into(), "line\nbreak".into()),
                ],
                ..Properties::default()
            },
            ..Message::default()
        };
        let (headers, dropped) = to_headers(&message, None);
        assert_eq!(dropped, 3);
        assert_eq!(
            to_properties(Some(&headers)).user,
            [("ok".into(), "fine".into())]
        );
    }
}
