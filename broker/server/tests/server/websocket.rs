//! The WebSocket gateway against the real binary: the `/ws` JSON protocol
//! (round trip, acks, filters, queries, watches, bad frames, auth, a slow
//! consumer, shutdown) and MQTT over `/mqtt` with packets split across and
//! packed into WebSocket messages.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};
use tidewire_harness::Broker;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const FRAME_WAIT: Duration = Duration::from_secs(15);

/// A WebSocket request for `/mqtt` with the `mqtt` subprotocol.
pub(super) fn mqtt_ws_request(broker: &Broker) -> tungstenite::handshake::client::Request {
    let mut request = ws_url(broker, "/mqtt")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    request
}

pub(super) fn ws_url(broker: &Broker, path: &str) -> String {
    format!(
        "{}{path}",
        broker.http_url().replacen("http://", "ws://", 1)
    )
}

pub(super) async fn connect(broker: &Broker) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(broker, "/ws"))
        .await
        .expect("connect /ws");
    ws
}

pub(super) async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send a frame");
}

/// The next text frame, as JSON.
pub(super) async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame readable");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("frames are JSON");
        }
    }
}

/// Reads until the server's close frame; its code (`None` when the
/// connection ended without one).
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// The next frame of `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn json_protocol_round_trip_acks_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "").await;
    let mut ws = connect(&broker).await;
    send(
        &mut ws,
        json!({"op":"subscribe","id":"s1","filter":"sensors/+/temp"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"ack","id":"s1","op":"subscribe"})
    );

    // QoS 1: acknowledged once durable, with where it was stored.
    send(
        &mut ws,
        json!({"op":"publish","id":7,"topic":"sensors/a/temp","payload":{"t":21.5},"qos":1}),
    )
    .await;
    let mut ack = None;
    let mut message = None;
    while ack.is_none() || message.is_none() {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("ack") => ack = Some(frame),
            Some("message") => message = Some(frame),
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
    }
    let ack = ack.expect("ack");
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["stored"][0]["stream"], "events");
    assert_eq!(ack["stored"][0]["offset"], 0);
    let message = message.expect("message");
    assert_eq!(message["topic"], "sensors/a/temp");
    assert_eq!(message["payload"], json!({"t":21.5}), "JSON stays JSON");
    assert!(message["ts"].as_i64().expect("ts") > 1_600_000_000_000);

    // A topic outside the filter is not delivered; text and binary
    // payloads travel as a string and as base64.
    send(
        &mut ws,
        json!({"op":"publish","topic":"sensors/a/humidity","payload":"nope"}),
    )
    .await;
    send(
        &mut ws,
        json!({"op":"publish","topic":"sensors/b/temp","payload":"warm"}),
    )
    .await;
    send(
        &mut ws,
        json!({"op":"publish","topic":"sensors/c/temp","payload":"/wA=","encoding":"base64"}),
    )
    .await;
    let text = next_of(&mut ws, "message").await;
    assert_eq!(
        (&text["topic"], &text["payload"]),
        (&json!("sensors/b/temp"), &json!("warm"))
    );
    let binary = next_of(&mut ws, "message").await;
    assert_eq!(binary["encoding"], "base64");
    assert_eq!(binary["payload"], "/wA=");

    // Other ingest paths reach the socket: HTTP and MQTT.
    let api = Api::new(broker.http_url());
    let (status, _) = api
        .publish("sensors/http/temp", "qos=1", b"{\"t\":1}".to_vec())
        .await
        .expect("HTTP publish");
    assert_eq!(status, 200);
    assert_eq!(
        next_of(&mut ws, "message").await["topic"],
        "sensors/http/temp"
    );
    let addr = broker.mqtt_addr();
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("ws-test-pub", addr.ip().to_string(), addr.port()),
        10,
    );
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish("sensors/mqtt/temp", QoS::AtLeastOnce, false, "7")
        .await
        .expect("MQTT publish");
    let from_mqtt = next_of(&mut ws, "message").await;
    assert_eq!(
        (&from_mqtt["topic"], &from_mqtt["payload"]),
        (&json!("sensors/mqtt/temp"), &json!(7))
    );

    // Unsubscribed: nothing more arrives; the socket still answers.
    send(
        &mut ws,
        json!({"op":"unsubscribe","id":"u","filter":"sensors/+/temp"}),
    )
    .await;
    assert_eq!(next_of(&mut ws, "ack").await["id"], "u");
    send(
        &mut ws,
        json!({"op":"publish","topic":"sensors/z/temp","payload":1,"qos":1,"id":"last"}),
    )
    .await;
    send(&mut ws, json!({"op":"ping","id":"p"})).await;
    let mut seen = Vec::new();
    while seen.last() != Some(&json!("pong")) {
        seen.push(next_json(&mut ws).await["type"].clone());
    }
    assert_eq!(
        seen,
        [json!("ack"), json!("pong")],
        "no message after unsubscribe"
    );

    // Everything published above is in the stream, in order.
    let records = api.read_all("events").await.expect("records");
    assert_eq!(records.len(), 7);
    assert_eq!(
        records[0]["client_id"]
            .as_str()
            .map(|c| c.starts_with("$ws/")),
        Some(true)
    );
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "[websocket]\nmax_frame_bytes = \"64KiB\"\n").await;
    let mut ws = connect(&broker).await;
    let bad = [
        (json!("not an object"), None),
        (json!({"op":"launch","id":1}), Some(json!(1))),
        (
            json!({"op":"subscribe","id":2,"filter":"a/#/b"}),
            Some(json!(2)),
        ),
        (
            json!({"op":"subscribe","id":3,"fliter":"a"}),
            Some(json!(3)),
        ),
        (
            json!({"op":"publish","id":4,"topic":"a/+","payload":1}),
            Some(json!(4)),
        ),
        (
            json!({"op":"publish","id":5,"topic":"a","payload":1,"qos":2}),
            Some(json!(5)),
        ),
        (
            json!({"op":"publish","id":6,"topic":"a","payload":"%%","encoding":"base64"}),
            Some(json!(6)),
        ),
        (
            json!({"op":"query","id":7,"sql":"SELEC nonsense"}),
            Some(json!(7)),
        ),
        (
            json!({"op":"query","id":8,"sql":"DROP TABLE events"}),
            Some(json!(8)),
        ),
        (
            json!({"op":"watch","id":9,"sql":"SELECT count(*) FROM nowhere"}),
            Some(json!(9)),
        ),
        (
            json!({"op":"watch","id":10,"query":"no-such-query"}),
            Some(json!(10)),
        ),
        (json!({"op":"unwatch","id":11}), Some(json!(11))),
    ];
    for (frame, id) in bad {
        send(&mut ws, frame.clone()).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error", "{frame} -> {reply}");
        assert_eq!(
            reply.get("id").cloned().unwrap_or(Value::Null),
            id.unwrap_or(Value::Null),
            "{frame} -> {reply}"
        );
        assert!(!reply["error"].as_str().unwrap_or_default().is_empty());
    }
    ws.send(Message::Text("{\"op\":".into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws).await["type"], "error");
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws).await["type"], "error");
    send(&mut ws, json!({"op":"ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type":"pong"}));
    assert!(metric(&broker, "tidewire_ws_errors_total").await >= 12.0);

    // Publishing to a $ topic is refused; the socket carries on.
    send(
        &mut ws,
        json!({"op":"publish","id":12,"topic":"$SYS/x","payload":1,"qos":1}),
    )
    .await;
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], 12, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("reserved")),
        "{refused}"
    );

    // A frame over the limit breaks the protocol: close 1009, server fine.
    let huge = "x".repeat(100 * 1024);
    let _ = ws.send(Message::Text(huge.into())).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    assert!(metric(&broker, "tidewire_ws_closed_total{kind=\"too_big\"}").await >= 1.0);
    let (status, _) = Api::new(broker.http_url())
        .get("/healthz")
        .await
        .expect("healthz");
    assert_eq!(status, 200);
    let mut again = connect(&broker).await;
    send(&mut again, json!({"op":"ping","id":1})).await;
    assert_eq!(next_json(&mut again).await["type"], "pong");
}

