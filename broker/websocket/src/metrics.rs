//! WebSocket metrics, one place for the crate. Messages a `/ws` socket's
//! full queue drops are counted by the MQTT router, in
//! `tidewire_mqtt_messages_dropped_total{transport="ws_json"}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub kind: &'static str,
}

/// The WebSocket metric families.
#[derive(Debug, Clone, Default)]
pub struct WsMetrics {
    pub(crate) connections: Family<EndpointLabel, Gauge>,
    pub(crate) refused: Family<KindLabel, Counter>,
    pub(crate) received: Family<KindLabel, Counter>,
    pub(crate) sent: Family<KindLabel, Counter>,
    pub(crate) errors: Family<KindLabel, Counter>,
    pub(crate) closed: Family<KindLabel, Counter>,
    pub(crate) panics: Counter,
}

impl WsMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> WsMetrics {
        let m = WsMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_ws");
        r.register(
            "socket_panics",
            "/ws sockets ended by a panic in their task (a bug; the broker goes on)",
            m.panics.clone(),
        );
        r.register(
            "connections",
            "Open WebSocket connections, by endpoint (mqtt, json)",
            m.connections.clone(),
        );
        r.register(
            "refused",
            "WebSocket upgrades refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "frames_received",
            "/ws frames received, by op",
            m.received.clone(),
        );
        r.register("frames_sent", "/ws frames sent, by type", m.sent.clone());
        r.register(
            "errors",
            "/ws requests answered with an error frame, by kind",
            m.errors.clone(),
        );
        r.register(
            "closed",
            "/ws sockets closed by the server, by reason",
            m.closed.clone(),
        );
        m
    }

    pub(crate) fn count(family: &Family<KindLabel, Counter>, kind: &'static str) {
        family.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn connections(&self, endpoint: &'static str) -> Gauge {
        self.connections
            .get_or_create(&EndpointLabel { endpoint })
            .clone()
    }
}
