//! The run-time catalog against the real binary: a stream created through
//! the API takes MQTT publishes, answers SQL, survives SIGKILL, and once
//! deleted leaves no files, table or metrics behind; bad definitions,
//! changes to config streams and deletions of streams in use are refused
//! with a clear 4xx that changes nothing; a damaged catalog file stops the
//! start and names itself.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::json;

use super::*;

/// `method path` with an optional JSON body: status and JSON (`null` for
/// an empty body).
pub(super) async fn call(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = api.client();
    let url = api.url(path);
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PATCH" => client.patch(url),
        "DELETE" => client.delete(url),
        other => panic!("no {other} here"),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (status, json)
}

async fn sql(api: &Api, query: &str) -> (u16, Value) {
    api.post_json("/api/v1/sql", json!({ "sql": query }))
        .await
        .expect("sql")
}

/// Publishes `payloads` to `topic` over MQTT at QoS 1 and waits for every
/// PUBACK.
pub(super) async fn publish_mqtt(addr: std::net::SocketAddr, topic: &str, payloads: &[String]) {
    let mut options = MqttOptions::new("catalog-test", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 100);
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queue publish");
    }
    let mut acked = 0;
    while acked < payloads.len() {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("PUBACK in time")
            .expect("connection")
        {
            Event::Incoming(Incoming::PubAck(_)) => acked += 1,
            _ => continue,
        }
    }
    client.disconnect().await.expect("disconnect");
}

/// The binary on the defaults, with its data under `dir`.
async fn start(dir: &Path) -> (tidewire_harness::Broker, Api) {
    let broker = Launch::new(BIN, dir.join("data"))
        .start()
        .await
        .expect("start");
    let api = Api::new(broker.http_url());
    (broker, api)
}

fn stream_names(list: &Value) -> Vec<&str> {
    list["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn a_stream_created_through_the_api_survives_sigkill_and_leaves_nothing_once_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let broker = Launch::new(BIN, &data).start().await.expect("start");
    let api = Api::new(broker.http_url());

    let definition = json!({
        "name": "sensors",
        "filters": ["sensors/#"],
        "retention": { "max_age": "7d" },
        "schema": { "temp": { "type": "double" } },
    });
    let response = api
        .client()
        .post(api.url("/api/v1/streams"))
        .json(&definition)
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        "/api/v1/streams/sensors",
        "Location"
    );
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["origin"], "api");
    assert_eq!(created["filters"], json!(["sensors/#"]));
    assert_eq!(created["retention"]["max_age_ms"], 7 * 86_400_000u64);
    assert_eq!(created["schema"][0]["name"], "temp");

    let payloads: Vec<String> = (1..=5).map(|i| format!("{{\"temp\":{i}.5}}")).collect();
    publish_mqtt(broker.mqtt_addr(), "sensors/a", &payloads).await;
    let (status, body) = sql(
        &api,
        "SELECT count(*) AS n, sum(temp) AS total FROM sensors",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[5, 17.5]]));

    let launch = broker.kill().await.expect("SIGKILL");
    let broker = launch.start().await.expect("restart");
    let api = Api::new(broker.http_url());
    let (status, stream) = api.get("/api/v1/streams/sensors").await.expect("get");
    assert_eq!(status, 200, "{stream}");
    assert_eq!(stream["origin"], "api");
    assert_eq!(stream["stats"]["messages"], 5);
    assert_eq!(stream["retention"]["max_age_ms"], 7 * 86_400_000u64);
    let (status, body) = sql(&api, "SELECT sum(temp) FROM sensors").await;
    assert_eq!((status, &body["rows"]), (200, &json!([[17.5]])), "{body}");
    let (_, events) = api.get("/api/v1/streams/events").await.expect("events");
    assert_eq!(events["origin"], "config");
    assert_eq!(events["stats"]["messages"], 5, "events keeps `#` too");

    let (status, body) = call(&api, "DELETE", "/api/v1/streams/sensors", None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = api.get("/api/v1/streams/sensors").await.expect("get");
    assert_eq!(status, 404);
    let (status, body) = sql(&api, "SELECT count(*) FROM sensors").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("sensors"),
        "{body}"
    );
    assert!(!data.join("streams/sensors").exists(), "files are gone");
    let metrics = api.metrics().await.expect("metrics");
    assert!(!metrics.contains("stream=\"sensors\""), "{metrics}");
    let (_, events) = api.get("/api/v1/streams/events").await.expect("events");
    assert_eq!(events["stats"]["messages"], 5, "other streams untouched");

    // A publish to its topics now lands only where other filters match.
    let (status, body) = api
        .publish("sensors/a", "qos=1", "6")
        .await
        .expect("publish");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"].as_array().expect("stored").len(), 1);
    assert_eq!(body["stored"][0]["stream"], "events");

    let (status, launch) = broker.terminate().await.expect("SIGTERM");
    assert!(status.success());
    let broker = launch.start().await.expect("restart");
    let api = Api::new(broker.http_url());
    let (_, list) = api.get("/api/v1/streams").await.expect("list");
    assert_eq!(stream_names(&list), ["events"]);

    // The name is free again, and the new stream starts empty.
    let (status, body) = api
        .post_json("/api/v1/streams", json!({ "name": "sensors" }))
        .await
        .expect("create again");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stats"]["messages"], 0);
}

