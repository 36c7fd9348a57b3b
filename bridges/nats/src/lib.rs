//! The NATS bridge: tidewire streams -> NATS subjects (core or JetStream,
//! at least once from a durable cursor) and NATS subjects -> tidewire
//! (core subscriptions or JetStream durable pull consumers, acknowledged
//! once durable).
//!
//! Layout: [`config`] (`[[bridge.nats]]` and its validation), [`mapping`]
//! (topic <-> subject rules), [`headers`] (MQTT 5 properties <-> headers),
//! [`connection`] (connect and session end), [`outbound`] (the outbound
//! links: a `tidewire_delivery` sink, on that crate's cursor and pump),
//! [`inbound`] (the inbound links), [`publisher`] (the bridge as a
//! fan-out target, `nats:BRIDGE/SUBJECT`), and `bridge` (the
//! [`tidewire_bridge::BridgeConfig`] impl and the reconnecting task).
//!
//! Loop prevention: messages bridged in are stored with the client id
//! `$nats:<bridge name>` ([`client_id`]); outbound links skip every record
//! whose client id starts with `$nats:` ([`is_from_nats`]), so nothing
//! that came from NATS goes back to it, whichever bridge brought it in.

mod bridge;
pub mod config;
pub mod connection;
pub mod error;
pub mod headers;
pub mod inbound;
pub mod mapping;
pub mod outbound;
pub mod publisher;

pub use config::{NatsBridge, NatsBridgeConfig};
pub use error::LinkError;
pub use publisher::Publisher;

/// The bridge kind, as in `[[bridge.nats]]`, metrics and the API.
pub const KIND: &str = "nats";

/// Client ids of messages bridged in from NATS start with this.
pub const CLIENT_ID_PREFIX: &str = "$nats:";

/// The client id messages bridged in by `bridge` are stored with.
pub fn client_id(bridge: &str) -> String {
    format!("{CLIENT_ID_PREFIX}{bridge}")
}

/// True when `message` was bridged in from NATS.
pub fn is_from_nats(message: &tidewire_core::Message) -> bool {
    message.client_id.starts_with(CLIENT_ID_PREFIX)
}
