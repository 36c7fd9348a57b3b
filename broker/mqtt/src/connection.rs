//! One client connection, over any byte stream ([`Transport`]): the
//! CONNECT handshake, then a loop that reads packets, acknowledges
//! publishes once they are durable, sends queued messages within the
//! client's window, and watches keepalive, takeover and shutdown.
//!
//! Inbound publishes are submitted to the broker as they arrive and
//! acknowledged in arrival order as each becomes durable, so a client can
//! keep many QoS 1/2 publishes in flight and they share fsyncs.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::future::poll_fn;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode, Disconnect,
    DisconnectProperties, DisconnectReasonCode, LastWill, LastWillProperties, Login, Packet,
    PingResp, PubAck, PubAckProperties, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason,
    PubRel, PubRelReason, Publish, PublishProperties, RetainForwardRule, SubAck, Subscribe,
    SubscribeProperties, SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe, qos,
};
use tidewire_core::topic::{self, TopicFilter};
use tidewire_core::{Broker, Message, Properties, PublishError, Source};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::auth::{Acl, AuthError};
use crate::codec::{self, Codec, FrameError, OutgoingPublish, PublishHeader, Version};
use crate::config::MqttSettings;
use crate::metrics::{self, DropReason, MqttMetrics};
use crate::park::{Parkable, ParkingLot};
use crate::retained::{RetainedStore, now_ms};
use crate::router::{Router, parse_filter};
use crate::session::{DelayedWill, Delivery, NEVER_EXPIRES, Session, SubOptions};
use crate::sessions::{Attached, Detached, SessionTable};

/// Topic aliases a client may set towards us (MQTT 5 Topic Alias Maximum).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 64;
/// Messages sent per wake-up before the loop flushes and looks at input.
const SEND_BATCH: usize = 256;
/// Bytes buffered for writing before the loop flushes.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Read buffer of a connection that sends little: idle connections stay
/// small.
const IDLE_READ_BUFFER: usize = 256;
/// Read buffer once a read fills the buffer: busy connections read in bulk.
const BUSY_READ_BUFFER: usize = 64 * 1024;
/// How long a goodbye may take to write and close, and how long a
/// connection closed with a reason goes on reading what its client still
/// sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much a connection closed with a reason reads before it closes.
const LINGER_BYTES: usize = 64 * 1024;

/// A byte stream a session can be served over: TCP here, WebSocket
/// elsewhere.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Everything connections share.
#[derive(Debug)]
pub struct Context {
    /// The publish path.
    pub broker: Broker,
    /// Subscriptions.
    pub router: Arc<Router>,
    /// Sessions.
    pub sessions: Arc<SessionTable>,
    /// Retained messages.
    pub retained: Arc<RetainedStore>,
    /// Limits and auth.
    pub settings: MqttSettings,
    /// Metrics.
    pub metrics: MqttMetrics,
    assigned_ids: AtomicU64,
    /// One permit per connection, over every transport.
    slots: Semaphore,
    /// Every connection, over every transport, so shutdown can wait for
    /// them before the sessions are saved.
    connections: TaskTracker,
    /// Set once shutdown starts: connections say goodbye and close.
    closing: AtomicBool,
    /// Password checks running at once: one per core.
    password_checks: Semaphore,
    /// Where quiet TCP connections wait without a task; `None` if the
    /// poller could not be set up (they keep their tasks then).
    parking: Option<ParkingLot<Quiet>>,
}

