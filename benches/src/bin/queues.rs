//! Queue benchmark (issue 16): the same work-queue workload against
//! tidewire's queues, RabbitMQ and JetStream, each started by this program
//! on free loopback ports with its data in a temporary directory.
//!
//! - **tidewire**: the release binary with `[[queues]] name = "bench"`,
//!   fsync `always`, driven through `/api/v1/queues` over keep-alive
//!   HTTP/1.1 connections (the client is `raw_http`): sends of 10 messages (SendMessageBatch),
//!   receives of up to 10 with a long poll (ReceiveMessage), deletes of
//!   what each receive got (DeleteMessageBatch). `tidewire-lazy` is the
//!   same with `fsync = "interval:120000"`: JetStream's default durability.
//!   `tidewire-mqtt` has its producers publish to a topic in the queue's
//!   `from` over MQTT instead (QoS 1, 10 publishes then their PUBACKs, as
//!   the peers' producers do; the client is `raw_mqtt`), the edge path
//!   the queues exist for.
//! - **RabbitMQ** (Debian's `rabbitmq-server`): a durable quorum queue;
//!   producers publish 10 persistent messages and wait for their publisher
//!   confirms; consumers have a prefetch of 10 and acknowledge (manual
//!   acks, `multiple`) each batch they got. The client is `raw_amqp`.
//! - **JetStream** (`nats-server -js`): a work-queue stream with file
//!   storage; producers publish 10 and wait for their PubAcks; consumers
//!   pull batches of 10 from one durable pull consumer and ack each
//!   message. `jetstream` runs nats-server's default durability (writes
//!   reach the OS at once, fsync every 2 minutes); `jetstream-fsync` sets
//!   `sync_interval: always` (nats-server 2.10+), which fsyncs every write
//!   without group commit and is far slower.
//!
//! Every message is 1 KiB and carries its send time, so each receive
//! measures send -> receive latency. Per system it runs:
//! 1. **end to end**: `--producers` send `--messages` while `--consumers`
//!    receive and delete them; msgs/s and p50/p99 latency;
//! 2. **paced**: the same at `--rate` msg/s for `--paced-secs`;
//! 3. **wake-up**: an idle consumer waits in a long poll, one message is
//!    sent, time until the consumer has it (`--wakeups` times);
//! 4. **backlog**: `--messages` sent into an empty queue and drained
//!    (receive + delete), then `--queued` sent, the server's RSS read, and
//!    `--messages` drained from that backlog; receive rates side by side.
//!
//! Then it prints the tables and whether issue 16's targets are met.
//!
//! `cargo build --release -p tidewire -p tidewire-benches &&
//!  target/release/queues --only tidewire,rabbitmq,jetstream`

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream::{self, consumer, stream};
use clap::Parser;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tidewire_benches::peers::{
    Daemon, Peer, start_nats, start_rabbitmq, start_tidewire, tidewire_bin,
};
use tidewire_benches::{
    Latencies, TICKS_PER_SECOND, cpu_ticks, latency, print_table, raw_amqp, raw_http, raw_mqtt,
    rss_kib, stamp,
};
use tokio_util::sync::CancellationToken;

/// `tidewire-lazy`'s fsync policy: JetStream's default durability (each
/// write reaches the OS before its acknowledgement, an fsync every 2
/// minutes), to compare the two at the same promise.
const LAZY_FSYNC: &str = "interval:120000";
/// The queue (stream, for JetStream) every scenario uses.
const QUEUE: &str = "bench";
/// `tidewire-mqtt`'s producers publish here; the queue takes it.
const MQTT_TOPIC: &str = "bench/in";
/// Numbers `tidewire-mqtt`'s producers' client ids.
static PRODUCER_IDS: AtomicU64 = AtomicU64::new(0);
/// JetStream's subject and durable consumer.
const SUBJECT: &str = "bench";
const DURABLE: &str = "workers";
/// How long a receive waits for a first message (SQS's longest poll).
const LONG_POLL: Duration = Duration::from_secs(20);
/// How long a received message stays hidden (tidewire).
const VISIBILITY_MS: u64 = 30_000;
/// A run that receives nothing for this long has failed.
const STALL: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
struct Args {
    /// Messages in the end-to-end run, and drained in each backlog run.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Producer connections.
    #[arg(long, default_value_t = 8)]
    producers: u64,
    /// Consumer connections.
    #[arg(long, default_value_t = 8)]
    consumers: u64,
    /// Messages per send and most per receive (SQS's batch limit is 10).
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Message size in bytes (at least 21: the send time travels in it).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages queued before the RSS reading and the deep drain.
    #[arg(long, default_value_t = 1_000_000)]
    queued: u64,
    /// Send rate of the paced run, messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the paced run in seconds (0 skips it).
    #[arg(long, default_value_t = 10)]
    paced_secs: u64,
    /// Long-poll wake-ups measured (0 skips them).
    #[arg(long, default_value_t = 20)]
    wakeups: usize,
    /// Systems to run, in order: tidewire, tidewire-lazy (fsync every 2
    /// minutes, as JetStream's default), tidewire-mqtt (producers publish
    /// over MQTT), rabbitmq, jetstream, jetstream-fsync.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tidewire,rabbitmq,jetstream"
    )]
    only: Vec<String>,
    /// The tidewire binary (default: next to this program).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// RabbitMQ's server script.
    #[arg(long, default_value = "/usr/lib/rabbitmq/bin/rabbitmq-server")]
    rabbitmq: PathBuf,
    /// The nats-server binary (2.10+ to fsync every write).
    #[arg(long, env = "NATS_SERVER", default_value = "nats-server")]
    nats_server: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        (1..=10).contains(&args.batch),
        "--batch must be from 1 to 10"
    );
    ensure!(args.size >= 21, "--size must be at least 21 bytes");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

