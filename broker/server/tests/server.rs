//! The real `tidewire` binary over real sockets and files: durability across
//! SIGKILL, recovery from damaged segments, graceful shutdown, config and
//! data-directory errors, and the HTTP API's answers to good and bad input.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use tidewire_harness::{Api, Launch};

const BIN: &str = env!("CARGO_BIN_EXE_tidewire");

/// Starts the binary with its data under `dir` and `config` (TOML) as its
/// config file.
async fn start_with(dir: &Path, config: &str) -> tidewire_harness::Broker {
    let path = dir.join("tidewire.toml");
    std::fs::write(&path, config).expect("write config");
    Launch::new(BIN, dir.join("data"))
        .args(["--config", path.to_str().expect("utf-8 path")])
        .start()
        .await
        .expect("start")
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn payload(i: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let len = 1 + (x % 300) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn decoded(record: &Value) -> Vec<u8> {
    assert_eq!(record["encoding"], "base64");
    BASE64
        .decode(record["payload"].as_str().expect("payload"))
        .expect("base64")
}

async fn publish_many(api: &Api, n: usize) {
    for i in 0..n {
        let (status, body) = api
            .publish(&format!("dev/{}/data", i % 5), "qos=1", payload(i))
            .await
            .expect("publish");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["stored"][0]["offset"], i as u64);
    }
}

fn assert_prefix_of_published(records: &[Value]) {
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["offset"], i as u64);
        assert_eq!(record["topic"], format!("dev/{}/data", i % 5));
        assert_eq!(record["qos"], 1);
        assert_eq!(decoded(record), payload(i), "record {i}");
    }
}

#[tokio::test]
async fn acknowledged_publishes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Launch::new(BIN, dir.path().join("data"))
        .start()
        .await
        .expect("start");
    let api = Api::new(broker.http_url());
    publish_many(&api, 300).await;
    let launch = broker.kill().await.expect("kill");

    let broker = launch.start().await.expect("restart");
    let api = Api::new(broker.http_url());
    let records = api.read_all("events").await.expect("read");
    assert_eq!(records.len(), 300);
    assert_prefix_of_published(&records);
    // Offsets continue after the restart.
    let (status, body) = api
        .publish("after/restart", "", "x")
        .await
        .expect("publish");
    assert_eq!(status, 200);
    assert_eq!(body["stored"][0]["offset"], 300);
}

/// The segment files of the `events` stream, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data.join("streams/events"))
        .expect("stream dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// Where each frame of a segment ends, up to the zeros the writer keeps
/// ahead of the records (a killed broker leaves them).
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 16;
    while pos + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        pos += 8 + len;
        ends.push(pos);
    }
    ends
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn damaged_last_segment_recovers_the_intact_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine");
    let broker = Launch::new(BIN, &pristine).start().await.expect("start");
    publish_many(&Api::new(broker.http_url()), 120).await;
    broker.kill().await.expect("kill");
    let segment = segments(&pristine).pop().expect("a segment");
    let bytes = std::fs::read(&segment).expect("read");
    let ends = frame_ends(&bytes);
    assert_eq!(ends.len(), 120);

    // Cuts and flips at spread-out points of the records, including inside
    // the header, at frame boundaries and in the middle of frames.
    let records_len = ends[119];
    assert!(bytes[records_len..].iter().all(|&b| b == 0));
    let mut damages: Vec<(&str, usize)> = Vec::new();
    for k in 0..8 {
        let at = 5 + k * (records_len - 10) / 8;
        damages.push(("truncate", at));
        damages.push(("flip", at));
    }
    damages.push(("truncate", ends[59]));
    damages.push(("flip", ends[59] + 3));
    for (n, (kind, at)) in damages.into_iter().enumerate() {
        let data = dir.path().join(format!("case{n}"));
        copy_dir(&pristine, &data);
        let target = data
            .join("streams/events")
            .join(segment.file_name().expect("name"));
        let mut damaged = bytes.clone();
        match kind {
            "truncate" => damaged.truncate(at),
            _ => damaged[at] ^= 0x20,
        }
        std::fs::write(&target, &damaged).expect("damage");

        let broker = Launch::new(BIN, &data)
            .start()
            .await
            .expect("restart after damage");
        let api = Api::new(broker.http_url());
        let records = api.read_all("events").await.expect("read");
        let intact = ends.iter().filter(|&&end| end <= at).count();
        assert!(
            records.len() >= intact && records.len() <= 120,
            "{kind} at {at}: {} records, {intact} intact before the damage",
            records.len()
        );
        assert_prefix_of_published(&records);
        let (status, body) = api.publish("after/damage", "", "x").await.expect("publish");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["stored"][0]["offset"], records.len() as u64);
        broker.kill().await.expect("kill");
    }
}

