//! Why a link stopped working for now, by who is at fault. Every one of
//! them ends the bridge's session: it reconnects with backoff and resumes
//! from the committed cursor (outbound) or the unacknowledged messages
//! (inbound).

use tidewire_core::{PublishError, StorageError};

/// A link failure.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// NATS or JetStream refused or did not answer (external).
    #[error("nats: {what}: {message}")]
    Nats { what: &'static str, message: String },
    /// The tidewire stream could not be read (external: disk).
    #[error("reading stream {stream}: {source}")]
    Read {
        stream: String,
        #[source]
        source: StorageError,
    },
    /// Storing an inbound message in tidewire failed (external: disk, or
    /// shutdown).
    #[error("storing inbound message: {0}")]
    Store(#[source] PublishError),
    /// The cursor file could not be written (external: disk).
    #[error("cursor {path}: {source}")]
    Cursor {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking helper task died (internal bug).
    #[error("internal error (a bug): {0}")]
    Internal(String),
}

impl LinkError {
    /// A NATS-side failure while doing `what`.
    pub fn nats(what: &'static str, error: impl std::fmt::Display) -> LinkError {
        LinkError::Nats {
            what,
            message: error.to_string(),
        }
    }
}
