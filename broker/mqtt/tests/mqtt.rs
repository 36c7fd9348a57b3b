//! The MQTT server in-process on a real port, with real files, against
//! rumqttc clients (3.1.1 and 5.0) and raw sockets: QoS flows, retained
//! messages, wills, persistent sessions across a restart, shared
//! subscriptions, MQTT 5 properties, keepalive, takeover, ACLs,
//! malformed or oversize packets, and quiet connections parking (over TCP
//! and TLS).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prometheus_client::registry::Registry;
use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, QoS};
use tidewire_core::{Broker, Limits, PublishMetrics, StreamConfig, Streams};
use tidewire_mqtt::codec::{Codec, Version};
use tidewire_mqtt::{MqttConfig, MqttServer};
use tidewire_storage::StorageMetrics;
use tidewire_tls::rustls::pki_types::pem::PemObject;
use tidewire_tls::rustls::pki_types::{CertificateDer, ServerName};
use tidewire_tls::tokio_rustls::TlsConnector;
use tidewire_tls::{Tls, TlsConfig, TlsMetrics, rustls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct TestBroker {
    addr: SocketAddr,
    /// The MQTT over TLS listener, when started with one.
    tls_addr: Option<SocketAddr>,
    broker: Broker,
    registry: Registry,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestBroker {
    async fn start(dir: &Path, mqtt_toml: &str) -> TestBroker {
        TestBroker::start_with(dir, mqtt_toml, None).await
    }

    /// With an MQTT over TLS listener too, serving the test certificate
    /// in `broker/tls/testdata`.
    async fn start_tls(dir: &Path, mqtt_toml: &str) -> TestBroker {
        let tls = TlsConfig {
            cert: Some(testdata("server.pem").into()),
            key: Some(testdata("server.key").into()),
            ..TlsConfig::default()
        };
        let tls = Tls::new(tls.load().expect("test certificate"), TlsMetrics::default());
        let toml = format!("tls_listen = \"127.0.0.1:0\"\n{mqtt_toml}");
        TestBroker::start_with(dir, &toml, Some(&tls)).await
    }

    async fn start_with(dir: &Path, mqtt_toml: &str, tls: Option<&Tls>) -> TestBroker {
        let mut registry = Registry::default();
        let storage_metrics = StorageMetrics::register(&mut registry);
        let spec = StreamConfig::default_stream()
            .validate("streams[0]")
            .expect("valid stream");
        let streams = Streams::open(dir, vec![spec], &storage_metrics, Arc::new(|_| {}))
            .expect("open streams");
        let broker = Broker::new(
            streams,
            Limits::default(),
            PublishMetrics::register(&mut registry),
        );
        let config: MqttConfig = toml::from_str(mqtt_toml).expect("mqtt config");
        let auth = config.standalone_auth().expect("valid auth");
        let settings = config
            .validate(Some("127.0.0.1:0".parse().expect("addr")), auth, tls)
            .expect("valid mqtt config");
        let server = MqttServer::start(
            settings,
            broker.clone(),
            dir,
            &mut registry,
            &storage_metrics,
            Arc::new(|_| {}),
        )
        .await
        .expect("start mqtt");
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { server.run(shutdown).await.expect("mqtt run") }
        });
        TestBroker {
            addr,
            tls_addr,
            broker,
            registry,
            shutdown,
            task,
        }
    }

    /// The value of an unlabelled metric, by its full name.
    fn metric(&self, name: &str) -> i64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Waits until the metric `name` reads `value`.
    async fn metric_reaches(&self, name: &str, value: i64) {
        let reached = tokio::time::timeout(WAIT, async {
            while self.metric(name) != value {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "{name} stayed at {}, not {value}",
            self.metric(name)
        );
    }

    /// Stops gracefully and releases the data directory.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("mqtt task");
        self.broker.streams().close().await;
    }

    fn stored_topics(&self) -> Vec<String> {
        let stream = self.broker.streams().get("events").expect("events stream");
        stream
            .log
            .scan(0..u64::MAX)
            .map(|r| r.expect("record").message.topic)
            .collect()
    }
}

/// A 3.1.1 client whose events arrive on a channel.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    poller: JoinHandle<()>,
}

impl Client {
    async fn connect(addr: SocketAddr, options: impl FnOnce(&mut MqttOptions)) -> Client {
        let mut client = Client::start(addr, options);
        let connack = client
            .next_matching(|e| matches!(e, Event::Incoming(Incoming::ConnAck(_))))
            .await;
        let Event::Incoming(Incoming::ConnAck(ack)) = connack else {
            unreachable!()
        };
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        client
    }

