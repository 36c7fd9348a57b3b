//! The storage engine against real files: append and read back, restart,
//! recovery at every truncation point, after flipped bytes and after the
//! preallocated zeros a crash leaves, segment rolling, time lookups,
//! retention and group commit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tidewire_storage::{
    FsyncPolicy, LogConfig, Message, OnFatal, Properties, Record, Retention, StorageMetrics,
    StreamLog,
};

fn message(i: usize) -> Message {
    Message {
        topic: format!("sensors/{}/temp", i % 7),
        client_id: format!("dev-{}", i % 3),
        qos: (i % 3) as u8,
        retain: i.is_multiple_of(5),
        payload: Bytes::from(format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 90))),
        properties: Properties {
            user: if i.is_multiple_of(4) {
                vec![("k".into(), format!("v{i}"))]
            } else {
                vec![]
            },
            ..Properties::default()
        },
    }
}

fn no_fatal() -> OnFatal {
    Arc::new(|e| panic!("unexpected fatal storage error: {e}"))
}

fn open(dir: &Path, config: LogConfig) -> StreamLog {
    open_counted(dir, "test", config).0
}

/// Opens stream `name` with metrics of its own, to read them back.
fn open_counted(dir: &Path, name: &str, config: LogConfig) -> (StreamLog, Registry) {
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let log = StreamLog::open(dir, name, config, &metrics, no_fatal()).expect("open log");
    (log, registry)
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

async fn append_all(log: &StreamLog, range: std::ops::Range<usize>) {
    for i in range {
        let appended = log.append(Arc::new(message(i))).await.expect("append");
        assert_eq!(appended.offset, i as u64);
    }
}

fn read_all(log: &StreamLog) -> Vec<Record> {
    log.scan(0..u64::MAX)
        .collect::<Result<Vec<_>, _>>()
        .expect("scan")
}

fn assert_prefix(records: &[Record], n: usize) {
    assert_eq!(records.len(), n);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.message, message(i), "record {i}");
    }
}

#[tokio::test]
async fn concurrent_appends_get_distinct_offsets_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..50 {
                let msg = Message {
                    topic: format!("w/{writer}"),
                    payload: Bytes::from(format!("{writer}-{i}")),
                    ..Message::default()
                };
                offsets.push(log.append(Arc::new(msg)).await.expect("append").offset);
            }
            offsets
        });
    }
    let mut offsets: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>());

    let records = read_all(&log);
    assert_eq!(records.len(), 400);
    let mut last_ts = i64::MIN;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert!(r.timestamp_ms >= last_ts, "timestamps never decrease");
        last_ts = r.timestamp_ms;
    }
    // Each writer's own messages are stored in the order it sent them.
    for writer in 0..8 {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.message.topic == format!("w/{writer}"))
            .map(|r| r.message.payload.clone())
            .collect();
        let expected: Vec<_> = (0..50)
            .map(|i| Bytes::from(format!("{writer}-{i}")))
            .collect();
        assert_eq!(mine, expected);
    }
    log.close().await;
}

#[tokio::test]
async fn reopen_keeps_records_offsets_and_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments());
    append_all(&log, 0..120).await;
    let before = log.stats();
    assert!(before.segments > 3, "small segments roll: {before:?}");
    log.close().await;

    let log = open(dir.path(), small_segments());
    assert_eq!(log.stats(), before);
    assert_prefix(&read_all(&log), 120);
    append_all(&log, 120..130).await;
    assert_prefix(&read_all(&log), 130);
    log.close().await;
}

