//! Fuzzing the decoder with property tests: random bytes, random bodies
//! behind well-formed fixed headers, and valid packets of every type in
//! both versions (what a client sends, and what only a server sends)
//! mutated byte by byte. Whatever arrives, `Codec::decode` and
//! `connect_version` return a value and never panic; a whole packet is
//! taken off the buffer, a partial one leaves it untouched; the outcome
//! does not depend on how the bytes were split into reads; every valid
//! packet decodes as the packet it is, and every strict prefix of one
//! waits for more.
//!
//! The packet generators are shared with the session-layer fuzzing in
//! `connection::fuzz_tests`.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use rumqttd::protocol::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, Filter, LastWill, LastWillProperties, Login, Packet, PingReq, PingResp,
    PubAck, PubAckProperties, PubAckReason, PubComp, PubCompProperties, PubCompReason, PubRec,
    PubRecProperties, PubRecReason, PubRel, PubRelProperties, PubRelReason, PublishProperties, QoS,
    RetainForwardRule, SubAck, Subscribe, SubscribeProperties, SubscribeReasonCode, UnsubAck,
    UnsubAckReason, Unsubscribe, UnsubscribeProperties,
};

use super::{Codec, FrameError, OutgoingPublish, PublishHeader, Version, connect_version};

/// The largest packet the codecs under test take.
const MAX_PACKET: usize = 1 << 16;

// ---------------------------------------------------------------------------
// Generators: valid packets a client sends, and byte-level mutations.
// ---------------------------------------------------------------------------

pub(crate) fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V311), Just(Version::V5)]
}

/// Short strings, with the characters topics and filters care about.
fn text() -> impl Strategy<Value = String> {
    "[a-z0-9/+#$é ]{0,12}"
}

fn users() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

fn small_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

/// Topic names: mostly ones a permissive ACL allows, some it refuses,
/// some invalid (wildcards, empty, `$`-prefixed).
pub(crate) fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(fuzz|a|deny)(/[a-z0-9]{1,4}){0,3}",
        1 => text(),
        1 => Just(String::new()),
        1 => Just("$SYS/broker".to_owned()),
    ]
}

