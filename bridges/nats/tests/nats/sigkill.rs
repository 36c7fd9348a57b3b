//! The real `tidewire` binary with a NATS bridge both ways under load,
//! SIGKILLed mid-stream and restarted on the same data directory: every
//! MQTT publish tidewire acknowledged reaches JetStream exactly once and
//! in offset order (JetStream's dedup drops what the restarted bridge
//! sends again), every message JetStream delivered inbound is in
//! tidewire's stream, and nothing is invented either way.
//!
//! The bridge reaches nats-server through a [`Proxy`]. Just before the
//! kill it holds back the server's bytes, so the PubAcks of what JetStream
//! stores stop reaching tidewire: the bridge's cursor stops while its
//! in-flight window still goes to JetStream, and the crash lands between
//! "stored in JetStream" and "cursor committed", so the restart sends
//! some records again.
//!
//! The binary is `$TIDEWIRE_BIN`, else `tidewire` in the target directory
//! this test runs from (`<target>/debug/deps/nats-<hash>` ->
//! `<target>/debug/tidewire`). Another package's integration test cannot
//! name it with `env!("CARGO_BIN_EXE_tidewire")`, and cargo builds it only
//! for the server package's own tests: `cargo test --workspace` does,
//! `cargo test --workspace --test nats` alone does not, so run
//! `cargo build --workspace` before that.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::consumer::{self, PullConsumer, pull};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use serde_json::Value;
use tidewire_harness::{Api, Launch};

use super::proxy::Proxy;
use super::*;

/// MQTT publishes tidewire acknowledges before it is killed.
const ACKED_BEFORE_KILL: u64 = 2000;
/// Inbound messages tidewire stores before it is killed.
const INBOUND_BEFORE_KILL: u64 = 100;
/// How long the cursor and JetStream must stand still under the hold
/// before the kill (several cursor commit intervals).
const SETTLE: Duration = Duration::from_millis(500);
/// MQTT publishes after the restart.
const AFTER_RESTART: Range<u64> = 1_000_000..1_000_500;
/// What the bridged-in messages are stored with.
const INBOUND_CLIENT: &str = "$nats:uplink";

/// The `tidewire` binary (see the module doc).
pub(super) fn tidewire_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TIDEWIRE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("tidewire");
    assert!(
        bin.exists(),
        "no tidewire binary at {}: run `cargo build --workspace` first, or set TIDEWIRE_BIN",
        bin.display()
    );
    bin
}

fn config(nats_url: &str) -> String {
    format!(
        r#"
        [[bridge.nats]]
        name = "uplink"
        url = "{nats_url}"
        node = "n1"
        reconnect_min = "50ms"
        reconnect_max = "500ms"
        [[bridge.nats.outbound]]
        from = "sensors/#"
        subject = "edge.>"
        jetstream = true
        start = "earliest"
        [[bridge.nats.inbound]]
        subject = "cmd.>"
        to = "cmd/#"
        durable = "tw"
        ack_wait = "1s"
        "#
    )
}

/// Publishes `sensors/<n % 7>` = `n` for each `n` of `numbers` at QoS 1
/// until all are acknowledged or the connection breaks; returns the
/// numbers tidewire acknowledged, counting them in `acked` as they come.
async fn mqtt_publish(
    addr: SocketAddr,
    client_id: &str,
    numbers: Range<u64>,
    acked: Arc<AtomicU64>,
) -> HashSet<u64> {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut events) = AsyncClient::new(options, 1000);
    let total = numbers.end - numbers.start;
    let mut next = numbers.start;
    let publisher = tokio::spawn(async move {
        for n in numbers {
            let topic = format!("sensors/{}", n % 7);
            if client
                .publish(topic, QoS::AtLeastOnce, false, n.to_string())
                .await
                .is_err()
            {
                break;
            }
        }
        // Keep the client (and so the connection) until the end.
        client
    });
    // Publishes go out in order, so the n-th outgoing PUBLISH carries the
    // n-th number; its packet id maps the PUBACK back to it.
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut done = HashSet::new();
    while (done.len() as u64) < total {
        let event = tokio::time::timeout(PATIENCE, events.poll())
            .await
            .expect("MQTT made no progress");
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                in_flight.insert(pkid, next);
                next += 1;
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(n) = in_flight.remove(&ack.pkid) {
                    done.insert(n);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(_) => {}
            Err(_) => break, // the broker is gone
        }
    }
    publisher.abort();
    done
}

