//! Broker-core metrics: messages accepted and refused on the shared publish
//! path, by ingest source.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::source::Source;

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
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    accepted: Family<SourceLabel, Counter>,
    /// `accepted`'s counter for each [`Source`], resolved once so that
    /// counting a publish is one atomic add, not a locked map lookup.
    accepted_by_source: [Counter; Source::ALL.len()],
    pub(crate) rejected: Family<RejectLabel, Counter>,
}

impl Default for PublishMetrics {
    fn default() -> Self {
        let accepted = Family::<SourceLabel, Counter>::default();
        let accepted_by_source = Source::ALL.map(|source| {
            accepted
                .get_or_create(&SourceLabel {
                    source: source.label(),
                })
                .clone()
        });
        PublishMetrics {
            accepted,
            accepted_by_source,
            rejected: Family::default(),
        }
    }
}

impl PublishMetrics {
    /// The accepted-messages counter of `source`.
    pub(crate) fn accepted(&self, source: Source) -> &Counter {
        &self.accepted_by_source[source as usize]
    }

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
