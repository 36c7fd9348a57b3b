//! SQL benchmark: loads N JSON records of about 150 B into a stream through
//! the broker's publish path, then times (a) `count(*)`, (b) the average of
//! a JSON field grouped by topic, (c) the same over the last 1% of time
//! (pruning), (d) (b) over a typed schema column. Beside it, in the same
//! run: DataFusion over the same data as an in-memory Arrow table
//! (MemTable), DuckDB (Python `duckdb`) over the same data as NDJSON and
//! as Parquet, and DataFusion 55 (Python `datafusion`, the same engine
//! version) over that Parquet for the queries without JSON functions,
//! which its Python build lacks. Then the p50/p99 plan-and-execute latency of a small
//! dashboard query (the time range of the last 1000 records, by topic; the
//! bench loads far faster than devices publish, so "the last N seconds"
//! would hold tens of thousands of records) on a stream of 100k and of M
//! records, which also shows how a continuous query's per-window cost
//! scales with stream length.
//!
//! `cargo run --release -p tidewire-benches --bin sql-query -- --help`

use std::io::Write;
use std::path::Path;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use datafusion::arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use tidewire_benches::{Latencies, in_process_broker, peak_rss_mib, print_table, python};
use tidewire_core::StreamConfig;
use tidewire_core::{Broker, Message, Source};
use tidewire_sql::{SqlEngine, SqlLimits, SqlMetrics};

/// Records in the dashboard query's time range.
const DASHBOARD_WINDOW: u64 = 1000;

#[derive(Debug, Parser)]
struct Args {
    /// Records in the main stream (the issue's full size is 10000000).
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Records in the dashboard stream.
    #[arg(long, default_value_t = 1_000_000)]
    dashboard_records: usize,
    /// Dashboard query repetitions per stream size.
    #[arg(long, default_value_t = 200)]
    repeat: usize,
    /// Skip the DuckDB comparison.
    #[arg(long)]
    no_duckdb: bool,
}

const TOPICS: usize = 100;
const STREAMS: &str = r#"
[[s]]
name = "bench"
fsync = "never"
segment_bytes = "16MiB"
retention = { max_age = "7d" }
[s.schema]
temp = { type = "double" }
[[s]]
name = "dash"
fsync = "never"
segment_bytes = "16MiB"
retention = { max_age = "7d" }
"#;

#[derive(serde::Deserialize)]
struct StreamList {
    s: Vec<StreamConfig>,
}

fn payload(i: usize) -> (String, f64, String) {
    let topic = format!("sensors/site-{}/dev-{:03}", i % 7, i % TOPICS);
    let temp = 15.0 + ((i * 7919) % 2000) as f64 / 100.0;
    let json = format!(
        r#"{{"device":"dev-{:03}","temp":{temp:.2},"hum":{:.1},"site":"plant-{}","status":"ok","seq":{i:>9},"fw":"1.4.2"}}"#,
        i % TOPICS,
        30.0 + (i % 500) as f64 / 10.0,
        i % 7,
    );
    (topic, temp, json)
}

async fn load(
    broker: &Broker,
    stream_topic_prefix: &str,
    from: usize,
    to: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending = futures_util::stream::iter(from..to)
        .map(|i| {
            let (topic, _, json) = payload(i);
            let message = Message {
                topic: format!("{stream_topic_prefix}{topic}"),
                client_id: "bench".into(),
                qos: 1,
                payload: Bytes::from(json),
                ..Message::default()
            };
            broker.publish(Source::Http, message)
        })
        .buffer_unordered(512);
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(started.elapsed())
}

