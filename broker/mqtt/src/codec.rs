//! MQTT packet framing over rumqttd's `protocol` codecs, with the gaps
//! that matter for a server filled in here:
//!
//! - rumqttd keeps a PUBLISH's QoS, packet id and DUP flag crate-private.
//!   We read them from the raw frame before decoding, and build outgoing
//!   PUBLISH packets through its public byte form.
//! - Its decoders hit `unreachable!()` on packet types a client never
//!   sends (CONNACK, SUBACK, ...). We refuse those before decoding, and any
//!   panic left in a decoder becomes a malformed-packet error for that
//!   client only.
//! - Its encoders get packets the server sends wrong, so `encode` writes
//!   those, for both versions: its MQTT 5 DISCONNECT counts a Remaining
//!   Length of 1 but writes the reason code and a property length
//!   (`e0 01 82 00`, a stray byte a strict client reads as the next
//!   packet), and drops the reason code when the properties are present
//!   but empty (`e0 00`); its CONNACK encoders panic on a return code of
//!   the other version; its 3.1.1 SUBACK writes MQTT 5 failure codes; its
//!   3.1.1 encoder panics on packets carrying properties; and a failing
//!   encoder leaves half a packet in the buffer. rumqttd still encodes the
//!   packets only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE,
//!   PINGREQ), which tests use.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::v4::{self, V4};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error as ProtocolError, Packet, Protocol, Publish};

mod encode;
#[cfg(test)]
pub(crate) mod fuzz_tests;

/// The protocol a connection speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// The header fields of an incoming PUBLISH that rumqttd does not expose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishHeader {
    /// QoS 0 to 2.
    pub qos: u8,
    /// Packet identifier (0 for QoS 0).
    pub pkid: u16,
    /// The DUP flag.
    pub dup: bool,
}

/// Why bytes from a client could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The packet is larger than the limit.
    #[error("packet of {0} bytes is over the size limit")]
    TooLarge(usize),
    /// The bytes are not a valid packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A packet type that only a server sends, or an unknown one.
    #[error("protocol error: a client may not send packet type {0}")]
    UnexpectedType(u8),
    /// A CONNECT with a protocol level other than 4 or 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    /// A packet to send that the protocol cannot express (a bug in the
    /// caller, or a refusal 3.1.1 has no code for).
    #[error("cannot encode {0}")]
    Unencodable(&'static str),
}

/// Finds the protocol version of the CONNECT at the start of `buf`.
/// `Ok(None)` means more bytes are needed.
pub fn connect_version(buf: &[u8], max_packet: usize) -> Result<Option<Version>, FrameError> {
    let header = match v4::check(buf.iter(), max_packet) {
        Ok(header) => header,
        Err(ProtocolError::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(frame_error(e)),
    };
    if header.byte1 >> 4 != 1 {
        return Err(FrameError::Malformed(
            "the first packet must be CONNECT".into(),
        ));
    }
    // Variable header: protocol name (u16 length + bytes), then the level.
    let at = header.fixed_header_len;
    let name_len = buf
        .get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| FrameError::Malformed("short CONNECT".into()))?;
    match buf.get(at + 2 + name_len) {
        Some(4) => Ok(Some(Version::V311)),
        Some(5) => Ok(Some(Version::V5)),
        Some(&level) => Err(FrameError::UnsupportedLevel(level)),
        None => Err(FrameError::Malformed("short CONNECT".into())),
    }
}

/// Frames packets for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    version: Version,
    max_packet: usize,
}

