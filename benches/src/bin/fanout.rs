//! Fan-out delivery benchmark (issue 20): how fast a topic's subscription
//! pushes messages to a webhook, and how long a message takes from an MQTT
//! publish to the webhook, beside a baseline and a real peer in the same
//! run. (Matching, the other half of issue 20's benchmark, is `patterns`.)
//!
//! The webhook receiver runs in this program: a minimal HTTP/1.1 server on
//! a loopback port (keep-alive, `Content-Length` bodies) that answers 200
//! at once, counts, and records each message's latency from the send time
//! the message carries ([`stamp`]). It is written on tokio's sockets, as
//! `raw_mqtt` is, so that its own cost stays small beside the broker's.
//!
//! tidewire runs `[[topics]] name = "bench"`, `from = ["bench/#"]`, fsync
//! `always`, with one subscription: `target = "http://127.0.0.1:PORT/hook"`,
//! `raw = true`, `max_in_flight = 64` (a webhook target's most). Messages
//! are MQTT QoS 1 publishes to `bench/x` (each PUBACK waits until the
//! message is durable in the topic's log), from `raw_mqtt` clients with
//! 1,000 unacknowledged each at most. The runs:
//!
//! 1. **backlog**: `--messages` are published by `--publishers`
//!    connections while the receiver holds the subscription's first
//!    requests unanswered (64, or fewer when the subscription reached the
//!    end of the topic's log first: it then waits for what is in flight
//!    before reading on); then it answers, and deliveries/s count from
//!    its first answer to its last: delivery alone, with no ingest beside
//!    it.
//! 2. **live**: the same, the receiver answering from the start, so the
//!    broker takes publishes and delivers them at once; deliveries/s from
//!    the first delivery to the last, and publish -> webhook latency
//!    (which grows when delivery is slower than ingest).
//! 3. **paced**: `--rate` msg/s (1,000) for `--paced-secs` over one MQTT
//!    connection, after a second of warm-up; p50/p99/p99.9/max publish ->
//!    webhook. An MQTT QoS 1 subscriber to `bench/#` on tidewire gets the
//!    same publishes: the broker's own push path, in the same run.
//! 4. **direct** (baseline): this program POSTs as many messages to the
//!    same receiver itself, 64 in flight over keep-alive connections
//!    (reqwest), as fast as it can (the receiver's and loopback HTTP's
//!    ceiling on this machine) and paced at `--rate` (the HTTP hop's own
//!    latency).
//! 5. **mosquitto** (peer): Mosquitto relays the same MQTT streams, as
//!    fast as the publishers go and paced, to a QoS 1 subscriber with 64
//!    in flight (`max_inflight_messages 64`, no queue limit, no
//!    persistence). Mosquitto has no webhook push, which is what fan-out
//!    adds: it is the reference for publish -> delivery through a broker,
//!    not for the webhook's HTTP.
//!
//! Each run reports the broker's CPU (in cores, and per delivery; from
//! /proc, for tidewire also per thread), its largest RSS (sampled every
//! 50 ms), this program's CPU and what the rest of the machine used
//! meanwhile. Then whether issue 20's delivery targets are
//! met: at least 20k deliveries/s, and p99 under 20 ms at 1k msg/s.
//!
//! `nice -n 19 cargo build --release -p tidewire -p tidewire-benches &&
//!  target/release/fanout`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use clap::Parser;
use tidewire_benches::peers::{Peer, start_mosquitto, start_tidewire, tidewire_bin};
use tidewire_benches::{
    Latencies, TICKS_PER_SECOND, cpu_ticks, latency, machine_busy_ticks, print_table, raw_http,
    raw_mqtt, rss_kib, stamp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// The fan-out topic and its subscription.
const TOPIC: &str = "bench";
const SUBSCRIPTION: &str = "hook";
/// Where the publishers publish, and what the MQTT subscribers take.
const MQTT_TOPIC: &str = "bench/x";
const MQTT_FILTER: &str = "bench/#";
/// Unacknowledged QoS 1 publishes per publisher connection.
const WINDOW: usize = 1000;
/// Publishes per write at most.
const BATCH: u64 = 64;
/// A run in which nothing arrives for this long has failed.
const STALL: Duration = Duration::from_secs(60);
/// The subscription's request timeout in the backlog run, where the
/// receiver holds its first requests while the backlog is published.
const HOLD_TIMEOUT: &str = "300s";
/// The answer to every request.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
/// The largest request head the receiver takes.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Parser)]
struct Args {
    /// Messages in each throughput run (backlog, live, direct, Mosquitto).
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// MQTT publisher connections in the throughput runs.
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    /// Message size in bytes (at least 21: the send time travels in it).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Deliveries in flight: the subscription's `max_in_flight`, the direct
    /// client's concurrency and Mosquitto's `max_inflight_messages`.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Publish rate of the paced runs, messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the paced runs in seconds.
    #[arg(long, default_value_t = 20)]
    paced_secs: u64,
    /// tidewire's fsync policy for the topic (`always`, `interval:MS`,
    /// `never`).
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Runs, in order: backlog, live, paced, direct, mosquitto.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "backlog,live,paced,direct,mosquitto"
    )]
    only: Vec<String>,
    /// The tidewire binary (default: next to this program).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.size >= 21, "--size must be at least 21 bytes");
    ensure!(
        args.messages > 0 && args.publishers > 0 && args.rate > 0 && args.in_flight > 0,
        "--messages, --publishers, --rate and --in-flight must be more than 0"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> Result<()> {
    println!(
        "fanout: {} messages of {} B per throughput run, {} MQTT QoS 1 publishers, {} in flight; paced {} msg/s for {} s; topic fsync {}",
        args.messages,
        args.size,
        args.publishers,
        args.in_flight,
        args.rate,
        args.paced_secs,
        args.fsync
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let epoch = Instant::now();
    let mut report = Report::default();
    for part in &args.only {
        println!("\n== {part}");
        match part.as_str() {
            "backlog" => backlog(args, epoch, &mut report).await?,
            "live" => live(args, epoch, &mut report).await?,
            "paced" => paced(args, epoch, &mut report).await?,
            "direct" => direct(args, epoch, &mut report).await?,
            "mosquitto" => mosquitto(args, epoch, &mut report).await?,
            other => bail!("unknown run {other:?} (backlog, live, paced, direct, mosquitto)"),
        }
    }
    report.print(args);
    Ok(())
}

// ---------------------------------------------------------------- runs

/// Starts tidewire with the bench topic and its subscription POSTing to
/// `hook`, each request allowed `timeout`.
async fn start_broker(args: &Args, hook: SocketAddr, timeout: &str) -> Result<(Peer, u32)> {
    let config = format!(
        "[[topics]]\nname = \"{TOPIC}\"\nfrom = [\"{MQTT_FILTER}\"]\nfsync = \"{fsync}\"\n\n\
         [[topics.subscriptions]]\nname = \"{SUBSCRIPTION}\"\ntarget = \"http://{hook}/hook\"\n\
         raw = true\nmax_in_flight = {in_flight}\ntimeout = \"{timeout}\"\n",
        fsync = args.fsync,
        in_flight = args.in_flight,
    );
    let peer = start_tidewire(&tidewire_bin(args.tidewire.as_deref())?, &config).await?;
    let pid = peer.child.id().context("tidewire exited at start")?;
    Ok((peer, pid))
}

/// 1. A backlog published while the receiver holds its first requests,
///    then delivered.
async fn backlog(args: &Args, epoch: Instant, report: &mut Report) -> Result<()> {
    let receiver = Receiver::start(epoch, false).await?;
    let (broker, pid) = start_broker(args, receiver.addr, HOLD_TIMEOUT).await?;
    let idle_mib = mib(rss_kib(pid));
    let started = Instant::now();
    publish_all(broker.mqtt, args, args.messages, epoch, None).await?;
    let ingest = args.messages as f64 / started.elapsed().as_secs_f64();
    // Let the subscription's first requests reach the receiver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = receiver.hooks.received();
    let backlog_mib = mib(rss_kib(pid));
    println!(
        "published {} at {ingest:.0} msg/s (QoS 1, durable before PUBACK); the receiver holds {held} requests unanswered; broker RSS {idle_mib:.1} MiB idle, {backlog_mib:.1} MiB with the backlog",
        args.messages
    );
    let monitor = Monitor::start(Some(pid));
    receiver.hooks.open();
    receiver.hooks.wait_for(args.messages, "backlog").await?;
    let usage = monitor.stop();
    let span = receiver.hooks.span();
    let row = Throughput {
        name: "tidewire topic -> webhook, backlog".into(),
        delivered: receiver.hooks.answered(),
        seconds: span.as_secs_f64(),
        latency: None,
        usage,
    };
    row.print();
    print_threads(&row.usage);
    print_counts(&broker).await;
    report.backlog = Some(row);
    report.ingest = Some(ingest);
    Ok(())
}

/// 2. Publishes delivered as they come in.
async fn live(args: &Args, epoch: Instant, report: &mut Report) -> Result<()> {
    let receiver = Receiver::start(epoch, true).await?;
    let (broker, pid) = start_broker(args, receiver.addr, "10s").await?;
    let monitor = Monitor::start(Some(pid));
    let started = Instant::now();
    publish_all(broker.mqtt, args, args.messages, epoch, None).await?;
    let published = started.elapsed();
    receiver.hooks.wait_for(args.messages, "live").await?;
    let usage = monitor.stop();
    println!(
        "published {} at {:.0} msg/s while delivering",
        args.messages,
        args.messages as f64 / published.as_secs_f64()
    );
    let row = receiver
        .hooks
        .throughput("tidewire topic -> webhook, live", usage);
    row.print();
    print_threads(&row.usage);
    print_counts(&broker).await;
    report.live = Some(row);
    Ok(())
}

/// 3. `--rate` msg/s to the webhook, and to an MQTT subscriber on the same
///    broker.
async fn paced(args: &Args, epoch: Instant, report: &mut Report) -> Result<()> {
    let receiver = Receiver::start(epoch, true).await?;
    let (broker, pid) = start_broker(args, receiver.addr, "10s").await?;
    // Warm-up: the subscription opens its connections to the receiver.
    warm_up(broker.mqtt, args, epoch).await?;
    receiver.hooks.wait_for(args.rate, "warm-up").await?;
    receiver.hooks.reset();
    let (total, achieved, subscriber, monitor) =
        publish_paced(broker.mqtt, pid, args, epoch).await?;
    receiver.hooks.wait_for(total, "paced").await?;
    let mut arrivals = subscriber.await??;
    let usage = monitor.stop();
    let webhook = receiver.hooks.paced(
        "tidewire MQTT -> topic -> webhook",
        achieved,
        Some(usage.clone()),
    );
    let mqtt = Paced {
        name: "tidewire MQTT -> MQTT subscriber (same publishes)".into(),
        delivered: arrivals.count,
        achieved,
        latency: Percentiles::of(&mut arrivals.latencies),
        usage: None,
    };
    webhook.print();
    mqtt.print();
    print_threads(&usage);
    print_counts(&broker).await;
    report.paced.push(webhook);
    report.paced.push(mqtt);
    Ok(())
}

/// 4. This program POSTs to the receiver itself.
async fn direct(args: &Args, epoch: Instant, report: &mut Report) -> Result<()> {
    let receiver = Receiver::start(epoch, true).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.in_flight)
        .tcp_nodelay(true)
        .build()?;
    let url = format!("http://{}/hook", receiver.addr);
    // Warm-up: open the connections.
    let warm_up = (args.in_flight * 10) as u64;
    post_all(&client, &url, args, warm_up, epoch).await?;
    receiver.hooks.wait_for(warm_up, "warm-up").await?;
    receiver.hooks.reset();

    let monitor = Monitor::start(None);
    post_all(&client, &url, args, args.messages, epoch).await?;
    receiver.hooks.wait_for(args.messages, "direct").await?;
    let usage = monitor.stop();
    let row = receiver
        .hooks
        .throughput("bench -> receiver directly (reqwest)", usage);
    row.print();
    report.direct = Some(row);

    receiver.hooks.reset();
    post_paced(&client, &url, args, args.rate, epoch).await?;
    receiver.hooks.wait_for(args.rate, "warm-up").await?;
    receiver.hooks.reset();
    let total = args.rate * args.paced_secs;
    let started = Instant::now();
    post_paced(&client, &url, args, total, epoch).await?;
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    receiver.hooks.wait_for(total, "direct paced").await?;
    let row = receiver.hooks.paced(
        "bench -> receiver directly (HTTP hop alone)",
        achieved,
        None,
    );
    row.print();
    report.paced.push(row);
    Ok(())
}

/// 5. Mosquitto relaying the same MQTT streams to a QoS 1 subscriber.
async fn mosquitto(args: &Args, epoch: Instant, report: &mut Report) -> Result<()> {
    let settings = format!(
        "max_inflight_messages {}\nmax_queued_messages 0\n",
        args.in_flight
    );
    let peer = start_mosquitto(&args.mosquitto, &settings, false).await?;
    let pid = peer.child.id().context("mosquitto exited at start")?;
    let subscriber = subscribe(peer.mqtt, "bench-subscriber", args.messages, epoch).await?;
    let monitor = Monitor::start(Some(pid));
    publish_all(peer.mqtt, args, args.messages, epoch, None).await?;
    let mut arrivals = subscriber.await??;
    let usage = monitor.stop();
    let row = Throughput {
        name: "Mosquitto -> MQTT QoS 1 subscriber, live".into(),
        delivered: arrivals.count,
        seconds: (arrivals.last - arrivals.first).as_secs_f64(),
        latency: Some(Percentiles::of(&mut arrivals.latencies)),
        usage,
    };
    row.print();
    report.mosquitto = Some(row);

    // Paced, on a fresh Mosquitto, after the same warm-up.
    drop(peer);
    let peer = start_mosquitto(&args.mosquitto, &settings, false).await?;
    let pid = peer.child.id().context("mosquitto exited at start")?;
    warm_up(peer.mqtt, args, epoch).await?;
    let (_, achieved, subscriber, monitor) = publish_paced(peer.mqtt, pid, args, epoch).await?;
    let mut arrivals = subscriber.await??;
    let usage = monitor.stop();
    let row = Paced {
        name: "Mosquitto MQTT -> MQTT QoS 1 subscriber".into(),
        delivered: arrivals.count,
        achieved,
        latency: Percentiles::of(&mut arrivals.latencies),
        usage: Some(usage),
    };
    row.print();
    report.paced.push(row);
    Ok(())
}

/// One second's worth of publishes at `--rate`, before a paced run.
async fn warm_up(mqtt: SocketAddr, args: &Args, epoch: Instant) -> Result<()> {
    let rate = args.rate;
    publish(
        mqtt,
        "bench-warm-up".into(),
        rate,
        args,
        epoch,
        Some(rate as f64),
    )
    .await
}

/// The paced run's publishes: `--rate` msg/s for `--paced-secs` to `mqtt`,
/// taken by a QoS 1 subscriber on the same broker, with `pid`'s usage
/// measured from the first. Their number, the rate achieved, the
/// subscriber, and the monitor, still running.
async fn publish_paced(
    mqtt: SocketAddr,
    pid: u32,
    args: &Args,
    epoch: Instant,
) -> Result<(u64, f64, JoinHandle<Result<Arrivals>>, Monitor)> {
    let total = args.rate * args.paced_secs;
    let subscriber = subscribe(mqtt, "bench-subscriber", total, epoch).await?;
    let monitor = Monitor::start(Some(pid));
    let started = Instant::now();
    let rate = Some(args.rate as f64);
    publish(mqtt, "bench-paced".into(), total, args, epoch, rate).await?;
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    Ok((total, achieved, subscriber, monitor))
}

/// tidewire's own counts for the subscription, from `/metrics`.
async fn print_counts(broker: &Peer) {
    let Some(http) = broker.websocket else { return };
    let text = match reqwest::get(format!("http://{http}/metrics")).await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(e) => {
            println!("broker metrics: {e}");
            return;
        }
    };
    let value = |family: &str| {
        text.lines()
            .filter(|l| l.starts_with(family) && l.contains(&format!("\"{SUBSCRIPTION}\"")))
            .find_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .map_or("?".to_owned(), |v| format!("{v:.0}"))
    };
    println!(
        "broker counted: {} delivered, {} failed attempts, {} lost",
        value("tidewire_subscription_delivered_total{"),
        value("tidewire_subscription_failed_total{"),
        value("tidewire_subscription_lost_total{")
    );
}