/// Median of `runs` timings of `f`.
async fn time<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(".")?;
    let mut registry = Registry::default();
    let list: StreamList = toml::from_str(STREAMS)?;
    let mut specs = Vec::new();
    for (i, s) in list.s.iter().enumerate() {
        let mut spec = s.validate(&format!("streams[{i}]"))?;
        // Route by prefix: the dashboard stream keeps `dash/#` only.
        let filter = if spec.name == "dash" {
            "dash/#"
        } else {
            "sensors/#"
        };
        spec.filters = vec![tidewire_core::topic::TopicFilter::new(filter, 1024)?];
        specs.push(spec);
    }
    let broker = in_process_broker(dir.path(), specs, &mut registry)?;
    let engine = SqlEngine::new(
        broker.clone(),
        SqlLimits::default(),
        SqlMetrics::register(&mut registry),
    )?;

    println!("sql-query: loading {} records of ~150 B", args.records);
    let took = load(&broker, "", 0, args.records).await?;
    let log = broker
        .streams()
        .get("bench")
        .ok_or_else(|| anyhow::anyhow!("no stream"))?
        .log;
    let stats = log.stats();
    println!(
        "loaded in {:.1} s ({:.0} records/s), {} MiB in {} segments",
        took.as_secs_f64(),
        args.records as f64 / took.as_secs_f64(),
        stats.bytes >> 20,
        stats.segments
    );
    // What the server's background task does as segments are sealed.
    let started = Instant::now();
    engine
        .sync_column_files(&tokio_util::sync::CancellationToken::new())
        .await;
    println!(
        "column files for {} sealed segments built in {:.2} s",
        stats.segments.saturating_sub(1),
        started.elapsed().as_secs_f64()
    );
    let first = stats.first_timestamp_ms.unwrap_or(0);
    let last = stats.last_timestamp_ms.unwrap_or(0);
    let cut = last - (last - first) / 100;
    let queries = [
        ("a count(*)", "SELECT count(*) FROM bench".to_owned()),
        (
            "b avg(json temp) by topic",
            "SELECT topic, avg(json_get_float(payload, 'temp')) FROM bench GROUP BY topic"
                .to_owned(),
        ),
        (
            "c (b) over last 1% of time",
            format!(
                "SELECT topic, avg(json_get_float(payload, 'temp')) FROM bench \
                 WHERE ts >= to_timestamp_millis({cut}) GROUP BY topic"
            ),
        ),
        (
            "d avg(typed temp) by topic",
            "SELECT topic, avg(temp) FROM bench GROUP BY topic".to_owned(),
        ),
    ];
    let engine = &engine;
    let mut tidewire_ms = Vec::new();
    for (_, sql) in &queries {
        tidewire_ms.push(
            time(3, || async move {
                engine.query(sql).await?;
                Ok(())
            })
            .await?,
        );
    }

    // DataFusion over the same data as typed, in-memory Arrow batches.
    let mut ctx = SessionContext::new();
    datafusion_functions_json::register_all(&mut ctx)?;
    ctx.register_table("mem", Arc::new(mem_table(&log)?))?;
    let ctx = &ctx;
    let mem_queries = [
        "SELECT count(*) FROM mem".to_owned(),
        "SELECT topic, avg(json_get_float(payload, 'temp')) FROM mem GROUP BY topic".to_owned(),
        format!(
            "SELECT topic, avg(json_get_float(payload, 'temp')) FROM mem \
             WHERE ts >= to_timestamp_millis({cut}) GROUP BY topic"
        ),
        "SELECT topic, avg(temp) FROM mem GROUP BY topic".to_owned(),
    ];
    let mut mem_ms = Vec::new();
    for sql in &mem_queries {
        mem_ms.push(
            time(3, || async move {
                ctx.sql(sql).await?.collect().await?;
                Ok(())
            })
            .await?,
        );
    }

    let peers = if args.no_duckdb {
        None
    } else {
        duckdb(&log, dir.path(), cut)?
    };

    let mut rows = Vec::new();
    for (i, (name, _)) in queries.iter().enumerate() {
        let mut row = vec![
            name.to_string(),
            format!("{:.1}", tidewire_ms[i]),
            format!("{:.1}", mem_ms[i]),
        ];
        match &peers {
            Some(p) => {
                row.push(format!("{:.1}", p.duck_ndjson[i]));
                row.push(format!("{:.1}", p.duck_parquet[i]));
            }
            None => row.extend(["-".to_owned(), "-".to_owned()]),
        }
        let datafusion_parquet = peers.as_ref().and_then(|p| p.datafusion_parquet);
        row.push(match (i, datafusion_parquet) {
            (0, Some((count, _))) => format!("{count:.1}"),
            (3, Some((_, typed))) => format!("{typed:.1}"),
            _ => "-".to_owned(),
        });
        rows.push(row);
    }
    println!();
    print_table(
        &[
            "query",
            "tidewire ms",
            "DataFusion MemTable ms",
            "DuckDB NDJSON ms",
            "DuckDB Parquet ms",
            "DataFusion Parquet ms",
        ],
        &rows,
    );
    println!();
    println!(
        "(b)/(c) pruning speed-up: {:.1}x (target >= 50x)",
        tidewire_ms[1] / tidewire_ms[2]
    );
    println!(
        "(d) vs DataFusion MemTable typed avg: {:.2}x",
        tidewire_ms[3] / mem_ms[3]
    );
    if let Some(p) = &peers {
        if let Some((_, typed)) = p.datafusion_parquet {
            println!(
                "(d) vs DataFusion Parquet: {:.2}x (target <= 1.5x)",
                tidewire_ms[3] / typed
            );
        }
        println!(
            "(d) vs DuckDB Parquet: {:.2}x",
            tidewire_ms[3] / p.duck_parquet[3]
        );
    }

    // Dashboard query at two stream sizes.
    let small = args.dashboard_records.min(100_000);
    let mut dash_rows = Vec::new();
    let mut loaded = 0;
    for size in [small, args.dashboard_records] {
        load(&broker, "dash/", loaded, size).await?;
        loaded = size;
        let dash = broker
            .streams()
            .get("dash")
            .ok_or_else(|| anyhow::anyhow!("no stream"))?
            .log;
        let next = dash.stats().next_offset;
        let since = dash
            .scan(next.saturating_sub(DASHBOARD_WINDOW)..next)
            .next()
            .ok_or_else(|| anyhow::anyhow!("empty stream"))??
            .timestamp_ms;
        let sql = format!(
            "SELECT topic, count(*) AS n, avg(json_get_float(payload, 'temp')) AS t FROM dash \
             WHERE ts >= to_timestamp_millis({since}) GROUP BY topic ORDER BY n DESC LIMIT 10"
        );
        let mut latencies = Latencies::default();
        for _ in 0..args.repeat {
            let started = Instant::now();
            engine.query(&sql).await?;
            latencies.record(started.elapsed());
        }
        dash_rows.push(vec![
            size.to_string(),
            format!("{:.2}", latencies.percentile_ms(50.0)),
            format!("{:.2}", latencies.percentile_ms(99.0)),
        ]);
    }
    println!();
    println!(
        "dashboard query (time range of the last {DASHBOARD_WINDOW} records, by topic, top 10), plan + execute:"
    );
    print_table(&["stream records", "p50 ms", "p99 ms"], &dash_rows);
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS {rss:.0} MiB");
    }
    Ok(())
}