#[tokio::test]
async fn queries_and_watches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "").await;
    let api = Api::new(broker.http_url());
    for i in 0..3 {
        let body = format!("{{\"device\":\"d{i}\",\"temp\":{}}}", 20 + i);
        api.publish("demo/t", "qos=1", body.into_bytes())
            .await
            .expect("publish");
    }
    let mut ws = connect(&broker).await;
    send(&mut ws, json!({"op":"query","id":"q","sql":"SELECT count(*) AS n, max(json_get_int(payload, 'temp')) AS hottest FROM events"})).await;
    let result = next_of(&mut ws, "result").await;
    assert_eq!(result["id"], "q");
    assert_eq!(result["columns"][0]["name"], "n");
    assert_eq!(result["rows"], json!([[3, 22]]));

    // A watch of a new continuous query: windows arrive as they close.
    send(
        &mut ws,
        json!({"op":"watch","id":"w","sql":"SELECT count(*) AS n FROM events","window":"1s"}),
    )
    .await;
    api.publish("demo/t", "qos=1", b"{}".to_vec())
        .await
        .expect("publish");
    let window = next_of(&mut ws, "result").await;
    assert_eq!(window["id"], "w");
    assert!(window["window_end"].as_i64() > window["window_start"].as_i64());
    assert!(window["rows"][0]["n"].is_number(), "{window}");
    let listed = api.get("/api/v1/queries").await.expect("list").1;
    assert_eq!(
        listed["queries"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    send(&mut ws, json!({"op":"unwatch","id":"w"})).await;
    let _ = next_of(&mut ws, "ack").await;
    let listed = api.get("/api/v1/queries").await.expect("list").1;
    assert_eq!(
        listed["queries"],
        json!([]),
        "the socket's query stops with its watch"
    );

    // A watch of a configured query, and the socket's queries stop when it
    // closes.
    let (status, body) = api
        .post_json(
            "/api/v1/queries",
            json!({"id":"n","sql":"SELECT count(*) AS n FROM events","window":"1s"}),
        )
        .await
        .expect("create query");
    assert_eq!(status, 201, "{body}");
    send(&mut ws, json!({"op":"watch","id":1,"query":"n"})).await;
    let window = next_of(&mut ws, "result").await;
    assert_eq!((&window["id"], &window["query"]), (&json!(1), &json!("n")));
    send(
        &mut ws,
        json!({"op":"watch","id":"mine","sql":"SELECT 1 AS one FROM events","window":"1s"}),
    )
    .await;
    while next_of(&mut ws, "result").await["id"] != "mine" {}
    drop(ws);
    let mut listed = Value::Null;
    for _ in 0..50 {
        listed = api.get("/api/v1/queries").await.expect("list").1["queries"].take();
        if listed.as_array().map(Vec::len) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed[0]["definition"]["id"], "n", "{listed}");
}

#[tokio::test]
async fn credentials_and_acls_are_mqtts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = tidewire_auth::hash_password("s3cret").expect("hash");
    let config = format!(
        "[mqtt]\nallow_anonymous = false\n[[mqtt.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\npublish = [\"alice/#\"]\nsubscribe = [\"alice/#\"]\n"
    );
    let broker = start_with(dir.path(), &config).await;
    let refused = |url: String, basic: Option<&'static str>| async move {
        let mut request = url.into_client_request().expect("request");
        if let Some(b) = basic {
            request
                .headers_mut()
                .insert("authorization", HeaderValue::from_static(b));
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => 101,
        }
    };
    assert_eq!(
        refused(ws_url(&broker, "/ws"), None).await,
        401,
        "anonymous"
    );
    assert_eq!(
        refused(ws_url(&broker, "/ws?username=alice&password=nope"), None).await,
        401
    );
    // "alice:nope" and "alice:s3cret".
    assert_eq!(
        refused(ws_url(&broker, "/ws"), Some("Basic YWxpY2U6bm9wZQ==")).await,
        401
    );
    assert_eq!(
        refused(ws_url(&broker, "/ws"), Some("Basic YWxpY2U6czNjcmV0")).await,
        101
    );
    assert!(metric(&broker, "tidewire_ws_refused_total").await >= 3.0);

    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_url(&broker, "/ws?username=alice&password=s3cret"))
            .await
            .expect("alice connects");
    send(&mut ws, json!({"op":"subscribe","id":1,"filter":"bob/#"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "error");
    send(
        &mut ws,
        json!({"op":"publish","id":2,"topic":"bob/x","payload":1,"qos":1}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "error");
    send(&mut ws, json!({"op":"subscribe","id":3,"filter":"alice/#"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "ack");
    send(
        &mut ws,
        json!({"op":"publish","id":4,"topic":"alice/x","payload":1,"qos":1}),
    )
    .await;
    let _ = next_of(&mut ws, "message").await;
    // Alice has no `sql` permission: queries are refused, by stream.
    send(
        &mut ws,
        json!({"op":"query","id":5,"sql":"SELECT count(*) FROM events"}),
    )
    .await;
    let refused = next_of(&mut ws, "error").await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("sql permission")),
        "{refused}"
    );
}

#[tokio::test]
async fn a_token_on_the_query_string_reads_what_it_may_over_ws() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = tidewire_auth::hash_password("tok-1").expect("hash");
    let config = format!(
        "[auth]\nallow_anonymous = false\n\
         [[streams]]\nname = \"events\"\n[[streams]]\nname = \"secret\"\nfilters = [\"s/#\"]\n\
         [[tokens]]\nname = \"board\"\ntoken_hash = \"{hash}\"\nsql = [\"events\"]\n"
    );
    let broker = start_with(dir.path(), &config).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&broker, "/ws?token=tok-1"))
        .await
        .expect("the token opens the socket");
    send(
        &mut ws,
        json!({"op":"query","id":1,"sql":"SELECT count(*) AS n FROM events"}),
    )
    .await;
    assert_eq!(next_of(&mut ws, "result").await["id"], 1);
    send(
        &mut ws,
        json!({"op":"query","id":2,"sql":"SELECT count(*) FROM secret"}),
    )
    .await;
    let refused = next_of(&mut ws, "error").await;
    assert_eq!(refused["id"], 2, "{refused}");
    assert!(
        tokio_tungstenite::connect_async(ws_url(&broker, "/ws?token=tok-2"))
            .await
            .is_err(),
        "a wrong token is refused"
    );
    // /mqtt is MQTT: no anonymous CONNECT without credentials there either.
    let mut request = ws_url(&broker, "/mqtt")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let (mut mqtt, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ];
    mqtt.send(tungstenite::Message::Binary(connect.to_vec().into()))
        .await
        .expect("send CONNECT");
    let connack = loop {
        match mqtt.next().await.expect("an answer").expect("frame") {
            tungstenite::Message::Binary(bytes) => break bytes,
            _ => continue,
        }
    };
    assert_eq!(connack[0], 0x20, "a CONNACK");
    assert_ne!(connack[3], 0x00, "refused: anonymous is off");
}

