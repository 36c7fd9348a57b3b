//! Why a pump stopped, by who is at fault.

use std::path::PathBuf;

use tidewire_storage::StorageError;

use crate::sink::SinkError;

/// A delivery failure. The pump can be run again: it resumes from the
/// committed cursor.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The target did not take a record (external: the target).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The stream could not be read (external: disk).
    #[error("reading stream {stream}: {source}")]
    Read {
        stream: String,
        #[source]
        source: StorageError,
    },
    /// The cursor file could not be read or written (external: disk).
    #[error("cursor {path}: {source}")]
    Cursor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking helper task died (internal bug).
    #[error("internal error (a bug): {0}")]
    Internal(String),
}
