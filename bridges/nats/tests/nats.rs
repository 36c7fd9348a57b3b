//! The NATS bridge against a real `nats-server -js` (started per test on
//! a free port, killed on drop) and a real tidewire broker over real
//! files in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use tidewire_auth::{Auth, AuthConfig, AuthMetrics, AuthTable, UserConfig};
use tidewire_bridge::{BridgeConfig, BridgeMetrics, BridgeStatus, Bridges, Health};
use tidewire_core::{
    Broker, Limits, Message, Properties, PublishMetrics, Source, StreamConfig, Streams,
};
use tidewire_nats::{NatsBridge, NatsBridgeConfig};
use tidewire_nats_testkit::{NatsServer, free_port};
use tidewire_storage::StorageMetrics;
use tokio_util::sync::CancellationToken;

#[path = "nats/fanout.rs"]
mod fanout;
#[path = "nats/proxy.rs"]
mod proxy;
#[path = "nats/reconnects.rs"]
mod reconnects;
#[path = "nats/sigkill.rs"]
mod sigkill;

/// How long a test waits for something that should happen soon.
const PATIENCE: Duration = Duration::from_secs(60);

/// A broker over an `events` stream keeping every topic, in a tempdir.
struct Node {
    dir: tempfile::TempDir,
    broker: Broker,
    metrics: BridgeMetrics,
    auth: Auth,
}

impl Node {
    fn new() -> Node {
        Node::with_stream(StreamConfig::default_stream())
    }

    fn with_stream(config: StreamConfig) -> Node {
        Node::open(tempfile::tempdir().expect("tempdir"), config)
    }

    fn open(dir: tempfile::TempDir, config: StreamConfig) -> Node {
        let mut registry = Registry::default();
        let spec = config.validate("streams[0]").expect("spec");
        let streams = Streams::open(
            dir.path(),
            vec![spec],
            &StorageMetrics::register(&mut registry),
            Arc::new(|_| {}),
        )
        .expect("open streams");
        let broker = Broker::new(
            streams,
            Limits::default(),
            PublishMetrics::register(&mut registry),
        );
        Node {
            dir,
            broker,
            metrics: BridgeMetrics::register(&mut registry),
            auth: Auth::allow_all(),
        }
    }

    /// Closes the streams and opens them again from the same files, as a
    /// restarted process would.
    async fn reopen(self) -> Node {
        self.broker.streams().close().await;
        let Node { dir, broker, .. } = self;
        drop(broker);
        Node::open(dir, StreamConfig::default_stream())
    }

    async fn publish(&self, topic: &str, payload: impl Into<Bytes>) {
        self.publish_message(Message {
            topic: topic.to_owned(),
            client_id: "device-1".to_owned(),
            qos: 1,
            payload: payload.into(),
            ..Message::default()
        })
        .await;
    }

    async fn publish_message(&self, message: Message) {
        self.broker
            .publish(Source::Mqtt, message)
            .await
            .expect("publish");
    }

    async fn start(&self, bridge: &NatsBridge, shutdown: &CancellationToken) -> Bridges {
        let configs: Vec<Arc<dyn BridgeConfig>> = vec![Arc::new(bridge.clone())];
        Bridges::start(
            &configs,
            &self.broker,
            self.dir.path(),
            &self.metrics,
            &self.auth,
            shutdown,
        )
        .await
        .expect("start bridges")
    }
}

/// The first bridge of a `[bridge]` section's text.
fn bridge(toml_text: &str) -> NatsBridge {
    let mut section: toml::Table = toml::from_str(toml_text).expect("parse");
    let entries: Vec<NatsBridgeConfig> = section
        .remove("nats")
        .expect("[[nats]]")
        .try_into()
        .expect("parse");
    NatsBridgeConfig::validate_all(&entries, "bridge.nats")
        .expect("valid")
        .remove(0)
}