/// Topic filters, valid and not, shared ones included.
fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(fuzz|a|deny|\\+)(/([a-z0-9]{1,4}|\\+)){0,2}(/#)?",
        1 => Just("#".to_owned()),
        1 => "\\$share/[a-z]{0,3}/(fuzz|a)/#",
        1 => text(),
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn connect_properties() -> BoxedStrategy<ConnectProperties> {
    (
        option::of(prop_oneof![0u32..5, Just(u32::MAX)]),
        option::of(0u16..12),
        option::of(prop_oneof![0u32..64, Just(u32::MAX)]),
        option::of(any::<u16>()),
        option::of(0u8..=2),
        option::of(0u8..=2),
        users(),
        // An authentication method is refused (no enhanced auth).
        prop_oneof![9 => Just(None), 1 => option::of(text())],
    )
        .prop_map(
            |(expiry, receive, max_packet, alias_max, response, problem, user, method)| {
                ConnectProperties {
                    session_expiry_interval: expiry,
                    receive_maximum: receive,
                    max_packet_size: max_packet,
                    topic_alias_max: alias_max,
                    request_response_info: response,
                    request_problem_info: problem,
                    user_properties: user,
                    authentication_method: method,
                    authentication_data: None,
                }
            },
        )
        .boxed()
}

fn last_will() -> BoxedStrategy<LastWill> {
    (topic(), small_bytes(), qos(), any::<bool>())
        .prop_map(|(topic, message, qos, retain)| LastWill {
            topic: Bytes::from(topic),
            message,
            qos,
            retain,
        })
        .boxed()
}

fn last_will_properties() -> BoxedStrategy<LastWillProperties> {
    (
        option::of(0u32..2),
        option::of(0u8..=2),
        option::of(0u32..100),
        option::of(text()),
        option::of(topic()),
        option::of(small_bytes()),
        users(),
    )
        .prop_map(
            |(delay, format, expiry, content_type, response_topic, correlation, user)| {
                LastWillProperties {
                    delay_interval: delay,
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    content_type,
                    response_topic,
                    correlation_data: correlation,
                    user_properties: user,
                }
            },
        )
        .boxed()
}

/// A CONNECT with any mix of will, login and (for MQTT 5) properties.
/// Client ids come from a small set, so sessions are taken over and
/// resumed.
pub(crate) fn connect(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    (
        any::<u16>(),
        prop_oneof![4 => "fuzz-[a-c]", 1 => Just(String::new()), 1 => "[a-z0-9]{0,30}"],
        any::<bool>(),
        option::of(connect_properties()),
        option::of(last_will()),
        option::of(last_will_properties()),
        prop_oneof![4 => Just(None), 1 => option::of((text(), text()))],
    )
        .prop_map(
            move |(keep_alive, client_id, clean_session, props, will, will_props, login)| {
                let will_props = will_props.filter(|_| v5 && will.is_some());
                Packet::Connect(
                    Connect {
                        keep_alive,
                        client_id,
                        clean_session,
                    },
                    props.filter(|_| v5),
                    will,
                    will_props,
                    login.map(|(username, password)| Login { username, password }),
                )
            },
        )
        .boxed()
}

fn publish_properties() -> BoxedStrategy<PublishProperties> {
    (
        option::of(0u8..=2),
        option::of(0u32..100),
        // 0 and anything over the Topic Alias Maximum (64) are invalid.
        option::of(prop_oneof![0u16..5, Just(64), Just(65), Just(u16::MAX)]),
        option::of(topic()),
        option::of(small_bytes()),
        users(),
        // A client may not send a subscription identifier.
        prop_oneof![4 => Just(Vec::new()), 1 => vec(1usize..300, 1..3)],
        option::of(text()),
    )
        .prop_map(
            |(format, expiry, alias, response_topic, correlation, user, ids, content_type)| {
                PublishProperties {
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    topic_alias: alias,
                    response_topic,
                    correlation_data: correlation,
                    user_properties: user,
                    subscription_identifiers: ids,
                    content_type,
                }
            },
        )
        .boxed()
}

fn publish(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    (
        topic(),
        vec(any::<u8>(), 0..64),
        0u8..=2,
        1u16..=u16::MAX,
        any::<bool>(),
        any::<bool>(),
        option::of(publish_properties()),
    )
        .prop_map(move |(topic, payload, qos, pkid, dup, retain, props)| {
            let publish = OutgoingPublish {
                topic: topic.as_bytes(),
                payload: &payload,
                qos,
                pkid: if qos == 0 { 0 } else { pkid },
                dup,
                retain,
            }
            .packet();
            Packet::Publish(publish, props.filter(|_| v5))
        })
        .boxed()
}

/// Packet ids, 0 (invalid) included.
fn pkid() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), 1u16..8, any::<u16>()]
}

/// A Reason String and User Properties: what acks carry.
type ReasonProperties = Option<(Option<String>, Vec<(String, String)>)>;

fn reason_properties() -> impl Strategy<Value = ReasonProperties> {
    option::of((option::of(text()), users()))
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
fn ack(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    let puback = (
        pkid(),
        prop_oneof![
            Just(PubAckReason::Success),
            Just(PubAckReason::NoMatchingSubscribers),
            Just(PubAckReason::UnspecifiedError),
            Just(PubAckReason::QuotaExceeded),
        ],
        reason_properties(),
    )
        .prop_map(move |(pkid, reason, props)| {
            let props = props
                .filter(|_| v5)
                .map(|(reason_string, user_properties)| PubAckProperties {
                    reason_string,
                    user_properties,
                });
            // 3.1.1's acks carry no reason code.
            let reason = if v5 { reason } else { PubAckReason::Success };
            Packet::PubAck(PubAck { pkid, reason }, props)
        });
    let pubrec = (
        pkid(),
        prop_oneof![
            Just(PubRecReason::Success),
            Just(PubRecReason::UnspecifiedError),
            Just(PubRecReason::PacketIdentifierInUse),
        ],
        reason_properties(),
    )
        .prop_map(move |(pkid, reason, props)| {
            let props = props
                .filter(|_| v5)
                .map(|(reason_string, user_properties)| PubRecProperties {
                    reason_string,
                    user_properties,
                });
            // 3.1.1's acks carry no reason code.
            let reason = if v5 { reason } else { PubRecReason::Success };
            Packet::PubRec(PubRec { pkid, reason }, props)
        });
    let pubrel = (
        pkid(),
        prop_oneof![
            Just(PubRelReason::Success),
            Just(PubRelReason::PacketIdentifierNotFound)
        ],
        reason_properties(),
    )
        .prop_map(move |(pkid, reason, props)| {
            let props = props
                .filter(|_| v5)
                .map(|(reason_string, user_properties)| PubRelProperties {
                    reason_string,
                    user_properties,
                });
            // 3.1.1's acks carry no reason code.
            let reason = if v5 { reason } else { PubRelReason::Success };
            Packet::PubRel(PubRel { pkid, reason }, props)
        });
    let pubcomp = (
        pkid(),
        prop_oneof![
            Just(PubCompReason::Success),
            Just(PubCompReason::PacketIdentifierNotFound)
        ],
        reason_properties(),
    )
        .prop_map(move |(pkid, reason, props)| {
            let props = props
                .filter(|_| v5)
                .map(|(reason_string, user_properties)| PubCompProperties {
                    reason_string,
                    user_properties,
                });
            // 3.1.1's acks carry no reason code.
            let reason = if v5 { reason } else { PubCompReason::Success };
            Packet::PubComp(PubComp { pkid, reason }, props)
        });
    prop_oneof![puback, pubrec, pubrel, pubcomp].boxed()
}

fn subscribe(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    let one = (
        filter(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainForwardRule::OnEverySubscribe),
            Just(RetainForwardRule::OnNewSubscribe),
            Just(RetainForwardRule::Never),
        ],
    )
        .prop_map(move |(path, qos, nolocal, preserve_retain, rule)| Filter {
            path,
            qos,
            nolocal: nolocal && v5,
            preserve_retain: preserve_retain && v5,
            retain_forward_rule: if v5 {
                rule
            } else {
                RetainForwardRule::OnEverySubscribe
            },
        });
    (
        pkid(),
        vec(one, 1..4),
        option::of((option::of(0usize..400), users())),
    )
        .prop_map(move |(pkid, filters, props)| {
            let props = props
                .filter(|_| v5)
                .map(|(id, user_properties)| SubscribeProperties {
                    id,
                    user_properties,
                });
            Packet::Subscribe(Subscribe { pkid, filters }, props)
        })
        .boxed()
}

