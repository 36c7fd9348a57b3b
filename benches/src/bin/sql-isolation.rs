//! SQL isolation benchmark: does SQL slow down MQTT? One MQTT client
//! publishes at QoS 1 with a small window (default 1: the next publish
//! leaves when the last one is acknowledged) and records each
//! publish-to-PUBACK latency, first with no SQL running, then while 4
//! runaway queries (a 5-way cross join of a stream of a few hundred
//! records, and `sum` over `generate_series` to 9e18) keep tidewire's SQL
//! executor busy over HTTP, each sent again as soon as it times out. It
//! prints acks/s, p50/p99/max latency and server RSS for each phase, and
//! the ratio of the p99s beside the target (at most 2x).
//!
//! The peer is Mosquitto under the same QoS 1 load: a broker with no SQL.
//! Alone, it is the baseline for what this client and machine can do.
//! Beside a tidewire process running the same runaway queries (the same
//! machine, other processes), it shows what the kernel's scheduler alone
//! gives a broker that shares no threads with the queries, at equal
//! priority: about the best SQL running inside tidewire could hope for
//! without a lower priority.
//!
//! Both brokers often answer faster with the queries running than
//! without (likely because on a virtual machine an idle core is slow to
//! wake, and a busy one switches at once), so the ratio compares tail
//! latency under load with an idle machine's, not with an ideal.
//!
//! Publishes go to a stream of their own (fsync `never` by default, since
//! Mosquitto keeps nothing, and a disk's fdatasync time would hide what
//! the CPU does); the queries read another.
//!
//! `cargo build --release -p tidewire -p tidewire-benches &&
//!  target/release/sql-isolation`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tidewire_benches::peers::{Peer, start_mosquitto, start_tidewire, tidewire_bin};
use tidewire_benches::{
    Latencies, TICKS_PER_SECOND, cpu_ticks, machine_busy_ticks, print_table, raw_mqtt, rss_kib,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The topic the measured client publishes to (the `bench` stream).
const TOPIC: &str = "bench/qos1";
/// The queries, taken in turn by the runaway clients. Each runs until
/// `sql.query_timeout` ends it: the cross join has 300^5 rows to count,
/// the series 9e18 values to add.
const RUNAWAY: [&str; 2] = [
    "SELECT count(*) FROM events a, events b, events c, events d, events e",
    "SELECT sum(value) FROM generate_series(1, 9000000000000000000)",
];
/// Unmeasured publishing before each phase.
const WARM_UP: Duration = Duration::from_secs(1);
/// How often server RSS is sampled.
const RSS_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
struct Args {
    /// The tidewire binary (default: next to this program).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Seconds each phase publishes for.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// QoS 1 publishes awaiting their PUBACK at once.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Records in the stream the queries read.
    #[arg(long, default_value_t = 300)]
    records: usize,
    /// Runaway queries running at once in the second phase.
    #[arg(long, default_value_t = 4)]
    runaway: usize,
    /// tidewire's `sql.query_timeout`, seconds.
    #[arg(long, default_value_t = 5)]
    query_timeout: u64,
    /// tidewire's `sql.threads` (default: tidewire's own default).
    #[arg(long)]
    sql_threads: Option<usize>,
    /// Renice tidewire's `sql-executor` threads to this nice value once the
    /// queries run (needs `renice`): what a lower priority would give.
    #[arg(long)]
    sql_nice: Option<i32>,
    /// fsync policy of the stream the publishes go to.
    #[arg(long, default_value = "never")]
    fsync: String,
    /// Brokers to measure (tidewire, mosquitto).
    #[arg(long, value_delimiter = ',', default_value = "tidewire,mosquitto")]
    brokers: Vec<String>,
}

/// One measured phase.
struct Outcome {
    acked: u64,
    elapsed: Duration,
    latencies: Latencies,
    /// The measured broker's peak RSS in the phase, MiB.
    peak_rss_mib: f64,
    /// CPU the rest of the machine used meanwhile, % of one core.
    other_cpu: f64,
}

/// Publishes QoS 1 to `addr` for `length`, keeping `window` publishes in
/// flight, and times each from its write to its PUBACK. Samples `pid`'s
/// RSS meanwhile.
async fn measure(
    addr: SocketAddr,
    id: &str,
    length: Duration,
    window: usize,
    size: usize,
    pid: Option<u32>,
) -> Result<Outcome> {
    let (mut reader, mut writer) = raw_mqtt::connect(addr, id).await?;
    let payload = vec![b'x'; size];
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = pid.map(|pid| {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            while let Some(kib) = rss_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(RSS_EVERY).await;
            }
        })
    });
    // Packet ids 1..=window, each reused once its PUBACK is back.
    let mut sent_at: Vec<Option<Instant>> = vec![None; window + 1];
    let mut packet = Vec::new();
    let mut latencies = Latencies::default();
    let started = Instant::now();
    let deadline = started + length;
    let mut in_flight = 0;
    for (pkid, at) in sent_at.iter_mut().enumerate().skip(1) {
        packet.clear();
        raw_mqtt::put_publish(&mut packet, TOPIC, 1, pkid as u16, &payload);
        *at = Some(Instant::now());
        writer.write_all(&packet).await?;
        in_flight += 1;
    }
    while in_flight > 0 {
        let frame = reader.next().await?.context("closed before every PUBACK")?;
        if !frame.is_puback() {
            continue;
        }
        let pkid = usize::from(frame.pkid()?);
        let at = sent_at
            .get_mut(pkid)
            .and_then(Option::take)
            .with_context(|| format!("PUBACK for packet id {pkid}, not in flight"))?;
        latencies.record(at.elapsed());
        in_flight -= 1;
        if Instant::now() < deadline {
            packet.clear();
            raw_mqtt::put_publish(&mut packet, TOPIC, 1, pkid as u16, &payload);
            sent_at[pkid] = Some(Instant::now());
            writer.write_all(&packet).await?;
            in_flight += 1;
        }
    }
    let elapsed = started.elapsed();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let _ = raw_mqtt::disconnect(&mut writer).await;
    Ok(Outcome {
        acked: latencies.len() as u64,
        elapsed,
        latencies,
        peak_rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        other_cpu: f64::NAN,
    })
}

