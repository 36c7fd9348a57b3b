//! AWS error shapes: one [`AwsError`] (status, code, message, whose fault)
//! rendered the way each protocol's SDK parser expects: an XML
//! `ErrorResponse` for the Query protocol (STS, SNS), and a JSON body with
//! `__type` for the JSON protocols (SQS, EventBridge, Kinesis). A service
//! that moved from the Query protocol to JSON (SQS) names the error's shape
//! in `__type` and keeps its old Query code in the `x-amzn-query-error`
//! header, which the SDKs report as the error code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code the SDKs map to an exception, e.g. `InvalidAction`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The JSON protocols' `__type` when it differs from `code`: the
    /// error's shape, e.g. `com.amazonaws.sqs#QueueDoesNotExist`.
    pub shape: Option<&'static str>,
}

impl AwsError {
    /// An error the caller caused (4xx).
    pub fn sender(status: StatusCode, code: &str, message: impl Into<String>) -> AwsError {
        AwsError {
            status,
            code: code.to_owned(),
            message: message.into(),
            shape: None,
        }
    }

    /// The same error with `shape` as its JSON `__type`.
    pub fn with_shape(self, shape: &'static str) -> AwsError {
        AwsError {
            shape: Some(shape),
            ..self
        }
    }

    /// True when the caller is at fault (a 4xx), false when the service is.
    pub fn is_sender_fault(&self) -> bool {
        !self.status.is_server_error()
    }

    fn fault(&self) -> &'static str {
        if !self.is_sender_fault() {
            "Receiver"
        } else {
            "Sender"
        }
    }

    /// The Query protocol's XML error.
    pub fn to_query_xml(&self, request_id: &str) -> Response {
        let body = format!(
            "<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error>\
             <RequestId>{}</RequestId></ErrorResponse>",
            self.fault(),
            xml_escape(&self.code),
            xml_escape(&self.message),
            request_id
        );
        with_request_id(
            (self.status, [(header::CONTENT_TYPE, "text/xml")], body).into_response(),
            request_id,
        )
    }

    /// The JSON protocols' error (`content_type` is the protocol's own,
    /// e.g. `application/x-amz-json-1.0`): `__type` is the shape (else the
    /// code), and `x-amzn-query-error` carries the code and whose fault.
    pub fn to_json(&self, content_type: &'static str, request_id: &str) -> Response {
        let kind = self.shape.unwrap_or(&self.code);
        let body = serde_json::json!({ "__type": kind, "message": self.message }).to_string();
        let mut response =
            (self.status, [(header::CONTENT_TYPE, content_type)], body).into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("{};{}", self.code, self.fault())) {
            response.headers_mut().insert("x-amzn-query-error", value);
        }
        with_request_id(response, request_id)
    }
}

/// Adds the request id header every AWS answer carries.
pub fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response
            .headers_mut()
            .insert("x-amzn-requestid", value.clone());
        response.headers_mut().insert("x-amz-request-id", value);
    }
    response
}

/// Text made safe inside an XML element.
pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped() {
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        let error = AwsError::sender(StatusCode::BAD_REQUEST, "InvalidAction", "x");
        assert_eq!(error.fault(), "Sender");
    }
}