fn unsubscribe(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    (pkid(), vec(filter(), 1..4), option::of(users()))
        .prop_map(move |(pkid, filters, props)| {
            let props = props
                .filter(|_| v5)
                .map(|user_properties| UnsubscribeProperties { user_properties });
            Packet::Unsubscribe(Unsubscribe { pkid, filters }, props)
        })
        .boxed()
}

fn disconnect(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    (
        prop_oneof![
            Just(DisconnectReasonCode::NormalDisconnection),
            Just(DisconnectReasonCode::DisconnectWithWillMessage),
            Just(DisconnectReasonCode::UnspecifiedError),
            Just(DisconnectReasonCode::ProtocolError),
        ],
        option::of((
            option::of(prop_oneof![0u32..5, Just(u32::MAX)]),
            option::of(text()),
            users(),
            // Only a server may send a Server Reference.
            prop_oneof![4 => Just(None), 1 => option::of(text())],
        )),
    )
        .prop_map(move |(reason_code, props)| {
            let props = props.filter(|_| v5).map(
                |(session_expiry_interval, reason_string, user_properties, server_reference)| {
                    DisconnectProperties {
                        session_expiry_interval,
                        reason_string,
                        user_properties,
                        server_reference,
                    }
                },
            );
            // 3.1.1's DISCONNECT has no reason code.
            let reason_code = if v5 {
                reason_code
            } else {
                DisconnectReasonCode::NormalDisconnection
            };
            Packet::Disconnect(Disconnect { reason_code }, props)
        })
        .boxed()
}

/// Any packet a client may send after CONNECT, weighted towards the ones
/// that change state.
pub(crate) fn after_connect(version: Version) -> BoxedStrategy<Packet> {
    prop_oneof![
        4 => publish(version),
        3 => ack(version),
        2 => subscribe(version),
        1 => unsubscribe(version),
        1 => Just(Packet::PingReq(PingReq)),
        1 => disconnect(version),
    ]
    .boxed()
}

/// Any packet a client may send, CONNECT included.
pub(crate) fn client_packet(version: Version) -> BoxedStrategy<Packet> {
    prop_oneof![1 => connect(version), 6 => after_connect(version)].boxed()
}

/// A packet only a server sends.
fn server_packet() -> BoxedStrategy<Packet> {
    prop_oneof![
        (any::<bool>(), any::<bool>()).prop_map(|(session_present, refused)| {
            let code = if refused {
                ConnectReturnCode::NotAuthorized
            } else {
                ConnectReturnCode::Success
            };
            Packet::ConnAck(
                ConnAck {
                    session_present,
                    code,
                },
                None,
            )
        }),
        (pkid(), 1usize..4).prop_map(|(pkid, n)| {
            let return_codes = vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); n];
            Packet::SubAck(SubAck { pkid, return_codes }, None)
        }),
        (pkid(), 1usize..4).prop_map(|(pkid, n)| {
            let reasons = vec![UnsubAckReason::Success; n];
            Packet::UnsubAck(UnsubAck { pkid, reasons }, None)
        }),
        Just(Packet::PingResp(PingResp)),
    ]
    .boxed()
}

