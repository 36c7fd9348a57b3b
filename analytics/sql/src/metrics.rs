//! Prometheus metrics of the SQL engine.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: how a query ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok`, `invalid`, `rejected`, `memory`, `timeout`, `busy` or
    /// `error`.
    pub outcome: &'static str,
}

/// Every metric of this crate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlMetrics {
    /// Ad-hoc queries, by outcome.
    pub queries: Family<OutcomeLabel, Counter>,
    /// Plan-and-execute time of successful ad-hoc queries.
    pub query_seconds: Histogram,
    /// Ad-hoc queries planned from a cached plan.
    pub plan_cache_hits: Counter,
    /// Stream segments a scan read, after pruning.
    pub segments_scanned: Counter,
    /// Stream segment bytes a scan opened, after pruning.
    pub bytes_scanned: Counter,
    /// Records a scan decoded.
    pub records_scanned: Counter,
    /// Rows a scan read from column files instead of decoding records.
    pub column_rows_scanned: Counter,
    /// Column files built for sealed segments.
    pub column_files_built: Counter,
    /// Column files that failed to build or to read.
    pub column_file_errors: Counter,
    /// Windows a continuous query closed and emitted.
    pub windows_emitted: Counter,
    /// Records that arrived after their window had closed.
    pub late_records: Counter,
    /// Time to compute one closed window.
    pub window_seconds: Histogram,
    /// Queries (ad hoc and windows) running on the executor now.
    pub running: Gauge,
    /// Queries waiting for a turn on the executor now.
    pub waiting: Gauge,
}

impl SqlMetrics {
    /// Creates the metrics and registers them under `sql_`.
    pub fn register(registry: &mut Registry) -> SqlMetrics {
        let metrics = SqlMetrics {
            queries: Family::default(),
            query_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            plan_cache_hits: Counter::default(),
            segments_scanned: Counter::default(),
            bytes_scanned: Counter::default(),
            records_scanned: Counter::default(),
            column_rows_scanned: Counter::default(),
            column_files_built: Counter::default(),
            column_file_errors: Counter::default(),
            windows_emitted: Counter::default(),
            late_records: Counter::default(),
            window_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            running: Gauge::default(),
            waiting: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("tidewire_sql");
        r.register(
            "queries",
            "Ad-hoc SQL queries by outcome",
            metrics.queries.clone(),
        );
        r.register(
            "query_seconds",
            "Plan-and-execute time of successful queries",
            metrics.query_seconds.clone(),
        );
        r.register(
            "plan_cache_hits",
            "Ad-hoc queries planned from a cached plan (same SQL text as a recent query)",
            metrics.plan_cache_hits.clone(),
        );
        r.register(
            "segments_scanned",
            "Stream segments read by scans after pruning",
            metrics.segments_scanned.clone(),
        );
        r.register(
            "scanned_bytes",
            "Stream segment bytes opened by scans after pruning",
            metrics.bytes_scanned.clone(),
        );
        r.register(
            "scanned_records",
            "Records decoded by scans",
            metrics.records_scanned.clone(),
        );
        r.register(
            "column_rows_scanned",
            "Rows scans read from column files instead of decoding records",
            metrics.column_rows_scanned.clone(),
        );
        r.register(
            "column_files_built",
            "Column files built for sealed segments",
            metrics.column_files_built.clone(),
        );
        r.register(
            "column_file_errors",
            "Column files that failed to build or to read (scans then decode the records)",
            metrics.column_file_errors.clone(),
        );
        r.register(
            "windows_emitted",
            "Windows closed and emitted by continuous queries",
            metrics.windows_emitted.clone(),
        );
        r.register(
            "late_records",
            "Records that arrived after their window closed",
            metrics.late_records.clone(),
        );
        r.register(
            "window_seconds",
            "Time to compute one closed window",
            metrics.window_seconds.clone(),
        );
        r.register(
            "running",
            "Queries (ad hoc and continuous windows) running on the SQL executor",
            metrics.running.clone(),
        );
        r.register(
            "waiting",
            "Queries waiting for a turn on the SQL executor (sql.max_queued_queries at most)",
            metrics.waiting.clone(),
        );
        metrics
    }
}
