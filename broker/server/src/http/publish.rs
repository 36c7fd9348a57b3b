//! `POST /api/v1/publish/{topic}`: publish the request body, answering
//! once it is durable in every stream that keeps the topic.
//!
//! The topic is the rest of the path, percent-decoded strictly: an invalid
//! escape (`%zz`, a `%` at the end) or bytes that are not UTF-8 are a 400,
//! never taken as literal text. Topics starting with `$` are the broker's
//! own (`$SYS/...`) and are refused.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tidewire_core::{Message, PublishError, RejectReason, Source, StorageError};

use super::auth::forbidden;
use super::{ApiError, AppState, extracted};
use tidewire_auth::Principal;

/// The client id recorded for messages published over HTTP.
pub const HTTP_CLIENT_ID: &str = "http";

/// Query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishParams {
    /// MQTT QoS recorded and used for delivery, 0 (default) to 2.
    #[serde(default)]
    qos: u8,
    /// Keep as the topic's retained message.
    #[serde(default)]
    retain: bool,
}

/// Where the message was stored.
#[derive(Debug, Serialize)]
pub struct Published {
    topic: String,
    stored: Vec<StoredView>,
}

#[derive(Debug, Serialize)]
struct StoredView {
    stream: String,
    offset: u64,
    ts: i64,
}

/// The path before the topic.
pub(super) const ROUTE_PREFIX: &str = "/api/v1/publish/";

pub async fn publish(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    uri: Uri,
    params: Result<Query<PublishParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    // From the raw path: axum's `Path` decodes leniently (`%zz` stays
    // `%zz`).
    let raw = uri.path().strip_prefix(ROUTE_PREFIX).ok_or_else(|| {
        ApiError::internal(format!("publish answered a path outside {ROUTE_PREFIX}"))
    })?;
    let topic = decode_topic(raw).map_err(ApiError::bad_request)?;
    tidewire_core::topic::refuse_reserved(&topic)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !caller.acl(HTTP_CLIENT_ID).may_publish(&topic) {
        return Err(forbidden(format!("publish to {topic:?}"), "publish"));
    }
    let Query(params) = extracted(params)?;
    let payload = body.inspect_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            state
                .broker
                .count_rejected(Source::Http, RejectReason::PayloadTooLarge);
        }
    });
    let payload = extracted(payload)?;
    if params.qos > 2 {
        return Err(ApiError::bad_request(format!(
            "qos must be 0, 1 or 2, not {}",
            params.qos
        )));
    }
    let message = Message {
        topic: topic.clone(),
        client_id: HTTP_CLIENT_ID.to_owned(),
        qos: params.qos,
        retain: params.retain,
        payload,
        ..Message::default()
    };
    let stored = state
        .broker
        .publish(Source::Http, message)
        .await
        .map_err(publish_error)?;
    Ok(Json(Published {
        topic,
        stored: stored
            .into_iter()
            .map(|s| StoredView {
                stream: s.stream.to_string(),
                offset: s.offset,
                ts: s.timestamp_ms,
            })
            .collect(),
    }))
}

fn publish_error(e: PublishError) -> ApiError {
    let status = match &e {
        PublishError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ if e.is_client_error() => StatusCode::BAD_REQUEST,
        PublishError::Storage {
            source: StorageError::Closed(_),
            ..
        } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// Percent-decodes a topic from the path, strictly: `%` must be followed
/// by two hex digits, and the result must be UTF-8.
fn decode_topic(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let escape = bytes.get(i + 1..i + 3).and_then(|hex| {
                let hex = std::str::from_utf8(hex).ok()?;
                u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            });
            let Some(byte) = escape else {
                let found: String = raw[i..].chars().take(3).collect();
                return Err(format!(
                    "invalid percent-escape {found:?} in the topic: % must be followed by \
                     two hex digits (write %25 for a literal %)"
                ));
            };
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the topic is not UTF-8 once percent-decoded".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_decode_strictly() {
        let good = [
            ("a/b", "a/b"),
            ("a%2Fb", "a/b"),
            ("a%20b%2fc", "a b/c"),
            ("%25", "%"),
            ("caf%C3%A9", "café"),
            ("", ""),
        ];
        for (raw, topic) in good {
            assert_eq!(decode_topic(raw).as_deref(), Ok(topic), "{raw}");
        }
        for raw in [
            "%zz", "a%", "a%4", "%4g", "%+1", "%-1", "x/%%41", "%C3%28", "%FF",
        ] {
            let err = decode_topic(raw).expect_err(raw);
            assert!(
                err.contains("percent-escape") || err.contains("UTF-8"),
                "{raw}: {err}"
            );
        }
    }
}