    fn start(addr: SocketAddr, options: impl FnOnce(&mut MqttOptions)) -> Client {
        let mut opts = MqttOptions::new(unique_id(), addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        options(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await.map_err(|e| e.to_string());
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        Client {
            client,
            events,
            poller,
        }
    }

    async fn next_matching(&mut self, want: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(event)) if want(&event) => return event,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connection failed: {e}"),
                    None => panic!("event loop ended"),
                }
            }
        })
        .await
        .expect("timed out waiting for an MQTT event")
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        match self
            .next_matching(|e| matches!(e, Event::Incoming(Incoming::Publish(_))))
            .await
        {
            Event::Incoming(Incoming::Publish(p)) => p,
            _ => unreachable!(),
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        match self
            .next_matching(|e| matches!(e, Event::Incoming(Incoming::SubAck(_))))
            .await
        {
            Event::Incoming(Incoming::SubAck(ack)) => ack.return_codes,
            _ => unreachable!(),
        }
    }

    /// Publishes and waits for the broker's acknowledgement (QoS 1/2).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish");
        match qos {
            QoS::AtMostOnce => {
                self.next_matching(|e| matches!(e, Event::Outgoing(rumqttc::Outgoing::Publish(_))))
                    .await;
            }
            QoS::AtLeastOnce => {
                self.next_matching(|e| matches!(e, Event::Incoming(Incoming::PubAck(_))))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.next_matching(|e| matches!(e, Event::Incoming(Incoming::PubComp(_))))
                    .await;
            }
        }
    }

    /// Asserts nothing is delivered for a short while.
    async fn assert_quiet(&mut self) {
        let quiet = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match self.events.recv().await {
                    Some(Ok(Event::Incoming(Incoming::Publish(p)))) => return Some(p),
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await;
        if let Ok(Some(p)) = quiet {
            panic!("unexpected message on {}", p.topic);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn qos_levels_are_delivered_at_min_of_publish_and_subscription() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let mut sub1 = Client::connect(server.addr, |_| {}).await;
    let mut sub2 = Client::connect(server.addr, |_| {}).await;
    assert_eq!(
        sub1.subscribe("q/#", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    sub2.subscribe("q/#", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(&format!("q/{i}"), qos, false, &format!("m{i}"))
            .await;
        let got1 = sub1.next_publish().await;
        let got2 = sub2.next_publish().await;
        assert_eq!(got1.payload, Bytes::from(format!("m{i}")));
        let expected = if qos == QoS::AtMostOnce {
            qos
        } else {
            QoS::AtLeastOnce
        };
        assert_eq!(got1.qos, expected);
        assert_eq!(got2.qos, qos);
        assert!(!got1.retain);
    }
    // Every published message is in the stream.
    assert_eq!(server.stored_topics(), ["q/0", "q/1", "q/2"]);
    drop((sub1, sub2, publisher));
    server.stop().await;
}

#[tokio::test]
async fn retained_messages_are_durable_and_deleted_by_empty_payloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    publisher
        .publish("status/a", QoS::AtLeastOnce, true, "up")
        .await;
    publisher
        .publish("status/b", QoS::AtLeastOnce, true, "down")
        .await;
    publisher
        .publish("status/b", QoS::AtLeastOnce, true, "")
        .await;
    drop(publisher);
    server.stop().await;

    let server = TestBroker::start(dir.path(), "").await;
    let mut sub = Client::connect(server.addr, |_| {}).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await;
    let got = sub.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.retain),
        ("status/a", &b"up"[..], true)
    );
    sub.assert_quiet().await;
    // A live message to a subscriber is not flagged retained.
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    publisher
        .publish("status/a", QoS::AtLeastOnce, true, "again")
        .await;
    let live = sub.next_publish().await;
    assert!(!live.retain);
    drop((sub, publisher));
    server.stop().await;
}

#[tokio::test]
async fn will_is_published_on_abrupt_loss_and_not_on_disconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let mut watcher = Client::connect(server.addr, |_| {}).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let polite = Client::connect(server.addr, |o| {
        o.set_last_will(LastWill::new(
            "wills/polite",
            "gone",
            QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    polite.client.disconnect().await.expect("disconnect");
    watcher.assert_quiet().await;

    // A raw connection with a will that just drops.
    let mut raw = TcpStream::connect(server.addr).await.expect("connect");
    let connect = [
        0x10,
        28,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0b0000_1110,
        0,
        60,
        0,
        3,
        b'r',
        b'a',
        b'w',
        0,
        7,
        b'w',
        b'i',
        b'l',
        b'l',
        b's',
        b'/',
        b'x',
        0,
        2,
        b'b',
        b'y',
    ];
    assert_eq!(connect.len(), 30);
    raw.write_all(&connect).await.expect("write");
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.expect("connack");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    drop(raw);
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("wills/x", &b"by"[..])
    );
    drop(watcher);
    server.stop().await;
}

#[tokio::test]
async fn persistent_session_gets_queued_messages_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let persistent = |o: &mut MqttOptions| {
        *o = MqttOptions::new("sleepy", o.broker_address().0, o.broker_address().1);
        o.set_clean_session(false);
    };
    let mut sleepy = Client::connect(server.addr, persistent).await;
    sleepy.subscribe("jobs/+", QoS::AtLeastOnce).await;
    sleepy.client.disconnect().await.expect("disconnect");
    drop(sleepy);
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    for i in 0..3 {
        publisher
            .publish(
                &format!("jobs/{i}"),
                QoS::AtLeastOnce,
                false,
                &format!("job {i}"),
            )
            .await;
    }
    drop(publisher);
    server.stop().await;

    let server = TestBroker::start(dir.path(), "").await;
    let mut sleepy = Client::start(server.addr, persistent);
    let Event::Incoming(Incoming::ConnAck(ack)) = sleepy
        .next_matching(|e| matches!(e, Event::Incoming(Incoming::ConnAck(_))))
        .await
    else {
        unreachable!()
    };
    assert!(ack.session_present);
    for i in 0..3 {
        let got = sleepy.next_publish().await;
        assert_eq!(got.payload, Bytes::from(format!("job {i}")));
        assert_eq!(got.qos, QoS::AtLeastOnce);
    }
    drop(sleepy);
    server.stop().await;
}

#[tokio::test]
async fn offline_queue_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "max_queued_messages = 5").await;
    let persistent = |o: &mut MqttOptions| {
        *o = MqttOptions::new("bounded", o.broker_address().0, o.broker_address().1);
        o.set_clean_session(false);
    };
    let mut client = Client::connect(server.addr, persistent).await;
    client.subscribe("b/#", QoS::AtLeastOnce).await;
    client.client.disconnect().await.expect("disconnect");
    drop(client);
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    for i in 0..8 {
        publisher
            .publish(&format!("b/{i}"), QoS::AtLeastOnce, false, "x")
            .await;
    }
    let mut client = Client::connect(server.addr, persistent).await;
    for i in 0..5 {
        let got = client.next_publish().await;
        assert_eq!(got.topic, format!("b/{i}"), "the oldest are kept");
    }
    client.assert_quiet().await;
    assert_eq!(
        server.stored_topics().len(),
        8,
        "the stream has every message"
    );
    drop((client, publisher));
    server.stop().await;
}