/// CPU ticks used so far by the whole machine, and by `ours`.
fn ticks(ours: &[u32]) -> (u64, u64) {
    (
        machine_busy_ticks().unwrap_or(0),
        ours.iter().filter_map(|&pid| cpu_ticks(pid)).sum(),
    )
}

/// A warm-up, then the measured phase. Also measures the CPU that
/// processes other than this one, `peer` and `tidewire` used meanwhile:
/// on a shared machine, what else ran.
async fn phase(args: &Args, peer: &Peer, tidewire: u32, name: &str) -> Result<Outcome> {
    let window = args.window.clamp(1, usize::from(u16::MAX));
    let size = args.payload;
    measure(
        peer.mqtt,
        &format!("{name}-warm"),
        WARM_UP,
        window,
        size,
        None,
    )
    .await?;
    let mut ours = vec![std::process::id(), tidewire];
    ours.extend(peer.child.id().filter(|&pid| pid != tidewire));
    let before = ticks(&ours);
    let mut outcome = measure(
        peer.mqtt,
        name,
        Duration::from_secs(args.seconds),
        window,
        size,
        peer.child.id(),
    )
    .await?;
    let after = ticks(&ours);
    let others = (after.0 - before.0).saturating_sub(after.1 - before.1);
    outcome.other_cpu =
        100.0 * others as f64 / TICKS_PER_SECOND / outcome.elapsed.as_secs_f64().max(1e-9);
    Ok(outcome)
}

