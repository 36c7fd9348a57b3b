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

use super::context::{ConnectionSlot, Context, Transport};
use super::packet_loop::{Connection, IDLE_READ_BUFFER};
use super::{Exit, TOPIC_ALIAS_MAXIMUM, write_out};
use crate::auth::{Acl, AuthError};
use crate::codec::{self, Codec, FrameError, Version};
use crate::metrics::MqttMetrics;
use crate::session::{DelayedWill, NEVER_EXPIRES, Session};
use crate::sessions::{Attached, Detached};

/// The CONNACK code for "try again later" in `version`.
pub(super) fn busy(version: Version) -> ConnectReturnCode {
    match version {
        Version::V311 => ConnectReturnCode::ServiceUnavailable,
        Version::V5 => ConnectReturnCode::ServerBusy,
    }
}

/// Reads CONNECT and answers it; returns the accepted connection.
pub(super) async fn handshake<S: Transport>(
    mut io: S,
    slot: ConnectionSlot,
) -> std::io::Result<Option<Box<Connection<S>>>> {
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
    Ok(accepted.map(|state| {
        let nothing_more = read_buf.is_empty();
        if nothing_more {
            // Hold no read buffer while waiting.
            read_buf = BytesMut::new();
        }
        let mut conn = Connection::new(io, read_buf, state, None);
        conn.resend_inflight();
        conn.note_read();
        if nothing_more {
            // Nothing came after CONNECT: the connection may park as soon
            // as it waits, so clients connecting in a crowd do not each
            // hold a task and buffers until their first second is up.
            conn.mark_quiet();
        }
        conn
    }))
}