/// The bench stream as typed in-memory batches (ts, topic, payload, temp).
fn mem_table(log: &tidewire_storage::StreamLog) -> anyhow::Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("topic", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
        Field::new("temp", DataType::Float64, true),
    ]));
    let mut batches = Vec::new();
    let mut records = log.scan(0..u64::MAX).peekable();
    while records.peek().is_some() {
        let chunk: Vec<_> = records.by_ref().take(8192).collect::<Result<_, _>>()?;
        let temps: Vec<Option<f64>> = chunk
            .iter()
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.message.payload)
                    .ok()
                    .and_then(|v| v.get("temp").and_then(|t| t.as_f64()))
            })
            .collect();
        batches.push(RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        chunk.iter().map(|r| r.timestamp_ms),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|r| r.message.topic.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| {
                    String::from_utf8_lossy(&r.message.payload).into_owned()
                }))),
                Arc::new(Float64Array::from(temps)),
            ],
        )?);
    }
    Ok(MemTable::try_new(schema, vec![batches])?)
}

const DUCKDB_SCRIPT: &str = r#"
import sys, time, duckdb
ndjson, parquet, cut = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"COPY (SELECT * FROM read_json_auto('{ndjson}')) TO '{parquet}' (FORMAT PARQUET)")
def med(sql):
    times = []
    for _ in range(3):
        t = time.perf_counter(); con.execute(sql).fetchall(); times.append((time.perf_counter() - t) * 1000)
    return sorted(times)[1]
