//! SNS's errors as its Query protocol sends them: an XML `ErrorResponse`
//! with the code botocore's SNS model maps to an exception (`NotFound` to
//! `NotFoundException`, ...) and the HTTP status of the model's
//! `awsQueryError` trait. [`from_topic`] maps the topic engine's refusals
//! onto them.

use axum::http::StatusCode;
use tidewire_core::CatalogError;
use tidewire_storage::StorageError;
use tidewire_topics::TopicError;

use crate::AwsError;

/// An SNS error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    InvalidParameter,
    AuthorizationError,
    TopicLimitExceeded,
    SubscriptionLimitExceeded,
    EmptyBatchRequest,
    TooManyEntriesInBatchRequest,
    BatchEntryIdsNotDistinct,
    InvalidBatchEntryId,
    BatchRequestTooLong,
    InternalError,
}

impl Kind {
    /// Its code and HTTP status.
    fn parts(self) -> (&'static str, StatusCode) {
        use StatusCode as S;
        match self {
            Kind::NotFound => ("NotFound", S::NOT_FOUND),
            Kind::InvalidParameter => ("InvalidParameter", S::BAD_REQUEST),
            Kind::AuthorizationError => ("AuthorizationError", S::FORBIDDEN),
            Kind::TopicLimitExceeded => ("TopicLimitExceeded", S::FORBIDDEN),
            Kind::SubscriptionLimitExceeded => ("SubscriptionLimitExceeded", S::FORBIDDEN),
            Kind::EmptyBatchRequest => ("EmptyBatchRequest", S::BAD_REQUEST),
            Kind::TooManyEntriesInBatchRequest => ("TooManyEntriesInBatchRequest", S::BAD_REQUEST),
            Kind::BatchEntryIdsNotDistinct => ("BatchEntryIdsNotDistinct", S::BAD_REQUEST),
            Kind::InvalidBatchEntryId => ("InvalidBatchEntryId", S::BAD_REQUEST),
            Kind::BatchRequestTooLong => ("BatchRequestTooLong", S::BAD_REQUEST),
            Kind::InternalError => ("InternalError", S::INTERNAL_SERVER_ERROR),
        }
    }

    /// The error with `message`.
    pub fn error(self, message: impl Into<String>) -> AwsError {
        let (code, status) = self.parts();
        AwsError::sender(status, code, message)
    }
}

/// A parameter with a bad value, named, in SNS's wording.
pub fn invalid(name: &str, reason: impl std::fmt::Display) -> AwsError {
    Kind::InvalidParameter.error(format!("Invalid parameter: {name} Reason: {reason}"))
}

/// A required parameter that is absent.
pub fn missing(name: &str) -> AwsError {
    invalid(name, "no value was given, and the action needs one")
}

/// The error for a topic that is not there.
pub fn no_such_topic() -> AwsError {
    Kind::NotFound.error("Topic does not exist")
}

/// The error for a subscription that is not there.
pub fn no_such_subscription() -> AwsError {
    Kind::NotFound.error("Subscription does not exist")
}

/// The SNS error for a refusal of the topic engine.
pub fn from_topic(error: TopicError) -> AwsError {
    let message = error.to_string();
    match error {
        TopicError::Catalog(e) => from_catalog(e),
        TopicError::TooLarge { max, .. } => invalid(
            "Message",
            format!("Message too long: the message and its attributes take more than {max} bytes"),
        ),
        TopicError::BadMessage(reason) => invalid("MessageAttributes", reason),
        TopicError::Unreachable(reason) => invalid("Endpoint", reason),
        TopicError::BadToken { .. } => invalid("Token", "Invalid token"),
        TopicError::Storage(StorageError::InvalidRecord(reason)) => invalid("Message", reason),
        TopicError::Storage(_) | TopicError::State(_) => Kind::InternalError.error(message),
    }
}

fn from_catalog(error: CatalogError) -> AwsError {
    let message = error.to_string();
    match error {
        CatalogError::NotFound { kind: "topic", .. } => no_such_topic(),
        CatalogError::NotFound { .. } => no_such_subscription(),
        CatalogError::Invalid(e) => {
            let field = e.key.rsplit('.').next().unwrap_or(&e.key);
            let name = match field {
                "name" => "Name",
                "filter" => "FilterPolicy",
                "retries" | "max_delay" | "min_delay" => "DeliveryPolicy",
                "dead_letter" => "RedrivePolicy",
                "target" => "Endpoint",
                _ => "Attributes",
            };
            invalid(name, e.message)
        }
        CatalogError::LimitReached {
            kind: "subscription",
            ..
        } => Kind::SubscriptionLimitExceeded.error(message),
        CatalogError::LimitReached { .. } => Kind::TopicLimitExceeded.error(message),
        CatalogError::Exists { .. }
        | CatalogError::DefinedInConfig { .. }
        | CatalogError::InUse { .. }
        | CatalogError::LeftoverData { .. } => Kind::InvalidParameter.error(message),
        CatalogError::Damaged { .. }
        | CatalogError::Io { .. }
        | CatalogError::Storage(_)
        | CatalogError::Internal(_) => Kind::InternalError.error(message),
    }
}

#[cfg(test)]
mod tests {
    use tidewire_core::ConfigError;

    use super::*;

    #[test]
    fn engine_refusals_get_sns_codes() {
        let cases = [
            (
                TopicError::Catalog(CatalogError::NotFound {
                    kind: "topic",
                    name: "t".into(),
                }),
                "NotFound",
                404,
            ),
            (
                TopicError::Catalog(CatalogError::NotFound {
                    kind: "subscription",
                    name: "t/s".into(),
                }),
                "NotFound",
                404,
            ),
            (
                TopicError::TooLarge {
                    topic: "t".into(),
                    size: 9,
                    max: 8,
                },
                "InvalidParameter",
                400,
            ),
            (
                TopicError::invalid("subscription.filter", "at severity: not a list"),
                "InvalidParameter",
                400,
            ),
            (
                TopicError::Catalog(CatalogError::LimitReached {
                    kind: "topic",
                    max: 1,
                    key: "limits.max_topics",
                }),
                "TopicLimitExceeded",
                403,
            ),
            (TopicError::State("disk".into()), "InternalError", 500),
        ];
        for (error, code, status) in cases {
            let aws = from_topic(error);
            assert_eq!(aws.code, code);
            assert_eq!(aws.status.as_u16(), status, "{code}");
        }
        let filter = from_topic(TopicError::Catalog(CatalogError::Invalid(
            ConfigError::new("subscription.filter", "at severity: not a list"),
        )));
        assert_eq!(
            filter.message,
            "Invalid parameter: FilterPolicy Reason: at severity: not a list"
        );
        assert!(
            from_topic(TopicError::TooLarge {
                topic: "t".into(),
                size: 9,
                max: 8
            })
            .message
            .contains("Message too long")
        );
    }
}