// ------------------------------------------------------------ receiver

/// The webhook receiver: a minimal HTTP/1.1 server in this process,
/// accepting on a loopback port until dropped.
struct Receiver {
    addr: SocketAddr,
    hooks: Arc<Hooks>,
    accepting: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// What the receiver counts. Requests are read at once; answers wait
/// while the receiver is closed ([`Hooks::open`]).
struct Hooks {
    epoch: Instant,
    open: watch::Sender<bool>,
    received: AtomicU64,
    answered: AtomicU64,
    /// First and last answer, ns since `epoch`.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    /// Send -> arrival of each request.
    latencies: Mutex<Latencies>,
}

impl Receiver {
    /// Listens on a free loopback port, answering at once if `open`.
    async fn start(epoch: Instant, open: bool) -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hooks = Arc::new(Hooks {
            epoch,
            open: watch::Sender::new(open),
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            latencies: Mutex::default(),
        });
        let accepting = tokio::spawn({
            let hooks = Arc::clone(&hooks);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let hooks = Arc::clone(&hooks);
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, &hooks).await
                            && e.downcast_ref::<std::io::Error>().is_none()
                        {
                            eprintln!("receiver: {e:#}");
                        }
                    });
                }
            }
        });
        Ok(Receiver {
            addr,
            hooks,
            accepting,
        })
    }
}

