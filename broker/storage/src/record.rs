//! The record: what a stream stores for one published message, and its
//! on-disk frame.
//!
//! A frame is `len: u32 LE | crc: u32 LE | body[len]`, where `crc` is the
//! CRC32C of the four length bytes followed by the body, so a torn or flipped
//! length is caught as surely as a flipped payload byte. The body is:
//!
//! ```text
//! version u8 (=1) | flags u8 (bit 0 retain, bits 1-2 QoS)
//! offset u64 | timestamp_ms i64
//! topic: u16 len + bytes | client_id: u16 len + bytes
//! payload: u32 len + bytes
//! fields: (tag u8 | len u32 | bytes)*   -- optional MQTT 5 properties
//! ```
//!
//! Optional fields are tagged, so later versions can add fields that older
//! readers skip.

use bytes::{Buf, BufMut, Bytes};

use crate::error::CorruptReason;

/// Bytes of `len` and `crc` in front of every body.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest body a frame may carry. Anything larger is treated as damage.
pub const MAX_BODY_LEN: usize = 256 * 1024 * 1024;

const VERSION: u8 = 1;
const TAG_USER_PROPERTY: u8 = 1;
const TAG_CONTENT_TYPE: u8 = 2;
const TAG_RESPONSE_TOPIC: u8 = 3;
const TAG_CORRELATION_DATA: u8 = 4;
const TAG_MESSAGE_EXPIRY: u8 = 5;
const TAG_PAYLOAD_FORMAT_UTF8: u8 = 6;

/// A published message, as every ingest path hands it to storage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The MQTT topic name it was published to.
    pub topic: String,
    /// The publishing client's id (`http` or similar for non-MQTT ingest).
    pub client_id: String,
    /// Publish QoS, 0 to 2.
    pub qos: u8,
    /// The MQTT retain flag.
    pub retain: bool,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// MQTT 5 properties that travel with the message.
    pub properties: Properties,
}

/// MQTT 5 publish properties that are stored with a record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// User properties, in order, duplicates allowed (as MQTT 5 allows).
    pub user: Vec<(String, String)>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic for request/response.
    pub response_topic: Option<String>,
    /// Correlation data for request/response.
    pub correlation_data: Option<Bytes>,
    /// Message expiry interval in seconds, as published.
    pub message_expiry_secs: Option<u32>,
    /// Payload format indicator: the payload is declared UTF-8.
    pub payload_format_utf8: bool,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// A stored message with its place in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the stream; strictly increasing.
    pub offset: u64,
    /// Broker time of the append, in ms since the Unix epoch; never decreases
    /// within a stream.
    pub timestamp_ms: i64,
    /// The message itself.
    pub message: Message,
}