async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn js_stream(server: &NatsServer, name: &str, subjects: &[&str]) -> jetstream::Context {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    add_stream(&js, name, subjects).await;
    js
}

/// Creates a file-backed JetStream stream `name` capturing `subjects`.
async fn add_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create JetStream stream {name}: {e}"));
}

async fn js_count(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message of a JetStream stream, in stream order.
async fn js_messages(
    js: &jetstream::Context,
    name: &str,
) -> Vec<jetstream::message::StreamMessage> {
    let stream = js.get_stream(name).await.expect("stream");
    let count = js_count(js, name).await;
    let mut out = Vec::new();
    for seq in 1..=count {
        out.push(stream.get_raw_message(seq).await.expect("message"));
    }
    out
}

fn status(bridges: &Bridges) -> BridgeStatus {
    bridges.statuses().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_both_ways_with_properties() {
    let server = NatsServer::start();
    let js = js_stream(&server, "EDGE", &["edge.>"]).await;
    add_stream(&js, "CMD", &["cmd.>"]).await;
    let node = Node::new();
    let spec = bridge(&format!(
        r#"
        [[nats]]
        name = "uplink"
        url = "{}"
        node = "n1"
        [[nats.outbound]]
        from = "sensors/#"
        subject = "edge.{{node}}.>"
        jetstream = true
        [[nats.outbound]]
        from = "cmd/#"
        subject = "back.>"
        [[nats.inbound]]
        subject = "cmd.{{node}}.>"
        to = "cmd/#"
        durable = "tidewire-n1"
        [[nats.inbound]]
        subject = "core.*"
        to = "core/+"
        "#,
        server.url()
    ));
    let shutdown = CancellationToken::new();
    let mut bridges = node.start(&spec, &shutdown).await;
    wait_for("connected", || async {
        status(&bridges).health == Health::Connected
    })
    .await;
    let watcher = async_nats::connect(server.url()).await.expect("connect");
    let mut back = watcher.subscribe("back.>").await.expect("subscribe");
    watcher.flush().await.expect("flush");

    // Outbound: topic, payload and every property arrive in JetStream.
    let properties = Properties {
        user: vec![
            ("unit".into(), "celsius".into()),
            ("site".into(), "north".into()),
        ],
        content_type: Some("application/json".into()),
        response_topic: Some("replies/n1".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        message_expiry_secs: Some(30),
        payload_format_utf8: true,
    };
    node.publish_message(Message {
        topic: "sensors/cold.1/temp".into(),
        client_id: "device-1".into(),
        qos: 1,
        payload: Bytes::from_static(b"{\"t\":4}"),
        properties: properties.clone(),
        ..Message::default()
    })
    .await;
    wait_for("outbound message", || async {
        js_count(&js, "EDGE").await == 1
    })
    .await;
    let sent = js_messages(&js, "EDGE").await.remove(0);
    assert_eq!(sent.subject.as_str(), "edge.n1.cold//1.temp");
    assert_eq!(sent.payload.as_ref(), b"{\"t\":4}");
    let headers = sent.headers;
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("n1:events:0")
    );
    let mut expected = properties.clone();
    expected.user.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tidewire_nats::headers::to_properties(Some(&headers)),
        expected
    );

    // Inbound through the durable consumer: headers become properties, and
    // the message is stored with the bridge's client id.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("operator", "alice");
    headers.insert("Mqtt-Content-Type", "text/plain");
    js.publish_with_headers("cmd.n1.door./.open", headers, Bytes::from_static(b"now"))
        .await
        .expect("publish")
        .await
        .expect("ack");
    let events = node
        .broker
        .streams()
        .get("events")
        .expect("events")
        .log
        .clone();
    wait_for("inbound message", || async { events.next_offset() == 2 }).await;
    let stored = events.scan(1..2).next().expect("record").expect("read");
    assert_eq!(stored.message.topic, "cmd/door//open");
    assert_eq!(stored.message.client_id, "$nats:uplink");
    assert_eq!(stored.message.payload.as_ref(), b"now");
    assert_eq!(
        stored.message.properties.user,
        [("operator".into(), "alice".into())]
    );
    assert_eq!(
        stored.message.properties.content_type.as_deref(),
        Some("text/plain")
    );
    // It was acknowledged: the durable consumer has nothing pending.
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("CMD")
        .await
        .expect("stream")
        .get_consumer("tidewire-n1")
        .await
        .expect("consumer");
    wait_for("ack", || async {
        consumer
            .get_info()
            .await
            .is_ok_and(|i| i.num_ack_pending == 0 && i.num_pending == 0)
    })
    .await;

    // Inbound over a core subscription.
    watcher
        .publish("core.lamp", Bytes::from_static(b"on"))
        .await
        .expect("publish");
    watcher.flush().await.expect("flush");
    wait_for("core inbound", || async { events.next_offset() == 3 }).await;
    let stored = events.scan(2..3).next().expect("record").expect("read");
    assert_eq!(stored.message.topic, "core/lamp");

    // Loop prevention: the bridged-in cmd/door//open (offset 1) is never
    // sent back; the first message on back.> is a local one published after it.
    node.publish("cmd/local", "mine").await;
    let first = tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut back))
        .await
        .expect("a message on back.>")
        .expect("subscription open");
    assert_eq!(first.subject.as_str(), "back.local");
    assert_eq!(first.payload.as_ref(), b"mine");

    let snapshot = status(&bridges);
    assert_eq!(snapshot.health, Health::Connected);
    assert_eq!(snapshot.links[0].messages, 1);
    assert_eq!(snapshot.links[2].messages, 1);
    assert_eq!(snapshot.links[3].messages, 1);
    bridges.stop().await;
    assert_eq!(status(&bridges).health, Health::Stopped);
}