impl Context {
    /// Bundles the shared parts.
    pub fn new(
        broker: Broker,
        router: Arc<Router>,
        sessions: Arc<SessionTable>,
        retained: Arc<RetainedStore>,
        settings: MqttSettings,
        metrics: MqttMetrics,
    ) -> Context {
        Context {
            slots: Semaphore::new(settings.max_connections),
            broker,
            router,
            sessions,
            retained,
            settings,
            assigned_ids: AtomicU64::new(0),
            connections: TaskTracker::new(),
            closing: AtomicBool::new(false),
            password_checks: Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            parking: ParkingLot::start(metrics.parked.clone())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "quiet connections will keep their tasks");
                })
                .ok(),
            metrics,
        }
    }

    /// Serves a connection from any transport (WebSocket here): counted
    /// against `max_connections`, refused with a CONNACK when over it, and
    /// tracked (from this call on, not from the first poll) so shutdown
    /// waits for it.
    pub fn admit<S: Transport>(
        self: Arc<Self>,
        io: S,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.admit_with(io, None)
    }

    /// [`Context::admit`] for a TCP connection, which parks while quiet.
    pub(crate) fn admit_tcp(
        self: Arc<Self>,
        stream: TcpStream,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.admit_with(stream, Some(park_tcp as Park<TcpStream>))
    }

    fn admit_with<S: Transport>(
        self: Arc<Self>,
        io: S,
        park: Option<Park<S>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tracked = self.connections.token();
        async move {
            match ConnectionSlot::take(&self, tracked) {
                Some(slot) => serve(io, slot, park).await,
                None => {
                    tracing::warn!("connection limit reached; refusing");
                    Box::pin(refuse_busy(io, self)).await;
                }
            }
        }
    }

    /// Starts shutdown: every connection, now and from here on, says
    /// goodbye and closes.
    pub(crate) fn shut_down(&self) {
        self.closing.store(true, Ordering::Release);
        self.sessions.wake_all();
    }

    /// Subscribes `session` to `full` (a filter, maybe `$share/...`) if it
    /// is valid and `acl` allows it. Returns whether the retained messages
    /// matching it are due under its Retain Handling; send them with
    /// [`Context::queue_retained`] after acknowledging the subscription.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        acl: &Acl,
        full: &str,
        options: SubOptions,
    ) -> Result<bool, SubscribeError> {
        let max_topic = self.broker.limits().max_topic_bytes;
        let parsed = parse_filter(full)
            .filter(|p| {
                TopicFilter::new(p.filter, max_topic).is_ok()
                    && !(p.group.is_some() && options.no_local)
            })
            .ok_or_else(|| {
                MqttMetrics::count(&self.metrics.denied, "invalid_filter");
                SubscribeError::InvalidFilter
            })?;
        if !acl.may_subscribe(parsed.filter) {
            MqttMetrics::count(&self.metrics.denied, "subscribe_acl");
            return Err(SubscribeError::NotAuthorized);
        }
        let existed = self.router.subscribe(full, session, options);
        session
            .lock()
            .subscriptions
            .insert(full.to_owned(), options);
        let due = match options.retain_handling {
            0 => true,
            1 => !existed,
            _ => false,
        };
        Ok(due && parsed.group.is_none())
    }

    /// Queues the retained messages matching the plain filter `filter` into
    /// `session`, at most at the subscription's QoS.
    pub fn queue_retained(&self, session: &Session, filter: &str, options: SubOptions) {
        let now = now_ms();
        for r in self.retained.matching(filter) {
            let expires_at = r
                .remaining_secs(now)
                .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
            session.enqueue(Delivery {
                qos: r.message.qos.min(options.qos),
                message: r.message,
                retain: true,
                subscription_ids: options.id.into_iter().collect(),
                expires_at,
            });
        }
    }

    /// Removes `session`'s subscription to `full`. Returns true if it
    /// existed.
    pub fn unsubscribe(&self, session: &Session, full: &str) -> bool {
        session.lock().subscriptions.remove(full);
        self.router.unsubscribe(full, &session.client_id)
    }

    /// Stops tracking new connections and waits up to `deadline` for the
    /// open ones to end. Returns false when some did not.
    pub(crate) async fn drain(&self, deadline: Duration) -> bool {
        self.connections.close();
        tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok()
    }

    fn assign_client_id(&self) -> String {
        let n = self.assigned_ids.fetch_add(1, Ordering::Relaxed);
        format!("tw-{:x}-{n}", now_ms())
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// Not a valid topic filter (or a shared one with No Local).
    #[error("invalid topic filter")]
    InvalidFilter,
    /// The client's ACL does not cover it.
    #[error("not authorized to subscribe to this filter")]
    NotAuthorized,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// DISCONNECT from the client; `true` asks for the will anyway (0x04).
    Disconnected { with_will: bool },
    /// The peer closed the stream or it failed.
    Closed,
    /// We close it with this MQTT 5 reason.
    Refused(DisconnectReasonCode),
    /// Another connection took the client id.
    TakenOver,
    /// The server is stopping.
    Shutdown,
    /// Nothing has happened for a while: the connection may park.
    Quiet,
}

/// What woke a waiting connection.
struct Woken {
    /// Messages are queued for the client.
    ready: bool,
    /// Input was read.
    read: bool,
}

/// An inbound publish waiting to be durable before it is acknowledged.
struct PendingAck {
    pkid: u16,
    qos: u8,
    done: Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>,
}