#[tokio::test]
async fn bad_definitions_and_forbidden_changes_get_a_4xx_that_names_why_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, api) = start(dir.path()).await;

    let bad_posts = [
        (json!({ "name": "events" }), 409, "exists"),
        (json!({ "name": "EVENTS" }), 409, "exists"),
        (json!({ "name": "9lives" }), 400, "name"),
        (json!({ "name": "../etc" }), 400, "name"),
        (json!({ "filters": ["#"] }), 400, "missing field `name`"),
        (
            json!({ "name": "s", "filters": ["a/#/b"] }),
            400,
            "filters[0]",
        ),
        (json!({ "name": "s", "filters": [] }), 400, "filters"),
        (
            json!({ "name": "s", "retention": { "max_age": "0s" } }),
            400,
            "retention.max_age",
        ),
        (
            json!({ "name": "s", "retention": { "max_age": "soon" } }),
            400,
            "retention.max_age",
        ),
        (
            json!({ "name": "s", "segment_bytes": "lots" }),
            400,
            "segment_bytes",
        ),
        (
            json!({ "name": "s", "retention": { "max_bytes": 0 } }),
            400,
            "retention.max_bytes",
        ),
        (json!({ "name": "s", "fsync": "sometimes" }), 400, "fsync"),
        (json!({ "name": "s", "fsnyc": "always" }), 400, "fsnyc"),
        (
            json!({ "name": "s", "schema": { "ts": { "type": "bigint" } } }),
            400,
            "schema.ts",
        ),
        (json!(["s"]), 400, "invalid definition"),
    ];
    for (body, status, needle) in bad_posts {
        let (got, answer) = call(&api, "POST", "/api/v1/streams", Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let error = answer["error"].as_str().expect("error text");
        assert!(error.contains(needle), "{body} -> {error}");
    }
    let not_json = api
        .client()
        .post(api.url("/api/v1/streams"))
        .body("name = \"s\"")
        .send()
        .await
        .expect("post");
    assert_eq!(not_json.status(), 400);
    let huge = api
        .client()
        .post(api.url("/api/v1/streams"))
        .body(vec![b' '; 65 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), 413);

    let (status, body) = call(
        &api,
        "PATCH",
        "/api/v1/streams/events",
        Some(json!({ "filters": ["x/#"] })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("config file")
    );
    let (status, body) = call(&api, "DELETE", "/api/v1/streams/events", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = call(&api, "DELETE", "/api/v1/streams/nope", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&api, "PATCH", "/api/v1/streams/nope", Some(json!({}))).await;
    assert_eq!(status, 404);

    // A stream the API made: a bad change is refused whole.
    let (status, _) = api
        .post_json(
            "/api/v1/streams",
            json!({ "name": "s", "filters": ["a/#"] }),
        )
        .await
        .expect("create");
    assert_eq!(status, 201);
    for (patch, needle) in [
        (json!({ "filters": ["b/#", "a/#/x"] }), "filters[1]"),
        (
            json!({ "filters": ["b/#"], "retention": { "max_age": "0s" } }),
            "retention.max_age",
        ),
        (json!({ "fsync": "never" }), "unknown field `fsync`"),
        (json!({ "name": "t" }), "unknown field `name`"),
    ] {
        let (status, body) = call(&api, "PATCH", "/api/v1/streams/s", Some(patch.clone())).await;
        assert_eq!(status, 400, "{patch} -> {body}");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains(needle), "{patch} -> {error}");
    }
    let (_, stream) = api.get("/api/v1/streams/s").await.expect("get");
    assert_eq!(stream["filters"], json!(["a/#"]));
    assert_eq!(stream["retention"]["max_age_ms"], 86_400_000u64);

    // A good change: new filters route the next publish; null lifts a limit.
    let (status, body) = call(
        &api,
        "PATCH",
        "/api/v1/streams/s",
        Some(json!({ "filters": ["b/#"], "retention": { "max_age": null, "max_bytes": "1MiB" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filters"], json!(["b/#"]));
    assert_eq!(body["retention"]["max_age_ms"], Value::Null);
    assert_eq!(body["retention"]["max_bytes"], 1024 * 1024);
    for topic in ["a/1", "b/1"] {
        let (status, body) = api.publish(topic, "qos=1", "x").await.expect("publish");
        assert_eq!(status, 200, "{body}");
    }
    let records = api.read_all("s").await.expect("read");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["topic"], "b/1");

    let (_, list) = api.get("/api/v1/streams").await.expect("list");
    assert_eq!(stream_names(&list), ["events", "s"]);
}

#[tokio::test]
async fn a_stream_that_a_continuous_query_reads_cannot_be_deleted_until_the_query_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, api) = start(dir.path()).await;
    let (status, _) = api
        .post_json("/api/v1/streams", json!({ "name": "metrics" }))
        .await
        .expect("create");
    assert_eq!(status, 201);
    let (status, body) = api
        .post_json(
            "/api/v1/queries",
            json!({ "id": "per-minute", "sql": "SELECT count(*) AS n FROM metrics", "window": "1m" }),
        )
        .await
        .expect("start query");
    assert_eq!(status, 201, "{body}");

    let (status, body) = call(&api, "DELETE", "/api/v1/streams/metrics", None).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().expect("error");
    assert!(error.contains("continuous query \"per-minute\""), "{error}");
    let (status, _) = api.get("/api/v1/streams/metrics").await.expect("get");
    assert_eq!(status, 200, "still there");

    let (status, _) = call(&api, "DELETE", "/api/v1/queries/per-minute", None).await;
    assert!(status == 200 || status == 204, "{status}");
    // The query's task lets go of the stream as it ends.
    let mut deleted = 0;
    for _ in 0..100 {
        (deleted, _) = call(&api, "DELETE", "/api/v1/streams/metrics", None).await;
        if deleted == 204 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deleted, 204);
}

#[tokio::test]
async fn a_damaged_catalog_stops_the_start_naming_the_file_and_the_config_file_wins_a_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let broker = Launch::new(BIN, &data).start().await.expect("start");
    let api = Api::new(broker.http_url());
    let (status, _) = api
        .post_json(
            "/api/v1/streams",
            json!({ "name": "lab", "filters": ["lab/#"] }),
        )
        .await
        .expect("create");
    assert_eq!(status, 201);
    let (status, _) = api
        .publish("lab/1", "qos=1", "kept")
        .await
        .expect("publish");
    assert_eq!(status, 200);
    let (_, launch) = broker.terminate().await.expect("stop");

    let catalog = data.join("catalog.json");
    let good = std::fs::read(&catalog).expect("catalog written");
    std::fs::write(&catalog, &good[..good.len() / 2]).expect("damage");
    let (status, stderr) = launch.run_to_exit().await.expect("run");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&catalog.display().to_string()) && stderr.contains("damaged"),
        "{stderr}"
    );
    assert!(data.join("streams/lab").is_dir(), "the data is untouched");

    std::fs::write(&catalog, &good).expect("restore");
    let config = dir.path().join("tidewire.toml");
    std::fs::write(
        &config,
        "[[streams]]\nname = \"events\"\n[[streams]]\nname = \"lab\"\nfilters = [\"other/#\"]\n",
    )
    .expect("config");
    let broker = Launch::new(BIN, &data)
        .args(["--config", config.to_str().expect("utf-8")])
        .start()
        .await
        .expect("start with the config naming lab");
    let api = Api::new(broker.http_url());
    let (_, lab) = api.get("/api/v1/streams/lab").await.expect("get");
    assert_eq!(lab["origin"], "config");
    assert_eq!(lab["filters"], json!(["other/#"]));
    assert_eq!(lab["stats"]["messages"], 1, "same data directory");
    assert!(
        broker
            .log()
            .contains("defined in both the config file and the catalog"),
        "{}",
        broker.log()
    );
}