/// What one system measured.
#[derive(Debug, Default)]
struct Report {
    name: String,
    durability: String,
    end_to_end: f64,
    latency: (f64, f64),
    server_cpu: f64,
    bench_cpu: f64,
    paced: Option<(f64, f64, f64)>,
    wakeup: Option<(f64, f64)>,
    rss_idle_mib: f64,
    rss_queued_mib: f64,
    fill_rate: f64,
    drain_empty: f64,
    drain_deep: f64,
}

async fn run(args: &Args) -> Result<()> {
    println!(
        "queues: {} x {} B messages, {} producers, {} consumers, batches of {}, {} queued for the backlog run",
        args.messages, args.size, args.producers, args.consumers, args.batch, args.queued
    );
    let mut reports = Vec::new();
    for system in &args.only {
        println!("\n== {system}");
        let report = match system.as_str() {
            "tidewire" | "tidewire-lazy" | "tidewire-mqtt" => {
                let fsync = if system == "tidewire-lazy" {
                    LAZY_FSYNC
                } else {
                    "always"
                };
                // The MQTT producers' topic goes to the queue alone: no
                // stream takes it.
                let config = format!(
                    "[[streams]]\nname = \"other\"\nfilters = [\"other/#\"]\n\n\
                     [[queues]]\nname = \"{QUEUE}\"\nfrom = [\"{MQTT_TOPIC}\"]\nfsync = \"{fsync}\"\n"
                );
                let server =
                    start_tidewire(&tidewire_bin(args.tidewire.as_deref())?, &config).await?;
                let target = Target::tidewire(&server, system == "tidewire-mqtt")?;
                let pid = server.child.id().context("tidewire exited")?;
                let durability = format!("queue log (messages and journal), fsync {fsync}");
                bench(args, system, &durability, &target, pid).await?
            }
            "rabbitmq" => {
                let server = start_rabbitmq(&args.rabbitmq).await?;
                let target = Target::rabbitmq(server.addr).await?;
                let pid = server.server_pid;
                let durability = server.durability.clone();
                let report = bench(args, system, &durability, &target, pid).await?;
                drop(server);
                report
            }
            "jetstream" | "jetstream-fsync" => {
                let server: Daemon =
                    start_nats(&args.nats_server, system == "jetstream-fsync").await?;
                let target = Target::jetstream(server.addr).await?;
                let pid = server.server_pid;
                let durability = server.durability.clone();
                bench(args, system, &durability, &target, pid).await?
            }
            other => {
                bail!(
                    "unknown system {other:?} (tidewire, tidewire-lazy, tidewire-mqtt, rabbitmq, jetstream, jetstream-fsync)"
                )
            }
        };
        reports.push(report);
    }
    print_reports(args, &reports);
    Ok(())
}