/// `packet` as `version` frames it.
pub(crate) fn encode(version: Version, packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    let what = format!("{packet:?}");
    Codec::new(version, MAX_PACKET)
        .encode(packet, &mut out)
        .unwrap_or_else(|e| panic!("a generated packet encodes ({e}): {what}"));
    out.to_vec()
}

/// One change to a byte string.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// Flips one bit.
    Flip(Index, u8),
    /// Overwrites a byte.
    Set(Index, u8),
    /// Overwrites a byte with a boundary value.
    Boundary(Index, u8),
    /// Inserts bytes.
    Insert(Index, Vec<u8>),
    /// Removes up to `n` bytes.
    Remove(Index, usize),
    /// Repeats up to `n` bytes in place.
    Duplicate(Index, usize),
    /// Cuts everything from here on.
    Truncate(Index),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        2 => (any::<Index>(), prop_oneof![Just(0u8), Just(0x7F), Just(0x80), Just(0xFF)])
            .prop_map(|(at, byte)| Mutation::Boundary(at, byte)),
        2 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => (any::<Index>(), 1usize..8).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Applies `mutations` to `bytes` in order.
pub(crate) fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            if let Mutation::Insert(_, new) = m {
                bytes.extend_from_slice(new);
            }
            continue;
        }
        let len = bytes.len();
        match m {
            Mutation::Flip(at, bit) => bytes[at.index(len)] ^= 1 << bit,
            Mutation::Set(at, byte) | Mutation::Boundary(at, byte) => bytes[at.index(len)] = *byte,
            Mutation::Insert(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove(at, n) => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(at, n) => {
                let at = at.index(len);
                let copy = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, copy);
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(len)),
        }
    }
    bytes
}

// ---------------------------------------------------------------------------
// Decoding a byte stream and checking what the packet loop relies on.
// ---------------------------------------------------------------------------

/// What decoding a stream gave: the packets, in order, and the error that
/// ended it, if any.
#[derive(Debug, Clone, PartialEq)]
struct Decoded {
    packets: Vec<(Packet, Option<PublishHeader>)>,
    error: Option<FrameError>,
}

/// The packet type of a packet a client may send.
fn client_kind(packet: &Packet) -> Option<u8> {
    Some(match packet {
        Packet::Connect(..) => 1,
        Packet::Publish(..) => 3,
        Packet::PubAck(..) => 4,
        Packet::PubRec(..) => 5,
        Packet::PubRel(..) => 6,
        Packet::PubComp(..) => 7,
        Packet::Subscribe(..) => 8,
        Packet::Unsubscribe(..) => 10,
        Packet::PingReq(_) => 12,
        Packet::Disconnect(..) => 14,
        _ => return None,
    })
}

/// Decodes `bytes` as they would arrive in reads ending at `cuts` (any
/// order, any values; the rest comes in one last read), as the packet
/// loop does: every whole packet after each read, until an error.
/// Checks each step: a packet is taken off the buffer and is one a client
/// sends, with a header exactly when it is a PUBLISH; waiting for more
/// leaves the buffer as it was; an error has a text.
fn decode_stream(codec: Codec, bytes: &[u8], cuts: &[usize]) -> Result<Decoded, TestCaseError> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut decoded = Decoded {
        packets: Vec::new(),
        error: None,
    };
    for end in ends {
        buf.extend_from_slice(&bytes[fed..end]);
        fed = end;
        loop {
            let before = buf.clone();
            match codec.decode(&mut buf) {
                Ok(None) => {
                    prop_assert_eq!(&buf, &before, "waiting for more consumed input");
                    break;
                }
                Ok(Some((packet, header))) => {
                    prop_assert!(
                        buf.len() < before.len(),
                        "a packet was decoded from nothing: {:?}",
                        packet
                    );
                    let kind = client_kind(&packet);
                    prop_assert!(kind.is_some(), "not a client's packet: {:?}", packet);
                    prop_assert_eq!(header.is_some(), kind == Some(3), "header of {:?}", packet);
                    decoded.packets.push((packet, header));
                }
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    decoded.error = Some(e);
                    return Ok(decoded);
                }
            }
        }
    }
    Ok(decoded)
}

