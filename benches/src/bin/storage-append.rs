//! Storage append benchmark: K concurrent writers, each keeping W appends
//! in flight (as MQTT QoS 1 publishers do), against one stream, with fsync
//! `always` and `never`. Prints records/s, MB/s, append latency p50/p99 and
//! fsyncs/s, beside the disk's own limits measured the same way in the
//! same directory: sequential 1 MiB writes with one final fdatasync (like
//! `dd conv=fdatasync`), and small writes each followed by fdatasync.
//!
//! `cargo run --release -p tidewire-benches --bin storage-append -- --help`

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use prometheus_client::registry::Registry;
use tidewire_benches::{Latencies, peak_rss_mib, print_table};
use tidewire_storage::{FsyncPolicy, LogConfig, Message, StorageMetrics, StreamLog};

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Appends each writer keeps in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Payload bytes per record (the frame adds topic, client id and 34 bytes).
    #[arg(long, default_value_t = 200)]
    record_bytes: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Directory on the disk to measure (default: a temporary directory
    /// under the current one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Outcome {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    fsyncs: u64,
    latencies: Latencies,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir_in(".")?,
    };
    println!(
        "storage-append: {} writers x {} in flight, {} B payloads, {} s per scenario, dir {}",
        args.writers,
        args.in_flight,
        args.record_bytes,
        args.seconds,
        base.path().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let dir = base.path().join(policy.to_string());
        let outcome = runtime.block_on(run(&args, &dir, policy))?;
        rows.push(row(&format!("tidewire fsync={policy}"), outcome));
    }
    let raw_dir = base.path().join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    let seq = raw_sequential(&raw_dir, 256)?;
    rows.push(vec![
        "raw 1MiB writes + 1 fdatasync".into(),
        "-".into(),
        format!("{:.1}", seq),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    let (syncs_per_s, mut sync_lat) = raw_fsyncs(&raw_dir, 4096, Duration::from_secs(3))?;
    rows.push(vec![
        "raw 4KiB write + fdatasync".into(),
        format!("{syncs_per_s:.0}"),
        format!("{:.2}", syncs_per_s * 4096.0 / 1e6),
        format!("{:.2}", sync_lat.percentile_ms(50.0)),
        format!("{:.2}", sync_lat.percentile_ms(99.0)),
        format!("{syncs_per_s:.0}"),
    ]);
    print_table(
        &[
            "scenario",
            "records/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "fsyncs/s",
        ],
        &rows,
    );
    if let Ok(always_mbs) = rows[0][2].parse::<f64>() {
        println!(
            "fsync=always reaches {:.0}% of the disk's sequential write+fdatasync bandwidth",
            100.0 * always_mbs / seq
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS: {rss:.1} MiB");
    }
    Ok(())
}

fn row(name: &str, mut o: Outcome) -> Vec<String> {
    let secs = o.elapsed.as_secs_f64();
    vec![
        name.into(),
        format!("{:.0}", o.records as f64 / secs),
        format!("{:.1}", o.bytes as f64 / secs / 1e6),
        format!("{:.2}", o.latencies.percentile_ms(50.0)),
        format!("{:.2}", o.latencies.percentile_ms(99.0)),
        format!("{:.0}", o.fsyncs as f64 / secs),
    ]
}

async fn run(args: &Args, dir: &Path, fsync: FsyncPolicy) -> anyhow::Result<Outcome> {
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    let log = StreamLog::open(dir, "bench", config, &metrics, Arc::new(|_| {}))?;
    let payload = Bytes::from(vec![b'x'; args.record_bytes]);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..args.writers {
        for _ in 0..args.in_flight {
            let log = log.clone();
            let message = Arc::new(Message {
                topic: format!("bench/writer/{writer}"),
                client_id: format!("writer-{writer}"),
                qos: 1,
                payload: payload.clone(),
                ..Message::default()
            });
            tasks.spawn(async move {
                let mut latencies = Latencies::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    log.append(Arc::clone(&message)).await?;
                    latencies.record(t.elapsed());
                }
                anyhow::Ok(latencies)
            });
        }
    }
    let mut latencies = Latencies::default();
    while let Some(done) = tasks.join_next().await {
        latencies.merge(done??);
    }
    let elapsed = started.elapsed();
    let stats = log.stats();
    log.close().await;
    Ok(Outcome {
        records: latencies.len() as u64,
        bytes: stats.bytes,
        elapsed,
        fsyncs: counter(&registry, "tidewire_stream_fsyncs_total")?,
        latencies,
    })
}

fn counter(registry: &Registry, name: &str) -> anyhow::Result<u64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no metric {name}"))
}

/// MB/s of `mib` MiB written in 1 MiB blocks, then one fdatasync.
fn raw_sequential(dir: &Path, mib: usize) -> anyhow::Result<f64> {
    let path = dir.join("seq");
    let block = vec![0xa5u8; 1 << 20];
    let started = Instant::now();
    let mut file = File::create(&path)?;
    for _ in 0..mib {
        file.write_all(&block)?;
    }
    file.sync_data()?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok((mib << 20) as f64 / secs / 1e6)
}

/// fdatasync's per second with one `block`-byte append before each.
fn raw_fsyncs(dir: &Path, block: usize, run: Duration) -> anyhow::Result<(f64, Latencies)> {
    let path = dir.join("fsyncs");
    let data = vec![0x5au8; block];
    let mut file = File::create(&path)?;
    let mut latencies = Latencies::default();
    let started = Instant::now();
    while started.elapsed() < run {
        let t = Instant::now();
        file.write_all(&data)?;
        file.sync_data()?;
        latencies.record(t.elapsed());
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok((rate, latencies))
}
