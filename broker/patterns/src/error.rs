//! Why a pattern or an event was refused. Every variant is the caller's
//! input at fault (a bad filter policy, a bad message attribute); nothing
//! here is an internal error.

/// A refused pattern, naming where in it the problem is and why.
///
/// The path is the pattern's field path with `$or[i]` for the `i`-th
/// branch of an `$or` (`detail.$or[1].temp`); it is empty when the problem
/// is the whole pattern (not an object, too many combinations).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is not well-formed: a wrong type, an unknown operator,
    /// an empty list, a malformed range or CIDR (user input).
    #[error("{}", located(path, reason))]
    Invalid {
        /// Where in the pattern.
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// The pattern is well-formed but over one of the [`Limits`](crate::Limits)
    /// (user input).
    #[error("{}", located(path, reason))]
    TooComplex {
        /// Where in the pattern the limit was passed.
        path: String,
        /// Which limit.
        reason: String,
    },
}

impl PatternError {
    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> PatternError {
        PatternError::Invalid {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn too_complex(path: &str, reason: impl Into<String>) -> PatternError {
        PatternError::TooComplex {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// Where in the pattern the problem is (empty for the whole pattern).
    pub fn path(&self) -> &str {
        match self {
            PatternError::Invalid { path, .. } | PatternError::TooComplex { path, .. } => path,
        }
    }

    /// What the problem is.
    pub fn reason(&self) -> &str {
        match self {
            PatternError::Invalid { reason, .. } | PatternError::TooComplex { reason, .. } => {
                reason
            }
        }
    }
}

fn located(path: &str, reason: &str) -> String {
    if path.is_empty() {
        reason.to_owned()
    } else {
        format!("\"{path}\": {reason}")
    }
}

/// A message that cannot be turned into an [`Event`](crate::Event) for
/// SNS-style filtering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A message attribute whose value does not fit its data type (a
    /// `Number` that is not a number, a `String.Array` that is not a JSON
    /// array of scalars) or whose data type is unknown (user input).
    #[error("message attribute {name:?}: {reason}")]
    Attribute {
        /// The attribute's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A subscription filters on the message body, and the body is not a
    /// JSON object (user input).
    #[error("the message body is not a JSON object: {0}")]
    BodyNotJson(String),
}
