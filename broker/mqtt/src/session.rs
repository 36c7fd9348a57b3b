//! One client's session: its subscriptions, its bounded queue of messages
//! waiting to be sent, the QoS 1/2 messages in flight in both directions,
//! and its expiry. A session outlives its connection when it is persistent.
//!
//! Queue overflow policy (per session, `mqtt.max_queued_messages`): a QoS 0
//! message that finds the queue full is dropped; a QoS 1/2 message evicts
//! the oldest queued QoS 0 message, or is dropped when there is none. Every
//! drop is counted in `tidewire_mqtt_messages_dropped_total{reason,transport}`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tidewire_core::Message;
use tokio::sync::oneshot;

use crate::link::Link;
use crate::metrics::{DropReason, Drops, MqttMetrics, SessionKind};

/// Session Expiry Interval meaning "never expires".
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A subscription's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// Maximum QoS granted.
    pub qos: u8,
    /// MQTT 5 No Local: not sent messages this client published.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling: 0 send, 1 send if new, 2 don't send.
    pub retain_handling: u8,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<usize>,
}

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message as published.
    pub message: Arc<Message>,
    /// QoS it is delivered at: min(publish, subscription).
    pub qos: u8,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Identifiers of the client's subscriptions that matched.
    pub subscription_ids: Vec<usize>,
    /// When it expires (from the MQTT 5 Message Expiry Interval).
    pub expires_at: Option<Instant>,
}

impl Delivery {
    /// Seconds left before expiry, or `None` when it never expires;
    /// `Some(0)` once expired.
    pub fn remaining_secs(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            u32::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
        })
    }

    /// True once its expiry has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The expiry instant for a message published now with `secs` to live.
    pub fn expiry(secs: Option<u32>) -> Option<Instant> {
        secs.map(|s| Instant::now() + Duration::from_secs(u64::from(s)))
    }
}

/// A QoS 1/2 message sent and not yet fully acknowledged.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// What was sent.
    pub delivery: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    pub released: bool,
}

/// QoS 1/2 exchanges under way, in both directions. Allocated with the
/// first one and freed when the last one completes, so a session that
/// only waits carries none of it.
#[derive(Debug, Default)]
struct Exchanges {
    /// Sent, unacknowledged messages by packet id.
    inflight: BTreeMap<u16, Inflight>,
    /// Send order of in-flight packet ids (ids wrap, so BTreeMap order is
    /// not send order).
    inflight_order: VecDeque<u16>,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    awaiting_release: BTreeSet<u16>,
}

impl Exchanges {
    fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.awaiting_release.is_empty()
    }
}

/// A will waiting out its MQTT 5 Will Delay Interval. The client coming
/// back cancels it; the session ending first publishes it at once.
/// Dropping it (the server stopping) cancels it.
#[derive(Debug)]
pub struct DelayedWill(oneshot::Sender<bool>);

impl DelayedWill {
    /// A delayed will, and what its publisher waits on besides the delay:
    /// `Ok(true)` means due now; anything else, cancelled.
    pub fn new() -> (DelayedWill, oneshot::Receiver<bool>) {
        let (decide, decided) = oneshot::channel();
        (DelayedWill(decide), decided)
    }

    /// The client came back: the will is not published.
    pub fn cancel(self) {
        let _ = self.0.send(false);
    }

    /// The session ended: the will is published now.
    pub fn publish_now(self) {
        let _ = self.0.send(true);
    }
}

/// Mutable session state, behind the session's lock.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Subscriptions by full filter text (including any `$share/` prefix).
    pub subscriptions: BTreeMap<String, SubOptions>,
    /// Messages waiting to be sent.
    pub queue: VecDeque<Delivery>,
    exchanges: Option<Box<Exchanges>>,
    /// Session Expiry Interval in seconds; 0 ends the session with the
    /// connection, [`NEVER_EXPIRES`] keeps it forever.
    pub expiry_secs: u32,
    next_pkid: u16,
    /// When the session went offline; `None` while a connection has it.
    pub offline_since: Option<Instant>,
    /// The will of the last connection, waiting out its delay.
    pub pending_will: Option<DelayedWill>,
}

impl SessionState {
    fn exchanges(&mut self) -> &mut Exchanges {
        self.exchanges.get_or_insert_default()
    }

    /// Frees the exchanges once none is left.
    fn tidy(&mut self) {
        if self.exchanges.as_ref().is_some_and(|e| e.is_empty()) {
            self.exchanges = None;
        }
    }