#[tokio::test]
async fn scans_by_offset_and_time_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments());
    append_all(&log, 0..50).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    append_all(&log, 50..100).await;

    let middle: Vec<u64> = log
        .scan(37..61)
        .map(|r| r.expect("record").offset)
        .collect();
    assert_eq!(middle, (37..61).collect::<Vec<_>>());
    assert_eq!(log.scan(100..200).count(), 0);

    let records = read_all(&log);
    let ts50 = records[50].timestamp_ms;
    let first_at_ts50 = records
        .iter()
        .position(|r| r.timestamp_ms >= ts50)
        .expect("exists") as u64;
    assert_eq!(log.offset_at_time(ts50).expect("lookup"), first_at_ts50);
    assert_eq!(log.offset_at_time(i64::MIN).expect("lookup"), 0);
    assert_eq!(log.offset_at_time(i64::MAX).expect("lookup"), 100);

    // A narrow offset range opens only the segments that hold it.
    let mut narrow = log.scan(95..100);
    assert_eq!(narrow.by_ref().count(), 5);
    let total: u64 = log.segments().iter().map(|s| s.size).sum();
    assert!(
        narrow.bytes_opened() * 4 < total,
        "pruned scan read {} of {total}",
        narrow.bytes_opened()
    );
    log.close().await;
}

#[tokio::test]
async fn live_tail_wakes_on_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    let mut tail = log.subscribe();
    assert_eq!(*tail.borrow_and_update(), 0);
    let writer = log.clone();
    tokio::spawn(async move { append_all(&writer, 0..3).await });
    tail.wait_for(|next| *next >= 3).await.expect("tail");
    assert_prefix(&read_all(&log), 3);
    log.close().await;
}

/// The file of a log's first segment.
const FIRST_SEGMENT: &str = "00000000000000000000.log";

/// Builds a single-segment log of `n` records and returns its bytes.
async fn one_segment_log(dir: &Path, n: usize) -> Vec<u8> {
    let log = open(dir, LogConfig::default());
    append_all(&log, 0..n).await;
    log.close().await;
    std::fs::read(dir.join(FIRST_SEGMENT)).expect("read segment")
}

/// A fresh log directory whose first segment is `bytes` (a log's bytes,
/// cut or damaged), for recovery to open.
fn dir_with_segment(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(FIRST_SEGMENT), bytes).expect("write");
    dir
}

/// Frame boundaries of a log built by [`one_segment_log`].
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 16;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += 8 + len;
        ends.push(pos);
    }
    ends
}

#[tokio::test]
async fn recovery_at_every_truncation_point_keeps_the_whole_prefix() {
    let source = tempfile::tempdir().expect("tempdir");
    let bytes = one_segment_log(source.path(), 12).await;
    let ends = frame_ends(&bytes);
    assert_eq!(ends.len(), 12);

    for cut in 0..=bytes.len() {
        let dir = dir_with_segment(&bytes[..cut]);
        let log = open(dir.path(), LogConfig::default());
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        assert_prefix(&read_all(&log), whole);
        // The torn tail is gone and the next append continues right after.
        let next = log.append(Arc::new(message(whole))).await.expect("append");
        assert_eq!(next.offset, whole as u64, "cut at {cut}");
        log.close().await;
        let log = open(dir.path(), LogConfig::default());
        assert_prefix(&read_all(&log), whole + 1);
        log.close().await;
    }
}

#[tokio::test]
async fn flipped_bytes_lose_only_the_damaged_suffix() {
    let source = tempfile::tempdir().expect("tempdir");
    let bytes = one_segment_log(source.path(), 12).await;
    let ends = frame_ends(&bytes);

    for at in (0..bytes.len()).step_by(7) {
        for bit in [0u8, 5] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            let dir = dir_with_segment(&damaged);
            let log = open(dir.path(), LogConfig::default());
            let records = read_all(&log);
            // Every frame entirely before the flipped byte survives (a
            // damaged header is rewritten, since the name carries the base).
            let intact = ends.iter().filter(|&&end| end <= at).count();
            assert!(
                records.len() >= intact,
                "flip at {at}: kept {}",
                records.len()
            );
            // Nothing is invented or altered: what survives is a prefix.
            assert_prefix(&records, records.len());
            assert!(records.len() <= 12);
            log.close().await;
        }
    }
}