#[tokio::test]
async fn a_slow_consumer_loses_only_its_own_messages_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "[websocket]\nsend_queue = 16\n").await;
    // This one subscribes and never reads.
    let mut stalled = connect(&broker).await;
    send(
        &mut stalled,
        json!({"op":"subscribe","id":1,"filter":"flood/#"}),
    )
    .await;
    let mut reader = connect(&broker).await;
    send(
        &mut reader,
        json!({"op":"subscribe","id":1,"filter":"flood/done"}),
    )
    .await;
    assert_eq!(next_json(&mut reader).await["type"], "ack");

    let addr = broker.mqtt_addr();
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("flooder", addr.ip().to_string(), addr.port()),
        100,
    );
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let payload = vec![b'x'; 4096];
    for _ in 0..5000 {
        client
            .publish("flood/data", QoS::AtMostOnce, false, payload.clone())
            .await
            .expect("publish");
    }
    client
        .publish("flood/done", QoS::AtLeastOnce, false, "done")
        .await
        .expect("publish");
    assert_eq!(next_of(&mut reader, "message").await["topic"], "flood/done");
    let dropped = metric(
        &broker,
        "tidewire_mqtt_messages_dropped_total{reason=\"queue_full_qos0\",transport=\"ws_json\"}",
    )
    .await;
    assert!(dropped > 0.0, "the stalled socket's overflow is counted");
    drop(stalled);
}

