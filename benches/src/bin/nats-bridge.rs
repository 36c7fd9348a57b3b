//! NATS bridge benchmark: outbound throughput into JetStream (file
//! storage) of the tidewire bridge catching up a backlog of N records,
//! with its lag sampled over time, beside a direct async-nats JetStream
//! publisher doing the same publishes (same subjects, payloads,
//! `Nats-Msg-Id` headers and in-flight window) against the same
//! nats-server. The direct baseline runs with one publisher and with
//! several (each with the window): if several go faster, one window did
//! not saturate the server, and the faster figure is the baseline. Prints
//! the figures and the ratio (target: >= 80%).
//!
//! `cargo run --release -p tidewire-benches --bin nats-bridge -- --help`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::Parser;
use prometheus_client::registry::Registry;
use tidewire_benches::in_process_broker;
use tidewire_benches::{peak_rss_mib, print_table};
use tidewire_bridge::{BridgeConfig, BridgeContext, BridgeMetrics};
use tidewire_core::{Message, Source, StreamConfig};
use tidewire_nats::NatsBridgeConfig;
use tidewire_nats_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Messages per scenario.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Publishes awaiting their PubAck at once, in both scenarios.
    #[arg(long, default_value_t = 1024)]
    in_flight: usize,
    /// Direct publishers in the saturation check, each with the window.
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    /// Lag sampling interval, in milliseconds.
    #[arg(long, default_value_t = 250)]
    sample_ms: u64,
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
        "nats-bridge: {} messages of {} B, {} in flight, JetStream file storage",
        args.messages, args.payload_bytes, args.in_flight
    );
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    for (name, subject) in [("DIRECT", "direct.>"), ("BRIDGE", "bridge.>")] {
        js.create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    }
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);

    // The direct publishers run before and after the bridge; the faster
    // run counts, so warm-up cannot flatter the bridge.
    let many = args.publishers.max(2);
    let one_first = direct(args, &client, &payload, "one-first", 1).await?;
    let many_first = direct(args, &client, &payload, "many-first", many).await?;
    let (bridge, lag) = bridge(args, &server, &payload).await?;
    let one_second = direct(args, &client, &payload, "one-second", 1).await?;
    let many_second = direct(args, &client, &payload, "many-second", many).await?;
    let one = one_first.min(one_second);
    let several = many_first.min(many_second);
    let direct = one.min(several);
    for (name, expected) in [("DIRECT", 4 * args.messages), ("BRIDGE", args.messages)] {
        let stored = js.get_stream(name).await?.info().await?.state.messages;
        anyhow::ensure!(
            stored == expected,
            "{name} holds {stored} messages, not {expected}"
        );
    }
    println!(
        "direct runs: one publisher {:.2} s and {:.2} s; {many} publishers {:.2} s and {:.2} s",
        one_first.as_secs_f64(),
        one_second.as_secs_f64(),
        many_first.as_secs_f64(),
        many_second.as_secs_f64(),
    );
    let gain = one.as_secs_f64() / several.as_secs_f64();
    println!(
        "saturation check: {many} publishers / one = {:.0}%: {}",
        gain * 100.0,
        if gain > 1.1 {
            "one window does not saturate the server; the baseline is the faster figure"
        } else {
            "one window saturates the server"
        }
    );

    println!(
        "\nbridge catching up a backlog: lag = offsets between its committed cursor and the stream's end; lag (s) = broker time between the newest record and the newest delivered"
    );
    print_table(
        &["t (s)", "lag", "lag (s)", "acked"],
        &lag.iter()
            .map(|(t, lag, seconds, sent)| {
                vec![
                    format!("{t:.2}"),
                    lag.to_string(),
                    format!("{seconds:.2}"),
                    sent.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let rate = |d: Duration| args.messages as f64 / d.as_secs_f64();
    println!();
    print_table(
        &["publisher", "msgs/s", "seconds"],
        &[
            vec![
                "direct async-nats, one publisher".into(),
                format!("{:.0}", rate(one)),
                format!("{:.2}", one.as_secs_f64()),
            ],
            vec![
                format!("direct async-nats, {many} publishers"),
                format!("{:.0}", rate(several)),
                format!("{:.2}", several.as_secs_f64()),
            ],
            vec![
                "tidewire bridge".into(),
                format!("{:.0}", rate(bridge)),
                format!("{:.2}", bridge.as_secs_f64()),
            ],
        ],
    );
    let ratio = rate(bridge) / rate(direct);
    println!(
        "\nbridge / direct = {:.1}% (target >= 80%){}",
        ratio * 100.0,
        if ratio >= 0.8 { "" } else { "  BELOW TARGET" }
    );
    if let Some(mib) = peak_rss_mib() {
        println!("peak RSS of this process: {mib:.0} MiB");
    }
    Ok(())
}

/// Publishes every message straight to JetStream from `publishers`
/// spawned tasks (runtime workers, as the bridge's task is), each with
/// `in_flight` publishes awaiting their PubAck.
async fn direct(
    args: &Args,
    client: &async_nats::Client,
    payload: &Bytes,
    run: &str,
    publishers: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let js = jetstream::ContextBuilder::new()
                .max_ack_inflight(args.in_flight)
                .backpressure_on_inflight(true)
                .build(client.clone());
            let (messages, in_flight) = (args.messages, args.in_flight);
            let (payload, run) = (payload.clone(), run.to_owned());
            tokio::spawn(async move {
                let mut pending = std::collections::VecDeque::with_capacity(in_flight);
                for i in (p..messages).step_by(publishers as usize) {
                    let mut headers = HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("direct-{run}:events:{i}").as_str());
                    let ack = js
                        .publish_with_headers(format!("direct.{}", i % 7), headers, payload.clone())
                        .await?;
                    pending.push_back(ack);
                    if pending.len() >= in_flight
                        && let Some(ack) = pending.pop_front()
                    {
                        ack.await?;
                    }
                }
                for ack in pending {
                    ack.await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Fills a tidewire stream with the messages, then times the bridge
/// sending all of them; returns the time and lag samples.
async fn bridge(
    args: &Args,
    server: &NatsServer,
    payload: &Bytes,
) -> anyhow::Result<(Duration, Vec<(f64, u64, f64, u64)>)> {
    let dir = tempfile::tempdir_in(".")?;
    let mut registry = Registry::default();
    let spec = StreamConfig {
        fsync: "never".to_owned(),
        ..StreamConfig::default_stream()
    }
    .validate("streams[0]")?;
    let broker = in_process_broker(dir.path(), vec![spec], &mut registry)?;
    let writers = 32;
    let fill = (0..writers).map(|w| {
        let broker = broker.clone();
        let payload = payload.clone();
        let messages = args.messages;
        async move {
            let mut i = w;
            while i < messages {
                let message = Message {
                    topic: format!("sensors/{}", i % 7),
                    client_id: "bench".into(),
                    qos: 1,
                    payload: payload.clone(),
                    ..Message::default()
                };
                broker.publish(Source::Mqtt, message).await?;
                i += writers;
            }
            anyhow::Ok(())
        }
    });
    for result in futures_util::future::join_all(fill).await {
        result?;
    }

    let config: NatsBridgeConfig = toml::from_str(&format!(
        r#"
        name = "bench"
        url = "{}"
        node = "n1"
        [[outbound]]
        from = "sensors/#"
        subject = "bridge.>"
        jetstream = true
        start = "earliest"
        max_in_flight = {}
        "#,
        server.url(),
        args.in_flight
    ))?;
    let nats = config.validate("bridge.nats[0]")?;
    let state_dir = dir.path().join("bridge");
    std::fs::create_dir_all(&state_dir)?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = nats.start(BridgeContext {
        broker: broker.clone(),
        state_dir,
        shutdown: shutdown.clone(),
        metrics: BridgeMetrics::register(&mut registry),
        auth: tidewire_auth::Auth::allow_all(),
    })?;
    let link = Arc::clone(&running.state.links()[0]);
    let sample_every = Duration::from_millis(args.sample_ms);
    let mut next_sample = Duration::ZERO;
    let mut samples = Vec::new();
    while link.messages() < args.messages {
        if started.elapsed() >= next_sample {
            let status = &running.state.snapshot().links[0];
            samples.push((
                started.elapsed().as_secs_f64(),
                status.lag.unwrap_or(0),
                status.lag_seconds.unwrap_or(0.0),
                link.messages(),
            ));
            next_sample += sample_every;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.task.await?;
    broker.streams().close().await;
    Ok((elapsed, samples))
}
