//! MQTT load generator: runs the same scenarios against tidewire and
//! Mosquitto, each started by this program on free ports, and prints
//! msg/s, end-to-end latency percentiles and memory side by side with the
//! ratio. tidewire runs with its default fsync `always`; Mosquitto does not
//! fsync at all.
//!
//! Scenarios: 1 -> 1 at QoS 0 and QoS 1 (100-byte payloads, publisher
//! window 1000), 1 -> N fan-out, N -> 1 fan-in, 1 -> N to subscribers
//! that sat idle first (tidewire has parked them: this measures waking
//! them), and idle connections (server RSS per connection). The clients are the minimal ones in
//! `raw_mqtt`, so the brokers, not the clients, set the pace.
//!
//! `cargo build --release -p tidewire -p tidewire-benches && ulimit -n 65536 &&
//!  target/release/mqtt-load`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tidewire_benches::peers::{Peer, start_mosquitto, start_tidewire, tidewire_bin};
use tidewire_benches::{Latencies, latency, print_table, raw_mqtt, rss_kib, stamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

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
    /// Which scenarios to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "qos0,qos1,fan-out,fan-in,wake,idle"
    )]
    only: Vec<String>,
    /// Brokers to run them against (tidewire, mosquitto).
    #[arg(long, value_delimiter = ',', default_value = "tidewire,mosquitto")]
    brokers: Vec<String>,
}

async fn start(which: &str, tidewire: &Path, mosquitto: &Path) -> Result<Peer> {
    match which {
        // The same queue and window sizes as the Mosquitto configuration.
        "tidewire" => {
            start_tidewire(
                tidewire,
                "[mqtt]\nmax_inflight = 1000\nmax_queued_messages = 10000\n",
            )
            .await
        }
        "mosquitto" => {
            start_mosquitto(
                mosquitto,
                "max_inflight_messages 1000\nmax_queued_messages 10000",
                false,
            )
            .await
        }
        other => anyhow::bail!("unknown broker {other:?} (tidewire, mosquitto)"),
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
    addr: SocketAddr,
    id: String,
    qos: u8,
    expect: u64,
    epoch: Instant,
    ready: tokio::sync::mpsc::Sender<()>,
    done_at: Arc<AtomicU64>,
) -> Result<(u64, Latencies)> {
    let (mut reader, mut writer) = raw_mqtt::connect(addr, &id).await?;
    raw_mqtt::subscribe(&mut reader, &mut writer, TOPIC, qos).await?;
    let _ = ready.send(()).await;
    let mut received = 0;
    let mut latencies = Latencies::default();
    let mut acks = Vec::new();
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
        latencies.record(latency(epoch, payload));
        if qos > 0 {
            raw_mqtt::put_puback(&mut acks, pkid);
        }
        if !acks.is_empty() && !reader.has_frame() {
            writer.write_all(&acks).await?;
            acks.clear();
        }
    }
    writer.write_all(&acks).await?;
    done_at.fetch_max(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let _ = raw_mqtt::disconnect(&mut writer).await;
    Ok((received, latencies))
}

/// Publishes `count` messages as fast as the broker reads them (QoS 0) or
/// as the window of unacknowledged messages allows (QoS 1).
async fn publisher(
    addr: SocketAddr,
    id: String,
    qos: u8,
    count: u64,
    size: usize,
    epoch: Instant,
) -> Result<()> {
    let (mut reader, mut writer) = raw_mqtt::connect(addr, &id).await?;
    let window = Arc::new(Semaphore::new(WINDOW));
    let acks = (qos > 0).then(|| {
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < count {
                let frame = reader.next().await?.context("closed before every PUBACK")?;
                if frame.is_puback() {
                    acked += 1;
                    window.add_permits(1);
                }
            }
            anyhow::Ok(())
        })
    });
    let mut batch = Vec::new();
    let mut sent = 0;
    let mut pkid = 0u16;
    while sent < count {
        let mut n = 1;
        if qos > 0 {
            window.acquire().await?.forget();
            while n < BATCH.min(count - sent) {
                match window.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                n += 1;
            }
        } else {
            n = BATCH.min(count - sent);
        }
        batch.clear();
        for _ in 0..n {
            pkid = pkid.wrapping_add(1).max(1);
            raw_mqtt::put_publish(&mut batch, TOPIC, qos, pkid, &stamp(epoch, size));
        }
        writer.write_all(&batch).await?;
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
async fn scenario(addr: SocketAddr, shape: Shape, size: usize) -> Result<Outcome> {
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
            addr,
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
            addr,
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

/// Opens `n` idle MQTT connections with raw CONNECTs; returns the server's
/// RSS growth per connection in KiB.
async fn idle_connections(server: &Peer, n: usize) -> Result<f64> {
    let pid = server.child.id().context("pid")?;
    // A server just started may still be settling in (threads, files):
    // that is not what the connections cost.
    tokio::time::sleep(IDLE_SETTLE).await;
    let before = rss_kib(pid).context("rss")?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(server.mqtt).await?;
        let connect = raw_mqtt::connect_packet(&format!("idle{i:06}"), 0);
        s.write_all(&connect).await?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await?;
        conns.push(s);
    }
    // Idle means quiet for a while: tidewire parks a connection once it
    // has been quiet for a second.
    tokio::time::sleep(IDLE_SETTLE).await;
    let after = rss_kib(pid).context("rss")?;
    drop(conns);
    Ok(after.saturating_sub(before) as f64 / n as f64)
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
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut idle = Vec::new();
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
        let mut rates = Vec::new();
        for which in &args.brokers {
            let server = start(which, &tidewire, &args.mosquitto).await?;
            let mut outcome = scenario(server.mqtt, shape, size).await?;
            rates.push(outcome.delivered as f64 / outcome.elapsed.as_secs_f64().max(1e-9));
            rows.push(rate_row(server.name, label, &mut outcome));
        }
        if let [ours, theirs] = rates[..] {
            ratios.push((label, ours / theirs));
        }
    }
    for which in args.brokers.iter().filter(|_| chosen("idle")) {
        let server = start(which, &tidewire, &args.mosquitto).await?;
        let per_conn = idle_connections(&server, args.idle).await?;
        idle.push((server.name, per_conn));
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
    println!();
    for (label, ratio) in ratios {
        println!("{label}: tidewire / mosquitto = {ratio:.2}x");
    }
    for (name, kib) in idle {
        println!("{name}: {kib:.2} KiB RSS per idle connection");
    }
    Ok(())
}
