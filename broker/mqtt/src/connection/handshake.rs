//! The CONNECT handshake and the will: reading CONNECT within the
//! connect timeout, authenticating, choosing the client id and session
//! lifetime, attaching the session, answering with a CONNACK (or a
//! refusal with its code), and, when the connection ends, publishing the
//! will now, after its delay, or not at all.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode, LastWill,
    LastWillProperties, Login, Packet,
};
use tidewire_core::topic;
use tidewire_core::{Message, Properties, Source};
use tokio::io::AsyncReadExt;

use super::context::{ConnectionSlot, Context, busy};
use super::{Exit, IDLE_READ_BUFFER, TOPIC_ALIAS_MAXIMUM, Transport, write_out};
use crate::codec::{self, Codec, FrameError, Version};
use crate::metrics::MqttMetrics;
use crate::session::{DelayedWill, NEVER_EXPIRES, Session};
use crate::sessions::{Attached, Detached};
use tidewire_auth::{AuthError, Door, LiveAcl};

/// Reads CONNECT and answers it; returns the accepted connection's
/// stream, what the client sent after CONNECT, and what was accepted.
pub(super) async fn handshake<S: Transport>(
    mut io: S,
    slot: ConnectionSlot,
) -> std::io::Result<Option<(S, BytesMut, Accepted)>> {
    let ctx = &slot.ctx;
    let mut read_buf = BytesMut::with_capacity(IDLE_READ_BUFFER);
    let max_packet = ctx.settings.max_packet_bytes;
    let handshake = tokio::time::timeout(ctx.settings.connect_timeout, async {
        loop {
            match codec::connect_version(&read_buf, max_packet) {
                Ok(Some(version)) => return Ok(Some(version)),
                Ok(None) => {}
                Err(FrameError::UnsupportedLevel(level)) => return Err(level),
                Err(_) => return Ok(None),
            }
            if io.read_buf(&mut read_buf).await.unwrap_or(0) == 0 {
                return Ok(None);
            }
        }
    })
    .await;
    let version = match handshake {
        Ok(Ok(Some(version))) => version,
        Ok(Err(level)) => {
            tracing::debug!(level, "refusing unsupported MQTT protocol level");
            MqttMetrics::count(&ctx.metrics.refused, "protocol_version");
            let mut out = BytesMut::new();
            let refusal = Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::RefusedProtocolVersion,
                },
                None,
            );
            if Codec::new(Version::V311, max_packet)
                .encode(refusal, &mut out)
                .is_ok()
            {
                write_out(&mut io, &out).await?;
            }
            return Ok(None);
        }
        _ => {
            MqttMetrics::count(&ctx.metrics.protocol_errors, "no_connect");
            return Ok(None);
        }
    };
    let codec = Codec::new(version, max_packet);
    let packet = match codec.decode(&mut read_buf) {
        Ok(Some((packet, _))) => packet,
        _ => {
            MqttMetrics::count(&ctx.metrics.protocol_errors, "malformed_connect");
            return Ok(None);
        }
    };
    let Packet::Connect(connect, props, will, will_props, login) = packet else {
        return Ok(None);
    };
    let mut out = BytesMut::new();
    // A refused connection keeps its slot until the refusal is out.
    let mut slot = Some(slot);
    let accepted = accept(
        &mut slot, &codec, connect, props, will, will_props, login, &mut out,
    )
    .await;
    // Gone before its CONNACK: dropping `accepted` lets the session go as
    // for any connection that closed.
    write_out(&mut io, &out).await?;
    Ok(accepted.map(|state| (io, read_buf, state)))
}

