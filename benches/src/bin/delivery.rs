//! Delivery layer benchmark, in two parts.
//!
//! 1. **Catch-up throughput.** A stream holding N records is delivered
//!    by a `tidewire-delivery` pump to a sink that accepts every record at
//!    once (the pump's own cost: read, hand over, confirm, commit the
//!    cursor), and to one that acknowledges each record with a future (the
//!    pipelined path JetStream's PubAcks take). Beside them in the same run:
//!    reading the same records with a bare `RecordScan` (the storage
//!    floor), and a real peer, nats-server's JetStream delivering the same
//!    number of messages from a file-backed stream to a pull consumer with
//!    acknowledgements.
//! 2. **Lag recovery.** Publishes at a steady rate (10k msg/s by default)
//!    into a stream while a pump delivers it; the sink fails for a while
//!    (1 minute by default), then comes back. Prints the lag (records and
//!    seconds) every second and how long the pump took to catch up once
//!    the sink was back.
//!
//! `cargo run --release -p tidewire-benches --bin delivery -- --help`

use std::future::Ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use tidewire_benches::{peak_rss_mib, print_table};
use tidewire_delivery::{Cursor, DeliveryStatus, Pump, PumpConfig, Sent, Sink, SinkError, Start};
use tidewire_nats_testkit::NatsServer;
use tidewire_storage::{FsyncPolicy, LogConfig, Message, Record, StorageMetrics, StreamLog};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Records in the catch-up part.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 150)]
    payload_bytes: usize,
    /// Publish rate during the lag-recovery part, messages per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long the sink is down in the lag-recovery part, in seconds
    /// (0 skips the part).
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// The pump's longest wait between retries, in ms (default: the
    /// pump's default).
    #[arg(long)]
    backoff_max_ms: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "delivery: catch-up of {} records of {} B; lag recovery at {} msg/s with a {} s sink outage",
        args.records, args.payload_bytes, args.rate, args.outage_secs
    );
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let dir = tempfile::tempdir_in(".")?;
    let log = open_log(&dir.path().join("catch-up"), FsyncPolicy::Never)?;
    fill(&log, args.records, &payload).await?;

    let scan = {
        let log = log.clone();
        let records = args.records;
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let read = log.scan(0..records).filter(Result::is_ok).count() as u64;
            anyhow::ensure!(read == records, "scanned {read} of {records}");
            Ok(started.elapsed())
        })
        .await??
    };
    let accepted = deliver(&log, dir.path(), "accepted", args, Acks::Flush).await?;
    let pipelined = deliver(&log, dir.path(), "pipelined", args, Acks::EachRecord).await?;
    let jetstream = jetstream_catch_up(args, &payload).await?;
    log.close().await;

    let rate = |d: Duration| format!("{:.0}", args.records as f64 / d.as_secs_f64());
    let row =
        |name: &str, d: Duration| vec![name.to_owned(), rate(d), format!("{:.2}", d.as_secs_f64())];
    println!("\ncatch-up of a backlog (same records, same machine, same run)");
    print_table(
        &["reader", "records/s", "seconds"],
        &[
            row("RecordScan alone (storage floor)", scan),
            row("pump -> sink accepting at once", accepted),
            row("pump -> sink acking each record", pipelined),
            row("nats-server JetStream -> pull consumer", jetstream),
        ],
    );

    if args.outage_secs > 0 {
        lag_recovery(args, &payload, dir.path()).await?;
    }
    if let Some(mib) = peak_rss_mib() {
        println!("\npeak RSS of this process: {mib:.0} MiB");
    }
    Ok(())
}

fn open_log(dir: &std::path::Path, fsync: FsyncPolicy) -> anyhow::Result<StreamLog> {
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    let metrics = StorageMetrics::register(&mut Registry::default());
    Ok(StreamLog::open(
        dir,
        "bench",
        config,
        &metrics,
        Arc::new(|_| {}),
    )?)
}

