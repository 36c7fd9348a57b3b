//! Errors of the broker core, by who is at fault.

use tidewire_storage::StorageError;

use crate::topic::TopicError;

/// A config value that is not valid (user input). `key` is the path of the
/// offending key, such as `streams[1].fsync`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The dotted path of the key.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

impl ConfigError {
    /// A config error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The topic name is not valid (user input).
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The payload is over the configured limit (user input).
    #[error("payload is {size} bytes, more than the limit of {max}")]
    PayloadTooLarge { size: usize, max: usize },
    /// The message was stored, but keeping it as the topic's retained
    /// message failed (external: the disk).
    #[error("storing the retained message: {0}")]
    Retained(#[source] StorageError),
    /// A stream could not store the message (external, or shutdown).
    #[error("stream {stream}: {source}")]
    Storage {
        stream: String,
        #[source]
        source: StorageError,
    },
    /// A queue fed by the topic refused the message (user input, e.g. over
    /// its size limit) or could not store it (external).
    #[error("queue {queue}: {message}")]
    Queue {
        queue: String,
        message: String,
        client_error: bool,
    },
    /// A fan-out topic fed by the topic refused the message (user input,
    /// e.g. over its size limit) or could not store it (external).
    #[error("topic {topic}: {message}")]
    Topic {
        topic: String,
        message: String,
        client_error: bool,
    },
}

/// Why a publish was refused, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Bad topic name.
    InvalidTopic,
    /// Payload over the limit.
    PayloadTooLarge,
    /// Storage could not take it.
    Storage,
    /// A queue refused it.
    Queue,
    /// A fan-out topic refused it.
    Topic,
}

impl RejectReason {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::InvalidTopic => "invalid_topic",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::Storage => "storage",
            RejectReason::Queue => "queue",
            RejectReason::Topic => "topic",
        }
    }
}

impl PublishError {
    /// The metric reason for this refusal.
    pub fn reason(&self) -> RejectReason {
        match self {
            PublishError::InvalidTopic(_) => RejectReason::InvalidTopic,
            PublishError::PayloadTooLarge { .. } => RejectReason::PayloadTooLarge,
            PublishError::Storage { .. } | PublishError::Retained(_) => RejectReason::Storage,
            PublishError::Queue { .. } => RejectReason::Queue,
            PublishError::Topic { .. } => RejectReason::Topic,
        }
    }

    /// True when the publisher sent something invalid, as opposed to the
    /// broker failing to store it.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            PublishError::InvalidTopic(_)
                | PublishError::PayloadTooLarge { .. }
                | PublishError::Queue {
                    client_error: true,
                    ..
                }
                | PublishError::Topic {
                    client_error: true,
                    ..
                }
        ) || matches!(
            self,
            PublishError::Storage {
                source: StorageError::InvalidRecord(_),
                ..
            }
        )
    }
}
