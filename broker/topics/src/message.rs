//! A topic's messages as its log keeps them. Each record's payload is
//!
//! ```text
//! u8 version | u16 n | n × u64 matched | u32 header_len | header (JSON) | body
//! ```
//!
//! `matched` lists the ids ([`subscription_id`]) of the filtered
//! subscriptions whose filter the message matched when it was published:
//! the topic's compiled matcher runs once per message, and each
//! subscription's delivery only looks its id up, without parsing the rest.
//! Subscriptions without a filter take every message. The header holds the
//! message id, the subject and the typed attributes; the record's topic,
//! client id and MQTT properties are the publish's own.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tidewire_queues::Attribute;

/// The layout's version byte.
const VERSION: u8 = 1;

/// The header of a topic message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    /// The message id (SNS `MessageId`).
    pub id: String,
    /// The subject (SNS `Subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Typed attributes (SNS `MessageAttributes`; MQTT user properties
    /// become `String` attributes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Attribute>,
}

/// A decoded topic message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The matched filtered subscriptions.
    pub matched: Vec<u64>,
    /// The header.
    pub header: Header,
    /// The body.
    pub body: Bytes,
}

/// Why a record is not a topic message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a topic message: {0}")]
pub struct Malformed(String);

/// Encodes a message's payload.
pub fn encode(matched: &[u64], header: &Header, body: &[u8]) -> Bytes {
    let header = serde_json::to_vec(header).unwrap_or_default();
    let mut out =
        BytesMut::with_capacity(1 + 2 + 8 * matched.len() + 4 + header.len() + body.len());
    out.put_u8(VERSION);
    out.put_u16_le(u16::try_from(matched.len()).unwrap_or(u16::MAX));
    for id in matched.iter().take(usize::from(u16::MAX)) {
        out.put_u64_le(*id);
    }
    out.put_u32_le(u32::try_from(header.len()).unwrap_or(u32::MAX));
    out.put_slice(&header);
    out.put_slice(body);
    out.freeze()
}

/// Whether the message was matched for subscription `id`, reading only the
/// matched list.
pub fn matched(payload: &[u8], id: u64) -> Result<bool, Malformed> {
    let (ids, _) = split_matched(payload)?;
    Ok(ids
        .chunks_exact(8)
        .any(|chunk| chunk == id.to_le_bytes().as_slice()))
}

fn split_matched(payload: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let mut buf = payload;
    if buf.remaining() < 3 || buf.get_u8() != VERSION {
        return Err(Malformed("unknown version".into()));
    }
    let n = usize::from(buf.get_u16_le());
    if buf.remaining() < n * 8 {
        return Err(Malformed("matched list cut short".into()));
    }
    Ok(buf.split_at(n * 8))
}

/// Decodes a whole message.
pub fn decode(payload: &Bytes) -> Result<Stored, Malformed> {
    let (ids, rest) = split_matched(payload)?;
    let matched = ids
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let mut buf = rest;
    if buf.remaining() < 4 {
        return Err(Malformed("no header length".into()));
    }
    let len = buf.get_u32_le() as usize;
    if buf.remaining() < len {
        return Err(Malformed("header cut short".into()));
    }
    let header: Header =
        serde_json::from_slice(&buf[..len]).map_err(|e| Malformed(format!("header: {e}")))?;
    let body_start = payload.len() - (buf.remaining() - len);
    Ok(Stored {
        matched,
        header,
        body: payload.slice(body_start..),
    })
}

/// The id under which a subscription's filter is compiled and recorded:
/// FNV-1a over its name, stable across restarts (the matched lists in the
/// log outlive the process).
pub fn subscription_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A new message id, in the UUID shape SNS uses.
pub fn new_id() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let header = Header {
            id: new_id(),
            subject: Some("hi".into()),
            attributes: BTreeMap::from([(
                "severity".to_owned(),
                Attribute {
                    data_type: "String".into(),
                    string: Some("high".into()),
                    binary: None,
                },
            )]),
        };
        let ids = [subscription_id("a"), subscription_id("b")];
        let payload = encode(&ids, &header, b"{\"x\":1}");
        let stored = decode(&payload).expect("decodes");
        assert_eq!(stored.matched, ids);
        assert_eq!(stored.header, header);
        assert_eq!(&stored.body[..], b"{\"x\":1}");
        assert_eq!(matched(&payload, ids[1]), Ok(true));
        assert_eq!(matched(&payload, subscription_id("c")), Ok(false));
        assert!(decode(&Bytes::from_static(b"\x02\x00\x00")).is_err());
        assert!(matched(b"\x01\x05\x00", 1).is_err());
    }

    #[test]
    fn ids_are_uuid_shaped_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }
}
