//! What a pump reports as it works: [`Report`], implemented by a bridge's
//! link board (`tidewire_bridge::LinkState`) and by [`DeliveryStatus`],
//! a ready-made board for consumers that have none of their own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tidewire_storage::StreamLog;

/// How far a consumer is behind its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// Records between the consumer's cursor and the stream's end.
    pub records: u64,
    /// Broker time between the newest record in the stream and the newest
    /// record the consumer has delivered, in ms; 0 when caught up. It
    /// grows while the target is down and records keep arriving, and
    /// stays put (it does not count wall-clock time) when nothing does.
    pub millis: u64,
}

impl Lag {
    /// The lag of a consumer at `cursor` whose newest delivered record
    /// had broker timestamp `delivered_ts` (none known: measured from
    /// the oldest record kept).
    pub fn of(log: &StreamLog, cursor: u64, delivered_ts: Option<i64>) -> Lag {
        let stats = log.stats();
        let records = stats.next_offset.saturating_sub(cursor);
        if records == 0 {
            return Lag::default();
        }
        let newest = stats.last_timestamp_ms.unwrap_or(i64::MIN);
        let behind = delivered_ts.or(stats.first_timestamp_ms).unwrap_or(newest);
        Lag {
            records,
            millis: u64::try_from(newest.saturating_sub(behind)).unwrap_or(0),
        }
    }
}

/// Where a pump reports its progress. Calls are cheap and never block
/// for long: they come from the delivery loop.
pub trait Report: Send + Sync {
    /// `n` records were accepted by the target.
    fn delivered(&self, n: u64);
    /// `n` records will never be delivered (retention overtook the cursor,
    /// or the target rejected them for good).
    fn lost(&self, n: u64);
    /// Something failed; `error` becomes the last error.
    fn error(&self, error: &str);
    /// The committed cursor, the broker timestamp of the newest record
    /// delivered (if known), and the lag they make.
    fn position(&self, cursor: u64, delivered_ts: Option<i64>, lag: Lag);
}

/// A consumer's figures, kept in memory.
#[derive(Debug, Default)]
pub struct DeliveryStatus {
    delivered: AtomicU64,
    lost: AtomicU64,
    failures: AtomicU64,
    cursor: AtomicU64,
    lag: Mutex<Lag>,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of a [`DeliveryStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// Records accepted by the target (repeats after a retry included).
    pub delivered: u64,
    /// Records that will never be delivered.
    pub lost: u64,
    /// Failures met.
    pub failures: u64,
    /// The committed cursor.
    pub cursor: u64,
    /// How far behind the stream's end it is.
    pub lag: Lag,
    /// The last failure.
    pub last_error: Option<String>,
}

impl DeliveryStatus {
    /// The figures now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let cursor = self.cursor.load(Ordering::Relaxed);
        StatusSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            cursor,
            lag: *self.lag.lock().unwrap_or_else(|p| p.into_inner()),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

impl Report for DeliveryStatus {
    fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    fn lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }

    fn error(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_owned());
    }

    fn position(&self, cursor: u64, _delivered_ts: Option<i64>, lag: Lag) {
        self.cursor.store(cursor, Ordering::Relaxed);
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}