fn outbound_bridge(url: &str, extra: &str) -> NatsBridge {
    bridge(&format!(
        r#"
        [[nats]]
        name = "uplink"
        url = "{url}"
        node = "n1"
        reconnect_max = "500ms"
        {extra}
        [[nats.outbound]]
        from = "sensors/#"
        subject = "edge.>"
        jetstream = true
        start = "earliest"
        "#
    ))
}

/// The stream offsets in the JetStream stream's `Nats-Msg-Id`s, in
/// JetStream order, checking each payload is the one stored there (while
/// the stream still keeps it).
async fn offsets(js: &jetstream::Context, events: &tidewire_storage::StreamLog) -> Vec<u64> {
    js_messages(js, "EDGE")
        .await
        .iter()
        .map(|m| {
            let id = m.headers.get("Nats-Msg-Id").expect("msg id").as_str();
            let offset: u64 = id
                .strip_prefix("n1:events:")
                .expect("id")
                .parse()
                .expect("offset");
            // Retention may have dropped the record since it was sent.
            if let Some(record) = events.scan(offset..offset + 1).next() {
                assert_eq!(
                    record.expect("read").message.payload,
                    m.payload,
                    "payload of offset {offset}"
                );
            }
            offset
        })
        .collect()
}

/// Publishes `sensors/<i % 7>` = `i` for every `i` in `range`, from 16
/// concurrent publishers (so group commit batches the fsyncs).
async fn load(node: &Node, range: std::ops::Range<u64>) {
    let publishers = (0..16).map(|p| {
        let range = range.clone();
        async move {
            for i in range.filter(|i| i % 16 == p) {
                node.publish(&format!("sensors/{}", i % 7), i.to_string())
                    .await;
            }
        }
    });
    futures_util::future::join_all(publishers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_dedups_what_a_crash_sends_twice() {
    const N: u64 = 3000;
    let server = NatsServer::start();
    let js = js_stream(&server, "EDGE", &["edge.>"]).await;
    let node = Node::new();
    let spec = outbound_bridge(&server.url(), "");
    load(&node, 0..N / 2).await;
    let ctx = |shutdown: &CancellationToken| tidewire_bridge::BridgeContext {
        broker: node.broker.clone(),
        state_dir: node.dir.path().join("bridge-state"),
        shutdown: shutdown.clone(),
        metrics: node.metrics.clone(),
        auth: node.auth.clone(),
    };
    std::fs::create_dir_all(node.dir.path().join("bridge-state")).expect("state dir");

    // Crash 1: the bridge task is aborted mid-flight (no clean commit).
    let running = spec.start(ctx(&CancellationToken::new())).expect("start");
    wait_for("some progress", || async {
        js_count(&js, "EDGE").await > 0
    })
    .await;
    running.task.abort();
    let _ = running.task.await;
    load(&node, N / 2..N).await;

    // Run to the end, then crash 2: the cursor as if the process died
    // right after the PubAcks, before committing (it is rewound to 0).
    let shutdown = CancellationToken::new();
    let running = spec.start(ctx(&shutdown)).expect("restart");
    wait_for("everything", || async { js_count(&js, "EDGE").await >= N }).await;
    let cursor_file = node.dir.path().join("bridge-state/outbound-0.json");
    wait_for("cursor at the end", || async {
        std::fs::read_to_string(&cursor_file)
            .is_ok_and(|t| t.contains(&format!("\"next_offset\":{N}")))
    })
    .await;
    shutdown.cancel();
    running.task.await.expect("stopped");
    let text = std::fs::read_to_string(&cursor_file).expect("cursor");
    std::fs::write(
        &cursor_file,
        text.replace(&format!("\"next_offset\":{N}"), "\"next_offset\":0"),
    )
    .expect("rewind cursor");
    let shutdown = CancellationToken::new();
    let running = spec.start(ctx(&shutdown)).expect("restart again");
    wait_for("resent everything", || async {
        running.state.links()[0].messages() >= N
    })
    .await;
    shutdown.cancel();
    running.task.await.expect("stopped");

    let events = node
        .broker
        .streams()
        .get("events")
        .expect("events")
        .log
        .clone();
    let mut got = offsets(&js, &events).await;
    assert_eq!(got.len() as u64, N, "no duplicates");
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "nothing missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outage_under_load_delivers_everything_in_order() {
    const N: u64 = 4000;
    let mut server = NatsServer::start();
    let js = js_stream(&server, "EDGE", &["edge.>"]).await;
    let node = Arc::new(Node::new());
    let spec = outbound_bridge(&server.url(), "");
    let shutdown = CancellationToken::new();
    let mut bridges = node.start(&spec, &shutdown).await;
    let publisher = {
        let node = Arc::clone(&node);
        tokio::spawn(async move { load(&node, 0..N).await })
    };
    wait_for("a quarter through", || async {
        js_count(&js, "EDGE").await >= N / 4
    })
    .await;
    server.kill();
    wait_for("the bridge noticing", || async {
        status(&bridges).health == Health::Disconnected
    })
    .await;
    // Ingest goes on while NATS is down.
    publisher.await.expect("publisher");
    let events = node
        .broker
        .streams()
        .get("events")
        .expect("events")
        .log
        .clone();
    assert_eq!(events.next_offset(), N);
    wait_for("lag to cover the unsent backlog", || async {
        let link = &status(&bridges).links[0];
        link.cursor
            .is_some_and(|c| c < N && link.lag == Some(N - c))
    })
    .await;
    server.restart();
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("reconnect"));
    wait_for("everything", || async { js_count(&js, "EDGE").await >= N }).await;
    wait_for("lag zero", || async {
        status(&bridges).links[0].lag == Some(0)
    })
    .await;
    assert_eq!(offsets(&js, &events).await, (0..N).collect::<Vec<_>>());
    bridges.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_unreachable_urls_show_in_status() {
    let node = Node::new();
    let server = NatsServer::start_with(&["--user", "edge", "--pass", "right"]);
    let shutdown = CancellationToken::new();
    let spec = outbound_bridge(&server.url(), "user = \"edge\"\npassword = \"wrong\"");
    let mut bridges = node.start(&spec, &shutdown).await;
    wait_for("auth failure", || async {
        status(&bridges)
            .error
            .is_some_and(|e| e.contains("authorization failed"))
    })
    .await;
    assert_eq!(status(&bridges).health, Health::Disconnected);
    // Ingest does not wait for the bridge.
    node.publish("sensors/a", "1").await;
    bridges.stop().await;

    let port = free_port();
    let spec = outbound_bridge(
        &format!("nats://127.0.0.1:{port}"),
        "connect_timeout = \"1s\"",
    );
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    wait_for("unreachable", || async {
        status(&bridges)
            .error
            .is_some_and(|e| e.contains("cannot reach"))
    })
    .await;
    assert_eq!(status(&bridges).health, Health::Disconnected);
    // It keeps retrying: once a server appears there, it connects and sends.
    let server = NatsServer::start_on(port, &[]);
    let js = js_stream(&server, "EDGE", &["edge.>"]).await;
    wait_for("connected", || async {
        status(&bridges).health == Health::Connected
    })
    .await;
    wait_for("backlog sent", || async {
        js_count(&js, "EDGE").await == 1
    })
    .await;
    bridges.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_overtaking_the_cursor_is_a_counted_loss() {
    const N: u64 = 400;
    let config: StreamConfig = toml::from_str(
        "name = \"events\"\nsegment_bytes = \"4KiB\"\nretention = { max_bytes = \"16KiB\" }",
    )
    .expect("stream config");
    let node = Node::with_stream(config);
    let port = free_port();
    let spec = outbound_bridge(&format!("nats://127.0.0.1:{port}"), "");
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    for i in 0..N {
        node.publish(&format!("sensors/{}", i % 7), format!("{i:0>100}"))
            .await;
    }
    let events = node
        .broker
        .streams()
        .get("events")
        .expect("events")
        .log
        .clone();
    wait_for("retention to drop segments", || async {
        events.stats().first_offset > 0
    })
    .await;

    let server = NatsServer::start_on(port, &[]);
    let js = js_stream(&server, "EDGE", &["edge.>"]).await;
    wait_for("every record sent or counted lost", || async {
        let link = status(&bridges).links.remove(0);
        link.cursor == Some(N) && link.lost + js_count(&js, "EDGE").await == N
    })
    .await;
    let link = status(&bridges).links.remove(0);
    assert!(link.lost > 0);
    assert!(
        link.last_error
            .is_some_and(|e| e.contains("retention dropped"))
    );
    // The records sent are exactly those after the lost ones, in order.
    assert_eq!(
        offsets(&js, &events).await,
        (link.lost..N).collect::<Vec<_>>()
    );
    bridges.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_acks_only_what_tidewire_stored() {
    let server = NatsServer::start();
    let js = js_stream(&server, "CMD", &["cmd.>"]).await;
    let node = Node::new();
    let spec = bridge(&format!(
        r#"
        [[nats]]
        name = "uplink"
        url = "{}"
        reconnect_max = "500ms"
        [[nats.inbound]]
        subject = "cmd.>"
        to = "cmd/#"
        durable = "tw"
        ack_wait = "1s"
        "#,
        server.url()
    ));
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    wait_for("connected", || async {
        status(&bridges).health == Health::Connected
    })
    .await;
    // tidewire cannot store (its streams are closed, as in a shutdown).
    node.broker.streams().close().await;
    js.publish("cmd.door", Bytes::from_static(b"open"))
        .await
        .expect("publish")
        .await
        .expect("ack");
    wait_for("the store failure", || async {
        status(&bridges).links[0]
            .last_error
            .as_ref()
            .is_some_and(|e| e.contains("closed"))
    })
    .await;
    bridges.stop().await;
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("CMD")
        .await
        .expect("stream")
        .get_consumer("tw")
        .await
        .expect("consumer");
    let info = consumer.get_info().await.expect("info");
    assert_eq!(info.ack_floor.stream_sequence, 0, "nothing acknowledged");

    // After a restart it is delivered again, stored, then acknowledged.
    let node = node.reopen().await;
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    let events = node
        .broker
        .streams()
        .get("events")
        .expect("events")
        .log
        .clone();
    wait_for("redelivery", || async { events.next_offset() == 1 }).await;
    let stored = events.scan(0..1).next().expect("record").expect("read");
    assert_eq!(stored.message.topic, "cmd/door");
    wait_for("ack", || async {
        consumer
            .get_info()
            .await
            .is_ok_and(|i| i.ack_floor.stream_sequence == 1 && i.num_ack_pending == 0)
    })
    .await;
    bridges.stop().await;
}

#[tokio::test]
async fn a_running_bridge_holds_the_stream_it_reads() {
    let node = Node::new();
    // No server is needed: a bridge holds its stream from its start.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let spec = outbound_bridge(&url, "connect_timeout = \"1s\"");
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    let err = node.broker.streams().remove("events").expect_err("held");
    assert_eq!(
        err.to_string(),
        "stream \"events\" is in use by nats bridge \"uplink\" (outbound[0])"
    );
    bridges.stop().await;
    node.broker
        .streams()
        .remove("events")
        .expect("free once the bridge has stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_messages_obey_the_rules_of_the_user_they_are_published_as() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut node = Node::new();
    let gateway = UserConfig {
        username: "gateway".into(),
        password_hash: None,
        publish: Some(vec!["cmd/door/#".into()]),
        subscribe: None,
        deny: vec!["cmd/door/unlock".into()],
        sql: None,
        queues: None,
        topics: None,
        admin: None,
    };
    let table = AuthTable::validate(
        &AuthConfig::default(),
        (None, None),
        &[("users[0]".to_owned(), &gateway)],
        &[],
    )
    .expect("valid");
    node.auth = Auth::new(table, AuthMetrics::default());
    let spec = bridge(&format!(
        r#"
        [[nats]]
        name = "uplink"
        url = "{}"
        publish_as = "gateway"
        [[nats.inbound]]
        subject = "cmd.>"
        to = "cmd/#"
        "#,
        server.url()
    ));
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    wait_for("connected", || async {
        status(&bridges).health == Health::Connected
    })
    .await;
    for subject in [
        "cmd.door.open",
        "cmd.door.unlock",
        "cmd.window.open",
        "cmd.door.close",
    ] {
        client
            .publish(subject, Bytes::from_static(b"1"))
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let events = node.broker.streams().get("events").expect("events").log;
    wait_for("the allowed messages", || async {
        events.next_offset() == 2
    })
    .await;
    wait_for("the refusals counted", || async {
        status(&bridges).links[0].lost == 2
    })
    .await;
    let topics: Vec<String> = events
        .scan(0..2)
        .map(|r| r.expect("read").message.topic)
        .collect();
    assert_eq!(topics, ["cmd/door/open", "cmd/door/close"]);
    let error = status(&bridges).links[0].last_error.clone().expect("error");
    assert!(error.contains("user \"gateway\""), "{error}");
    bridges.stop().await;

    // A user that does not exist stops the bridge from starting.
    let unknown = bridge(&format!(
        "[[nats]]\nname = \"other\"\nurl = \"{}\"\npublish_as = \"nobody\"\n\
         [[nats.inbound]]\nsubject = \"x.>\"\nto = \"x/#\"\n",
        server.url()
    ));
    let configs: Vec<Arc<dyn BridgeConfig>> = vec![Arc::new(unknown)];
    let err = Bridges::start(
        &configs,
        &node.broker,
        node.dir.path(),
        &node.metrics,
        &node.auth,
        &CancellationToken::new(),
    )
    .await
    .expect_err("unknown user");
    assert!(err.to_string().contains("publish_as"), "{err}");
}
