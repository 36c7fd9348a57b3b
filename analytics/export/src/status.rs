//! What an export reports: its pump's position and lag ([`Report`]), the
//! files and bytes written, records exported, losses, the last error and
//! when the next flush is due, kept in step with the Prometheus series
//! `tidewire_export_*` ([`ExportMetrics`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tidewire_delivery::{Lag, PumpBoard, Report};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabel {
    export: String,
}

/// The export metric families.
#[derive(Debug, Clone, Default)]
pub struct ExportMetrics {
    records: Family<ExportLabel, Counter>,
    files: Family<ExportLabel, Counter>,
    bytes: Family<ExportLabel, Counter>,
    lost: Family<ExportLabel, Counter>,
    failures: Family<ExportLabel, Counter>,
    lag_records: Family<ExportLabel, Gauge>,
    lag_seconds: Family<ExportLabel, Gauge>,
}

impl ExportMetrics {
    /// Creates the families and registers them under `tidewire_export_`.
    pub fn register(registry: &mut Registry) -> ExportMetrics {
        let m = ExportMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_export");
        r.register("records", "Records written to files", m.records.clone());
        r.register("files", "Parquet files completed", m.files.clone());
        r.register("bytes", "Bytes of Parquet files completed", m.bytes.clone());
        r.register(
            "lost",
            "Records retention deleted before they were exported",
            m.lost.clone(),
        );
        r.register(
            "failures",
            "Flushes that failed and will be retried",
            m.failures.clone(),
        );
        r.register(
            "lag_records",
            "Records of the stream not yet in a completed file",
            m.lag_records.clone(),
        );
        r.register(
            "lag_seconds",
            "Broker time between the stream's newest record and the newest exported",
            m.lag_seconds.clone(),
        );
        m
    }

    /// The board of export `name`.
    pub fn status(&self, name: &str) -> ExportStatus {
        let label = ExportLabel {
            export: name.to_owned(),
        };
        ExportStatus {
            records: self.records.get_or_create(&label).clone(),
            files: self.files.get_or_create(&label).clone(),
            bytes: self.bytes.get_or_create(&label).clone(),
            failures: self.failures.get_or_create(&label).clone(),
            pump: PumpBoard::new(
                self.lost.get_or_create(&label).clone(),
                self.lag_records.get_or_create(&label).clone(),
                self.lag_seconds.get_or_create(&label).clone(),
            ),
            next_flush_ms: AtomicI64::new(0),
            last_file: Mutex::default(),
        }
    }

    /// Drops an export's series (it was deleted).
    pub fn remove(&self, name: &str) {
        let label = ExportLabel {
            export: name.to_owned(),
        };
        for family in [
            &self.records,
            &self.files,
            &self.bytes,
            &self.lost,
            &self.failures,
        ] {
            family.remove(&label);
        }
        self.lag_records.remove(&label);
        self.lag_seconds.remove(&label);
    }
}

/// One export's figures.
#[derive(Debug)]
pub struct ExportStatus {
    records: Counter,
    files: Counter,
    bytes: Counter,
    failures: Counter,
    /// Its pump's cursor, lag, losses and last error.
    pump: PumpBoard,
    next_flush_ms: AtomicI64,
    last_file: Mutex<Option<String>>,
}

/// A snapshot of an [`ExportStatus`], as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusSnapshot {
    /// Records written to files (again after a crash included).
    pub records: u64,
    /// Files completed.
    pub files: u64,
    /// Bytes of files completed.
    pub bytes: u64,
    /// Records lost to retention before they were exported.
    pub lost: u64,
    /// Flushes that failed.
    pub failures: u64,
    /// Records not yet in a completed file.
    pub lag_records: u64,
    /// The lag in seconds of broker time.
    pub lag_seconds: f64,
    /// The next offset to export.
    pub cursor: u64,
    /// When the buffered records are flushed at the latest, ms since the
    /// epoch; none when nothing is buffered.
    pub next_flush_ts: Option<i64>,
    /// The last file completed.
    pub last_file: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
}

impl ExportStatus {
    /// The figures now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let lag = self.pump.lag();
        let next = self.next_flush_ms.load(Ordering::Relaxed);
        StatusSnapshot {
            records: self.records.get(),
            files: self.files.get(),
            bytes: self.bytes.get(),
            lost: self.pump.lost_count(),
            failures: self.failures.get(),
            lag_records: lag.records,
            lag_seconds: lag.millis as f64 / 1000.0,
            cursor: self.pump.cursor(),
            next_flush_ts: (next > 0).then_some(next),
            last_file: self
                .last_file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_error: self.pump.last_error(),
        }
    }

    /// A file of `records` records and `bytes` bytes was completed.
    pub fn wrote(&self, file: &str, records: u64, bytes: u64) {
        self.files.inc();
        self.records.inc_by(records);
        self.bytes.inc_by(bytes);
        *self.last_file.lock().unwrap_or_else(|p| p.into_inner()) = Some(file.to_owned());
    }

    /// A flush failed with `reason`; it is retried.
    pub fn failed(&self, reason: &str) {
        self.failures.inc();
        self.error(reason);
    }

    /// The buffered records are due at `ms` (0: nothing buffered).
    pub fn next_flush(&self, ms: i64) {
        self.next_flush_ms.store(ms, Ordering::Relaxed);
    }
}

impl Report for ExportStatus {
    /// Files are counted as they are completed ([`ExportStatus::wrote`]).
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