#[tokio::test]
async fn shared_subscriptions_split_the_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut w = Client::connect(server.addr, |_| {}).await;
        w.subscribe("$share/pool/tasks/#", QoS::AtLeastOnce).await;
        workers.push(w);
    }
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    for i in 0..10 {
        publisher
            .publish(&format!("tasks/{i}"), QoS::AtLeastOnce, false, "t")
            .await;
    }
    for w in &mut workers {
        for _ in 0..5 {
            w.next_publish().await;
        }
        w.assert_quiet().await;
    }
    drop((workers, publisher));
    server.stop().await;
}

#[tokio::test]
async fn keepalive_zero_is_accepted_and_a_silent_client_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let mut idle = Client::connect(server.addr, |o| {
        o.set_keep_alive(Duration::ZERO);
    })
    .await;
    idle.subscribe("k", QoS::AtMostOnce).await;

    // keepalive = 1 s and then silence: closed after 1.5 s.
    let mut raw = TcpStream::connect(server.addr).await.expect("connect");
    raw.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 1, 0, 1, b'z',
    ])
    .await
    .expect("write");
    let mut buf = [0u8; 16];
    let n = raw.read(&mut buf).await.expect("connack");
    assert_eq!(&buf[..n], &[0x20, 2, 0, 0]);
    let closed = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .expect("closed in time");
    assert_eq!(closed.expect("read"), 0);
    idle.publish("k", QoS::AtLeastOnce, false, "still here")
        .await;
    drop(idle);
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_oversize_packets_close_only_that_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "max_packet_bytes = \"1KiB\"").await;
    let mut bystander = Client::connect(server.addr, |_| {}).await;
    bystander.subscribe("ok", QoS::AtMostOnce).await;

    let connect_v5 = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'm',
    ];
    for (bad, reason) in [
        // A PUBLISH with a QoS of 3: malformed.
        (vec![0x36, 4, 0, 1, b'a', 0], 0x81),
        // A CONNACK, which only a server sends: a protocol error.
        (vec![0x20, 2, 0, 0], 0x82),
        // A PUBLISH bigger than the 1 KiB limit: packet too large.
        (
            {
                let mut p = vec![0x30, 0x88, 0x10, 0, 1, b'a', 0];
                p.extend(std::iter::repeat_n(b'x', 2048));
                p
            },
            0x95,
        ),
    ] {
        let mut raw = TcpStream::connect(server.addr).await.expect("connect");
        raw.write_all(&connect_v5).await.expect("connect");
        let mut buf = vec![0u8; 256];
        let n = raw.read(&mut buf).await.expect("connack");
        assert_eq!(buf[0], 0x20, "{:?}", &buf[..n]);
        let _ = raw.write_all(&bad).await;
        // The server answers with DISCONNECT and the reason, and closes.
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, raw.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .ok();
        assert_eq!(rest, [0xE0, 0x02, reason, 0x00], "{bad:?}");
    }
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    publisher
        .publish("ok", QoS::AtLeastOnce, false, "fine")
        .await;
    assert_eq!(bystander.next_publish().await.payload, Bytes::from("fine"));
    drop((bystander, publisher));
    server.stop().await;
}

