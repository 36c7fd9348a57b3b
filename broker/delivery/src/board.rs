//! [`PumpBoard`]: the figures every consumer with a board of its own (an
//! export, a subscription) keeps of its pump, in step with its Prometheus
//! series: the committed cursor, the lag, the records lost and the last
//! error. Such a board holds one, adds its own counters, and passes the
//! pump's reports ([`crate::Report`]) on to it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::status::Lag;

/// What a pump reports, kept for a consumer's board.
#[derive(Debug)]
pub struct PumpBoard {
    lost: Counter,
    lag_records: Gauge,
    lag_seconds: Gauge,
    cursor: AtomicU64,
    lag: Mutex<Lag>,
    last_error: Mutex<Option<String>>,
}

impl PumpBoard {
    /// A board that counts losses in `lost` and shows the lag in
    /// `lag_records` and `lag_seconds` (series of the consumer's own).
    pub fn new(lost: Counter, lag_records: Gauge, lag_seconds: Gauge) -> PumpBoard {
        PumpBoard {
            lost,
            lag_records,
            lag_seconds,
            cursor: AtomicU64::new(0),
            lag: Mutex::default(),
            last_error: Mutex::default(),
        }
    }

    /// Records lost so far.
    pub fn lost_count(&self) -> u64 {
        self.lost.get()
    }

    /// The committed cursor.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// How far behind the stream's end the cursor is.
    pub fn lag(&self) -> Lag {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `n` records will never be delivered.
    pub fn lost(&self, n: u64) {
        self.lost.inc_by(n);
    }

    /// Something failed; `error` becomes the last error.
    pub fn error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_owned());
    }

    /// The committed cursor and the lag it makes.
    pub fn position(&self, cursor: u64, lag: Lag) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.lag_records
            .set(i64::try_from(lag.records).unwrap_or(i64::MAX));
        self.lag_seconds
            .set(i64::try_from(lag.millis / 1000).unwrap_or(i64::MAX));
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    use super::PumpBoard;
    use crate::status::Lag;

    #[test]
    fn keeps_the_figures_and_the_series_in_step() {
        let (lost, records, seconds) = (Counter::default(), Gauge::default(), Gauge::default());
        let board = PumpBoard::new(lost.clone(), records.clone(), seconds.clone());
        board.lost(3);
        board.error("target down");
        let lag = Lag {
            records: 7,
            millis: 2_500,
        };
        board.position(40, lag);
        assert_eq!((board.lost_count(), lost.get()), (3, 3));
        assert_eq!(board.cursor(), 40);
        assert_eq!(board.lag(), lag);
        assert_eq!((records.get(), seconds.get()), (7, 2));
        assert_eq!(board.last_error().as_deref(), Some("target down"));
    }
}