impl Hooks {
    /// Answers what waits and all that comes.
    fn open(&self) {
        self.open.send_replace(true);
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// From the first answer to the last.
    fn span(&self) -> Duration {
        let first = self.first_ns.load(Ordering::Relaxed);
        let last = self.last_ns.load(Ordering::Relaxed);
        Duration::from_nanos(last.saturating_sub(first))
    }

    fn take_latencies(&self) -> Latencies {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A paced run's row: what was answered, with the latencies taken.
    fn paced(&self, name: &str, achieved: f64, usage: Option<Usage>) -> Paced {
        let mut latencies = self.take_latencies();
        Paced {
            name: name.to_owned(),
            delivered: self.answered(),
            achieved,
            latency: Percentiles::of(&mut latencies),
            usage,
        }
    }

    /// A run's row: what was answered, over the span, with the latencies
    /// taken.
    fn throughput(&self, name: &str, usage: Usage) -> Throughput {
        let mut latencies = self.take_latencies();
        Throughput {
            name: name.to_owned(),
            delivered: self.answered(),
            seconds: self.span().as_secs_f64(),
            latency: Some(Percentiles::of(&mut latencies)),
            usage,
        }
    }

    /// Forgets everything counted (between a warm-up and a run).
    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.answered.store(0, Ordering::Relaxed);
        self.first_ns.store(u64::MAX, Ordering::Relaxed);
        self.last_ns.store(0, Ordering::Relaxed);
        self.take_latencies();
    }

    fn record(&self, body: &[u8]) {
        let d = latency(self.epoch, body);
        self.received.fetch_add(1, Ordering::Relaxed);
        self.latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(d);
    }

    fn answered_now(&self, n: u64) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.answered.fetch_add(n, Ordering::Relaxed);
    }

