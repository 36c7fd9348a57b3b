//! Errors of the MQTT server, by who is at fault.

use std::net::SocketAddr;

use tidewire_core::StorageError;

/// Why the MQTT server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The listener could not be bound (external, or the port is in use).
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The retained store could not be opened (external).
    #[error("opening retained messages: {0}")]
    Retained(#[from] StorageError),
    /// Saved sessions could not be read (external).
    #[error("loading saved sessions from {path}: {source}")]
    Sessions {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A bug: a task the server depends on failed.
    #[error("internal error (a bug): {0}")]
    Internal(String),
}
