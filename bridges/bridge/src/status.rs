//! Live status of running bridges: what each bridge task writes as it
//! works ([`BridgeState`], [`LinkState`]) and the snapshot the API serves
//! ([`BridgeStatus`]). Counters are the Prometheus metrics themselves, so
//! `/metrics` and `GET /api/v1/bridges` never disagree.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tidewire_delivery::Lag;
use tidewire_storage::StreamLog;

use crate::metrics::{BridgeLabels, BridgeMetrics, LinkLabels};

/// The shortest interval a messages-per-second figure is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How a bridge's connection to its peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Connecting for the first time.
    Starting,
    /// Connected and working.
    Connected,
    /// Not connected; retrying with backoff. The status's `error` says why.
    Disconnected,
    /// Stopped by shutdown.
    Stopped,
}

/// Which way a link carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From a tidewire stream to the peer.
    Outbound,
    /// From the peer into tidewire.
    Inbound,
}

impl Direction {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// A snapshot of one bridge, as `GET /api/v1/bridges` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BridgeStatus {
    /// The bridge kind, e.g. `nats`.
    pub kind: &'static str,
    /// The bridge's configured name.
    pub name: String,
    /// Connection health.
    pub health: Health,
    /// Why the bridge is not connected, or the last connection-level error.
    pub error: Option<String>,
    /// Each link's figures.
    pub links: Vec<LinkStatus>,
}

/// A snapshot of one link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkStatus {
    /// Which way it carries messages.
    pub direction: Direction,
    /// Where it reads, e.g. `stream events, topics sensors/#`.
    pub from: String,
    /// Where it writes, e.g. `subject edge.node1.>`.
    pub to: String,
    /// Messages delivered.
    pub messages: u64,
    /// Messages delivered per second, measured between snapshots.
    pub messages_per_sec: f64,
    /// Errors met.
    pub errors: u64,
    /// Messages that could never be delivered (counted, never silent).
    pub lost: u64,
    /// Outbound: the next stream offset to send (the committed cursor).
    pub cursor: Option<u64>,
    /// Outbound: stream offsets behind the stream's end.
    pub lag: Option<u64>,
    /// Outbound: broker time between the stream's newest record and the
    /// newest one delivered, in seconds (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// The link's last error, if any.
    pub last_error: Option<String>,
}

/// The live state of one bridge, shared by its task and the API.
#[derive(Debug)]
pub struct BridgeState {
    kind: &'static str,
    name: String,
    connection: Mutex<(Health, Option<String>)>,
    connected: Gauge,
    links: Vec<Arc<LinkState>>,
}

impl BridgeState {
    /// A bridge's state board, starting in [`Health::Starting`], with one
    /// link board per `(direction, from, to)`.
    pub fn new(
        kind: &'static str,
        name: &str,
        links: impl IntoIterator<Item = (Direction, String, String)>,
        metrics: &BridgeMetrics,
    ) -> Arc<BridgeState> {
        let bridge_labels = BridgeLabels {
            kind: kind.to_owned(),
            bridge: name.to_owned(),
        };
        let mut index = [0usize; 2];
        let links = links
            .into_iter()
            .map(|(direction, from, to)| {
                let slot = &mut index[direction as usize];
                let labels = LinkLabels {
                    kind: kind.to_owned(),
                    bridge: name.to_owned(),
                    direction: direction.label().to_owned(),
                    link: slot.to_string(),
                };
                *slot += 1;
                Arc::new(LinkState {
                    direction,
                    from,
                    to,
                    messages: metrics.messages.get_or_create(&labels).clone(),
                    errors: metrics.errors.get_or_create(&labels).clone(),
                    lost: metrics.lost.get_or_create(&labels).clone(),
                    lag: metrics.lag.get_or_create(&labels).clone(),
                    lag_seconds: metrics.lag_seconds.get_or_create(&labels).clone(),
                    detail: Mutex::default(),
                })
            })
            .collect();
        Arc::new(BridgeState {
            kind,
            name: name.to_owned(),
            connection: Mutex::new((Health::Starting, None)),
            connected: metrics.connected.get_or_create(&bridge_labels).clone(),
            links,
        })
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link boards, in the order given to [`BridgeState::new`].
    pub fn links(&self) -> &[Arc<LinkState>] {
        &self.links
    }

    /// Records the connection's health and why.
    pub fn set_health(&self, health: Health, error: Option<String>) {
        self.connected.set(i64::from(health == Health::Connected));
        *lock(&self.connection) = (health, error);
    }

    /// Records an error reported by the peer while keeping the health,
    /// such as a permissions violation on a live connection.
    pub fn note_error(&self, error: String) {
        lock(&self.connection).1 = Some(error);
    }

    /// The current health.
    pub fn health(&self) -> Health {
        lock(&self.connection).0
    }

    /// A snapshot for the API.
    pub fn snapshot(&self) -> BridgeStatus {
        let (health, error) = lock(&self.connection).clone();
        BridgeStatus {
            kind: self.kind,
            name: self.name.clone(),
            health,
            error,
            links: self.links.iter().map(|l| l.snapshot()).collect(),
        }
    }
}

/// The live state of one link.
#[derive(Debug)]
pub struct LinkState {
    direction: Direction,
    from: String,
    to: String,
    messages: Counter,
    errors: Counter,
    lost: Counter,
    lag: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    detail: Mutex<LinkDetail>,
}

#[derive(Debug, Default)]
struct LinkDetail {
    cursor: Option<u64>,
    delivered_ts: Option<i64>,
    last_error: Option<String>,
    rate: Option<(Instant, u64, f64)>,
}

impl LinkState {
    /// Counts `n` delivered messages.
    pub fn delivered(&self, n: u64) {
        self.messages.inc_by(n);
    }

