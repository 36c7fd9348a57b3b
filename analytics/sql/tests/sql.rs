//! Integration tests: SQL over streams filled through the real publish
//! path, the sandbox and limits, the HTTP API and CLI, and continuous
//! queries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, BinaryArray};
use datafusion::arrow::datatypes::Int64Type;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tidewire_core::StreamConfig;
use tidewire_core::{Broker, Limits, Message, PublishMetrics, Source, Stored, Streams};
use tidewire_sql::cli::{OutputFormat, run_sql};
use tidewire_sql::{ContinuousQueries, QueryConfig, SqlEngine, SqlError, SqlLimits, SqlMetrics};
use tidewire_storage::StorageMetrics;
use tokio_util::sync::CancellationToken;

#[path = "sql/hostile.rs"]
mod hostile;

/// A broker with the given streams in a temp dir, and an engine over it.
struct Fixture {
    _dir: tempfile::TempDir,
    broker: Broker,
    engine: SqlEngine,
    metrics: SqlMetrics,
}

fn fixture_with(streams: &[&str], limits: SqlLimits) -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let mut registry = Registry::default();
    let specs = streams
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let config: StreamConfig = toml::from_str(text)?;
            Ok(config.validate(&format!("streams[{i}]"))?)
        })
        .collect::<Result<Vec<_>>>()?;
    let opened = Streams::open(
        dir.path(),
        specs,
        &StorageMetrics::register(&mut registry),
        Arc::new(|_| {}),
    )?;
    let broker = Broker::new(
        opened,
        Limits::default(),
        PublishMetrics::register(&mut registry),
    );
    let metrics = SqlMetrics::register(&mut registry);
    let engine = SqlEngine::new(broker.clone(), limits, metrics.clone())?;
    Ok(Fixture {
        _dir: dir,
        broker,
        engine,
        metrics,
    })
}

fn fixture() -> Result<Fixture> {
    fixture_with(&["name = \"events\""], SqlLimits::default())
}

fn message(topic: &str, payload: impl Into<Bytes>) -> Message {
    Message {
        topic: topic.into(),
        client_id: "test".into(),
        qos: 1,
        payload: payload.into(),
        ..Message::default()
    }
}

async fn publish(broker: &Broker, topic: &str, payload: impl Into<Bytes>) -> Result<Vec<Stored>> {
    Ok(broker
        .publish(Source::Http, message(topic, payload))
        .await?)
}

/// Runs `sql` and returns the rows as JSON arrays.
async fn rows(engine: &SqlEngine, sql: &str) -> Result<Vec<Vec<Value>>> {
    let out = engine.query(sql).await.with_context(|| sql.to_owned())?;
    Ok(tidewire_sql::output::to_json(&out)?.rows)
}

async fn one_i64(engine: &SqlEngine, sql: &str) -> Result<i64> {
    let rows = rows(engine, sql).await?;
    rows.first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .with_context(|| format!("{sql}: no integer in {rows:?}"))
}

#[tokio::test]
async fn aggregates_match_independently_computed_values() -> Result<()> {
    let f = fixture()?;
    let topics = ["sensors/a", "sensors/b", "sensors/c"];
    let mut expected = std::collections::BTreeMap::<&str, (i64, f64)>::new();
    for i in 0..300 {
        let topic = topics[i % 3];
        let temp = (i as f64) * 0.5 - 20.0;
        publish(
            &f.broker,
            topic,
            json!({ "temp": temp, "id": format!("d{}", i % 7) }).to_string(),
        )
        .await?;
        let e = expected.entry(topic).or_default();
        e.0 += 1;
        e.1 += temp;
    }
    assert_eq!(
        one_i64(&f.engine, "SELECT count(*) FROM events").await?,
        300
    );
    let got = rows(
        &f.engine,
        "SELECT topic, count(*), sum(json_get_float(payload, 'temp')), avg(json_get_float(payload, 'temp')) \
         FROM events GROUP BY topic ORDER BY topic",
    )
    .await?;
    assert_eq!(got.len(), 3);
    for (row, (topic, (n, sum))) in got.iter().zip(&expected) {
        assert_eq!(row[0], json!(topic));
        assert_eq!(row[1], json!(n));
        let got_sum = row[2].as_f64().context("sum")?;
        let got_avg = row[3].as_f64().context("avg")?;
        assert!((got_sum - sum).abs() < 1e-9, "{got_sum} != {sum}");
        assert!((got_avg - sum / *n as f64).abs() < 1e-9);
    }
    let ids = rows(
        &f.engine,
        "SELECT count(DISTINCT json_get_str(payload, 'id')) FROM events",
    )
    .await?;
    assert_eq!(ids[0][0], json!(7));
    Ok(())
}

