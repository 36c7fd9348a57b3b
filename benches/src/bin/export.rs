//! Stream export (issue 17), three measurements:
//!
//! 1. **Export throughput.** A real tidewire (the release binary next to
//!    this one) gets `--records` MQTT QoS 1 publishes of JSON readings
//!    over `--connections` connections into one stream (untimed). Then an
//!    export of that stream to a local directory is created with
//!    `POST /api/v1/exports` (default 64 MiB, `--max-interval`), and the
//!    time until `GET /api/v1/exports/bench` shows every record in a
//!    completed file (`records == N`, `lag_records == 0`) is timed. The
//!    exported files are then read back (every offset exactly once is
//!    checked) and written as NDJSON; DuckDB (Python `duckdb`) loads that
//!    into a table (untimed) and `COPY r TO 'x.parquet' (FORMAT parquet,
//!    COMPRESSION zstd)` of the same columns is timed (median of 3), also
//!    at zstd level 1, the level tidewire writes.
//! 2. **Pruned history query.** 30 days of history files are written as
//!    the exporter writes them (`tidewire_export::writer::parquet`,
//!    `dt=YYYY-MM-DD/hour=HH/<export>-<first>-<last>.parquet`, a file per
//!    `--history-file-minutes` as a `max_interval` flush makes), below
//!    the first offset of a live stream whose older segments are gone.
//!    A one-hour `ts`-range aggregate then runs on `events_history`
//!    through tidewire's SQL engine in-process (the history table prunes
//!    files by their footers' `ts` and row groups by statistics), and on
//!    DataFusion `ListingTable`s over the same files: pruning off
//!    (`datafusion.execution.parquet.pruning = false`, no page index, no
//!    statistics, no partition columns) and, for reference, on (Hive
//!    partitions, statistics). Files, row groups and bytes read are
//!    counted by a wrapper around the object store all three read through.
//! 3. **CPU cost.** A fresh broker ingests `--rate` msg/s (paced MQTT
//!    QoS 1) for `--cpu-secs`, without and then with an export of the
//!    stream; the broker's CPU (utime + stime, `/proc/PID/stat`) over the
//!    same window, per thread too (`/proc/PID/task/*/stat`).
//!
//! `--only export,history,cpu` picks what runs; smaller `--records`,
//! `--history-days` and `--cpu-secs` make a quick run.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use datafusion::arrow::array::{
    Array, BinaryArray, BooleanArray, Float64Array, Int8Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::{Value, json};
use tidewire_benches::peers::{start_tidewire, tidewire_bin};
use tidewire_benches::raw_mqtt;
use tidewire_benches::{
    TICKS_PER_SECOND, cpu_ticks, in_process_broker, machine_busy_ticks, peak_rss_mib, print_table,
    python, rss_kib,
};
use tidewire_core::{Message, Record, Source, StreamConfig};
use tidewire_export::partition::Template;
use tidewire_sql::{Histories, HistorySource, RecordBatches, SqlEngine, SqlLimits, SqlMetrics};
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(about = "Stream export: throughput beside DuckDB, pruned history queries, CPU cost")]
struct Args {
    /// The tidewire binary (default: the one next to this program).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// What runs: export, history, cpu (comma-separated).
    #[arg(long, default_value = "export,history,cpu", value_delimiter = ',')]
    only: Vec<String>,
    /// Records in the exported stream.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// MQTT connections publishing them.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The export's `max_interval`: the tail is flushed this long after its
    /// first record (the export's `max_bytes` is the default, 64 MiB).
    #[arg(long, default_value = "1s")]
    max_interval: String,
    /// Skip DuckDB.
    #[arg(long)]
    no_duckdb: bool,
    /// Days of exported history.
    #[arg(long, default_value_t = 30)]
    history_days: u64,
    /// Records per second of the exported stream over those days.
    #[arg(long, default_value_t = 10)]
    history_rate: u64,
    /// Minutes of records per history file (the export's `max_interval`;
    /// at most one hour, a file never spans two hour partitions).
    #[arg(long, default_value_t = 5)]
    history_file_minutes: u64,
    /// Timed runs of each history query (after a first, cold one).
    #[arg(long, default_value_t = 5)]
    query_runs: usize,
    /// Messages per second of the CPU runs.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds each CPU run publishes for.
    #[arg(long, default_value_t = 20)]
    cpu_secs: u64,
    /// The export's `max_interval` in the CPU runs (default `max_bytes`):
    /// the window lasts this long (plus 2 s) after publishing stops, so
    /// the export has flushed everything within it.
    #[arg(long, default_value = "5s")]
    cpu_max_interval: String,
    /// The stream's fsync policy in the CPU runs.
    #[arg(long, default_value = "always")]
    cpu_fsync: String,
    /// Pairs of CPU runs (without, with an export).
    #[arg(long, default_value_t = 2)]
    cpu_rounds: usize,
}

