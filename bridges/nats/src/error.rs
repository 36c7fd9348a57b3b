//! Why a link stopped working for now, by who is at fault. Every one of
//! them ends the bridge's session: it reconnects with backoff and resumes
//! from the committed cursor (outbound) or the unacknowledged messages
//! (inbound).

use tidewire_core::PublishError;
use tidewire_delivery::DeliveryError;

/// A link failure.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// NATS or JetStream refused or did not answer (external).
    #[error("nats: {what}: {message}")]
    Nats { what: &'static str, message: String },
    /// Outbound delivery stopped: NATS did not take a record (external),
    /// the stream or cursor could not be read or written (external: disk),
    /// or a helper task died (internal bug).
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// Storing an inbound message in tidewire failed (external: disk, or
    /// shutdown).
    #[error("storing inbound message: {0}")]
    Store(#[source] PublishError),
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