#[tokio::test]
async fn columns_follow_the_spec_and_schema_fields_are_typed() -> Result<()> {
    let f = fixture_with(
        &[r#"
        name = "typed"
        [schema]
        temp = { type = "double" }
        device = { type = "varchar", path = "meta.device" }
        n = { type = "bigint" }
        ok = { type = "boolean" }
        at = { type = "timestamp" }
        "#],
        SqlLimits::default(),
    )?;
    publish(
        &f.broker,
        "s/1",
        json!({ "temp": 21.5, "meta": { "device": "x" }, "n": 3, "ok": true, "at": "2024-01-01T00:00:01Z" }).to_string(),
    )
    .await?;
    publish(
        &f.broker,
        "s/1",
        json!({ "temp": "hot", "n": 4.0, "at": 1000 }).to_string(),
    )
    .await?;
    let out = f
        .engine
        .query("SELECT * FROM typed ORDER BY \"offset\"")
        .await?;
    let json = tidewire_sql::output::to_json(&out)?;
    let columns: Vec<(String, String)> = json
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.kind.clone()))
        .collect();
    let expected = [
        ("offset", "BIGINT"),
        ("ts", "TIMESTAMP"),
        ("topic", "VARCHAR"),
        ("client_id", "VARCHAR"),
        ("qos", "TINYINT"),
        ("retain", "BOOLEAN"),
        ("payload", "VARCHAR"),
        ("payload_bytes", "BINARY"),
        ("at", "TIMESTAMP"),
        ("device", "VARCHAR"),
        ("n", "BIGINT"),
        ("ok", "BOOLEAN"),
        ("temp", "DOUBLE"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(columns, expected);
    let typed = rows(
        &f.engine,
        "SELECT temp, device, n, ok, CAST(at AS BIGINT) FROM typed ORDER BY \"offset\"",
    )
    .await?;
    assert_eq!(
        typed[0],
        vec![
            json!(21.5),
            json!("x"),
            json!(3),
            json!(true),
            json!(1_704_067_201_000_i64)
        ]
    );
    // A value of the wrong type, or a missing one, is NULL.
    assert_eq!(
        typed[1],
        vec![Value::Null, Value::Null, json!(4), Value::Null, json!(1000)]
    );
    Ok(())
}

#[tokio::test]
async fn binary_payloads_are_kept_as_payload_bytes() -> Result<()> {
    let f = fixture()?;
    let raw: &'static [u8] = &[0xff, 0x00, 0xfe];
    publish(&f.broker, "bin", raw).await?;
    publish(&f.broker, "txt", "hello").await?;
    let out = f
        .engine
        .query("SELECT payload, payload_bytes FROM events ORDER BY \"offset\"")
        .await?;
    let batch = datafusion::arrow::compute::concat_batches(&out.schema, &out.batches)?;
    let payload = batch.column(0).as_string::<i32>();
    let bytes = batch
        .column(1)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .context("binary column")?;
    assert!(payload.is_null(0));
    assert_eq!(bytes.value(0), raw);
    assert_eq!(payload.value(1), "hello");
    assert_eq!(bytes.value(1), b"hello");
    Ok(())
}

#[tokio::test]
async fn empty_streams_give_empty_results() -> Result<()> {
    let f = fixture()?;
    assert_eq!(one_i64(&f.engine, "SELECT count(*) FROM events").await?, 0);
    let out = f.engine.query("SELECT * FROM events").await?;
    assert_eq!(out.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(out.schema.fields().len(), 8);
    let csv = tidewire_sql::output::to_csv(&out)?;
    assert_eq!(
        String::from_utf8(csv)?,
        "offset,ts,topic,client_id,qos,retain,payload,payload_bytes\n"
    );
    Ok(())
}

/// Fills a stream of small segments; returns each record's timestamp.
async fn fill_segments(f: &Fixture, n: usize) -> Result<Vec<i64>> {
    let mut timestamps = Vec::with_capacity(n);
    for i in 0..n {
        let stored = publish(
            &f.broker,
            "sensors/x",
            json!({ "i": i, "pad": "x".repeat(60) }).to_string(),
        )
        .await?;
        timestamps.push(stored[0].timestamp_ms);
        if i % 100 == 99 {
            // Spread records over time so segments have distinct ranges.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    Ok(timestamps)
}

fn small_segments() -> Result<Fixture> {
    fixture_with(
        &["name = \"events\"\nsegment_bytes = \"4KiB\"\nfsync = \"never\""],
        SqlLimits::default(),
    )
}

#[tokio::test]
async fn offset_filters_prune_to_the_segments_they_need() -> Result<()> {
    let f = small_segments()?;
    fill_segments(&f, 1500).await?;
    let log = &f.broker.streams().get("events").context("stream")?.log;
    let segments = log.segments();
    ensure!(segments.len() > 10, "only {} segments", segments.len());
    let total: u64 = segments.iter().map(|s| s.size).sum();
    let edge = &segments[5];
    let (segments_before, bytes_before) = (
        f.metrics.segments_scanned.get(),
        f.metrics.bytes_scanned.get(),
    );
    let sql = format!(
        "SELECT count(*), min(\"offset\"), max(\"offset\") FROM events WHERE \"offset\" >= {} AND \"offset\" < {}",
        edge.base_offset, edge.end_offset
    );
    let got = rows(&f.engine, &sql).await?;
    assert_eq!(
        got[0],
        vec![
            json!(edge.end_offset - edge.base_offset),
            json!(edge.base_offset),
            json!(edge.end_offset - 1)
        ]
    );
    assert_eq!(f.metrics.segments_scanned.get() - segments_before, 1);
    let read = f.metrics.bytes_scanned.get() - bytes_before;
    assert!(
        read <= edge.size,
        "read {read} of a {}-byte segment",
        edge.size
    );
    assert!(read * 10 < total);
    // One past the edge: the next segment's first record only.
    let got = one_i64(
        &f.engine,
        &format!(
            "SELECT count(*) FROM events WHERE \"offset\" BETWEEN {} AND {}",
            edge.end_offset - 1,
            edge.end_offset
        ),
    )
    .await?;
    assert_eq!(got, 2);
    Ok(())
}

#[tokio::test]
async fn time_filters_prune_and_are_exact_at_segment_edges() -> Result<()> {
    let f = small_segments()?;
    let timestamps = fill_segments(&f, 1500).await?;
    let log = &f.broker.streams().get("events").context("stream")?.log;
    let segments = log.segments();
    let total: u64 = segments.iter().map(|s| s.size).sum();
    let last = timestamps.last().copied().context("records")?;
    for edge in &segments[1..segments.len() - 1] {
        let lo = edge.min_timestamp_ms.context("min ts")?;
        let expected = timestamps.iter().filter(|&&t| t >= lo).count() as i64;
        let bytes_before = f.metrics.bytes_scanned.get();
        let sql = format!("SELECT count(*) FROM events WHERE ts >= to_timestamp_millis({lo})");
        assert_eq!(one_i64(&f.engine, &sql).await?, expected, "{sql}");
        let read = f.metrics.bytes_scanned.get() - bytes_before;
        let needed: u64 = segments
            .iter()
            .filter(|s| s.max_timestamp_ms.is_some_and(|m| m >= lo))
            .map(|s| s.size)
            .sum();
        assert!(
            read <= needed,
            "{sql}: read {read}, needed at most {needed}"
        );
        let hi = edge.max_timestamp_ms.context("max ts")?;
        let expected = timestamps.iter().filter(|&&t| t > lo && t <= hi).count() as i64;
        let sql = format!(
            "SELECT count(*) FROM events WHERE ts > to_timestamp_millis({lo}) AND ts <= to_timestamp_millis({hi})"
        );
        assert_eq!(one_i64(&f.engine, &sql).await?, expected, "{sql}");
    }
    // Past the end: nothing is read at all.
    let bytes_before = f.metrics.bytes_scanned.get();
    let sql = format!("SELECT count(*) FROM events WHERE ts > to_timestamp_millis({last})");
    assert_eq!(one_i64(&f.engine, &sql).await?, 0);
    assert_eq!(f.metrics.bytes_scanned.get(), bytes_before);
    // The last few ms read a small part of the stream.
    let bytes_before = f.metrics.bytes_scanned.get();
    let sql = format!("SELECT count(*) FROM events WHERE ts >= to_timestamp_millis({last})");
    assert_eq!(
        one_i64(&f.engine, &sql).await?,
        timestamps.iter().filter(|&&t| t >= last).count() as i64
    );
    assert!((f.metrics.bytes_scanned.get() - bytes_before) * 5 < total);
    Ok(())
}

/// Queries whose answers must not depend on whether rows come from
/// column files or from records.
fn column_file_queries(segments: &[tidewire_storage::SegmentInfo]) -> Vec<String> {
    let edge = &segments[3];
    let mid_ts = segments[5].min_timestamp_ms.unwrap_or(0);
    vec![
        "SELECT count(*) FROM typed".into(),
        "SELECT sum(i), count(i), min(i), max(i) FROM typed".into(),
        "SELECT topic, count(*), avg(i) FROM typed GROUP BY topic ORDER BY topic".into(),
        format!(
            "SELECT count(*), min(\"offset\"), max(\"offset\"), sum(i) FROM typed \
             WHERE \"offset\" >= {} AND \"offset\" < {}",
            edge.base_offset + 3,
            edge.end_offset + 2
        ),
        format!("SELECT count(*), sum(i) FROM typed WHERE ts >= to_timestamp_millis({mid_ts})"),
        "SELECT \"offset\", i, client_id, qos, retain FROM typed LIMIT 7".into(),
        format!(
            "SELECT \"offset\", i FROM typed WHERE \"offset\" >= {} ORDER BY \"offset\" LIMIT 5",
            edge.end_offset - 2
        ),
    ]
}

/// A scan counter once it stops moving. A query can return before its scan
/// threads notice: after a LIMIT is met, a reader finishes the batch in hand
/// (and counts it) before it sees that nobody wants it.
async fn settled(counter: &Counter) -> u64 {
    let mut last = counter.get();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = counter.get();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

async fn answers(engine: &SqlEngine, queries: &[String]) -> Result<Vec<Vec<Vec<Value>>>> {
    let mut all = Vec::new();
    for sql in queries {
        all.push(rows(engine, sql).await?);
    }
    Ok(all)
}

#[tokio::test]
async fn column_files_give_the_same_answers_as_records() -> Result<()> {
    let f = fixture_with(
        &[
            "name = \"typed\"\nsegment_bytes = \"4KiB\"\nfsync = \"never\"\n[schema]\ni = { type = \"bigint\" }",
        ],
        SqlLimits::default(),
    )?;
    for i in 0..1500 {
        let topic = format!("sensors/{}", i % 3);
        publish(
            &f.broker,
            &topic,
            json!({ "i": i, "pad": "x".repeat(60) }).to_string(),
        )
        .await?;
    }
    let log = &f.broker.streams().get("typed").context("stream")?.log;
    let segments = log.segments();
    ensure!(segments.len() > 10, "only {} segments", segments.len());
    let queries = column_file_queries(&segments);
    let from_records = answers(&f.engine, &queries).await?;
    assert_eq!(
        from_records[1][0],
        vec![json!(1_124_250), json!(1500), json!(0), json!(1499)]
    );
    ensure!(f.metrics.column_rows_scanned.get() == 0);

    // Every sealed segment gets a file, and the active one is decoded
    // into memory: nothing is read from records any more.
    let stop = CancellationToken::new();
    f.engine.sync_column_files(&stop).await;
    let sealed = segments.len() as u64 - 1;
    assert_eq!(f.metrics.column_files_built.get(), sealed);
    let records_before = settled(&f.metrics.records_scanned).await;
    assert_eq!(answers(&f.engine, &queries).await?, from_records);
    assert_eq!(f.metrics.records_scanned.get(), records_before);
    assert!(f.metrics.column_rows_scanned.get() > 0);
    // The payload is not in the files: those queries read records.
    let payload_rows_before = settled(&f.metrics.column_rows_scanned).await;
    let n = one_i64(&f.engine, "SELECT count(payload) FROM typed").await?;
    assert_eq!(n, 1500);
    assert_eq!(f.metrics.column_rows_scanned.get(), payload_rows_before);

    // New records join the tail as they are queried; once their segment
    // is sealed, its file is written from the tail.
    let mut n = 1500;
    while log.segments().len() < segments.len() + 2 {
        publish(
            &f.broker,
            "sensors/0",
            json!({ "i": n, "pad": "x".repeat(60) }).to_string(),
        )
        .await?;
        n += 1;
        if n % 97 == 0 {
            let got = rows(&f.engine, "SELECT count(*), sum(i) FROM typed").await?;
            assert_eq!(got[0], vec![json!(n), json!((0..n).sum::<i64>())]);
        }
    }
    let records_before = f.metrics.records_scanned.get();
    f.engine.sync_column_files(&stop).await;
    assert_eq!(f.metrics.column_files_built.get(), sealed + 2);
    let got = rows(
        &f.engine,
        "SELECT count(*), sum(i), max(\"offset\") FROM typed",
    )
    .await?;
    assert_eq!(
        got[0],
        vec![json!(n), json!((0..n).sum::<i64>()), json!(n - 1)]
    );
    assert_eq!(f.metrics.records_scanned.get(), records_before);

    // After a restart the files are reused, not rebuilt.
    let mut registry = Registry::default();
    let metrics = SqlMetrics::register(&mut registry);
    let restarted = SqlEngine::new(f.broker.clone(), SqlLimits::default(), metrics.clone())?;
    restarted.sync_column_files(&stop).await;
    assert_eq!(metrics.column_files_built.get(), 0);
    let expected = answers(&f.engine, &queries).await?;
    assert_eq!(answers(&restarted, &queries).await?, expected);

    // A damaged file is deleted, the records answer instead, and the next
    // sync rebuilds it.
    let damaged = log
        .dir()
        .join("columns")
        .join(format!("{:020}.arrow", segments[3].base_offset));
    let len = std::fs::metadata(&damaged)?.len();
    let mut bytes = std::fs::read(&damaged)?;
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].fill(0xff);
    std::fs::write(&damaged, &bytes)?;
    assert_eq!(answers(&restarted, &queries).await?, expected);
    assert!(metrics.column_file_errors.get() > 0);
    restarted.sync_column_files(&stop).await;
    assert_eq!(metrics.column_files_built.get(), 1);
    assert_eq!(std::fs::metadata(&damaged)?.len(), len);
    assert_eq!(answers(&restarted, &queries).await?, expected);
    Ok(())
}

#[tokio::test]
async fn large_scans_split_across_cores_and_keep_their_answers_and_order() -> Result<()> {
    let f = fixture_with(
        &[
            "name = \"big\"\nfsync = \"never\"\nsegment_bytes = \"512KiB\"\n[schema]\ni = { type = \"bigint\" }",
        ],
        SqlLimits::default(),
    )?;
    let n: i64 = 40_000;
    // Submitted without waiting for each; the stream keeps their order.
    let mut last = None;
    for i in 0..n {
        let topic = format!("t/{}", i % 5);
        let ticket = f
            .broker
            .submit(Source::Http, message(&topic, json!({ "i": i }).to_string()))
            .await?;
        last = Some(ticket);
    }
    last.context("tickets")?.durable().await?;
    // The same answers from records, then from multi-block column files.
    let mut built = false;
    loop {
        let got = rows(
            &f.engine,
            "SELECT count(*), sum(i), sum(json_get_int(payload, 'i')), count(DISTINCT topic) FROM big",
        )
        .await?;
        let sum = n * (n - 1) / 2;
        assert_eq!(got[0], vec![json!(n), json!(sum), json!(sum), json!(5)]);
        let by_topic = rows(
            &f.engine,
            "SELECT topic, count(*) FROM big GROUP BY topic ORDER BY topic",
        )
        .await?;
        assert_eq!(by_topic.len(), 5);
        assert!(by_topic.iter().all(|r| r[1] == json!(n / 5)));
        // Order across the partitions.
        let out = f
            .engine
            .query("SELECT \"offset\", i FROM big ORDER BY \"offset\"")
            .await?;
        let batch = datafusion::arrow::compute::concat_batches(&out.schema, &out.batches)?;
        let offsets = batch.column(0).as_primitive::<Int64Type>();
        assert!(offsets.values().iter().copied().eq(0..n));
        let last = rows(
            &f.engine,
            "SELECT \"offset\" FROM big ORDER BY \"offset\" DESC LIMIT 2",
        )
        .await?;
        assert_eq!(last, vec![vec![json!(n - 1)], vec![json!(n - 2)]]);
        if built {
            break;
        }
        f.engine.sync_column_files(&CancellationToken::new()).await;
        ensure!(f.metrics.column_files_built.get() >= 2);
        built = true;
    }
    let explain = rows(&f.engine, "EXPLAIN SELECT count(*) FROM big WHERE i > 3").await?;
    // One partition per core, each of at least one 8192-row batch.
    let parts = std::thread::available_parallelism()?
        .get()
        .min(n as usize / 8192);
    let text = format!("{explain:?}");
    assert!(
        text.contains(&format!("partition_sizes={parts},")),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn limit_stops_the_scan() -> Result<()> {
    let f = fixture()?;
    for i in 0..100 {
        publish(&f.broker, "t", format!("{i}")).await?;
    }
    let before = f.metrics.records_scanned.get();
    let out = f
        .engine
        .query("SELECT \"offset\", payload FROM events LIMIT 5")
        .await?;
    let batch = datafusion::arrow::compute::concat_batches(&out.schema, &out.batches)?;
    assert_eq!(batch.num_rows(), 5);
    let offsets = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(offsets.values().to_vec(), vec![0, 1, 2, 3, 4]);
    assert_eq!(f.metrics.records_scanned.get() - before, 5);
    Ok(())
}

#[tokio::test]
async fn repeated_queries_reuse_their_plan_and_still_see_the_stream_as_it_is() -> Result<()> {
    let f = fixture()?;
    for i in 0..10 {
        publish(&f.broker, "a", format!("{i}")).await?;
    }
    let count = "SELECT count(*) FROM events WHERE \"offset\" >= 2";
    assert_eq!(one_i64(&f.engine, count).await?, 8);
    assert_eq!(f.metrics.plan_cache_hits.get(), 0);
    assert_eq!(one_i64(&f.engine, count).await?, 8);
    assert_eq!(f.metrics.plan_cache_hits.get(), 1);
    // The cached plan scans the records published since it was made.
    for i in 10..15 {
        publish(&f.broker, "a", format!("{i}")).await?;
    }
    assert_eq!(one_i64(&f.engine, count).await?, 13);
    assert_eq!(f.metrics.plan_cache_hits.get(), 2);

    // now() is not frozen at the time the plan was cached.
    let now = "SELECT now() AS t";
    let first = rows(&f.engine, now).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = rows(&f.engine, now).await?;
    assert_eq!(f.metrics.plan_cache_hits.get(), 3);
    assert_ne!(first, second, "now() answered from the cached plan's time");

    // Bad SQL is not cached, and stays an error.
    for _ in 0..2 {
        let err = f.engine.query("SELECT nope FROM events").await;
        assert!(matches!(err, Err(SqlError::Invalid(_))), "{err:?}");
    }
    assert_eq!(f.metrics.plan_cache_hits.get(), 3);
    Ok(())
}

#[tokio::test]
async fn explain_shows_the_stream_scan_and_its_order() -> Result<()> {
    let f = fixture()?;
    publish(&f.broker, "t", "1").await?;
    let plan = rows(&f.engine, "EXPLAIN SELECT ts FROM events ORDER BY ts").await?;
    let text = format!("{plan:?}");
    assert!(text.contains("StreamingTableExec"), "{text}");
    // The declared order makes the sort unnecessary.
    assert!(!text.contains("SortExec"), "{text}");
    let analyzed = rows(&f.engine, "EXPLAIN ANALYZE SELECT count(*) FROM events").await?;
    assert!(format!("{analyzed:?}").contains("output_rows"));
    Ok(())
}

#[tokio::test]
async fn the_sandbox_rejects_everything_that_is_not_a_read() -> Result<()> {
    let f = fixture()?;
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("out.csv");
    let target = target.display();
    let cases = [
        ("CREATE TABLE t AS SELECT 1".to_owned(), "CREATE TABLE"),
        ("CREATE VIEW v AS SELECT 1".to_owned(), "CREATE VIEW"),
        ("DROP TABLE events".to_owned(), "DROP TABLE"),
        (
            "INSERT INTO events SELECT * FROM events".to_owned(),
            "INSERT INTO",
        ),
        ("DELETE FROM events".to_owned(), "DELETE FROM"),
        ("UPDATE events SET qos = 0".to_owned(), "UPDATE events"),
        (format!("COPY (SELECT 1) TO '{target}'"), "COPY"),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
            "CREATE EXTERNAL TABLE",
        ),
        ("SET datafusion.execution.batch_size = 1".to_owned(), "SET"),
        ("RESET datafusion.execution.batch_size".to_owned(), "RESET"),
        (
            "EXPLAIN CREATE TABLE t AS SELECT 1".to_owned(),
            "CREATE TABLE",
        ),
        ("SELECT 1; SELECT 2".to_owned(), "exactly one statement"),
    ];
    for (sql, mention) in &cases {
        match f.engine.query(sql).await {
            Err(SqlError::Rejected(text)) => assert!(text.contains(mention), "{sql}: {text}"),
            other => panic!("{sql}: expected a rejection, got {other:?}"),
        }
    }
    // Nothing reads files: no URL tables, no file table functions.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        match f.engine.query(sql).await {
            Err(SqlError::Invalid(_)) => {}
            other => panic!("{sql}: expected an error, got {other:?}"),
        }
    }
    assert!(!dir.path().join("out.csv").exists());
    assert_eq!(one_i64(&f.engine, "SELECT count(*) FROM events").await?, 0);
    Ok(())
}

#[tokio::test]
async fn memory_and_time_limits_fail_the_query_not_the_engine() -> Result<()> {
    let f = fixture_with(
        &["name = \"events\""],
        SqlLimits {
            memory_limit: 1 << 20,
            query_timeout: Duration::from_millis(300),
            ..SqlLimits::default()
        },
    )?;
    let big_sort = "SELECT value FROM generate_series(1, 3000000) ORDER BY value DESC";
    match f.engine.query(big_sort).await {
        Err(e @ SqlError::MemoryLimit { .. }) => assert!(e.to_string().contains("memory limit")),
        other => panic!(
            "expected a memory error, got {:?}",
            other.map(|o| o.batches.len())
        ),
    }
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000)";
    match f.engine.query(slow).await {
        Err(e @ SqlError::Timeout(_)) => assert!(e.to_string().contains("timed out")),
        other => panic!(
            "expected a timeout, got {:?}",
            other.map(|o| o.batches.len())
        ),
    }
    assert_eq!(
        one_i64(&f.engine, "SELECT count(*) FROM generate_series(1, 1000)").await?,
        1000
    );
    Ok(())
}

/// Serves the SQL router on a free port; returns its base URL.
async fn serve(f: &Fixture, queries: ContinuousQueries) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = tidewire_sql::http::router(f.engine.clone(), queries);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

#[tokio::test]
async fn http_api_answers_json_csv_and_arrow_and_the_cli_prints_them() -> Result<()> {
    let f = fixture()?;
    for (topic, temp) in [("a", 1.0), ("b", 2.0), ("a", 3.0)] {
        publish(&f.broker, topic, json!({ "temp": temp }).to_string()).await?;
    }
    let url = serve(
        &f,
        ContinuousQueries::new(f.engine.clone(), CancellationToken::new()),
    )
    .await?;
    let client = reqwest::Client::new();
    let sql = "SELECT topic, count(*) AS n, avg(json_get_float(payload, 'temp')) AS t FROM events GROUP BY topic ORDER BY topic";
    let response = client
        .post(format!("{url}/api/v1/sql"))
        .json(&json!({ "sql": sql }))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(
        body,
        json!({
            "columns": [
                { "name": "topic", "type": "VARCHAR" },
                { "name": "n", "type": "BIGINT" },
                { "name": "t", "type": "DOUBLE" }
            ],
            "rows": [["a", 2, 2.0], ["b", 1, 2.0]]
        })
    );
    let csv = client
        .post(format!("{url}/api/v1/sql"))
        .header("accept", "text/csv")
        .json(&json!({ "sql": sql }))
        .send()
        .await?;
    assert_eq!(csv.headers()["content-type"], "text/csv");
    assert_eq!(csv.text().await?, "topic,n,t\na,2,2.0\nb,1,2.0\n");
    let arrow = client
        .post(format!("{url}/api/v1/sql"))
        .header("accept", tidewire_sql::http::ARROW_STREAM)
        .json(&json!({ "sql": sql }))
        .send()
        .await?
        .bytes()
        .await?;
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow), None)?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    for (sql, status) in [
        ("SELEC 1", 400),
        ("DROP TABLE events", 400),
        ("SELECT * FROM nope", 400),
    ] {
        let response = client
            .post(format!("{url}/api/v1/sql"))
            .json(&json!({ "sql": sql }))
            .send()
            .await?;
        assert_eq!(response.status(), status, "{sql}");
        let body: Value = response.json().await?;
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let response = client
        .post(format!("{url}/api/v1/sql"))
        .body("{\"sq\":1}")
        .send()
        .await?;
    assert_eq!(response.status(), 400);

    let table = run_sql(&url, OutputFormat::Table, sql).await?;
    assert!(table.contains("| topic | n | t   |"), "{table}");
    assert!(table.contains("| a     | 2 | 2.0 |"), "{table}");
    assert!(table.ends_with("(2 rows)\n"), "{table}");
    assert_eq!(
        run_sql(&url, OutputFormat::Csv, sql).await?,
        "topic,n,t\na,2,2.0\nb,1,2.0\n"
    );
    let json_text = run_sql(&url, OutputFormat::Json, sql).await?;
    assert_eq!(
        serde_json::from_str::<Value>(&json_text)?,
        body_of(&client, &url, sql).await?
    );
    let err = run_sql(&url, OutputFormat::Table, "DROP TABLE events")
        .await
        .expect_err("rejected");
    assert!(
        err.to_string()
            .starts_with("query failed (400): not allowed: DROP TABLE"),
        "{err}"
    );
    let err = run_sql("http://127.0.0.1:1", OutputFormat::Table, "SELECT 1")
        .await
        .expect_err("no server");
    assert!(err.to_string().contains("cannot reach tidewire"), "{err}");
    Ok(())
}

async fn body_of(client: &reqwest::Client, url: &str, sql: &str) -> Result<Value> {
    Ok(client
        .post(format!("{url}/api/v1/sql"))
        .json(&json!({ "sql": sql }))
        .send()
        .await?
        .json()
        .await?)
}

fn query(id: &str, sql: &str, window_ms: u64) -> QueryConfig {
    QueryConfig {
        id: id.into(),
        sql: sql.into(),
        window: Duration::from_millis(window_ms),
        hop: None,
        allowed_lateness: None,
        event_time: None,
        publish_topic: None,
    }
}

/// Waits for the next window result (the timeout only guards a hang).
async fn next_result(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<tidewire_sql::WindowResult>>,
) -> Result<Arc<tidewire_sql::WindowResult>> {
    Ok(tokio::time::timeout(Duration::from_secs(20), rx.recv()).await??)
}

#[tokio::test]
async fn windows_close_when_idle_and_results_are_published_to_a_derived_stream() -> Result<()> {
    let f = fixture_with(
        &[
            "name = \"events\"\nfilters = [\"sensors/#\"]",
            "name = \"results\"\nfilters = [\"results/#\"]",
        ],
        SqlLimits::default(),
    )?;
    let queries = ContinuousQueries::new(f.engine.clone(), CancellationToken::new());
    let mut def = query(
        "per-topic",
        "SELECT topic, count(*) AS n, sum(json_get_int(payload, 'v')) AS total FROM events GROUP BY topic",
        200,
    );
    def.publish_topic = Some("results/per-topic".into());
    def.allowed_lateness = Some(Duration::from_millis(100));
    queries.start(def).await?;
    let mut rx = queries.subscribe("per-topic")?;
    for v in 1..=10 {
        publish(&f.broker, "sensors/a", json!({ "v": v }).to_string()).await?;
    }
    // No more input: windows must still close and account for all ten.
    let (mut n, mut total) = (0, 0);
    while n < 10 {
        let result = next_result(&mut rx).await?;
        assert!(result.error.is_none(), "{result:?}");
        assert_eq!(result.window_end - result.window_start, 200);
        for row in &result.rows {
            assert_eq!(row["topic"], json!("sensors/a"));
            n += row["n"].as_i64().context("n")?;
            total += row["total"].as_i64().context("total")?;
        }
    }
    assert_eq!((n, total), (10, 55));
    let published = rows(
        &f.engine,
        "SELECT sum(json_get_int(payload, 'n')), sum(json_get_int(payload, 'total')), min(client_id) FROM results",
    )
    .await?;
    assert_eq!(
        published[0],
        vec![json!(10), json!(55), json!("query:per-topic")]
    );
    let info = queries.get("per-topic")?;
    assert!(info.windows_emitted >= 1);
    assert_eq!(info.stream, "events");
    queries.stop("per-topic")?;
    assert!(matches!(
        queries.get("per-topic"),
        Err(SqlError::UnknownQuery(_))
    ));
    Ok(())
}

#[tokio::test]
async fn late_records_are_counted_not_merged() -> Result<()> {
    let f = fixture()?;
    let queries = ContinuousQueries::new(f.engine.clone(), CancellationToken::new());
    let mut def = query("late", "SELECT count(*) AS n FROM events", 200);
    def.hop = Some(Duration::from_millis(100));
    def.allowed_lateness = Some(Duration::from_millis(50));
    def.event_time = Some("to_timestamp_millis(json_get_int(payload, 't'))".into());
    queries.start(def).await?;
    let mut rx = queries.subscribe("late")?;
    let now = chrono::Utc::now().timestamp_millis();
    // An hour late, then one in windows that are still open (event times
    // may lead the broker clock by less than one window).
    publish(&f.broker, "x", json!({ "t": now - 3_600_000 }).to_string()).await?;
    publish(&f.broker, "x", json!({ "t": now + 150 }).to_string()).await?;
    let mut counted = 0;
    let mut late = 0;
    // Each on-time record is in two hopping windows.
    // Windows close every 100 ms; 50 of them are far more than needed.
    for _ in 0..50 {
        if counted >= 2 && late >= 1 {
            break;
        }
        let result = next_result(&mut rx).await?;
        assert!(result.error.is_none(), "{result:?}");
        assert_eq!(result.window_end - result.window_start, 200);
        counted += result.rows[0]["n"].as_i64().context("n")?;
        late = result.late_records;
    }
    assert_eq!((counted, late), (2, 1));
    Ok(())
}

#[tokio::test]
async fn queries_are_managed_over_http() -> Result<()> {
    let f = fixture()?;
    let queries = ContinuousQueries::new(f.engine.clone(), CancellationToken::new());
    let url = serve(&f, queries.clone()).await?;
    let client = reqwest::Client::new();
    let def = json!({ "id": "q1", "sql": "SELECT count(*) AS n FROM events", "window": "1m", "hop": "10s" });
    let created = client
        .post(format!("{url}/api/v1/queries"))
        .json(&def)
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let again = client
        .post(format!("{url}/api/v1/queries"))
        .json(&def)
        .send()
        .await?;
    assert_eq!(again.status(), 409);
    let list: Value = client
        .get(format!("{url}/api/v1/queries"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["queries"][0]["definition"]["id"], json!("q1"));
    assert_eq!(list["queries"][0]["stream"], json!("events"));
    let one = client
        .get(format!("{url}/api/v1/queries/q1"))
        .send()
        .await?;
    assert_eq!(one.status(), 200);
    for bad in [
        json!({ "id": "q2", "sql": "SELECT nope FROM events", "window": "1m" }),
        json!({ "id": "q2", "sql": "DROP TABLE events", "window": "1m" }),
        json!({ "id": "q2", "sql": "SELECT 1", "window": "1m", "hop": "2m" }),
        json!({ "id": "q2", "sql": "SELECT 1 FROM events", "window": "1m", "typo": 1 }),
    ] {
        let response = client
            .post(format!("{url}/api/v1/queries"))
            .json(&bad)
            .send()
            .await?;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await?;
        assert!(body["error"].is_string(), "{body}");
    }
    let deleted = client
        .delete(format!("{url}/api/v1/queries/q1"))
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    let gone = client
        .get(format!("{url}/api/v1/queries/q1"))
        .send()
        .await?;
    assert_eq!(gone.status(), 404);
    Ok(())
}
