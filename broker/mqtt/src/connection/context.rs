//! What every connection shares ([`Context`]: the publish path,
//! subscriptions, sessions, retained messages, settings, metrics), and
//! admission: a connection takes a [`ConnectionSlot`] under
//! `max_connections` or is refused with a CONNACK, and is tracked so
//! shutdown can wait for it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttd::protocol::{ConnAck, ConnectReturnCode, Packet};
use tidewire_core::Broker;
use tidewire_core::topic::TopicFilter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::parking::{Park, Quiet, park};
use super::{Transport, serve, write_out};
use crate::codec::{self, Codec, Version};
use crate::config::MqttSettings;
use crate::metrics::MqttMetrics;
use crate::park::ParkingLot;
use crate::retained::{RetainedStore, now_ms};
use crate::router::{Router, parse_filter};
use crate::session::{Delivery, Session, SubOptions};
use crate::sessions::SessionTable;
use tidewire_auth::{Acl, Peer};
use tidewire_core::panics::contain;
use tidewire_tls::{Tls, TlsStream};

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
    /// Where quiet TCP and TLS connections wait without a task; `None` if
    /// the poller could not be set up (they keep their tasks then).
    pub(super) parking: Option<ParkingLot<Quiet>>,
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
        peer: Option<Peer>,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.admit_with(io, peer, None)
    }

    /// [`Context::admit`] for a TCP connection, which parks while quiet.
    pub(crate) fn admit_tcp(
        self: Arc<Self>,
        stream: TcpStream,
    ) -> impl Future<Output = ()> + Send + 'static {
        let peer = stream.peer_addr().ok().map(|a| Peer {
            address: a.ip().to_canonical(),
            listener_on_loopback: self.settings.listen.ip().is_loopback(),
        });
        self.admit_with(stream, peer, Some(park::<TcpStream> as Park<TcpStream>))
    }

    /// [`Context::admit`] for a connection to the TLS listener: it takes
    /// its place under `max_connections` before the handshake (so a storm
    /// of half-open handshakes is capped like connections are), then runs
    /// the handshake within its deadline. A connection over the cap is
    /// closed at once: no CONNACK can be sent before TLS. Like a TCP
    /// connection, it parks while quiet, keeping only its TLS session.
    pub(crate) fn admit_tls(
        self: Arc<Self>,
        stream: TcpStream,
        tls: Tls,
    ) -> impl Future<Output = ()> + Send + 'static {
        let listener_on_loopback =
            (self.settings.tls.as_ref()).is_some_and(|(listen, _)| listen.ip().is_loopback());
        let peer = stream.peer_addr().ok().map(|a| Peer {
            address: a.ip().to_canonical(),
            listener_on_loopback,
        });
        let tracked = self.connections.token();
        async move {
            let Some(mut slot) = ConnectionSlot::take(&self, tracked, peer) else {
                tracing::warn!("connection limit reached; closing a TLS connection");
                return;
            };
            let Some(accepted) = tls.accept_stream(stream, "mqtts").await else {
                return;
            };
            if tls.identity_as_username() {
                slot.certificate_user = accepted.identity;
            }
            let park = park::<TlsStream<TcpStream>> as Park<TlsStream<TcpStream>>;
            contain(
                "MQTT connection",
                &self.metrics.panics,
                serve(accepted.stream, slot, Some(park)),
            )
            .await;
        }
    }

    fn admit_with<S: Transport>(
        self: Arc<Self>,
        io: S,
        peer: Option<Peer>,
        park: Option<Park<S>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let tracked = self.connections.token();
        async move {
            match ConnectionSlot::take(&self, tracked, peer) {
                Some(slot) => {
                    contain(
                        "MQTT connection",
                        &self.metrics.panics,
                        serve(io, slot, park),
                    )
                    .await;
                }
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
        Ok(retained_due(
            options.retain_handling,
            existed,
            parsed.group.is_some(),
        ))
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

    /// Shutdown has started: connections say goodbye and close.
    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stops tracking new connections and waits up to `deadline` for the
    /// open ones to end. Returns false when some did not.
    pub(crate) async fn drain(&self, deadline: Duration) -> bool {
        self.connections.close();
        tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok()
    }

    pub(super) fn assign_client_id(&self) -> String {
        let n = self.assigned_ids.fetch_add(1, Ordering::Relaxed);
        format!("tw-{:x}-{n}", now_ms())
    }
}

/// Whether a subscription gets the retained messages that match it, by its
/// Retain Handling (0: on every subscribe, 1: only when it is new, 2:
/// never). A shared subscription gets none.
fn retained_due(retain_handling: u8, existed: bool, shared: bool) -> bool {
    let due = match retain_handling {
        0 => true,
        1 => !existed,
        _ => false,
    };
    due && !shared
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

/// A connection's place under `max_connections`, and its handle on the
/// context, held from admission to the end, parked or not: it counts in
/// the open connections gauge, and shutdown waits for it.
#[derive(Debug)]
pub(super) struct ConnectionSlot {
    pub(super) ctx: Arc<Context>,
    /// Where the client connected from, when the transport knows.
    pub(super) peer: Option<Peer>,
    /// The user its verified TLS client certificate names, when
    /// `tls.identity_as_username` is on.
    pub(super) certificate_user: Option<String>,
    _tracked: TaskTrackerToken,
}

impl ConnectionSlot {
    /// Takes a place for a new connection, if one is free.
    fn take(ctx: &Arc<Context>, tracked: TaskTrackerToken, peer: Option<Peer>) -> Option<Self> {
        // The place goes back in `drop`, so the slot needs no permit of
        // its own.
        ctx.slots.try_acquire().ok()?.forget();
        ctx.metrics.connections.inc();
        Some(ConnectionSlot {
            ctx: Arc::clone(ctx),
            peer,
            certificate_user: None,
            _tracked: tracked,
        })
    }
}

#[cfg(test)]
impl ConnectionSlot {
    /// A slot for a connection that a unit test drives by hand.
    pub(super) fn for_test(ctx: &Arc<Context>) -> Option<Self> {
        let loopback = Peer {
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            listener_on_loopback: true,
        };
        Self::take(ctx, ctx.connections.token(), Some(loopback))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.ctx.metrics.connections.dec();
        self.ctx.slots.add_permits(1);
    }
}

/// The CONNACK code for "try again later" in `version`.
pub(super) fn busy(version: Version) -> ConnectReturnCode {
    match version {
        Version::V311 => ConnectReturnCode::ServiceUnavailable,
        Version::V5 => ConnectReturnCode::ServerBusy,
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{TestContext, count};
    use super::*;

    fn options(retain_handling: u8, no_local: bool) -> SubOptions {
        SubOptions {
            qos: 1,
            no_local,
            retain_as_published: false,
            retain_handling,
            id: None,
        }
    }

    #[test]
    fn try_again_later_has_a_code_in_each_version() {
        assert_eq!(busy(Version::V311), ConnectReturnCode::ServiceUnavailable);
        assert_eq!(busy(Version::V5), ConnectReturnCode::ServerBusy);
    }

    #[test]
    fn retain_handling_decides_when_retained_messages_are_sent() {
        // (retain handling, subscription existed, shared) -> due
        let cases = [
            (0, false, false, true),
            (0, true, false, true),
            (1, false, false, true),
            (1, true, false, false),
            (2, false, false, false),
            (2, true, false, false),
            (0, false, true, false),
            (1, false, true, false),
        ];
        for (handling, existed, shared, due) in cases {
            assert_eq!(
                retained_due(handling, existed, shared),
                due,
                "retain handling {handling}, existed {existed}, shared {shared}"
            );
        }
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_get_no_slot_until_one_ends() {
        let test = TestContext::new("max_connections = 2");
        let ctx = &test.ctx;
        let first = ConnectionSlot::for_test(ctx).expect("first slot");
        let second = ConnectionSlot::for_test(ctx).expect("second slot");
        assert!(ConnectionSlot::for_test(ctx).is_none(), "over the cap");
        assert_eq!(ctx.metrics.connections.get(), 2);
        drop(first);
        assert_eq!(ctx.metrics.connections.get(), 1);
        let third = ConnectionSlot::for_test(ctx).expect("a slot freed by the first");
        assert_eq!(ctx.metrics.connections.get(), 2);
        drop((second, third));
        assert_eq!(ctx.metrics.connections.get(), 0);
    }

    #[tokio::test]
    async fn shutdown_waits_for_connections_holding_a_slot() {
        let test = TestContext::new("");
        let ctx = &test.ctx;
        let slot = ConnectionSlot::for_test(ctx).expect("slot");
        assert!(!ctx.is_closing());
        ctx.shut_down();
        assert!(ctx.is_closing());
        assert!(
            !ctx.drain(Duration::from_millis(20)).await,
            "a slot is held"
        );
        drop(slot);
        assert!(ctx.drain(Duration::from_secs(5)).await, "no slot is held");
    }

    #[tokio::test]
    async fn subscribe_checks_the_filter_and_the_acl_and_reports_retained_due() {
        let test = TestContext::new(
            r##"
            [anonymous]
            publish = ["#"]
            subscribe = ["sensors/#"]
            "##,
        );
        let ctx = &test.ctx;
        let session = ctx.sessions.attach("subscriber", true, 0).await.session;
        let acl = ctx
            .settings
            .auth
            .anonymous(true, tidewire_auth::Door::Mqtt)
            .expect("anonymous clients allowed")
            .acl("subscriber");

        assert_eq!(
            ctx.subscribe(&session, &acl, "sensors/#/x", options(0, false)),
            Err(SubscribeError::InvalidFilter)
        );
        assert_eq!(
            ctx.subscribe(&session, &acl, "$share/g/sensors/a", options(0, true)),
            Err(SubscribeError::InvalidFilter),
            "a shared subscription with No Local"
        );
        assert_eq!(count(&ctx.metrics.denied, "invalid_filter"), 2);
        assert_eq!(
            ctx.subscribe(&session, &acl, "alarms/#", options(0, false)),
            Err(SubscribeError::NotAuthorized)
        );
        assert_eq!(count(&ctx.metrics.denied, "subscribe_acl"), 1);

        assert_eq!(
            ctx.subscribe(&session, &acl, "sensors/+", options(1, false)),
            Ok(true),
            "new"
        );
        assert_eq!(
            ctx.subscribe(&session, &acl, "sensors/+", options(1, false)),
            Ok(false),
            "existing, retain handling 1"
        );
        assert_eq!(
            ctx.subscribe(&session, &acl, "$share/g/sensors/a", options(0, false)),
            Ok(false),
            "shared"
        );
        let subscribed = session.inspect(|s| s.subscriptions.len());
        assert_eq!(subscribed, 2);

        assert!(ctx.unsubscribe(&session, "sensors/+"));
        assert!(!ctx.unsubscribe(&session, "sensors/+"), "already gone");
        assert_eq!(session.inspect(|s| s.subscriptions.len()), 1);
    }

    #[tokio::test]
    async fn assigned_client_ids_are_distinct_and_marked_as_ours() {
        let test = TestContext::new("");
        let (a, b) = (test.ctx.assign_client_id(), test.ctx.assign_client_id());
        assert!(a.starts_with("tw-") && b.starts_with("tw-"), "{a} {b}");
        assert_ne!(a, b);
    }
}