/// The server's DISCONNECT, read off the socket byte for byte: for MQTT 5
/// the reason code and a zero property length (Remaining Length 2, MQTT
/// 5.0 §3.14), and nothing for 3.1.1, which has no DISCONNECT from the
/// server. A second CONNECT is a protocol error (5.0 §3.1, 3.1.1 §3.1).
#[tokio::test]
async fn a_second_connect_gets_a_well_formed_disconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    // Client id "d", keepalive 60, clean start; MQTT 5 adds a zero
    // property length.
    let v311 = vec![
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'd',
    ];
    let v5 = vec![
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'd',
    ];
    for (connect, goodbye) in [(v5, &[0xE0, 0x02, 0x82, 0x00][..]), (v311, &[][..])] {
        let mut raw = TcpStream::connect(server.addr).await.expect("connect");
        raw.write_all(&connect).await.expect("connect");
        let mut buf = BytesMut::new();
        let connack = read_packet(&mut raw, &mut buf, &[0x20]).await;
        assert_eq!(connack[3], 0, "accepted: {connack:02x?}");
        raw.write_all(&connect).await.expect("second connect");
        let mut rest = buf.to_vec();
        rest.extend(read_to_close(&mut raw).await);
        assert_eq!(rest, goodbye, "after {connect:02x?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn qos2_messages_count_against_receive_maximum_until_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "receive_maximum = 2").await;
    let mut raw = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = BytesMut::new();
    raw.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 1, b'r',
    ])
    .await
    .expect("connect");
    read_packet(&mut raw, &mut buf, &[0x20]).await;
    let publish = |pkid: u8| [0x34, 7, 0, 1, b'q', 0, pkid, 0, b'x'];

    for pkid in [1, 2] {
        raw.write_all(&publish(pkid)).await.expect("publish");
        let pubrec = read_packet(&mut raw, &mut buf, &[0x50]).await;
        assert_eq!(pubrec[3], pkid);
    }
    // Releasing one makes room for one more.
    raw.write_all(&[0x62, 2, 0, 1]).await.expect("pubrel");
    assert_eq!(
        read_packet(&mut raw, &mut buf, &[0x70]).await,
        [0x70, 2, 0, 1]
    );
    raw.write_all(&publish(3)).await.expect("publish");
    assert_eq!(read_packet(&mut raw, &mut buf, &[0x50]).await[3], 3);
    // Two await PUBREL: a third is one too many.
    raw.write_all(&publish(4)).await.expect("publish");
    let goodbye = read_packet(&mut raw, &mut buf, &[0xE0]).await;
    assert_eq!(goodbye[2], 0x93, "Receive Maximum exceeded: {goodbye:?}");
    // The server reads on for a while after its goodbye: a client still
    // answering earlier packets is not reset before it reads the reason.
    for pkid in [2, 3] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        raw.write_all(&[0x62, 2, 0, pkid])
            .await
            .expect("the server still reads");
    }
    drop(raw);
    server.stop().await;
}