    /// Waits until `n` requests were answered; fails when none is for
    /// [`STALL`].
    async fn wait_for(&self, n: u64, what: &str) -> Result<()> {
        let mut last = (self.answered(), Instant::now());
        loop {
            let now = self.answered();
            if now >= n {
                return Ok(());
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!("{what}: the receiver stalled at {now} of {n} deliveries");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// One keep-alive connection: reads requests, records them, and answers
/// each with 200 (once the receiver is open), a write per read.
async fn serve(stream: TcpStream, hooks: &Hooks) -> Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut open = hooks.open.subscribe();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut answers = Vec::new();
    loop {
        let mut n = 0;
        while let Some(body) = next_request(&mut buf)? {
            hooks.record(&body);
            answers.extend_from_slice(OK);
            n += 1;
        }
        if n > 0 {
            open.wait_for(|open| *open).await?;
            writer.write_all(&answers).await?;
            answers.clear();
            hooks.answered_now(n);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Splits one whole request off the front of `buf` and gives its body;
/// `None` until one is whole. Only `Content-Length` bodies (what webhooks
/// and reqwest send).
fn next_request(buf: &mut BytesMut) -> Result<Option<Bytes>> {
    let Some(end) = raw_http::head_end(buf) else {
        ensure!(buf.len() < MAX_HEAD, "a request head over {MAX_HEAD} bytes");
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end - 4]).context("a request head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    ensure!(
        request_line.starts_with("POST "),
        "not a POST: {request_line:?}"
    );
    let length = raw_http::content_length(lines)?.unwrap_or(0);
    if buf.len() < end + length {
        return Ok(None);
    }
    buf.advance(end);
    Ok(Some(buf.split_to(length).freeze()))
}

/// POSTs `count` stamped messages to `url`, `args.in_flight` at a time.
async fn post_all(
    client: &reqwest::Client,
    url: &str,
    args: &Args,
    count: u64,
    epoch: Instant,
) -> Result<()> {
    let workers = args.in_flight as u64;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, url, size) = (client.clone(), url.to_owned(), args.size);
            let share = count / workers + u64::from(w < count % workers);
            tokio::spawn(async move {
                for _ in 0..share {
                    post(&client, &url, size, epoch).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// POSTs `count` stamped messages to `url` at `args.rate` per second, each
/// on a task of its own, `args.in_flight` at most.
async fn post_paced(
    client: &reqwest::Client,
    url: &str,
    args: &Args,
    count: u64,
    epoch: Instant,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(args.in_flight));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / args.rate as f64))
            .await;
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let (client, url, size) = (client.clone(), url.to_owned(), args.size);
        tasks.spawn(async move {
            let _slot = slot;
            post(&client, &url, size, epoch).await
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn post(client: &reqwest::Client, url: &str, size: usize, epoch: Instant) -> Result<()> {
    let answer = client.post(url).body(stamp(epoch, size)).send().await?;
    ensure!(answer.status().is_success(), "POST: {}", answer.status());
    Ok(())
}

// ---------------------------------------------------------------- MQTT

/// `count` messages from `args.publishers` connections, as fast as they
/// go (`rate` none) or together at `rate` msg/s.
async fn publish_all(
    addr: SocketAddr,
    args: &Args,
    count: u64,
    epoch: Instant,
    rate: Option<f64>,
) -> Result<()> {
    let n = args.publishers;
    let tasks: Vec<_> = (0..n)
        .map(|p| {
            let share = count / n + u64::from(p < count % n);
            let (size, id) = (args.size, format!("bench-publisher-{p}"));
            let rate = rate.map(|r| r / n as f64);
            tokio::spawn(async move { publish_with(addr, id, share, size, epoch, rate).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// [`publish_with`] with `args.size`.
async fn publish(
    addr: SocketAddr,
    id: String,
    count: u64,
    args: &Args,
    epoch: Instant,
    rate: Option<f64>,
) -> Result<()> {
    publish_with(addr, id, count, args.size, epoch, rate).await
}

/// Publishes `count` stamped messages to [`MQTT_TOPIC`] at QoS 1 over one
/// connection with at most [`WINDOW`] unacknowledged: at `rate` msg/s
/// (each message has its due time, so a late timer sends what is due at
/// once), or as fast as the window allows. Returns once every PUBACK is
/// in.
async fn publish_with(
    addr: SocketAddr,
    id: String,
    count: u64,
    size: usize,
    epoch: Instant,
    rate: Option<f64>,
) -> Result<()> {
    let (reader, mut writer) = raw_mqtt::connect(addr, &id).await?;
    let window = Arc::new(Semaphore::new(WINDOW));
    let acks = raw_mqtt::count_pubacks(reader, count, Arc::clone(&window));
    let start = tokio::time::Instant::now();
    let mut batch = Vec::new();
    let (mut sent, mut pkid) = (0u64, 0u16);
    while sent < count {
        let due = match rate {
            None => count,
            Some(rate) => {
                tokio::time::sleep_until(start + Duration::from_secs_f64(sent as f64 / rate)).await;
                ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(count)
            }
        };
        tokio::time::timeout(STALL, window.acquire())
            .await
            .with_context(|| format!("{id}: no PUBACK for {STALL:?}"))??
            .forget();
        let n = raw_mqtt::take_free(&window, BATCH.min(due.saturating_sub(sent)));
        batch.clear();
        for _ in 0..n {
            pkid = pkid.wrapping_add(1).max(1);
            raw_mqtt::put_publish(&mut batch, MQTT_TOPIC, 1, pkid, &stamp(epoch, size));
        }
        raw_mqtt::send(&mut writer, &batch).await?;
        sent += n;
    }
    acks.await??;
    raw_mqtt::disconnect(&mut writer).await
}

/// What an MQTT subscriber got.
#[derive(Default)]
struct Arrivals {
    count: u64,
    latencies: Latencies,
    /// First and last arrival, since the epoch.
    first: Duration,
    last: Duration,
}

/// A QoS 1 subscriber to [`MQTT_FILTER`], subscribed when this returns,
/// receiving `expect` messages on a task of its own.
async fn subscribe(
    addr: SocketAddr,
    id: &str,
    expect: u64,
    epoch: Instant,
) -> Result<JoinHandle<Result<Arrivals>>> {
    let (mut reader, mut writer) = raw_mqtt::connect(addr, id).await?;
    raw_mqtt::subscribe(&mut reader, &mut writer, MQTT_FILTER, 1).await?;
    Ok(tokio::spawn(async move {
        let mut arrivals = Arrivals::default();
        let mut acks = Vec::new();
        while arrivals.count < expect {
            let frame = tokio::time::timeout(STALL, reader.next())
                .await
                .with_context(|| {
                    format!(
                        "the subscriber got nothing for {STALL:?} after {} of {expect}",
                        arrivals.count
                    )
                })??
                .context("the broker closed the subscriber's connection")?;
            if !frame.is_publish() {
                continue;
            }
            let (qos, pkid, payload) = frame.publish()?;
            let now = epoch.elapsed();
            arrivals.latencies.record(latency(epoch, payload));
            if arrivals.count == 0 {
                arrivals.first = now;
            }
            arrivals.last = now;
            arrivals.count += 1;
            raw_mqtt::acknowledge(&reader, &mut writer, &mut acks, qos, pkid).await?;
        }
        raw_mqtt::send(&mut writer, &acks).await?;
        let _ = raw_mqtt::disconnect(&mut writer).await;
        Ok(arrivals)
    }))
}

// ------------------------------------------------------------ resources

/// CPU and memory over a run: the broker's (when there is one), this
/// program's and the rest of the machine's.
struct Monitor {
    pid: Option<u32>,
    started: Instant,
    broker: Option<u64>,
    bench: Option<u64>,
    machine: Option<u64>,
    threads: HashMap<u32, (String, u64)>,
    rss_max: Arc<AtomicU64>,
    sampler: JoinHandle<()>,
}

/// What a [`Monitor`] saw.
#[derive(Debug, Clone, Default)]
struct Usage {
    /// How long the run took.
    seconds: f64,
    /// Cores used on average.
    broker: Option<f64>,
    bench: f64,
    other: f64,
    broker_rss_max_mib: Option<f64>,
    /// The broker's threads by name: how many ran, cores used together.
    threads: Vec<(String, usize, f64)>,
}

impl Monitor {
    fn start(pid: Option<u32>) -> Monitor {
        let rss_max = Arc::new(AtomicU64::new(pid.and_then(rss_kib).unwrap_or(0)));
        let sampler = tokio::spawn({
            let rss_max = Arc::clone(&rss_max);
            async move {
                let Some(pid) = pid else { return };
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(kib) = rss_kib(pid) {
                        rss_max.fetch_max(kib, Ordering::Relaxed);
                    }
                }
            }
        });
        Monitor {
            pid,
            started: Instant::now(),
            broker: pid.and_then(cpu_ticks),
            bench: cpu_ticks(std::process::id()),
            machine: machine_busy_ticks(),
            threads: pid.map(thread_ticks).unwrap_or_default(),
            rss_max,
            sampler,
        }
    }

    fn stop(self) -> Usage {
        self.sampler.abort();
        let seconds = self.started.elapsed().as_secs_f64();
        let delta = |now: Option<u64>, before: Option<u64>| {
            now.zip(before).map(|(a, b)| a.saturating_sub(b))
        };
        let broker = self.pid.and_then(|pid| delta(cpu_ticks(pid), self.broker));
        let bench = delta(cpu_ticks(std::process::id()), self.bench).unwrap_or(0);
        let machine = delta(machine_busy_ticks(), self.machine).unwrap_or(0);
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        let other = machine.saturating_sub(bench + broker.unwrap_or(0));
        let mut groups: HashMap<String, (usize, u64)> = HashMap::new();
        if let Some(pid) = self.pid {
            for (tid, (name, ticks)) in thread_ticks(pid) {
                let before = self.threads.get(&tid).map_or(0, |(_, t)| *t);
                let used = ticks.saturating_sub(before);
                if used > 0 {
                    let group = groups.entry(name).or_default();
                    group.0 += 1;
                    group.1 += used;
                }
            }
        }
        let mut threads: Vec<_> = groups
            .into_iter()
            .map(|(name, (n, ticks))| (name, n, cores(ticks)))
            .collect();
        threads.sort_by(|a, b| b.2.total_cmp(&a.2));
        Usage {
            seconds,
            broker: broker.map(cores),
            bench: cores(bench),
            other: cores(other),
            broker_rss_max_mib: self
                .pid
                .map(|_| self.rss_max.load(Ordering::Relaxed) as f64 / 1024.0),
            threads,
        }
    }
}

/// Each thread of `pid`: its name and CPU ticks so far.
fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut threads = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "TID (NAME) STATE ...": the name may hold spaces.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, n)| n).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            threads.insert(tid, (name, user + system));
        }
    }
    threads
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn print_threads(usage: &Usage) {
    let threads = usage
        .threads
        .iter()
        .take(6)
        .map(|(name, n, cores)| format!("{name} x{n} {cores:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("broker threads (cores): {threads}");
}

// -------------------------------------------------------------- report

/// p50, p99, p99.9 and max in ms.
#[derive(Debug, Clone, Copy)]
struct Percentiles([f64; 4]);

impl Percentiles {
    fn of(latencies: &mut Latencies) -> Percentiles {
        Percentiles([50.0, 99.0, 99.9, 100.0].map(|p| latencies.percentile_ms(p)))
    }
}

struct Throughput {
    name: String,
    delivered: u64,
    seconds: f64,
    latency: Option<Percentiles>,
    usage: Usage,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    fn print(&self) {
        println!(
            "{}: {} delivered in {:.2} s, {:.0}/s; broker CPU {}, bench {:.2}, others {:.2} cores",
            self.name,
            self.delivered,
            self.seconds,
            self.rate(),
            self.usage
                .broker
                .map_or("-".to_owned(), |c| format!("{c:.2}")),
            self.usage.bench,
            self.usage.other
        );
    }

    fn cells(&self) -> Vec<String> {
        let ms = |i: usize| {
            self.latency
                .map_or("-".to_owned(), |l| format!("{:.1}", l.0[i]))
        };
        // CPU time per delivery, in µs.
        let per_message = |cores: Option<f64>| {
            cores.map_or("-".to_owned(), |c| {
                format!(
                    "{:.1}",
                    c * self.usage.seconds * 1e6 / self.delivered as f64
                )
            })
        };
        vec![
            self.name.clone(),
            self.delivered.to_string(),
            format!("{:.0}", self.rate()),
            ms(0),
            ms(1),
            cores(self.usage.broker),
            format!("{:.2}", self.usage.bench),
            format!("{:.2}", self.usage.other),
            per_message(self.usage.broker),
            per_message(Some(self.usage.bench)),
            self.usage
                .broker_rss_max_mib
                .map_or("-".to_owned(), |m| format!("{m:.1}")),
        ]
    }
}

struct Paced {
    name: String,
    delivered: u64,
    achieved: f64,
    latency: Percentiles,
    usage: Option<Usage>,
}

impl Paced {
    fn print(&self) {
        let [p50, p99, p999, max] = self.latency.0;
        println!(
            "{}: {} at {:.0} msg/s; p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms",
            self.name, self.delivered, self.achieved
        );
    }

    fn cells(&self) -> Vec<String> {
        let mut cells = vec![
            self.name.clone(),
            self.delivered.to_string(),
            format!("{:.0}", self.achieved),
        ];
        cells.extend(self.latency.0.iter().map(|v| format!("{v:.2}")));
        let usage = self.usage.as_ref();
        cells.push(cores(usage.and_then(|u| u.broker)));
        cells.push(
            usage
                .and_then(|u| u.broker_rss_max_mib)
                .map_or("-".to_owned(), |m| format!("{m:.1}")),
        );
        cells
    }
}

fn cores(c: Option<f64>) -> String {
    c.map_or("-".to_owned(), |c| format!("{c:.2}"))
}

#[derive(Default)]
struct Report {
    ingest: Option<f64>,
    backlog: Option<Throughput>,
    live: Option<Throughput>,
    direct: Option<Throughput>,
    mosquitto: Option<Throughput>,
    paced: Vec<Paced>,
}

impl Report {
    fn print(&self, args: &Args) {
        let throughput: Vec<_> = [&self.backlog, &self.live, &self.direct, &self.mosquitto]
            .into_iter()
            .flatten()
            .map(Throughput::cells)
            .collect();
        if !throughput.is_empty() {
            println!(
                "\nthroughput: {} messages of {} B, {} in flight; deliveries/s from the first delivery to the last; CPU in cores, and CPU time per delivery",
                args.messages, args.size, args.in_flight
            );
            print_table(
                &[
                    "run",
                    "delivered",
                    "deliveries/s",
                    "p50 ms",
                    "p99 ms",
                    "broker CPU",
                    "bench CPU",
                    "other CPU",
                    "broker us/msg",
                    "bench us/msg",
                    "broker RSS max MiB",
                ],
                &throughput,
            );
        }
        if !self.paced.is_empty() {
            println!(
                "\npaced: {} msg/s for {} s over MQTT QoS 1 (direct: HTTP POSTs); latency publish -> delivery in ms",
                args.rate, args.paced_secs
            );
            print_table(
                &[
                    "path",
                    "messages",
                    "msg/s",
                    "p50",
                    "p99",
                    "p99.9",
                    "max",
                    "broker CPU",
                    "broker RSS MiB",
                ],
                &self.paced.iter().map(Paced::cells).collect::<Vec<_>>(),
            );
        }
        println!(
            "\nMosquitto has no webhook push (what fan-out adds): its rows are MQTT delivery to a QoS 1 subscriber, without persistence; tidewire's topic is fsynced ({}) before each PUBACK and delivered from its log.",
            args.fsync
        );
        if let Some(ingest) = self.ingest {
            println!("tidewire took the backlog at {ingest:.0} msg/s.");
        }
        let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
        println!("\ntargets (issue 20):");
        for row in [&self.backlog, &self.live].into_iter().flatten() {
            let rate = row.rate();
            println!(
                "  at least 20,000 deliveries/s with {} in flight ({}): {rate:.0}/s ({:.0}% of it): {}",
                args.in_flight,
                row.name,
                100.0 * rate / 20_000.0,
                verdict(rate >= 20_000.0 && args.in_flight <= 64)
            );
        }
        if let Some(webhook) = self.paced.first().filter(|p| p.name.contains("webhook")) {
            let p99 = webhook.latency.0[1];
            println!(
                "  p99 publish -> webhook under 20 ms at {} msg/s: {p99:.2} ms: {}",
                args.rate,
                verdict(p99 < 20.0 && args.rate >= 1000)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_requests() -> Result<()> {
        let mut buf = BytesMut::from(
            &b"POST /hook HTTP/1.1\r\nContent-Length: 3\r\nhost: x\r\n\r\nabcPOST /hook HTTP/1.1\r\ncontent-length: 2\r\n\r\nd"[..],
        );
        assert_eq!(next_request(&mut buf)?.as_deref(), Some(&b"abc"[..]));
        assert_eq!(next_request(&mut buf)?, None);
        buf.extend_from_slice(b"e");
        assert_eq!(next_request(&mut buf)?.as_deref(), Some(&b"de"[..]));
        assert!(buf.is_empty());
        let mut chunked =
            BytesMut::from(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        assert!(next_request(&mut chunked).is_err());
        Ok(())
    }
}