/// The export's name, and so its files' prefix.
const EXPORT: &str = "bench";
/// The publisher's in-flight window at QoS 1, and the broker's.
const WINDOW: usize = 1000;
/// Publishes per write.
const BATCH: usize = 64;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = tidewire_bin(args.tidewire.as_deref())?;
    for part in &args.only {
        match part.as_str() {
            "export" => export_throughput(&args, &bin).await?,
            "history" => history_query(&args).await?,
            "cpu" => cpu_cost(&args, &bin).await?,
            other => bail!("unknown part {other:?} (export, history, cpu)"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Records

/// The `n`-th reading: a topic out of 1,000 devices on 8 sites and a JSON
/// payload of about 90 bytes, the same for every `n` in every run.
fn reading(n: u64) -> (String, String) {
    let h = splitmix(n);
    let device = h % 1000;
    let site = device % 8;
    let temp = 15.0 + (h >> 10) as f64 % 2000.0 / 100.0;
    let humidity = 30.0 + (h >> 24) as f64 % 500.0 / 10.0;
    let battery = (h >> 40) % 101;
    (
        format!("sensors/site-{site}/d-{device:04}"),
        format!(
            "{{\"device\":\"d-{device:04}\",\"temp\":{temp:.2},\"humidity\":{humidity:.1},\
             \"battery\":{battery},\"seq\":{n}}}"
        ),
    )
}

fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Publishes `total` readings at QoS 1 over `connections` connections (as
/// fast as the window allows, or at `rate` msg/s in 10 ms ticks); returns
/// how many were acknowledged and how long it took.
async fn publish(
    mqtt: SocketAddr,
    connections: usize,
    total: u64,
    rate: Option<u64>,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections as u64 {
        let count = total / connections as u64 + u64::from(c < total % connections as u64);
        let per_tick = rate.map(|r| (r / connections as u64 / 100).max(1));
        tasks.push(tokio::spawn(publisher(
            mqtt,
            c,
            connections as u64,
            count,
            per_tick,
        )));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await??;
    }
    Ok((acked, started.elapsed()))
}

/// One connection's share: readings `c`, `c + stride`, ... .
async fn publisher(
    mqtt: SocketAddr,
    c: u64,
    stride: u64,
    count: u64,
    per_tick: Option<u64>,
) -> Result<u64> {
    let (reader, mut writer) = raw_mqtt::connect(mqtt, &format!("gw-{c}")).await?;
    let window = Arc::new(Semaphore::new(WINDOW));
    let acks = raw_mqtt::count_pubacks(reader, count, Arc::clone(&window));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut batch = Vec::new();
    let (mut sent, mut pkid) = (0u64, 0u16);
    while sent < count {
        let quota = match per_tick {
            Some(n) => {
                tick.tick().await;
                n.min(count - sent)
            }
            None => count - sent,
        };
        let mut done = 0;
        while done < quota {
            window.acquire().await?.forget();
            let n = raw_mqtt::take_free(&window, (BATCH as u64).min(quota - done));
            batch.clear();
            for i in 0..n {
                pkid = pkid.wrapping_add(1).max(1);
                let (topic, payload) = reading(c + (sent + done + i) * stride);
                raw_mqtt::put_publish(&mut batch, &topic, 1, pkid, payload.as_bytes());
            }
            raw_mqtt::send(&mut writer, &batch).await?;
            done += n;
        }
        sent += quota;
    }
    let acked = acks.await??;
    raw_mqtt::disconnect(&mut writer).await?;
    Ok(acked)
}

// ---------------------------------------------------------------------
// The broker: API, CPU, memory

/// tidewire's HTTP API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{addr}/api/v1"),
        }
    }

    /// Creates the export `definition`.
    async fn create_export(&self, definition: &Value) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/exports", self.base))
            .json(definition)
            .send()
            .await?;
        let status = response.status();
        ensure!(
            status.is_success(),
            "creating the export: {status} {}",
            response.text().await?
        );
        Ok(())
    }

    /// The export's figures (`stats`).
    async fn export_stats(&self, name: &str) -> Result<ExportStats> {
        let view: Value = self
            .http
            .get(format!("{}/exports/{name}", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let stats = &view["stats"];
        let n = |key: &str| stats[key].as_u64().unwrap_or(0);
        Ok(ExportStats {
            records: n("records"),
            files: n("files"),
            bytes: n("bytes"),
            lag_records: n("lag_records"),
            failures: n("failures"),
            last_error: stats["last_error"].as_str().map(str::to_owned),
        })
    }

    /// Waits until export `name` has written `records` records and lags
    /// by none; its last figures, and when (since `since`) its count of
    /// records written changed to what.
    async fn await_export(
        &self,
        name: &str,
        records: u64,
        since: Instant,
        patience: Duration,
    ) -> Result<(ExportStats, Vec<(f64, u64)>)> {
        let deadline = Instant::now() + patience;
        let mut changes: Vec<(f64, u64)> = Vec::new();
        loop {
            let stats = self.export_stats(name).await?;
            if changes.last().is_none_or(|(_, n)| *n != stats.records) {
                changes.push((since.elapsed().as_secs_f64(), stats.records));
            }
            if stats.records >= records && stats.lag_records == 0 {
                return Ok((stats, changes));
            }
            ensure!(
                Instant::now() < deadline,
                "export {name} did not catch up: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ExportStats {
    records: u64,
    files: u64,
    bytes: u64,
    lag_records: u64,
    failures: u64,
    last_error: Option<String>,
}

/// An export of stream `events` into `dir`.
fn export_definition(dir: &Path, max_interval: &str) -> Value {
    json!({
        "name": EXPORT,
        "stream": "events",
        "url": format!("file://{}", dir.display()),
        "max_interval": max_interval,
    })
}

/// The broker's configuration: the stream `events` of the readings.
fn broker_config(fsync: &str) -> String {
    format!(
        "[mqtt]\nmax_inflight = {WINDOW}\n\n[[streams]]\nname = \"events\"\n\
         filters = [\"sensors/#\"]\nfsync = \"{fsync}\"\n"
    )
}

/// CPU ticks each thread of `pid` has used, by thread id, with its name.
fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if let Ok(tid) = task.file_name().to_string_lossy().parse() {
            threads.insert(tid, (name, ticks(11) + ticks(12)));
        }
    }
    threads
}

/// Each thread's ticks between two [`thread_ticks`], busiest first (a
/// thread that ended in between is missing).
fn thread_delta(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
) -> Vec<(String, u64)> {
    let mut delta: Vec<(String, u64)> = after
        .iter()
        .map(|(tid, (name, ticks))| {
            let was = before.get(tid).map_or(0, |(_, t)| *t);
            (format!("{name} ({tid})"), ticks.saturating_sub(was))
        })
        .filter(|(_, t)| *t > 0)
        .collect();
    delta.sort_by_key(|d| std::cmp::Reverse(d.1));
    delta
}

/// Peak resident memory of `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Waits (at most a minute) until `pid` uses under 5% of a core, e.g.
/// once the SQL engine has built the column files of sealed segments.
async fn wait_idle(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = cpu_ticks(pid).context("broker CPU")?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_ticks(pid).context("broker CPU")?;
        if now - last <= 5 || Instant::now() > deadline {
            return Ok(());
        }
        last = now;
    }
}

/// CPU ticks the machine spends outside `pids` (and this process) from
/// when it is made until [`Others::ticks`]: other processes, to tell a
/// quiet run from a disturbed one.
struct Others {
    machine: u64,
    ours: u64,
    pids: Vec<u32>,
}

impl Others {
    fn start(pids: &[u32]) -> Others {
        Others {
            machine: machine_busy_ticks().unwrap_or(0),
            ours: Others::ours(pids),
            pids: pids.to_vec(),
        }
    }

    fn ours(pids: &[u32]) -> u64 {
        pids.iter()
            .chain([std::process::id()].iter())
            .filter_map(|&pid| cpu_ticks(pid))
            .sum()
    }

    /// Ticks of other processes so far, less `also` (ticks of a process
    /// that has ended, counted by itself).
    fn ticks(&self, also: u64) -> u64 {
        let machine = machine_busy_ticks().unwrap_or(0) - self.machine;
        machine.saturating_sub(Others::ours(&self.pids) - self.ours + also)
    }
}

fn secs(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Every `*.parquet` file under `dir`, with its size.
fn parquet_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push((path, entry.metadata()?.len()));
            }
        }
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------
// 1. Export throughput beside DuckDB

async fn export_throughput(args: &Args, bin: &Path) -> Result<()> {
    let n = args.records;
    println!("== Export throughput: {n} records into local Parquet ==");
    let peer = start_tidewire(bin, &broker_config("never")).await?;
    let pid = peer.child.id().context("broker pid")?;
    let api = Api::new(peer.websocket.context("no HTTP listener")?);
    let (acked, fill) = publish(peer.mqtt, args.connections, n, None).await?;
    ensure!(acked == n, "{acked} of {n} publishes acknowledged");
    println!(
        "filled: {n} publishes in {:.1} s ({} msg/s, untimed); waiting for the broker to idle",
        fill.as_secs_f64(),
        thousands(n as f64 / fill.as_secs_f64())
    );
    wait_idle(pid).await?;

    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let lake = dir.path().join("lake");
    std::fs::create_dir(&lake)?;
    let threads_before = thread_ticks(pid);
    let ticks_before = cpu_ticks(pid).context("broker CPU")?;
    let others = Others::start(&[pid]);
    let started = Instant::now();
    api.create_export(&export_definition(&lake, &args.max_interval))
        .await?;
    let (stats, changes) = api
        .await_export(EXPORT, n, started, Duration::from_secs(3600))
        .await?;
    let elapsed = started.elapsed();
    let broker_ticks = cpu_ticks(pid).context("broker CPU")? - ticks_before;
    let others_export = others.ticks(0);
    let threads = thread_delta(&threads_before, &thread_ticks(pid));
    let broker_rss = rss_kib(pid).unwrap_or(0);
    let broker_peak = peak_rss_kib(pid).unwrap_or(0);
    ensure!(
        stats.failures == 0,
        "the export failed {} times: {:?}",
        stats.failures,
        stats.last_error
    );
    drop(peer);

    let files = parquet_files(&lake)?;
    let file_bytes: u64 = files.iter().map(|(_, size)| size).sum();
    ensure!(
        files.len() as u64 == stats.files,
        "{} files on disk, the export says {}",
        files.len(),
        stats.files
    );
    // The same records for DuckDB, from the files: every offset once.
    let ndjson = dir.path().join("records.ndjson");
    let (paths, out) = (files.clone(), ndjson.clone());
    let raw_bytes = tokio::task::spawn_blocking(move || write_ndjson(&paths, n, &out)).await??;

    let secs_taken = elapsed.as_secs_f64();
    let mut rows = vec![vec![
        "tidewire export".to_owned(),
        thousands(n as f64 / secs_taken),
        format!("{:.1}", mib(raw_bytes) / secs_taken),
        format!("{:.1}", mib(file_bytes) / secs_taken),
        format!("{secs_taken:.2}"),
        format!("{:.1}", mib(file_bytes)),
        files.len().to_string(),
        format!(
            "{:.0} (peak {:.0})",
            broker_rss as f64 / 1024.0,
            broker_peak as f64 / 1024.0
        ),
        format!("{:.2}", secs(broker_ticks) / secs_taken),
    ]];
    let duck = if args.no_duckdb {
        None
    } else {
        let others = Others::start(&[]);
        duckdb(&ndjson, &dir.path().join("duckdb.parquet"))?.map(|mut duck| {
            duck.others_secs = secs(others.ticks((duck.cpu_secs * TICKS_PER_SECOND) as u64));
            duck
        })
    };
    if let Some(duck) = &duck {
        println!(
            "DuckDB {}: loaded {} rows from NDJSON in {:.1} s (untimed), {} threads",
            duck.version, duck.rows, duck.load_secs, duck.threads
        );
        ensure!(duck.rows == n, "DuckDB loaded {} rows of {n}", duck.rows);
        for (label, copy) in [
            ("DuckDB COPY, zstd (default level)", &duck.default_level),
            ("DuckDB COPY, zstd level 1", &duck.level_1),
        ] {
            rows.push(vec![
                label.to_owned(),
                thousands(n as f64 / copy.secs),
                format!("{:.1}", mib(raw_bytes) / copy.secs),
                format!("{:.1}", mib(copy.bytes) / copy.secs),
                format!("{:.2}", copy.secs),
                format!("{:.1}", mib(copy.bytes)),
                "1".to_owned(),
                format!("{:.0} (peak)", duck.peak_rss_kib as f64 / 1024.0),
                format!("{:.2}", copy.cpu_secs / copy.secs),
            ]);
        }
    }
    println!();
    print_table(
        &[
            "",
            "records/s",
            "raw MB/s",
            "file MB/s",
            "s",
            "file MB",
            "files",
            "RSS MiB",
            "cores",
        ],
        &rows,
    );
    println!(
        "raw = the columns' bytes ({:.1} MiB: 8+8 offset and ts, topic, client_id, 1+1 qos and retain, payload twice: text and bytes); \
         MB are MiB",
        mib(raw_bytes)
    );
    println!(
        "tidewire timed from POST /api/v1/exports until every record is in a completed file \
         (includes reading the stream's segments, and the last buffer's wait of up to max_interval = {}); \
         DuckDB timed: the COPY from its in-memory table only (median of 3)",
        args.max_interval
    );
    if let Some(duck) = &duck {
        let ratio = (n as f64 / secs_taken) / (n as f64 / duck.default_level.secs);
        println!(
            "target: export at least 50% of DuckDB's COPY throughput: {} ({:.0}%; {:.0}% of its level-1 COPY)",
            if ratio >= 0.5 { "met" } else { "NOT met" },
            ratio * 100.0,
            (n as f64 / secs_taken) / (n as f64 / duck.level_1.secs) * 100.0
        );
    }
    println!(
        "broker CPU during the export: {:.1} s over {secs_taken:.1} s; busiest threads:",
        secs(broker_ticks)
    );
    print_threads(&threads, broker_ticks);
    println!(
        "other processes on the machine meanwhile: {:.2} CPU s during the export{}",
        secs(others_export),
        duck.as_ref().map_or(String::new(), |d| format!(
            ", {:.2} CPU s during DuckDB's load and COPYs",
            d.others_secs
        ))
    );
    if let [.., (t, before_last), _] = changes.as_slice()
        && *before_last > 0
    {
        println!(
            "before the last file: {} records in {t:.2} s = {} records/s (the last one waits for its max_interval)",
            before_last,
            thousands(*before_last as f64 / t)
        );
    }
    let parts = tokio::task::spawn_blocking(move || exporter_parts(&files)).await??;
    println!(
        "the exporter's own parts on the same records, one thread in this process: \
         Arrow batches from records (tidewire_sql::RecordBatches) {:.2} s = {} records/s; \
         zstd Parquet (tidewire_export::writer::parquet) {:.2} s = {} records/s, {:.1} MiB; \
         both: {} records/s per core",
        parts.build_secs,
        thousands(parts.rows as f64 / parts.build_secs),
        parts.encode_secs,
        thousands(parts.rows as f64 / parts.encode_secs),
        mib(parts.bytes),
        thousands(parts.rows as f64 / (parts.build_secs + parts.encode_secs)),
    );
    println!();
    Ok(())
}

/// What the exporter's two steps cost without the broker around them.
struct Parts {
    rows: u64,
    build_secs: f64,
    encode_secs: f64,
    bytes: u64,
}

/// Times, file by file, turning the files' records back into Arrow
/// batches as the export sink does, and encoding those as it does.
/// Making the `Record`s is not timed (the broker's log reader makes its
/// own).
fn exporter_parts(files: &[(PathBuf, u64)]) -> Result<Parts> {
    let mut parts = Parts {
        rows: 0,
        build_secs: 0.0,
        encode_secs: 0.0,
        bytes: 0,
    };
    for (path, _) in files {
        let mut records = Vec::new();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?
            .with_batch_size(65536)
            .build()?;
        for batch in reader {
            let batch = batch?;
            let column = |i: usize| batch.column(i).as_any();
            let offset = column(0).downcast_ref::<Int64Array>().context("offset")?;
            let ts = column(1)
                .downcast_ref::<TimestampMillisecondArray>()
                .context("ts")?;
            let topic = column(2).downcast_ref::<StringArray>().context("topic")?;
            let client = column(3).downcast_ref::<StringArray>().context("client")?;
            let qos = column(4).downcast_ref::<Int8Array>().context("qos")?;
            let retain = column(5).downcast_ref::<BooleanArray>().context("retain")?;
            let payload = column(7).downcast_ref::<BinaryArray>().context("bytes")?;
            for i in 0..batch.num_rows() {
                records.push(Record {
                    offset: offset.value(i) as u64,
                    timestamp_ms: ts.value(i),
                    message: Message {
                        topic: topic.value(i).to_owned(),
                        client_id: client.value(i).to_owned(),
                        qos: qos.value(i) as u8,
                        retain: retain.value(i),
                        payload: Bytes::copy_from_slice(payload.value(i)),
                        ..Message::default()
                    },
                });
            }
        }
        let started = Instant::now();
        let mut batches = RecordBatches::new(&[]);
        for record in &records {
            batches.push(record);
        }
        let batch = batches.finish()?;
        parts.build_secs += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let file = tidewire_export::writer::parquet(
            &batch.schema(),
            &[batch],
            tidewire_export::config::DEFAULT_ROW_GROUP_ROWS,
        )?;
        parts.encode_secs += started.elapsed().as_secs_f64();
        parts.bytes += file.len() as u64;
        parts.rows += records.len() as u64;
    }
    Ok(parts)
}

fn print_threads(threads: &[(String, u64)], total: u64) {
    let listed: u64 = threads.iter().map(|(_, t)| t).sum();
    let mut rows: Vec<Vec<String>> = threads
        .iter()
        .take(8)
        .map(|(name, t)| vec![name.clone(), format!("{:.2}", secs(*t))])
        .collect();
    rows.push(vec![
        "threads that ended, and the rest".to_owned(),
        format!(
            "{:.2}",
            secs(
                total.saturating_sub(listed) + threads.iter().skip(8).map(|(_, t)| t).sum::<u64>()
            )
        ),
    ]);
    print_table(&["thread (tid)", "CPU s"], &rows);
}

/// One NDJSON line of the DuckDB input.
#[derive(Serialize)]
struct Line<'a> {
    offset: i64,
    ts: i64,
    topic: &'a str,
    client_id: &'a str,
    qos: i8,
    retain: bool,
    payload: Option<&'a str>,
}

