//! Encoding the packets the server sends, for both protocol versions,
//! in place of rumqttd's encoders (see the `codec` module's doc for what
//! they get wrong).
//!
//! Each packet is written as its parts (byte strings), and the Remaining
//! Length and every Property Length are the lengths of the parts actually
//! written: measured, never predicted, so they cannot disagree with the
//! bytes that follow. A field that cannot be framed (a string over 65,535
//! bytes, a packet over the largest Remaining Length) fails before
//! anything is written.
//!
//! Where MQTT 5 lets the reason code and property length be left out
//! (PUBACK, PUBREC, PUBREL, PUBCOMP and DISCONNECT with reason 0x00 and no
//! properties) they are left out. Where the reason code is not 0x00 or
//! there are properties, both are written, with a zero property length
//! when there are none: the spec also allows ending a DISCONNECT or an ack
//! right after its reason code, but some clients' decoders (rumqttc's, for
//! one) require the property length, and every decoder reads it.

use bytes::{BufMut, BytesMut};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, Packet, Protocol, PubAckProperties, PubAckReason, PubCompProperties,
    PubCompReason, PubRecProperties, PubRecReason, PubRelProperties, PubRelReason,
    PublishProperties, SubAck, SubAckProperties, SubscribeReasonCode, UnsubAck, UnsubAckProperties,
    UnsubAckReason,
};
use smallvec::SmallVec;

use super::{Codec, FrameError, OutgoingPublish, Version, frame_error};

impl Codec {
    /// Appends `packet` to `out` as this protocol version frames it (see
    /// the module doc). On failure nothing is appended.
    pub fn encode(&self, packet: Packet, out: &mut BytesMut) -> Result<(), FrameError> {
        let v5 = self.version == Version::V5;
        match packet {
            Packet::ConnAck(ack, props) => encode_connack(v5, &ack, props.as_ref(), out),
            Packet::Publish(publish, props) => {
                self.encode_publish(&OutgoingPublish::of(&publish), props.as_ref(), out)
            }
            Packet::PubAck(ack, props) => {
                let props = reason_properties(v5, props.as_ref())?;
                encode_ack(v5, PUBACK, ack.pkid, puback_code(ack.reason), &props, out)
            }
            Packet::PubRec(rec, props) => {
                let props = reason_properties(v5, props.as_ref())?;
                encode_ack(v5, PUBREC, rec.pkid, pubrec_code(rec.reason), &props, out)
            }
            Packet::PubRel(rel, props) => {
                let props = reason_properties(v5, props.as_ref())?;
                encode_ack(v5, PUBREL, rel.pkid, pubrel_code(rel.reason), &props, out)
            }
            Packet::PubComp(comp, props) => {
                let props = reason_properties(v5, props.as_ref())?;
                encode_ack(
                    v5,
                    PUBCOMP,
                    comp.pkid,
                    pubcomp_code(comp.reason),
                    &props,
                    out,
                )
            }
            Packet::SubAck(ack, props) => {
                let props = reason_properties(v5, props.as_ref())?;
                encode_suback(v5, &ack, &props, out)
            }
            Packet::UnsubAck(ack, props) => {
                let props = reason_properties(v5, props.as_ref())?;
                encode_unsuback(v5, &ack, &props, out)
            }
            Packet::Disconnect(disconnect, props) => {
                encode_disconnect(v5, &disconnect, props.as_ref(), out)
            }
            Packet::PingResp(_) => frame(PINGRESP, &[], out),
            // Only a client sends these, so only tests that play one
            // encode them; rumqttd's encoders frame them right.
            client @ (Packet::Connect(..)
            | Packet::Subscribe(..)
            | Packet::Unsubscribe(..)
            | Packet::PingReq(_)) => {
                let mut buf = BytesMut::new();
                match self.version {
                    Version::V5 => V5.write(client, &mut buf),
                    Version::V311 => V4.write(without_properties(client), &mut buf),
                }
                .map_err(frame_error)?;
                out.unsplit(buf);
                Ok(())
            }
        }
    }

