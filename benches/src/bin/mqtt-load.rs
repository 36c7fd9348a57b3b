//! MQTT load generator: runs the same scenarios against tidewire and
//! Mosquitto, each started by this program on free ports, and prints
//! msg/s (messages delivered, over the time from the first publish to the
//! last delivery), end-to-end latency percentiles and memory side by side
//! with the ratio. tidewire runs with its default fsync `always`; Mosquitto does not
//! fsync at all.
//!
//! Scenarios: 1 -> 1 at QoS 0 and QoS 1 (100-byte payloads, publisher
//! window 1000), 1 -> N fan-out, N -> 1 fan-in, 1 -> N to subscribers
//! that sat idle first (tidewire has parked them: this measures waking
//! them), and idle connections (server RSS per connection). The clients are the minimal ones in
//! `raw_mqtt`, so the brokers, not the clients, set the pace.
//!
//! `--tls` runs every chosen scenario a second time over TLS (both
//! brokers serving the same P-256 certificate made with `openssl` at
//! start, to the same client), measures TLS handshakes per second (clients
//! that connect, CONNECT, DISCONNECT and start again, for a fixed time,
//! beside the version, cipher suite and key exchange each broker
//! negotiated) and RSS per idle TLS connection, and prints whether the TLS
//! targets are met: QoS 1 at least 3x Mosquitto, handshakes at least 2x
//! Mosquitto, an idle TLS connection at most 2x an idle plain one and less
//! than Mosquitto's idle TLS one.
//!
//! `cargo build --release -p tidewire -p tidewire-benches && ulimit -n 65536 &&
//!  target/release/mqtt-load --tls`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tidewire_benches::peers::{
    Peer, Pki, start_mosquitto, start_mosquitto_tls, start_tidewire, tidewire_bin,
};
use tidewire_benches::{
    Latencies, TICKS_PER_SECOND, cpu_ticks, latency, print_table, raw_mqtt, rss_kib, stamp,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// The topic every scenario publishes and subscribes to.
const TOPIC: &str = "bench/topic";

#[derive(Debug, Parser)]
struct Args {
    /// The tidewire binary (default: next to this program).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Messages in each 1 -> 1 run.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Subscribers in the fan-out run.
    #[arg(long, default_value_t = 1000)]
    fan_out: usize,
    /// Publishers in the fan-in run.
    #[arg(long, default_value_t = 1000)]
    fan_in: usize,
    /// Idle connections in the memory run.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Subscribers, idle at first, in the wake run.
    #[arg(long, default_value_t = 10_000)]
    wake: usize,
    /// Payload bytes (at least 21: the send time travels in the payload).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Which scenarios to run (`handshakes` only with `--tls`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "qos0,qos1,fan-out,fan-in,wake,idle,handshakes"
    )]
    only: Vec<String>,
    /// Brokers to run them against (tidewire, mosquitto).
    #[arg(long, value_delimiter = ',', default_value = "tidewire,mosquitto")]
    brokers: Vec<String>,
    /// Run the scenarios over TLS too, and measure TLS handshakes per
    /// second and RSS per idle TLS connection.
    #[arg(long)]
    tls: bool,
    /// Clients connecting over and over in the handshake run.
    #[arg(long, default_value_t = 64)]
    handshake_clients: usize,
    /// Seconds the handshake run lasts.
    #[arg(long, default_value_t = 10)]
    handshake_secs: u64,
}

