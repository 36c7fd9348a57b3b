//! Broker-core metrics: messages accepted and refused on the shared publish
//! path, by ingest source.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of publish counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    pub source: &'static str,
}

/// Labels of refused-publish counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabel {
    pub source: &'static str,
    pub reason: &'static str,
}

/// The publish-path metric families.
#[derive(Debug, Clone, Default)]
pub struct PublishMetrics {
    pub(crate) accepted: Family<SourceLabel, Counter>,
    pub(crate) rejected: Family<RejectLabel, Counter>,
}

impl PublishMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> PublishMetrics {
        let m = PublishMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_publish");
        r.register(
            "accepted_messages",
            "Messages accepted on the publish path",
            m.accepted.clone(),
        );
        r.register(
            "rejected_messages",
            "Messages refused on the publish path, by reason",
            m.rejected.clone(),
        );
        m
    }
}