#[tokio::test]
async fn damaged_sealed_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments());
    append_all(&log, 0..60).await;
    log.close().await;
    let idx = dir.path().join("00000000000000000000.idx");
    let mut bytes = std::fs::read(&idx).expect("sealed segment has an index");
    bytes[10] ^= 0xff;
    std::fs::write(&idx, &bytes).expect("write");
    std::fs::remove_file(
        dir.path().join(
            log.segments()
                .get(1)
                .map(|s| format!("{:020}.idx", s.base_offset))
                .expect("second segment"),
        ),
    )
    .expect("remove index");

    let log = open(dir.path(), small_segments());
    assert_prefix(&read_all(&log), 60);
    assert_eq!(log.offset_at_time(i64::MIN).expect("lookup"), 0);
    assert_ne!(std::fs::read(&idx).expect("rewritten"), bytes);
    log.close().await;
}

#[tokio::test]
async fn retention_by_bytes_deletes_oldest_whole_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention: Retention {
            max_age: None,
            max_bytes: Some(6 * 1024),
        },
        ..small_segments()
    };
    let log = open(dir.path(), config);
    append_all(&log, 0..200).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.stats().bytes > 6 * 1024 + 2048 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never ran: {:?}",
            log.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = log.stats();
    assert!(stats.first_offset > 0);
    assert_eq!(stats.next_offset, 200);
    let records = read_all(&log);
    assert_eq!(records.first().map(|r| r.offset), Some(stats.first_offset));
    for r in &records {
        assert_eq!(r.message, message(r.offset as usize));
    }
    // Retention may still be deleting: count files once the writer is done.
    log.close().await;
    let files = std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(
        files,
        log.stats().segments * 2 - 1,
        "one .log per segment, one .idx per sealed one"
    );
}

#[tokio::test]
async fn retention_by_age_empties_an_idle_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention: Retention {
            max_age: Some(Duration::from_millis(300)),
            max_bytes: None,
        },
        ..LogConfig::default()
    };
    let log = open(dir.path(), config);
    append_all(&log, 0..20).await;
    // The active segment is sealed once its oldest record passes the
    // retention age, then deleted, while the stream is idle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.stats().records > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never expired: {:?}",
            log.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.stats().next_offset, 20);
    assert_eq!(
        log.append(Arc::new(message(20)))
            .await
            .expect("append")
            .offset,
        20
    );
    log.close().await;
}

#[tokio::test]
async fn retention_changed_while_open_applies_at_the_next_housekeeping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments());
    append_all(&log, 0..200).await;
    let before = log.stats();
    assert_eq!(before.first_offset, 0, "nothing dropped without retention");
    log.set_retention(Retention {
        max_age: None,
        max_bytes: Some(6 * 1024),
    });
    assert_eq!(log.config().retention.max_bytes, Some(6 * 1024));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.stats().bytes > 6 * 1024 + 2048 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new retention never ran: {:?}",
            log.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.stats().first_offset > 0);
    assert_eq!(log.stats().next_offset, 200);
    log.close().await;
}