    /// The next free packet id for an outgoing QoS 1/2 message.
    pub fn next_pkid(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            let taken = self
                .exchanges
                .as_ref()
                .is_some_and(|e| e.inflight.contains_key(&self.next_pkid));
            if !taken {
                return Some(self.next_pkid);
            }
        }
        None
    }

    /// Records a sent QoS 1/2 message.
    pub fn track(&mut self, pkid: u16, delivery: Delivery) {
        let exchanges = self.exchanges();
        let sent = Inflight {
            delivery,
            released: false,
        };
        if exchanges.inflight.insert(pkid, sent).is_none() {
            exchanges.inflight_order.push_back(pkid);
        }
    }

    /// Forgets an acknowledged message. Returns whether it was in flight.
    pub fn complete(&mut self, pkid: u16) -> bool {
        let Some(exchanges) = self.exchanges.as_mut() else {
            return false;
        };
        let known = exchanges.inflight.remove(&pkid).is_some();
        if known {
            exchanges.inflight_order.retain(|p| *p != pkid);
            self.tidy();
        }
        known
    }

    /// Marks an in-flight QoS 2 message as PUBREC'd (PUBREL sent).
    /// Returns whether it was in flight.
    pub fn mark_released(&mut self, pkid: u16) -> bool {
        let sent = self
            .exchanges
            .as_mut()
            .and_then(|e| e.inflight.get_mut(&pkid));
        sent.map(|i| i.released = true).is_some()
    }

    /// How many sent messages await their acknowledgement.
    pub fn inflight_count(&self) -> usize {
        self.exchanges.as_ref().map_or(0, |e| e.inflight.len())
    }

    /// In-flight messages in send order, for resending after a reconnect.
    pub fn inflight_in_order(&self) -> Vec<(u16, Inflight)> {
        let Some(exchanges) = &self.exchanges else {
            return Vec::new();
        };
        exchanges
            .inflight_order
            .iter()
            .filter_map(|p| exchanges.inflight.get(p).map(|i| (*p, i.clone())))
            .collect()
    }

    /// Notes a received QoS 2 message as PUBREC'd, awaiting PUBREL.
    /// Returns false if it was noted already.
    pub fn await_release(&mut self, pkid: u16) -> bool {
        self.exchanges().awaiting_release.insert(pkid)
    }

    /// True if the received QoS 2 message `pkid` awaits its PUBREL.
    pub fn awaits_release(&self, pkid: u16) -> bool {
        self.exchanges
            .as_ref()
            .is_some_and(|e| e.awaiting_release.contains(&pkid))
    }

    /// Takes a PUBREL for `pkid`. Returns whether one was awaited.
    pub fn release(&mut self, pkid: u16) -> bool {
        let Some(exchanges) = self.exchanges.as_mut() else {
            return false;
        };
        let known = exchanges.awaiting_release.remove(&pkid);
        self.tidy();
        known
    }

    /// Received QoS 2 packet ids awaiting PUBREL, in order.
    pub fn awaiting_release(&self) -> Vec<u16> {
        self.exchanges
            .as_ref()
            .map(|e| e.awaiting_release.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// What the sessions of one owner (the session table, or one `/ws`
/// socket) share.
#[derive(Debug)]
pub struct SessionCommon {
    /// The bound on each session's queue.
    pub max_queued: usize,
    drops: Drops,
    transport: SessionKind,
    /// Set whenever a session's state may have changed, so it gets saved.
    pub changed: AtomicBool,
}

impl SessionCommon {
    /// What MQTT sessions share.
    pub fn new(max_queued: usize, metrics: &MqttMetrics) -> Arc<SessionCommon> {
        SessionCommon::for_transport(max_queued, metrics, SessionKind::Mqtt)
    }

    /// Counts one message not delivered to a session.
    fn count_drop(&self, reason: DropReason) {
        self.drops.count(reason, self.transport);
    }

    fn for_transport(
        max_queued: usize,
        metrics: &MqttMetrics,
        transport: SessionKind,
    ) -> Arc<SessionCommon> {
        Arc::new(SessionCommon {
            max_queued,
            drops: metrics.dropped.clone(),
            transport,
            changed: AtomicBool::new(false),
        })
    }
}

/// A session, shared by its connection (while online), the router (which
/// queues messages into it) and the session table.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub client_id: String,
    state: Mutex<SessionState>,
    /// The task serving the session: woken when messages are queued, and
    /// when its connection is taken over, overdue or shut down.
    waker: AtomicWaker,
    /// Messages were queued since the server last looked.
    ready: AtomicBool,
    /// Which connection has the session, kept here so that an online
    /// session is one allocation.
    pub link: Link,
    common: Arc<SessionCommon>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: String, expiry_secs: u32, common: Arc<SessionCommon>) -> Session {
        Session {
            client_id,
            state: Mutex::new(SessionState {
                expiry_secs,
                ..SessionState::default()
            }),
            waker: AtomicWaker::new(),
            ready: AtomicBool::new(false),
            link: Link::default(),
            common,
        }
    }

    /// A session for one `/ws` socket: never saved, never expires on its
    /// own (the socket removes it), drops counted under its transport.
    pub fn for_websocket(client_id: String, max_queued: usize, metrics: &MqttMetrics) -> Session {
        let common = SessionCommon::for_transport(max_queued, metrics, SessionKind::WebSocketJson);
        Session::new(client_id, 0, common)
    }

    /// Locks the session state (and marks it as changed, for saving).
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.common.changed.store(true, Ordering::Relaxed);
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the session state without marking it as changed.
    pub fn inspect<R>(&self, read: impl FnOnce(&SessionState) -> R) -> R {
        read(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Tells the serving task that messages are waiting. Only the first
    /// notification since the task last looked wakes it.
    pub fn notify(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Wakes the serving task without news of messages, so it looks at its
    /// connection's state (taken over, overdue, shutting down).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Registers the serving task to be woken, and returns whether messages
    /// were queued since the last call. Only one task serves a session at a
    /// time.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        self.register(cx);
        self.ready.swap(false, Ordering::AcqRel)
    }

    /// Registers the serving task to be woken, leaving news of queued
    /// messages for [`Session::poll_ready`].
    pub fn register(&self, cx: &mut Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Waits until messages are queued.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if self.poll_ready(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Queues a delivery under the overflow policy and wakes the connection.
    /// Returns false when it was dropped.
    pub fn enqueue(&self, delivery: Delivery) -> bool {
        let common = &*self.common;
        let accepted = {
            let mut state = self.lock();
            if state.queue.len() < common.max_queued {
                state.queue.push_back(delivery);
                true
            } else if delivery.qos == 0 {
                common.count_drop(DropReason::QueueFullQos0);
                false
            } else if let Some(i) = state.queue.iter().position(|d| d.qos == 0) {
                state.queue.remove(i);
                common.count_drop(DropReason::QueueFullQos0);
                state.queue.push_back(delivery);
                true
            } else {
                common.count_drop(DropReason::QueueFull);
                false
            }
        };
        if accepted {
            self.notify();
        } else {
            tracing::debug!(client_id = %self.client_id, "session queue full; message dropped");
        }
        accepted
    }

    /// Takes up to `max` queued deliveries for a transport without acks
    /// (`/ws`), skipping (and counting) expired ones. Wakes the session
    /// again when more are left, so the caller comes back for them.
    pub fn take_ready(&self, max: usize) -> Vec<Delivery> {
        let now = Instant::now();
        let (batch, more) = {
            let mut state = self.lock();
            let n = state.queue.len().min(max);
            let batch: Vec<Delivery> = state.queue.drain(..n).collect();
            (batch, !state.queue.is_empty())
        };
        if more {
            self.notify();
        }
        batch
            .into_iter()
            .filter(|d| {
                let expired = d.expired(now);
                if expired {
                    self.common.count_drop(DropReason::Expired);
                }
                !expired
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: u8, tag: &str) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: tag.into(),
                ..Message::default()
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
            expires_at: None,
        }
    }

    #[test]
    fn overflow_drops_qos0_first() {
        let session = Session::new(
            "c".into(),
            0,
            SessionCommon::new(3, &MqttMetrics::default()),
        );
        assert!(session.enqueue(delivery(0, "a")));
        assert!(session.enqueue(delivery(1, "b")));
        assert!(session.enqueue(delivery(0, "c")));
        assert!(
            !session.enqueue(delivery(0, "d")),
            "QoS 0 is dropped when full"
        );
        assert!(
            session.enqueue(delivery(1, "e")),
            "QoS 1 evicts the oldest QoS 0"
        );
        assert!(session.enqueue(delivery(2, "f")));
        assert!(!session.enqueue(delivery(1, "g")), "no QoS 0 left to evict");
        let topics: Vec<String> = session
            .lock()
            .queue
            .iter()
            .map(|d| d.message.topic.clone())
            .collect();
        assert_eq!(topics, ["b", "e", "f"]);
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut state = SessionState::default();
        let first = state.next_pkid().expect("free id");
        assert_eq!(first, 1);
        state.track(first, delivery(1, "x"));
        state.track(2, delivery(1, "y"));
        assert_eq!(state.next_pkid(), Some(3));
        state.next_pkid = u16::MAX;
        assert_eq!(
            state.next_pkid(),
            Some(3),
            "wraps past 0 and the ids in flight"
        );
        assert!(state.complete(1));
        assert!(!state.complete(1));
        assert_eq!(state.inflight_in_order().len(), 1);
        assert!(state.complete(2));
        assert!(state.exchanges.is_none(), "freed with the last exchange");
    }
}