/// Starts `which` broker; with `tls`, serving MQTT over TLS too.
async fn start(which: &str, tidewire: &Path, mosquitto: &Path, tls: Option<&Pki>) -> Result<Peer> {
    /// The same queue and window sizes as tidewire's configuration.
    const MOSQUITTO_SETTINGS: &str = "max_inflight_messages 1000\nmax_queued_messages 10000";
    match which {
        "tidewire" => {
            let mut config =
                String::from("[mqtt]\nmax_inflight = 1000\nmax_queued_messages = 10000\n");
            if let Some(pki) = tls {
                let quoted =
                    |path: &Path| toml::Value::from(path.display().to_string()).to_string();
                config.push_str(&format!(
                    "tls_listen = \"127.0.0.1:0\"\n\n[tls]\ncert = {}\nkey = {}\n",
                    quoted(&pki.cert),
                    quoted(&pki.key)
                ));
            }
            start_tidewire(tidewire, &config).await
        }
        "mosquitto" => match tls {
            // tidewire sets TCP_NODELAY on every connection; Mosquitto
            // only when told. Without it, its writes after a TLS handshake
            // wait on Nagle for the client's delayed ACK: ~40 ms per
            // connect, and the handshake run measures that, not its CPU.
            Some(pki) => {
                let settings = format!("{MOSQUITTO_SETTINGS}\nset_tcp_nodelay true");
                start_mosquitto_tls(mosquitto, &settings, pki).await
            }
            None => start_mosquitto(mosquitto, MOSQUITTO_SETTINGS, false).await,
        },
        other => anyhow::bail!("unknown broker {other:?} (tidewire, mosquitto)"),
    }
}

/// Where the clients connect, and how: plain TCP, or TLS with this client
/// configuration.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
}

impl Target {
    /// `server`'s plain listener, or its TLS one when `tls` is given.
    fn of(server: &Peer, tls: Option<&TlsConnector>) -> Result<Target> {
        let addr = match tls {
            Some(_) => server.mqtts.context("the broker serves no MQTT over TLS")?,
            None => server.mqtt,
        };
        Ok(Target {
            addr,
            tls: tls.cloned(),
        })
    }
}

/// Publishes in batches of this many packets per write.
const BATCH: u64 = 64;
/// How long idle connections sit before RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// The publisher's in-flight window at QoS 1.
const WINDOW: usize = 1000;

/// How long a subscriber waits for its first message (the others may still
/// be subscribing, and then sit idle) and for each next one.
const PATIENCE: [Duration; 2] = [Duration::from_secs(30), Duration::from_secs(3)];

/// A subscriber that counts messages, acknowledges QoS 1 ones and records
/// latencies until it has `expect` messages or waits too long for the next.
async fn subscriber(
    target: Target,
    id: String,
    qos: u8,
    expect: u64,
    epoch: Instant,
    ready: tokio::sync::mpsc::Sender<()>,
    done_at: Arc<AtomicU64>,
) -> Result<(u64, Latencies)> {
    match &target.tls {
        None => {
            let (reader, writer) = raw_mqtt::connect(target.addr, &id).await?;
            receive(reader, writer, qos, expect, epoch, ready, done_at).await
        }
        Some(tls) => {
            let (reader, writer) = raw_mqtt::connect_tls(target.addr, tls, &id).await?;
            receive(reader, writer, qos, expect, epoch, ready, done_at).await
        }
    }
}

/// [`subscriber`] once connected.
async fn receive<R, W>(
    mut reader: raw_mqtt::Reader<R>,
    mut writer: W,
    qos: u8,
    expect: u64,
    epoch: Instant,
    ready: tokio::sync::mpsc::Sender<()>,
    done_at: Arc<AtomicU64>,
) -> Result<(u64, Latencies)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    raw_mqtt::subscribe(&mut reader, &mut writer, TOPIC, qos).await?;
    let _ = ready.send(()).await;
    let mut received = 0;
    let mut latencies = Latencies::default();
    let mut acks = Vec::new();
    // When the last message arrived: a run that lost messages ends then,
    // not when this subscriber gave up waiting for the rest.
    let mut last = epoch.elapsed();
    while received < expect {
        let patience = PATIENCE[usize::from(received > 0)];
        let frame = match tokio::time::timeout(patience, reader.next()).await {
            Ok(frame) => frame?,
            Err(_) => break, // quiet: whatever was lost is lost
        };
        let Some(frame) = frame else { break };
        if !frame.is_publish() {
            continue;
        }
        let (qos, pkid, payload) = frame.publish()?;
        received += 1;
        last = epoch.elapsed();
        latencies.record(latency(epoch, payload));
        raw_mqtt::acknowledge(&reader, &mut writer, &mut acks, qos, pkid).await?;
    }
    raw_mqtt::send(&mut writer, &acks).await?;
    done_at.fetch_max(last.as_nanos() as u64, Ordering::Relaxed);
    let _ = raw_mqtt::disconnect(&mut writer).await;
    Ok((received, latencies))
}