#[tokio::test]
async fn sigterm_drains_syncs_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Launch::new(BIN, dir.path().join("data"))
        .start()
        .await
        .expect("start");
    publish_many(&Api::new(broker.http_url()), 20).await;
    let (status, launch) = broker.terminate().await.expect("terminate");
    assert!(status.success(), "exit status {status}");
    let broker = launch.start().await.expect("restart");
    let log = broker.log();
    assert!(
        log.contains("all streams, topics and queues synced and closed"),
        "{log}"
    );
    assert!(
        !log.contains("truncating"),
        "a clean stop leaves no torn tail: {log}"
    );
    let records = Api::new(broker.http_url())
        .read_all("events")
        .await
        .expect("read");
    assert_eq!(records.len(), 20);
}

#[tokio::test]
async fn bad_data_directories_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let (status, stderr) = Launch::new(BIN, &file).run_to_exit().await.expect("run");
    assert!(!status.success());
    assert!(stderr.contains("not a directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (status, stderr) = Launch::new(BIN, "").run_to_exit().await.expect("run");
    assert!(!status.success());
    assert!(stderr.contains("--data-dir"), "{stderr}");

    // sysfs refuses new files even to root, like a read-only mount.
    let (status, stderr) = Launch::new(BIN, "/sys/kernel")
        .run_to_exit()
        .await
        .expect("run");
    assert!(!status.success());
    assert!(stderr.contains("/sys/kernel"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A second broker on the same directory is refused.
    let data = dir.path().join("data");
    let _first = Launch::new(BIN, &data).start().await.expect("start");
    let (status, stderr) = Launch::new(BIN, &data).run_to_exit().await.expect("run");
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another tidewire process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn config_errors_name_key_and_file_and_check_config_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[streams]]\nname = \"s\"\nfsnyc = \"always\"\n").expect("write");
    let launch =
        Launch::new(BIN, dir.path().join("data")).args(["--config", bad.to_str().expect("utf8")]);
    let (status, stderr) = launch.run_to_exit().await.expect("run");
    assert!(!status.success());
    assert!(
        stderr.contains("bad.toml") && stderr.contains("fsnyc"),
        "{stderr}"
    );

    let check = std::process::Command::new(BIN)
        .args(["check-config", bad.to_str().expect("utf8")])
        .output()
        .expect("check-config");
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("fsnyc"));

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[streams]]\nname = \"sensors\"\nfilters = [\"sensors/#\"]\n\n[[streams]]\nname = \"all\"\n",
    )
    .expect("write");
    let check = std::process::Command::new(BIN)
        .args(["check-config", good.to_str().expect("utf8")])
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok (2 streams)"));

    let invalid_value = dir.path().join("value.toml");
    std::fs::write(&invalid_value, "[[streams]]\nname = \"../escape\"\n").expect("write");
    let check = std::process::Command::new(BIN)
        .args(["check-config", invalid_value.to_str().expect("utf8")])
        .output()
        .expect("check-config");
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("value.toml") && stderr.contains("streams[0].name"),
        "{stderr}"
    );
}