    /// Counts an error and keeps its text as the link's last error.
    pub fn error(&self, error: impl ToString) {
        self.errors.inc();
        lock(&self.detail).last_error = Some(error.to_string());
    }

    /// Counts `n` messages lost for good.
    pub fn lost(&self, n: u64) {
        self.lost.inc_by(n);
    }

    /// Records an outbound link's committed cursor, the timestamp of the
    /// newest record it delivered, and its lag.
    pub fn set_position(&self, cursor: u64, delivered_ts: Option<i64>, lag: Lag) {
        let mut detail = lock(&self.detail);
        detail.cursor = Some(cursor);
        detail.delivered_ts = delivered_ts;
        self.set_lag(lag);
    }

    /// Recomputes an outbound link's lag from the stream `log` it reads,
    /// for while its pump is not running (the peer is unreachable).
    pub fn refresh_lag(&self, log: &StreamLog) {
        let (cursor, delivered_ts) = {
            let detail = lock(&self.detail);
            (detail.cursor, detail.delivered_ts)
        };
        if let Some(cursor) = cursor {
            self.set_lag(Lag::of(log, cursor, delivered_ts));
        }
    }

    fn set_lag(&self, lag: Lag) {
        self.lag.set(i64::try_from(lag.records).unwrap_or(i64::MAX));
        self.lag_seconds.set(lag.millis as f64 / 1000.0);
    }

    /// Messages delivered so far.
    pub fn messages(&self) -> u64 {
        self.messages.get()
    }

    fn snapshot(&self) -> LinkStatus {
        let messages = self.messages.get();
        let now = Instant::now();
        let mut detail = lock(&self.detail);
        let rate = match detail.rate {
            Some((at, _, rate)) if now.duration_since(at) < RATE_WINDOW => rate,
            Some((at, count, _)) => {
                let rate =
                    messages.saturating_sub(count) as f64 / now.duration_since(at).as_secs_f64();
                detail.rate = Some((now, messages, rate));
                rate
            }
            None => {
                detail.rate = Some((now, messages, 0.0));
                0.0
            }
        };
        let outbound = self.direction == Direction::Outbound;
        LinkStatus {
            direction: self.direction,
            from: self.from.clone(),
            to: self.to.clone(),
            messages,
            messages_per_sec: rate,
            errors: self.errors.get(),
            lost: self.lost.get(),
            cursor: detail.cursor,
            lag: outbound.then(|| u64::try_from(self.lag.get()).unwrap_or(0)),
            lag_seconds: outbound.then(|| self.lag_seconds.get()),
            last_error: detail.last_error.clone(),
        }
    }
}

/// A delivery pump reports an outbound link's progress straight onto the
/// link's board.
impl tidewire_delivery::Report for LinkState {
    fn delivered(&self, n: u64) {
        LinkState::delivered(self, n);
    }

    fn lost(&self, n: u64) {
        LinkState::lost(self, n);
    }

    fn error(&self, error: &str) {
        LinkState::error(self, error);
    }

    fn position(&self, cursor: u64, delivered_ts: Option<i64>, lag: Lag) {
        self.set_position(cursor, delivered_ts, lag);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_counters_and_health() {
        let metrics = BridgeMetrics::default();
        let state = BridgeState::new(
            "nats",
            "uplink",
            [
                (Direction::Outbound, "a".to_owned(), "b".to_owned()),
                (Direction::Inbound, "c".to_owned(), "d".to_owned()),
            ],
            &metrics,
        );
        assert_eq!(state.health(), Health::Starting);
        state.set_health(Health::Disconnected, Some("connection refused".into()));
        let out = &state.links()[0];
        out.delivered(5);
        out.error("boom");
        out.lost(2);
        out.set_position(
            10,
            Some(1_000),
            Lag {
                records: 5,
                millis: 2_500,
            },
        );
        let snapshot = state.snapshot();
        assert_eq!(snapshot.health, Health::Disconnected);
        assert_eq!(snapshot.error.as_deref(), Some("connection refused"));
        let link = &snapshot.links[0];
        assert_eq!(
            (link.messages, link.errors, link.lost, link.cursor, link.lag),
            (5, 1, 2, Some(10), Some(5))
        );
        assert_eq!(link.lag_seconds, Some(2.5));
        assert_eq!(link.last_error.as_deref(), Some("boom"));
        assert_eq!(snapshot.links[1].lag, None);
        assert_eq!(snapshot.links[1].direction, Direction::Inbound);
        state.set_health(Health::Connected, None);
        state.note_error("server error: permissions violation".into());
        let snapshot = state.snapshot();
        assert_eq!(snapshot.health, Health::Connected);
        assert!(snapshot.error.is_some_and(|e| e.contains("permissions")));
    }
}