#[tokio::test]
async fn released_records_go_by_whole_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments());
    append_all(&log, 0..200).await;
    let segments = log.segments();
    assert!(segments.len() > 3, "{segments:?}");
    // Everything below the third segment's middle is no longer needed.
    let third = segments[2];
    log.release_before((third.base_offset + third.end_offset) / 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.stats().first_offset != third.base_offset {
        assert!(
            tokio::time::Instant::now() < deadline,
            "released segments were never deleted: {:?}",
            log.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The segment holding records still needed stays, whole.
    let records = read_all(&log);
    assert_eq!(records.first().map(|r| r.offset), Some(third.base_offset));
    assert_eq!(records.len() as u64, 200 - third.base_offset);
    log.close().await;
}

#[tokio::test]
async fn group_commit_shares_fsyncs_between_concurrent_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, registry) = open_counted(dir.path(), "gc", LogConfig::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..256 {
        let log = log.clone();
        tasks.spawn(async move { log.append(Arc::new(message(i))).await.expect("append") });
    }
    tasks.join_all().await;
    let fsyncs = fsyncs(&registry, "gc");
    assert!(fsyncs >= 1);
    assert!(fsyncs < 256, "256 concurrent appends took {fsyncs} fsyncs");
    log.close().await;
}

fn fsyncs(registry: &Registry, stream: &str) -> u64 {
    counter(registry, "tidewire_stream_fsyncs_total", stream)
}

/// A per-stream counter's value.
fn counter(registry: &Registry, name: &str, stream: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    let prefix = format!("{name}{{stream=\"{stream}\"}}");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// The active segment's file runs ahead of its records with zeros, so
/// that commits do not grow it; sealed and cleanly closed segments are
/// exactly their records.
#[tokio::test]
async fn the_active_segment_runs_ahead_and_sealed_segments_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    append_all(&log, 0..20).await;
    let active = dir.path().join(FIRST_SEGMENT);
    let size = log.segments()[0].size;
    assert!(file_len(&active) > size, "not preallocated");
    let bytes = std::fs::read(&active).expect("read");
    assert!(bytes[size as usize..].iter().all(|&b| b == 0));
    log.close().await;
    assert_eq!(file_len(&active), size);

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_segments());
    append_all(&log, 0..60).await;
    let segments = log.segments();
    assert!(segments.len() > 2);
    for segment in &segments[..segments.len() - 1] {
        let path = dir.path().join(format!("{:020}.log", segment.base_offset));
        assert_eq!(
            file_len(&path),
            segment.size,
            "sealed {}",
            segment.base_offset
        );
    }
    let last = segments.last().expect("active");
    let path = dir.path().join(format!("{:020}.log", last.base_offset));
    assert!(file_len(&path) <= small_segments().segment_bytes.max(last.size));
    log.close().await;
}

/// Zeros are quiet only where nothing but zeros follows: a zeroed frame
/// header with records behind it is damage, and so is a torn frame inside
/// the preallocated zeros, counted without the zeros after it.
#[tokio::test]
async fn zeros_with_data_behind_them_count_as_damage() {
    let source = tempfile::tempdir().expect("tempdir");
    let bytes = one_segment_log(source.path(), 12).await;
    let ends = frame_ends(&bytes);
    let cases: [(&str, Vec<u8>, usize, u64); 2] = [
        (
            "zeroed header",
            {
                let mut b = bytes.clone();
                b[ends[5]..ends[5] + 8].fill(0);
                b
            },
            6,
            (bytes.len() - ends[5]) as u64,
        ),
        (
            "torn frame in the zeros",
            {
                let mut b = bytes.clone();
                b.extend_from_slice(&bytes[ends[0]..ends[1] - 10]);
                b.resize(b.len() + 64 * 1024, 0);
                b
            },
            12,
            (ends[1] - 10 - ends[0]) as u64,
        ),
    ];
    for (case, damaged, kept, counted) in cases {
        let dir = dir_with_segment(&damaged);
        let (log, registry) = open_counted(dir.path(), "d", LogConfig::default());
        assert_prefix(&read_all(&log), kept);
        assert_eq!(
            counter(
                &registry,
                "tidewire_stream_recovery_truncated_bytes_total",
                "d"
            ),
            counted,
            "{case}"
        );
        log.close().await;
    }
}