/// Publishes `cmd.<n % 5>` = `n` for n = 0, 1, ... through JetStream,
/// each awaiting its PubAck, until `stop`; returns the numbers JetStream
/// acknowledged and how many were published.
async fn nats_publish(js: jetstream::Context, stop: CancellationToken) -> (HashSet<u64>, u64) {
    let mut acked = HashSet::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        let published = js
            .publish(format!("cmd.{}", n % 5), n.to_string().into())
            .await;
        n += 1;
        if let Ok(ack) = published
            && ack.await.is_ok()
        {
            acked.insert(n - 1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (acked, n)
}

/// A bridge's status from `GET /api/v1/bridges/uplink`.
async fn bridge_status(api: &Api) -> Value {
    let (status, body) = api.get("/api/v1/bridges/uplink").await.expect("status");
    assert_eq!(status, 200, "{body}");
    body["bridges"][0].clone()
}

/// The outbound link's committed cursor, from its file (JSON with
/// `next_offset`, replaced atomically).
fn cursor(data_dir: &Path) -> Option<u64> {
    let text = std::fs::read(data_dir.join("bridges/nats/uplink/outbound-0.json")).ok()?;
    serde_json::from_slice::<Value>(&text).ok()?["next_offset"].as_u64()
}

/// The tidewire offset in a `Nats-Msg-Id` of this bridge.
fn offset_of(headers: Option<&async_nats::HeaderMap>) -> u64 {
    let id = headers
        .and_then(|h| h.get("Nats-Msg-Id"))
        .expect("Nats-Msg-Id")
        .as_str();
    id.strip_prefix("n1:events:")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Nats-Msg-Id {id}"))
}

/// The offset in the last message of the JetStream stream `EDGE`.
async fn last_sent(js: &jetstream::Context) -> Option<u64> {
    let mut stream = js.get_stream("EDGE").await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let message = stream.get_raw_message(last).await.ok()?;
    Some(offset_of(Some(&message.headers)))
}

/// Every message of `EDGE` in stream order: (tidewire offset, payload).
async fn edge(js: &jetstream::Context) -> Vec<(u64, String)> {
    let stream = js.get_stream("EDGE").await.expect("EDGE");
    let count = js_count(js, "EDGE").await;
    let reader: PullConsumer = stream
        .create_consumer(pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("reader");
    let mut messages = reader.messages().await.expect("messages");
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        let message = tokio::time::timeout(PATIENCE, messages.next())
            .await
            .expect("EDGE message")
            .expect("stream open")
            .expect("message");
        out.push((
            offset_of(message.headers.as_ref()),
            String::from_utf8_lossy(&message.payload).into_owned(),
        ));
    }
    out
}

/// A record of tidewire's `events` stream.
struct Stored {
    topic: String,
    client_id: String,
    payload: String,
}

/// Every record of `events`, by offset, through the HTTP records API.
async fn events(api: &Api) -> BTreeMap<u64, Stored> {
    api.read_all("events")
        .await
        .expect("read events")
        .iter()
        .map(|r| {
            let payload = BASE64
                .decode(r["payload"].as_str().expect("payload"))
                .expect("base64");
            (
                r["offset"].as_u64().expect("offset"),
                Stored {
                    topic: r["topic"].as_str().expect("topic").to_owned(),
                    client_id: r["client_id"].as_str().expect("client id").to_owned(),
                    payload: String::from_utf8(payload).expect("utf-8"),
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_either_way() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    js.create_stream(stream::Config {
        name: "EDGE".to_owned(),
        subjects: vec!["edge.>".to_owned()],
        storage: stream::StorageType::File,
        // Longer than the test: every resend is a duplicate to drop.
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("EDGE stream");
    add_stream(&js, "CMD", &["cmd.>"]).await;
    let proxy = Proxy::start(&server.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("tidewire.toml");
    std::fs::write(&config_file, config(&proxy.url())).expect("config");
    let data_dir = dir.path().join("data");
    let broker = Launch::new(tidewire_bin(), &data_dir)
        .args(["--config", config_file.to_str().expect("utf-8 path")])
        .start()
        .await
        .expect("start tidewire");
    let api = Api::new(broker.http_url());

    // Load both ways.
    let stop_nats = CancellationToken::new();
    let nats = tokio::spawn(nats_publish(js.clone(), stop_nats.clone()));
    let mqtt_acked = Arc::new(AtomicU64::new(0));
    let mqtt = tokio::spawn(mqtt_publish(
        broker.mqtt_addr(),
        "before-kill",
        0..u64::MAX,
        Arc::clone(&mqtt_acked),
    ));

    let inbound_stored = std::cell::Cell::new(0);
    wait_for("load in both directions", || async {
        inbound_stored.set(
            bridge_status(&api).await["links"][1]["messages"]
                .as_u64()
                .unwrap_or(0),
        );
        mqtt_acked.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL
            && inbound_stored.get() >= INBOUND_BEFORE_KILL
    })
    .await;
    // Hold back the PubAcks, wait until the cursor file and JetStream
    // stand still (acks already received committed, the in-flight window
    // sent), then kill it.
    proxy.hold();
    let seen = std::cell::Cell::new((None, Instant::now()));
    wait_for("the bridge to stall behind the hold", || async {
        let now = (cursor(&data_dir), last_sent(&js).await);
        let (before, since) = seen.get();
        if before != Some(now) {
            seen.set((Some(now), Instant::now()));
            return false;
        }
        since.elapsed() >= SETTLE
    })
    .await;
    let launch = broker.kill().await.expect("SIGKILL");
    proxy.release();
    let acked_before = mqtt.await.expect("MQTT publisher");
    let committed = cursor(&data_dir).expect("cursor file");
    let sent_before = last_sent(&js).await.expect("EDGE has messages");
    assert!(
        sent_before >= committed,
        "JetStream holds up to offset {sent_before}, the killed bridge's cursor is at {committed}"
    );

    // Restart on the same data directory; publish more over MQTT while
    // NATS publishes go on and both directions catch up.
    let broker = launch.start().await.expect("restart tidewire");
    let api = Api::new(broker.http_url());
    let acked_after = mqtt_publish(
        broker.mqtt_addr(),
        "after-restart",
        AFTER_RESTART,
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    assert_eq!(
        acked_after.len() as u64,
        AFTER_RESTART.end - AFTER_RESTART.start
    );
    stop_nats.cancel();
    let (nats_acked, nats_published) = nats.await.expect("NATS publisher");
    let durable: PullConsumer = js
        .get_stream("CMD")
        .await
        .expect("CMD")
        .get_consumer("tw")
        .await
        .expect("durable consumer");
    wait_for("inbound to catch up", || async {
        durable.get_info().await.is_ok_and(|i| {
            i.num_pending == 0 && i.num_ack_pending == 0 && i.ack_floor.stream_sequence > 0
        })
    })
    .await;
    wait_for("outbound to catch up", || async {
        let (_, stream) = api.get("/api/v1/streams/events").await.expect("stream");
        let end = &stream["stats"]["next_offset"];
        bridge_status(&api).await["links"][0]["cursor"] == *end
    })
    .await;

    let stored = events(&api).await;
    let sent = edge(&js).await;

    // Outbound: JetStream holds exactly the MQTT records tidewire stored,
    // each once, in offset order, with their payloads.
    let sensors: BTreeMap<u64, &Stored> = stored
        .iter()
        .filter(|(_, r)| r.client_id != INBOUND_CLIENT)
        .map(|(o, r)| (*o, r))
        .collect();
    for (offset, record) in &sensors {
        let n: u64 = record.payload.parse().expect("an MQTT number");
        assert_eq!(
            record.topic,
            format!("sensors/{}", n % 7),
            "offset {offset}"
        );
    }
    let offsets: Vec<u64> = sent.iter().map(|(o, _)| *o).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "JetStream holds offsets out of order or twice"
    );
    assert_eq!(
        offsets,
        sensors.keys().copied().collect::<Vec<_>>(),
        "JetStream holds every MQTT record tidewire stored and nothing else"
    );
    for (offset, payload) in &sent {
        assert_eq!(&sensors[offset].payload, payload, "offset {offset}");
    }
    let in_jetstream: HashSet<u64> = sent
        .iter()
        .map(|(_, p)| p.parse().expect("number"))
        .collect();
    let lost: Vec<&u64> = acked_before
        .iter()
        .chain(&acked_after)
        .filter(|n| !in_jetstream.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged MQTT publishes missing from JetStream, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // The restarted bridge sent again from its cursor, so the records
    // JetStream already held went twice and were dropped as duplicates.
    let resent = sensors.range(committed..=sent_before).count() as u64;
    let delivered_after = bridge_status(&api).await["links"][0]["messages"]
        .as_u64()
        .expect("messages");
    assert!(resent > 0);
    assert!(
        delivered_after >= sensors.range(committed..).count() as u64,
        "the restarted bridge had every record from its cursor on acknowledged"
    );

    // Inbound: every message JetStream acknowledged to the publisher was
    // delivered and is stored (redeliveries after the kill may repeat
    // some); everything stored was published.
    let mut inbound: HashMap<u64, usize> = HashMap::new();
    for (offset, record) in stored.iter().filter(|(_, r)| r.client_id == INBOUND_CLIENT) {
        let n: u64 = record.payload.parse().expect("a NATS number");
        assert!(
            n < nats_published,
            "offset {offset}: {n} was never published"
        );
        assert_eq!(record.topic, format!("cmd/{}", n % 5), "offset {offset}");
        *inbound.entry(n).or_default() += 1;
    }
    let missing: Vec<&u64> = nats_acked
        .iter()
        .filter(|n| !inbound.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages JetStream acknowledged are not in tidewire, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let info = durable.get_info().await.expect("consumer info");
    assert_eq!(
        info.ack_floor.stream_sequence,
        js_count(&js, "CMD").await,
        "tidewire acknowledged every message"
    );
    let repeated = inbound.values().filter(|&&c| c > 1).count();
    println!(
        "acknowledged over MQTT: {} before the kill, {} after; in JetStream: {}; \
         resent after the restart and dropped as duplicates: {resent}; \
         inbound: {} acknowledged by JetStream, {}+ stored before the kill, \
         {repeated} stored twice after redelivery",
        acked_before.len(),
        acked_after.len(),
        sent.len(),
        nats_acked.len(),
        inbound_stored.get(),
    );
}