/// Publishes `count` messages as fast as the broker reads them (QoS 0) or
/// as the window of unacknowledged messages allows (QoS 1).
async fn publisher(
    target: Target,
    id: String,
    qos: u8,
    count: u64,
    size: usize,
    epoch: Instant,
) -> Result<()> {
    match &target.tls {
        None => {
            let (reader, writer) = raw_mqtt::connect(target.addr, &id).await?;
            publish(reader, writer, qos, count, size, epoch).await
        }
        Some(tls) => {
            let (reader, writer) = raw_mqtt::connect_tls(target.addr, tls, &id).await?;
            publish(reader, writer, qos, count, size, epoch).await
        }
    }
}

/// [`publisher`] once connected.
async fn publish<R, W>(
    reader: raw_mqtt::Reader<R>,
    mut writer: W,
    qos: u8,
    count: u64,
    size: usize,
    epoch: Instant,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let window = Arc::new(Semaphore::new(WINDOW));
    let acks = (qos > 0).then(|| raw_mqtt::count_pubacks(reader, count, Arc::clone(&window)));
    let mut batch = Vec::new();
    let mut sent = 0;
    let mut pkid = 0u16;
    while sent < count {
        let n = if qos > 0 {
            window.acquire().await?.forget();
            raw_mqtt::take_free(&window, BATCH.min(count - sent))
        } else {
            BATCH.min(count - sent)
        };
        batch.clear();
        for _ in 0..n {
            pkid = pkid.wrapping_add(1).max(1);
            raw_mqtt::put_publish(&mut batch, TOPIC, qos, pkid, &stamp(epoch, size));
        }
        raw_mqtt::send(&mut writer, &batch).await?;
        sent += n;
    }
    if let Some(acks) = acks {
        acks.await??;
    }
    raw_mqtt::disconnect(&mut writer).await
}

struct Outcome {
    delivered: u64,
    expected: u64,
    elapsed: Duration,
    latencies: Latencies,
}

/// One run: who publishes how much to how many.
#[derive(Debug, Clone, Copy)]
struct Shape {
    publishers: usize,
    subscribers: usize,
    per_publisher: u64,
    qos: u8,
    /// How long the subscribers sit idle before the publishers start.
    settle: Duration,
}

/// `publishers` publishers each send `per_publisher` messages to one topic
/// with `subscribers` subscribers.
async fn scenario(target: &Target, shape: Shape, size: usize) -> Result<Outcome> {
    let Shape {
        publishers,
        subscribers,
        per_publisher,
        qos,
        settle,
    } = shape;
    static RUN: AtomicU64 = AtomicU64::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let epoch = Instant::now();
    let expected_each = per_publisher * publishers as u64;
    let done_at = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(subscribers.max(1));
    let mut subs = Vec::new();
    for i in 0..subscribers {
        subs.push(tokio::spawn(subscriber(
            target.clone(),
            format!("sub-{run}-{i}"),
            qos,
            expected_each,
            epoch,
            ready_tx.clone(),
            Arc::clone(&done_at),
        )));
    }
    // Only the subscribers hold senders now: if one fails before it is
    // ready, the wait ends with its error instead of hanging.
    drop(ready_tx);
    for _ in 0..subscribers {
        if ready.recv().await.is_none() {
            for s in subs {
                if s.is_finished() {
                    s.await??;
                }
            }
            anyhow::bail!("a subscriber failed to subscribe");
        }
    }
    tokio::time::sleep(settle).await;
    let started = epoch.elapsed();
    let mut pubs = Vec::new();
    for i in 0..publishers {
        pubs.push(tokio::spawn(publisher(
            target.clone(),
            format!("pub-{run}-{i}"),
            qos,
            per_publisher,
            size,
            epoch,
        )));
    }
    for p in pubs {
        p.await??;
    }
    let mut delivered = 0;
    let mut latencies = Latencies::default();
    for s in subs {
        let (n, l) = s.await??;
        delivered += n;
        latencies.merge(l);
    }
    let finished = Duration::from_nanos(done_at.load(Ordering::Relaxed));
    Ok(Outcome {
        delivered,
        expected: expected_each * subscribers as u64,
        elapsed: finished.saturating_sub(started),
        latencies,
    })
}