#[tokio::test]
async fn acl_and_passwords_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = tidewire_auth::hash_password("s3cret").expect("hash");
    let config = format!(
        "allow_anonymous = false\n[[users]]\nusername = \"dev\"\npassword_hash = \"{hash}\"\npublish = [\"dev/#\"]\nsubscribe = [\"cmd/dev/#\"]\n\n[[users]]\nusername = \"ops\"\npassword_hash = \"{hash}\"\n"
    );
    let server = TestBroker::start(dir.path(), &config).await;
    for (user, pass) in [
        (None, None),
        (Some("dev"), Some("wrong")),
        (Some("nobody"), Some("s3cret")),
    ] {
        let mut client = Client::start(server.addr, |o| {
            if let (Some(u), Some(p)) = (user, pass) {
                o.set_credentials(u, p);
            }
        });
        let refused = tokio::time::timeout(WAIT, async {
            loop {
                match client.events.recv().await {
                    Some(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => return Some(ack.code),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        assert!(
                            e.contains("refused")
                                || e.contains("Refused")
                                || e.contains("Bad")
                                || e.contains("NotAuthorized"),
                            "{e}"
                        );
                        return None;
                    }
                    None => return None,
                }
            }
        })
        .await
        .expect("answered");
        assert_ne!(
            refused,
            Some(rumqttc::ConnectReturnCode::Success),
            "{user:?}"
        );
    }
    let mut ops = Client::connect(server.addr, |o| {
        o.set_credentials("ops", "s3cret");
    })
    .await;
    ops.subscribe("#", QoS::AtLeastOnce).await;
    let mut dev = Client::connect(server.addr, |o| {
        o.set_credentials("dev", "s3cret");
    })
    .await;
    assert_eq!(
        dev.subscribe("cmd/#", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        dev.subscribe("cmd/dev/+", QoS::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    dev.publish("other/topic", QoS::AtLeastOnce, false, "denied")
        .await;
    dev.publish("dev/temp", QoS::AtLeastOnce, false, "allowed")
        .await;
    let got = ops.next_publish().await;
    assert_eq!(got.topic, "dev/temp");
    assert_eq!(server.stored_topics(), ["dev/temp"]);
    drop((ops, dev));
    server.stop().await;
}

#[tokio::test]
async fn a_second_connection_takes_the_client_id_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let same_id = |o: &mut MqttOptions| {
        *o = MqttOptions::new("twin", o.broker_address().0, o.broker_address().1);
    };
    let mut first = Client::connect(server.addr, same_id).await;
    let _second = Client::connect(server.addr, same_id).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match first.events.recv().await {
                Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the first connection was closed");
    drop(first);
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stopped_reading_can_still_be_taken_over() {
    const OPEN: &str = "tidewire_mqtt_connections";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let connect = [
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 5, b's', b't', b'a', b'l', b'l',
    ];
    let mut buf = BytesMut::new();
    // A subscriber with a small receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut stalled = socket.connect(server.addr).await.expect("connect");
    stalled.write_all(&connect).await.expect("connect");
    read_packet(&mut stalled, &mut buf, &[0x20]).await;
    stalled
        .write_all(&[0x82, 10, 0, 1, 0, 5, b'f', b'l', b'o', b'o', b'd', 0])
        .await
        .expect("subscribe");
    read_packet(&mut stalled, &mut buf, &[0x90]).await;

    // More than the socket buffers hold: the server's write to it blocks.
    let mut publisher = TcpStream::connect(server.addr).await.expect("connect");
    publisher
        .write_all(&[
            0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 3, b'p', b'u', b'b',
        ])
        .await
        .expect("connect");
    read_packet(&mut publisher, &mut BytesMut::new(), &[0x20]).await;
    let payload = vec![b'x'; 256 * 1024];
    let mut publish = vec![0x30, 0x87, 0x80, 0x10, 0, 5];
    publish.extend_from_slice(b"flood");
    publish.extend_from_slice(&payload);
    for _ in 0..64 {
        publisher.write_all(&publish).await.expect("publish");
    }
    // A PINGREQ answered means every publish before it was handled.
    publisher.write_all(&[0xC0, 0]).await.expect("ping");
    read_packet(&mut publisher, &mut BytesMut::new(), &[0xD0]).await;
    server.metric_reaches(OPEN, 2).await;

    // The client comes back on a new connection: the stuck one gives its
    // session up and closes, instead of waiting for TCP to give up.
    let mut back = TcpStream::connect(server.addr).await.expect("connect");
    back.write_all(&connect).await.expect("connect");
    read_packet(&mut back, &mut BytesMut::new(), &[0x20]).await;
    server.metric_reaches(OPEN, 2).await;
    drop((stalled, publisher, back));
    server.stop().await;
}

#[tokio::test]
async fn racing_takeovers_leave_one_connection_and_it_is_still_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    // A persistent session with a 1 s keep alive, client id "flap".
    let connect = [
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 1, 0, 4, b'f', b'l', b'a', b'p',
    ];
    let mut first = TcpStream::connect(server.addr).await.expect("connect");
    first.write_all(&connect).await.expect("write");
    let mut buf = [0u8; 16];
    let n = first.read(&mut buf).await.expect("connack");
    assert_eq!(&buf[..n], &[0x20, 2, 0, 0]);
    // Two more connections for the same client id at once: each takes the
    // session from whoever has it.
    let mut racers = Vec::new();
    for _ in 0..2 {
        let mut raw = TcpStream::connect(server.addr).await.expect("connect");
        raw.write_all(&connect).await.expect("write");
        racers.push(raw);
    }
    // Every connection ends: taken over, or, for the one left with the
    // session, closed by its keep alive once it stays silent. None is left
    // running outside the session table.
    for mut raw in std::iter::once(first).chain(racers) {
        let ended = tokio::time::timeout(WAIT, async {
            let mut buf = [0u8; 64];
            loop {
                match raw.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "a connection outlived takeover and keep alive"
        );
    }
    server.stop().await;
}

/// Reads whole MQTT packets from a raw stream until one starts with a
/// first byte in `want`; returns it.
async fn read_packet(
    raw: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    want: &[u8],
) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        loop {
            // Fixed header: type byte, then a varint remaining length.
            let mut len = 0;
            let mut header = None;
            for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
                len |= usize::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    header = Some(i + 2);
                    break;
                }
            }
            if let Some(header) = header
                && buf.len() >= header + len
            {
                let packet = buf.split_to(header + len).to_vec();
                if want.contains(&packet[0]) {
                    return packet;
                }
                continue;
            }
            assert!(raw.read_buf(buf).await.expect("read") > 0, "closed");
        }
    })
    .await
    .expect("timed out waiting for a packet")
}