#[tokio::test]
async fn sigterm_closes_sockets_with_going_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "").await;
    let mut ws = connect(&broker).await;
    send(&mut ws, json!({"op":"subscribe","id":1,"filter":"#"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "ack");
    let (status, _) = broker.terminate().await.expect("terminate");
    assert!(status.success(), "{status:?}");
    let mut code = None;
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Close(Some(close)) = frame {
            code = Some(close.code);
        }
    }
    assert_eq!(code, Some(CloseCode::Away));
}

/// MQTT 3.1.1 CONNECT for client `ws` with keepalive 60 s.
const CONNECT: [u8; 16] = [
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'w', b's',
];
/// SUBSCRIBE (packet id 1) to `t/#` at QoS 0.
const SUBSCRIBE: [u8; 10] = [0x82, 8, 0, 1, 0, 3, b't', b'/', b'#', 0];
/// PUBLISH QoS 0 to `t/a` with payload `hi`.
const PUBLISH: [u8; 9] = [0x30, 7, 0, 3, b't', b'/', b'a', b'h', b'i'];

#[tokio::test]
async fn mqtt_over_websocket_with_packets_split_and_packed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "").await;
    let (mut ws, response) = tokio_tungstenite::connect_async(mqtt_ws_request(&broker))
        .await
        .expect("connect /mqtt");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"mqtt"[..])
    );
    // CONNECT split across two messages; SUBSCRIBE and PUBLISH in one.
    ws.send(Message::Binary(CONNECT[..5].to_vec().into()))
        .await
        .expect("send");
    ws.send(Message::Binary(CONNECT[5..].to_vec().into()))
        .await
        .expect("send");
    let mut packed = SUBSCRIBE.to_vec();
    packed.extend_from_slice(&PUBLISH);
    ws.send(Message::Binary(packed.into())).await.expect("send");

    let mut received = Vec::new();
    let expected = [&[0x20, 2, 0, 0][..], &[0x90, 3, 0, 1, 0][..], &PUBLISH[..]].concat();
    while received.len() < expected.len() {
        let next = tokio::time::timeout(FRAME_WAIT, ws.next()).await;
        match next.unwrap_or_else(|_| panic!("timed out; got {received:?}")) {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    assert_eq!(received, expected, "CONNACK, SUBACK, then our own PUBLISH");
    assert!(metric(&broker, "tidewire_ws_connections{endpoint=\"mqtt\"}").await >= 1.0);

    // A text message breaks MQTT over WebSocket: the connection ends.
    ws.send(Message::Text("hello".into())).await.expect("send");
    let ended = tokio::time::timeout(FRAME_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the server closes the connection");
}

#[tokio::test]
async fn an_oversize_mqtt_over_websocket_message_closes_with_1009() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Messages may hold two of the largest packets: 2 KiB here.
    let broker = start_with(dir.path(), "[mqtt]\nmax_packet_bytes = \"1KiB\"\n").await;
    for connect_first in [false, true] {
        let (mut ws, _) = tokio_tungstenite::connect_async(mqtt_ws_request(&broker))
            .await
            .expect("connect /mqtt");
        if connect_first {
            ws.send(Message::Binary(CONNECT.to_vec().into()))
                .await
                .expect("send");
            let connack = tokio::time::timeout(FRAME_WAIT, ws.next()).await;
            assert!(
                matches!(connack, Ok(Some(Ok(Message::Binary(ref data)))) if data[..] == [0x20, 2, 0, 0]),
                "{connack:?}"
            );
        }
        let _ = ws.send(Message::Binary(vec![0x30; 3 * 1024].into())).await;
        assert_eq!(
            close_code(&mut ws).await,
            Some(CloseCode::Size),
            "after CONNECT: {connect_first}"
        );
    }
}

#[tokio::test]
async fn sockets_over_the_cap_get_503_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "[websocket]\nmax_sockets = 1\n").await;
    let first = connect(&broker).await;
    match tokio_tungstenite::connect_async(ws_url(&broker, "/ws")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(ws_url(&broker, "/ws")).await {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = reopened.expect("a slot frees when the first socket closes");
    send(&mut ws, json!({"op":"ping","id":1})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    // A client's close is answered: the closing handshake completes.
    ws.close(None).await.expect("send close");
    let answer = tokio::time::timeout(FRAME_WAIT, ws.next())
        .await
        .expect("an answer in time");
    assert!(matches!(answer, Some(Ok(Message::Close(_)))), "{answer:?}");
}