impl Codec {
    /// A codec for `version` refusing packets over `max_packet` bytes.
    pub fn new(version: Version, max_packet: usize) -> Codec {
        Codec {
            version,
            max_packet,
        }
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Takes the next whole packet off the front of `buf`; `Ok(None)` when
    /// `buf` does not yet hold one. PUBLISH packets come with their header.
    pub fn decode(
        &self,
        buf: &mut BytesMut,
    ) -> Result<Option<(Packet, Option<PublishHeader>)>, FrameError> {
        let header = match v4::check(buf.iter(), self.max_packet) {
            Ok(header) => header,
            Err(ProtocolError::InsufficientBytes(_)) => return Ok(None),
            Err(e) => return Err(frame_error(e)),
        };
        let kind = header.byte1 >> 4;
        // CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE,
        // UNSUBSCRIBE, PINGREQ, DISCONNECT.
        if !matches!(kind, 1 | 3..=8 | 10 | 12 | 14) {
            return Err(FrameError::UnexpectedType(kind));
        }
        // The flags are fixed for every type but PUBLISH (3.1.1 §2.2.2,
        // 5.0 §2.1.3): 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, else 0.
        let flags = header.byte1 & 0x0F;
        let required = if matches!(kind, 6 | 8 | 10) {
            0b0010
        } else {
            0
        };
        if kind != 3 && flags != required {
            return Err(FrameError::Malformed(format!(
                "packet type {kind} with reserved flags {flags:04b}"
            )));
        }
        let publish = if kind == 3 {
            Some(publish_header(
                &buf[..header.frame_length()],
                header.byte1,
                header.fixed_header_len,
            )?)
        } else {
            None
        };
        let version = self.version;
        let max = self.max_packet;
        let decoded = catch_unwind(AssertUnwindSafe(|| match version {
            Version::V311 => V4.read_mut(buf, max),
            Version::V5 => V5.read_mut(buf, max),
        }));
        match decoded {
            Ok(Ok(packet)) => Ok(Some((packet, publish))),
            Ok(Err(e)) => Err(frame_error(e)),
            Err(_) => Err(FrameError::Malformed(
                "the decoder rejected the packet".into(),
            )),
        }
    }
}

/// Reads QoS, DUP and the packet id from a raw PUBLISH frame.
fn publish_header(frame: &[u8], byte1: u8, at: usize) -> Result<PublishHeader, FrameError> {
    let qos = (byte1 >> 1) & 0b11;
    if qos == 3 {
        return Err(FrameError::Malformed("PUBLISH with QoS 3".into()));
    }
    let short = || FrameError::Malformed("short PUBLISH".into());
    let topic_len = frame
        .get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(short)?;
    let pkid = if qos == 0 {
        0
    } else {
        let i = at + 2 + topic_len;
        frame
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)?
    };
    Ok(PublishHeader {
        qos,
        pkid,
        dup: byte1 & 0b1000 != 0,
    })
}

/// An outgoing PUBLISH's fields.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPublish<'a> {
    /// Topic name (empty when a topic alias stands in for it).
    pub topic: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// QoS.
    pub qos: u8,
    /// Packet id (QoS 1/2).
    pub pkid: u16,
    /// DUP flag.
    pub dup: bool,
    /// RETAIN flag.
    pub retain: bool,
}

impl OutgoingPublish<'_> {
    /// Reads back the header fields rumqttd keeps crate-private, from its
    /// byte form: the first byte, then the packet id.
    fn of(publish: &Publish) -> OutgoingPublish<'_> {
        let mut head = publish.clone();
        head.payload = Bytes::new();
        let (first, pkid) = match head.serialize()[..] {
            [first, hi, lo, ..] => (first, u16::from_be_bytes([hi, lo])),
            _ => (0, 0),
        };
        OutgoingPublish {
            topic: &publish.topic,
            payload: &publish.payload,
            qos: (first >> 1) & 0b11,
            pkid,
            dup: first & 0b1000 != 0,
            retain: publish.retain,
        }
    }

    /// The fixed header's first byte. DUP is 0 at QoS 0 (5.0 and 3.1.1
    /// §3.3.1.1).
    fn first_byte(&self) -> u8 {
        let dup = self.dup && self.qos > 0;
        0b0011_0000 | u8::from(self.retain) | ((self.qos & 0b11) << 1) | (u8::from(dup) << 3)
    }

    /// As a rumqttd packet, which only exposes these fields through its
    /// byte form.
    pub fn packet(&self) -> Publish {
        let mut raw = BytesMut::with_capacity(5 + self.topic.len() + self.payload.len());
        raw.put_u8(self.first_byte());
        raw.put_u16(self.pkid);
        raw.put_u16(u16::try_from(self.topic.len()).unwrap_or(u16::MAX));
        raw.put_slice(self.topic);
        raw.put_slice(self.payload);
        Publish::deserialize(raw.freeze())
    }
}