/// What an accepted CONNECT established, and the connection's state that
/// outlives its socket while it is parked.
pub(super) struct Accepted {
    pub(super) codec: Codec,
    slot: ConnectionSlot,
    pub(super) session: Arc<Session>,
    /// This connection's id in the session table.
    pub(super) connection: u64,
    /// What the client may publish and subscribe to, following reloads.
    pub(super) acl: LiveAcl,
    /// How long the client may stay silent (1.5 × its keep alive), in ms;
    /// 0 for no limit.
    pub(super) keepalive_ms: u32,
    pub(super) client_receive_max: u16,
    pub(super) client_alias_max: u16,
    /// The largest packet the client takes, in bytes.
    pub(super) client_max_packet: u32,
    /// QoS 2 messages from the client, received on this connection and
    /// PUBREC'd, that await PUBREL: they count against our Receive Maximum
    /// until PUBCOMP.
    pub(super) unreleased: u16,
    will: Option<Box<Will>>,
    /// [`Accepted::release`] has run.
    released: bool,
}

impl Drop for Accepted {
    fn drop(&mut self) {
        // A connection that ends without saying so (a panic, a runtime
        // dropping its task) still lets its session go.
        self.release(Exit::Closed);
    }
}

/// A client's last will.
#[derive(Debug, Clone)]
struct Will {
    message: Message,
    delay_secs: u32,
}

/// Why a CONNECT is refused: the CONNACK code, and the label the refusal
/// is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    code: ConnectReturnCode,
    reason: &'static str,
}

impl Refusal {
    fn new(code: ConnectReturnCode, reason: &'static str) -> Refusal {
        Refusal { code, reason }
    }
}

/// Answers a CONNECT into `out`. An accepted connection takes its `slot`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn accept(
    slot: &mut Option<ConnectionSlot>,
    codec: &Codec,
    connect: Connect,
    props: Option<ConnectProperties>,
    will: Option<LastWill>,
    will_props: Option<LastWillProperties>,
    login: Option<Login>,
    out: &mut BytesMut,
) -> Option<Accepted> {
    let ctx = &Arc::clone(&slot.as_ref()?.ctx);
    let v5 = codec.version() == Version::V5;
    let refuse = |refusal: Refusal, out: &mut BytesMut| {
        MqttMetrics::count(&ctx.metrics.refused, refusal.reason);
        let _ = codec.encode(
            Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code: refusal.code,
                },
                None,
            ),
            out,
        );
        None
    };
    let props = props.unwrap_or_else(no_connect_properties);
    if props.authentication_method.is_some() {
        let refusal = Refusal::new(ConnectReturnCode::BadAuthenticationMethod, "auth_method");
        return refuse(refusal, out);
    }

    // Credentials. Checking a password (argon2) takes milliseconds of CPU
    // and ~19 MiB of memory, so the auth model runs it off the async
    // workers, a few at a time; a client without a username needs none.
    let auth = &ctx.settings.auth;
    let peer = slot.as_ref()?.peer;
    // A transport that does not say is treated as reachable from anywhere.
    let on_loopback = peer.is_some_and(|p| p.listener_on_loopback);
    let try_later = busy(codec.version());
    let certificate_user = slot.as_ref()?.certificate_user.clone();
    let verdict = match login {
        // A certificate that names a user wins over CONNECT's credentials.
        _ if certificate_user.is_some() => {
            auth.certificate_user(certificate_user.as_deref().unwrap_or_default(), Door::Mqtt)
        }
        Some(l) if !l.username.is_empty() => {
            // A client waits for a check at most as long as for its CONNECT.
            let check = auth.login(
                &l.username,
                l.password.as_bytes(),
                peer.map(|p| p.address),
                Door::Mqtt,
            );
            match tokio::time::timeout(ctx.settings.connect_timeout, check).await {
                Ok(verdict) => verdict,
                Err(_) => return refuse(Refusal::new(try_later, "password_checks_busy"), out),
            }
        }
        _ => auth.anonymous(on_loopback, Door::Mqtt),
    };
    let principal = match verdict {
        Ok(principal) => principal,
        Err(e) => return refuse(auth_refusal(e), out),
    };

    // Client id and session lifetime.
    let (clean_start, expiry_secs) =
        session_lifetime(v5, connect.clean_session, props.session_expiry_interval);
    let mut assigned = None;
    let client_id = match requested_client_id(connect.client_id, v5, connect.clean_session) {
        Ok(Some(id)) => id,
        Ok(None) => {
            let id = ctx.assign_client_id();
            assigned = Some(id.clone());
            id
        }
        Err(refusal) => return refuse(refusal, out),
    };

    let acl = LiveAcl::new(auth.clone(), principal, &client_id);

    // The will.
    let max_topic_bytes = ctx.broker.limits().max_topic_bytes;
    let will = match will.map(|w| will_of(w, will_props, &client_id, max_topic_bytes, v5)) {
        None => None,
        Some(Ok(will)) => Some(Box::new(will)),
        Some(Err(refusal)) => return refuse(refusal, out),
    };

    let (keepalive, server_keep_alive) =
        keep_alive(connect.keep_alive, ctx.settings.max_keepalive, v5);

    if ctx.is_closing() {
        return refuse(Refusal::new(try_later, "shutting_down"), out);
    }
    // Nothing refuses the connection from here on: the slot goes with the
    // session it attaches to.
    let slot = slot.take()?;
    let Attached {
        session,
        present,
        connection,
    } = ctx
        .sessions
        .attach(&client_id, clean_start, expiry_secs)
        .await;
    let connack_props = v5.then(|| ConnAckProperties {
        receive_max: Some(ctx.settings.receive_maximum),
        max_packet_size: u32::try_from(ctx.settings.max_packet_bytes).ok(),
        assigned_client_identifier: assigned,
        topic_alias_max: Some(TOPIC_ALIAS_MAXIMUM),
        retain_available: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(1),
        shared_subscription_available: Some(1),
        server_keep_alive,
        ..ConnAckProperties::default()
    });
    let _ = codec.encode(
        Packet::ConnAck(
            ConnAck {
                session_present: present,
                code: ConnectReturnCode::Success,
            },
            connack_props,
        ),
        out,
    );
    tracing::debug!(client_id = %session.client_id, present, "client connected");
    Some(Accepted {
        codec: *codec,
        slot,
        session,
        connection,
        acl,
        keepalive_ms: silence_allowed_ms(keepalive),
        client_receive_max: props.receive_maximum.unwrap_or(u16::MAX).max(1),
        client_max_packet: props.max_packet_size.unwrap_or(u32::MAX),
        unreleased: 0,
        released: false,
        client_alias_max: props.topic_alias_max.unwrap_or(0),
        will,
    })
}