/// Reads until the peer closes; returns what came before.
async fn read_to_close(raw: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    rest
}

#[tokio::test]
async fn quiet_connections_park_and_wake_for_input_messages_takeover_and_shutdown() {
    const PARKED: &str = "tidewire_mqtt_connections_parked";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start(dir.path(), "").await;
    let mut buf = BytesMut::new();

    // A 3.1.1 subscriber without keep alive ("sub") goes quiet and parks.
    let mut sub = TcpStream::connect(server.addr).await.expect("connect");
    sub.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 3, b's', b'u', b'b',
    ])
    .await
    .expect("connect");
    read_packet(&mut sub, &mut buf, &[0x20]).await;
    sub.write_all(&[0x82, 8, 0, 1, 0, 3, b'p', b'/', b'#', 1])
        .await
        .expect("subscribe");
    assert_eq!(
        read_packet(&mut sub, &mut buf, &[0x90]).await,
        [0x90, 3, 0, 1, 1]
    );
    server.metric_reaches(PARKED, 1).await;

    // A message for it brings it back, and it parks again once quiet.
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    publisher
        .publish("p/1", QoS::AtLeastOnce, false, "wake")
        .await;
    let publish = read_packet(&mut sub, &mut buf, &[0x32]).await;
    assert!(publish.ends_with(b"p/1\0\x01wake"), "{publish:?}");
    sub.write_all(&[0x40, 2, 0, 1]).await.expect("puback");
    drop(publisher);
    server.metric_reaches(PARKED, 1).await;

    // Input wakes it: a PINGREQ is answered.
    sub.write_all(&[0xC0, 0]).await.expect("pingreq");
    assert_eq!(read_packet(&mut sub, &mut buf, &[0xD0]).await, [0xD0, 0]);
    server.metric_reaches(PARKED, 1).await;

    // Takeover of a parked connection closes it.
    let mut twin = TcpStream::connect(server.addr).await.expect("connect");
    twin.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 3, b's', b'u', b'b',
    ])
    .await
    .expect("connect");
    read_to_close(&mut sub).await;

    // A parked MQTT 5 connection hears the server shut down.
    let mut twin_buf = BytesMut::new();
    read_packet(&mut twin, &mut twin_buf, &[0x20]).await;
    server.metric_reaches(PARKED, 1).await;
    let mut v5 = TcpStream::connect(server.addr).await.expect("connect");
    v5.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 2, b'v', b'5',
    ])
    .await
    .expect("connect");
    let mut v5_buf = BytesMut::new();
    read_packet(&mut v5, &mut v5_buf, &[0x20]).await;
    server.metric_reaches(PARKED, 2).await;
    server.shutdown.cancel();
    let goodbye = read_to_close(&mut v5).await;
    assert_eq!(
        (goodbye.first(), goodbye.get(2)),
        (Some(&0xE0), Some(&0x8B)),
        "{goodbye:?}"
    );
    read_to_close(&mut twin).await;
    server.task.await.expect("mqtt task");
    server.broker.streams().close().await;
}

