//! SQS's errors as its JSON protocol sends them: each with the shape name
//! of botocore's SQS model in `__type` (`com.amazonaws.sqs#...`, or
//! `com.amazon.coral.service#...` for the errors every AWS service shares),
//! the code of the former Query protocol in `x-amzn-query-error` (what the
//! SDKs report, e.g. `AWS.SimpleQueueService.NonExistentQueue`), and the
//! HTTP status of the model's `awsQueryError` trait. [`from_queue`] maps
//! the queue engine's refusals onto them.

use axum::http::StatusCode;
use tidewire_core::CatalogError;
use tidewire_queues::QueueError;
use tidewire_storage::StorageError;

use crate::AwsError;

/// An SQS error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    QueueDoesNotExist,
    QueueNameExists,
    QueueDeletedRecently,
    ReceiptHandleIsInvalid,
    MessageNotInflight,
    InvalidMessageContents,
    TooManyEntriesInBatchRequest,
    EmptyBatchRequest,
    BatchEntryIdsNotDistinct,
    InvalidBatchEntryId,
    BatchRequestTooLong,
    InvalidAttributeName,
    InvalidAttributeValue,
    OverLimit,
    UnsupportedOperation,
    ResourceNotFound,
    InvalidParameterValue,
    MissingParameter,
    Serialization,
    UnknownOperation,
    AccessDenied,
    InternalFailure,
    ServiceUnavailable,
}

impl Kind {
    /// Its `__type`, Query code and HTTP status.
    fn parts(self) -> (&'static str, &'static str, StatusCode) {
        use StatusCode as S;
        match self {
            Kind::QueueDoesNotExist => (
                "com.amazonaws.sqs#QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue",
                S::BAD_REQUEST,
            ),
            Kind::QueueNameExists => (
                "com.amazonaws.sqs#QueueNameExists",
                "QueueAlreadyExists",
                S::BAD_REQUEST,
            ),
            Kind::QueueDeletedRecently => (
                "com.amazonaws.sqs#QueueDeletedRecently",
                "AWS.SimpleQueueService.QueueDeletedRecently",
                S::BAD_REQUEST,
            ),
            Kind::ReceiptHandleIsInvalid => (
                "com.amazonaws.sqs#ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                S::NOT_FOUND,
            ),
            Kind::MessageNotInflight => (
                "com.amazonaws.sqs#MessageNotInflight",
                "AWS.SimpleQueueService.MessageNotInflight",
                S::BAD_REQUEST,
            ),
            Kind::InvalidMessageContents => (
                "com.amazonaws.sqs#InvalidMessageContents",
                "InvalidMessageContents",
                S::BAD_REQUEST,
            ),
            Kind::TooManyEntriesInBatchRequest => (
                "com.amazonaws.sqs#TooManyEntriesInBatchRequest",
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                S::BAD_REQUEST,
            ),
            Kind::EmptyBatchRequest => (
                "com.amazonaws.sqs#EmptyBatchRequest",
                "AWS.SimpleQueueService.EmptyBatchRequest",
                S::BAD_REQUEST,
            ),
            Kind::BatchEntryIdsNotDistinct => (
                "com.amazonaws.sqs#BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                S::BAD_REQUEST,
            ),
            Kind::InvalidBatchEntryId => (
                "com.amazonaws.sqs#InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                S::BAD_REQUEST,
            ),
            Kind::BatchRequestTooLong => (
                "com.amazonaws.sqs#BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                S::BAD_REQUEST,
            ),
            Kind::InvalidAttributeName => (
                "com.amazonaws.sqs#InvalidAttributeName",
                "InvalidAttributeName",
                S::BAD_REQUEST,
            ),
            Kind::InvalidAttributeValue => (
                "com.amazonaws.sqs#InvalidAttributeValue",
                "InvalidAttributeValue",
                S::BAD_REQUEST,
            ),
            Kind::OverLimit => ("com.amazonaws.sqs#OverLimit", "OverLimit", S::FORBIDDEN),
            Kind::UnsupportedOperation => (
                "com.amazonaws.sqs#UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation",
                S::BAD_REQUEST,
            ),
            Kind::ResourceNotFound => (
                "com.amazonaws.sqs#ResourceNotFoundException",
                "ResourceNotFoundException",
                S::NOT_FOUND,
            ),
            Kind::InvalidParameterValue => (
                "com.amazon.coral.service#InvalidParameterValueException",
                "InvalidParameterValue",
                S::BAD_REQUEST,
            ),
            Kind::MissingParameter => (
                "com.amazon.coral.service#MissingRequiredParameterException",
                "MissingParameter",
                S::BAD_REQUEST,
            ),
            Kind::Serialization => (
                "com.amazon.coral.service#SerializationException",
                "SerializationException",
                S::BAD_REQUEST,
            ),
            Kind::UnknownOperation => (
                "com.amazon.coral.service#UnknownOperationException",
                "InvalidAction",
                S::BAD_REQUEST,
            ),
            Kind::AccessDenied => (
                "com.amazon.coral.service#AccessDeniedException",
                "AccessDenied",
                S::FORBIDDEN,
            ),
            Kind::InternalFailure => (
                "com.amazon.coral.service#InternalFailure",
                "InternalFailure",
                S::INTERNAL_SERVER_ERROR,
            ),
            Kind::ServiceUnavailable => (
                "com.amazon.coral.service#ServiceUnavailableException",
                "ServiceUnavailable",
                S::SERVICE_UNAVAILABLE,
            ),
        }
    }

