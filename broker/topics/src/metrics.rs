//! Fan-out metrics: messages published per topic, and per subscription the
//! deliveries, failures, retries, dead letters, losses and lag.
//! [`SubscriptionStatus`] is one subscription's board: the pump reports
//! to it ([`Report`]), the sink counts retries and dead letters, and it
//! keeps the Prometheus series and the API's figures in step.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tidewire_delivery::{Lag, PumpBoard, Report};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabel {
    topic: String,
    subscription: String,
}

/// The fan-out metric families.
#[derive(Debug, Clone, Default)]
pub struct TopicMetrics {
    published: Family<TopicLabel, Counter>,
    delivered: Family<SubscriptionLabel, Counter>,
    failed: Family<SubscriptionLabel, Counter>,
    retries: Family<SubscriptionLabel, Counter>,
    dead_lettered: Family<SubscriptionLabel, Counter>,
    lost: Family<SubscriptionLabel, Counter>,
    lag_records: Family<SubscriptionLabel, Gauge>,
    lag_seconds: Family<SubscriptionLabel, Gauge>,
}

impl TopicMetrics {
    /// Creates the families and registers them under `tidewire_topic_`
    /// and `tidewire_subscription_`.
    pub fn register(registry: &mut Registry) -> TopicMetrics {
        let m = TopicMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_topic");
        r.register(
            "published",
            "Messages a fan-out topic took",
            m.published.clone(),
        );
        let r = registry.sub_registry_with_prefix("tidewire_subscription");
        r.register(
            "delivered",
            "Messages a subscription's target accepted",
            m.delivered.clone(),
        );
        r.register("failed", "Delivery attempts that failed", m.failed.clone());
        r.register(
            "retries",
            "Delivery attempts repeated under the delivery policy",
            m.retries.clone(),
        );
        r.register(
            "dead_lettered",
            "Messages sent to the subscription's dead letters",
            m.dead_lettered.clone(),
        );
        r.register(
            "lost",
            "Messages never delivered: retention overtook them, or the target refused them with no dead letters",
            m.lost.clone(),
        );
        r.register(
            "lag_records",
            "Messages of the topic not yet delivered to the subscription",
            m.lag_records.clone(),
        );
        r.register(
            "lag_seconds",
            "Broker time between the topic's newest message and the newest delivered",
            m.lag_seconds.clone(),
        );
        m
    }

    /// The published counter of `topic`.
    pub fn published(&self, topic: &str) -> Counter {
        self.published
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .clone()
    }

    /// A board for subscription `name` of `topic`.
    pub fn subscription(&self, topic: &str, name: &str) -> SubscriptionStatus {
        let label = SubscriptionLabel {
            topic: topic.to_owned(),
            subscription: name.to_owned(),
        };
        SubscriptionStatus {
            delivered: self.delivered.get_or_create(&label).clone(),
            failed: self.failed.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&label).clone(),
            pump: PumpBoard::new(
                self.lost.get_or_create(&label).clone(),
                self.lag_records.get_or_create(&label).clone(),
                self.lag_seconds.get_or_create(&label).clone(),
            ),
        }
    }

    /// Drops a subscription's series (it was deleted).
    pub fn remove_subscription(&self, topic: &str, name: &str) {
        let label = SubscriptionLabel {
            topic: topic.to_owned(),
            subscription: name.to_owned(),
        };
        for family in [
            &self.delivered,
            &self.failed,
            &self.retries,
            &self.dead_lettered,
            &self.lost,
        ] {
            family.remove(&label);
        }
        self.lag_records.remove(&label);
        self.lag_seconds.remove(&label);
    }

    /// Drops a topic's series (it was deleted).
    pub fn remove_topic(&self, topic: &str) {
        self.published.remove(&TopicLabel {
            topic: topic.to_owned(),
        });
    }
}

/// One subscription's figures.
#[derive(Debug)]
pub struct SubscriptionStatus {
    delivered: Counter,
    failed: Counter,
    retries: Counter,
    dead_lettered: Counter,
    /// Its pump's cursor, lag, losses and last error.
    pump: PumpBoard,
}

/// A snapshot of a [`SubscriptionStatus`], as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusSnapshot {
    /// Messages the target accepted (repeats after a retry included).
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Attempts repeated under the delivery policy.
    pub retries: u64,
    /// Messages sent to the dead letters.
    pub dead_lettered: u64,
    /// Messages never delivered.
    pub lost: u64,
    /// Messages not yet delivered (the lag in records).
    pub pending: u64,
    /// The lag in seconds of broker time.
    pub lag_seconds: f64,
    /// The next offset of the topic's log to deliver.
    pub cursor: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

impl SubscriptionStatus {
    /// The figures now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let lag = self.pump.lag();
        StatusSnapshot {
            delivered: self.delivered.get(),
            failed: self.failed.get(),
            retries: self.retries.get(),
            dead_lettered: self.dead_lettered.get(),
            lost: self.pump.lost_count(),
            pending: lag.records,
            lag_seconds: lag.millis as f64 / 1000.0,
            cursor: self.pump.cursor(),
            last_error: self.pump.last_error(),
        }
    }

    /// An attempt failed with `reason` (it may be retried).
    pub fn failed(&self, reason: &str) {
        self.failed.inc();
        self.pump.error(reason);
    }

    /// The target took a message.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// An attempt is repeated under the delivery policy.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// A message went to the dead letters.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }
}

impl Report for SubscriptionStatus {
    /// The pump counts every message it could commit past, dead letters
    /// included; deliveries are counted by the sink instead
    /// ([`SubscriptionStatus::delivered`]).
    fn delivered(&self, _n: u64) {}

    fn lost(&self, n: u64) {
        self.pump.lost(n);
    }

    fn error(&self, error: &str) {
        self.pump.error(error);
    }

    fn position(&self, cursor: u64, _delivered_ts: Option<i64>, lag: Lag) {
        self.pump.position(cursor, lag);
    }
}