/// Encodes a message as a complete frame (header and body) onto `out`.
pub fn encode_frame(out: &mut Vec<u8>, offset: u64, timestamp_ms: i64, message: &Message) {
    let start = out.len();
    out.put_u32_le(0); // length, patched below
    out.put_u32_le(0); // crc, patched below
    out.put_u8(VERSION);
    out.put_u8(u8::from(message.retain) | ((message.qos & 0b11) << 1));
    out.put_u64_le(offset);
    out.put_i64_le(timestamp_ms);
    put_short(out, message.topic.as_bytes());
    put_short(out, message.client_id.as_bytes());
    out.put_u32_le(len_u32(message.payload.len()));
    out.put_slice(&message.payload);
    encode_properties(out, &message.properties);

    let body_len = len_u32(out.len() - start - FRAME_HEADER_LEN);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    let crc = frame_crc(&out[start..start + 4], &out[start + FRAME_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The encoded size of a message's frame, without encoding it.
pub fn frame_len(message: &Message) -> usize {
    let p = &message.properties;
    let field = |len: usize| 5 + len;
    FRAME_HEADER_LEN
        + 2
        + 16
        + 2
        + message.topic.len()
        + 2
        + message.client_id.len()
        + 4
        + message.payload.len()
        + p.user
            .iter()
            .map(|(k, v)| field(2 + k.len() + v.len()))
            .sum::<usize>()
        + p.content_type.as_ref().map_or(0, |s| field(s.len()))
        + p.response_topic.as_ref().map_or(0, |s| field(s.len()))
        + p.correlation_data.as_ref().map_or(0, |b| field(b.len()))
        + p.message_expiry_secs.map_or(0, |_| field(4))
        + if p.payload_format_utf8 { field(0) } else { 0 }
}

fn encode_properties(out: &mut Vec<u8>, p: &Properties) {
    for (key, value) in &p.user {
        put_field(out, TAG_USER_PROPERTY, 2 + key.len() + value.len());
        put_short(out, key.as_bytes());
        out.put_slice(value.as_bytes());
    }
    if let Some(ct) = &p.content_type {
        put_field(out, TAG_CONTENT_TYPE, ct.len());
        out.put_slice(ct.as_bytes());
    }
    if let Some(rt) = &p.response_topic {
        put_field(out, TAG_RESPONSE_TOPIC, rt.len());
        out.put_slice(rt.as_bytes());
    }
    if let Some(cd) = &p.correlation_data {
        put_field(out, TAG_CORRELATION_DATA, cd.len());
        out.put_slice(cd);
    }
    if let Some(secs) = p.message_expiry_secs {
        put_field(out, TAG_MESSAGE_EXPIRY, 4);
        out.put_u32_le(secs);
    }
    if p.payload_format_utf8 {
        put_field(out, TAG_PAYLOAD_FORMAT_UTF8, 0);
    }
}

/// What [`decode_frame`] found at the start of a buffer. Decoding is on the
/// read path and the value lives briefly, so the record is not boxed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A whole, valid frame of `len` bytes.
    Record { record: Record, len: usize },
    /// The buffer ends inside a frame that may still be valid: read more.
    NeedMore,
    /// The bytes are not a valid frame.
    Corrupt(CorruptReason),
}

/// Decodes the frame at the start of `buf`. `chunk` is the same bytes as a
/// shared buffer, so that the payload is sliced rather than copied.
pub fn decode_frame(chunk: &Bytes) -> Decoded {
    let buf: &[u8] = chunk;
    if buf.len() < FRAME_HEADER_LEN {
        return Decoded::NeedMore;
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if body_len > MAX_BODY_LEN {
        return Decoded::Corrupt(CorruptReason::BadLength);
    }
    let total = FRAME_HEADER_LEN + body_len;
    if buf.len() < total {
        return Decoded::NeedMore;
    }
    let stored_crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if frame_crc(&buf[..4], &buf[FRAME_HEADER_LEN..total]) != stored_crc {
        return Decoded::Corrupt(CorruptReason::BadChecksum);
    }
    match decode_body(chunk.slice(FRAME_HEADER_LEN..total)) {
        Some(record) => Decoded::Record { record, len: total },
        None => Decoded::Corrupt(CorruptReason::BadBody),
    }
}

fn decode_body(mut body: Bytes) -> Option<Record> {
    if body.remaining() < 18 || body.get_u8() != VERSION {
        return None;
    }
    let flags = body.get_u8();
    let offset = body.get_u64_le();
    let timestamp_ms = body.get_i64_le();
    let topic = utf8(take_short(&mut body)?)?;
    let client_id = utf8(take_short(&mut body)?)?;
    let payload = take_long(&mut body)?;
    let mut properties = Properties::default();
    while body.has_remaining() {
        let tag = body.get_u8();
        let mut field = take_long(&mut body)?;
        match tag {
            TAG_USER_PROPERTY => {
                let key = utf8(take_short(&mut field)?)?;
                let value = utf8(field)?;
                properties.user.push((key, value));
            }
            TAG_CONTENT_TYPE => properties.content_type = Some(utf8(field)?),
            TAG_RESPONSE_TOPIC => properties.response_topic = Some(utf8(field)?),
            TAG_CORRELATION_DATA => properties.correlation_data = Some(field),
            TAG_MESSAGE_EXPIRY if field.len() == 4 => {
                properties.message_expiry_secs = Some(field.get_u32_le());
            }
            TAG_PAYLOAD_FORMAT_UTF8 => properties.payload_format_utf8 = true,
            // Fields this version does not know are skipped.
            _ => {}
        }
    }
    Some(Record {
        offset,
        timestamp_ms,
        message: Message {
            topic,
            client_id,
            qos: (flags >> 1) & 0b11,
            retain: flags & 1 == 1,
            payload,
            properties,
        },
    })
}

/// Splits off a field prefixed by its length as a little-endian u16.
fn take_short(body: &mut Bytes) -> Option<Bytes> {
    if body.remaining() < 2 {
        return None;
    }
    let len = usize::from(body.get_u16_le());
    split(body, len)
}

/// Splits off a field prefixed by its length as a little-endian u32.
fn take_long(body: &mut Bytes) -> Option<Bytes> {
    if body.remaining() < 4 {
        return None;
    }
    let len = body.get_u32_le() as usize;
    split(body, len)
}

fn split(body: &mut Bytes, len: usize) -> Option<Bytes> {
    (body.remaining() >= len).then(|| body.split_to(len))
}

fn utf8(bytes: Bytes) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.put_u16_le(len);
    out.put_slice(&bytes[..usize::from(len)]);
}

fn put_field(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.put_u8(tag);
    out.put_u32_le(len_u32(len));
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn frame_crc(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_message() -> impl Strategy<Value = Message> {
        let props = (
            proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
            proptest::option::of(".{0,12}"),
            proptest::option::of("[a-z/]{1,12}"),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
        )
            .prop_map(|(user, content_type, response_topic, cd, expiry, utf8)| {
                Properties {
                    user,
                    content_type,
                    response_topic,
                    correlation_data: cd.map(Bytes::from),
                    message_expiry_secs: expiry,
                    payload_format_utf8: utf8,
                }
            });
        (
            "[a-z0-9/]{1,40}",
            ".{0,23}",
            0u8..3,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..512),
            props,
        )
            .prop_map(
                |(topic, client_id, qos, retain, payload, properties)| Message {
                    topic,
                    client_id,
                    qos,
                    retain,
                    payload: Bytes::from(payload),
                    properties,
                },
            )
    }

    proptest! {
        #[test]
        fn frame_round_trips(msg in arb_message(), offset in any::<u64>(), ts in any::<i64>()) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, offset, ts, &msg);
            prop_assert_eq!(buf.len(), frame_len(&msg));
            match decode_frame(&Bytes::from(buf)) {
                Decoded::Record { record, len } => {
                    prop_assert_eq!(len, frame_len(&msg));
                    prop_assert_eq!(record, Record { offset, timestamp_ms: ts, message: msg });
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn every_truncation_needs_more(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, 7, 9, &msg);
            let cut = cut.index(buf.len());
            let decoded = decode_frame(&Bytes::copy_from_slice(&buf[..cut]));
            prop_assert!(matches!(decoded, Decoded::NeedMore), "cut {} gave {:?}", cut, decoded);
        }

        #[test]
        fn any_flipped_byte_is_caught(msg in arb_message(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, 7, 9, &msg);
            let at = at.index(buf.len());
            buf[at] ^= 1 << bit;
            // A flipped length may also look like a longer frame: never a record.
            let decoded = decode_frame(&Bytes::from(buf));
            prop_assert!(!matches!(decoded, Decoded::Record { .. }), "flip at {} decoded", at);
        }
    }
}
