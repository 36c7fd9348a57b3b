//! WebSocket benchmark: end-to-end latency from an MQTT publish to a
//! WebSocket subscriber at fixed rates, and fan-out of one topic to many
//! WebSocket subscribers, against tidewire and Mosquitto started by this
//! program. Paths compared:
//!
//! - tidewire MQTT (TCP) -> `/ws` JSON subscriber;
//! - tidewire MQTT -> MQTT over WebSocket (`/mqtt`);
//! - tidewire MQTT -> MQTT (TCP), the baseline on the same broker;
//! - Mosquitto MQTT -> MQTT over WebSocket.
//!
//! tidewire keeps every message durable (fsync `always`); Mosquitto keeps
//! nothing. Publishes are QoS 0, paced in 1 ms ticks; each payload carries
//! its send time.
//!
//! `cargo build --release -p tidewire -p tidewire-benches &&
//!  target/release/websocket`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tidewire_benches::peers::{Peer, start_mosquitto, start_tidewire, tidewire_bin};
use tidewire_benches::{Latencies, latency, print_table, raw_mqtt, rss_kib, stamp};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TOPIC: &str = "bench/ws";
/// A subscriber that hears nothing for this long stops waiting.
const QUIET: Duration = Duration::from_secs(3);

#[derive(Debug, Parser)]
struct Args {
    /// The tidewire binary (default: next to this program).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Seconds each latency run publishes for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Publish rates of the latency runs, msg/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rates: Vec<u64>,
    /// Subscribers in the fan-out run.
    #[arg(long, default_value_t = 1000)]
    fan_out: usize,
    /// Messages published in the fan-out run.
    #[arg(long, default_value_t = 200)]
    fan_out_messages: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// tidewire's fsync policy (`always`, `interval:MS`, `never`); with
    /// `always` a message reaches subscribers after its fdatasync.
    #[arg(long, default_value = "always")]
    fsync: String,
}

/// How a subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// tidewire's `/ws` JSON protocol.
    WsJson,
    /// MQTT 3.1.1 over WebSocket.
    MqttWs,
    /// MQTT 3.1.1 over TCP.
    Mqtt,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::WsJson => "MQTT -> /ws JSON",
            Route::MqttWs => "MQTT -> MQTT/WebSocket",
            Route::Mqtt => "MQTT -> MQTT/TCP",
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Receives payloads; one implementation per path.
enum Receiver {
    WsJson(Ws),
    MqttWs(Ws, BytesMut),
    Mqtt(Box<rumqttc::EventLoop>),
}

impl Receiver {
    async fn connect(peer: &Peer, path: Route, id: &str) -> Result<Receiver> {
        match path {
            Route::WsJson => {
                let addr = peer.websocket.context("no WebSocket listener")?;
                let (mut ws, _) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
                let request = serde_json::json!({"op":"subscribe","id":1,"filter":TOPIC});
                ws.send(Message::Text(request.to_string().into())).await?;
                let ack = ws.next().await.context("closed")??;
                if !ack.to_text()?.contains("\"ack\"") {
                    bail!("subscribe refused: {ack}");
                }
                Ok(Receiver::WsJson(ws))
            }
            Route::MqttWs => {
                let addr = peer.websocket.context("no WebSocket listener")?;
                let mut request = format!("ws://{addr}/mqtt").into_client_request()?;
                request
                    .headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(request, None, true).await?;
                ws.send(Message::Binary(raw_mqtt::connect_packet(id, 60).into()))
                    .await?;
                ws.send(Message::Binary(raw_mqtt::subscribe_packet(TOPIC, 0).into()))
                    .await?;
                let mut receiver = Receiver::MqttWs(ws, BytesMut::new());
                // CONNACK, then SUBACK.
                while !receiver.next_packet().await?.is_suback() {}
                Ok(receiver)
            }
            Route::Mqtt => {
                let (client, mut events) = mqtt_client(id, peer.mqtt, 10);
                client.subscribe(TOPIC, QoS::AtMostOnce).await?;
                loop {
                    if let Event::Incoming(Incoming::SubAck(_)) = events.poll().await? {
                        break;
                    }
                }
                std::mem::forget(client); // keeps the connection's request channel open
                Ok(Receiver::Mqtt(Box::new(events)))
            }
        }
    }

