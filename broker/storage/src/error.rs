//! Storage errors, by who is at fault: the caller's input, the disk or
//! operating system, or a bug.

use std::path::PathBuf;

/// Why bytes on disk were rejected as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptReason {
    /// The length field is larger than any frame may be.
    BadLength,
    /// The CRC32C does not match.
    BadChecksum,
    /// The checksum matched but the body does not parse.
    BadBody,
}

impl std::fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CorruptReason::BadLength => "bad length",
            CorruptReason::BadChecksum => "CRC mismatch",
            CorruptReason::BadBody => "unparseable body",
        })
    }
}

/// Everything the storage engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The caller's record cannot be stored (user input).
    #[error("record rejected: {0}")]
    InvalidRecord(String),
    /// A read asked for something the stream does not have (user input).
    #[error("{0}")]
    OutOfRange(String),
    /// The operating system refused an operation (external).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Data on disk is damaged where it cannot be repaired by truncation
    /// (external).
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: CorruptReason,
    },
    /// The stream was closed by shutdown.
    #[error("stream {0} is closed")]
    Closed(String),
    /// A broken invariant: this is a bug in tidewire.
    #[error("internal error (a bug): {0}")]
    Internal(String),
    /// An fsync failed earlier. The stream accepts nothing more, because
    /// the kernel may have dropped dirty pages it can never write again.
    #[error("stream {stream} has failed and accepts no writes: {reason}")]
    Failed { stream: String, reason: String },
}

impl StorageError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl StorageError {
    /// The same error again, for each of several waiters on one operation.
    pub fn duplicate(&self) -> StorageError {
        match self {
            StorageError::InvalidRecord(m) => StorageError::InvalidRecord(m.clone()),
            StorageError::OutOfRange(m) => StorageError::OutOfRange(m.clone()),
            StorageError::Io {
                action,
                path,
                source,
            } => StorageError::Io {
                action,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StorageError::Corrupt {
                path,
                position,
                reason,
            } => StorageError::Corrupt {
                path: path.clone(),
                position: *position,
                reason: *reason,
            },
            StorageError::Closed(s) => StorageError::Closed(s.clone()),
            StorageError::Internal(m) => StorageError::Internal(m.clone()),
            StorageError::Failed { stream, reason } => StorageError::Failed {
                stream: stream.clone(),
                reason: reason.clone(),
            },
        }
    }
}

/// Storage results.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