/// Opens `n` idle MQTT connections (plain ones with raw CONNECTs, or
/// over TLS when `tls` is given); returns the server's RSS growth per
/// connection in KiB.
async fn idle_connections(server: &Peer, tls: Option<&TlsConnector>, n: usize) -> Result<f64> {
    let pid = server.child.id().context("pid")?;
    let target = Target::of(server, tls)?;
    // A server just started may still be settling in (threads, files):
    // that is not what the connections cost.
    tokio::time::sleep(IDLE_SETTLE).await;
    let before = rss_kib(pid).context("rss")?;
    let mut plain = Vec::new();
    let mut encrypted = Vec::new();
    for i in 0..n {
        let id = format!("idle{i:06}");
        match &target.tls {
            None => {
                let mut s = TcpStream::connect(target.addr).await?;
                s.write_all(&raw_mqtt::connect_packet(&id, 0)).await?;
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).await?;
                plain.push(s);
            }
            Some(tls) => encrypted.push(raw_mqtt::connect_tls(target.addr, tls, &id).await?),
        }
    }
    // Idle means quiet for a while: tidewire parks a connection (plain or
    // TLS) once it has been quiet for a second.
    tokio::time::sleep(IDLE_SETTLE).await;
    let after = rss_kib(pid).context("rss")?;
    drop((plain, encrypted));
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// What the handshake run measured.
struct HandshakeRate {
    completed: u64,
    failed: u64,
    elapsed: Duration,
    /// CPU cores the broker kept busy, on average.
    server_cores: f64,
    /// CPU cores this program kept busy, on average.
    client_cores: f64,
}