#[tokio::test]
async fn environment_applies_and_flags_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tidewire.toml");
    std::fs::write(&config, "[[streams]]\nname = \"fromfile\"\n").expect("write");
    let mut launch = Launch::new(BIN, dir.path().join("data"));
    launch
        .env
        .push(("TIDEWIRE_CONFIG".into(), config.display().to_string()));
    // The harness passes --data-dir and --http-listen flags; the env values
    // for those must lose.
    launch
        .env
        .push(("TIDEWIRE_DATA_DIR".into(), "/nonexistent/env-dir".into()));
    // An address of TEST-NET-1, which cannot be bound here.
    launch
        .env
        .push(("TIDEWIRE_HTTP_LISTEN".into(), "192.0.2.1:8080".into()));
    let broker = launch.start().await.expect("start");
    let (status, body) = Api::new(broker.http_url())
        .get("/api/v1/streams")
        .await
        .expect("get");
    assert_eq!(status, 200);
    assert_eq!(body["streams"][0]["name"], "fromfile");
    assert!(dir.path().join("data/streams/fromfile").is_dir());
}

#[tokio::test]
async fn streams_keep_what_their_filters_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(
        dir.path(),
        r#"
[[streams]]
name = "sensors"
filters = ["sensors/#"]

[[streams]]
name = "alerts"
filters = ["+/alert", "alerts/#"]
fsync = "interval:20"
retention = { max_age = "1h", max_bytes = "100MiB" }
"#,
    )
    .await;
    let api = Api::new(broker.http_url());
    let (_, body) = api
        .publish("sensors/alert", "", "both")
        .await
        .expect("publish");
    let mut stored: Vec<&str> = body["stored"]
        .as_array()
        .expect("stored")
        .iter()
        .map(|s| s["stream"].as_str().expect("name"))
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, ["alerts", "sensors"]);
    let (_, body) = api
        .publish("other/topic", "", "none")
        .await
        .expect("publish");
    assert_eq!(body["stored"], serde_json::json!([]));
    api.publish("alerts/fire", "retain=true&qos=2", "{\"level\":3}")
        .await
        .expect("publish");

    let (status, view) = api.get("/api/v1/streams/alerts").await.expect("get");
    assert_eq!(status, 200);
    assert_eq!(view["fsync"], "interval:20");
    assert_eq!(view["retention"]["max_age_ms"], 3_600_000);
    assert_eq!(view["stats"]["messages"], 2);
    assert_eq!(view["stats"]["first_offset"], 0);
    assert_eq!(view["stats"]["last_offset"], 1);
    let (_, records) = api
        .get("/api/v1/streams/alerts/records?from=offset:1")
        .await
        .expect("get");
    let record = &records["records"][0];
    assert_eq!(record["topic"], "alerts/fire");
    assert_eq!(record["retain"], true);
    assert_eq!(record["qos"], 2);
    assert_eq!(record["encoding"], "json");
    assert_eq!(record["payload"]["level"], 3);
    assert_eq!(records["next_offset"], 2);
    let (_, sensors) = api.get("/api/v1/streams/sensors").await.expect("get");
    assert_eq!(sensors["stats"]["messages"], 1);
}

