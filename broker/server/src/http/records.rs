//! `GET /api/v1/streams/{name}/records`: a replayable read, like a Kinesis
//! shard iterator. `from` is `earliest`, `latest`, `offset:N` or
//! `time:RFC3339`; the answer carries `next_offset` to continue from.
//! `wait_ms` long-polls when nothing is there yet.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tidewire_core::{Record, Stream};
use tidewire_delivery::{Start as From, records_after};

use super::auth::forbidden;
use super::{ApiError, AppState, extracted};
use crate::time::{parse_rfc3339_ms, rfc3339_ms};
use tidewire_auth::Principal;
use tidewire_core::payload::JsonPayload;

/// Records returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 10_000;
/// The longest `wait_ms` accepted.
pub const MAX_WAIT_MS: u64 = 30_000;
/// A response stops growing past this many payload bytes (it always holds
/// at least one record).
pub const MAX_RESPONSE_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    from: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
    /// `base64` returns every payload as base64, byte for byte.
    encoding: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RecordsView {
    stream: String,
    records: Vec<RecordView>,
    next_offset: u64,
}

#[derive(Debug, Serialize)]
struct RecordView {
    offset: u64,
    ts: i64,
    time: String,
    topic: String,
    client_id: String,
    qos: u8,
    retain: bool,
    #[serde(flatten)]
    payload: JsonPayload,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    user_properties: Vec<(String, String)>,
}

impl RecordView {
    fn of(record: Record, force_base64: bool) -> RecordView {
        let m = record.message;
        RecordView {
            offset: record.offset,
            ts: record.timestamp_ms,
            time: rfc3339_ms(record.timestamp_ms),
            payload: JsonPayload::new(&m.payload, force_base64),
            topic: m.topic,
            client_id: m.client_id,
            qos: m.qos,
            retain: m.retain,
            user_properties: m.properties.user,
        }
    }
}

/// Where a read starts: `from`, parsed.
fn parse_from(text: &str) -> Result<From, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid from {text:?}: use earliest, latest, offset:N or time:RFC3339"
        ))
    };
    match text {
        "earliest" => Ok(From::Earliest),
        "latest" => Ok(From::Latest),
        _ => {
            if let Some(n) = text.strip_prefix("offset:") {
                n.parse().map(From::Offset).map_err(|_| bad())
            } else if let Some(t) = text.strip_prefix("time:") {
                parse_rfc3339_ms(t).map(From::Time).ok_or_else(bad)
            } else {
                Err(bad())
            }
        }
    }
}

pub async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<RecordsView>, ApiError> {
    if !caller.may_read(&name) {
        return Err(forbidden(format!("read stream {name:?}"), "sql"));
    }
    let Query(params) = extracted(params)?;
    let from = parse_from(params.from.as_deref().unwrap_or("earliest"))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}, not {limit}"
        )));
    }
    let wait_ms = params.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be at most {MAX_WAIT_MS}"
        )));
    }
    let force_base64 = match params.encoding.as_deref() {
        None => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding must be base64 when given, not {other:?}"
            )));
        }
    };
    let stream = state
        .broker
        .streams()
        .get(&name)
        .ok_or_else(|| ApiError::no_stream(&name))?;

    let start = resolve(&stream, from).await?;
    if wait_ms > 0 {
        // Timing out just means an empty answer.
        let arrived = records_after(&stream.log, start);
        let _ = tokio::time::timeout(Duration::from_millis(wait_ms), arrived).await;
    }
    let records = blocking(move || read_records(&stream, start, limit)).await?;
    let next_offset = records.last().map_or(start, |r| r.offset + 1);
    Ok(Json(RecordsView {
        stream: name,
        records: records
            .into_iter()
            .map(|r| RecordView::of(r, force_base64))
            .collect(),
        next_offset,
    }))
}

/// The offset a read from `from` starts at; an offset past the end is the
/// caller's mistake.
async fn resolve(stream: &Stream, from: From) -> Result<u64, ApiError> {
    let next = stream.log.next_offset();
    if let From::Offset(n) = from
        && n > next
    {
        return Err(ApiError::bad_request(format!(
            "offset {n} is past the end of stream {} (next offset {next})",
            stream.spec.name
        )));
    }
    match from {
        // Finding a time reads the index and segments: off the workers.
        From::Time(_) => {
            let log = stream.log.clone();
            blocking(move || from.resolve(&log).map_err(storage_error)).await
        }
        _ => from.resolve(&stream.log).map_err(storage_error),
    }
}

fn read_records(stream: &Stream, start: u64, limit: usize) -> Result<Vec<Record>, ApiError> {
    let mut records = Vec::new();
    let mut bytes = 0;
    for record in stream.log.scan(start..u64::MAX).take(limit) {
        let record = record.map_err(storage_error)?;
        bytes += record.message.payload.len();
        records.push(record);
        if bytes >= MAX_RESPONSE_PAYLOAD_BYTES {
            break;
        }
    }
    Ok(records)
}

fn storage_error(e: tidewire_core::StorageError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("read task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parses_every_form() {
        assert_eq!(parse_from("earliest").ok(), Some(From::Earliest));
        assert_eq!(parse_from("latest").ok(), Some(From::Latest));
        assert_eq!(parse_from("offset:42").ok(), Some(From::Offset(42)));
        assert_eq!(
            parse_from("time:2026-01-02T03:04:05.678Z").ok(),
            Some(From::Time(1_767_323_045_678))
        );
        assert_eq!(
            parse_from("time:2026-01-02T04:04:05+01:00").ok(),
            Some(From::Time(1_767_323_045_000))
        );
        for bad in [
            "",
            "first",
            "offset:",
            "offset:-1",
            "offset:x",
            "time:yesterday",
            "time:",
        ] {
            assert!(parse_from(bad).is_err(), "{bad}");
        }
    }
}