/// Runs every scenario against one system.
async fn bench(
    args: &Args,
    name: &str,
    durability: &str,
    target: &Target,
    pid: u32,
) -> Result<Report> {
    let epoch = Instant::now();
    let mut report = Report {
        name: name.to_owned(),
        durability: durability.to_owned(),
        rss_idle_mib: mib(rss_kib(pid)),
        ..Report::default()
    };

    // 1. End to end.
    let commits_before = target.commits().await?;
    let cpu_before = (cpu_ticks(pid), cpu_ticks(std::process::id()));
    let (elapsed, mut lat) = end_to_end(args, target, epoch, args.messages, None).await?;
    let cpu = |before: Option<u64>, p: u32| {
        cpu_ticks(p).zip(before).map_or(f64::NAN, |(a, b)| {
            a.saturating_sub(b) as f64 / TICKS_PER_SECOND
        })
    };
    report.server_cpu = cpu(cpu_before.0, pid);
    report.bench_cpu = cpu(cpu_before.1, std::process::id());
    report.end_to_end = args.messages as f64 / elapsed.as_secs_f64();
    report.latency = (lat.percentile_ms(50.0), lat.percentile_ms(99.0));
    println!(
        "end to end: {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms; CPU {:.1} s server, {:.1} s bench",
        report.end_to_end, report.latency.0, report.latency.1, report.server_cpu, report.bench_cpu
    );
    for ((log, fsyncs, records), (_, fsyncs_before, records_before)) in
        target.commits().await?.into_iter().zip(commits_before)
    {
        let (fsyncs, records) = (fsyncs - fsyncs_before, records - records_before);
        println!(
            "  {log}: {records:.0} records in {fsyncs:.0} fsyncs ({:.1} per fsync, {:.2} fsyncs per message)",
            records / fsyncs.max(1.0),
            fsyncs / args.messages as f64
        );
    }

    // 2. Paced.
    if args.paced_secs > 0 {
        let total = args.rate * args.paced_secs;
        let (elapsed, mut lat) =
            end_to_end(args, target, epoch, total, Some(args.rate as f64)).await?;
        let achieved = total as f64 / elapsed.as_secs_f64();
        report.paced = Some((achieved, lat.percentile_ms(50.0), lat.percentile_ms(99.0)));
        println!(
            "paced at {} msg/s: {achieved:.0} msg/s achieved, p50 {:.2} ms, p99 {:.2} ms",
            args.rate,
            lat.percentile_ms(50.0),
            lat.percentile_ms(99.0)
        );
    }

    // 3. Long-poll wake-up.
    if args.wakeups > 0 {
        let mut lat = wakeups(args, target, epoch).await?;
        report.wakeup = Some((lat.percentile_ms(50.0), lat.percentile_ms(100.0)));
        println!(
            "wake-up: p50 {:.2} ms, max {:.2} ms over {}",
            lat.percentile_ms(50.0),
            lat.percentile_ms(100.0),
            lat.len()
        );
    }

    // 4. Backlog: drain from a queue that holds only what is drained,
    // then from one that holds `--queued` more.
    ensure_empty(target).await?;
    let drain = args.messages.min(args.queued.max(1));
    fill(args, target, epoch, drain).await?;
    let (elapsed, _) = consume(args, target, epoch, drain).await?;
    report.drain_empty = drain as f64 / elapsed.as_secs_f64();
    println!(
        "drain {drain} from an otherwise empty queue: {:.0} msg/s",
        report.drain_empty
    );
    let started = Instant::now();
    fill(args, target, epoch, args.queued).await?;
    report.fill_rate = args.queued as f64 / started.elapsed().as_secs_f64();
    let depth = target.depth().await?;
    ensure!(
        depth >= args.queued,
        "{name} holds {depth} messages after {} were sent",
        args.queued
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.rss_queued_mib = mib(rss_kib(pid));
    println!(
        "{} queued (filled at {:.0} msg/s): server RSS {:.1} MiB",
        args.queued, report.fill_rate, report.rss_queued_mib
    );
    let (elapsed, _) = consume(args, target, epoch, drain).await?;
    report.drain_deep = drain as f64 / elapsed.as_secs_f64();
    println!(
        "drain {drain} from {} queued: {:.0} msg/s",
        args.queued, report.drain_deep
    );
    Ok(report)
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

/// Producers send `total` messages (at `rate` msg/s if given) while
/// consumers receive and delete them; the time until the last is
/// received, and every message's send -> receive latency.
async fn end_to_end(
    args: &Args,
    target: &Target,
    epoch: Instant,
    total: u64,
    rate: Option<f64>,
) -> Result<(Duration, Latencies)> {
    let consumers = connect_consumers(args, target).await?;
    let producers = connect_producers(args, target).await?;
    let started = Instant::now();
    let receiving = tokio::spawn(run_consumers(consumers, total, args.batch, epoch));
    let sending = tokio::spawn(run_producers(
        producers, total, args.batch, args.size, rate, epoch,
    ));
    sending.await??;
    let latencies = receiving.await??;
    Ok((started.elapsed(), latencies))
}

/// Sends `total` messages as fast as the producers go.
async fn fill(args: &Args, target: &Target, epoch: Instant, total: u64) -> Result<()> {
    let producers = connect_producers(args, target).await?;
    run_producers(producers, total, args.batch, args.size, None, epoch).await
}

/// Receives and deletes `total` messages; how long it took.
async fn consume(
    args: &Args,
    target: &Target,
    epoch: Instant,
    total: u64,
) -> Result<(Duration, Latencies)> {
    let consumers = connect_consumers(args, target).await?;
    let started = Instant::now();
    let latencies = run_consumers(consumers, total, args.batch, epoch).await?;
    Ok((started.elapsed(), latencies))
}

async fn connect_producers(args: &Args, target: &Target) -> Result<Vec<Producer>> {
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        producers.push(target.producer().await?);
    }
    Ok(producers)
}

async fn connect_consumers(args: &Args, target: &Target) -> Result<Vec<Consumer>> {
    let mut consumers = Vec::new();
    for _ in 0..args.consumers.max(1) {
        consumers.push(target.consumer(args.batch).await?);
    }
    Ok(consumers)
}

/// Each producer sends its share of `total` in batches; paced, producer
/// `p` of `n` sends a batch every `n * batch / rate` seconds, offset by
/// `p * batch / rate`, so together they send at `rate`.
async fn run_producers(
    producers: Vec<Producer>,
    total: u64,
    batch: usize,
    size: usize,
    rate: Option<f64>,
    epoch: Instant,
) -> Result<()> {
    let n = producers.len() as u64;
    let batch = batch as u64;
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(p, mut producer)| {
            let p = p as u64;
            let share = total / n + u64::from(p < total % n);
            let mut tick = rate.map(|rate| {
                let period = Duration::from_secs_f64((n * batch) as f64 / rate);
                let offset = Duration::from_secs_f64((p * batch) as f64 / rate);
                let mut tick = tokio::time::interval_at(start + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                tick
            });
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < share {
                    if let Some(tick) = &mut tick {
                        tick.tick().await;
                    }
                    let count = batch.min(share - sent);
                    let bodies: Vec<Vec<u8>> = (0..count).map(|_| stamp(epoch, size)).collect();
                    producer.send(&bodies).await?;
                    sent += count;
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

/// Consumers receive and delete until `total` messages came in together.
async fn run_consumers(
    consumers: Vec<Consumer>,
    total: u64,
    batch: usize,
    epoch: Instant,
) -> Result<Latencies> {
    let received = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut consumer| {
            let (received, done) = (Arc::clone(&received), done.clone());
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                loop {
                    let got = tokio::select! {
                        () = done.cancelled() => break,
                        got = consumer.receive(epoch, batch, LONG_POLL) => got?,
                    };
                    let n = got.len() as u64;
                    for d in got {
                        lat.record(d);
                    }
                    if received.fetch_add(n, Ordering::Relaxed) + n >= total {
                        done.cancel();
                    }
                }
                consumer.finish().await?;
                anyhow::Ok(lat)
            })
        })
        .collect();
    // A run that stops receiving fails instead of hanging.
    let mut last = (0, Instant::now());
    while !done.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            done.cancel();
            bail!("consumers stalled at {now} of {total} messages");
        }
        if tasks.iter().any(|t| t.is_finished()) {
            // One failed: stop the others and report it below.
            done.cancel();
        }
    }
    let mut all = Latencies::default();
    for task in tasks {
        all.merge(task.await??);
    }
    let got = received.load(Ordering::Relaxed);
    ensure!(got >= total, "received {got} of {total} messages");
    Ok(all)
}