    /// Appends a PUBLISH straight to `out`, copying the payload once.
    /// Properties are written for MQTT 5 only; 3.1.1 has none. On failure
    /// nothing is appended.
    pub fn encode_publish(
        &self,
        publish: &OutgoingPublish<'_>,
        properties: Option<&PublishProperties>,
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        if publish.qos > 2 {
            return Err(FrameError::Unencodable("a PUBLISH with QoS above 2"));
        }
        if publish.qos > 0 && publish.pkid == 0 {
            return Err(FrameError::Unencodable(
                "a QoS 1 or 2 PUBLISH with packet id 0",
            ));
        }
        let topic_length = length_prefix(publish.topic)?;
        let pkid = publish.pkid.to_be_bytes();
        let pkid: &[u8] = if publish.qos > 0 { &pkid } else { &[] };
        let v5 = self.version == Version::V5;
        let mut props = Properties::default();
        if let Some(p) = properties.filter(|_| v5) {
            props.byte(
                property::PAYLOAD_FORMAT_INDICATOR,
                p.payload_format_indicator,
            );
            props.four(property::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
            props.two(property::TOPIC_ALIAS, p.topic_alias);
            props.bytes(
                property::RESPONSE_TOPIC,
                p.response_topic.as_deref().map(str::as_bytes),
            )?;
            props.bytes(property::CORRELATION_DATA, p.correlation_data.as_deref())?;
            props.user(&p.user_properties)?;
            for id in &p.subscription_identifiers {
                props.varint(property::SUBSCRIPTION_IDENTIFIER, *id)?;
            }
            props.bytes(
                property::CONTENT_TYPE,
                p.content_type.as_deref().map(str::as_bytes),
            )?;
        }
        let props_length = props.length()?;
        let props_length: &[u8] = if v5 { props_length.as_slice() } else { &[] };
        frame(
            publish.first_byte(),
            &[
                &topic_length,
                publish.topic,
                pkid,
                props_length,
                props.as_slice(),
                publish.payload,
            ],
            out,
        )
    }
}

/// First bytes of the fixed headers the server sends (5.0 and 3.1.1
/// §2.1.2); PUBLISH computes its own. PUBREL's flags are 0b0010.
const CONNACK: u8 = 0x20;
const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const PUBREL: u8 = 0x62;
const PUBCOMP: u8 = 0x70;
const SUBACK: u8 = 0x90;
const UNSUBACK: u8 = 0xB0;
const PINGRESP: u8 = 0xD0;
const DISCONNECT: u8 = 0xE0;

/// MQTT 5 property identifiers (§2.2.2.2) of the properties the server
/// sends.
mod property {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A Variable Byte Integer (5.0 §1.5.5; the Remaining Length in 3.1.1
/// §2.2.3): seven bits a byte, least significant first, the top bit set
/// on every byte but the last, in as few bytes as the value needs.
#[derive(Debug, Clone, Copy)]
struct Varint {
    bytes: [u8; 4],
    len: usize,
}

impl Varint {
    /// The largest value four bytes hold.
    const MAX: usize = 268_435_455;

    fn new(value: usize) -> Option<Varint> {
        if value > Self::MAX {
            return None;
        }
        let mut varint = Varint {
            bytes: [0; 4],
            len: 0,
        };
        let mut rest = value;
        loop {
            let low = (rest % 128) as u8;
            rest /= 128;
            varint.bytes[varint.len] = if rest > 0 { low | 0x80 } else { low };
            varint.len += 1;
            if rest == 0 {
                return Some(varint);
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends one packet: `first`, the Remaining Length (the bytes in
/// `parts`), then `parts`.
fn frame(first: u8, parts: &[&[u8]], out: &mut BytesMut) -> Result<(), FrameError> {
    let remaining = parts.iter().map(|part| part.len()).sum();
    let length = Varint::new(remaining).ok_or(FrameError::TooLarge(remaining))?;
    out.reserve(1 + length.len + remaining);
    out.put_u8(first);
    out.put_slice(length.as_slice());
    for part in parts {
        out.put_slice(part);
    }
    Ok(())
}

/// The two-byte length before a UTF-8 string or binary data (5.0 §1.5.4,
/// §1.5.6; 3.1.1 §1.5.3).
fn length_prefix(value: &[u8]) -> Result<[u8; 2], FrameError> {
    u16::try_from(value.len())
        .map(u16::to_be_bytes)
        .map_err(|_| FrameError::Unencodable("a string or binary field over 65,535 bytes"))
}

/// An MQTT 5 property list (5.0 §2.2.2): each property is its identifier,
/// then its value. An absent value writes nothing.
#[derive(Debug, Default)]
struct Properties(Vec<u8>);

impl Properties {
    fn byte(&mut self, id: u8, value: Option<u8>) {
        if let Some(value) = value {
            self.0.extend_from_slice(&[id, value]);
        }
    }

    fn two(&mut self, id: u8, value: Option<u16>) {
        if let Some(value) = value {
            self.0.push(id);
            self.0.extend_from_slice(&value.to_be_bytes());
        }
    }

    fn four(&mut self, id: u8, value: Option<u32>) {
        if let Some(value) = value {
            self.0.push(id);
            self.0.extend_from_slice(&value.to_be_bytes());
        }
    }

    /// A UTF-8 string or binary data.
    fn bytes(&mut self, id: u8, value: Option<&[u8]>) -> Result<(), FrameError> {
        if let Some(value) = value {
            let prefix = length_prefix(value)?;
            self.0.push(id);
            self.0.extend_from_slice(&prefix);
            self.0.extend_from_slice(value);
        }
        Ok(())
    }

    fn varint(&mut self, id: u8, value: usize) -> Result<(), FrameError> {
        let varint = Varint::new(value).ok_or(FrameError::Unencodable(
            "a variable byte integer over 268,435,455",
        ))?;
        self.0.push(id);
        self.0.extend_from_slice(varint.as_slice());
        Ok(())
    }

    /// User properties, one name-value pair each, in order.
    fn user(&mut self, pairs: &[(String, String)]) -> Result<(), FrameError> {
        for (name, value) in pairs {
            let (name_prefix, value_prefix) = (
                length_prefix(name.as_bytes())?,
                length_prefix(value.as_bytes())?,
            );
            self.0.push(property::USER_PROPERTY);
            self.0.extend_from_slice(&name_prefix);
            self.0.extend_from_slice(name.as_bytes());
            self.0.extend_from_slice(&value_prefix);
            self.0.extend_from_slice(value.as_bytes());
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The Property Length: the bytes of the properties that follow it.
    fn length(&self) -> Result<Varint, FrameError> {
        Varint::new(self.0.len()).ok_or(FrameError::TooLarge(self.0.len()))
    }

    fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// What the properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and
/// UNSUBACK hold: a Reason String and User Properties.
trait ReasonProperties {
    fn reason_string(&self) -> Option<&str>;
    fn user_properties(&self) -> &[(String, String)];
}

macro_rules! impl_reason_properties {
    ($($type:ty),*) => {$(
        impl ReasonProperties for $type {
            fn reason_string(&self) -> Option<&str> {
                self.reason_string.as_deref()
            }
            fn user_properties(&self) -> &[(String, String)] {
                &self.user_properties
            }
        }
    )*};
}

impl_reason_properties!(
    PubAckProperties,
    PubRecProperties,
    PubRelProperties,
    PubCompProperties,
    SubAckProperties,
    UnsubAckProperties
);

/// The properties to write: none for 3.1.1.
fn reason_properties(
    v5: bool,
    props: Option<&impl ReasonProperties>,
) -> Result<Properties, FrameError> {
    let mut out = Properties::default();
    if let Some(p) = props.filter(|_| v5) {
        out.bytes(
            property::REASON_STRING,
            p.reason_string().map(str::as_bytes),
        )?;
        out.user(p.user_properties())?;
    }
    Ok(out)
}

/// CONNACK (5.0 §3.2, 3.1.1 §3.2): the acknowledge flags, the reason or
/// return code, then in MQTT 5 the properties. Session Present is 0 on a
/// refusal. A refusal with no 3.1.1 return code fails: 3.1.1 then wants
/// the connection closed without a CONNACK.
fn encode_connack(
    v5: bool,
    ack: &ConnAck,
    props: Option<&ConnAckProperties>,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let code = if v5 {
        connack_code_v5(ack.code)
    } else {
        connack_code_v311(ack.code).ok_or(FrameError::Unencodable(
            "a CONNACK refusal with no MQTT 3.1.1 return code",
        ))?
    };
    let head = [u8::from(ack.session_present && code == 0), code];
    if !v5 {
        return frame(CONNACK, &[&head], out);
    }
    let mut p = Properties::default();
    if let Some(c) = props {
        p.four(property::SESSION_EXPIRY_INTERVAL, c.session_expiry_interval);
        p.two(property::RECEIVE_MAXIMUM, c.receive_max);
        p.byte(property::MAXIMUM_QOS, c.max_qos);
        p.byte(property::RETAIN_AVAILABLE, c.retain_available);
        p.four(property::MAXIMUM_PACKET_SIZE, c.max_packet_size);
        p.bytes(
            property::ASSIGNED_CLIENT_IDENTIFIER,
            c.assigned_client_identifier.as_deref().map(str::as_bytes),
        )?;
        p.two(property::TOPIC_ALIAS_MAXIMUM, c.topic_alias_max);
        p.bytes(
            property::REASON_STRING,
            c.reason_string.as_deref().map(str::as_bytes),
        )?;
        p.user(&c.user_properties)?;
        p.byte(
            property::WILDCARD_SUBSCRIPTION_AVAILABLE,
            c.wildcard_subscription_available,
        );
        p.byte(
            property::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            c.subscription_identifiers_available,
        );
        p.byte(
            property::SHARED_SUBSCRIPTION_AVAILABLE,
            c.shared_subscription_available,
        );
        p.two(property::SERVER_KEEP_ALIVE, c.server_keep_alive);
        p.bytes(
            property::RESPONSE_INFORMATION,
            c.response_information.as_deref().map(str::as_bytes),
        )?;
        p.bytes(
            property::SERVER_REFERENCE,
            c.server_reference.as_deref().map(str::as_bytes),
        )?;
        p.bytes(
            property::AUTHENTICATION_METHOD,
            c.authentication_method.as_deref().map(str::as_bytes),
        )?;
        p.bytes(
            property::AUTHENTICATION_DATA,
            c.authentication_data.as_deref(),
        )?;
    }
    let length = p.length()?;
    frame(CONNACK, &[&head, length.as_slice(), p.as_slice()], out)
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (5.0 §3.4 to §3.7, 3.1.1 §3.4 to
/// §3.7): the packet id; in MQTT 5 then the reason code and properties,
/// left out for success without properties (Remaining Length 2). 3.1.1
/// has no reason code: its acks are always the packet id alone.
fn encode_ack(
    v5: bool,
    first: u8,
    pkid: u16,
    reason: u8,
    props: &Properties,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let pkid = pkid.to_be_bytes();
    if !v5 || (reason == 0 && props.is_empty()) {
        return frame(first, &[&pkid], out);
    }
    let length = props.length()?;
    frame(
        first,
        &[&pkid, &[reason], length.as_slice(), props.as_slice()],
        out,
    )
}

/// SUBACK (5.0 §3.9, 3.1.1 §3.9): the packet id, the properties in MQTT
/// 5, then one code per topic filter; 3.1.1 knows only granted QoS 0 to 2
/// and 0x80, so every failure is 0x80 there.
fn encode_suback(
    v5: bool,
    ack: &SubAck,
    props: &Properties,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    if ack.return_codes.is_empty() {
        return Err(FrameError::Unencodable("a SUBACK without reason codes"));
    }
    let codes: SmallVec<[u8; 8]> = ack
        .return_codes
        .iter()
        .map(|&code| match suback_code(code) {
            granted @ 0..=2 => granted,
            _ if !v5 => 0x80,
            failure => failure,
        })
        .collect();
    let pkid = ack.pkid.to_be_bytes();
    if !v5 {
        return frame(SUBACK, &[&pkid, &codes], out);
    }
    let length = props.length()?;
    frame(
        SUBACK,
        &[&pkid, length.as_slice(), props.as_slice(), &codes],
        out,
    )
}

/// UNSUBACK (5.0 §3.11, 3.1.1 §3.11): the packet id; in MQTT 5 then the
/// properties and one reason code per topic filter. 3.1.1's is the packet
/// id alone.
fn encode_unsuback(
    v5: bool,
    ack: &UnsubAck,
    props: &Properties,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let pkid = ack.pkid.to_be_bytes();
    if !v5 {
        return frame(UNSUBACK, &[&pkid], out);
    }
    if ack.reasons.is_empty() {
        return Err(FrameError::Unencodable("an UNSUBACK without reason codes"));
    }
    let codes: SmallVec<[u8; 8]> = ack.reasons.iter().map(|&r| unsuback_code(r)).collect();
    let length = props.length()?;
    frame(
        UNSUBACK,
        &[&pkid, length.as_slice(), props.as_slice(), &codes],
        out,
    )
}

/// DISCONNECT (5.0 §3.14, 3.1.1 §3.14): in MQTT 5 the reason code and
/// properties, both left out (Remaining Length 0) for a normal
/// disconnection without properties. 3.1.1's DISCONNECT is empty, and
/// only a client sends one.
fn encode_disconnect(
    v5: bool,
    disconnect: &Disconnect,
    props: Option<&DisconnectProperties>,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    if !v5 {
        return frame(DISCONNECT, &[], out);
    }
    let reason = disconnect_code(disconnect.reason_code);
    let mut p = Properties::default();
    if let Some(d) = props {
        p.four(property::SESSION_EXPIRY_INTERVAL, d.session_expiry_interval);
        p.bytes(
            property::REASON_STRING,
            d.reason_string.as_deref().map(str::as_bytes),
        )?;
        p.user(&d.user_properties)?;
        p.bytes(
            property::SERVER_REFERENCE,
            d.server_reference.as_deref().map(str::as_bytes),
        )?;
    }
    if reason == 0 && p.is_empty() {
        return frame(DISCONNECT, &[], out);
    }
    let length = p.length()?;
    frame(
        DISCONNECT,
        &[&[reason], length.as_slice(), p.as_slice()],
        out,
    )
}

/// CONNACK reason codes (5.0 §3.2.2.2). rumqttd names 3.1.1's codes 1 and
/// 3 apart from MQTT 5's 0x84 and 0x88; they mean the same.
fn connack_code_v5(code: ConnectReturnCode) -> u8 {
    use ConnectReturnCode as C;
    match code {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable | C::ServiceUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

/// CONNACK return codes (3.1.1 §3.2.2.3), for the refusals one fits.
fn connack_code_v311(code: ConnectReturnCode) -> Option<u8> {
    use ConnectReturnCode as C;
    match code {
        C::Success => Some(0),
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => Some(1),
        C::ClientIdentifierNotValid => Some(2),
        C::ServiceUnavailable | C::ServerUnavailable | C::ServerBusy => Some(3),
        C::BadUserNamePassword | C::BadAuthenticationMethod => Some(4),
        C::NotAuthorized | C::Banned => Some(5),
        C::UnspecifiedError
        | C::MalformedPacket
        | C::ProtocolError
        | C::ImplementationSpecificError
        | C::TopicNameInvalid
        | C::PacketTooLarge
        | C::QuotaExceeded
        | C::PayloadFormatInvalid
        | C::RetainNotSupported
        | C::QoSNotSupported
        | C::UseAnotherServer
        | C::ServerMoved
        | C::ConnectionRateExceeded => None,
    }
}

/// PUBACK reason codes (5.0 §3.4.2.1).
fn puback_code(reason: PubAckReason) -> u8 {
    use PubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

/// PUBREC reason codes (5.0 §3.5.2.1): the same as PUBACK's.
fn pubrec_code(reason: PubRecReason) -> u8 {
    use PubRecReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

/// PUBREL reason codes (5.0 §3.6.2.1).
fn pubrel_code(reason: PubRelReason) -> u8 {
    match reason {
        PubRelReason::Success => 0x00,
        PubRelReason::PacketIdentifierNotFound => 0x92,
    }
}

/// PUBCOMP reason codes (5.0 §3.7.2.1).
fn pubcomp_code(reason: PubCompReason) -> u8 {
    match reason {
        PubCompReason::Success => 0x00,
        PubCompReason::PacketIdentifierNotFound => 0x92,
    }
}

/// SUBACK reason codes (5.0 §3.9.3); rumqttd's `Failure` is 3.1.1's 0x80.
fn suback_code(code: SubscribeReasonCode) -> u8 {
    use SubscribeReasonCode as S;
    match code {
        S::Success(qos) => qos as u8,
        S::QoS0 => 0x00,
        S::QoS1 => 0x01,
        S::QoS2 => 0x02,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

/// UNSUBACK reason codes (5.0 §3.11.3).
fn unsuback_code(reason: UnsubAckReason) -> u8 {
    use UnsubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoSubscriptionExisted => 0x11,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicFilterInvalid => 0x8F,
        R::PacketIdentifierInUse => 0x91,
    }
}

/// DISCONNECT reason codes (5.0 §3.14.2.1).
fn disconnect_code(reason: DisconnectReasonCode) -> u8 {
    use DisconnectReasonCode as D;
    match reason {
        D::NormalDisconnection => 0x00,
        D::DisconnectWithWillMessage => 0x04,
        D::UnspecifiedError => 0x80,
        D::MalformedPacket => 0x81,
        D::ProtocolError => 0x82,
        D::ImplementationSpecificError => 0x83,
        D::NotAuthorized => 0x87,
        D::ServerBusy => 0x89,
        D::ServerShuttingDown => 0x8B,
        D::KeepAliveTimeout => 0x8D,
        D::SessionTakenOver => 0x8E,
        D::TopicFilterInvalid => 0x8F,
        D::TopicNameInvalid => 0x90,
        D::ReceiveMaximumExceeded => 0x93,
        D::TopicAliasInvalid => 0x94,
        D::PacketTooLarge => 0x95,
        D::MessageRateTooHigh => 0x96,
        D::QuotaExceeded => 0x97,
        D::AdministrativeAction => 0x98,
        D::PayloadFormatInvalid => 0x99,
        D::RetainNotSupported => 0x9A,
        D::QoSNotSupported => 0x9B,
        D::UseAnotherServer => 0x9C,
        D::ServerMoved => 0x9D,
        D::SharedSubscriptionNotSupported => 0x9E,
        D::ConnectionRateExceeded => 0x9F,
        D::MaximumConnectTime => 0xA0,
        D::SubscriptionIdentifiersNotSupported => 0xA1,
        D::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

/// A client packet for rumqttd's 3.1.1 encoder, which panics on properties.
fn without_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Connect(connect, _, will, _, login) => {
            Packet::Connect(connect, None, will, None, login)
        }
        Packet::Subscribe(subscribe, _) => Packet::Subscribe(subscribe, None),
        Packet::Unsubscribe(unsubscribe, _) => Packet::Unsubscribe(unsubscribe, None),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    //! Encoding checked against the spec: tables of reason codes copied
    //! from MQTT 5.0 and 3.1.1, exact bytes for each form, and a strict
    //! reader that checks every length against the bytes it covers.

    use super::*;
    use bytes::Bytes;
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;
    use rumqttd::protocol::{
        PubAck, PubComp, PubRec, PubRel, QoS, SubAckProperties, UnsubAckProperties,
    };

    fn encoded(version: Version, packet: Packet) -> BytesMut {
        let mut out = BytesMut::new();
        Codec::new(version, 1 << 20)
            .encode(packet, &mut out)
            .expect("encode");
        out
    }

    /// DISCONNECT reason codes (5.0 §3.14.2.1).
    const DISCONNECT_CODES: [(DisconnectReasonCode, u8); 29] = {
        use DisconnectReasonCode as D;
        [
            (D::NormalDisconnection, 0x00),
            (D::DisconnectWithWillMessage, 0x04),
            (D::UnspecifiedError, 0x80),
            (D::MalformedPacket, 0x81),
            (D::ProtocolError, 0x82),
            (D::ImplementationSpecificError, 0x83),
            (D::NotAuthorized, 0x87),
            (D::ServerBusy, 0x89),
            (D::ServerShuttingDown, 0x8B),
            (D::KeepAliveTimeout, 0x8D),
            (D::SessionTakenOver, 0x8E),
            (D::TopicFilterInvalid, 0x8F),
            (D::TopicNameInvalid, 0x90),
            (D::ReceiveMaximumExceeded, 0x93),
            (D::TopicAliasInvalid, 0x94),
            (D::PacketTooLarge, 0x95),
            (D::MessageRateTooHigh, 0x96),
            (D::QuotaExceeded, 0x97),
            (D::AdministrativeAction, 0x98),
            (D::PayloadFormatInvalid, 0x99),
            (D::RetainNotSupported, 0x9A),
            (D::QoSNotSupported, 0x9B),
            (D::UseAnotherServer, 0x9C),
            (D::ServerMoved, 0x9D),
            (D::SharedSubscriptionNotSupported, 0x9E),
            (D::ConnectionRateExceeded, 0x9F),
            (D::MaximumConnectTime, 0xA0),
            (D::SubscriptionIdentifiersNotSupported, 0xA1),
            (D::WildcardSubscriptionsNotSupported, 0xA2),
        ]
    };

    /// CONNACK codes: MQTT 5's (5.0 §3.2.2.2), and 3.1.1's where one
    /// fits (3.1.1 §3.2.2.3).
    const CONNACK_CODES: [(ConnectReturnCode, u8, Option<u8>); 24] = {
        use ConnectReturnCode as C;
        [
            (C::Success, 0x00, Some(0)),
            (C::RefusedProtocolVersion, 0x84, Some(1)),
            (C::UnsupportedProtocolVersion, 0x84, Some(1)),
            (C::ClientIdentifierNotValid, 0x85, Some(2)),
            (C::ServiceUnavailable, 0x88, Some(3)),
            (C::ServerUnavailable, 0x88, Some(3)),
            (C::ServerBusy, 0x89, Some(3)),
            (C::BadUserNamePassword, 0x86, Some(4)),
            (C::BadAuthenticationMethod, 0x8C, Some(4)),
            (C::NotAuthorized, 0x87, Some(5)),
            (C::Banned, 0x8A, Some(5)),
            (C::UnspecifiedError, 0x80, None),
            (C::MalformedPacket, 0x81, None),
            (C::ProtocolError, 0x82, None),
            (C::ImplementationSpecificError, 0x83, None),
            (C::TopicNameInvalid, 0x90, None),
            (C::PacketTooLarge, 0x95, None),
            (C::QuotaExceeded, 0x97, None),
            (C::PayloadFormatInvalid, 0x99, None),
            (C::RetainNotSupported, 0x9A, None),
            (C::QoSNotSupported, 0x9B, None),
            (C::UseAnotherServer, 0x9C, None),
            (C::ServerMoved, 0x9D, None),
            (C::ConnectionRateExceeded, 0x9F, None),
        ]
    };

    /// PUBACK reason codes (5.0 §3.4.2.1).
    const PUBACK_CODES: [(PubAckReason, u8); 9] = {
        use PubAckReason as R;
        [
            (R::Success, 0x00),
            (R::NoMatchingSubscribers, 0x10),
            (R::UnspecifiedError, 0x80),
            (R::ImplementationSpecificError, 0x83),
            (R::NotAuthorized, 0x87),
            (R::TopicNameInvalid, 0x90),
            (R::PacketIdentifierInUse, 0x91),
            (R::QuotaExceeded, 0x97),
            (R::PayloadFormatInvalid, 0x99),
        ]
    };

    /// PUBREC reason codes (5.0 §3.5.2.1).
    const PUBREC_CODES: [(PubRecReason, u8); 9] = {
        use PubRecReason as R;
        [
            (R::Success, 0x00),
            (R::NoMatchingSubscribers, 0x10),
            (R::UnspecifiedError, 0x80),
            (R::ImplementationSpecificError, 0x83),
            (R::NotAuthorized, 0x87),
            (R::TopicNameInvalid, 0x90),
            (R::PacketIdentifierInUse, 0x91),
            (R::QuotaExceeded, 0x97),
            (R::PayloadFormatInvalid, 0x99),
        ]
    };

    /// PUBREL and PUBCOMP reason codes (5.0 §3.6.2.1, §3.7.2.1).
    const PUBREL_CODES: [(PubRelReason, u8); 2] = [
        (PubRelReason::Success, 0x00),
        (PubRelReason::PacketIdentifierNotFound, 0x92),
    ];
    const PUBCOMP_CODES: [(PubCompReason, u8); 2] = [
        (PubCompReason::Success, 0x00),
        (PubCompReason::PacketIdentifierNotFound, 0x92),
    ];

    /// SUBACK codes: MQTT 5's (5.0 §3.9.3) and 3.1.1's (§3.9.3), which
    /// has one failure code.
    const SUBACK_CODES: [(SubscribeReasonCode, u8, u8); 16] = {
        use SubscribeReasonCode as S;
        [
            (S::Success(QoS::AtMostOnce), 0x00, 0x00),
            (S::Success(QoS::AtLeastOnce), 0x01, 0x01),
            (S::Success(QoS::ExactlyOnce), 0x02, 0x02),
            (S::QoS0, 0x00, 0x00),
            (S::QoS1, 0x01, 0x01),
            (S::QoS2, 0x02, 0x02),
            (S::Failure, 0x80, 0x80),
            (S::Unspecified, 0x80, 0x80),
            (S::ImplementationSpecific, 0x83, 0x80),
            (S::NotAuthorized, 0x87, 0x80),
            (S::TopicFilterInvalid, 0x8F, 0x80),
            (S::PkidInUse, 0x91, 0x80),
            (S::QuotaExceeded, 0x97, 0x80),
            (S::SharedSubscriptionsNotSupported, 0x9E, 0x80),
            (S::SubscriptionIdNotSupported, 0xA1, 0x80),
            (S::WildcardSubscriptionsNotSupported, 0xA2, 0x80),
        ]
    };

    /// UNSUBACK reason codes (5.0 §3.11.3).
    const UNSUBACK_CODES: [(UnsubAckReason, u8); 7] = {
        use UnsubAckReason as R;
        [
            (R::Success, 0x00),
            (R::NoSubscriptionExisted, 0x11),
            (R::UnspecifiedError, 0x80),
            (R::ImplementationSpecificError, 0x83),
            (R::NotAuthorized, 0x87),
            (R::TopicFilterInvalid, 0x8F),
            (R::PacketIdentifierInUse, 0x91),
        ]
    };

    /// Properties each packet may carry (5.0 §2.2.2.2).
    const CONNACK_PROPERTIES: &[u8] = &[
        0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28,
        0x29, 0x2A,
    ];
    const PUBLISH_PROPERTIES: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26];
    const ACK_PROPERTIES: &[u8] = &[0x1F, 0x26];
    const DISCONNECT_PROPERTIES: &[u8] = &[0x11, 0x1C, 0x1F, 0x26];

    /// One packet as the spec's rules alone read it.
    #[derive(Debug, Default)]
    struct Frame {
        first: u8,
        pkid: Option<u16>,
        topic: Vec<u8>,
        /// CONNACK's flags and code, an ack's or DISCONNECT's reason code
        /// when present, SUBACK's and UNSUBACK's codes.
        codes: Vec<u8>,
        /// Each property's identifier and value bytes; `None` when there
        /// is no Property Length.
        properties: Option<Vec<(u8, Vec<u8>)>>,
        payload: Vec<u8>,
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err(format!("{n} bytes wanted, {} left", self.0.len()));
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }

        fn byte(&mut self) -> Result<u8, String> {
            Ok(self.take(1)?[0])
        }

        fn two(&mut self) -> Result<u16, String> {
            let b = self.take(2)?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        }

        /// A Variable Byte Integer, which must use as few bytes as its
        /// value needs (5.0 §1.5.5).
        fn varint(&mut self) -> Result<usize, String> {
            let mut value = 0;
            for i in 0..4 {
                let b = self.byte()?;
                value += usize::from(b & 0x7F) << (7 * i);
                if b & 0x80 == 0 {
                    if i > 0 && b == 0 {
                        return Err("a variable byte integer in more bytes than needed".into());
                    }
                    return Ok(value);
                }
            }
            Err("a variable byte integer over four bytes".into())
        }

        /// A UTF-8 string or binary data: a two-byte length, then that
        /// many bytes.
        fn prefixed(&mut self) -> Result<&'a [u8], String> {
            let n = self.two()?;
            self.take(n.into())
        }

        /// A Property Length, then exactly that many bytes of properties
        /// of the kinds in `allowed`, none twice but User Property and
        /// Subscription Identifier.
        fn properties(&mut self, allowed: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
            let length = self.varint()?;
            let mut block = Reader(self.take(length)?);
            let mut properties: Vec<(u8, Vec<u8>)> = Vec::new();
            while !block.0.is_empty() {
                let id = block.byte()?;
                if !allowed.contains(&id) {
                    return Err(format!("property {id:#04x} is not allowed here"));
                }
                let value = block.0;
                match id {
                    0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                        block.take(1)?;
                    }
                    0x13 | 0x21 | 0x22 | 0x23 => {
                        block.take(2)?;
                    }
                    0x02 | 0x11 | 0x18 | 0x27 => {
                        block.take(4)?;
                    }
                    0x0B => {
                        if block.varint()? == 0 {
                            return Err("subscription identifier 0".into());
                        }
                    }
                    0x26 => {
                        block.prefixed()?;
                        block.prefixed()?;
                    }
                    _ => {
                        block.prefixed()?;
                    }
                }
                let value = value[..value.len() - block.0.len()].to_vec();
                if id != 0x26 && id != 0x0B && properties.iter().any(|(seen, _)| *seen == id) {
                    return Err(format!("property {id:#04x} twice"));
                }
                properties.push((id, value));
            }
            Ok(properties)
        }
    }

    /// Reads the packet at the start of `bytes` as a client of `version`
    /// would; returns it and its length.
    fn read_frame(version: Version, bytes: &[u8]) -> Result<(Frame, usize), String> {
        let v5 = version == Version::V5;
        let mut r = Reader(bytes);
        let first = r.byte()?;
        let remaining = r.varint()?;
        let mut body = Reader(r.take(remaining)?);
        let used = bytes.len() - r.0.len();
        let kind = first >> 4;
        let flags = first & 0x0F;
        let mut f = Frame {
            first,
            ..Frame::default()
        };
        match (kind, flags) {
            (2, 0) => {
                let (ack_flags, code) = (body.byte()?, body.byte()?);
                if ack_flags > 1 || (ack_flags == 1 && code != 0) {
                    return Err(format!(
                        "acknowledge flags {ack_flags:#x} with code {code:#x}"
                    ));
                }
                if !v5 && code > 5 {
                    return Err(format!("3.1.1 return code {code}"));
                }
                f.codes = vec![ack_flags, code];
                if v5 {
                    f.properties = Some(body.properties(CONNACK_PROPERTIES)?);
                }
            }
            (3, _) => {
                let qos = (flags >> 1) & 0b11;
                if qos == 3 || (qos == 0 && flags & 0b1000 != 0) {
                    return Err(format!("PUBLISH flags {flags:#06b}"));
                }
                f.topic = body.prefixed()?.to_vec();
                if qos > 0 {
                    f.pkid = Some(body.two()?).filter(|id| *id != 0);
                    if f.pkid.is_none() {
                        return Err("packet id 0".into());
                    }
                }
                if v5 {
                    f.properties = Some(body.properties(PUBLISH_PROPERTIES)?);
                }
                f.payload = std::mem::take(&mut body.0).to_vec();
            }
            (4, 0) | (5, 0) | (6, 0b0010) | (7, 0) => {
                f.pkid = Some(body.two()?);
                // 5.0 §3.4.2.1: no reason code means 0x00; no Property
                // Length means none.
                if v5 && remaining > 2 {
                    f.codes.push(body.byte()?);
                    if remaining > 3 {
                        f.properties = Some(body.properties(ACK_PROPERTIES)?);
                    }
                }
            }
            (9, 0) | (11, 0) => {
                f.pkid = Some(body.two()?);
                if v5 {
                    f.properties = Some(body.properties(ACK_PROPERTIES)?);
                }
                if kind == 9 || v5 {
                    f.codes = std::mem::take(&mut body.0).to_vec();
                    if f.codes.is_empty() {
                        return Err("no reason codes".into());
                    }
                }
                if kind == 9 && !v5 && f.codes.iter().any(|c| !matches!(c, 0..=2 | 0x80)) {
                    return Err(format!("3.1.1 SUBACK codes {:?}", f.codes));
                }
            }
            (13, 0) => {}
            (14, 0) => {
                // 5.0 §3.14.2.1: no reason code means 0x00; no Property
                // Length means none.
                if v5 && remaining > 0 {
                    f.codes.push(body.byte()?);
                    if remaining > 1 {
                        f.properties = Some(body.properties(DISCONNECT_PROPERTIES)?);
                    }
                }
            }
            _ => return Err(format!("first byte {first:#04x}")),
        }
        if !body.0.is_empty() {
            return Err(format!("{} bytes after the packet's fields", body.0.len()));
        }
        Ok((f, used))
    }

    #[test]
    fn variable_byte_integers_take_the_fewest_bytes() {
        for (value, bytes) in [
            (0, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let varint = Varint::new(value).expect("in range");
            assert_eq!(varint.as_slice(), bytes, "{value}");
            assert_eq!(Reader(bytes).varint(), Ok(value));
        }
        assert!(Varint::new(268_435_456).is_none());
        // A remaining length of 128 takes two bytes.
        let out = encoded(
            Version::V311,
            Packet::Publish(
                OutgoingPublish {
                    topic: b"t",
                    payload: &[0; 125],
                    qos: 0,
                    pkid: 0,
                    dup: false,
                    retain: false,
                }
                .packet(),
                None,
            ),
        );
        assert_eq!(&out[..5], &[0x30, 0x80, 0x01, 0, 1]);
        assert_eq!(out.len(), 3 + 128);
    }

    #[test]
    fn a_v5_disconnect_with_a_reason_is_the_code_and_a_zero_property_length() {
        for (reason_code, code) in DISCONNECT_CODES {
            let out = encoded(
                Version::V5,
                Packet::Disconnect(Disconnect { reason_code }, None),
            );
            // rumqttd wrote e0 01 <code> 00 here.
            let want: &[u8] = if code == 0 {
                &[0xE0, 0x00]
            } else {
                &[0xE0, 0x02, code, 0x00]
            };
            assert_eq!(&out[..], want, "{reason_code:?}");
            // 3.1.1's DISCONNECT is empty.
            let out = encoded(
                Version::V311,
                Packet::Disconnect(Disconnect { reason_code }, None),
            );
            assert_eq!(&out[..], &[0xE0, 0x00]);
        }
        let empty = DisconnectProperties {
            session_expiry_interval: None,
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        };
        // Present but empty properties are no properties: rumqttd wrote
        // e0 00 for these, losing the reason code.
        let taken_over = Disconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
        };
        let out = encoded(
            Version::V5,
            Packet::Disconnect(taken_over.clone(), Some(empty.clone())),
        );
        assert_eq!(&out[..], &[0xE0, 0x02, 0x8E, 0x00]);
        let normal = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        let out = encoded(Version::V5, Packet::Disconnect(normal, Some(empty.clone())));
        assert_eq!(&out[..], &[0xE0, 0x00]);
        let moved = DisconnectProperties {
            reason_string: Some("bye".into()),
            server_reference: Some("b:1".into()),
            ..empty
        };
        let out = encoded(
            Version::V5,
            Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::ServerMoved,
                },
                Some(moved),
            ),
        );
        #[rustfmt::skip]
        let want = [
            0xE0, 14, 0x9D, 12,
            0x1F, 0, 3, b'b', b'y', b'e',
            0x1C, 0, 3, b'b', b':', b'1',
        ];
        assert_eq!(&out[..], &want);
    }

    #[test]
    fn acks_leave_out_reason_and_properties_only_for_plain_success() {
        let reason = |text: &str| PubAckProperties {
            reason_string: Some(text.into()),
            user_properties: Vec::new(),
        };
        let user = PubAckProperties {
            reason_string: None,
            user_properties: vec![("k".into(), "v".into())],
        };
        let empty = PubAckProperties {
            reason_string: None,
            user_properties: Vec::new(),
        };
        let puback = |reason, props| Packet::PubAck(PubAck { pkid: 7, reason }, props);
        #[rustfmt::skip]
        let cases: [(Packet, &[u8]); 9] = [
            (puback(PubAckReason::Success, None), &[0x40, 2, 0, 7]),
            (puback(PubAckReason::Success, Some(empty)), &[0x40, 2, 0, 7]),
            (puback(PubAckReason::NoMatchingSubscribers, None), &[0x40, 4, 0, 7, 0x10, 0]),
            (
                puback(PubAckReason::UnspecifiedError, Some(reason("full"))),
                &[0x40, 11, 0, 7, 0x80, 7, 0x1F, 0, 4, b'f', b'u', b'l', b'l'],
            ),
            (
                puback(PubAckReason::Success, Some(user)),
                &[0x40, 11, 0, 7, 0x00, 7, 0x26, 0, 1, b'k', 0, 1, b'v'],
            ),
            (
                Packet::PubRec(PubRec { pkid: 7, reason: PubRecReason::PacketIdentifierInUse }, None),
                &[0x50, 4, 0, 7, 0x91, 0],
            ),
            (
                Packet::PubRel(PubRel { pkid: 7, reason: PubRelReason::Success }, None),
                &[0x62, 2, 0, 7],
            ),
            (
                Packet::PubRel(PubRel { pkid: 7, reason: PubRelReason::PacketIdentifierNotFound }, None),
                &[0x62, 4, 0, 7, 0x92, 0],
            ),
            (
                Packet::PubComp(PubComp { pkid: 7, reason: PubCompReason::PacketIdentifierNotFound }, None),
                &[0x70, 4, 0, 7, 0x92, 0],
            ),
        ];
        for (packet, want) in cases {
            let out = encoded(Version::V5, packet.clone());
            assert_eq!(&out[..], want, "{packet:?}");
            // 3.1.1's acks are the packet id alone.
            let out = encoded(Version::V311, packet.clone());
            assert_eq!(&out[..], &[want[0], 2, 0, 7], "{packet:?}");
        }
    }

    #[test]
    fn connacks_carry_each_versions_codes() {
        for (code, v5, v311) in CONNACK_CODES {
            let packet = Packet::ConnAck(
                ConnAck {
                    session_present: true,
                    code,
                },
                None,
            );
            // Session Present is 0 on a refusal.
            let present = u8::from(v5 == 0);
            let out = encoded(Version::V5, packet.clone());
            assert_eq!(&out[..], &[0x20, 3, present, v5, 0], "{code:?}");
            let mut out = BytesMut::from(&[0xD0, 0][..]);
            let result = Codec::new(Version::V311, 1024).encode(packet, &mut out);
            match v311 {
                Some(v311) => assert_eq!(&out[2..], &[0x20, 2, present, v311], "{code:?}"),
                None => {
                    assert!(
                        matches!(result, Err(FrameError::Unencodable(_))),
                        "{code:?}"
                    );
                    assert_eq!(&out[..], &[0xD0, 0]);
                }
            }
        }
        let props = ConnAckProperties {
            receive_max: Some(10),
            assigned_client_identifier: Some("a".into()),
            topic_alias_max: Some(5),
            ..ConnAckProperties::default()
        };
        let packet = Packet::ConnAck(
            ConnAck {
                session_present: true,
                code: ConnectReturnCode::Success,
            },
            Some(props),
        );
        #[rustfmt::skip]
        let want = [
            0x20, 13, 1, 0, 10,
            0x21, 0, 10,
            0x12, 0, 1, b'a',
            0x22, 0, 5,
        ];
        assert_eq!(&encoded(Version::V5, packet.clone())[..], &want);
        assert_eq!(&encoded(Version::V311, packet)[..], &[0x20, 2, 1, 0]);
    }

    #[test]
    fn subacks_and_unsubacks_carry_each_versions_codes() {
        for (code, v5, v311) in SUBACK_CODES {
            let packet = Packet::SubAck(
                SubAck {
                    pkid: 9,
                    return_codes: vec![code],
                },
                None,
            );
            let out = encoded(Version::V5, packet.clone());
            assert_eq!(&out[..], &[0x90, 4, 0, 9, 0, v5], "{code:?}");
            let out = encoded(Version::V311, packet);
            assert_eq!(&out[..], &[0x90, 3, 0, 9, v311], "{code:?}");
        }
        for (reason, code) in UNSUBACK_CODES {
            let packet = Packet::UnsubAck(
                UnsubAck {
                    pkid: 9,
                    reasons: vec![reason, UnsubAckReason::Success],
                },
                None,
            );
            let out = encoded(Version::V5, packet.clone());
            assert_eq!(&out[..], &[0xB0, 5, 0, 9, 0, code, 0], "{reason:?}");
            let out = encoded(Version::V311, packet);
            assert_eq!(&out[..], &[0xB0, 2, 0, 9]);
        }
        let props = SubAckProperties {
            reason_string: Some("no".into()),
            user_properties: Vec::new(),
        };
        let packet = Packet::SubAck(
            SubAck {
                pkid: 9,
                return_codes: vec![
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::NotAuthorized,
                ],
            },
            Some(props),
        );
        #[rustfmt::skip]
        let want = [0x90, 10, 0, 9, 5, 0x1F, 0, 2, b'n', b'o', 0x01, 0x87];
        assert_eq!(&encoded(Version::V5, packet.clone())[..], &want);
        assert_eq!(
            &encoded(Version::V311, packet)[..],
            &[0x90, 4, 0, 9, 0x01, 0x80]
        );
    }

    #[test]
    fn publishes_carry_properties_in_v5_only() {
        let publish = OutgoingPublish {
            topic: b"a/b",
            payload: b"hi",
            qos: 1,
            pkid: 0x0102,
            dup: false,
            retain: false,
        };
        let props = PublishProperties {
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            user_properties: vec![("k".into(), "v".into())],
            subscription_identifiers: vec![1, 200],
            content_type: Some("t".into()),
            ..PublishProperties::default()
        };
        let mut out = BytesMut::new();
        Codec::new(Version::V5, 1024)
            .encode_publish(&publish, Some(&props), &mut out)
            .expect("encode");
        #[rustfmt::skip]
        let want = [
            0x32, 34, 0, 3, b'a', b'/', b'b', 0x01, 0x02, 24,
            0x02, 0, 0, 0, 60,
            0x23, 0, 3,
            0x26, 0, 1, b'k', 0, 1, b'v',
            0x0B, 0x01,
            0x0B, 0xC8, 0x01,
            0x03, 0, 1, b't',
            b'h', b'i',
        ];
        assert_eq!(&out[..], &want);
        // The same through `encode`, from rumqttd's packet.
        let packet = Packet::Publish(publish.packet(), Some(props));
        assert_eq!(&encoded(Version::V5, packet.clone())[..], &want);
        #[rustfmt::skip]
        let want = [0x32, 9, 0, 3, b'a', b'/', b'b', 0x01, 0x02, b'h', b'i'];
        assert_eq!(&encoded(Version::V311, packet)[..], &want);
        // QoS 0: no packet id, and no DUP flag even when asked for.
        let publish = OutgoingPublish {
            qos: 0,
            pkid: 0,
            dup: true,
            retain: true,
            ..publish
        };
        let mut out = BytesMut::new();
        Codec::new(Version::V5, 1024)
            .encode_publish(&publish, None, &mut out)
            .expect("encode");
        assert_eq!(&out[..], &[0x31, 8, 0, 3, b'a', b'/', b'b', 0, b'h', b'i']);
    }

    #[test]
    fn a_packet_that_cannot_be_framed_writes_nothing() {
        let long = "x".repeat(70_000);
        let publish = |topic: &'static [u8], qos, pkid| OutgoingPublish {
            topic,
            payload: b"p",
            qos,
            pkid,
            dup: false,
            retain: false,
        };
        let ids = PublishProperties {
            subscription_identifiers: vec![268_435_456],
            ..PublishProperties::default()
        };
        let cases = [
            (
                Version::V311,
                Packet::Publish(publish(b"t", 1, 0).packet(), None),
            ),
            (
                Version::V5,
                Packet::Publish(publish(b"t", 1, 1).packet(), Some(ids)),
            ),
            (
                Version::V5,
                Packet::PubAck(
                    PubAck {
                        pkid: 1,
                        reason: PubAckReason::Success,
                    },
                    Some(PubAckProperties {
                        reason_string: None,
                        user_properties: vec![("k".into(), long)],
                    }),
                ),
            ),
            (
                Version::V311,
                Packet::SubAck(
                    SubAck {
                        pkid: 1,
                        return_codes: Vec::new(),
                    },
                    None,
                ),
            ),
            (
                Version::V5,
                Packet::UnsubAck(
                    UnsubAck {
                        pkid: 1,
                        reasons: Vec::new(),
                    },
                    None,
                ),
            ),
            (
                Version::V311,
                Packet::ConnAck(
                    ConnAck {
                        session_present: false,
                        code: ConnectReturnCode::TopicNameInvalid,
                    },
                    None,
                ),
            ),
        ];
        for (version, packet) in cases {
            let mut out = BytesMut::from(&[0xD0, 0][..]);
            let result = Codec::new(version, 1 << 20).encode(packet, &mut out);
            assert!(
                matches!(result, Err(FrameError::Unencodable(_))),
                "{version:?} {result:?}"
            );
            assert_eq!(&out[..], &[0xD0, 0], "{version:?}");
        }
        // A rumqttd PUBLISH cannot hold these.
        let long_topic = vec![b't'; 65_536];
        for publish in [
            OutgoingPublish {
                topic: &long_topic,
                ..publish(b"", 0, 0)
            },
            publish(b"t", 3, 1),
        ] {
            let mut out = BytesMut::new();
            let result = Codec::new(Version::V5, 1 << 20).encode_publish(&publish, None, &mut out);
            assert!(
                matches!(result, Err(FrameError::Unencodable(_))),
                "{result:?}"
            );
            assert!(out.is_empty());
        }
    }

    /// A packet to send, and what a client must read from it in each
    /// version: its codes, and how many properties (`None`: no Property
    /// Length). `None` for 3.1.1: it cannot be sent.
    #[derive(Debug, Clone)]
    struct Case {
        packet: Packet,
        v5: (Vec<u8>, Option<usize>),
        v311: Option<(Vec<u8>, Option<usize>)>,
    }

    /// An ack's or DISCONNECT's codes and property count: both left out
    /// for 0x00 without properties.
    fn reason_only(code: u8, count: usize) -> (Vec<u8>, Option<usize>) {
        if code == 0 && count == 0 {
            (Vec::new(), None)
        } else {
            (vec![code], Some(count))
        }
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9/é ]{0,12}"
    }

    fn users() -> impl Strategy<Value = Vec<(String, String)>> {
        vec((text(), text()), 0..3)
    }

    /// A Reason String and User Properties, the properties of acks.
    type ReasonProps = Option<(Option<String>, Vec<(String, String)>)>;

    fn reason_properties() -> impl Strategy<Value = ReasonProps> {
        option::of((option::of(text()), users()))
    }

    /// How many properties there are.
    fn count(props: &ReasonProps) -> usize {
        props.as_ref().map_or(0, |(reason, user)| {
            usize::from(reason.is_some()) + user.len()
        })
    }

    fn connack_case() -> impl Strategy<Value = Case> {
        let props = (
            (
                option::of(any::<u32>()),
                option::of(any::<u16>()),
                option::of(0u8..=1),
                option::of(0u8..=1),
                option::of(any::<u32>()),
                option::of(text()),
                option::of(any::<u16>()),
                option::of(text()),
            ),
            (
                users(),
                option::of(0u8..=1),
                option::of(0u8..=1),
                option::of(0u8..=1),
                option::of(any::<u16>()),
                option::of(text()),
                option::of(text()),
                option::of(text()),
                option::of(vec(any::<u8>(), 0..8)),
            ),
        )
            .prop_map(|((a, b, c, d, e, f, g, h), (i, j, k, l, m, n, o, p, q))| {
                let count = [
                    a.is_some(),
                    b.is_some(),
                    c.is_some(),
                    d.is_some(),
                    e.is_some(),
                    f.is_some(),
                    g.is_some(),
                    h.is_some(),
                    j.is_some(),
                    k.is_some(),
                    l.is_some(),
                    m.is_some(),
                    n.is_some(),
                    o.is_some(),
                    p.is_some(),
                    q.is_some(),
                ]
                .into_iter()
                .filter(|set| *set)
                .count()
                    + i.len();
                let props = ConnAckProperties {
                    session_expiry_interval: a,
                    receive_max: b,
                    max_qos: c,
                    retain_available: d,
                    max_packet_size: e,
                    assigned_client_identifier: f,
                    topic_alias_max: g,
                    reason_string: h,
                    user_properties: i,
                    wildcard_subscription_available: j,
                    subscription_identifiers_available: k,
                    shared_subscription_available: l,
                    server_keep_alive: m,
                    response_information: n,
                    server_reference: o,
                    authentication_method: p,
                    authentication_data: q.map(Bytes::from),
                };
                (props, count)
            });
        (
            any::<bool>(),
            select(CONNACK_CODES.to_vec()),
            option::of(props),
        )
            .prop_map(|(session_present, (code, v5, v311), props)| {
                let count = props.as_ref().map_or(0, |(_, count)| *count);
                Case {
                    packet: Packet::ConnAck(
                        ConnAck {
                            session_present,
                            code,
                        },
                        props.map(|(props, _)| props),
                    ),
                    v5: (vec![u8::from(session_present && v5 == 0), v5], Some(count)),
                    v311: v311.map(|c| (vec![u8::from(session_present && c == 0), c], None)),
                }
            })
    }

    fn publish_case() -> impl Strategy<Value = Case> {
        let ids = prop_oneof![
            1usize..=127,
            128usize..=16_383,
            16_384usize..=2_097_151,
            2_097_152usize..=268_435_455,
        ];
        let props = (
            option::of(0u8..=1),
            option::of(any::<u32>()),
            option::of(1u16..),
            option::of(text()),
            option::of(vec(any::<u8>(), 0..8)),
            users(),
            vec(ids, 0..3),
            option::of(text()),
        )
            .prop_map(|(a, b, c, d, e, f, g, h)| PublishProperties {
                payload_format_indicator: a,
                message_expiry_interval: b,
                topic_alias: c,
                response_topic: d,
                correlation_data: e.map(Bytes::from),
                user_properties: f,
                subscription_identifiers: g,
                content_type: h,
            });
        let payload = prop_oneof![
            vec(any::<u8>(), 0..64),
            (0usize..20_000).prop_map(|n| vec![0xA5; n]),
        ];
        (
            "[a-z/]{0,16}",
            payload,
            0u8..=2,
            1u16..,
            any::<bool>(),
            any::<bool>(),
            option::of(props),
        )
            .prop_map(|(topic, payload, qos, pkid, dup, retain, props)| {
                let count = props.as_ref().map_or(0, |p| {
                    [
                        p.payload_format_indicator.is_some(),
                        p.message_expiry_interval.is_some(),
                        p.topic_alias.is_some(),
                        p.response_topic.is_some(),
                        p.correlation_data.is_some(),
                        p.content_type.is_some(),
                    ]
                    .into_iter()
                    .filter(|set| *set)
                    .count()
                        + p.user_properties.len()
                        + p.subscription_identifiers.len()
                });
                let publish = OutgoingPublish {
                    topic: topic.as_bytes(),
                    payload: &payload,
                    qos,
                    pkid: if qos > 0 { pkid } else { 0 },
                    dup: dup && qos > 0,
                    retain,
                }
                .packet();
                Case {
                    packet: Packet::Publish(publish, props),
                    v5: (Vec::new(), Some(count)),
                    v311: Some((Vec::new(), None)),
                }
            })
    }

    fn ack_case() -> impl Strategy<Value = Case> {
        let ack = |kind: usize, pkid: u16, which: usize, props| {
            let n = count(&props);
            let (packet, code) = match kind {
                0 => {
                    let (reason, code) = PUBACK_CODES[which % PUBACK_CODES.len()];
                    let props = props.map(|(reason_string, user_properties)| PubAckProperties {
                        reason_string,
                        user_properties,
                    });
                    (Packet::PubAck(PubAck { pkid, reason }, props), code)
                }
                1 => {
                    let (reason, code) = PUBREC_CODES[which % PUBREC_CODES.len()];
                    let props = props.map(|(reason_string, user_properties)| PubRecProperties {
                        reason_string,
                        user_properties,
                    });
                    (Packet::PubRec(PubRec { pkid, reason }, props), code)
                }
                2 => {
                    let (reason, code) = PUBREL_CODES[which % PUBREL_CODES.len()];
                    let props = props.map(|(reason_string, user_properties)| PubRelProperties {
                        reason_string,
                        user_properties,
                    });
                    (Packet::PubRel(PubRel { pkid, reason }, props), code)
                }
                _ => {
                    let (reason, code) = PUBCOMP_CODES[which % PUBCOMP_CODES.len()];
                    let props = props.map(|(reason_string, user_properties)| PubCompProperties {
                        reason_string,
                        user_properties,
                    });
                    (Packet::PubComp(PubComp { pkid, reason }, props), code)
                }
            };
            Case {
                packet,
                v5: reason_only(code, n),
                v311: Some((Vec::new(), None)),
            }
        };
        (0usize..4, 1u16.., 0usize..9, reason_properties())
            .prop_map(move |(kind, pkid, which, props)| ack(kind, pkid, which, props))
    }

    fn suback_case() -> impl Strategy<Value = Case> {
        (
            1u16..,
            vec(select(SUBACK_CODES.to_vec()), 1..4),
            reason_properties(),
        )
            .prop_map(|(pkid, codes, props)| {
                let n = count(&props);
                Case {
                    packet: Packet::SubAck(
                        SubAck {
                            pkid,
                            return_codes: codes.iter().map(|c| c.0).collect(),
                        },
                        props.map(|(reason_string, user_properties)| SubAckProperties {
                            reason_string,
                            user_properties,
                        }),
                    ),
                    v5: (codes.iter().map(|c| c.1).collect(), Some(n)),
                    v311: Some((codes.iter().map(|c| c.2).collect(), None)),
                }
            })
    }

    fn unsuback_case() -> impl Strategy<Value = Case> {
        (
            1u16..,
            vec(select(UNSUBACK_CODES.to_vec()), 1..4),
            reason_properties(),
        )
            .prop_map(|(pkid, codes, props)| {
                let n = count(&props);
                Case {
                    packet: Packet::UnsubAck(
                        UnsubAck {
                            pkid,
                            reasons: codes.iter().map(|c| c.0).collect(),
                        },
                        props.map(|(reason_string, user_properties)| UnsubAckProperties {
                            reason_string,
                            user_properties,
                        }),
                    ),
                    v5: (codes.iter().map(|c| c.1).collect(), Some(n)),
                    v311: Some((Vec::new(), None)),
                }
            })
    }

    fn disconnect_case() -> impl Strategy<Value = Case> {
        let props = (
            option::of(any::<u32>()),
            reason_properties(),
            option::of(text()),
        );
        (select(DISCONNECT_CODES.to_vec()), option::of(props)).prop_map(
            |((reason_code, code), props)| {
                let n = props.as_ref().map_or(0, |(expiry, reason, reference)| {
                    usize::from(expiry.is_some()) + count(reason) + usize::from(reference.is_some())
                });
                let props = props.map(|(session_expiry_interval, reason, server_reference)| {
                    let (reason_string, user_properties) = reason.unwrap_or_default();
                    DisconnectProperties {
                        session_expiry_interval,
                        reason_string,
                        user_properties,
                        server_reference,
                    }
                });
                Case {
                    packet: Packet::Disconnect(Disconnect { reason_code }, props),
                    v5: reason_only(code, n),
                    v311: Some((Vec::new(), None)),
                }
            },
        )
    }

    fn server_packet() -> impl Strategy<Value = Case> {
        prop_oneof![
            connack_case(),
            publish_case(),
            ack_case(),
            suback_case(),
            unsuback_case(),
            disconnect_case(),
            Just(Case {
                packet: Packet::PingResp(rumqttd::protocol::PingResp),
                v5: (Vec::new(), None),
                v311: Some((Vec::new(), None)),
            }),
        ]
    }

    /// The packet type, the high nibble of the first byte (§2.1.2).
    fn packet_type(packet: &Packet) -> u8 {
        match packet {
            Packet::ConnAck(..) => 2,
            Packet::Publish(..) => 3,
            Packet::PubAck(..) => 4,
            Packet::PubRec(..) => 5,
            Packet::PubRel(..) => 6,
            Packet::PubComp(..) => 7,
            Packet::SubAck(..) => 9,
            Packet::UnsubAck(..) => 11,
            Packet::PingResp(..) => 13,
            Packet::Disconnect(..) => 14,
            _ => 0,
        }
    }

    /// What rumqttd's decoders, where they read the packet type, must give
    /// back: properties only in MQTT 5 and only when there are some, and
    /// 3.1.1's acks and DISCONNECT without a reason.
    fn read_back(version: Version, packet: &Packet) -> Option<Packet> {
        let v5 = version == Version::V5;
        let some =
            |reason: &Option<String>, user: &Vec<_>| v5 && (reason.is_some() || !user.is_empty());
        Some(match packet.clone() {
            Packet::Publish(p, props) => Packet::Publish(
                p,
                props.filter(|p| v5 && *p != PublishProperties::default()),
            ),
            Packet::PubAck(a, props) if v5 => Packet::PubAck(
                a,
                props.filter(|p| some(&p.reason_string, &p.user_properties)),
            ),
            Packet::PubAck(a, _) => Packet::PubAck(
                PubAck {
                    pkid: a.pkid,
                    reason: PubAckReason::Success,
                },
                None,
            ),
            Packet::PubRec(r, props) if v5 => Packet::PubRec(
                r,
                props.filter(|p| some(&p.reason_string, &p.user_properties)),
            ),
            Packet::PubRec(r, _) => Packet::PubRec(
                PubRec {
                    pkid: r.pkid,
                    reason: PubRecReason::Success,
                },
                None,
            ),
            Packet::PubRel(r, props) if v5 => Packet::PubRel(
                r,
                props.filter(|p| some(&p.reason_string, &p.user_properties)),
            ),
            Packet::PubRel(r, _) => Packet::PubRel(
                PubRel {
                    pkid: r.pkid,
                    reason: PubRelReason::Success,
                },
                None,
            ),
            Packet::PubComp(c, props) if v5 => Packet::PubComp(
                c,
                props.filter(|p| some(&p.reason_string, &p.user_properties)),
            ),
            Packet::PubComp(c, _) => Packet::PubComp(
                PubComp {
                    pkid: c.pkid,
                    reason: PubCompReason::Success,
                },
                None,
            ),
            Packet::Disconnect(d, props) if v5 => Packet::Disconnect(
                d,
                props.filter(|p| {
                    p.session_expiry_interval.is_some()
                        || p.server_reference.is_some()
                        || some(&p.reason_string, &p.user_properties)
                }),
            ),
            Packet::Disconnect(..) => Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            ),
            Packet::PingResp(p) => Packet::PingResp(p),
            _ => return None,
        })
    }

    proptest! {
        /// Every packet the server sends, in both versions, read back by
        /// the spec's rules, by rumqttc's client decoders and, where they
        /// read the type, by rumqttd's decoders.
        #[test]
        fn server_packets_are_framed_as_the_spec_says(case in server_packet(), v5 in any::<bool>()) {
            let version = if v5 { Version::V5 } else { Version::V311 };
            let want = if v5 { Some(case.v5.clone()) } else { case.v311.clone() };
            // Between two PINGRESPs, to see that the packet ends where its
            // Remaining Length says.
            let mut out = BytesMut::from(&[0xD0, 0][..]);
            let result = Codec::new(version, 1 << 20).encode(case.packet.clone(), &mut out);
            let Some((codes, properties)) = want else {
                prop_assert!(matches!(result, Err(FrameError::Unencodable(_))), "{result:?}");
                prop_assert_eq!(&out[..], &[0xD0, 0]);
                return Ok(());
            };
            prop_assert!(result.is_ok(), "{result:?}");
            out.put_slice(&[0xD0, 0]);
            let (frame, used) = read_frame(version, &out[2..])
                .map_err(|e| TestCaseError::fail(format!("{e}: {:02x?}", &out[..])))?;
            prop_assert_eq!(&out[2 + used..], &[0xD0, 0]);
            prop_assert_eq!(frame.first >> 4, packet_type(&case.packet));
            prop_assert_eq!(frame.codes, codes);
            prop_assert_eq!(frame.properties.as_ref().map(Vec::len), properties);
            if let Packet::Publish(p, _) = &case.packet {
                let publish = OutgoingPublish::of(p);
                prop_assert_eq!(frame.first, publish.first_byte());
                prop_assert_eq!(frame.pkid, (publish.qos > 0).then_some(publish.pkid));
                prop_assert_eq!(&frame.topic[..], &p.topic[..]);
                prop_assert_eq!(&frame.payload[..], &p.payload[..]);
            }

            let bytes = &out[2..2 + used];
            // A real client reads it. (rumqttc's MQTT 5
            // decoder refuses a DISCONNECT with no reason code, which the
            // spec allows.)
            let mut copy = BytesMut::from(bytes);
            let read = match version {
                Version::V5 if bytes == [0xE0, 0] => Ok(()),
                Version::V5 => rumqttc::v5::mqttbytes::v5::Packet::read(&mut copy, None)
                    .map(drop)
                    .map_err(|e| format!("{e:?}")),
                Version::V311 => rumqttc::mqttbytes::v4::Packet::read(&mut copy, 1 << 20)
                    .map(drop)
                    .map_err(|e| format!("{e:?}")),
            };
            prop_assert!(read.is_ok(), "rumqttc: {read:?} for {bytes:02x?}");

            if let Some(want) = read_back(version, &case.packet) {
                let mut copy = BytesMut::from(bytes);
                let got = match version {
                    Version::V5 => V5.read_mut(&mut copy, 1 << 20),
                    Version::V311 => V4.read_mut(&mut copy, 1 << 20),
                };
                prop_assert_eq!(got.ok(), Some(want));
                prop_assert!(copy.is_empty());
            }
        }
    }
}
