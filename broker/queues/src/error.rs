//! Why a queue operation was refused, in the terms SQS uses, so each front
//! door can answer with its own shape (an SQS error code, an HTTP status).

use tidewire_core::CatalogError;
use tidewire_storage::StorageError;

/// A refused or failed queue operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No queue has that name (user input).
    #[error("the queue {0:?} does not exist")]
    NotFound(String),
    /// The receipt handle is malformed, from another queue, or not the
    /// message's latest receive (user input).
    #[error(
        "the receipt handle {0:?} is not valid (malformed, or not the latest receive of its message)"
    )]
    InvalidReceiptHandle(String),
    /// Change visibility on a message that is not in flight (user input).
    #[error("the message is not in flight")]
    NotInFlight,
    /// A parameter is missing or has a bad value (user input).
    #[error("{name}: {message}")]
    InvalidParameter { name: String, message: String },
    /// A message over the queue's size limit (user input).
    #[error("the message is {size} bytes, more than the queue's limit of {max}")]
    TooLarge { size: usize, max: u64 },
    /// Too many messages in flight: delete some first (user input).
    #[error(
        "the queue has {0} messages in flight, the most it allows; delete or release some first"
    )]
    OverLimit(usize),
    /// A batch with too many or no entries, or repeated ids (user input).
    #[error("{0}")]
    InvalidBatch(String),
    /// A definition change was refused or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The queue's logs could not take the change (external).
    #[error("queue storage: {0}")]
    Storage(#[from] StorageError),
    /// The queue's consumer state could not be read (external).
    #[error("queue state: {0}")]
    State(String),
}

impl QueueError {
    /// A bad parameter.
    pub fn invalid(name: &str, message: impl Into<String>) -> QueueError {
        QueueError::InvalidParameter {
            name: name.to_owned(),
            message: message.into(),
        }
    }

    /// True when the caller was at fault (a 4xx), false when the broker
    /// or its disk was.
    pub fn is_user_error(&self) -> bool {
        match self {
            QueueError::Catalog(e) => e.is_user_error(),
            QueueError::Storage(StorageError::InvalidRecord(_)) => true,
            QueueError::Storage(_) | QueueError::State(_) => false,
            _ => true,
        }
    }
}
