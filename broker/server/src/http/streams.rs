//! `GET /api/v1/streams` and `GET /api/v1/streams/{name}`: each stream's
//! definition and live stats.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use tidewire_core::Stream;

use super::{ApiError, AppState};
use crate::time::rfc3339_ms;

/// A stream's definition and stats.
#[derive(Debug, Serialize)]
pub struct StreamView {
    name: String,
    filters: Vec<String>,
    fsync: String,
    retention: RetentionView,
    segment_bytes: u64,
    stats: StatsView,
}

#[derive(Debug, Serialize)]
struct RetentionView {
    max_age_ms: Option<u128>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct StatsView {
    messages: u64,
    bytes: u64,
    segments: usize,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
    next_offset: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    first_time: Option<String>,
    last_time: Option<String>,
}

impl StreamView {
    fn of(stream: &Stream) -> StreamView {
        let config = stream.log.config();
        let stats = stream.log.stats();
        let non_empty = stats.records > 0;
        StreamView {
            name: stream.spec.name.clone(),
            filters: stream
                .spec
                .filters
                .iter()
                .map(ToString::to_string)
                .collect(),
            fsync: config.fsync.to_string(),
            retention: RetentionView {
                max_age_ms: config.retention.max_age.map(|d| d.as_millis()),
                max_bytes: config.retention.max_bytes,
            },
            segment_bytes: config.segment_bytes,
            stats: StatsView {
                messages: stats.records,
                bytes: stats.bytes,
                segments: stats.segments,
                first_offset: non_empty.then_some(stats.first_offset),
                last_offset: non_empty.then(|| stats.next_offset - 1),
                next_offset: stats.next_offset,
                first_ts: stats.first_timestamp_ms,
                last_ts: stats.last_timestamp_ms,
                first_time: stats.first_timestamp_ms.map(rfc3339_ms),
                last_time: stats.last_timestamp_ms.map(rfc3339_ms),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StreamList {
    streams: Vec<StreamView>,
}

pub async fn list(State(state): State<AppState>) -> Json<StreamList> {
    let streams = state.broker.streams().iter().map(StreamView::of).collect();
    Json(StreamList { streams })
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let stream = state
        .broker
        .streams()
        .get(&name)
        .ok_or_else(|| ApiError::no_stream(&name))?;
    Ok(Json(StreamView::of(stream)))
}
