//! Storage metrics, one place for the whole crate. Every series carries a
//! `stream` label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label set of every storage series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The storage metric families, registered once per process.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    records: Family<StreamLabel, Counter>,
    bytes: Family<StreamLabel, Counter>,
    fsyncs: Family<StreamLabel, Counter>,
    append_latency: Family<StreamLabel, Histogram, fn() -> Histogram>,
    commit_batch: Family<StreamLabel, Histogram, fn() -> Histogram>,
    retained_bytes: Family<StreamLabel, Gauge>,
    segments: Family<StreamLabel, Gauge>,
    deleted_segments: Family<StreamLabel, Counter>,
    truncated_bytes: Family<StreamLabel, Counter>,
}

impl StorageMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> StorageMetrics {
        let m = StorageMetrics {
            records: Family::default(),
            bytes: Family::default(),
            fsyncs: Family::default(),
            append_latency: Family::new_with_constructor(latency_histogram),
            commit_batch: Family::new_with_constructor(batch_histogram),
            retained_bytes: Family::default(),
            segments: Family::default(),
            deleted_segments: Family::default(),
            truncated_bytes: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("tidewire_stream");
        r.register("records", "Records appended", m.records.clone());
        r.register("bytes", "Bytes appended, framing included", m.bytes.clone());
        r.register(
            "fsyncs",
            "fdatasync calls on segment files",
            m.fsyncs.clone(),
        );
        r.register(
            "append_latency_seconds",
            "Time from append request to durable acknowledgement",
            m.append_latency.clone(),
        );
        r.register(
            "commit_batch_records",
            "Records made durable by one write and fdatasync (group commit)",
            m.commit_batch.clone(),
        );
        r.register(
            "retained_bytes",
            "Bytes of records in segments (the active segment's file also holds up to 1 MiB of preallocated zeros)",
            m.retained_bytes.clone(),
        );
        r.register("segments", "Segment files on disk", m.segments.clone());
        r.register(
            "retention_deleted_segments",
            "Segments deleted by retention",
            m.deleted_segments.clone(),
        );
        r.register(
            "recovery_truncated_bytes",
            "Bytes of torn or damaged tail cut off at recovery",
            m.truncated_bytes.clone(),
        );
        m
    }

    /// The handles for one stream.
    pub(crate) fn for_stream(&self, stream: &str) -> StreamMetrics {
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        StreamMetrics {
            records: self.records.get_or_create(&label).clone(),
            bytes: self.bytes.get_or_create(&label).clone(),
            fsyncs: self.fsyncs.get_or_create(&label).clone(),
            append_latency: self.append_latency.get_or_create(&label).clone(),
            commit_batch: self.commit_batch.get_or_create(&label).clone(),
            retained_bytes: self.retained_bytes.get_or_create(&label).clone(),
            segments: self.segments.get_or_create(&label).clone(),
            deleted_segments: self.deleted_segments.get_or_create(&label).clone(),
            truncated_bytes: self.truncated_bytes.get_or_create(&label).clone(),
        }
    }

    /// Drops a deleted stream's series, so `/metrics` stops showing it (a
    /// stream created again under the name starts from zero).
    pub fn forget_stream(&self, stream: &str) {
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        self.records.remove(&label);
        self.bytes.remove(&label);
        self.fsyncs.remove(&label);
        self.append_latency.remove(&label);
        self.commit_batch.remove(&label);
        self.retained_bytes.remove(&label);
        self.segments.remove(&label);
        self.deleted_segments.remove(&label);
        self.truncated_bytes.remove(&label);
    }
}

/// One stream's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct StreamMetrics {
    pub records: Counter,
    pub bytes: Counter,
    pub fsyncs: Counter,
    pub append_latency: Histogram,
    pub commit_batch: Histogram,
    pub retained_bytes: Gauge,
    pub segments: Gauge,
    pub deleted_segments: Counter,
    pub truncated_bytes: Counter,
}