    /// The next MQTT packet over WebSocket.
    async fn next_packet(&mut self) -> Result<raw_mqtt::Frame> {
        let Receiver::MqttWs(ws, buf) = self else {
            bail!("not MQTT over WebSocket");
        };
        loop {
            if let Some(frame) = raw_mqtt::split_frame(buf)? {
                return Ok(frame);
            }
            match ws.next().await.context("closed")?? {
                Message::Binary(data) => buf.extend_from_slice(&data),
                Message::Close(_) => bail!("closed"),
                _ => {}
            }
        }
    }

    /// The next message's payload.
    async fn next_payload(&mut self) -> Result<Vec<u8>> {
        match self {
            Receiver::WsJson(ws) => loop {
                if let Message::Text(text) = ws.next().await.context("closed")?? {
                    let frame: serde_json::Value = serde_json::from_str(&text)?;
                    if frame["type"] == "message" {
                        return Ok(frame["payload"]
                            .as_str()
                            .unwrap_or_default()
                            .as_bytes()
                            .to_vec());
                    }
                }
            },
            Receiver::MqttWs(..) => loop {
                let frame = self.next_packet().await?;
                if frame.is_publish() {
                    return Ok(frame.publish()?.2.to_vec());
                }
            },
            Receiver::Mqtt(events) => loop {
                if let Event::Incoming(Incoming::Publish(p)) = events.poll().await? {
                    return Ok(p.payload.to_vec());
                }
            },
        }
    }
}

/// A bench MQTT client (Nagle off, see the library's `mqtt_client`).
fn mqtt_client(id: &str, addr: SocketAddr, capacity: usize) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    tidewire_benches::mqtt_client(options, capacity)
}

/// Collects `expect` payloads (or stops after `QUIET`), recording latency;
/// returns the count, the latencies and when the last one came.
async fn collect(
    mut receiver: Receiver,
    expect: u64,
    epoch: Instant,
    last: Arc<AtomicU64>,
) -> (u64, Latencies) {
    let mut latencies = Latencies::default();
    let mut received = 0;
    while received < expect {
        match tokio::time::timeout(QUIET, receiver.next_payload()).await {
            Ok(Ok(payload)) => {
                latencies.record(latency(epoch, &payload));
                received += 1;
            }
            _ => break,
        }
    }
    last.fetch_max(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    (received, latencies)
}

/// Publishes `count` messages over MQTT at `rate` msg/s (0: unpaced).
async fn publish(
    addr: SocketAddr,
    rate: u64,
    count: u64,
    size: usize,
    epoch: Instant,
) -> Result<()> {
    let (client, mut events) = mqtt_client("bench-publisher", addr, 1000);
    let driver = tokio::spawn(async move {
        let mut sent = 0;
        while sent < count {
            match events.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => sent += 1,
                Ok(_) => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
        // Let the last packets leave the socket.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        Ok(())
    });
    // Unpaced: everything in one tick. Paced: 1 ms ticks (longer below
    // 1000 msg/s).
    let per_tick = if rate == 0 {
        count
    } else {
        (rate / 1000).max(1)
    };
    let tick_ms = (1000 * per_tick).checked_div(rate).unwrap_or(1);
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
    let mut sent = 0;
    while sent < count {
        tick.tick().await;
        for _ in 0..per_tick.min(count - sent) {
            client
                .publish(TOPIC, QoS::AtMostOnce, false, stamp(epoch, size))
                .await?;
            sent += 1;
        }
    }
    driver.await??;
    Ok(())
}

struct Outcome {
    delivered: u64,
    expected: u64,
    elapsed: Duration,
    latencies: Latencies,
    server_rss_mib: f64,
}

/// `subscribers` receivers on `path` of `peer`; `count` publishes at `rate`.
async fn run(
    peer: &Peer,
    path: Route,
    subscribers: usize,
    rate: u64,
    count: u64,
    size: usize,
) -> Result<Outcome> {
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        receivers.push(Receiver::connect(peer, path, &format!("bench-sub-{i}")).await?);
    }
    let server_rss_mib = peer
        .child
        .id()
        .and_then(rss_kib)
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|r| tokio::spawn(collect(r, count, epoch, Arc::clone(&last))))
        .collect();
    let started = epoch.elapsed();
    publish(peer.mqtt, rate, count, size, epoch).await?;
    let mut outcome = Outcome {
        delivered: 0,
        expected: count * subscribers as u64,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
        server_rss_mib,
    };
    for task in tasks {
        let (n, latencies) = task.await?;
        outcome.delivered += n;
        outcome.latencies.merge(latencies);
    }
    outcome.elapsed = Duration::from_nanos(last.load(Ordering::Relaxed)).saturating_sub(started);
    Ok(outcome)
}