/// An idle consumer in a long poll; one message sent after a pause; the
/// time until the consumer has it. `args.wakeups` times.
async fn wakeups(args: &Args, target: &Target, epoch: Instant) -> Result<Latencies> {
    ensure_empty(target).await?;
    let mut consumer = target.consumer(args.batch).await?;
    let mut producer = target.producer().await?;
    let mut lat = Latencies::default();
    for _ in 0..args.wakeups {
        let (got, sent) = tokio::join!(consumer.receive(epoch, args.batch, LONG_POLL), async {
            // Long enough for the consumer to be parked in its poll.
            tokio::time::sleep(Duration::from_millis(250)).await;
            producer.send(&[stamp(epoch, args.size)]).await
        });
        sent?;
        let got = got?;
        ensure!(got.len() == 1, "a wake-up received {} messages", got.len());
        lat.record(got[0]);
    }
    consumer.finish().await?;
    Ok(lat)
}

/// Fails unless the queue holds nothing ready. Acknowledgements that get
/// no answer (RabbitMQ's, JetStream's) may still be on their way, so it
/// looks again for up to a second.
async fn ensure_empty(target: &Target) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let depth = target.depth().await?;
        if depth == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the queue holds {depth} messages, expected none"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How to reach one system's queue.
#[derive(Clone)]
enum Target {
    Tidewire {
        addr: SocketAddr,
        /// `/api/v1/queues/bench`.
        base: String,
        /// Producers publish here over MQTT (QoS 1) rather than send over
        /// HTTP.
        mqtt: Option<SocketAddr>,
    },
    RabbitMq {
        addr: SocketAddr,
    },
    JetStream {
        client: async_nats::Client,
    },
}