/// A crash leaves the zeros after the last record: recovery keeps every
/// record, cuts the zeros without counting them as damage, and appends
/// continue right after.
#[tokio::test]
async fn recovery_cuts_the_preallocated_zeros_quietly() {
    let source = tempfile::tempdir().expect("tempdir");
    let mut bytes = one_segment_log(source.path(), 12).await;
    let records_len = bytes.len() as u64;
    bytes.resize(bytes.len() + 1024 * 1024, 0);
    let dir = dir_with_segment(&bytes);

    let (log, registry) = open_counted(dir.path(), "z", LogConfig::default());
    assert_prefix(&read_all(&log), 12);
    assert_eq!(
        counter(
            &registry,
            "tidewire_stream_recovery_truncated_bytes_total",
            "z"
        ),
        0
    );
    assert_eq!(log.segments()[0].size, records_len);
    let next = log.append(Arc::new(message(12))).await.expect("append");
    assert_eq!(next.offset, 12);
    log.close().await;
    let log = open(dir.path(), LogConfig::default());
    assert_prefix(&read_all(&log), 13);
    log.close().await;
}

/// Under fsync `always`, appends that wait only for their write are not
/// each fsynced: the next durable append (or housekeeping) takes them
/// along, and they are all there after a restart.
#[tokio::test]
async fn written_appends_ride_along_with_the_next_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, registry) = open_counted(dir.path(), "w", LogConfig::default());
    for i in 0..50 {
        let ticket = log
            .enqueue_written(Arc::new(message(i)))
            .await
            .expect("queue");
        assert_eq!(ticket.await.expect("written").offset, i as u64);
    }
    // One at a time, each durable append would have been an fsync; the
    // housekeeping pass syncs at most twice a second.
    let before = fsyncs(&registry, "w");
    assert!(before < 25, "50 written appends took {before} fsyncs");
    assert_eq!(read_all(&log).len(), 50);
    log.append(Arc::new(message(50)))
        .await
        .expect("durable append");
    assert!(fsyncs(&registry, "w") > before);
    log.close().await;
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    let records = read_all(&log);
    assert_eq!(records.len(), 51);
    assert_eq!(records[50].message, message(50));
    log.close().await;
}

/// Appends message `i`, waiting for its write only.
async fn write_only(log: &StreamLog, i: usize) {
    let ticket = log
        .enqueue_written(Arc::new(message(i)))
        .await
        .expect("queue");
    ticket.await.expect("written");
}

/// The durable offset is what readers that must see only acknowledged
/// records read up to: under `always` it reaches a record once an fsync
/// has, under the other policies once its write has, and a reopened log's
/// records are all durable.
#[tokio::test]
async fn the_durable_offset_follows_the_fsync_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    write_only(&log, 0).await;
    assert_eq!(log.next_offset(), 1);
    assert!(log.durable_offset() <= 1);
    log.append(Arc::new(message(1)))
        .await
        .expect("durable append");
    assert_eq!(log.durable_offset(), 2);
    log.close().await;
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!((log.next_offset(), log.durable_offset()), (2, 2));
    log.close().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let lazy = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(600)),
        ..LogConfig::default()
    };
    let log = open(dir.path(), lazy);
    write_only(&log, 0).await;
    assert_eq!(log.durable_offset(), 1);
    log.close().await;
}

#[tokio::test]
async fn other_fsync_policies_ack_and_persist() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            fsync: policy,
            ..LogConfig::default()
        };
        let log = open(dir.path(), config);
        append_all(&log, 0..30).await;
        log.close().await;
        let log = open(dir.path(), config);
        assert_prefix(&read_all(&log), 30);
        log.close().await;
    }
}

#[tokio::test]
async fn invalid_records_are_refused_and_closed_logs_refuse_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default());
    let long_topic = Message {
        topic: "t".repeat(70_000),
        ..Message::default()
    };
    let err = log
        .append(Arc::new(long_topic))
        .await
        .expect_err("too long");
    assert!(err.to_string().contains("topic is 70000 bytes"), "{err}");
    append_all(&log, 0..1).await;
    log.close().await;
    let err = log.append(Arc::new(message(1))).await.expect_err("closed");
    assert!(err.to_string().contains("closed"), "{err}");
    assert_prefix(&read_all(&log), 1);
}