/// The column `name` of a batch read from `file`, as the array type `T`.
fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
    file: &Path,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .with_context(|| format!("{}: no column {name}", file.display()))?
        .as_any()
        .downcast_ref::<T>()
        .with_context(|| {
            format!(
                "{}: column {name} is not a {}",
                file.display(),
                std::any::type_name::<T>()
            )
        })
}

/// Reads the exported files, checks they hold offsets `0..n` exactly
/// once, and writes their records to `out` as NDJSON; returns the
/// records' raw column bytes.
fn write_ndjson(files: &[(PathBuf, u64)], n: u64, out: &Path) -> Result<u64> {
    let mut seen = vec![false; n as usize];
    let mut writer = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut raw = 0u64;
    for (path, _) in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?
            .with_batch_size(65536)
            .build()?;
        for batch in reader {
            let batch = batch?;
            let offset = column::<Int64Array>(&batch, "offset", path)?;
            let ts = column::<TimestampMillisecondArray>(&batch, "ts", path)?;
            let topic = column::<StringArray>(&batch, "topic", path)?;
            let client = column::<StringArray>(&batch, "client_id", path)?;
            let qos = column::<Int8Array>(&batch, "qos", path)?;
            let retain = column::<BooleanArray>(&batch, "retain", path)?;
            let payload = column::<StringArray>(&batch, "payload", path)?;
            let bytes = column::<BinaryArray>(&batch, "payload_bytes", path)?;
            for i in 0..batch.num_rows() {
                let o = offset.value(i);
                let slot = seen
                    .get_mut(usize::try_from(o).unwrap_or(usize::MAX))
                    .with_context(|| format!("offset {o} is not below {n}"))?;
                ensure!(!*slot, "offset {o} exported twice");
                *slot = true;
                let text = payload.is_valid(i).then(|| payload.value(i));
                ensure!(
                    text.map(str::as_bytes) == Some(bytes.value(i)),
                    "offset {o}: payload and payload_bytes differ"
                );
                raw += 18
                    + (topic.value(i).len() + client.value(i).len() + 2 * bytes.value(i).len())
                        as u64;
                serde_json::to_writer(
                    &mut writer,
                    &Line {
                        offset: o,
                        ts: ts.value(i),
                        topic: topic.value(i),
                        client_id: client.value(i),
                        qos: qos.value(i),
                        retain: retain.value(i),
                        payload: text,
                    },
                )?;
                writer.write_all(b"\n")?;
            }
        }
    }
    writer.flush()?;
    let missing = seen.iter().filter(|s| !**s).count();
    ensure!(missing == 0, "{missing} offsets missing from the files");
    Ok(raw)
}