fn testdata(name: &str) -> String {
    format!("{}/../tls/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A TLS client that trusts the test CA.
fn tls_connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(testdata("ca.pem")).expect("test CA");
    roots.add(ca).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A 3.1.1 PUBLISH at QoS 1 with packet id 1.
fn qos1_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(payload);
    let mut packet = vec![0x32];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn quiet_tls_connections_park_and_serve_on_when_woken() {
    const PARKED: &str = "tidewire_mqtt_connections_parked";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestBroker::start_tls(dir.path(), "").await;
    let tls_addr = server.tls_addr.expect("a TLS listener");
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut sub = tls_connector()
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut buf = BytesMut::new();

    // A 3.1.1 subscriber without keep alive goes quiet and parks.
    sub.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 3, b's', b'u', b'b',
    ])
    .await
    .expect("connect");
    sub.flush().await.expect("flush");
    read_packet(&mut sub, &mut buf, &[0x20]).await;
    sub.write_all(&[0x82, 8, 0, 1, 0, 3, b'p', b'/', b'#', 1])
        .await
        .expect("subscribe");
    sub.flush().await.expect("flush");
    assert_eq!(
        read_packet(&mut sub, &mut buf, &[0x90]).await,
        [0x90, 3, 0, 1, 1]
    );
    server.metric_reaches(PARKED, 1).await;

    // A message for it brings it back, and it parks again once quiet.
    let mut publisher = Client::connect(server.addr, |_| {}).await;
    publisher
        .publish("p/1", QoS::AtLeastOnce, false, "wake")
        .await;
    let publish = read_packet(&mut sub, &mut buf, &[0x32]).await;
    assert!(publish.ends_with(b"p/1\0\x01wake"), "{publish:?}");
    sub.write_all(&[0x40, 2, 0, 1]).await.expect("puback");
    sub.flush().await.expect("flush");
    drop(publisher);
    server.metric_reaches(PARKED, 1).await;

    // Input wakes it: a PINGREQ is answered.
    sub.write_all(&[0xC0, 0]).await.expect("pingreq");
    sub.flush().await.expect("flush");
    assert_eq!(read_packet(&mut sub, &mut buf, &[0xD0]).await, [0xD0, 0]);
    server.metric_reaches(PARKED, 1).await;

    // A publish of many TLS records while parked: acknowledged, stored,
    // and delivered back to this subscriber whole.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    sub.write_all(&qos1_publish("p/big", &payload))
        .await
        .expect("publish");
    sub.flush().await.expect("flush");
    // The PUBACK and the delivery, in either order.
    let mut answers = [
        read_packet(&mut sub, &mut buf, &[0x32, 0x40]).await,
        read_packet(&mut sub, &mut buf, &[0x32, 0x40]).await,
    ];
    answers.sort_by_key(|packet| packet[0]);
    assert!(
        answers[0].ends_with(&payload),
        "the payload came back whole"
    );
    assert_eq!(answers[1], [0x40, 2, 0, 1]);
    assert!(server.stored_topics().contains(&"p/big".to_owned()));
    server.metric_reaches(PARKED, 1).await;

    // A parked TLS connection hears the server shut down, and its stream
    // ends cleanly.
    server.shutdown.cancel();
    read_to_close(&mut sub).await;
    server.task.await.expect("mqtt task");
    server.broker.streams().close().await;
}

mod v5 {
    //! MQTT 5 behaviour, with rumqttc's v5 client.

