//! Bridge metrics, one family set for every bridge kind, labelled by
//! bridge kind, bridge name, link and direction.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-bridge metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BridgeLabels {
    /// The bridge kind, e.g. `nats`.
    pub kind: String,
    /// The bridge's configured name.
    pub bridge: String,
}

/// Labels of per-link metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    /// The bridge kind, e.g. `nats`.
    pub kind: String,
    /// The bridge's configured name.
    pub bridge: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// The link's position in its direction's list, from 0.
    pub link: String,
}

/// The bridge metric families.
#[derive(Debug, Clone, Default)]
pub struct BridgeMetrics {
    pub(crate) connected: Family<BridgeLabels, Gauge>,
    pub(crate) messages: Family<LinkLabels, Counter>,
    pub(crate) errors: Family<LinkLabels, Counter>,
    pub(crate) lost: Family<LinkLabels, Counter>,
    pub(crate) lag: Family<LinkLabels, Gauge>,
    pub(crate) lag_seconds: Family<LinkLabels, Gauge<f64, AtomicU64>>,
}

impl BridgeMetrics {
    /// Creates the families and registers them under `tidewire_bridge_`.
    pub fn register(registry: &mut Registry) -> BridgeMetrics {
        let m = BridgeMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_bridge");
        r.register(
            "connected",
            "1 while the bridge is connected to its peer, else 0",
            m.connected.clone(),
        );
        r.register(
            "messages",
            "Messages a bridge link has delivered (acknowledged by the other side)",
            m.messages.clone(),
        );
        r.register(
            "errors",
            "Errors a bridge link has met (failed sends, unmappable messages, ...)",
            m.errors.clone(),
        );
        r.register(
            "lost_messages",
            "Messages a bridge link could never deliver, e.g. dropped by retention before being sent",
            m.lost.clone(),
        );
        r.register(
            "lag_offsets",
            "Stream offsets an outbound link is behind the stream's end",
            m.lag.clone(),
        );
        r.register(
            "lag_seconds",
            "Broker time between a stream's newest record and the newest one its outbound link delivered",
            m.lag_seconds.clone(),
        );
        m
    }
}