/// DuckDB's side of the same run.
struct Duck {
    version: String,
    threads: String,
    rows: u64,
    load_secs: f64,
    default_level: CopyRun,
    level_1: CopyRun,
    peak_rss_kib: u64,
    /// CPU the Python process used, all of it.
    cpu_secs: f64,
    /// CPU other processes used meanwhile.
    others_secs: f64,
}

/// One COPY: median seconds (wall and CPU) and the file's size.
struct CopyRun {
    secs: f64,
    cpu_secs: f64,
    bytes: u64,
}

const DUCKDB_SCRIPT: &str = r#"
import os, resource, sys, time, duckdb
ndjson, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
con.execute(f"""CREATE TABLE r AS SELECT "offset", epoch_ms(ts) AS ts, topic, client_id, qos, retain,
    payload, encode(payload) AS payload_bytes
    FROM read_json('{ndjson}', format = 'newline_delimited', columns = {{
        'offset': 'BIGINT', 'ts': 'BIGINT', 'topic': 'VARCHAR', 'client_id': 'VARCHAR',
        'qos': 'TINYINT', 'retain': 'BOOLEAN', 'payload': 'VARCHAR'}})""")
load = time.perf_counter() - started
rows = con.execute("SELECT count(*) FROM r").fetchone()[0]
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print("load", duckdb.__version__, threads, rows, f"{load:.3f}")
for label, options in (("default", "FORMAT parquet, COMPRESSION zstd"),
                       ("level1", "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1")):
    runs = []
    for _ in range(3):
        if os.path.exists(out):
            os.remove(out)
        cpu, wall = time.process_time(), time.perf_counter()
        con.execute(f"COPY r TO '{out}' ({options})")
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = sorted(runs)[1]
    print("copy", label, f"{wall:.4f}", f"{cpu:.4f}", os.path.getsize(out))