fn message(i: u64, payload: &Bytes) -> Arc<Message> {
    Arc::new(Message {
        topic: format!("sensors/{}", i % 7),
        client_id: "bench".into(),
        qos: 1,
        payload: payload.clone(),
        ..Message::default()
    })
}

/// Appends `records` messages, many in flight so group commit batches them.
async fn fill(log: &StreamLog, records: u64, payload: &Bytes) -> anyhow::Result<()> {
    let mut pending = std::collections::VecDeque::new();
    for i in 0..records {
        pending.push_back(log.enqueue(message(i, payload)).await?);
        if pending.len() >= 4096
            && let Some(ticket) = pending.pop_front()
        {
            ticket.await?;
        }
    }
    for ticket in pending {
        ticket.await?;
    }
    Ok(())
}

/// How the bench sink confirms records.
#[derive(Debug, Clone, Copy)]
enum Acks {
    /// `Sent::Accepted`, confirmed by a flush that succeeds at once.
    Flush,
    /// `Sent::Pending` with an acknowledgement that is already resolved.
    EachRecord,
}

/// A sink that takes everything at once, or fails every send while `down`.
struct BenchSink {
    acks: Acks,
    down: Arc<AtomicBool>,
    taken: Arc<AtomicU64>,
}

impl Sink for BenchSink {
    type Ack = Ready<Result<(), SinkError>>;

    async fn send(&mut self, _record: &Record) -> Result<Sent<Self::Ack>, SinkError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(SinkError::retry("the bench sink is down"));
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(match self.acks {
            Acks::Flush => Sent::Accepted,
            Acks::EachRecord => Sent::Pending(std::future::ready(Ok(()))),
        })
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn pump(
    log: &StreamLog,
    dir: &std::path::Path,
    name: &str,
    args: &Args,
) -> anyhow::Result<(Pump, Arc<DeliveryStatus>)> {
    let status = Arc::new(DeliveryStatus::default());
    let defaults = PumpConfig::default();
    let config = PumpConfig {
        backoff_max: args
            .backoff_max_ms
            .map_or(defaults.backoff_max, Duration::from_millis),
        ..defaults
    };
    let cursor = Cursor::new(
        dir.join(format!("{name}.json")),
        [("consumer", name.to_owned())],
    );
    let pump = Pump::open(
        log.clone(),
        cursor,
        Start::Earliest,
        config,
        Arc::clone(&status) as _,
    )?;
    Ok((pump, status))
}

/// Times a pump delivering the whole stream to a bench sink.
async fn deliver(
    log: &StreamLog,
    dir: &std::path::Path,
    name: &str,
    args: &Args,
    acks: Acks,
) -> anyhow::Result<Duration> {
    let (mut pump, status) = pump(log, dir, name, args)?;
    let mut sink = BenchSink {
        acks,
        down: Arc::default(),
        taken: Arc::default(),
    };
    let end = log.next_offset();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            pump.run_retrying(&mut sink, &shutdown).await;
            pump
        }
    });
    while status.snapshot().cursor < end {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let pump = task.await?;
    anyhow::ensure!(pump.committed() == end, "committed {}", pump.committed());
    Ok(elapsed)
}

