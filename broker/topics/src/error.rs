//! What can go wrong with topics and subscriptions, by who is at fault.

use tidewire_core::{CatalogError, ConfigError};
use tidewire_storage::StorageError;

/// A topic operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// A catalog change was refused or failed (a bad field, a name in
    /// use, a limit, a config definition; or the catalog file).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The message is over the topic's size limit (user input).
    #[error("the message is {size} bytes, more than topic {topic:?} takes ({max})")]
    TooLarge {
        topic: String,
        size: usize,
        max: usize,
    },
    /// The message cannot be published as it is (user input), e.g. a
    /// `Number` attribute that is not a number.
    #[error("{0}")]
    BadMessage(String),
    /// A webhook to subscribe cannot be reached (user input, or the
    /// network).
    #[error("{0}")]
    Unreachable(String),
    /// No pending subscription has this confirmation token (user input).
    #[error("no subscription of topic {topic:?} is waiting for this token")]
    BadToken { topic: String },
    /// The topic's log failed (external).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something else failed inside tidewire (external).
    #[error("{0}")]
    State(String),
}

impl TopicError {
    /// A bad field, named.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> TopicError {
        TopicError::Catalog(CatalogError::Invalid(ConfigError::new(key, message)))
    }

    /// True when the caller is at fault (a 4xx), false when tidewire or
    /// its disk is.
    pub fn is_user_error(&self) -> bool {
        match self {
            TopicError::Catalog(e) => e.is_user_error(),
            TopicError::Storage(StorageError::InvalidRecord(_)) => true,
            TopicError::Storage(_) | TopicError::State(_) => false,
            TopicError::TooLarge { .. }
            | TopicError::BadMessage(_)
            | TopicError::Unreachable(_)
            | TopicError::BadToken { .. } => true,
        }
    }
}

impl From<ConfigError> for TopicError {
    fn from(e: ConfigError) -> TopicError {
        TopicError::Catalog(CatalogError::Invalid(e))
    }
}
