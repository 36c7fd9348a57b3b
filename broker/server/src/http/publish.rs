//! `POST /api/v1/publish/{topic}`: publish the request body, answering
//! once it is durable in every stream that keeps the topic.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tidewire_core::{Message, PublishError, RejectReason, Source, StorageError};

use super::{ApiError, AppState, extracted};

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

pub async fn publish(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
    params: Result<Query<PublishParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    let Path(topic) = extracted(topic)?;
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