/// What an accepted CONNECT established, and the connection's state that
/// outlives its socket while it is parked.
pub(super) struct Accepted {
    pub(super) codec: Codec,
    slot: ConnectionSlot,
    pub(super) session: Arc<Session>,
    /// This connection's id in the session table.
    pub(super) connection: u64,
    pub(super) acl: Arc<Acl>,
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

/// Answers a CONNECT into `out`. An accepted connection takes its `slot`.
#[allow(clippy::too_many_arguments)]
async fn accept(
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
    let refuse = |code: ConnectReturnCode, reason: &'static str, out: &mut BytesMut| {
        MqttMetrics::count(&ctx.metrics.refused, reason);
        let _ = codec.encode(
            Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code,
                },
                None,
            ),
            out,
        );
        None
    };
    let props = props.unwrap_or(ConnectProperties {
        session_expiry_interval: None,
        receive_maximum: None,
        max_packet_size: None,
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: None,
        user_properties: Vec::new(),
        authentication_method: None,
        authentication_data: None,
    });
    if props.authentication_method.is_some() {
        return refuse(
            ConnectReturnCode::BadAuthenticationMethod,
            "auth_method",
            out,
        );
    }

    // Credentials. Checking a password (argon2) takes milliseconds of CPU
    // and ~19 MiB of memory, so it runs off the async workers, a few at a
    // time; a client without a username needs no hashing.
    let auth = ctx.settings.auth.clone();
    let (username, password) = match login {
        Some(l) if !l.username.is_empty() => (Some(l.username), l.password.into_bytes()),
        _ => (None, Vec::new()),
    };
    let try_later = busy(codec.version());
    let verdict = if username.is_none() {
        auth.authenticate(None, &password)
    } else {
        // A client waits for a check at most as long as for its CONNECT.
        let Ok(Ok(_slot)) =
            tokio::time::timeout(ctx.settings.connect_timeout, ctx.password_checks.acquire()).await
        else {
            return refuse(try_later, "password_checks_busy", out);
        };
        tokio::task::spawn_blocking(move || auth.authenticate(username.as_deref(), &password))
            .await
            .unwrap_or(Err(AuthError::BadCredentials))
    };
    let acl = match verdict {
        Ok(acl) => acl,
        Err(AuthError::BadCredentials) => {
            return refuse(
                ConnectReturnCode::BadUserNamePassword,
                "bad_credentials",
                out,
            );
        }
        Err(AuthError::AnonymousNotAllowed) => {
            return refuse(ConnectReturnCode::NotAuthorized, "anonymous", out);
        }
    };

    // Client id and session lifetime.
    let (clean_start, expiry_secs) = if v5 {
        (
            connect.clean_session,
            props.session_expiry_interval.unwrap_or(0),
        )
    } else if connect.clean_session {
        (true, 0)
    } else {
        (false, NEVER_EXPIRES)
    };
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_session {
            return refuse(
                ConnectReturnCode::ClientIdentifierNotValid,
                "client_id",
                out,
            );
        }
        let id = ctx.assign_client_id();
        assigned = Some(id.clone());
        id
    } else if connect.client_id.starts_with('$') {
        // Reserved for tidewire's own sources, such as `$nats:<bridge>`.
        return refuse(
            ConnectReturnCode::ClientIdentifierNotValid,
            "client_id",
            out,
        );
    } else {
        connect.client_id
    };

    // The will.
    let limits = ctx.broker.limits();
    let will = match will {
        None => None,
        Some(w) => {
            let topic = String::from_utf8(w.topic.to_vec()).unwrap_or_default();
            if topic::validate_name(&topic, limits.max_topic_bytes).is_err() {
                return refuse(
                    if v5 {
                        ConnectReturnCode::TopicNameInvalid
                    } else {
                        ConnectReturnCode::ServiceUnavailable
                    },
                    "will_topic",
                    out,
                );
            }
            let wp = will_props;
            Some(Box::new(Will {
                delay_secs: wp.as_ref().and_then(|p| p.delay_interval).unwrap_or(0),
                message: Message {
                    topic,
                    client_id: client_id.clone(),
                    qos: w.qos as u8,
                    retain: w.retain,
                    payload: w.message,
                    properties: wp.map_or_else(Properties::default, |p| Properties {
                        user: p.user_properties,
                        content_type: p.content_type,
                        response_topic: p.response_topic,
                        correlation_data: p.correlation_data,
                        message_expiry_secs: p.message_expiry_interval,
                        payload_format_utf8: p.payload_format_indicator == Some(1),
                    }),
                },
            }))
        }
    };

    // Keepalive, capped by the server when configured.
    let mut server_keep_alive = None;
    let mut keepalive = connect.keep_alive;
    if let Some(max) = ctx.settings.max_keepalive
        && v5
        && (keepalive == 0 || keepalive > max)
    {
        keepalive = max;
        server_keep_alive = Some(max);
    }

    if ctx.is_closing() {
        return refuse(try_later, "shutting_down", out);
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
        keepalive_ms: u32::from(keepalive) * 1500,
        client_receive_max: props.receive_maximum.unwrap_or(u16::MAX).max(1),
        client_max_packet: props.max_packet_size.unwrap_or(u32::MAX),
        unreleased: 0,
        released: false,
        client_alias_max: props.topic_alias_max.unwrap_or(0),
        will,
    })
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
        let publish_will = match exit {
            Exit::Disconnected { with_will } => with_will,
            Exit::Shutdown => false,
            _ => true,
        };
        let will = self.will.take().filter(|_| publish_will);
        let ctx = Arc::clone(self.ctx());
        let client_id = &self.session.client_id;
        let detached = ctx.sessions.detach(&self.session, self.connection);
        if let Some(will) = will {
            if self.acl.may_publish(&will.message.topic) {
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
        let delay = match detached {
            Detached::Ended => 0,
            Detached::Resumed if will.delay_secs > 0 => return,
            Detached::Resumed => 0,
            Detached::Offline => {
                let mut state = self.session.lock();
                let delay = will.delay_secs.min(state.expiry_secs);
                if delay > 0 {
                    if self.session.link.online() {
                        // A connection that stopped waiting for this one
                        // has resumed the session meanwhile.
                        return;
                    }
                    if let Some(earlier) = state.pending_will.replace(pending) {
                        // Left by a connection that lost a takeover race.
                        earlier.cancel();
                    }
                }
                delay
            }
        };
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