impl HandshakeRate {
    fn per_second(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `clients` clients each connect over TLS, CONNECT, wait for the CONNACK,
/// DISCONNECT and start again, until `duration` is over.
async fn handshakes(
    server: &Peer,
    tls: &TlsConnector,
    clients: usize,
    duration: Duration,
) -> Result<HandshakeRate> {
    /// A connection that takes longer counts as failed.
    const TIMEOUT: Duration = Duration::from_secs(5);
    let pid = server.child.id().context("pid")?;
    let target = Target::of(server, Some(tls))?;
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu = || {
        Some((
            cpu_ticks(pid)?,
            cpu_ticks(std::process::id())?,
            Instant::now(),
        ))
    };
    let (server_before, client_before, started) = cpu().context("cpu ticks")?;
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (target, completed, failed) =
            (target.clone(), Arc::clone(&completed), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            let Some(tls) = &target.tls else { return };
            let mut round = 0u64;
            while Instant::now() < deadline {
                let id = format!("hs-{client}-{round}");
                round += 1;
                let session = async {
                    let (_reader, mut writer) =
                        raw_mqtt::connect_tls(target.addr, tls, &id).await?;
                    raw_mqtt::disconnect(&mut writer).await
                };
                match tokio::time::timeout(TIMEOUT, session).await {
                    Ok(Ok(())) => completed.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let (server_after, client_after, finished) = cpu().context("cpu ticks")?;
    let elapsed = finished - started;
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / elapsed.as_secs_f64().max(1e-9);
    Ok(HandshakeRate {
        completed: completed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        server_cores: cores(server_after.saturating_sub(server_before)),
        client_cores: cores(client_after.saturating_sub(client_before)),
    })
}

fn rate_row(name: &str, scenario: &str, o: &mut Outcome) -> Vec<String> {
    vec![
        scenario.into(),
        name.into(),
        format!(
            "{:.0}",
            o.delivered as f64 / o.elapsed.as_secs_f64().max(1e-9)
        ),
        format!("{}/{}", o.delivered, o.expected),
        format!("{:.2}", o.latencies.percentile_ms(50.0)),
        format!("{:.2}", o.latencies.percentile_ms(99.0)),
        format!("{:.2}", o.latencies.percentile_ms(99.9)),
    ]
}

/// Whether a target is met, or that it was not measured.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tidewire = tidewire_bin(args.tidewire.as_deref())?;
    let size = args.payload.max(21);
    println!(
        "mqtt-load: {} B payloads; 1->1 {} msgs; fan-out 1->{}; fan-in {}->1; \
         1->{} idle subscribers; {} idle connections",
        size, args.messages, args.fan_out, args.fan_in, args.wake, args.idle
    );
    let pki = if args.tls {
        Some(Pki::generate()?)
    } else {
        None
    };
    let connector = match &pki {
        Some(pki) => Some(raw_mqtt::tls_connector(pki.server_certificate()?)?),
        None => None,
    };
    if args.tls {
        println!(
            "TLS: {} handshake clients for {} s; P-256 server certificate, no resumption",
            args.handshake_clients, args.handshake_secs
        );
    }
    // Plain TCP always; TLS too with --tls.
    let transports: Vec<Option<&TlsConnector>> = std::iter::once(None)
        .chain(connector.as_ref().map(Some))
        .collect();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut idle = Vec::new();
    let mut handshake_rows = Vec::new();
    let mut handshake_rates = Vec::new();
    let busy = |publishers, subscribers, per_publisher, qos| Shape {
        publishers,
        subscribers,
        per_publisher,
        qos,
        settle: Duration::ZERO,
    };
    let scenarios = [
        ("qos0", "1->1 QoS0", busy(1, 1, args.messages, 0)),
        ("qos1", "1->1 QoS1", busy(1, 1, args.messages, 1)),
        ("fan-out", "1->N QoS0", busy(1, args.fan_out, 100, 0)),
        ("fan-in", "N->1 QoS1", busy(args.fan_in, 1, 20, 1)),
        (
            "wake",
            "1->N idle",
            Shape {
                settle: IDLE_SETTLE,
                ..busy(1, args.wake, 10, 0)
            },
        ),
    ];
    let chosen = |name: &str| args.only.iter().any(|o| o == name);
    for (name, label, shape) in scenarios {
        if !chosen(name) {
            continue;
        }
        for &tls in &transports {
            let label = match tls {
                Some(_) => format!("{label} TLS"),
                None => label.to_string(),
            };
            let mut rates = Vec::new();
            for which in &args.brokers {
                let server =
                    start(which, &tidewire, &args.mosquitto, tls.and(pki.as_ref())).await?;
                let target = Target::of(&server, tls)?;
                let mut outcome = scenario(&target, shape, size).await?;
                rates.push(outcome.delivered as f64 / outcome.elapsed.as_secs_f64().max(1e-9));
                rows.push(rate_row(server.name, &label, &mut outcome));
            }
            if let [ours, theirs] = rates[..] {
                ratios.push((label, ours / theirs));
            }
        }
    }
    if let (Some(tls), true) = (&connector, chosen("handshakes")) {
        for which in &args.brokers {
            let server = start(which, &tidewire, &args.mosquitto, pki.as_ref()).await?;
            let duration = Duration::from_secs(args.handshake_secs);
            let target = Target::of(&server, Some(tls))?;
            let negotiated = raw_mqtt::tls_parameters(target.addr, tls).await?;
            let rate = handshakes(&server, tls, args.handshake_clients, duration).await?;
            handshake_rows.push(vec![
                server.name.to_string(),
                negotiated,
                format!("{:.0}", rate.per_second()),
                rate.completed.to_string(),
                rate.failed.to_string(),
                format!("{:.2}", rate.server_cores),
                format!("{:.2}", rate.client_cores),
            ]);
            handshake_rates.push((server.name, rate.per_second()));
        }
    }
    for &tls in transports.iter().filter(|_| chosen("idle")) {
        for which in &args.brokers {
            let server = start(which, &tidewire, &args.mosquitto, tls.and(pki.as_ref())).await?;
            let per_conn = idle_connections(&server, tls, args.idle).await?;
            idle.push((server.name, tls.is_some(), per_conn));
        }
    }
    print_table(
        &[
            "scenario",
            "broker",
            "msg/s",
            "delivered",
            "p50 ms",
            "p99 ms",
            "p999 ms",
        ],
        &rows,
    );
    if !handshake_rows.is_empty() {
        println!();
        print_table(
            &[
                "broker",
                "negotiated",
                "TLS handshakes/s",
                "completed",
                "failed",
                "broker CPU (cores)",
                "load generator CPU (cores)",
            ],
            &handshake_rows,
        );
    }
    println!();
    for (label, ratio) in &ratios {
        println!("{label}: tidewire / mosquitto = {ratio:.2}x");
    }
    let handshake_rate = |name: &str| {
        handshake_rates
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, rate)| *rate)
    };
    let handshake_ratio = handshake_rate("tidewire")
        .zip(handshake_rate("mosquitto"))
        .map(|(ours, theirs)| ours / theirs);
    if let Some(ratio) = handshake_ratio {
        println!("TLS handshakes/s: tidewire / mosquitto = {ratio:.2}x");
    }
    for (name, tls, kib) in &idle {
        let kind = if *tls { "idle TLS" } else { "idle" };
        println!("{name}: {kib:.2} KiB RSS per {kind} connection");
    }
    if args.tls {
        let ratio = |label: &str| ratios.iter().find(|(l, _)| l == label).map(|(_, r)| *r);
        let idle_kib = |name: &str, tls: bool| {
            idle.iter()
                .find(|(n, t, _)| *n == name && *t == tls)
                .map(|(_, _, kib)| *kib)
        };
        let qos1 = ratio("1->1 QoS1 TLS");
        let tls_idle = idle_kib("tidewire", true);
        let plain_idle = idle_kib("tidewire", false);
        let mosquitto_tls_idle = idle_kib("mosquitto", true);
        let idle_vs_plain = tls_idle.zip(plain_idle).map(|(t, p)| t / p);
        println!();
        println!("TLS targets:");
        let shown = |x: Option<f64>, unit: &str| match x {
            Some(x) => format!("{x:.2}{unit}"),
            None => "-".into(),
        };
        println!(
            "  QoS 1 over TLS >= 3x Mosquitto over TLS: {} -> {}",
            shown(qos1, "x"),
            verdict(qos1.map(|r| r >= 3.0))
        );
        println!(
            "  TLS handshakes/s >= 2x Mosquitto's: {} -> {}",
            shown(handshake_ratio, "x"),
            verdict(handshake_ratio.map(|r| r >= 2.0))
        );
        println!(
            "  idle TLS connection <= 2x an idle plain one: {} / {} KiB = {} -> {}",
            shown(tls_idle, ""),
            shown(plain_idle, ""),
            shown(idle_vs_plain, "x"),
            verdict(idle_vs_plain.map(|r| r <= 2.0))
        );
        println!(
            "  idle TLS connection < Mosquitto's idle TLS one: {} vs {} KiB -> {}",
            shown(tls_idle, ""),
            shown(mosquitto_tls_idle, ""),
            verdict(
                tls_idle
                    .zip(mosquitto_tls_idle)
                    .map(|(ours, theirs)| ours < theirs)
            )
        );
    }
    Ok(())
}
