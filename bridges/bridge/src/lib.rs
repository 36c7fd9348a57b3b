//! The shape every tidewire bridge shares (NATS today; Kafka, HTTP and
//! others later): a typed, validated config that starts itself
//! ([`BridgeConfig`]), the running set ([`Bridges`]), a live status board
//! per bridge and per link ([`BridgeState`]), the Prometheus metrics behind
//! it ([`BridgeMetrics`]) and the `GET /api/v1/bridges` API ([`api`]).

pub mod api;
pub mod error;
pub mod metrics;
pub mod registry;
pub mod status;

pub use error::BridgeError;
pub use metrics::BridgeMetrics;
pub use registry::{BridgeConfig, BridgeContext, Bridges, Running, validate_kind};
pub use status::{BridgeState, BridgeStatus, Direction, Health, LinkState, LinkStatus};