/// The properties of a CONNECT that has none (as every 3.1.1 one).
pub(super) fn no_connect_properties() -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: None,
        receive_maximum: None,
        max_packet_size: None,
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: None,
        user_properties: Vec::new(),
        authentication_method: None,
        authentication_data: None,
    }
}

/// The refusal for a CONNECT whose credentials were turned down.
fn auth_refusal(error: AuthError) -> Refusal {
    match error {
        AuthError::BadCredentials => {
            Refusal::new(ConnectReturnCode::BadUserNamePassword, "bad_credentials")
        }
        AuthError::AnonymousNotAllowed => {
            Refusal::new(ConnectReturnCode::NotAuthorized, "anonymous")
        }
    }
}

/// Whether the session starts clean, and how long it outlives the
/// connection in seconds. MQTT 5 says both in CONNECT (no Session Expiry
/// Interval: the session ends with the connection); in 3.1.1 a clean
/// session ends with the connection and any other never expires.
fn session_lifetime(v5: bool, clean_session: bool, expiry_secs: Option<u32>) -> (bool, u32) {
    if v5 {
        (clean_session, expiry_secs.unwrap_or(0))
    } else if clean_session {
        (true, 0)
    } else {
        (false, NEVER_EXPIRES)
    }
}

/// The client id a CONNECT asks for: `Some` its own, `None` when it sent
/// none and the server is to assign one. Refused: an empty id for a 3.1.1
/// session that is not clean (it could never be resumed), and an id
/// starting with `$`, which tidewire keeps for its own sources (such as
/// `$nats:<bridge>`).
fn requested_client_id(
    client_id: String,
    v5: bool,
    clean_session: bool,
) -> Result<Option<String>, Refusal> {
    let invalid = Refusal::new(ConnectReturnCode::ClientIdentifierNotValid, "client_id");
    if client_id.is_empty() {
        if !v5 && !clean_session {
            return Err(invalid);
        }
        Ok(None)
    } else if client_id.starts_with('$') {
        Err(invalid)
    } else {
        Ok(Some(client_id))
    }
}