/// Publishes `records` small JSON records to the `events` stream at QoS 1
/// and waits for every PUBACK.
async fn load(addr: SocketAddr, records: usize) -> Result<()> {
    let (mut reader, mut writer) = raw_mqtt::connect(addr, "loader").await?;
    let mut done = 0;
    while done < records {
        let chunk = (records - done).min(1000);
        let mut batch = Vec::new();
        for i in done..done + chunk {
            let payload = format!(r#"{{"device":"dev-{:02}","value":{i}}}"#, i % 10);
            let topic = format!("events/dev-{:02}", i % 10);
            raw_mqtt::put_publish(
                &mut batch,
                &topic,
                1,
                (i - done + 1) as u16,
                payload.as_bytes(),
            );
        }
        writer.write_all(&batch).await?;
        reader.pubacks(chunk).await?;
        done += chunk;
    }
    raw_mqtt::disconnect(&mut writer).await
}

/// `POST /api/v1/sql` over a connection of its own; the status code.
async fn post_sql(addr: SocketAddr, sql: &str) -> Result<u16> {
    let body = serde_json::json!({ "sql": sql }).to_string();
    let request = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:.200}"))
}

/// What the runaway clients saw.
#[derive(Debug, Default)]
struct Runaway {
    sent: u64,
    timed_out: u64,
    /// Other answers, by status code.
    other: Vec<u16>,
    /// Time spent waiting for answers, all clients together.
    busy: Duration,
}

/// Clients that each keep one runaway query running until `stop`.
struct RunawayClients {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Result<Runaway>>>,
    started: Instant,
}

impl RunawayClients {
    fn start(http: SocketAddr, n: usize) -> RunawayClients {
        let stop = CancellationToken::new();
        let tasks = (0..n)
            .map(|i| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut seen = Runaway::default();
                    while !stop.is_cancelled() {
                        let sent = Instant::now();
                        seen.sent += 1;
                        let status = tokio::select! {
                            status = post_sql(http, RUNAWAY[i % RUNAWAY.len()]) => status?,
                            () = stop.cancelled() => {
                                seen.busy += sent.elapsed();
                                break;
                            }
                        };
                        seen.busy += sent.elapsed();
                        match status {
                            408 => seen.timed_out += 1,
                            other => seen.other.push(other),
                        }
                    }
                    Ok(seen)
                })
            })
            .collect();
        RunawayClients {
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    /// Stops the clients (their queries end as their connections close,
    /// or at their timeout) and sums what they saw; the share of the
    /// time they had a query in flight.
    async fn stop(self) -> Result<(Runaway, f64)> {
        let wall = self.started.elapsed();
        self.stop.cancel();
        let n = self.tasks.len();
        let mut total = Runaway::default();
        for task in self.tasks {
            let seen = task.await??;
            total.sent += seen.sent;
            total.timed_out += seen.timed_out;
            total.other.extend(seen.other);
            total.busy += seen.busy;
        }
        let share = total.busy.as_secs_f64() / (wall.as_secs_f64() * n as f64).max(1e-9);
        Ok((total, share))
    }
}

