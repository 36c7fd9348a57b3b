//! Fan-out metrics: messages published per topic, and per subscription the
//! deliveries, failures, retries, dead letters, losses and lag.
//! [`SubscriptionStatus`] is one subscription's board: the pump reports
//! to it ([`Report`]), the sink counts retries and dead letters, and it
//! keeps the Prometheus series and the API's figures in step.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tidewire_delivery::{Lag, Report};

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
            lost: self.lost.get_or_create(&label).clone(),
            lag_records: self.lag_records.get_or_create(&label).clone(),
            lag_seconds: self.lag_seconds.get_or_create(&label).clone(),
            cursor: AtomicU64::new(0),
            lag: Mutex::default(),
            last_error: Mutex::default(),
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
    lost: Counter,
    lag_records: Gauge,
    lag_seconds: Gauge,
    cursor: AtomicU64,
    lag: Mutex<Lag>,
    last_error: Mutex<Option<String>>,
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
        let lag = *self.lag.lock().unwrap_or_else(|p| p.into_inner());
        StatusSnapshot {
            delivered: self.delivered.get(),
            failed: self.failed.get(),
            retries: self.retries.get(),
            dead_lettered: self.dead_lettered.get(),
            lost: self.lost.get(),
            pending: lag.records,
            lag_seconds: lag.millis as f64 / 1000.0,
            cursor: self.cursor.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// An attempt failed with `reason` (it may be retried).
    pub fn failed(&self, reason: &str) {
        self.failed.inc();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
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
        self.lost.inc_by(n);
    }

    fn error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_owned());
    }

    fn position(&self, cursor: u64, _delivered_ts: Option<i64>, lag: Lag) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.lag_records
            .set(i64::try_from(lag.records).unwrap_or(i64::MAX));
        self.lag_seconds
            .set(i64::try_from(lag.millis / 1000).unwrap_or(i64::MAX));
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}