/// Writes `bytes` and flushes: a no-op for TCP, but a WebSocket sends its
/// buffered messages only on flush.
async fn write_out<S: Transport>(io: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// The CONNACK code for "try again later" in `version`.
fn busy(version: Version) -> ConnectReturnCode {
    match version {
        Version::V311 => ConnectReturnCode::ServiceUnavailable,
        Version::V5 => ConnectReturnCode::ServerBusy,
    }
}

/// A connection's place under `max_connections`, and its handle on the
/// context, held from admission to the end, parked or not: it counts in
/// the open connections gauge, and shutdown waits for it.
#[derive(Debug)]
struct ConnectionSlot {
    ctx: Arc<Context>,
    _tracked: TaskTrackerToken,
}

impl ConnectionSlot {
    /// Takes a place for a new connection, if one is free.
    fn take(ctx: &Arc<Context>, tracked: TaskTrackerToken) -> Option<Self> {
        // The place goes back in `drop`, so the slot needs no permit of
        // its own.
        ctx.slots.try_acquire().ok()?.forget();
        ctx.metrics.connections.inc();
        Some(ConnectionSlot {
            ctx: Arc::clone(ctx),
            _tracked: tracked,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.ctx.metrics.connections.dec();
        self.ctx.slots.add_permits(1);
    }
}

/// Hands a quiet connection over to wait without its task, or gives it
/// back to go on serving.
type Park<S> = fn(Box<Connection<S>>) -> Option<Box<Connection<S>>>;

/// Serves one connection until it ends or parks.
///
/// A connection waiting for input keeps small: the handshake runs in its
/// own boxed future, the connection's state is one heap block, and the
/// wait is a single poll over the socket, the session's waker and the
/// pending acks, with no timer or notification futures of its own (keep
/// alive and shutdown wake it through the session). Once quiet, a TCP
/// connection gives up even that and parks.
async fn serve<S: Transport>(io: S, slot: ConnectionSlot, park: Option<Park<S>>) {
    slot.ctx.metrics.accepted.inc();
    match Box::pin(handshake(io, slot)).await {
        Ok(Some(conn)) => drive(conn, park).await,
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

/// Runs an accepted connection until it ends, or until it is quiet and
/// `park` takes it.
async fn drive<S: Transport>(mut conn: Box<Connection<S>>, park: Option<Park<S>>) {
    conn.parkable = park.is_some();
    let exit = loop {
        let exit = conn.run().await;
        let (Exit::Quiet, Some(park)) = (exit, park) else {
            break exit;
        };
        match park(conn) {
            None => return,
            Some(back) => {
                conn = back;
                conn.parkable = false;
            }
        }
    };
    Box::pin(conn.finish(exit)).await;
}

/// Parks a quiet TCP connection: the lot keeps its socket (a duplicate of
/// the descriptor, so dropping the tokio stream only takes it out of the
/// runtime's reactor) and everything but its buffers.
fn park_tcp(conn: Box<Connection<TcpStream>>) -> Option<Box<Connection<TcpStream>>> {
    let ctx = Arc::clone(conn.ctx());
    let Some(lot) = ctx.parking.as_ref() else {
        return Some(conn);
    };
    let socket = match conn.io.as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            tracing::debug!(error = %e, "could not park a quiet connection");
            return Some(conn);
        }
    };
    let (io, quiet) = (*conn).into_quiet();
    match lot.park(socket, quiet) {
        Ok(()) => None,
        Err((_, quiet)) => Some(quiet.into_connection(io, BytesMut::new())),
    }
}

/// Answers a connection that is over the connection limit with a refusal.
pub async fn refuse_busy<S: Transport>(mut io: S, ctx: Arc<Context>) {
    MqttMetrics::count(&ctx.metrics.refused, "max_connections");
    let mut buf = BytesMut::with_capacity(512);
    let deadline = Duration::from_secs(2);
    let version = tokio::time::timeout(deadline, async {
        loop {
            match codec::connect_version(&buf, ctx.settings.max_packet_bytes) {
                Ok(Some(v)) => return Some(v),
                Ok(None) => {}
                Err(_) => return None,
            }
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .flatten();
    if let Some(version) = version {
        let code = busy(version);
        let mut out = BytesMut::new();
        let connack = Packet::ConnAck(
            ConnAck {
                session_present: false,
                code,
            },
            None,
        );
        if Codec::new(version, ctx.settings.max_packet_bytes)
            .encode(connack, &mut out)
            .is_ok()
        {
            let _ = write_out(&mut io, &out).await;
        }
    }
    let _ = io.shutdown().await;
}

/// Reads CONNECT and answers it; returns the accepted connection.
async fn handshake<S: Transport>(
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
        let quiet = Quiet {
            state,
            aliases: None,
        };
        let mut conn = quiet.into_connection(io, read_buf);
        conn.resend_inflight();
        conn.note_read();
        if nothing_more {
            // Nothing came after CONNECT: the connection may park as soon
            // as it waits, so clients connecting in a crowd do not each
            // hold a task and buffers until their first second is up.
            conn.session.link.mark_quiet();
        }
        conn
    }))
}

/// What an accepted CONNECT established, and the connection's state that
/// outlives its socket while it is parked.
struct Accepted {
    codec: Codec,
    slot: ConnectionSlot,
    session: Arc<Session>,
    /// This connection's id in the session table.
    connection: u64,
    acl: Arc<Acl>,
    /// How long the client may stay silent (1.5 × its keep alive), in ms;
    /// 0 for no limit.
    keepalive_ms: u32,
    client_receive_max: u16,
    client_alias_max: u16,
    /// The largest packet the client takes, in bytes.
    client_max_packet: u32,
    /// QoS 2 messages from the client, received on this connection and
    /// PUBREC'd, that await PUBREL: they count against our Receive Maximum
    /// until PUBCOMP.
    unreleased: u16,
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

    if ctx.closing.load(Ordering::Acquire) {
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
    fn ctx(&self) -> &Arc<Context> {
        &self.slot.ctx
    }

    /// Why the connection must end now, if it must: shutdown, or another
    /// connection took the client id over.
    fn told_to_go(&self) -> Option<Exit> {
        if self.ctx().closing.load(Ordering::Acquire) {
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
    fn release(&mut self, exit: Exit) {
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

/// A connection between packets, without its socket and buffers: all a
/// parked connection keeps.
struct Quiet {
    state: Accepted,
    aliases: Option<Box<TopicAliases>>,
}

/// MQTT 5 topic aliases in use on a connection, set up on first use.
#[derive(Default)]
struct TopicAliases {
    /// Set by the client.
    inbound: BTreeMap<u16, String>,
    /// Set by us, up to the client's Topic Alias Maximum.
    outbound: BTreeMap<String, u16>,
}

impl Quiet {
    fn into_connection<S: Transport>(self, io: S, read_buf: BytesMut) -> Box<Connection<S>> {
        Box::new(Connection {
            io,
            read_buf,
            out: BytesMut::new(),
            session: Arc::clone(&self.state.session),
            state: self.state,
            pending: VecDeque::new(),
            pending_qos: 0,
            aliases: self.aliases,
            read_full: false,
            parkable: false,
        })
    }
}

impl Parkable for Quiet {
    fn watch(&self, waker: &Waker) -> bool {
        // As in `poll_wake`: a connection that must go does not register
        // with the session, where a successor may be registered already.
        if self.state.told_to_go().is_some() {
            return true;
        }
        let mut cx = std::task::Context::from_waker(waker);
        let ready = self.state.session.poll_ready(&mut cx);
        ready || self.state.told_to_go().is_some()
    }

    async fn resume(mut self, socket: std::net::TcpStream) {
        // Read what input is waiting now: the runtime's reactor reports it
        // only some time after the socket is registered, and a PINGREQ
        // that arrived late must count before keep alive is judged. A
        // close or an error shows again on the connection's next read.
        let mut waiting = [0u8; IDLE_READ_BUFFER];
        let read = std::io::Read::read(&mut &socket, &mut waiting).unwrap_or(0);
        match TcpStream::from_std(socket) {
            Ok(io) => {
                // Back to work, and not quiet until it has had time to
                // read and answer.
                self.state.ctx().sessions.touch(&self.state.session.link);
                let mut conn = self.into_connection(io, BytesMut::from(&waiting[..read]));
                if read > 0 {
                    conn.note_read();
                }
                drive(conn, Some(park_tcp)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resume a parked connection");
                self.state.release(Exit::Closed);
            }
        }
    }
}

struct Connection<S> {
    io: S,
    read_buf: BytesMut,
    out: BytesMut,
    session: Arc<Session>,
    state: Accepted,
    pending: VecDeque<PendingAck>,
    pending_qos: usize,
    aliases: Option<Box<TopicAliases>>,
    /// The last read filled the buffer: more is probably waiting.
    read_full: bool,
    /// Quiet for long enough, it ends [`Connection::run`] to park.
    parkable: bool,
}

impl<S: Transport> Connection<S> {
    fn v5(&self) -> bool {
        self.state.codec.version() == Version::V5
    }

    fn ctx(&self) -> &Arc<Context> {
        self.state.ctx()
    }

    fn send(&mut self, packet: Packet) {
        if let Err(e) = self.state.codec.encode(packet, &mut self.out) {
            tracing::warn!(error = %e, "could not encode a packet");
        }
    }

    /// Takes the socket out, leaving what a parked connection keeps.
    fn into_quiet(self) -> (S, Quiet) {
        let quiet = Quiet {
            state: self.state,
            aliases: self.aliases,
        };
        (self.io, quiet)
    }

    /// Serves the connection until it ends, or until it is quiet and may
    /// park ([`Exit::Quiet`]). Runs again after a resume.
    async fn run(&mut self) -> Exit {
        // Resumed from the parking lot to be told to go: nothing goes out
        // to this socket that belongs to a successor.
        if let Some(exit) = self.told_to_go() {
            return exit;
        }
        self.pump();
        // Packets that arrived together with CONNECT. Handling input (the
        // publish path included) has a large state, boxed here and below
        // so that a waiting connection's future stays small.
        if let Some(exit) = Box::pin(self.handle_input()).await {
            return exit;
        }
        loop {
            if !self.out.is_empty() {
                if let Err(exit) = poll_fn(|cx| self.poll_write_out(cx)).await {
                    return exit;
                }
                self.ctx().sessions.touch(&self.session.link);
                self.out.clear();
                if self.out.capacity() > 4 * WRITE_HIGH_WATER {
                    self.out = BytesMut::new();
                }
            }
            let woken = match poll_fn(|cx| self.poll_wake(cx)).await {
                Ok(woken) => woken,
                Err(exit) => return exit,
            };
            if woken.read {
                self.note_read();
                if let Some(exit) = Box::pin(self.handle_input()).await {
                    return exit;
                }
                if self.read_buf.is_empty() && !self.read_full {
                    // Idle again: hold no read buffer while waiting.
                    self.read_buf = BytesMut::new();
                }
            }
            if woken.ready {
                self.pump();
            }
        }
    }

    /// Waits for something to do: acknowledges publishes that became
    /// durable, reads input and notices queued messages, or says why the
    /// connection must end.
    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Woken, Exit>> {
        // A connection that must go does not register with the session: a
        // successor may already be registered there.
        if let Some(exit) = self.told_to_go() {
            return Poll::Ready(Err(exit));
        }
        // Register before looking again, so a kick in between still wakes
        // this task.
        let ready = self.session.poll_ready(cx);
        if let Some(exit) = self.told_to_go() {
            return Poll::Ready(Err(exit));
        }
        let mut acked = false;
        while let Some(front) = self.pending.front_mut() {
            match front.done.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    self.acknowledge(result);
                    acked = true;
                }
                Poll::Pending => break,
            }
        }
        let reading = self.pending.len() < usize::from(self.ctx().settings.receive_maximum).max(64);
        let read = match reading.then(|| self.poll_read(cx)) {
            Some(Poll::Ready(Ok(0) | Err(_))) => return Poll::Ready(Err(Exit::Closed)),
            Some(Poll::Ready(Ok(_))) => true,
            Some(Poll::Pending) | None => false,
        };
        // Input waiting in the socket counts, even if this task was busy
        // (say, writing to a slow client) past the deadline.
        if !read && self.state.keepalive_ms != 0 && self.ctx().sessions.overdue(&self.session.link)
        {
            MqttMetrics::count(&self.ctx().metrics.protocol_errors, "keepalive_timeout");
            return Poll::Ready(Err(Exit::Refused(DisconnectReasonCode::KeepAliveTimeout)));
        }
        if ready || acked || read {
            Poll::Ready(Ok(Woken { ready, read }))
        } else if self.quiet() {
            Poll::Ready(Err(Exit::Quiet))
        } else {
            Poll::Pending
        }
    }

    /// Writes (and flushes) the output buffer, taking what is written off
    /// it. A client that stops reading can hold a write up for as long as
    /// TCP keeps trying; meanwhile the connection still hears that it must
    /// go (taken over, shutting down).
    fn poll_write_out(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Exit>> {
        let mut io = Pin::new(&mut self.io);
        let written = loop {
            if self.out.is_empty() {
                break io.as_mut().poll_flush(cx);
            }
            match io.as_mut().poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out.advance(n),
                other => break other.map_ok(|_| ()),
            }
        };
        match written {
            Poll::Ready(result) => Poll::Ready(result.map_err(|_| Exit::Closed)),
            Poll::Pending => {
                // Woken by a kick, not (more than once) by messages queued.
                self.session.register(cx);
                match self.told_to_go() {
                    Some(exit) => Poll::Ready(Err(exit)),
                    None => Poll::Pending,
                }
            }
        }
    }

    /// True when the connection may park: the session table found it quiet
    /// for a while, and nothing is under way (acks, output, a partial
    /// packet).
    fn quiet(&self) -> bool {
        self.parkable
            && self.session.link.quiet()
            && self.pending.is_empty()
            && self.out.is_empty()
            && self.read_buf.is_empty()
    }

    fn told_to_go(&self) -> Option<Exit> {
        self.state.told_to_go()
    }

    /// Reads what the socket has. An idle connection reads into the stack
    /// and keeps only what arrived; one whose reads fill the buffer gets a
    /// large buffer to read into directly.
    fn poll_read(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        if self.read_buf.capacity() > self.read_buf.len() || self.read_full {
            if self.read_buf.capacity() == self.read_buf.len() {
                self.read_buf.reserve(BUSY_READ_BUFFER);
            }
            let read = ready!(tokio_util::io::poll_read_buf(io, cx, &mut self.read_buf))?;
            self.read_full = self.read_buf.len() == self.read_buf.capacity();
            return Poll::Ready(Ok(read));
        }
        let mut stack = [0u8; IDLE_READ_BUFFER];
        let mut buf = ReadBuf::new(&mut stack);
        ready!(io.poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        self.read_full = read == IDLE_READ_BUFFER;
        self.read_buf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(read))
    }

    /// Restarts the keep-alive clock after input arrived, and tells the
    /// table's sweep the new deadline (and that the connection is active).
    fn note_read(&mut self) {
        self.ctx().sessions.note_input(
            &self.session.link,
            self.state.connection,
            Instant::now(),
            self.state.keepalive_ms,
        );
    }

    /// Decodes and handles every whole packet in the read buffer.
    async fn handle_input(&mut self) -> Option<Exit> {
        loop {
            let decoded = self.state.codec.decode(&mut self.read_buf);
            let (packet, header) = match decoded {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) => {
                    let (reason, label) = match e {
                        FrameError::TooLarge(_) => {
                            (DisconnectReasonCode::PacketTooLarge, "packet_too_large")
                        }
                        FrameError::UnexpectedType(_) => {
                            (DisconnectReasonCode::ProtocolError, "unexpected_packet")
                        }
                        _ => (DisconnectReasonCode::MalformedPacket, "malformed"),
                    };
                    tracing::debug!(client_id = %self.session.client_id, error = %e, "closing connection");
                    MqttMetrics::count(&self.ctx().metrics.protocol_errors, label);
                    return Some(Exit::Refused(reason));
                }
            };
            if let Some(exit) = self.handle(packet, header).await {
                return Some(exit);
            }
        }
    }

    async fn handle(&mut self, packet: Packet, header: Option<PublishHeader>) -> Option<Exit> {
        match packet {
            Packet::Publish(publish, props) => {
                let header = header?;
                return self.on_publish(publish, props, header).await;
            }
            Packet::PubAck(ack, _) => {
                self.session.lock().complete(ack.pkid);
                self.pump();
            }
            Packet::PubRec(rec, _) => self.on_pubrec(rec),
            Packet::PubRel(rel, _) => {
                let known = self.session.lock().release(rel.pkid);
                if known {
                    // A PUBREL for an exchange begun on an earlier
                    // connection lowers the count too: the quota is per
                    // connection, and this errs toward the client.
                    self.state.unreleased = self.state.unreleased.saturating_sub(1);
                }
                let reason = if known || !self.v5() {
                    PubCompReason::Success
                } else {
                    PubCompReason::PacketIdentifierNotFound
                };
                self.send(Packet::PubComp(
                    PubComp {
                        pkid: rel.pkid,
                        reason,
                    },
                    None,
                ));
            }
            Packet::PubComp(comp, _) => {
                self.session.lock().complete(comp.pkid);
                self.pump();
            }
            Packet::Subscribe(subscribe, props) => self.on_subscribe(subscribe, props),
            Packet::Unsubscribe(unsubscribe, _) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq(_) => self.send(Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect, props) => {
                return Some(self.on_disconnect(disconnect, props));
            }
            Packet::Connect(..) => {
                MqttMetrics::count(&self.ctx().metrics.protocol_errors, "second_connect");
                return Some(Exit::Refused(DisconnectReasonCode::ProtocolError));
            }
            _ => {
                MqttMetrics::count(&self.ctx().metrics.protocol_errors, "unexpected_packet");
                return Some(Exit::Refused(DisconnectReasonCode::ProtocolError));
            }
        }
        None
    }

    async fn on_publish(
        &mut self,
        publish: Publish,
        props: Option<PublishProperties>,
        header: PublishHeader,
    ) -> Option<Exit> {
        self.ctx().metrics.received.inc(header.qos);
        let PublishHeader { qos, pkid, .. } = header;
        let props = props.unwrap_or_default();

        // Topic, resolving MQTT 5 topic aliases.
        let Ok(mut topic) = String::from_utf8(publish.topic.to_vec()) else {
            return Some(Exit::Refused(DisconnectReasonCode::MalformedPacket));
        };
        if let Some(alias) = props.topic_alias {
            if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                MqttMetrics::count(&self.ctx().metrics.protocol_errors, "topic_alias");
                return Some(Exit::Refused(DisconnectReasonCode::TopicAliasInvalid));
            }
            if topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(known) => topic = known.clone(),
                    None => return Some(Exit::Refused(DisconnectReasonCode::ProtocolError)),
                }
            } else {
                self.aliases
                    .get_or_insert_default()
                    .inbound
                    .insert(alias, topic.clone());
            }
        }

        // A QoS 2 retry of a message we already have: acknowledge again.
        if qos == 2 {
            let known = self.session.lock().awaits_release(pkid);
            if known {
                self.send_ack(pkid, 2, Ok(()));
                return None;
            }
            if self.pending.iter().any(|p| p.pkid == pkid && p.qos == 2) {
                return None;
            }
        }
        if qos > 0
            && self.v5()
            && self.pending_qos + usize::from(self.state.unreleased)
                >= usize::from(self.ctx().settings.receive_maximum)
        {
            MqttMetrics::count(&self.ctx().metrics.protocol_errors, "receive_maximum");
            return Some(Exit::Refused(DisconnectReasonCode::ReceiveMaximumExceeded));
        }
        if !self.state.acl.may_publish(&topic) {
            MqttMetrics::count(&self.ctx().metrics.denied, "publish_acl");
            tracing::debug!(client_id = %self.session.client_id, topic, "publish denied by ACL");
            self.send_ack(pkid, qos, Err(PubAckReason::NotAuthorized));
            return None;
        }

        let message = Message {
            topic,
            client_id: self.session.client_id.clone(),
            qos,
            retain: publish.retain,
            payload: publish.payload,
            properties: Properties {
                user: props.user_properties,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                message_expiry_secs: props.message_expiry_interval,
                payload_format_utf8: props.payload_format_indicator == Some(1),
            },
        };
        match self.ctx().broker.submit(Source::Mqtt, message).await {
            Ok(ticket) => {
                if qos > 0 {
                    self.pending_qos += 1;
                }
                self.pending.push_back(PendingAck {
                    pkid,
                    qos,
                    done: Box::pin(ticket.done()),
                });
                None
            }
            Err(e) => self.refused_publish(pkid, qos, &e),
        }
    }

    /// Answers a publish the broker refused, by protocol version.
    fn refused_publish(&mut self, pkid: u16, qos: u8, e: &PublishError) -> Option<Exit> {
        tracing::debug!(client_id = %self.session.client_id, error = %e, "publish refused");
        let reason = match e {
            PublishError::InvalidTopic(_) => PubAckReason::TopicNameInvalid,
            PublishError::PayloadTooLarge { .. } => PubAckReason::QuotaExceeded,
            _ => PubAckReason::UnspecifiedError,
        };
        if !self.v5() {
            // 3.1.1 has no negative ack: an invalid topic or a failed store
            // closes the connection (the client will retry); an oversize
            // payload is acknowledged and dropped, as Mosquitto does.
            if reason != PubAckReason::QuotaExceeded {
                return Some(Exit::Refused(DisconnectReasonCode::UnspecifiedError));
            }
        }
        self.send_ack(pkid, qos, Err(reason));
        None
    }

    /// Sends PUBACK/PUBREC for `pkid` (nothing for QoS 0). MQTT 3.1.1 has no
    /// failure codes, so a refusal is acknowledged plainly there.
    fn send_ack(&mut self, pkid: u16, qos: u8, outcome: Result<(), PubAckReason>) {
        let reason = match outcome {
            Ok(()) => PubAckReason::Success,
            Err(_) if !self.v5() => PubAckReason::Success,
            Err(reason) => reason,
        };
        match qos {
            1 => self.send(Packet::PubAck(PubAck { pkid, reason }, None)),
            2 => {
                if reason == PubAckReason::Success && self.session.lock().await_release(pkid) {
                    self.state.unreleased = self.state.unreleased.saturating_add(1);
                }
                self.send(Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: pubrec_reason(reason),
                    },
                    None,
                ));
            }
            _ => {}
        }
    }

    /// Acknowledges the oldest pending publish once it is durable.
    fn acknowledge(&mut self, result: Result<(), PublishError>) {
        let Some(done) = self.pending.pop_front() else {
            return;
        };
        if done.qos > 0 {
            self.pending_qos -= 1;
        }
        match result {
            Ok(_) => self.send_ack(done.pkid, done.qos, Ok(())),
            Err(e) => {
                tracing::warn!(client_id = %self.session.client_id, error = %e, "publish not stored");
                let props = PubAckProperties {
                    reason_string: Some(e.to_string()),
                    user_properties: Vec::new(),
                };
                if self.v5() && done.qos == 1 {
                    self.send(Packet::PubAck(
                        PubAck {
                            pkid: done.pkid,
                            reason: PubAckReason::UnspecifiedError,
                        },
                        Some(props),
                    ));
                } else {
                    self.send_ack(done.pkid, done.qos, Err(PubAckReason::UnspecifiedError));
                }
            }
        }
    }

    fn on_pubrec(&mut self, rec: PubRec) {
        let failed = !matches!(
            rec.reason,
            PubRecReason::Success | PubRecReason::NoMatchingSubscribers
        );
        if failed {
            self.session.lock().complete(rec.pkid);
            self.pump();
            return;
        }
        let known = self.session.lock().mark_released(rec.pkid);
        let reason = if known || !self.v5() {
            PubRelReason::Success
        } else {
            PubRelReason::PacketIdentifierNotFound
        };
        self.send(Packet::PubRel(
            PubRel {
                pkid: rec.pkid,
                reason,
            },
            None,
        ));
    }

    fn on_subscribe(&mut self, subscribe: Subscribe, props: Option<SubscribeProperties>) {
        let id = props.and_then(|p| p.id);
        let v5 = self.v5();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for filter in subscribe.filters {
            let granted = (filter.qos as u8).min(2);
            let options = SubOptions {
                qos: granted,
                no_local: v5 && filter.nolocal,
                retain_as_published: v5 && filter.preserve_retain,
                retain_handling: match filter.retain_forward_rule {
                    RetainForwardRule::OnEverySubscribe => 0,
                    RetainForwardRule::OnNewSubscribe => 1,
                    RetainForwardRule::Never => 2,
                },
                id,
            };
            let outcome =
                self.ctx()
                    .subscribe(&self.session, &self.state.acl, &filter.path, options);
            codes.push(match outcome {
                Ok(send_retained) => {
                    retained.extend(send_retained.then_some((filter.path, options)));
                    SubscribeReasonCode::Success(qos(granted).unwrap_or_default())
                }
                Err(_) if !v5 => SubscribeReasonCode::Failure,
                Err(SubscribeError::InvalidFilter) => SubscribeReasonCode::TopicFilterInvalid,
                Err(SubscribeError::NotAuthorized) => SubscribeReasonCode::NotAuthorized,
            });
        }
        self.send(Packet::SubAck(
            SubAck {
                pkid: subscribe.pkid,
                return_codes: codes,
            },
            None,
        ));
        for (filter, options) in retained {
            self.ctx().queue_retained(&self.session, &filter, options);
        }
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let reasons = unsubscribe
            .filters
            .iter()
            .map(|filter| {
                if self.ctx().unsubscribe(&self.session, filter) {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        self.send(Packet::UnsubAck(
            UnsubAck {
                pkid: unsubscribe.pkid,
                reasons,
            },
            None,
        ));
    }

    fn on_disconnect(
        &mut self,
        disconnect: Disconnect,
        props: Option<DisconnectProperties>,
    ) -> Exit {
        if let Some(expiry) = props.and_then(|p| p.session_expiry_interval) {
            self.session.lock().expiry_secs = expiry;
        }
        Exit::Disconnected {
            with_will: disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
        }
    }

    /// After a reconnect: resend unacknowledged messages with DUP set, and
    /// PUBREL for those already PUBREC'd.
    fn resend_inflight(&mut self) {
        let inflight = self.session.lock().inflight_in_order();
        for (pkid, entry) in inflight {
            if entry.released {
                self.send(Packet::PubRel(
                    PubRel {
                        pkid,
                        reason: PubRelReason::Success,
                    },
                    None,
                ));
            } else {
                self.send_publish(&entry.delivery, pkid, true, false);
            }
        }
    }

    /// Sends queued messages while the client's window allows.
    fn pump(&mut self) {
        let window = usize::from(
            self.ctx()
                .settings
                .max_inflight
                .min(self.state.client_receive_max),
        );
        let now = Instant::now();
        for _ in 0..SEND_BATCH {
            if self.out.len() >= WRITE_HIGH_WATER {
                break;
            }
            let next = {
                let mut state = self.session.lock();
                let Some(front) = state.queue.front() else {
                    return;
                };
                if front.qos > 0 && state.inflight_count() >= window {
                    return;
                }
                let Some(delivery) = state.queue.pop_front() else {
                    return;
                };
                if delivery.expired(now) {
                    self.ctx()
                        .metrics
                        .dropped(DropReason::Expired, metrics::SessionKind::Mqtt);
                    continue;
                }
                let pkid = if delivery.qos > 0 {
                    match state.next_pkid() {
                        Some(pkid) => {
                            state.track(pkid, delivery.clone());
                            pkid
                        }
                        None => {
                            state.queue.push_front(delivery);
                            return;
                        }
                    }
                } else {
                    0
                };
                (delivery, pkid)
            };
            let (delivery, pkid) = next;
            let before = self.out.len();
            self.send_publish(&delivery, pkid, false, true);
            let too_large = self.out.len() - before > self.state.client_max_packet as usize;
            if too_large {
                self.out.truncate(before);
                if pkid > 0 {
                    self.session.lock().complete(pkid);
                }
                self.ctx()
                    .metrics
                    .dropped(DropReason::TooLargeForClient, metrics::SessionKind::Mqtt);
                continue;
            }
            self.ctx().metrics.sent.inc(delivery.qos);
        }
        // More may be waiting: come back after flushing.
        self.session.notify();
    }

    /// Encodes a delivery as a PUBLISH into the output buffer.
    fn send_publish(&mut self, delivery: &Delivery, pkid: u16, dup: bool, use_alias: bool) {
        let message = &delivery.message;
        let mut topic: &str = &message.topic;
        let mut alias = None;
        if use_alias && self.v5() && self.state.client_alias_max > 0 {
            let max = self.state.client_alias_max;
            let outbound = &mut self.aliases.get_or_insert_default().outbound;
            match outbound.get(&message.topic) {
                Some(known) => {
                    alias = Some(*known);
                    topic = "";
                }
                None => {
                    let next = outbound.len() as u16 + 1;
                    if next <= max {
                        outbound.insert(message.topic.clone(), next);
                        alias = Some(next);
                    }
                }
            }
        }
        let publish = OutgoingPublish {
            topic: topic.as_bytes(),
            payload: &message.payload,
            qos: delivery.qos,
            pkid,
            dup,
            retain: delivery.retain,
        };
        // 3.1.1 has no properties: nothing to build.
        let props = self.v5().then(|| {
            let p = &message.properties;
            PublishProperties {
                payload_format_indicator: p.payload_format_utf8.then_some(1),
                message_expiry_interval: delivery.remaining_secs(Instant::now()),
                topic_alias: alias,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user.clone(),
                subscription_identifiers: delivery.subscription_ids.clone(),
                content_type: p.content_type.clone(),
            }
        });
        let encoded = self
            .state
            .codec
            .encode_publish(&publish, props.as_ref(), &mut self.out);
        if let Err(e) = encoded {
            tracing::warn!(error = %e, "could not encode a PUBLISH");
        }
    }

    /// Ends the connection: finish acks, say goodbye, publish the will
    /// when due, release the session, and read on for a while after a
    /// goodbye with a reason.
    async fn finish(&mut self, exit: Exit) {
        // Publishes already submitted finish (they are in the streams'
        // queues and reach subscribers); their acks go out if the peer is
        // still there.
        while let Some(front) = self.pending.front_mut() {
            let result = front.done.as_mut().await;
            self.acknowledge(result);
        }
        if exit == Exit::TakenOver {
            // The client is back on a connection that waits for this one;
            // what is left to send here can wait for a slow socket alone.
            self.state.release(exit);
        }
        let reason = match exit {
            Exit::Refused(reason) => Some(reason),
            Exit::TakenOver => Some(DisconnectReasonCode::SessionTakenOver),
            Exit::Shutdown => Some(DisconnectReasonCode::ServerShuttingDown),
            _ => None,
        };
        let goodbye = reason.filter(|_| self.v5());
        if let Some(reason_code) = goodbye {
            self.send(Packet::Disconnect(Disconnect { reason_code }, None));
        }
        let (io, out) = (&mut self.io, &self.out);
        let _ = tokio::time::timeout(LINGER, async {
            if !out.is_empty() {
                let _ = write_out(io, out).await;
            }
            // A WebSocket's close flushes its Close frame: a client that
            // stopped reading could hold it up.
            let _ = io.shutdown().await;
        })
        .await;
        self.state.release(exit);
        if goodbye.is_some() && !self.ctx().closing.load(Ordering::Acquire) {
            linger(&mut self.io).await;
        }
    }
}

/// Reads and discards what a client we said goodbye to still sends, for a
/// while: closing a socket with unread input resets it, and a reset can
/// destroy the DISCONNECT (and its reason) before the client reads it.
async fn linger<S: Transport>(io: &mut S) {
    let mut scratch = [0u8; IDLE_READ_BUFFER];
    let mut discarded = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while discarded < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

fn pubrec_reason(reason: PubAckReason) -> PubRecReason {
    match reason {
        PubAckReason::Success => PubRecReason::Success,
        PubAckReason::NoMatchingSubscribers => PubRecReason::NoMatchingSubscribers,
        PubAckReason::UnspecifiedError => PubRecReason::UnspecifiedError,
        PubAckReason::ImplementationSpecificError => PubRecReason::ImplementationSpecificError,
        PubAckReason::NotAuthorized => PubRecReason::NotAuthorized,
        PubAckReason::TopicNameInvalid => PubRecReason::TopicNameInvalid,
        PubAckReason::PacketIdentifierInUse => PubRecReason::PacketIdentifierInUse,
        PubAckReason::QuotaExceeded => PubRecReason::QuotaExceeded,
        PubAckReason::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
    }
}
