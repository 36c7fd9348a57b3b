//! Queue metrics, labelled by queue: depth by state, age of the oldest
//! message, and counters of sends, receives, deletes, redeliveries,
//! dead-letter moves, duplicates and expiries.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabel {
    queue: String,
    state: &'static str,
}

/// The queue metric families.
#[derive(Debug, Clone, Default)]
pub struct QueueMetrics {
    depth: Family<DepthLabel, Gauge>,
    oldest_age: Family<QueueLabel, Gauge>,
    sent: Family<QueueLabel, Counter>,
    received: Family<QueueLabel, Counter>,
    redelivered: Family<QueueLabel, Counter>,
    deleted: Family<QueueLabel, Counter>,
    dead_lettered: Family<QueueLabel, Counter>,
    deduplicated: Family<QueueLabel, Counter>,
    expired: Family<QueueLabel, Counter>,
}

/// One queue's metrics, resolved once.
#[derive(Debug, Clone)]
pub struct Counters {
    pub visible: Gauge,
    pub in_flight: Gauge,
    pub delayed: Gauge,
    pub oldest_age_seconds: Gauge,
    pub sent: Counter,
    pub received: Counter,
    pub redelivered: Counter,
    pub deleted: Counter,
    pub dead_lettered: Counter,
    pub deduplicated: Counter,
    pub expired: Counter,
}

impl QueueMetrics {
    /// Creates the families and registers them under `tidewire_queue_`.
    pub fn register(registry: &mut Registry) -> QueueMetrics {
        let m = QueueMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_queue");
        r.register(
            "messages",
            "Messages in a queue, by state (visible, in_flight, delayed)",
            m.depth.clone(),
        );
        r.register(
            "oldest_message_age_seconds",
            "Age of the oldest message in a queue",
            m.oldest_age.clone(),
        );
        r.register("sent_messages", "Messages sent to a queue", m.sent.clone());
        r.register(
            "received_messages",
            "Messages handed to consumers",
            m.received.clone(),
        );
        r.register(
            "redelivered_messages",
            "Receives of a message received before",
            m.redelivered.clone(),
        );
        r.register(
            "deleted_messages",
            "Messages deleted by consumers",
            m.deleted.clone(),
        );
        r.register(
            "dead_lettered_messages",
            "Messages moved to the dead-letter queue",
            m.dead_lettered.clone(),
        );
        r.register(
            "deduplicated_messages",
            "FIFO sends dropped as duplicates",
            m.deduplicated.clone(),
        );
        r.register(
            "expired_messages",
            "Messages dropped by retention before anyone deleted them",
            m.expired.clone(),
        );
        m
    }

    /// The series of `queue`.
    pub fn for_queue(&self, queue: &str) -> Counters {
        let label = QueueLabel {
            queue: queue.to_owned(),
        };
        let depth = |state| {
            self.depth
                .get_or_create(&DepthLabel {
                    queue: queue.to_owned(),
                    state,
                })
                .clone()
        };
        Counters {
            visible: depth("visible"),
            in_flight: depth("in_flight"),
            delayed: depth("delayed"),
            oldest_age_seconds: self.oldest_age.get_or_create(&label).clone(),
            sent: self.sent.get_or_create(&label).clone(),
            received: self.received.get_or_create(&label).clone(),
            redelivered: self.redelivered.get_or_create(&label).clone(),
            deleted: self.deleted.get_or_create(&label).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&label).clone(),
            deduplicated: self.deduplicated.get_or_create(&label).clone(),
            expired: self.expired.get_or_create(&label).clone(),
        }
    }

    /// Drops the series of a deleted queue.
    pub fn remove(&self, queue: &str) {
        let label = QueueLabel {
            queue: queue.to_owned(),
        };
        for state in ["visible", "in_flight", "delayed"] {
            self.depth.remove(&DepthLabel {
                queue: queue.to_owned(),
                state,
            });
        }
        for family in [
            &self.sent,
            &self.received,
            &self.redelivered,
            &self.deleted,
            &self.dead_lettered,
            &self.deduplicated,
            &self.expired,
        ] {
            family.remove(&label);
        }
        self.oldest_age.remove(&label);
    }
}