usage = resource.getrusage(resource.RUSAGE_SELF)
print("rss", usage.ru_maxrss, f"{usage.ru_utime + usage.ru_stime:.2f}")
"#;

/// Runs DuckDB over `ndjson`; `None` (after saying why) when Python's
/// `duckdb` is missing or fails.
fn duckdb(ndjson: &Path, out: &Path) -> Result<Option<Duck>> {
    let Some(text) = python(
        "DuckDB (pip install duckdb)",
        DUCKDB_SCRIPT,
        &[ndjson, out],
        &[],
    )?
    else {
        return Ok(None);
    };
    let mut duck = Duck {
        version: String::new(),
        threads: String::new(),
        rows: 0,
        load_secs: 0.0,
        default_level: CopyRun {
            secs: 0.0,
            cpu_secs: 0.0,
            bytes: 0,
        },
        level_1: CopyRun {
            secs: 0.0,
            cpu_secs: 0.0,
            bytes: 0,
        },
        peak_rss_kib: 0,
        cpu_secs: 0.0,
        others_secs: 0.0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["load", version, threads, rows, load] => {
                duck.version = (*version).to_owned();
                duck.threads = (*threads).to_owned();
                duck.rows = rows.parse()?;
                duck.load_secs = load.parse()?;
            }
            ["copy", label, wall, cpu, bytes] => {
                let copy = CopyRun {
                    secs: wall.parse()?,
                    cpu_secs: cpu.parse()?,
                    bytes: bytes.parse()?,
                };
                if *label == "default" {
                    duck.default_level = copy;
                } else {
                    duck.level_1 = copy;
                }
            }
            ["rss", kib, cpu] => {
                duck.peak_rss_kib = kib.parse()?;
                duck.cpu_secs = cpu.parse()?;
            }
            _ => bail!("unexpected DuckDB output: {line}"),
        }
    }
    ensure!(
        duck.default_level.secs > 0.0 && duck.level_1.secs > 0.0,
        "DuckDB gave no COPY times: {text}"
    );
    Ok(Some(duck))
}

// ---------------------------------------------------------------------
// 2. Pruned history query

/// What the exporter would have written over the history: where each
/// file's row groups are, for counting what a query reads.
struct History {
    files: usize,
    rows: u64,
    bytes: u64,
    row_groups: usize,
    start_ms: i64,
    /// Each file's size and row groups.
    layout: HashMap<StorePath, FileLayout>,
}

/// Where a file's column data is.
#[derive(Debug)]
struct FileLayout {
    /// Each row group's bytes (its column chunks).
    row_groups: Vec<Range<u64>>,
}