    use super::*;
    use rumqttc::v5::mqttbytes::QoS as Qos5;
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties, SubscribeProperties};
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    async fn client(
        addr: SocketAddr,
        id: &str,
    ) -> (Client5, mpsc::UnboundedReceiver<Packet>, JoinHandle<()>) {
        let options = Options5::new(id, addr.ip().to_string(), addr.port());
        let (client, mut eventloop) = Client5::new(options, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event5::Incoming(packet) = event
                    && tx.send(packet).is_err()
                {
                    return;
                }
            }
        });
        (client, rx, poller)
    }

    async fn next(
        rx: &mut mpsc::UnboundedReceiver<Packet>,
        want: impl Fn(&Packet) -> bool,
    ) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                let packet = rx.recv().await.expect("client running");
                if want(&packet) {
                    return packet;
                }
            }
        })
        .await
        .expect("timed out")
    }

    #[tokio::test]
    async fn properties_travel_end_to_end_and_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestBroker::start(dir.path(), "").await;
        let (sub, mut sub_rx, _p1) = client(server.addr, "v5-sub").await;
        sub.subscribe_with_properties(
            "props/#",
            Qos5::AtLeastOnce,
            SubscribeProperties {
                id: Some(42),
                user_properties: vec![],
            },
        )
        .await
        .expect("subscribe");
        next(&mut sub_rx, |p| matches!(p, Packet::SubAck(..))).await;
        let (publisher, mut pub_rx, _p2) = client(server.addr, "v5-pub").await;
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"corr-1")),
            user_properties: vec![
                ("site".into(), "north".into()),
                ("site".into(), "dup-ok".into()),
            ],
            content_type: Some("application/json".into()),
            ..PublishProperties::default()
        };
        publisher
            .publish_with_properties(
                "props/a",
                Qos5::AtLeastOnce,
                false,
                "{\"t\":1}",
                props.clone(),
            )
            .await
            .expect("publish");
        next(&mut pub_rx, |p| matches!(p, Packet::PubAck(..))).await;
        let Packet::Publish(got) = next(&mut sub_rx, |p| matches!(p, Packet::Publish(..))).await
        else {
            unreachable!()
        };
        let got_props = got.properties.expect("properties");
        assert_eq!(got_props.user_properties, props.user_properties);
        assert_eq!(got_props.content_type, props.content_type);
        assert_eq!(got_props.response_topic, props.response_topic);
        assert_eq!(got_props.correlation_data, props.correlation_data);
        assert_eq!(got_props.payload_format_indicator, Some(1));
        assert_eq!(got_props.subscription_identifiers, vec![42]);
        assert!(
            got_props
                .message_expiry_interval
                .is_some_and(|s| s <= 3600 && s > 3500)
        );

        let stream = server.broker.streams().get("events").expect("stream");
        let record = stream.log.scan(0..1).next().expect("record").expect("ok");
        assert_eq!(record.message.properties.user, props.user_properties);
        assert_eq!(
            record.message.properties.content_type.as_deref(),
            Some("application/json")
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn no_local_suppresses_own_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestBroker::start(dir.path(), "").await;
        let (me, mut rx, _p) = client(server.addr, "v5-self").await;
        let mut filter = Filter::new("echo/#", Qos5::AtLeastOnce);
        filter.nolocal = true;
        me.subscribe_many([filter, Filter::new("loud/#", Qos5::AtLeastOnce)])
            .await
            .expect("subscribe");
        next(&mut rx, |p| matches!(p, Packet::SubAck(..))).await;
        me.publish("echo/1", Qos5::AtLeastOnce, false, "quiet")
            .await
            .expect("publish");
        me.publish("loud/1", Qos5::AtLeastOnce, false, "heard")
            .await
            .expect("publish");
        let Packet::Publish(got) = next(&mut rx, |p| matches!(p, Packet::Publish(..))).await else {
            unreachable!()
        };
        assert_eq!(got.topic, Bytes::from("loud/1"));
        server.stop().await;
    }

    #[tokio::test]
    async fn oversize_publish_gets_a_v5_disconnect_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestBroker::start(dir.path(), "max_packet_bytes = \"1KiB\"").await;
        let mut raw = TcpStream::connect(server.addr).await.expect("connect");
        let codec = Codec::new(Version::V5, 1 << 20);
        let mut out = BytesMut::new();
        let connect = rumqttd::protocol::Packet::Connect(
            rumqttd::protocol::Connect {
                keep_alive: 60,
                client_id: "big".into(),
                clean_session: true,
            },
            None,
            None,
            None,
            None,
        );
        codec.encode(connect, &mut out).expect("encode");
        let big = tidewire_mqtt::codec::OutgoingPublish {
            topic: b"t",
            payload: &[7; 4096],
            qos: 1,
            pkid: 1,
            dup: false,
            retain: false,
        }
        .packet();
        codec
            .encode(rumqttd::protocol::Packet::Publish(big, None), &mut out)
            .expect("encode");
        raw.write_all(&out).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, raw.read_to_end(&mut answer))
            .await
            .expect("closed")
            .ok();
        // CONNACK, then DISCONNECT with reason 0x95 (packet too large).
        let disconnect = answer
            .iter()
            .position(|b| *b == 0xE0)
            .expect("a DISCONNECT");
        assert_eq!(answer.get(disconnect + 2), Some(&0x95), "{answer:?}");
        assert!(server.stored_topics().is_empty());
        server.stop().await;
    }
}
