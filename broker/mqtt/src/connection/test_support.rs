//! The fixture the connection module's unit tests share: a real
//! [`Context`] (streams, retained store, session table and fan-out over a
//! temporary directory, but no listener), CONNECT packets, and an accepted
//! connection over an in-memory stream instead of a socket.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rumqttd::protocol::{Connect, ConnectProperties};
use tempfile::TempDir;
use tidewire_core::{Broker, Limits, Message, PublishMetrics, StreamConfig, Streams};
use tidewire_storage::StorageMetrics;
use tokio::io::DuplexStream;

use super::context::{ConnectionSlot, Context};
use super::handshake::{Accepted, accept};
use super::packet_loop::Connection;
use crate::codec::{Codec, Version};
use crate::config::MqttConfig;
use crate::fanout::MqttFanout;
use crate::metrics::{MqttMetrics, ReasonLabel};
use crate::retained::RetainedStore;
use crate::router::Router;
use crate::session::Delivery;
use crate::sessions::SessionTable;

/// A context over a temporary data directory, removed on drop.
pub(super) struct TestContext {
    pub(super) ctx: Arc<Context>,
    _dir: TempDir,
}

impl TestContext {
    /// A context with the `[mqtt]` settings in `mqtt_toml`. Call it on a
    /// runtime: the context starts its parking lot there.
    pub(super) fn new(mqtt_toml: &str) -> TestContext {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut registry = Registry::default();
        let storage_metrics = StorageMetrics::register(&mut registry);
        let spec = StreamConfig::default_stream()
            .validate("streams[0]")
            .expect("valid stream");
        let streams = Streams::open(dir.path(), vec![spec], &storage_metrics, Arc::new(|_| {}))
            .expect("open streams");
        let broker = Broker::new(
            streams,
            Limits::default(),
            PublishMetrics::register(&mut registry),
        );
        let config: MqttConfig = toml::from_str(mqtt_toml).expect("mqtt config");
        let auth = config.standalone_auth().expect("valid auth");
        let settings = config
            .validate(Some("127.0.0.1:0".parse().expect("address")), auth, None)
            .expect("valid mqtt config");
        let metrics = MqttMetrics::register(&mut registry);
        let retained = Arc::new(
            RetainedStore::open(
                &dir.path().join("mqtt"),
                &storage_metrics,
                metrics.clone(),
                Arc::new(|_| {}),
            )
            .expect("open retained store"),
        );
        let router = Arc::new(Router::default());
        let sessions = Arc::new(SessionTable::new(
            Arc::clone(&router),
            settings.max_queued_messages,
            metrics.clone(),
            dir.path().join("mqtt").join("sessions.json"),
        ));
        broker.set_fanout(Arc::new(MqttFanout::new(
            Arc::clone(&router),
            Arc::clone(&retained),
        )));
        let ctx = Arc::new(Context::new(
            broker, router, sessions, retained, settings, metrics,
        ));
        TestContext { ctx, _dir: dir }
    }

    /// Answers `connect` as the handshake would, on a fresh slot: the
    /// accepted connection, if any, the slot when it was refused, and the
    /// CONNACK written.
    pub(super) async fn accept(
        &self,
        version: Version,
        connect: Connect,
        props: Option<ConnectProperties>,
    ) -> (Option<Accepted>, Option<ConnectionSlot>, BytesMut) {
        let mut slot = Some(ConnectionSlot::for_test(&self.ctx).expect("a free slot"));
        let codec = Codec::new(version, self.ctx.settings.max_packet_bytes);
        let mut out = BytesMut::new();
        let accepted = accept(
            &mut slot, &codec, connect, props, None, None, None, &mut out,
        )
        .await;
        (accepted, slot, out)
    }

    /// An accepted connection for `client_id` (clean start) on one end of
    /// an in-memory stream; the other end is the client's. Nothing came
    /// after CONNECT, so the connection counts as quiet.
    pub(super) async fn connection(
        &self,
        version: Version,
        client_id: &str,
    ) -> (Box<Connection<DuplexStream>>, DuplexStream) {
        self.connection_with(version, connect(client_id, true), None)
            .await
    }

    /// [`TestContext::connection`] for `connect` with `props`.
    pub(super) async fn connection_with(
        &self,
        version: Version,
        connect: Connect,
        props: Option<ConnectProperties>,
    ) -> (Box<Connection<DuplexStream>>, DuplexStream) {
        let (accepted, _, out) = self.accept(version, connect, props).await;
        assert_eq!(connack(&out).1, 0, "accepted");
        let accepted = accepted.expect("accepted");
        let (server, client) = tokio::io::duplex(64 * 1024);
        (Connection::start(server, BytesMut::new(), accepted), client)
    }
}

/// A CONNECT with keep alive 0.
pub(super) fn connect(client_id: &str, clean_session: bool) -> Connect {
    Connect {
        keep_alive: 0,
        client_id: client_id.to_owned(),
        clean_session,
    }
}

/// The session-present flag and return (or reason) code of the CONNACK
/// at the start of `out`.
pub(super) fn connack(out: &[u8]) -> (bool, u8) {
    assert!(out.len() >= 4, "a CONNACK: {out:?}");
    assert_eq!(out[0], 0x20, "a CONNACK: {out:?}");
    assert!(out[1] < 0x80, "a short CONNACK: {out:?}");
    (out[2] & 1 == 1, out[3])
}

/// The count in `family` for `reason`.
pub(super) fn count(family: &Family<ReasonLabel, Counter>, reason: &'static str) -> u64 {
    family.get_or_create(&ReasonLabel { reason }).get()
}

/// A message on `topic` for a subscriber, at `qos`.
pub(super) fn delivery(topic: &str, qos: u8) -> Delivery {
    Delivery {
        message: Arc::new(Message {
            topic: topic.into(),
            client_id: "elsewhere".into(),
            qos,
            payload: Bytes::from_static(b"on"),
            ..Message::default()
        }),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        expires_at: None,
    }
}
