//! A topic subscription with a `nats:BRIDGE/SUBJECT` target, through the
//! real binary: what MQTT publishes into the topic reaches a NATS
//! subscriber, with its attributes as headers, in order, and what the
//! filter refuses does not.

use futures_util::StreamExt;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tidewire_harness::{Api, Launch};

use super::sigkill::tidewire_bin;
use super::*;

fn config(nats_url: &str) -> String {
    format!(
        r#"
        [[bridge.nats]]
        name = "edge"
        url = "{nats_url}"
        reconnect_min = "50ms"
        reconnect_max = "500ms"

        [[topics]]
        name = "alerts"
        from = ["alerts/#"]

        [[topics.subscriptions]]
        name = "to-nats"
        target = "nats:edge/ops.alerts"
        filter = {{ severity = ["high"] }}
        max_in_flight = 1
        "#
    )
}

/// Publishes `body` to the topic directly, with a `severity` attribute.
async fn publish_http(api: &Api, body: &str, severity: &str) {
    let url = api.url(&format!(
        "/api/v1/topics/alerts/publish?attr.severity={severity}"
    ));
    let response = api
        .client()
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_delivers_through_the_nats_bridge() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("tidewire.toml");
    std::fs::write(&config_file, config(&server.url())).expect("config");
    let broker = Launch::new(tidewire_bin(), dir.path().join("data"))
        .args(["--config", config_file.to_str().expect("utf-8 path")])
        .start()
        .await
        .expect("start tidewire");
    let api = Api::new(broker.http_url());
    let nats = async_nats::connect(server.url()).await.expect("connect");
    let mut inbox = nats.subscribe("ops.alerts").await.expect("subscribe");
    nats.flush().await.expect("flush");
    wait_for("the bridge to connect", || async {
        api.get("/api/v1/bridges")
            .await
            .is_ok_and(|(_, v)| v.to_string().contains("connected"))
    })
    .await;

    publish_http(&api, "disk full", "high").await;
    publish_http(&api, "all good", "low").await;
    // From MQTT too: the topic's `from` takes it, with no attributes, so
    // the filter refuses it.
    let mut options = MqttOptions::new("dev-1", "127.0.0.1", broker.mqtt_addr().port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .publish("alerts/dev-1", QoS::AtLeastOnce, false, "no severity")
        .await
        .expect("queue");
    loop {
        let event = tokio::time::timeout(PATIENCE, events.poll()).await;
        if let Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) = event {
            break;
        }
    }
    publish_http(&api, "cpu hot", "high").await;

    let mut got = Vec::new();
    while got.len() < 2 {
        let message = tokio::time::timeout(PATIENCE, inbox.next())
            .await
            .expect("a message in time")
            .expect("subscription open");
        let severity = message
            .headers
            .as_ref()
            .and_then(|h| h.get("severity"))
            .map(|v| v.as_str().to_owned());
        assert_eq!(severity.as_deref(), Some("high"));
        got.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    assert_eq!(got, ["disk full", "cpu hot"]);
    let (_, sub) = api
        .get("/api/v1/topics/alerts/subscriptions/to-nats")
        .await
        .expect("status");
    assert_eq!(sub["stats"]["lost"], 0);
    broker.terminate().await.expect("stop");
}