/// Writes `days` of history at `rate` records/s ending at the last
/// midnight (UTC) under `lake`, as export `EXPORT` writes it: offsets
/// from 0, a file per `file_minutes` within each hour partition.
fn write_history(lake: &Path, days: u64, rate: u64, file_minutes: u64) -> Result<History> {
    let end_ms = (now_ms() / 86_400_000) * 86_400_000;
    let start_ms = end_ms - (days * 86_400_000) as i64;
    let template =
        Template::parse(tidewire_export::config::DEFAULT_PARTITION).map_err(anyhow::Error::msg)?;
    let per_hour = rate * 3600;
    let per_file = (rate * 60 * file_minutes.clamp(1, 60)).max(1);
    // Each file: (first offset, records).
    let mut plan = Vec::new();
    for hour in 0..days * 24 {
        let mut first = hour * per_hour;
        let end = first + per_hour;
        while first < end {
            let len = per_file.min(end - first);
            plan.push((first, len));
            first += len;
        }
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(0);
    let layout = Mutex::new(HashMap::new());
    let bytes = AtomicU64::new(0);
    let groups = AtomicU64::new(0);
    let ts_of = |offset: u64| start_ms + (offset * 1000 / rate) as i64;
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 0..workers {
            handles.push(scope.spawn(|| -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&(first, len)) = plan.get(i) else {
                        return Ok(());
                    };
                    let mut batches = RecordBatches::new(&[]);
                    for offset in first..first + len {
                        let (topic, payload) = reading(offset);
                        let device = splitmix(offset) % 8;
                        batches.push(&Record {
                            offset,
                            timestamp_ms: ts_of(offset),
                            message: Message {
                                topic,
                                client_id: format!("gw-{device}"),
                                qos: 1,
                                payload: Bytes::from(payload),
                                ..Message::default()
                            },
                        });
                    }
                    let batch = batches.finish()?;
                    let file = tidewire_export::writer::parquet(
                        &batch.schema(),
                        &[batch],
                        tidewire_export::config::DEFAULT_ROW_GROUP_ROWS,
                    )?;
                    let name = format!(
                        "{}/{EXPORT}-{first}-{}.parquet",
                        template.render(ts_of(first)),
                        first + len - 1
                    );
                    let footer = ParquetMetaDataReader::new().parse_and_finish(&file)?;
                    let ranges: Vec<Range<u64>> = footer
                        .row_groups()
                        .iter()
                        .map(|g| {
                            let chunks = g.columns().iter().map(|c| c.byte_range());
                            let start = chunks.clone().map(|(s, _)| s).min().unwrap_or(0);
                            let end = chunks.map(|(s, l)| s + l).max().unwrap_or(0);
                            start..end
                        })
                        .collect();
                    groups.fetch_add(ranges.len() as u64, Ordering::Relaxed);
                    bytes.fetch_add(file.len() as u64, Ordering::Relaxed);
                    let path = lake.join(&name);
                    std::fs::create_dir_all(path.parent().context("a partition")?)?;
                    std::fs::write(&path, &file)?;
                    layout
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(StorePath::from(name), FileLayout { row_groups: ranges });
                }
            }));
        }
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?)
    })?;
    Ok(History {
        files: plan.len(),
        rows: days * 24 * per_hour,
        bytes: bytes.into_inner(),
        row_groups: groups.into_inner() as usize,
        start_ms,
        layout: layout.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The one export the engine sees.
#[derive(Debug)]
struct OneExport(HistorySource);

impl Histories for OneExport {
    fn sources(&self) -> Vec<HistorySource> {
        vec![self.0.clone()]
    }
}

/// What one query read through a [`CountingStore`].
#[derive(Debug, Default, Clone)]
struct Reads {
    /// Files whose footer was read (a read reaching past the last row
    /// group; a reader may fetch more than the footer in it: DataFusion
    /// asks for the last 512 KiB, here the whole file).
    footers: usize,
    footer_bytes: u64,
    /// Files row-group data was read from (other reads).
    data_files: usize,
    /// Row groups any of those reads touched.
    row_groups: usize,
    data_bytes: u64,
}

/// A local store that counts what is read from each file.
#[derive(Debug)]
struct CountingStore {
    inner: LocalFileSystem,
    layout: HashMap<StorePath, FileLayout>,
    reads: Mutex<HashMap<StorePath, Vec<Range<u64>>>>,
}

impl CountingStore {
    fn note(&self, location: &StorePath, range: Range<u64>) {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(location.clone())
            .or_default()
            .push(range);
    }

    /// What was read since the last call.
    fn take(&self) -> Reads {
        let reads = std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Reads::default();
        for (path, ranges) in reads {
            let Some(layout) = self.layout.get(&path) else {
                continue;
            };
            // Past the last row group are the footer and page indexes.
            let data_end = layout.row_groups.iter().map(|g| g.end).max().unwrap_or(0);
            let (footer, data): (Vec<_>, Vec<_>) =
                ranges.into_iter().partition(|r| r.end > data_end);
            let bytes = |ranges: &[Range<u64>]| ranges.iter().map(|r| r.end - r.start).sum::<u64>();
            out.footers += usize::from(!footer.is_empty());
            out.footer_bytes += bytes(&footer);
            out.data_bytes += bytes(&data);
            let groups = layout
                .row_groups
                .iter()
                .filter(|g| data.iter().any(|r| r.start < g.end && g.start < r.end))
                .count();
            out.row_groups += groups;
            out.data_files += usize::from(!data.is_empty());
        }
        out
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> datafusion::object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> datafusion::object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> datafusion::object_store::Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            self.note(location, result.range.clone());
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &StorePath,
        ranges: &[Range<u64>],
    ) -> datafusion::object_store::Result<Vec<Bytes>> {
        for range in ranges {
            self.note(location, range.clone());
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, datafusion::object_store::Result<StorePath>>,
    ) -> BoxStream<'static, datafusion::object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, datafusion::object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> datafusion::object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> datafusion::object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A history query's answer: count and average temperature.
type Answer = (i64, Option<f64>);

fn answer(batches: &[RecordBatch]) -> Result<Answer> {
    let batch = batches.first().context("no rows")?;
    let count = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("count")?
        .value(0);
    let avg = batch
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .context("avg")?;
    Ok((count, avg.is_valid(0).then(|| avg.value(0))))
}

/// Equal counts and averages equal but for the order of additions.
fn same_answer(a: Answer, b: Answer) -> bool {
    a.0 == b.0
        && match (a.1, b.1) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
            (x, y) => x == y,
        }
}

/// One way of running the query, timed.
struct Timed {
    label: String,
    cold_ms: f64,
    times_ms: Vec<f64>,
    cold: Reads,
    warm: Reads,
    answer: Answer,
}

impl Timed {
    fn median_ms(&self) -> f64 {
        let mut t = self.times_ms.clone();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Runs `query` once cold and `runs` times more, counting what the first
/// and the last read.
async fn time_query<F, Fut>(
    label: &str,
    store: &CountingStore,
    runs: usize,
    mut query: F,
) -> Result<Timed>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Answer>>,
{
    store.take();
    let started = Instant::now();
    let answer = query().await?;
    let cold_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cold = store.take();
    let mut times_ms = Vec::new();
    let mut warm = Reads::default();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let again = query().await?;
        times_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            same_answer(again, answer),
            "{label}: {again:?}, before {answer:?}"
        );
        warm = store.take();
    }
    Ok(Timed {
        label: label.to_owned(),
        cold_ms,
        times_ms,
        cold,
        warm,
        answer,
    })
}

async fn history_query(args: &Args) -> Result<()> {
    println!(
        "== History: {} days at {} records/s, a file per {} min, one-hour ts-range aggregate ==",
        args.history_days, args.history_rate, args.history_file_minutes
    );
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let lake = dir.path().join("lake");
    let started = Instant::now();
    let (out, days, rate, minutes) = (
        lake.clone(),
        args.history_days,
        args.history_rate,
        args.history_file_minutes,
    );
    let history =
        tokio::task::spawn_blocking(move || write_history(&out, days, rate, minutes)).await??;
    println!(
        "wrote {} files, {} rows, {} row groups, {:.1} MiB in {:.1} s (untimed)",
        history.files,
        history.rows,
        history.row_groups,
        mib(history.bytes),
        started.elapsed().as_secs_f64()
    );

    // A live stream whose first offset is past the history's last: its
    // older segments are gone, as retention leaves it, so the files below
    // that offset are its history. Its only segment starts there.
    let data = dir.path().join("data");
    let stream_dir = data.join("streams").join("events");
    std::fs::create_dir_all(&stream_dir)?;
    std::fs::write(
        tidewire_storage::segment::log_path(&stream_dir, history.rows),
        tidewire_storage::segment::header(history.rows),
    )?;
    let config: StreamConfig =
        toml::from_str("name = \"events\"\nfilters = [\"sensors/#\"]\nfsync = \"never\"\n")?;
    let spec = config.validate("streams[0]")?;
    let mut registry = Registry::default();
    let broker = in_process_broker(&data, vec![spec], &mut registry)?;
    for n in 0..1000 {
        let (topic, payload) = reading(n);
        broker
            .publish(
                Source::Http,
                Message {
                    topic,
                    client_id: "live".into(),
                    qos: 1,
                    payload: Bytes::from(payload),
                    ..Message::default()
                },
            )
            .await?;
    }
    let first_offset = broker
        .streams()
        .get("events")
        .context("the stream")?
        .log
        .stats()
        .first_offset;
    ensure!(
        first_offset == history.rows,
        "the live stream starts at {first_offset}"
    );
    let engine = SqlEngine::new(
        broker.clone(),
        SqlLimits::default(),
        SqlMetrics::register(&mut registry),
    )?;
    let store = Arc::new(CountingStore {
        inner: LocalFileSystem::new_with_prefix(&lake)?,
        layout: history.layout,
        reads: Mutex::default(),
    });
    let schema: SchemaRef = RecordBatches::new(&[]).schema().clone();
    engine.set_histories(Arc::new(OneExport(HistorySource {
        export: EXPORT.into(),
        stream: "events".into(),
        store: Arc::clone(&store) as Arc<dyn ObjectStore>,
        prefix: StorePath::from(""),
        schema: Arc::clone(&schema),
        full: true,
    })));

    // One hour in the middle of the history.
    let from = history.start_ms + (args.history_days / 2 * 86_400_000) as i64 + 12 * 3_600_000;
    let until = from + 3_600_000;
    let sql = |table: &str| {
        format!(
            "SELECT count(*), avg(json_get_float(payload, 'temp')), max(json_get_float(payload, 'temp')) \
             FROM {table} WHERE ts >= to_timestamp_millis({from}) AND ts < to_timestamp_millis({until})"
        )
    };
    println!("query: {}", sql("events_history"));
    let runs = args.query_runs;

    let others = Others::start(&[]);
    let tidewire = {
        let (engine, text) = (engine.clone(), sql("events_history"));
        time_query("tidewire events_history (pruned)", &store, runs, || {
            let (engine, text) = (engine.clone(), text.clone());
            async move { answer(&engine.query(&text).await?.batches) }
        })
        .await?
    };

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let url = ObjectStoreUrl::parse("lake://history")?;
    let listing = |pruning: bool| -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_target_partitions(cores)
            .with_collect_statistics(pruning)
            .set_bool("datafusion.execution.parquet.pruning", pruning)
            .set_bool("datafusion.execution.parquet.enable_page_index", pruning);
        // DataFusion's default 50 MB footer cache holds fewer footers than
        // 8,640 files have, and a scan in file order then evicts each
        // before it is needed again: every run would re-read every file
        // whole (its 512 KiB footer hint). Room for all of them, so the
        // later runs read only column data.
        let runtime = RuntimeEnvBuilder::new()
            .with_metadata_cache_limit(1 << 30)
            .build_arc()?;
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        datafusion_functions_json::register_all(&mut ctx)?;
        ctx.register_object_store(url.as_ref(), Arc::clone(&store) as Arc<dyn ObjectStore>);
        let parquet =
            ParquetFormat::default().with_options(ctx.state().table_options().parquet.clone());
        let mut options = ListingOptions::new(Arc::new(parquet)).with_file_extension(".parquet");
        if pruning {
            options = options.with_table_partition_cols(vec![
                ("dt".into(), DataType::Utf8),
                ("hour".into(), DataType::Utf8),
            ]);
        }
        let table = ListingTable::try_new(
            ListingTableConfig::new(ListingTableUrl::parse("lake://history/")?)
                .with_listing_options(options)
                .with_schema(Arc::clone(&schema)),
        )?;
        ctx.register_table("history", Arc::new(table))?;
        Ok(ctx)
    };
    let mut timed = vec![tidewire];
    for (pruning, label) in [
        (false, "DataFusion ListingTable, pruning off"),
        (
            true,
            "DataFusion ListingTable, pruning on (Hive partitions, statistics)",
        ),
    ] {
        let ctx = listing(pruning)?;
        let text = sql("history");
        timed.push(
            time_query(label, &store, runs, || {
                let (ctx, text) = (ctx.clone(), text.clone());
                async move { answer(&ctx.sql(&text).await?.collect().await?) }
            })
            .await?,
        );
    }
    let others_queries = secs(others.ticks(0));
    let expected = timed[1].answer;
    for t in &timed {
        ensure!(
            same_answer(t.answer, expected),
            "{}: {:?}, unpruned {:?}",
            t.label,
            t.answer,
            expected
        );
    }
    ensure!(
        expected.0 as u64 == args.history_rate * 3600,
        "{} rows in the hour, expected {}",
        expected.0,
        args.history_rate * 3600
    );
    println!(
        "every way: {} rows in the hour, avg temp {:.4} (answers equal)",
        expected.0,
        expected.1.unwrap_or(f64::NAN)
    );
    let rows: Vec<Vec<String>> = timed
        .iter()
        .map(|t| {
            vec![
                t.label.clone(),
                format!("{:.1}", t.median_ms()),
                format!("{:.1}", t.cold_ms),
                format!("{} / {}", t.warm.data_files, history.files),
                format!("{} / {}", t.warm.row_groups, history.row_groups),
                format!("{:.2}", mib(t.warm.data_bytes + t.warm.footer_bytes)),
                format!(
                    "{} / {:.1} / {:.1}",
                    t.cold.footers,
                    mib(t.cold.footer_bytes),
                    mib(t.cold.data_bytes)
                ),
            ]
        })
        .collect();
    println!();
    print_table(
        &[
            "",
            "median ms",
            "first run ms",
            "files read",
            "row groups read",
            "MiB read",
            "first run: footers / their MiB / data MiB",
        ],
        &rows,
    );
    let ratio = timed[1].median_ms() / timed[0].median_ms();
    println!(
        "median of {runs} runs after a first one (cold: reads footers); files and row groups read: \
         those whose column data was fetched through the store in the last run; \
         bench process peak RSS {:.0} MiB",
        peak_rss_mib().unwrap_or(0.0)
    );
    println!("other processes on the machine meanwhile: {others_queries:.2} CPU s");
    // What every tidewire query does first: list the export's files.
    let mut listings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let listed: Vec<ObjectMeta> = store.inner.list(None).try_collect().await?;
        listings.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(listed.len() == history.files, "listed {}", listed.len());
    }
    listings.sort_by(f64::total_cmp);
    println!(
        "listing the {} files through the store (each tidewire query does): {:.1} ms (median of 5)",
        history.files, listings[2]
    );
    println!(
        "target: pruned at least 20x faster than unpruned: {} ({ratio:.0}x; first runs {:.0}x)",
        if ratio >= 20.0 { "met" } else { "NOT met" },
        timed[1].cold_ms / timed[0].cold_ms
    );
    println!();
    engine.shutdown();
    Ok(())
}

// ---------------------------------------------------------------------
// 3. CPU cost of an export

/// One paced ingest run.
struct CpuRun {
    export: bool,
    published: u64,
    publish_secs: f64,
    window_secs: f64,
    ticks: u64,
    threads: Vec<(String, u64)>,
    rss_kib: u64,
    peak_kib: u64,
    /// CPU of other processes meanwhile (the load generator is this one).
    others_ticks: u64,
    exported: Option<ExportStats>,
}

async fn cpu_run(args: &Args, bin: &Path, export: bool) -> Result<CpuRun> {
    let peer = start_tidewire(bin, &broker_config(&args.cpu_fsync)).await?;
    let pid = peer.child.id().context("broker pid")?;
    let api = Api::new(peer.websocket.context("no HTTP listener")?);
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    if export {
        let lake = dir.path().join("lake");
        std::fs::create_dir(&lake)?;
        api.create_export(&export_definition(&lake, &args.cpu_max_interval))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settle = parse_secs(&args.cpu_max_interval)? + 2.0;
    let total = args.rate * args.cpu_secs;
    let threads_before = thread_ticks(pid);
    let before = cpu_ticks(pid).context("broker CPU")?;
    let others = Others::start(&[pid]);
    let started = Instant::now();
    let (published, took) = publish(peer.mqtt, args.connections, total, Some(args.rate)).await?;
    ensure!(published == total, "{published} of {total} acknowledged");
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let exported = if export {
        Some(
            api.await_export(EXPORT, published, started, Duration::from_secs(120))
                .await?
                .0,
        )
    } else {
        None
    };
    let window_secs = started.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid).context("broker CPU")? - before;
    let others_ticks = others.ticks(0);
    let threads = thread_delta(&threads_before, &thread_ticks(pid));
    Ok(CpuRun {
        export,
        published,
        publish_secs: took.as_secs_f64(),
        window_secs,
        ticks,
        threads,
        rss_kib: rss_kib(pid).unwrap_or(0),
        peak_kib: peak_rss_kib(pid).unwrap_or(0),
        others_ticks,
        exported,
    })
}

/// `"5s"`, `"500ms"`, `"2m"` in seconds.
fn parse_secs(text: &str) -> Result<f64> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let n: f64 = number
        .parse()
        .with_context(|| format!("duration {text:?}"))?;
    Ok(match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        other => bail!("duration {text:?}: unit {other:?} (ms, s, m)"),
    })
}