async fn start(which: &str, tidewire: &Path, mosquitto: &Path, fsync: &str) -> Result<Peer> {
    match which {
        "tidewire" => {
            let config = format!(
                "[websocket]\nsend_queue = 10000\n[[streams]]\nname = \"events\"\nfilters = [\"#\"]\nfsync = \"{fsync}\"\n"
            );
            start_tidewire(tidewire, &config).await
        }
        _ => start_mosquitto(mosquitto, "max_queued_messages 10000", true).await,
    }
}

/// (broker, path) pairs compared.
const PAIRS: [(&str, Route); 4] = [
    ("tidewire", Route::WsJson),
    ("tidewire", Route::MqttWs),
    ("tidewire", Route::Mqtt),
    ("mosquitto", Route::MqttWs),
];

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tidewire = tidewire_bin(args.tidewire.as_deref())?;
    println!(
        "websocket: {} B payloads, QoS 0; latency runs {} s at {:?} msg/s; fan-out 1 -> {} x {} msgs; tidewire fsync {}",
        args.payload, args.seconds, args.rates, args.fan_out, args.fan_out_messages, args.fsync
    );
    let mut rows = Vec::new();
    for &rate in &args.rates {
        for (which, path) in PAIRS {
            let peer = start(which, &tidewire, &args.mosquitto, &args.fsync).await?;
            let mut o = run(&peer, path, 1, rate, rate * args.seconds, args.payload).await?;
            rows.push(vec![
                format!("{rate} msg/s"),
                peer.name.to_owned(),
                path.label().to_owned(),
                format!("{}/{}", o.delivered, o.expected),
                format!("{:.2}", o.latencies.percentile_ms(50.0)),
                format!("{:.2}", o.latencies.percentile_ms(99.0)),
                format!("{:.2}", o.latencies.percentile_ms(99.9)),
            ]);
        }
    }
    print_table(
        &[
            "rate",
            "broker",
            "path",
            "delivered",
            "p50 ms",
            "p99 ms",
            "p999 ms",
        ],
        &rows,
    );

    println!();
    let mut rows = Vec::new();
    for (which, path) in [PAIRS[0], PAIRS[1], PAIRS[3]] {
        let peer = start(which, &tidewire, &args.mosquitto, &args.fsync).await?;
        let mut o = run(
            &peer,
            path,
            args.fan_out,
            0,
            args.fan_out_messages,
            args.payload,
        )
        .await?;
        rows.push(vec![
            peer.name.to_owned(),
            path.label().to_owned(),
            format!(
                "{:.0}",
                o.delivered as f64 / o.elapsed.as_secs_f64().max(1e-9)
            ),
            format!("{}/{}", o.delivered, o.expected),
            format!("{:.2}", o.latencies.percentile_ms(50.0)),
            format!("{:.2}", o.latencies.percentile_ms(99.0)),
            format!("{:.1}", o.server_rss_mib),
        ]);
    }
    print_table(
        &[
            "broker",
            "fan-out path",
            "deliveries/s",
            "delivered",
            "p50 ms",
            "p99 ms",
            "server RSS MiB",
        ],
        &rows,
    );
    Ok(())
}