#[tokio::test]
async fn bad_http_input_gets_clear_errors_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(
        dir.path(),
        "[limits]\nmax_payload_bytes = \"1KiB\"\nmax_topic_bytes = 64\n",
    )
    .await;
    let api = Api::new(broker.http_url());
    api.publish("ok/topic", "", "kept").await.expect("publish");

    let cases: Vec<(String, &str, Vec<u8>, u16, &str)> = vec![
        ("big".into(), "", vec![b'x'; 1025], 413, "limit"),
        ("a/%23".into(), "", b"x".to_vec(), 400, "wildcard"),
        ("a/+/b".into(), "", b"x".to_vec(), 400, "wildcard"),
        ("t".repeat(65), "", b"x".to_vec(), 400, "limit of 64"),
        ("ok".into(), "qos=3", b"x".to_vec(), 400, "qos"),
        ("ok".into(), "qos=high", b"x".to_vec(), 400, "qos"),
        ("ok".into(), "retain=maybe", b"x".to_vec(), 400, "retain"),
        ("ok".into(), "colour=blue", b"x".to_vec(), 400, "colour"),
        ("a/%zz".into(), "", b"x".to_vec(), 400, "percent-escape"),
        ("a/b%".into(), "", b"x".to_vec(), 400, "percent-escape"),
        ("a/%4".into(), "", b"x".to_vec(), 400, "percent-escape"),
        ("a/%C3%28".into(), "", b"x".to_vec(), 400, "UTF-8"),
        ("$SYS/x".into(), "", b"x".to_vec(), 400, "reserved"),
        ("%24SYS/x".into(), "", b"x".to_vec(), 400, "reserved"),
        ("$share/g/t".into(), "", b"x".to_vec(), 400, "reserved"),
    ];
    for (topic, query, body, status, text) in cases {
        let (got, answer) = api.publish(&topic, query, body).await.expect("publish");
        assert_eq!(got, status, "{topic}?{query}: {answer}");
        let error = answer["error"].as_str().expect("error text");
        assert!(error.contains(text), "{topic}?{query}: {error}");
    }
    let exactly_limit = api
        .publish("fits", "", vec![b'y'; 1024])
        .await
        .expect("publish");
    assert_eq!(exactly_limit.0, 200);
    // Valid escapes decode: this is the topic `a b/%`.
    let escaped = api.publish("a%20b/%25", "", "z").await.expect("publish");
    assert_eq!(escaped.0, 200, "{}", escaped.1);
    assert_eq!(escaped.1["topic"], "a b/%");

    let reads = [
        (
            "/api/v1/streams/events/records?from=yesterday",
            400,
            "invalid from",
        ),
        (
            "/api/v1/streams/events/records?from=offset:99",
            400,
            "past the end",
        ),
        ("/api/v1/streams/events/records?limit=0", 400, "limit"),
        ("/api/v1/streams/events/records?limit=100000", 400, "limit"),
        ("/api/v1/streams/events/records?limit=-1", 400, "limit"),
        (
            "/api/v1/streams/events/records?wait_ms=999999",
            400,
            "wait_ms",
        ),
        (
            "/api/v1/streams/events/records?encoding=hex",
            400,
            "encoding",
        ),
        ("/api/v1/streams/nope/records", 404, "no stream"),
        ("/api/v1/streams/..%2F..%2Fetc", 404, "no stream"),
        ("/api/v1/nothing", 404, "no such endpoint"),
    ];
    for (path, status, text) in reads {
        let (got, answer) = api.get(path).await.expect("get");
        assert_eq!(got, status, "{path}: {answer}");
        assert!(
            answer["error"].as_str().expect("error").contains(text),
            "{path}: {answer}"
        );
    }

    let records = api.read_all("events").await.expect("read");
    let topics: Vec<&str> = records
        .iter()
        .map(|r| r["topic"].as_str().expect("topic"))
        .collect();
    assert_eq!(
        topics,
        ["ok/topic", "fits", "a b/%"],
        "rejected input stored nothing"
    );
    let metrics = api.metrics().await.expect("metrics");
    assert!(
        metrics.contains(
            "tidewire_publish_rejected_messages_total{source=\"http\",reason=\"payload_too_large\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidewire_stream_records_total{stream=\"events\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidewire_stream_append_latency_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn records_read_by_time_latest_and_long_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Launch::new(BIN, dir.path().join("data"))
        .start()
        .await
        .expect("start");
    let api = Api::new(broker.http_url());
    for i in 0..5 {
        api.publish("t", "", format!("{i}")).await.expect("publish");
    }
    let (_, all) = api
        .get("/api/v1/streams/events/records")
        .await
        .expect("get");
    let third = &all["records"][2];
    let time = third["time"].as_str().expect("time");
    let (status, from_time) = api
        .get(&format!(
            "/api/v1/streams/events/records?from=time:{time}&limit=1"
        ))
        .await
        .expect("get");
    assert_eq!(status, 200, "{from_time}");
    let first_at = from_time["records"][0]["offset"].as_u64().expect("offset");
    assert!(first_at <= 2, "the first record at or after {time}");
    assert_eq!(
        from_time["records"][0]["ts"].as_i64(),
        all["records"][first_at as usize]["ts"].as_i64()
    );
    assert_eq!(from_time["next_offset"], first_at + 1);

    let (_, latest) = api
        .get("/api/v1/streams/events/records?from=latest")
        .await
        .expect("get");
    assert_eq!(latest["records"], serde_json::json!([]));
    assert_eq!(latest["next_offset"], 5);

    let poller = {
        let api = api.clone();
        tokio::spawn(async move {
            api.get("/api/v1/streams/events/records?from=offset:5&wait_ms=20000")
                .await
                .expect("long poll")
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    api.publish("late", "", "arrived").await.expect("publish");
    let (status, polled) = poller.await.expect("join");
    assert_eq!(status, 200);
    assert_eq!(polled["records"][0]["payload"], "arrived");
    assert_eq!(polled["records"][0]["encoding"], "utf8");
    assert_eq!(polled["next_offset"], 6);

    let (status, health) = api.get("/healthz").await.expect("health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn demo_devices_publish_sensor_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Launch::new(BIN, dir.path().join("data"))
        .args(["--demo"])
        .start()
        .await
        .expect("start");
    let api = Api::new(broker.http_url());
    let sql = json_sql(
        "SELECT count(DISTINCT topic) AS devices, min(json_get_float(payload, 'temp')) AS t FROM events WHERE topic LIKE 'demo/sensors/%'",
    );
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = api
            .post_json("/api/v1/sql", sql.clone())
            .await
            .expect("sql");
        assert_eq!(status, 200, "{body}");
        last = body["rows"][0].clone();
        if last[0] == 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last[0], 8, "eight devices publish: {last}");
    assert!(
        last[1].as_f64().is_some_and(|t| (0.0..40.0).contains(&t)),
        "{last}"
    );
}

fn json_sql(sql: &str) -> Value {
    serde_json::json!({ "sql": sql })
}

mod mqtt {
    //! MQTT against the real binary: acknowledged publishes survive SIGKILL,
    //! and HTTP publishes reach MQTT subscribers.

    use std::collections::{HashMap, HashSet, VecDeque};
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};

    use super::*;

    fn options(id: &str, addr: std::net::SocketAddr) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(100);
        o
    }

    #[tokio::test]
    async fn every_puback_survives_sigkill_mid_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Launch::new(BIN, dir.path().join("data"))
            .start()
            .await
            .expect("start");
        let (client, mut events) =
            AsyncClient::new(options("crash-publisher", broker.mqtt_addr()), 1000);
        let publisher = tokio::spawn(async move {
            for seq in 0..1_000_000u64 {
                if client
                    .publish("crash/test", QoS::AtLeastOnce, false, seq.to_string())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        // Publishes go out in order, so the n-th outgoing PUBLISH carries
        // sequence n; its packet id maps the PUBACK back to it.
        let mut next_seq = 0u64;
        let mut in_flight: HashMap<u16, u64> = HashMap::new();
        let mut acked: HashSet<u64> = HashSet::new();
        let mut killed = None;
        loop {
            let event = match events.poll().await {
                Ok(event) => event,
                Err(_) => break, // the broker is gone
            };
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    in_flight.insert(pkid, next_seq);
                    next_seq += 1;
                }
                Event::Incoming(Incoming::PubAck(ack)) => {
                    if let Some(seq) = in_flight.remove(&ack.pkid) {
                        acked.insert(seq);
                    }
                }
                _ => {}
            }
            if acked.len() >= 2000 && killed.is_none() {
                // SIGKILL while hundreds of publishes are still in flight.
                killed = Some(
                    std::process::Command::new("kill")
                        .arg("-KILL")
                        .arg(broker.pid().to_string())
                        .status(),
                );
            }
        }
        publisher.abort();
        assert!(
            killed.is_some_and(|s| s.is_ok_and(|s| s.success())),
            "the broker was killed"
        );
        let launch = broker.kill().await.expect("reap");
        let broker = launch.start().await.expect("restart");
        let stored: HashSet<u64> = Api::new(broker.http_url())
            .read_all("events")
            .await
            .expect("read")
            .iter()
            .map(|r| {
                String::from_utf8(decoded(r))
                    .expect("utf8")
                    .parse()
                    .expect("sequence number")
            })
            .collect();
        let lost: Vec<u64> = acked.difference(&stored).copied().collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged messages lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        assert!(acked.len() >= 2000);
    }

    #[tokio::test]
    async fn continuous_query_results_reach_an_mqtt_subscriber() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = start_with(
            dir.path(),
            "[[queries]]\nid = \"per-window\"\nsql = \"SELECT count(*) AS n FROM events WHERE topic LIKE 'meter/%'\"\nwindow = \"1s\"\npublish_topic = \"results/per-window\"\n",
        )
        .await;
        let api = Api::new(broker.http_url());
        let (client, mut events) =
            AsyncClient::new(options("results-watcher", broker.mqtt_addr()), 100);
        client
            .subscribe("results/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .expect("a window with our readings in time")
                .expect("connected");
            match event {
                Event::Incoming(Incoming::SubAck(_)) => {
                    for i in 0..3 {
                        api.publish(&format!("meter/{i}"), "qos=1", "1")
                            .await
                            .expect("publish");
                    }
                }
                Event::Incoming(Incoming::Publish(p)) => {
                    assert_eq!(p.topic, "results/per-window");
                    let row: Value = serde_json::from_slice(&p.payload).expect("JSON row");
                    assert!(
                        row["window_end"].as_i64() > row["window_start"].as_i64(),
                        "{row}"
                    );
                    if row["n"].as_i64().is_some_and(|n| n > 0) {
                        break;
                    }
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn http_publishes_reach_mqtt_subscribers_and_retain_works() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Launch::new(BIN, dir.path().join("data"))
            .start()
            .await
            .expect("start");
        let api = Api::new(broker.http_url());
        api.publish("lights/hall", "retain=true&qos=1", "on")
            .await
            .expect("publish");

        let (client, mut events) =
            AsyncClient::new(options("http-watcher", broker.mqtt_addr()), 100);
        client
            .subscribe("lights/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let mut received = VecDeque::new();
        let mut published = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while received.len() < 2 {
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .expect("messages in time")
                .expect("connected");
            match event {
                Event::Incoming(Incoming::SubAck(_)) if !published => {
                    published = true;
                    let (status, _) = api
                        .publish("lights/kitchen", "qos=1", "off")
                        .await
                        .expect("publish");
                    assert_eq!(status, 200);
                }
                Event::Incoming(Incoming::Publish(p)) => received.push_back(p),
                _ => {}
            }
        }
        let retained = received.pop_front().expect("retained");
        assert_eq!(
            (
                retained.topic.as_str(),
                &retained.payload[..],
                retained.retain
            ),
            ("lights/hall", &b"on"[..], true)
        );
        let live = received.pop_front().expect("live");
        assert_eq!(
            (live.topic.as_str(), &live.payload[..], live.retain),
            ("lights/kitchen", &b"off"[..], false)
        );
    }
}

/// The sum of the metric lines starting with `line_prefix`.
async fn metric(broker: &tidewire_harness::Broker, line_prefix: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", broker.http_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[path = "server/auth.rs"]
mod auth;
#[path = "server/catalog.rs"]
mod catalog;
#[path = "server/fuzz.rs"]
mod fuzz;
#[path = "server/hostile.rs"]
mod hostile;
#[path = "server/http.rs"]
mod http;
#[path = "server/queues.rs"]
mod queues;
#[path = "server/websocket.rs"]
mod websocket;
