//! MQTT metrics, one place for the crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QosLabel {
    pub qos: u8,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabel {
    pub reason: &'static str,
    pub transport: &'static str,
}

/// What a session delivers over: an MQTT connection (TCP or `/mqtt`), or
/// a socket of the WebSocket JSON protocol (`/ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// MQTT packets.
    Mqtt,
    /// `/ws` JSON frames.
    WebSocketJson,
}

impl SessionKind {
    fn label(self) -> &'static str {
        match self {
            SessionKind::Mqtt => "mqtt",
            SessionKind::WebSocketJson => "ws_json",
        }
    }
}

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session queue was full and the message was QoS 0.
    QueueFullQos0,
    /// The session queue was full of QoS 1/2 messages.
    QueueFull,
    /// The message expired before it could be delivered.
    Expired,
    /// Larger than the client's Maximum Packet Size.
    TooLargeForClient,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFullQos0 => "queue_full_qos0",
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLargeForClient => "too_large_for_client",
        }
    }
}

/// The MQTT metric families.
#[derive(Debug, Clone, Default)]
pub struct MqttMetrics {
    pub(crate) connections: Gauge,
    pub(crate) parked: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) refused: Family<ReasonLabel, Counter>,
    pub(crate) received: QosCounters,
    pub(crate) sent: QosCounters,
    pub(crate) dropped: Drops,
    pub(crate) denied: Family<ReasonLabel, Counter>,
    pub(crate) protocol_errors: Family<ReasonLabel, Counter>,
    pub(crate) sessions: Gauge,
    pub(crate) retained: Gauge,
    pub(crate) panics: Counter,
}

impl MqttMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> MqttMetrics {
        let m = MqttMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_mqtt");
        r.register(
            "connection_panics",
            "Connections ended by a panic in their task (a bug; the broker goes on)",
            m.panics.clone(),
        );
        r.register(
            "connections",
            "Open MQTT connections",
            m.connections.clone(),
        );
        r.register(
            "connections_parked",
            "Quiet MQTT connections waiting without a task of their own",
            m.parked.clone(),
        );
        r.register(
            "connections_accepted",
            "MQTT connections accepted",
            m.accepted.clone(),
        );
        r.register(
            "connections_refused",
            "MQTT connections refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "messages_received",
            "PUBLISH packets received, by QoS",
            m.received.family.clone(),
        );
        r.register(
            "messages_sent",
            "PUBLISH packets sent, by QoS",
            m.sent.family.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages not delivered to a subscriber, by reason and transport",
            m.dropped.0.clone(),
        );
        r.register(
            "denied",
            "Publishes and subscriptions refused by the ACL or limits, by reason",
            m.denied.clone(),
        );
        r.register(
            "protocol_errors",
            "Connections closed for a malformed or disallowed packet, by reason",
            m.protocol_errors.clone(),
        );
        r.register(
            "sessions",
            "Sessions, online and offline",
            m.sessions.clone(),
        );
        r.register("retained_messages", "Retained messages", m.retained.clone());
        m
    }

    pub(crate) fn dropped(&self, reason: DropReason, transport: SessionKind) {
        self.dropped.count(reason, transport);
    }

    pub(crate) fn count(family: &Family<ReasonLabel, Counter>, reason: &'static str) {
        family.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Undelivered messages, by reason and transport: the one metric a
/// session keeps a handle to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drops(Family<DropLabel, Counter>);

impl Drops {
    /// Counts one message not delivered.
    pub(crate) fn count(&self, reason: DropReason, transport: SessionKind) {
        self.0
            .get_or_create(&DropLabel {
                reason: reason.label(),
                transport: transport.label(),
            })
            .inc();
    }
}

/// A family of per-QoS counters with each QoS's counter resolved once, so
/// counting a packet is one atomic add, not a locked map lookup.
#[derive(Debug, Clone)]
pub(crate) struct QosCounters {
    family: Family<QosLabel, Counter>,
    by_qos: [Counter; 3],
}

impl Default for QosCounters {
    fn default() -> Self {
        let family = Family::<QosLabel, Counter>::default();
        let by_qos = [0, 1, 2].map(|qos| family.get_or_create(&QosLabel { qos }).clone());
        QosCounters { family, by_qos }
    }
}

impl QosCounters {
    /// Counts one packet at `qos`.
    pub(crate) fn inc(&self, qos: u8) {
        if let Some(counter) = self.by_qos.get(usize::from(qos)) {
            counter.inc();
        }
    }
}