/// Renices `pid`'s threads named `sql-executor` to `nice`; how many.
fn renice_sql_threads(pid: u32, nice: i32) -> Result<usize> {
    let mut tids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() == "sql-executor" {
            tids.push(
                task.file_name()
                    .context("tid")?
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    if tids.is_empty() {
        return Ok(0);
    }
    let status = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p"])
        .args(&tids)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running renice")?;
    if !status.success() {
        bail!("renice failed: {status}");
    }
    Ok(tids.len())
}

fn row(broker: &str, sql: &str, o: &mut Outcome) -> Vec<String> {
    vec![
        broker.into(),
        sql.into(),
        format!("{:.0}", o.acked as f64 / o.elapsed.as_secs_f64().max(1e-9)),
        o.acked.to_string(),
        format!("{:.3}", o.latencies.percentile_ms(50.0)),
        format!("{:.3}", o.latencies.percentile_ms(99.0)),
        format!("{:.1}", o.latencies.percentile_ms(100.0)),
        format!("{:.1}", o.peak_rss_mib),
        format!("{:.0}", o.other_cpu),
    ]
}

fn tidewire_config(args: &Args) -> String {
    let threads = args
        .sql_threads
        .map(|n| format!("threads = {n}\n"))
        .unwrap_or_default();
    format!(
        "[sql]\nquery_timeout = \"{}s\"\n{threads}\
         [[streams]]\nname = \"events\"\nfilters = [\"events/#\"]\nfsync = \"never\"\n\
         [[streams]]\nname = \"bench\"\nfilters = [\"bench/#\"]\nfsync = \"{}\"\n",
        args.query_timeout, args.fsync
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tidewire = tidewire_bin(args.tidewire.as_deref())?;
    let sql_label = format!("{} runaway", args.runaway);
    println!(
        "sql-isolation: QoS 1, window {}, {} B payloads, {} s per phase; {} runaway queries \
         (query_timeout {} s) over a {}-record stream; publishes to a stream with fsync {}",
        args.window,
        args.payload,
        args.seconds,
        args.runaway,
        args.query_timeout,
        args.records,
        args.fsync
    );
    // tidewire runs the queries for every row that has them, Mosquitto's
    // included.
    let server = start_tidewire(&tidewire, &tidewire_config(&args)).await?;
    let http = server.websocket.context("no HTTP listener")?;
    let pid = server.child.id().context("tidewire pid")?;
    load(server.mqtt, args.records).await?;
    let loaded_rss = rss_kib(pid).map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    let settle = Duration::from_secs(args.query_timeout + 1);

    let mut rows = Vec::new();
    let mut p99s = Vec::new();
    let mut notes = Vec::new();
    for which in &args.brokers {
        let mosquitto;
        let peer = match which.as_str() {
            "tidewire" => &server,
            "mosquitto" => {
                mosquitto = start_mosquitto(&args.mosquitto, "", false).await?;
                &mosquitto
            }
            other => bail!("unknown broker {other:?} (tidewire, mosquitto)"),
        };
        let mut alone = phase(&args, peer, pid, &format!("{which}-alone")).await?;
        rows.push(row(peer.name, "none", &mut alone));

        let queries = RunawayClients::start(http, args.runaway);
        // Let every query reach the executor before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(nice) = args.sql_nice {
            let n = renice_sql_threads(pid, nice)?;
            notes.push(format!("{n} sql-executor threads reniced to {nice}"));
        }
        let mut busy = phase(&args, peer, pid, &format!("{which}-sql")).await?;
        let (seen, share) = queries.stop().await?;
        let label = if peer.name == "tidewire" {
            sql_label.clone()
        } else {
            format!("{sql_label} in tidewire")
        };
        rows.push(row(peer.name, &label, &mut busy));
        notes.push(format!(
            "{}: {} runaway queries sent, {} answered 408 (timeout), other answers {:?}, \
             the rest cut short at the end; each client had one in flight {:.0}% of the time",
            peer.name,
            seen.sent,
            seen.timed_out,
            seen.other,
            share * 100.0
        ));
        p99s.push((
            peer.name,
            alone.latencies.percentile_ms(99.0),
            busy.latencies.percentile_ms(99.0),
        ));
        // The last queries end at their timeout at the latest.
        tokio::time::sleep(settle).await;
    }
    print_table(
        &[
            "broker",
            "SQL",
            "acks/s",
            "acked",
            "p50 ms",
            "p99 ms",
            "max ms",
            "peak RSS MiB",
            "other CPU %",
        ],
        &rows,
    );
    println!();
    for note in notes {
        println!("{note}");
    }
    for (name, alone, busy) in &p99s {
        let ratio = busy / alone;
        if *name == "tidewire" {
            let verdict = if ratio <= 2.0 { "met" } else { "missed" };
            println!(
                "tidewire: p99 with {} runaway queries / alone = {ratio:.2}x (target <= 2x: {verdict})",
                args.runaway
            );
        } else {
            println!(
                "{name}: p99 beside tidewire's {} runaway queries / alone = {ratio:.2}x",
                args.runaway
            );
        }
    }
    let alone = |name| p99s.iter().find(|p| p.0 == name).map(|p| p.1);
    if let (Some(ours), Some(theirs)) = (alone("tidewire"), alone("mosquitto")) {
        println!("p99 alone: tidewire / mosquitto = {:.2}x", ours / theirs);
    }
    let now_rss = rss_kib(pid).map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    println!(
        "tidewire RSS: {loaded_rss:.1} MiB after loading {} records, {now_rss:.1} MiB once \
         the last query had ended",
        args.records
    );
    Ok(())
}