    /// The error with `message`.
    pub fn error(self, message: impl Into<String>) -> AwsError {
        let (shape, code, status) = self.parts();
        AwsError::sender(status, code, message).with_shape(shape)
    }
}

/// The error for a queue that is not there.
pub fn no_such_queue() -> AwsError {
    Kind::QueueDoesNotExist.error("The specified queue does not exist.")
}

/// An attribute name SQS does not know.
pub fn unknown_attribute(name: &str) -> AwsError {
    Kind::InvalidAttributeName.error(format!("Unknown Attribute {name}."))
}

/// A required parameter that is absent.
pub fn missing(name: &str) -> AwsError {
    Kind::MissingParameter.error(format!("The request must contain the parameter {name}."))
}

/// A parameter with a bad value.
pub fn invalid(name: &str, reason: impl std::fmt::Display) -> AwsError {
    Kind::InvalidParameterValue.error(format!(
        "Value for parameter {name} is invalid. Reason: {reason}"
    ))
}

/// The SQS error for a refusal of the queue engine.
pub fn from_queue(error: QueueError) -> AwsError {
    let message = error.to_string();
    match error {
        QueueError::NotFound(_) => no_such_queue(),
        QueueError::InvalidReceiptHandle(_) => Kind::ReceiptHandleIsInvalid.error(message),
        QueueError::NotInFlight => Kind::MessageNotInflight.error(message),
        QueueError::InvalidParameter { name, message } => invalid(&name, message),
        QueueError::TooLarge { max, .. } => invalid(
            "MessageBody",
            format!("Message must be shorter than {max} bytes (body and attributes)."),
        ),
        QueueError::InvalidBatch(_) => Kind::InvalidParameterValue.error(message),
        QueueError::OverLimit(_) => Kind::OverLimit.error(message),
        QueueError::Catalog(e) => from_catalog(e),
        QueueError::Storage(StorageError::InvalidRecord(_)) => {
            Kind::InvalidParameterValue.error(message)
        }
        QueueError::Storage(StorageError::Closed(_)) => Kind::ServiceUnavailable.error(message),
        QueueError::Storage(_) | QueueError::State(_) => Kind::InternalFailure.error(message),
    }
}

fn from_catalog(error: CatalogError) -> AwsError {
    let message = error.to_string();
    match error {
        CatalogError::Invalid(e) if e.key.ends_with(".name") => {
            Kind::InvalidParameterValue.error(e.message)
        }
        CatalogError::Invalid(_) => Kind::InvalidAttributeValue.error(message),
        CatalogError::NotFound { .. } => no_such_queue(),
        CatalogError::Exists { .. } => {
            Kind::QueueNameExists.error(format!("{message} with different attributes"))
        }
        CatalogError::DefinedInConfig { .. } | CatalogError::InUse { .. } => {
            Kind::UnsupportedOperation.error(message)
        }
        CatalogError::LimitReached { .. } => Kind::OverLimit.error(message),
        CatalogError::LeftoverData { .. } => Kind::QueueDeletedRecently.error(message),
        CatalogError::Damaged { .. }
        | CatalogError::Io { .. }
        | CatalogError::Storage(_)
        | CatalogError::Internal(_) => Kind::InternalFailure.error(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_refusals_get_sqs_codes() {
        let cases = [
            (
                QueueError::NotFound("q".into()),
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
            ),
            (
                QueueError::InvalidReceiptHandle("x".into()),
                "ReceiptHandleIsInvalid",
                404,
            ),
            (
                QueueError::NotInFlight,
                "AWS.SimpleQueueService.MessageNotInflight",
                400,
            ),
            (
                QueueError::TooLarge { size: 9, max: 8 },
                "InvalidParameterValue",
                400,
            ),
            (
                QueueError::Catalog(CatalogError::Exists {
                    kind: "queue",
                    name: "q".into(),
                }),
                "QueueAlreadyExists",
                400,
            ),
            (QueueError::State("disk".into()), "InternalFailure", 500),
        ];
        for (error, code, status) in cases {
            let aws = from_queue(error);
            assert_eq!(aws.code, code);
            assert_eq!(aws.status.as_u16(), status, "{code}");
            assert!(aws.shape.is_some_and(|s| s.contains('#')));
        }
    }
}
