//! What a pump reports as it works: [`Report`], implemented by a bridge's
//! link board (`tidewire_bridge::LinkState`) and by [`DeliveryStatus`],
//! a ready-made board for consumers that have none of their own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The committed cursor and the stream's end (their difference is
    /// the lag in records).
    fn position(&self, cursor: u64, stream_end: u64);
}

/// A consumer's figures, kept in memory.
#[derive(Debug, Default)]
pub struct DeliveryStatus {
    delivered: AtomicU64,
    lost: AtomicU64,
    failures: AtomicU64,
    cursor: AtomicU64,
    stream_end: AtomicU64,
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
    /// Records between the cursor and the stream's end.
    pub lag: u64,
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
            lag: self
                .stream_end
                .load(Ordering::Relaxed)
                .saturating_sub(cursor),
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

    fn position(&self, cursor: u64, stream_end: u64) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.stream_end.store(stream_end, Ordering::Relaxed);
    }
}