impl Target {
    fn tidewire(server: &Peer, mqtt_producers: bool) -> Result<Target> {
        let addr = server.websocket.context("no http listener")?;
        Ok(Target::Tidewire {
            addr,
            base: format!("/api/v1/queues/{QUEUE}"),
            mqtt: mqtt_producers.then_some(server.mqtt),
        })
    }

    async fn rabbitmq(addr: SocketAddr) -> Result<Target> {
        let mut conn = raw_amqp::Connection::open(addr, "guest", "guest").await?;
        conn.declare_quorum_queue(QUEUE).await?;
        Ok(Target::RabbitMq { addr })
    }

    async fn jetstream(addr: SocketAddr) -> Result<Target> {
        let client = async_nats::connect(addr.to_string()).await?;
        let js = jetstream::new(client.clone());
        let stream = js
            .create_stream(stream::Config {
                name: QUEUE.to_owned(),
                subjects: vec![SUBJECT.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(DURABLE.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
        Ok(Target::JetStream { client })
    }

    async fn producer(&self) -> Result<Producer> {
        Ok(match self {
            Target::Tidewire {
                mqtt: Some(mqtt), ..
            } => {
                let client_id =
                    format!("producer-{}", PRODUCER_IDS.fetch_add(1, Ordering::Relaxed));
                let (reader, writer) = raw_mqtt::connect(*mqtt, &client_id).await?;
                Producer::TidewireMqtt {
                    reader,
                    writer,
                    pkid: 0,
                    out: Vec::new(),
                }
            }
            Target::Tidewire { addr, base, .. } => Producer::Tidewire {
                conn: raw_http::Connection::open(*addr).await?,
                path: format!("{base}/messages"),
            },
            Target::RabbitMq { addr } => {
                let mut conn = raw_amqp::Connection::open(*addr, "guest", "guest").await?;
                conn.confirm_select().await?;
                Producer::RabbitMq(conn)
            }
            Target::JetStream { client } => {
                // A connection per producer, as the other systems have.
                let client = async_nats::connect(server_url(client)).await?;
                Producer::JetStream(jetstream::new(client))
            }
        })
    }

    async fn consumer(&self, batch: usize) -> Result<Consumer> {
        Ok(match self {
            Target::Tidewire { addr, base, .. } => Consumer::Tidewire {
                conn: raw_http::Connection::open(*addr).await?,
                receive: format!("{base}/receive"),
                delete: Arc::new(format!("{base}/delete")),
                deleter: Deleter::Idle(raw_http::Connection::open(*addr).await?),
            },
            Target::RabbitMq { addr } => {
                let mut conn = raw_amqp::Connection::open(*addr, "guest", "guest").await?;
                conn.consume(QUEUE, u16::try_from(batch)?).await?;
                Consumer::RabbitMq(conn)
            }
            Target::JetStream { client } => {
                let client = async_nats::connect(server_url(client)).await?;
                let js = jetstream::new(client);
                let consumer: consumer::PullConsumer =
                    js.get_consumer_from_stream(DURABLE, QUEUE).await?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(batch)
                    .messages()
                    .await?;
                Consumer::JetStream(Box::new(messages))
            }
        })
    }

    /// Messages ready to be received.
    async fn depth(&self) -> Result<u64> {
        match self {
            Target::Tidewire { addr, base, .. } => {
                let mut conn = raw_http::Connection::open(*addr).await?;
                let answer: QueueInfo =
                    serde_json::from_slice(&conn.expect_ok("GET", base, b"").await?)?;
                Ok(answer.depth.visible + answer.depth.delayed)
            }
            Target::RabbitMq { addr } => {
                let mut conn = raw_amqp::Connection::open(*addr, "guest", "guest").await?;
                Ok(conn.message_count(QUEUE).await?.into())
            }
            Target::JetStream { client } => {
                let js = jetstream::new(client.clone());
                let mut consumer: consumer::PullConsumer =
                    js.get_consumer_from_stream(DURABLE, QUEUE).await?;
                Ok(consumer.info().await?.num_pending)
            }
        }
    }
}

impl Target {
    /// tidewire: the queue's log (its messages and its journal records)
    /// with its fsyncs and records so far, from `/metrics`; nothing for the
    /// others.
    async fn commits(&self) -> Result<Vec<(String, f64, f64)>> {
        let Target::Tidewire { addr, .. } = self else {
            return Ok(Vec::new());
        };
        let mut conn = raw_http::Connection::open(*addr).await?;
        let text = String::from_utf8(conn.expect_ok("GET", "/metrics", b"").await?.into())?;
        let value = |family: &str, log: &str| {
            let prefix = format!("{family}{{stream=\"{log}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        Ok([format!("queue:{QUEUE}")]
            .into_iter()
            .map(|log| {
                let fsyncs = value("tidewire_stream_fsyncs_total", &log);
                let records = value("tidewire_stream_records_total", &log);
                (log, fsyncs, records)
            })
            .collect())
    }
}

fn server_url(client: &async_nats::Client) -> String {
    let info = client.server_info();
    format!("nats://{}:{}", info.host, info.port)
}

/// A connection that sends.
enum Producer {
    Tidewire {
        conn: raw_http::Connection,
        path: String,
    },
    TidewireMqtt {
        reader: raw_mqtt::Reader,
        writer: tokio::net::tcp::OwnedWriteHalf,
        /// The last packet id used.
        pkid: u16,
        out: Vec<u8>,
    },
    RabbitMq(raw_amqp::Connection),
    JetStream(jetstream::Context),
}

impl Producer {
    /// Sends `bodies` and waits until each is acknowledged as durable.
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        match self {
            Producer::Tidewire { conn, path } => {
                let messages = bodies
                    .iter()
                    .map(|b| {
                        Ok(SendEntry {
                            body: std::str::from_utf8(b)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let request = serde_json::to_vec(&SendBody { messages })?;
                let body = conn.expect_ok("POST", path, &request).await?;
                let answer: SendAnswer = serde_json::from_slice(&body)?;
                ensure!(
                    answer.results.len() == bodies.len()
                        && answer.results.iter().all(|r| r.message_id.is_some()),
                    "a send was refused: {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
            Producer::TidewireMqtt {
                reader,
                writer,
                pkid,
                out,
            } => {
                out.clear();
                for body in bodies {
                    *pkid = pkid.wrapping_add(1).max(1);
                    raw_mqtt::put_publish(out, MQTT_TOPIC, 1, *pkid, body);
                }
                raw_mqtt::send(writer, out).await?;
                reader.pubacks(bodies.len()).await
            }
            Producer::RabbitMq(conn) => conn.publish_confirmed(QUEUE, bodies).await,
            Producer::JetStream(js) => {
                let mut acks = Vec::with_capacity(bodies.len());
                for body in bodies {
                    acks.push(js.publish(SUBJECT, body.clone().into()).await?);
                }
                for ack in acks {
                    ack.await?;
                }
                Ok(())
            }
        }
    }
}

/// A connection that receives and deletes.
enum Consumer {
    Tidewire {
        conn: raw_http::Connection,
        receive: String,
        delete: Arc<String>,
        deleter: Deleter,
    },
    RabbitMq(raw_amqp::Connection),
    JetStream(Box<consumer::pull::Stream>),
}

impl Consumer {
    /// Waits up to `wait` for messages, takes up to `batch` and deletes
    /// (acknowledges) them; each one's send -> receive latency, taken as
    /// it arrived. Empty when the wait ran out.
    async fn receive(
        &mut self,
        epoch: Instant,
        batch: usize,
        wait: Duration,
    ) -> Result<Vec<Duration>> {
        match self {
            Consumer::Tidewire {
                conn,
                receive,
                delete,
                deleter,
            } => {
                let path = format!(
                    "{receive}?max={batch}&wait_ms={}&visibility_ms={VISIBILITY_MS}",
                    wait.as_millis()
                );
                let body = conn.expect_ok("POST", &path, b"").await?;
                let answer: ReceiveAnswer = serde_json::from_slice(&body)?;
                let latencies = answer
                    .messages
                    .iter()
                    .map(|m| latency(epoch, m.body.as_deref().unwrap_or("").as_bytes()))
                    .collect::<Vec<_>>();
                if !answer.messages.is_empty() {
                    let handles = answer
                        .messages
                        .iter()
                        .map(|m| m.receipt_handle.as_ref())
                        .collect();
                    let request = serde_json::to_vec(&DeleteBody {
                        receipt_handles: handles,
                    })?;
                    deleter.start(Arc::clone(delete), request).await?;
                }
                Ok(latencies)
            }
            Consumer::RabbitMq(conn) => {
                let Ok(first) = tokio::time::timeout(wait, conn.next_delivery()).await else {
                    return Ok(Vec::new());
                };
                let first = first?;
                let mut latencies = vec![latency(epoch, &first.body)];
                let mut last = first.tag;
                while latencies.len() < batch {
                    let Some(more) = conn.buffered_delivery()? else {
                        break;
                    };
                    latencies.push(latency(epoch, &more.body));
                    last = more.tag;
                }
                conn.ack(last, true).await?;
                Ok(latencies)
            }
            Consumer::JetStream(messages) => {
                let Ok(first) = tokio::time::timeout(wait, messages.next()).await else {
                    return Ok(Vec::new());
                };
                let first = first
                    .context("the pull consumer ended")?
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut got = vec![(latency(epoch, &first.payload), first)];
                while got.len() < batch {
                    let Some(Some(more)) = messages.next().now_or_never() else {
                        break;
                    };
                    let more = more.map_err(|e| anyhow::anyhow!("{e}"))?;
                    got.push((latency(epoch, &more.payload), more));
                }
                let mut latencies = Vec::with_capacity(got.len());
                for (lat, message) in got {
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    latencies.push(lat);
                }
                Ok(latencies)
            }
        }
    }
}

impl Consumer {
    /// Waits for what is still being acknowledged.
    async fn finish(self) -> Result<()> {
        if let Consumer::Tidewire { mut deleter, .. } = self {
            deleter.settle().await?;
        }
        Ok(())
    }
}

/// A tidewire consumer's second connection, for deletes: a batch's
/// delete is sent while the next receive waits, as the peers'
/// acknowledgements go out without waiting for an answer, and its answer
/// is checked before the next delete is sent.
enum Deleter {
    Idle(raw_http::Connection),
    Deleting(tokio::task::JoinHandle<Result<raw_http::Connection>>),
    /// A delete failed.
    Failed,
}

impl Deleter {
    /// Waits for the delete in flight, if any, and fails if it (or an
    /// earlier one) failed. A wait that is dropped (the run ended while a
    /// receive was under way) leaves the delete in flight.
    async fn settle(&mut self) -> Result<()> {
        if let Deleter::Deleting(task) = self {
            let finished = task.await;
            *self = Deleter::Failed;
            *self = Deleter::Idle(finished??);
        }
        match self {
            Deleter::Failed => bail!("a delete failed"),
            _ => Ok(()),
        }
    }

    /// Starts deleting a batch (a `DeleteBody`) once the previous delete
    /// has succeeded.
    async fn start(&mut self, path: Arc<String>, request: Vec<u8>) -> Result<()> {
        self.settle().await?;
        let Deleter::Idle(mut conn) = std::mem::replace(self, Deleter::Failed) else {
            bail!("a delete failed");
        };
        *self = Deleter::Deleting(tokio::spawn(async move {
            let body = conn.expect_ok("POST", &path, &request).await?;
            let answer: DeleteAnswer = serde_json::from_slice(&body)?;
            if let Some(failed) = answer.results.iter().find(|r| !r.deleted) {
                bail!("a delete failed: {:?}", failed.error);
            }
            Ok(conn)
        }));
        Ok(())
    }
}

#[derive(Serialize)]
struct SendBody<'a> {
    messages: Vec<SendEntry<'a>>,
}

#[derive(Serialize)]
struct SendEntry<'a> {
    body: &'a str,
}

#[derive(Deserialize)]
struct SendAnswer {
    results: Vec<SendResult>,
}

/// An entry's outcome: a `message_id` once sent.
#[derive(Deserialize)]
struct SendResult {
    message_id: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ReceiveAnswer<'a> {
    #[serde(borrow)]
    messages: Vec<ReceivedMessage<'a>>,
}

#[derive(Deserialize)]
struct ReceivedMessage<'a> {
    #[serde(borrow)]
    receipt_handle: Cow<'a, str>,
    /// UTF-8 bodies come as text (these always are).
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct DeleteBody<'a> {
    receipt_handles: Vec<&'a str>,
}

#[derive(Deserialize)]
struct DeleteAnswer {
    results: Vec<Deleted>,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    deleted: bool,
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueueInfo {
    depth: QueueDepth,
}

#[derive(Deserialize)]
struct QueueDepth {
    visible: u64,
    delayed: u64,
}

fn print_reports(args: &Args, reports: &[Report]) {
    let ms = |v: f64| format!("{v:.2}");
    println!(
        "\nend to end: {} messages of {} B, {} producers and {} consumers, batches of {}; paced: {} msg/s for {} s",
        args.messages,
        args.size,
        args.producers,
        args.consumers,
        args.batch,
        args.rate,
        args.paced_secs
    );
    print_table(
        &[
            "system",
            "msgs/s",
            "p50 ms",
            "p99 ms",
            "server CPU s",
            "bench CPU s",
            "paced p50 ms",
            "paced p99 ms",
            "wake-up p50 ms",
            "wake-up max ms",
        ],
        &reports
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    format!("{:.0}", r.end_to_end),
                    ms(r.latency.0),
                    ms(r.latency.1),
                    format!("{:.1}", r.server_cpu),
                    format!("{:.1}", r.bench_cpu),
                    r.paced.map_or("-".into(), |p| ms(p.1)),
                    r.paced.map_or("-".into(), |p| ms(p.2)),
                    r.wakeup.map_or("-".into(), |w| ms(w.0)),
                    r.wakeup.map_or("-".into(), |w| ms(w.1)),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!(
        "\nbacklog: server RSS idle and with {} queued; receive + delete of {} from an otherwise empty queue and from the backlog",
        args.queued,
        args.messages.min(args.queued)
    );
    print_table(
        &[
            "system",
            "RSS idle MiB",
            "RSS queued MiB",
            "fill msgs/s",
            "drain empty msgs/s",
            "drain backlog msgs/s",
            "backlog/empty",
        ],
        &reports
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    format!("{:.1}", r.rss_idle_mib),
                    format!("{:.1}", r.rss_queued_mib),
                    format!("{:.0}", r.fill_rate),
                    format!("{:.0}", r.drain_empty),
                    format!("{:.0}", r.drain_deep),
                    format!("{:.0}%", 100.0 * r.drain_deep / r.drain_empty),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!();
    for r in reports {
        println!("{}: {}", r.name, r.durability);
    }
    let fsync_always = |r: &&Report| matches!(r.name.as_str(), "tidewire" | "tidewire-mqtt");
    let Some(tw) = reports.iter().find(fsync_always) else {
        return;
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
    // The memory and backlog targets are for 1,000,000 queued.
    let at_scale = |ok: bool| {
        if args.queued < 1_000_000 {
            "not measured (the target is for 1000000 queued)"
        } else {
            verdict(ok)
        }
    };
    let lazy = reports.iter().find(|r| r.name == "tidewire-lazy");
    let jetstream = reports.iter().find(|r| r.name == "jetstream");
    if let (Some(lazy), Some(js)) = (lazy, jetstream) {
        println!(
            "\nat JetStream's default durability (tidewire-lazy): {:.2}x jetstream end to end",
            lazy.end_to_end / js.end_to_end
        );
    }
    println!("\ntargets (issue 16):");
    for ours in reports.iter().filter(fsync_always) {
        for (peer, factor) in [
            ("rabbitmq", 2.0),
            ("jetstream", 1.5),
            ("jetstream-fsync", 1.5),
        ] {
            if let Some(p) = reports.iter().find(|r| r.name == peer) {
                let ratio = ours.end_to_end / p.end_to_end;
                println!(
                    "  end-to-end throughput >= {factor}x {peer} ({}): {ratio:.2}x: {}",
                    ours.name,
                    verdict(ratio >= factor)
                );
            }
        }
    }
    if let Some((achieved, _, p99)) = tw.paced {
        println!(
            "  p99 send -> receive < 10 ms at {} msg/s ({achieved:.0} achieved): {p99:.2} ms: {}",
            args.rate,
            verdict(p99 < 10.0 && args.rate >= 1000)
        );
    }
    println!(
        "  RSS < 64 MiB with {} queued: {:.1} MiB: {}",
        args.queued,
        tw.rss_queued_mib,
        at_scale(tw.rss_queued_mib < 64.0)
    );
    let ratio = tw.drain_deep / tw.drain_empty;
    println!(
        "  receive throughput with {} queued within 20% of an empty queue's: {:.0}%: {}",
        args.queued,
        ratio * 100.0,
        at_scale(ratio >= 0.8)
    );
}