/// Times nats-server delivering as many messages from a file-backed
/// JetStream stream to a pull consumer that acknowledges them (each
/// batch's last, under `AckPolicy::All`).
async fn jetstream_catch_up(args: &Args, payload: &Bytes) -> anyhow::Result<Duration> {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(4096)
        .backpressure_on_inflight(true)
        .build(client);
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH".to_owned(),
            subjects: vec!["sensors.>".to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let mut acks = std::collections::VecDeque::new();
    for i in 0..args.records {
        acks.push_back(
            js.publish(format!("sensors.{}", i % 7), payload.clone())
                .await?,
        );
        if acks.len() >= 4096
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".to_owned()),
            ack_policy: consumer::AckPolicy::All,
            ..Default::default()
        })
        .await?;
    const BATCH: u64 = 512;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH as usize)
        .messages()
        .await?;
    let mut received = 0;
    while received < args.records {
        let message = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the consumer ended after {received}"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        received += 1;
        if received % BATCH == 0 || received == args.records {
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(started.elapsed())
}

/// Publishes at `args.rate` while a pump delivers; the sink is down for
/// `args.outage_secs` after 5 s. Prints the lag each second and the time
/// to catch up once the sink is back.
async fn lag_recovery(args: &Args, payload: &Bytes, dir: &std::path::Path) -> anyhow::Result<()> {
    const HEALTHY_BEFORE: Duration = Duration::from_secs(5);
    let log = open_log(&dir.join("recovery"), FsyncPolicy::Always)?;
    let (mut pump, status) = pump(&log, dir, "recovery", args)?;
    let down = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let mut sink = BenchSink {
        acks: Acks::Flush,
        down: Arc::clone(&down),
        taken: Arc::clone(&taken),
    };
    let shutdown = CancellationToken::new();
    let delivering = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { pump.run_retrying(&mut sink, &shutdown).await }
    });
    let publishing = tokio::spawn({
        let (log, payload, shutdown) = (log.clone(), payload.clone(), shutdown.clone());
        let every = Duration::from_secs_f64(1.0 / args.rate as f64);
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut pending = std::collections::VecDeque::new();
            let mut i = 0;
            while !shutdown.is_cancelled() {
                tick.tick().await;
                pending.push_back(log.enqueue(message(i, &payload)).await?);
                i += 1;
                while pending.len() > 1024 {
                    if let Some(ticket) = pending.pop_front() {
                        ticket.await?;
                    }
                }
            }
            anyhow::Ok(i)
        }
    });

    let outage = Duration::from_secs(args.outage_secs);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut restored = None;
    let mut recovered = None;
    let mut next_sample = Duration::ZERO;
    loop {
        let now = started.elapsed();
        let phase = if now < HEALTHY_BEFORE {
            "up"
        } else if now < HEALTHY_BEFORE + outage {
            down.store(true, Ordering::Relaxed);
            "DOWN"
        } else {
            if restored.is_none() {
                down.store(false, Ordering::Relaxed);
                restored = Some(Instant::now());
            }
            "up"
        };
        let lag = status.snapshot().lag;
        if restored.is_some() && recovered.is_none() && lag.records < args.rate / 100 {
            recovered = restored.map(|at| at.elapsed());
        }
        if now >= next_sample {
            rows.push(vec![
                format!("{:.0}", now.as_secs_f64()),
                phase.to_owned(),
                log.next_offset().to_string(),
                taken.load(Ordering::Relaxed).to_string(),
                lag.records.to_string(),
                format!("{:.1}", lag.millis as f64 / 1000.0),
            ]);
            next_sample += Duration::from_secs(1);
        }
        if recovered
            .is_some_and(|r| restored.is_some_and(|at| at.elapsed() > r + Duration::from_secs(3)))
        {
            break;
        }
        anyhow::ensure!(
            now < HEALTHY_BEFORE + outage + Duration::from_secs(300),
            "no recovery within 5 minutes of the sink coming back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    delivering.await?;
    let published = publishing.await??;
    log.close().await;

    println!(
        "\nlag recovery: {} msg/s published; the sink is down from {} s to {} s",
        args.rate,
        HEALTHY_BEFORE.as_secs(),
        (HEALTHY_BEFORE + outage).as_secs()
    );
    print_table(
        &[
            "t (s)",
            "sink",
            "published",
            "sent",
            "lag (records)",
            "lag (s)",
        ],
        &rows,
    );
    let recovered = recovered.unwrap_or_default();
    println!(
        "caught up (lag under {} records) {:.2} s after the sink came back; {published} published in all",
        args.rate / 100,
        recovered.as_secs_f64()
    );
    Ok(())
}