/// The will a CONNECT carries, published as `client_id`; refused when its
/// topic is not a valid topic name (3.1.1 has no code for that and says
/// "server unavailable").
fn will_of(
    will: LastWill,
    props: Option<LastWillProperties>,
    client_id: &str,
    max_topic_bytes: usize,
    v5: bool,
) -> Result<Will, Refusal> {
    let topic = String::from_utf8(will.topic.to_vec()).unwrap_or_default();
    if topic::validate_name(&topic, max_topic_bytes).is_err() {
        let code = if v5 {
            ConnectReturnCode::TopicNameInvalid
        } else {
            ConnectReturnCode::ServiceUnavailable
        };
        return Err(Refusal::new(code, "will_topic"));
    }
    Ok(Will {
        delay_secs: props.as_ref().and_then(|p| p.delay_interval).unwrap_or(0),
        message: Message {
            topic,
            client_id: client_id.to_owned(),
            qos: will.qos as u8,
            retain: will.retain,
            payload: will.message,
            properties: props.map_or_else(Properties::default, |p| Properties {
                user: p.user_properties,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                message_expiry_secs: p.message_expiry_interval,
                payload_format_utf8: p.payload_format_indicator == Some(1),
            }),
        },
    })
}

/// The keep alive (seconds) a connection runs with, and the Server Keep
/// Alive to tell an MQTT 5 client whose request the server's maximum
/// overrides (no keep alive, or a longer one). A 3.1.1 client cannot be
/// told, so its keep alive stands.
fn keep_alive(requested: u16, max: Option<u16>, v5: bool) -> (u16, Option<u16>) {
    match max {
        Some(max) if v5 && (requested == 0 || requested > max) => (max, Some(max)),
        _ => (requested, None),
    }
}

/// How long a client may stay silent, in milliseconds: one and a half
/// times its keep alive (MQTT 3.1.2.10); 0, no keep alive, for no limit.
fn silence_allowed_ms(keep_alive_secs: u16) -> u32 {
    u32::from(keep_alive_secs) * 1500
}

impl Accepted {
    pub(super) fn ctx(&self) -> &Arc<Context> {
        &self.slot.ctx
    }

    /// Why the connection must end now, if it must: shutdown, or another
    /// connection took the client id over.
    pub(super) fn told_to_go(&self) -> Option<Exit> {
        if self.ctx().is_closing() {
            Some(Exit::Shutdown)
        } else if !self.session.link.owned_by(self.connection) {
            Some(Exit::TakenOver)
        } else {
            None
        }
    }

    /// Lets the session go after the connection ended: publishes the will
    /// when due and detaches from the session. Runs once, on drop at the
    /// latest.
    pub(super) fn release(&mut self, exit: Exit) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let will = self.will.take().filter(|_| exit.publishes_will());
        let ctx = Arc::clone(self.ctx());
        let client_id = &self.session.client_id;
        let detached = ctx.sessions.detach(&self.session, self.connection);
        if let Some(will) = will {
            if self.acl.acl().may_publish(&will.message.topic) {
                self.schedule_will(*will, detached);
            } else {
                MqttMetrics::count(&ctx.metrics.denied, "will_acl");
            }
        }
        tracing::debug!(client_id, ?exit, "client disconnected");
        ctx.sessions.finish(&self.session, self.connection);
    }

    /// Publishes the will now, or after its delay unless the client comes
    /// back first (or its session ends first). A connection taking the
    /// session over within the delay means no will.
    fn schedule_will(&self, will: Will, detached: Detached) {
        let (pending, decided) = DelayedWill::new();
        // Only a session left offline has a say (its expiry), and only it
        // keeps a will that waits.
        let mut offline = (detached == Detached::Offline).then(|| self.session.lock());
        let expiry_secs = offline
            .as_ref()
            .map_or(NEVER_EXPIRES, |state| state.expiry_secs);
        let Some(delay) = will_delay(detached, will.delay_secs, expiry_secs) else {
            return;
        };
        if delay > 0
            && let Some(state) = offline.as_mut()
        {
            if self.session.link.online() {
                // A connection that stopped waiting for this one has
                // resumed the session meanwhile.
                return;
            }
            if let Some(earlier) = state.pending_will.replace(pending) {
                // Left by a connection that lost a takeover race.
                earlier.cancel();
            }
        }
        drop(offline);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime to publish a will message; the server is stopping");
            return;
        };
        let broker = self.ctx().broker.clone();
        runtime.spawn(async move {
            if delay > 0 {
                let due = tokio::select! {
                    decided = decided => matches!(decided, Ok(true)),
                    () = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => true,
                };
                if !due {
                    return;
                }
            }
            if let Err(e) = broker.publish(Source::Mqtt, will.message).await {
                tracing::warn!(error = %e, "could not publish a will message");
            }
        });
    }
}

