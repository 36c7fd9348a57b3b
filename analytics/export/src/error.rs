//! What can go wrong with exports, by who is at fault.

use tidewire_core::{CatalogError, ConfigError};

/// An export operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A catalog change was refused or failed (a bad field, a name in
    /// use, a limit, a config definition; or the catalog file).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Something failed inside tidewire or on its disk (external).
    #[error("{0}")]
    State(String),
}

impl ExportError {
    /// True when the caller is at fault (a 4xx).
    pub fn is_user_error(&self) -> bool {
        match self {
            ExportError::Catalog(e) => e.is_user_error(),
            ExportError::State(_) => false,
        }
    }
}

impl From<ConfigError> for ExportError {
    fn from(e: ConfigError) -> ExportError {
        ExportError::Catalog(CatalogError::Invalid(e))
    }
}