fn frame_error(e: ProtocolError) -> FrameError {
    match e {
        ProtocolError::PayloadSizeLimitExceeded(n) => FrameError::TooLarge(n),
        ProtocolError::InvalidProtocolLevel(level) => FrameError::UnsupportedLevel(level),
        other => FrameError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::{ConnAck, ConnectReturnCode, PublishProperties};

    fn encoded(version: Version, packet: Packet) -> BytesMut {
        let mut out = BytesMut::new();
        Codec::new(version, 1 << 20)
            .encode(packet, &mut out)
            .expect("encode");
        out
    }

    #[test]
    fn publish_header_fields_survive_a_round_trip() {
        for version in [Version::V311, Version::V5] {
            for (qos, pkid, dup, retain) in [
                (0, 0, false, false),
                (1, 7, true, true),
                (2, 65535, false, true),
            ] {
                let p = OutgoingPublish {
                    topic: b"a/b",
                    payload: b"payload",
                    qos,
                    pkid,
                    dup,
                    retain,
                }
                .packet();
                let props = (version == Version::V5).then(|| PublishProperties {
                    user_properties: vec![("k".into(), "v".into())],
                    ..PublishProperties::default()
                });
                let mut buf = encoded(version, Packet::Publish(p, props.clone()));
                let codec = Codec::new(version, 1 << 20);
                let (packet, header) = codec.decode(&mut buf).expect("decode").expect("whole");
                assert_eq!(header, Some(PublishHeader { qos, pkid, dup }));
                let Packet::Publish(p, got_props) = packet else {
                    panic!("not a publish");
                };
                assert_eq!(&p.topic[..], b"a/b");
                assert_eq!(&p.payload[..], b"payload");
                assert_eq!(p.retain, retain);
                assert_eq!(got_props, props);
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn partial_frames_wait_and_oversize_frames_are_refused() {
        let full = encoded(
            Version::V5,
            Packet::Publish(
                OutgoingPublish {
                    topic: b"t",
                    payload: &[0; 100],
                    qos: 1,
                    pkid: 1,
                    dup: false,
                    retain: false,
                }
                .packet(),
                None,
            ),
        );
        let codec = Codec::new(Version::V5, 1 << 20);
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(codec.decode(&mut part), Ok(None), "cut {cut}");
        }
        let small = Codec::new(Version::V5, 50);
        let mut buf = full.clone();
        assert!(matches!(
            small.decode(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn reserved_fixed_header_flags_are_malformed() {
        // SUBSCRIBE 0000 and 0011, UNSUBSCRIBE 0000, PUBREL 0000,
        // PINGREQ 0001, PUBACK 0010, DISCONNECT 1000.
        let bad: [&[u8]; 7] = [
            &[0x80, 6, 0, 1, 0, 1, b'a', 0],
            &[0x83, 6, 0, 1, 0, 1, b'a', 0],
            &[0xA0, 5, 0, 1, 0, 1, b'a'],
            &[0x60, 2, 0, 1],
            &[0xC1, 0],
            &[0x42, 2, 0, 1],
            &[0xE8, 0],
        ];
        for frame in bad {
            for version in [Version::V311, Version::V5] {
                let mut buf = BytesMut::from(frame);
                let err = Codec::new(version, 1024)
                    .decode(&mut buf)
                    .expect_err("reserved flags");
                assert!(
                    matches!(err, FrameError::Malformed(_)),
                    "{frame:02x?}: {err}"
                );
            }
        }
        // The right flags decode.
        for frame in [&[0x62u8, 2, 0, 1][..], &[0xC0, 0]] {
            let mut buf = BytesMut::from(frame);
            let decoded = Codec::new(Version::V311, 1024).decode(&mut buf);
            assert!(matches!(decoded, Ok(Some(_))), "{frame:02x?}: {decoded:?}");
        }
    }

    #[test]
    fn server_only_packet_types_are_refused_without_panicking() {
        // CONNACK, SUBACK, UNSUBACK, PINGRESP and AUTH from a client.
        for first in [0x20u8, 0x90, 0xB0, 0xD0, 0xF0, 0x00] {
            for version in [Version::V311, Version::V5] {
                let mut buf = BytesMut::from(&[first, 2, 0, 0][..]);
                let err = Codec::new(version, 1024)
                    .decode(&mut buf)
                    .expect_err("refused");
                assert_eq!(err, FrameError::UnexpectedType(first >> 4));
            }
        }
        // A v3.1.1 client must never be sent properties: this would panic
        // inside rumqttd if they were not stripped.
        let out = encoded(
            Version::V311,
            Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::Success,
                },
                Some(Default::default()),
            ),
        );
        assert_eq!(&out[..], &[0x20, 2, 0, 0]);
    }

    #[test]
    fn connect_version_reads_the_protocol_level() {
        let v311 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert_eq!(connect_version(&v311, 1024), Ok(Some(Version::V311)));
        let mut v5 = v311;
        v5[8] = 5;
        assert_eq!(connect_version(&v5, 1024), Ok(Some(Version::V5)));
        let mut v3 = v311;
        v3[8] = 3;
        assert_eq!(
            connect_version(&v3, 1024),
            Err(FrameError::UnsupportedLevel(3))
        );
        assert_eq!(connect_version(&v311[..5], 1024), Ok(None));
        assert!(connect_version(&[0x30, 0], 1024).is_err());
    }
}