for src in (f"read_json_auto('{ndjson}')", f"read_parquet('{parquet}')"):
    qs = [f"SELECT count(*) FROM {src}",
          f"SELECT topic, avg(CAST(json_extract(payload, '$.temp') AS DOUBLE)) FROM {src} GROUP BY topic",
          f"SELECT topic, avg(CAST(json_extract(payload, '$.temp') AS DOUBLE)) FROM {src} WHERE ts >= {cut} GROUP BY topic",
          f"SELECT topic, avg(temp) FROM {src} GROUP BY topic"]
    print(" ".join(f"{med(q):.3f}" for q in qs))
"#;

const DATAFUSION_SCRIPT: &str = r#"
import sys, time
from datafusion import SessionContext
ctx = SessionContext()
ctx.register_parquet("bench", sys.argv[1])
def med(sql):
    times = []
    for _ in range(3):
        t = time.perf_counter(); ctx.sql(sql).collect(); times.append((time.perf_counter() - t) * 1000)
    return sorted(times)[1]
print(f"{med('SELECT count(*) FROM bench'):.3f} {med('SELECT topic, avg(temp) FROM bench GROUP BY topic'):.3f}")
"#;

/// Times in ms: DuckDB over NDJSON and over Parquet (the four queries),
/// and DataFusion over Parquet ((a) and (d)); `None` where a Python
/// package is missing.
struct PeerTimes {
    duck_ndjson: Vec<f64>,
    duck_parquet: Vec<f64>,
    datafusion_parquet: Option<(f64, f64)>,
}

fn parse_times(line: &str) -> Vec<f64> {
    line.split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// DuckDB's times over NDJSON and Parquet of the same records, or `None`
/// when Python's `duckdb` is missing.
fn duckdb(
    log: &tidewire_storage::StreamLog,
    dir: &Path,
    cut: i64,
) -> anyhow::Result<Option<PeerTimes>> {
    let ndjson = dir.join("bench.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ndjson)?);
    for record in log.scan(0..u64::MAX) {
        let r = record?;
        let payload = String::from_utf8_lossy(&r.message.payload);
        let temp = serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("temp").and_then(|t| t.as_f64()));
        let line = serde_json::json!({ "ts": r.timestamp_ms, "topic": r.message.topic, "payload": payload, "temp": temp });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let parquet = dir.join("bench.parquet");
    let Some(text) = python(
        "DuckDB",
        DUCKDB_SCRIPT,
        &[&ndjson, &parquet],
        &[cut.to_string()],
    )?
    else {
        return Ok(None);
    };
    let mut lines = text.lines().map(parse_times);
    let datafusion_parquet = python("DataFusion (Python)", DATAFUSION_SCRIPT, &[&parquet], &[])?
        .map(|text| parse_times(&text))
        .and_then(|t| (t.len() == 2).then(|| (t[0], t[1])));
    match (lines.next(), lines.next()) {
        (Some(nd), Some(pq)) if nd.len() == 4 && pq.len() == 4 => Ok(Some(PeerTimes {
            duck_ndjson: nd,
            duck_parquet: pq,
            datafusion_parquet,
        })),
        _ => anyhow::bail!("unexpected DuckDB output: {text}"),
    }
}