/// Decodes `bytes` whole and again split at `cuts`: the checks of
/// [`decode_stream`] hold both ways, and so does the outcome.
fn check_stream(version: Version, bytes: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let codec = Codec::new(version, MAX_PACKET);
    let whole = decode_stream(codec, bytes, &[])?;
    let split = decode_stream(codec, bytes, cuts)?;
    prop_assert_eq!(
        whole,
        split,
        "the outcome depends on how reads split the bytes"
    );
    // The handshake's first look (and the busy refusal's) on the same
    // bytes: a version found in the first reads stays found.
    let whole = connect_version(bytes, MAX_PACKET);
    for end in cuts.iter().map(|c| c % (bytes.len() + 1)) {
        if let Ok(Some(v)) = connect_version(&bytes[..end], MAX_PACKET) {
            prop_assert_eq!(
                &whole,
                &Ok(Some(v)),
                "the version changed as more bytes arrived"
            );
        }
    }
    Ok(())
}

/// A body of random bytes behind a well-formed fixed header of a packet
/// type a client sends (reserved flags right), so most cases get past the
/// framing into the packet decoders.
fn framed_random() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(0x10u8),
            0x30u8..0x36,
            0x38u8..0x3E,
            Just(0x40),
            Just(0x50),
            Just(0x62),
            Just(0x70),
            Just(0x82),
            Just(0xA2),
            Just(0xC0),
            Just(0xE0),
        ],
        vec(any::<u8>(), 0..160),
    )
        .prop_map(|(first, body)| {
            let mut bytes = vec![first];
            let mut len = body.len();
            loop {
                let byte = (len % 128) as u8;
                len /= 128;
                if len == 0 {
                    bytes.push(byte);
                    break;
                }
                bytes.push(byte | 0x80);
            }
            bytes.extend(body);
            bytes
        })
}

/// A CONNECT, some packets, and the bytes of them all.
fn valid_stream() -> impl Strategy<Value = (Version, Vec<u8>)> {
    version().prop_flat_map(|version| {
        (connect(version), vec(after_connect(version), 0..6)).prop_map(move |(connect, packets)| {
            let mut bytes = encode(version, connect);
            for p in packets {
                bytes.extend(encode(version, p));
            }
            (version, bytes)
        })
    })
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(any::<usize>(), 0..6)
}

/// `cases` cases, and no regression files written into the source tree.
pub(crate) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_bytes_decode_to_a_value(
        version in version(),
        bytes in vec(any::<u8>(), 0..600),
        cuts in cuts(),
    ) {
        check_stream(version, &bytes, &cuts)?;
    }

    #[test]
    fn random_bodies_behind_valid_headers_decode_to_a_value(
        version in version(),
        frames in vec(framed_random(), 1..4),
        cuts in cuts(),
    ) {
        check_stream(version, &frames.concat(), &cuts)?;
    }

    #[test]
    fn mutated_packet_streams_decode_to_a_value(
        (version, bytes) in valid_stream(),
        mutations in vec(mutation(), 1..5),
        cuts in cuts(),
    ) {
        check_stream(version, &mutate(bytes, &mutations), &cuts)?;
    }

    #[test]
    fn valid_packets_decode_as_themselves_and_their_prefixes_wait(
        (version, packet) in version().prop_flat_map(|v| (Just(v), client_packet(v))),
    ) {
        let bytes = encode(version, packet.clone());
        let codec = Codec::new(version, MAX_PACKET);
        for cut in 0..bytes.len() {
            let mut part = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(codec.decode(&mut part), Ok(None), "cut at {} of {:02x?}", cut, bytes);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = codec.decode(&mut buf);
        let Ok(Some((got, _))) = decoded else {
            return Err(TestCaseError::fail(format!("{bytes:02x?} decoded as {decoded:?}")));
        };
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        // Compared as bytes: decoding may give `None` for properties
        // sent empty, which frame the same.
        prop_assert_eq!(
            encode(version, got.clone()),
            bytes,
            "{:?} decoded as {:?}",
            packet,
            got
        );
    }

    #[test]
    fn server_packets_from_a_client_are_refused_by_type(
        version in version(),
        packet in server_packet(),
        tail in vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = encode(version, packet);
        let kind = bytes[0] >> 4;
        bytes.extend(tail);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(
            Codec::new(version, MAX_PACKET).decode(&mut buf),
            Err(FrameError::UnexpectedType(kind))
        );
    }
}
