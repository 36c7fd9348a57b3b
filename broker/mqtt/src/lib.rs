//! tidewire's MQTT 3.1.1 and 5.0 server: rumqttd's packet codecs with our
//! own session layer on top.
//!
//! A connection ([`connection`]) speaks either version on the same
//! listener ([`server`]), publishes through the core broker (so the ack
//! waits for durability), and receives messages that the [`fanout`] routes
//! through the subscription tree ([`router`]) into each [`session`]'s
//! bounded queue. Sessions outlive connections when persistent
//! ([`sessions`], saved by [`persist`]); retained messages are durable
//! ([`retained`]).

pub mod codec;
pub mod config;
pub mod connection;
pub mod error;
pub mod fanout;
mod link;
pub mod metrics;
mod park;
mod persist;
pub mod retained;
pub mod router;
pub mod server;
pub mod session;
pub mod sessions;

pub use config::{MqttConfig, MqttSettings};
pub use connection::{Context, SubscribeError, Transport};
pub use error::MqttError;
pub use server::MqttServer;