async fn cpu_cost(args: &Args, bin: &Path) -> Result<()> {
    println!(
        "== CPU: {} msg/s (MQTT QoS 1, {} connections) for {} s, fsync {}, without and with an export \
         (max_interval {}) ==",
        thousands(args.rate as f64),
        args.connections,
        args.cpu_secs,
        args.cpu_fsync,
        args.cpu_max_interval
    );
    let mut runs = Vec::new();
    for _ in 0..args.cpu_rounds.max(1) {
        for export in [false, true] {
            let run = cpu_run(args, bin, export).await?;
            println!(
                "  {}: {:.2} CPU s over {:.1} s",
                if export {
                    "with export   "
                } else {
                    "without export"
                },
                secs(run.ticks),
                run.window_secs
            );
            runs.push(run);
        }
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                if r.export { "with export" } else { "without" }.to_owned(),
                thousands(r.published as f64 / r.publish_secs),
                format!("{:.2}", secs(r.ticks)),
                format!("{:.2}", secs(r.ticks) / r.publish_secs),
                format!("{:.1}", secs(r.ticks) * 1e6 / r.published as f64),
                format!(
                    "{:.0} / {:.0}",
                    r.rss_kib as f64 / 1024.0,
                    r.peak_kib as f64 / 1024.0
                ),
                r.exported.as_ref().map_or(String::new(), |e| {
                    format!(
                        "{} files, {} records, {:.1} MiB",
                        e.files,
                        e.records,
                        mib(e.bytes)
                    )
                }),
                format!("{:.2}", secs(r.others_ticks)),
            ]
        })
        .collect();
    println!();
    print_table(
        &[
            "run",
            "msg/s",
            "broker CPU s",
            "cores (over publishing)",
            "CPU us/msg",
            "RSS / peak MiB",
            "exported",
            "other processes CPU s",
        ],
        &rows,
    );
    let mean = |export: bool| {
        let ticks: Vec<u64> = runs
            .iter()
            .filter(|r| r.export == export)
            .map(|r| r.ticks)
            .collect();
        ticks.iter().sum::<u64>() as f64 / ticks.len().max(1) as f64
    };
    let (without, with) = (mean(false), mean(true));
    let added = with / without - 1.0;
    println!(
        "CPU counted from the first publish until {} s after the last (the export's max_interval + 2 s), \
         the same window in both runs",
        parse_secs(&args.cpu_max_interval)? + 2.0
    );
    println!(
        "target: export adds at most 10% to the broker's CPU: {} (+{:.1}%: {:.2} -> {:.2} CPU s, mean of {} runs each)",
        if added <= 0.10 { "met" } else { "NOT met" },
        added * 100.0,
        without / TICKS_PER_SECOND,
        with / TICKS_PER_SECOND,
        args.cpu_rounds.max(1)
    );
    // Where the difference goes: each thread name's CPU, summed over
    // threads and averaged over runs.
    let by_name = |export: bool| {
        let mut names: HashMap<String, f64> = HashMap::new();
        let count = runs.iter().filter(|r| r.export == export).count().max(1) as f64;
        for r in runs.iter().filter(|r| r.export == export) {
            let listed: u64 = r.threads.iter().map(|(_, t)| t).sum();
            for (name, t) in &r.threads {
                let name = name.split(" (").next().unwrap_or(name).to_owned();
                *names.entry(name).or_default() += *t as f64 / count;
            }
            *names.entry("(threads that ended)".into()).or_default() +=
                r.ticks.saturating_sub(listed) as f64 / count;
        }
        names
    };
    let (a, b) = (by_name(false), by_name(true));
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    let mut rows: Vec<(f64, Vec<String>)> = names
        .into_iter()
        .map(|name| {
            let (x, y) = (
                a.get(name).copied().unwrap_or(0.0),
                b.get(name).copied().unwrap_or(0.0),
            );
            (
                y - x,
                vec![
                    name.clone(),
                    format!("{:.2}", x / TICKS_PER_SECOND),
                    format!("{:.2}", y / TICKS_PER_SECOND),
                    format!("{:+.2}", (y - x) / TICKS_PER_SECOND),
                ],
            )
        })
        .collect();
    rows.sort_by(|p, q| q.0.total_cmp(&p.0));
    println!("broker CPU by thread name (mean per run):");
    print_table(
        &["thread", "without s", "with export s", "difference s"],
        &rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
    );
    println!();
    Ok(())
}