/// How long after its connection let go of the session a will is
/// published: `Some(0)` at once, `None` never. A session left offline
/// waits out the will delay, or its own expiry if that comes first (the
/// client may come back meanwhile); one a new connection has resumed takes
/// the will only if it has no delay; one that ended takes it at once.
fn will_delay(detached: Detached, will_delay_secs: u32, session_expiry_secs: u32) -> Option<u32> {
    match detached {
        Detached::Ended => Some(0),
        Detached::Resumed if will_delay_secs > 0 => None,
        Detached::Resumed => Some(0),
        Detached::Offline => Some(will_delay_secs.min(session_expiry_secs)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttd::protocol::QoS;

    use super::super::test_support::{TestContext, connack, connect, count};
    use super::*;

    #[test]
    fn turned_down_credentials_say_which_check_failed() {
        assert_eq!(
            auth_refusal(AuthError::BadCredentials),
            Refusal::new(ConnectReturnCode::BadUserNamePassword, "bad_credentials")
        );
        assert_eq!(
            auth_refusal(AuthError::AnonymousNotAllowed),
            Refusal::new(ConnectReturnCode::NotAuthorized, "anonymous")
        );
    }

    #[test]
    fn session_lifetime_follows_the_version_rules() {
        // (v5, clean, Session Expiry Interval) -> (clean start, expiry)
        let cases = [
            (true, true, None, (true, 0)),
            (true, false, None, (false, 0)),
            (true, false, Some(300), (false, 300)),
            (true, true, Some(300), (true, 300)),
            (false, true, Some(300), (true, 0)),
            (false, false, None, (false, NEVER_EXPIRES)),
        ];
        for (v5, clean, expiry, expected) in cases {
            assert_eq!(
                session_lifetime(v5, clean, expiry),
                expected,
                "v5 {v5}, clean {clean}, expiry {expiry:?}"
            );
        }
    }

    #[test]
    fn client_ids_empty_or_reserved_are_assigned_or_refused() {
        let invalid = Err(Refusal::new(
            ConnectReturnCode::ClientIdentifierNotValid,
            "client_id",
        ));
        assert_eq!(
            requested_client_id("sensor-1".into(), false, false),
            Ok(Some("sensor-1".to_owned()))
        );
        assert_eq!(requested_client_id(String::new(), true, false), Ok(None));
        assert_eq!(requested_client_id(String::new(), false, true), Ok(None));
        assert_eq!(
            requested_client_id(String::new(), false, false),
            invalid,
            "3.1.1 cannot resume a session without an id"
        );
        assert_eq!(requested_client_id("$nats:a".into(), true, true), invalid);
        assert_eq!(requested_client_id("$sys".into(), false, true), invalid);
    }

    fn last_will(topic: &'static str) -> LastWill {
        LastWill {
            topic: Bytes::from_static(topic.as_bytes()),
            message: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }

    #[test]
    fn a_will_with_an_invalid_topic_is_refused_in_each_version_s_terms() {
        for topic in ["", "status/+", "status/#", "status\0"] {
            let v5 = will_of(last_will(topic), None, "c", 256, true).map(|_| ());
            assert_eq!(
                v5,
                Err(Refusal::new(
                    ConnectReturnCode::TopicNameInvalid,
                    "will_topic"
                )),
                "{topic:?}"
            );
            let v311 = will_of(last_will(topic), None, "c", 256, false).map(|_| ());
            assert_eq!(
                v311,
                Err(Refusal::new(
                    ConnectReturnCode::ServiceUnavailable,
                    "will_topic"
                )),
                "{topic:?}"
            );
        }
        let too_long = will_of(last_will("status/abcdef"), None, "c", 8, true).map(|_| ());
        assert!(too_long.is_err(), "over the topic length limit");
    }

    #[test]
    fn a_will_carries_the_client_its_delay_and_its_properties() {
        let props = LastWillProperties {
            delay_interval: Some(30),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(600),
            content_type: Some("text/plain".into()),
            response_topic: Some("replies".into()),
            correlation_data: Some(Bytes::from_static(b"42")),
            user_properties: vec![("k".into(), "v".into())],
        };
        let will = will_of(last_will("status/c"), Some(props), "c", 256, true).expect("valid will");
        assert_eq!(will.delay_secs, 30);
        let m = &will.message;
        assert_eq!(
            (m.topic.as_str(), m.client_id.as_str(), m.qos, m.retain),
            ("status/c", "c", 1, true)
        );
        assert_eq!(&m.payload[..], b"gone");
        assert!(m.properties.payload_format_utf8);
        assert_eq!(m.properties.message_expiry_secs, Some(600));
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.properties.response_topic.as_deref(), Some("replies"));
        assert_eq!(m.properties.user, vec![("k".to_owned(), "v".to_owned())]);

        let plain = will_of(last_will("status/c"), None, "c", 256, false).expect("valid will");
        assert_eq!(plain.delay_secs, 0);
        assert_eq!(plain.message.properties, Properties::default());
    }

    #[test]
    fn the_server_caps_keep_alive_only_where_it_can_say_so() {
        // (requested, server maximum, v5) -> (keep alive, Server Keep Alive)
        let cases = [
            (30, Some(60), true, (30, None)),
            (60, Some(60), true, (60, None)),
            (120, Some(60), true, (60, Some(60))),
            (0, Some(60), true, (60, Some(60))),
            (120, Some(60), false, (120, None)),
            (0, Some(60), false, (0, None)),
            (0, None, true, (0, None)),
            (120, None, true, (120, None)),
        ];
        for (requested, max, v5, expected) in cases {
            assert_eq!(
                keep_alive(requested, max, v5),
                expected,
                "requested {requested}, max {max:?}, v5 {v5}"
            );
        }
    }

    #[test]
    fn a_client_may_stay_silent_for_one_and_a_half_keep_alives() {
        assert_eq!(silence_allowed_ms(0), 0, "no limit");
        assert_eq!(silence_allowed_ms(1), 1_500);
        assert_eq!(silence_allowed_ms(60), 90_000);
        assert_eq!(silence_allowed_ms(u16::MAX), 98_302_500);
    }

    #[test]
    fn a_will_waits_only_while_the_session_is_offline() {
        // (what became of the session, will delay, session expiry) -> delay
        let cases = [
            (Detached::Ended, 0, 0, Some(0)),
            (Detached::Ended, 30, 300, Some(0)),
            (Detached::Resumed, 0, 300, Some(0)),
            (Detached::Resumed, 30, 300, None),
            (Detached::Offline, 0, 300, Some(0)),
            (Detached::Offline, 30, 300, Some(30)),
            (Detached::Offline, 300, 30, Some(30)),
            (Detached::Offline, 30, 0, Some(0)),
        ];
        for (detached, will, expiry, expected) in cases {
            assert_eq!(
                will_delay(detached, will, expiry),
                expected,
                "{detached:?}, will delay {will}, expiry {expiry}"
            );
        }
    }

    fn v5_props() -> ConnectProperties {
        ConnectProperties {
            session_expiry_interval: Some(300),
            receive_maximum: Some(0),
            max_packet_size: Some(4096),
            topic_alias_max: Some(5),
            ..no_connect_properties()
        }
    }

    #[tokio::test]
    async fn an_accepted_connect_takes_the_slot_and_records_the_client_s_limits() {
        let test = TestContext::new("max_keepalive = 60");
        let (accepted, slot, out) = test
            .accept(Version::V5, connect("", false), Some(v5_props()))
            .await;
        assert!(slot.is_none(), "the slot went with the session");
        assert_eq!(connack(&out), (false, 0x00));
        let accepted = accepted.expect("accepted");
        assert!(
            accepted.session.client_id.starts_with("tw-"),
            "assigned: {}",
            accepted.session.client_id
        );
        assert_eq!(accepted.keepalive_ms, 90_000, "capped to 60 s");
        assert_eq!(accepted.client_receive_max, 1, "0 is read as 1");
        assert_eq!(accepted.client_max_packet, 4096);
        assert_eq!(accepted.client_alias_max, 5);
        assert_eq!(accepted.session.inspect(|s| s.expiry_secs), 300);
        assert_eq!(accepted.told_to_go(), None);
        assert_eq!(test.ctx.metrics.connections.get(), 1);
        drop(accepted);
        assert_eq!(test.ctx.metrics.connections.get(), 0, "slot released");
    }

    #[tokio::test]
    async fn a_persistent_session_is_present_on_the_next_connect() {
        let test = TestContext::new("");
        let (first, _, out) = test
            .accept(Version::V311, connect("meter", false), None)
            .await;
        assert_eq!(connack(&out), (false, 0));
        drop(first.expect("accepted"));
        let (second, _, out) = test
            .accept(Version::V311, connect("meter", false), None)
            .await;
        assert_eq!(connack(&out), (true, 0), "session present");
        drop(second.expect("accepted"));
        let (_, _, out) = test
            .accept(Version::V311, connect("meter", true), None)
            .await;
        assert_eq!(connack(&out), (false, 0), "a clean session starts over");
    }

    #[tokio::test]
    async fn a_refused_connect_keeps_its_slot_and_is_counted() {
        let test = TestContext::new("");
        let (accepted, slot, out) = test.accept(Version::V311, connect("", false), None).await;
        assert!(accepted.is_none());
        assert!(slot.is_some(), "kept until the refusal is written");
        assert_eq!(connack(&out), (false, 2), "identifier rejected");
        assert_eq!(count(&test.ctx.metrics.refused, "client_id"), 1);
        assert_eq!(test.ctx.metrics.sessions.get(), 0, "no session attached");

        let mut props = v5_props();
        props.authentication_method = Some("SCRAM-SHA-1".into());
        let (accepted, _, out) = test
            .accept(Version::V5, connect("c", true), Some(props))
            .await;
        assert!(accepted.is_none());
        assert_eq!(connack(&out), (false, 0x8C), "bad authentication method");
        assert_eq!(count(&test.ctx.metrics.refused, "auth_method"), 1);
    }

    #[tokio::test]
    async fn anonymous_clients_are_refused_when_not_allowed() {
        let test = TestContext::new("allow_anonymous = false");
        let (accepted, _, out) = test.accept(Version::V5, connect("c", true), None).await;
        assert!(accepted.is_none());
        assert_eq!(connack(&out), (false, 0x87), "not authorized");
        let (_, _, out) = test.accept(Version::V311, connect("c", true), None).await;
        assert_eq!(connack(&out), (false, 5), "not authorized");
        assert_eq!(count(&test.ctx.metrics.refused, "anonymous"), 2);
    }

    #[tokio::test]
    async fn a_server_shutting_down_tells_clients_to_try_later() {
        let test = TestContext::new("");
        test.ctx.shut_down();
        let (accepted, slot, out) = test.accept(Version::V5, connect("c", true), None).await;
        assert!(accepted.is_none() && slot.is_some());
        assert_eq!(connack(&out), (false, 0x89), "server busy");
        let (_, _, out) = test.accept(Version::V311, connect("c", true), None).await;
        assert_eq!(connack(&out), (false, 3), "server unavailable");
        assert_eq!(count(&test.ctx.metrics.refused, "shutting_down"), 2);
    }
}
