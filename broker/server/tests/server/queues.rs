//! Queues against the real binary, through `/api/v1/queues`, `/ws` and
//! MQTT: visibility timeouts redeliver with rising receive counts, dead
//! letters and redrive, FIFO order and one message in flight per group
//! under concurrent consumers, deduplication across a restart, long polls,
//! MQTT publishes enqueued before their PUBACK, SIGKILL under a mixed load
//! (nothing acknowledged lost, nothing deleted back), queues created
//! through the API across restarts, permissions, and a 4xx for every bad
//! input.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::catalog::{call, publish_mqtt};
use super::websocket::{self as ws, Ws};
use super::*;

/// Queues most tests use: `jobs` (1 s visibility), `work` whose messages
/// go to `work-dlq` after two receives, and the FIFO `orders.fifo`.
const QUEUES: &str = r#"
[[queues]]
name = "jobs"
visibility_timeout = "1s"

[[queues]]
name = "work"
dead_letter = { queue = "work-dlq", max_receive_count = 2 }

[[queues]]
name = "work-dlq"

[[queues]]
name = "orders.fifo"
"#;

/// Sends `message` (a send request) to `queue`; its answer.
async fn send(api: &Api, queue: &str, message: Value) -> Value {
    let path = format!("/api/v1/queues/{queue}/messages");
    let (status, body) = call(api, "POST", &path, Some(message)).await;
    assert_eq!(status, 200, "send to {queue}: {body}");
    body
}

/// Receives from `queue` with `query` (`max=...&wait_ms=...`).
async fn receive(api: &Api, queue: &str, query: &str) -> Vec<Value> {
    let path = format!("/api/v1/queues/{queue}/receive?{query}");
    let (status, body) = call(api, "POST", &path, None).await;
    assert_eq!(status, 200, "receive from {queue}: {body}");
    body["messages"].as_array().expect("messages").clone()
}

/// Deletes by receipt handle: the status.
async fn delete(api: &Api, queue: &str, handle: &Value) -> u16 {
    let path = format!(
        "/api/v1/queues/{queue}/messages/{}",
        handle.as_str().expect("a receipt handle")
    );
    call(api, "DELETE", &path, None).await.0
}

async fn queue(api: &Api, name: &str) -> Value {
    let (status, body) = call(api, "GET", &format!("/api/v1/queues/{name}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn text(message: &Value) -> &str {
    message["body"].as_str().expect("a text body")
}

#[tokio::test]
async fn queue_visibility_expiry_redelivers_with_a_rising_receive_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), QUEUES).await;
    let api = Api::new(broker.http_url());
    let sent = send(
        &api,
        "jobs",
        json!({"body": "job-1", "attributes": {
            "kind": {"type": "String", "value": "resize"},
            "size": {"type": "Number.int", "value": "7"},
            "raw": {"type": "Binary", "value": "AAE="}}}),
    )
    .await;
    assert_eq!(sent["duplicate"], false);

    let first = receive(&api, "jobs", "max=10").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let m = &first[0];
    assert_eq!(
        (text(m), &m["message_id"], &m["receive_count"]),
        ("job-1", &sent["message_id"], &json!(1))
    );
    assert_eq!(
        m["attributes"]["size"],
        json!({"type": "Number.int", "value": "7"})
    );
    assert_eq!(
        m["attributes"]["raw"],
        json!({"type": "Binary", "value": "AAE="})
    );
    assert_eq!(m["sender"], "http");
    assert!(m["topic"].is_null() && m["first_receive_ts"].as_i64() >= m["sent_ts"].as_i64());
    assert_eq!(
        receive(&api, "jobs", "max=10").await,
        Vec::<Value>::new(),
        "hidden"
    );

    // The visibility timeout (1 s) runs out during the long poll.
    let again = receive(&api, "jobs", "wait_ms=5000").await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (&again[0]["message_id"], &again[0]["receive_count"]),
        (&m["message_id"], &json!(2))
    );
    assert_eq!(again[0]["first_receive_ts"], m["first_receive_ts"]);
    assert_eq!(
        delete(&api, "jobs", &m["receipt_handle"]).await,
        400,
        "stale"
    );

    // Visibility 0 shows it again at once.
    let (status, body) = call(
        &api,
        "POST",
        "/api/v1/queues/jobs/visibility",
        Some(json!({"receipt_handle": again[0]["receipt_handle"], "visibility_ms": 0})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let third = receive(&api, "jobs", "").await;
    assert_eq!(third[0]["receive_count"], 3);
    assert_eq!(delete(&api, "jobs", &third[0]["receipt_handle"]).await, 204);
    assert_eq!(delete(&api, "jobs", &third[0]["receipt_handle"]).await, 204);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receive(&api, "jobs", "").await.is_empty(), "deleted");
    let depth = &queue(&api, "jobs").await["depth"];
    assert_eq!(
        depth,
        &json!({"visible": 0, "in_flight": 0, "delayed": 0, "oldest_age_ms": null})
    );
}

#[tokio::test]
async fn queue_dead_letters_after_max_receive_count_and_redrive_brings_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), QUEUES).await;
    let api = Api::new(broker.http_url());
    let sent = send(&api, "work", json!({"body": "poison"})).await;
    for count in 1..=2 {
        let got = receive(&api, "work", "visibility_ms=1").await;
        assert_eq!(got[0]["receive_count"], count);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(receive(&api, "work", "").await.is_empty(), "moved away");
    let dlq = queue(&api, "work-dlq").await;
    assert_eq!(dlq["depth"]["visible"], 1, "{dlq}");
    assert_eq!(dlq["dead_letter_sources"], json!(["work"]));
    assert_eq!(queue(&api, "work").await["depth"]["visible"], 0);
    let (_, peeked) = call(&api, "GET", "/api/v1/queues/work-dlq/peek", None).await;
    let dead = &peeked["messages"][0];
    assert_eq!(
        (text(dead), &dead["message_id"]),
        ("poison", &sent["message_id"])
    );
    assert_eq!(dead["receive_count"], 2, "its history comes along");
    assert!(dead.get("receipt_handle").is_none(), "{dead}");

    let (status, started) = call(
        &api,
        "POST",
        "/api/v1/queues/work-dlq/redrive",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let task = loop {
        let (_, tasks) = call(&api, "GET", "/api/v1/queues/work-dlq/redrive", None).await;
        let task = tasks["tasks"][0].clone();
        assert_eq!(task["task"], started["task"]);
        if task["status"] != "running" || Instant::now() > deadline {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&task["status"], &task["moved"], &task["to_move"]),
        (&json!("completed"), &json!(1), &json!(1)),
        "{task}"
    );
    let back = receive(&api, "work", "").await;
    assert_eq!(
        (
            text(&back[0]),
            &back[0]["message_id"],
            &back[0]["receive_count"]
        ),
        ("poison", &sent["message_id"], &json!(1))
    );
    assert_eq!(queue(&api, "work-dlq").await["depth"]["visible"], 0);
}

/// What the FIFO consumers saw, shared between them.
#[derive(Debug, Default)]
struct FifoWatch {
    /// Which consumer holds a message of each group.
    holder: HashMap<String, usize>,
    /// The next index expected in each group.
    next: HashMap<String, u32>,
    most_held: usize,
    done: usize,
    violations: Vec<String>,
}

#[tokio::test]
async fn queue_fifo_keeps_group_order_under_eight_consumers_with_one_in_flight_per_group() {
    const GROUPS: u32 = 6;
    const PER_GROUP: u32 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), QUEUES).await;
    let api = Api::new(broker.http_url());
    let entries: Vec<Value> = (0..PER_GROUP)
        .flat_map(|i| {
            (0..GROUPS).map(move |g| {
                json!({"body": format!("g{g}:{i}"), "group": format!("g{g}"),
                       "dedup_id": format!("{g}-{i}")})
            })
        })
        .collect();
    for batch in entries.chunks(10) {
        let answer = send(&api, "orders.fifo", json!({ "messages": batch })).await;
        for result in answer["results"].as_array().expect("results") {
            assert!(result["sequence_number"].is_string(), "{result}");
        }
    }

    let total = (GROUPS * PER_GROUP) as usize;
    let watch = Arc::new(Mutex::new(FifoWatch::default()));
    let consumers: Vec<_> = (0..8)
        .map(|me| {
            let (api, watch) = (api.clone(), Arc::clone(&watch));
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(90);
                while watch.lock().expect("lock").done < total && Instant::now() < deadline {
                    let got = receive(&api, "orders.fifo", "max=10&wait_ms=200").await;
                    let mut groups = Vec::new();
                    {
                        let mut w = watch.lock().expect("lock");
                        for m in &got {
                            let (group, index) = text(m).split_once(':').expect("g:i");
                            let index: u32 = index.parse().expect("index");
                            if let Some(other) = w.holder.insert(group.to_owned(), me)
                                && other != me
                            {
                                w.violations
                                    .push(format!("{group} held by {other} and {me}"));
                            }
                            let expected = w.next.get(group).copied().unwrap_or(0);
                            if index != expected {
                                let v = format!("{group}: got {index}, expected {expected}");
                                w.violations.push(v);
                            }
                            w.next.insert(group.to_owned(), index + 1);
                            groups.push(group.to_owned());
                        }
                        w.most_held = w.most_held.max(w.holder.len());
                    }
                    // Some work, then let go of the groups before the
                    // deletes let the broker hand out their next messages.
                    tokio::time::sleep(Duration::from_millis(got.len() as u64 % 4)).await;
                    {
                        let mut w = watch.lock().expect("lock");
                        for group in &groups {
                            w.holder.remove(group);
                        }
                        w.done += got.len();
                    }
                    if got.is_empty() {
                        continue;
                    }
                    let handles: Vec<&Value> = got.iter().map(|m| &m["receipt_handle"]).collect();
                    let (status, answer) = call(
                        &api,
                        "POST",
                        "/api/v1/queues/orders.fifo/delete",
                        Some(json!({ "receipt_handles": handles })),
                    )
                    .await;
                    assert_eq!(status, 200, "{answer}");
                    for result in answer["results"].as_array().expect("results") {
                        assert_eq!(result["deleted"], true, "{result}");
                    }
                }
            })
        })
        .collect();
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    let w = watch.lock().expect("lock");
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert_eq!(w.done, total);
    assert!(w.next.values().all(|n| *n == PER_GROUP), "{:?}", w.next);
    println!(
        "FIFO: {total} messages in {GROUPS} groups, 8 consumers, at most {} groups in flight at once",
        w.most_held
    );
}

#[tokio::test]
async fn queue_fifo_deduplicates_within_the_window_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(
        dir.path(),
        "[[queues]]\nname = \"dedup.fifo\"\ncontent_based_dedup = true\n",
    )
    .await;
    let api = Api::new(broker.http_url());
    let by_id = json!({"body": "first", "group": "g", "dedup_id": "order-1"});
    let first = send(&api, "dedup.fifo", by_id).await;
    assert_eq!(first["duplicate"], false);
    let again = send(
        &api,
        "dedup.fifo",
        json!({"body": "changed", "group": "g", "dedup_id": "order-1"}),
    )
    .await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        (&again["message_id"], &again["sequence_number"]),
        (&first["message_id"], &first["sequence_number"])
    );
    let by_body = json!({"body": "same body", "group": "h"});
    let content = send(&api, "dedup.fifo", by_body.clone()).await;
    assert_eq!(content["duplicate"], false);
    let batch = send(&api, "dedup.fifo", json!({"messages": [by_body, by_body]})).await;
    for result in batch["results"].as_array().expect("results") {
        assert_eq!(
            (&result["duplicate"], &result["message_id"]),
            (&json!(true), &content["message_id"])
        );
    }

    let broker = broker
        .kill()
        .await
        .expect("SIGKILL")
        .start()
        .await
        .expect("restart");
    let api = Api::new(broker.http_url());
    let after = send(
        &api,
        "dedup.fifo",
        json!({"body": "x", "group": "g", "dedup_id": "order-1"}),
    )
    .await;
    assert_eq!(
        (&after["duplicate"], &after["message_id"]),
        (&json!(true), &first["message_id"]),
        "the window survives a restart (by id)"
    );
    let after = send(
        &api,
        "dedup.fifo",
        json!({"body": "same body", "group": "h"}),
    )
    .await;
    assert_eq!(
        (&after["duplicate"], &after["message_id"]),
        (&json!(true), &content["message_id"]),
        "the window survives a restart (by content)"
    );
    let new = send(
        &api,
        "dedup.fifo",
        json!({"body": "second", "group": "g", "dedup_id": "order-2"}),
    )
    .await;
    assert_eq!(new["duplicate"], false);
    let (_, peeked) = call(&api, "GET", "/api/v1/queues/dedup.fifo/peek", None).await;
    let bodies: Vec<&str> = peeked["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(text)
        .collect();
    assert_eq!(bodies, ["first", "same body", "second"]);
}

#[tokio::test]
async fn queue_long_poll_returns_soon_after_a_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), QUEUES).await;
    let api = Api::new(broker.http_url());
    let poller = {
        let api = api.clone();
        tokio::spawn(async move {
            let messages = receive(&api, "jobs", "wait_ms=20000").await;
            (messages, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = Instant::now();
    send(&api, "jobs", json!({"body": "wake up"})).await;
    let acked = sent_at.elapsed();
    let (messages, woke) = poller.await.expect("poller");
    assert_eq!(messages.len(), 1);
    assert_eq!(text(&messages[0]), "wake up");
    println!(
        "long poll: answered {:?} after the send started (the send took {acked:?})",
        woke.duration_since(sent_at)
    );
}

#[tokio::test]
async fn queue_ops_over_ws_send_receive_and_delete_without_blocking_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), QUEUES).await;
    let api = Api::new(broker.http_url());
    let mut socket = ws::connect(&broker).await;
    let op = |op: &str, id: &str, extra: Value| {
        let mut frame = json!({"op": op, "id": id, "queue": "jobs"});
        for (k, v) in extra.as_object().expect("object") {
            frame[k] = v.clone();
        }
        frame
    };
    ws::send(
        &mut socket,
        op("queue_receive", "poll", json!({"wait_ms": 20000})),
    )
    .await;
    // The long poll does not hold up the socket.
    ws::send(&mut socket, json!({"op": "ping", "id": "p"})).await;
    assert_eq!(
        ws::next_json(&mut socket).await,
        json!({"type": "pong", "id": "p"})
    );
    let sent_at = Instant::now();
    // Written by hand: a JSON body keeps its text, spaces and all.
    let frame = r#"{"op":"queue_send","id":"s","queue":"jobs","body":{"n": [1, 2]}}"#;
    socket
        .send(Message::Text(frame.into()))
        .await
        .expect("send a frame");
    let mut answers = HashMap::new();
    while answers.len() < 2 {
        let frame = ws::next_json(&mut socket).await;
        assert_eq!(frame["type"], "result", "{frame}");
        answers.insert(frame["id"].as_str().expect("id").to_owned(), frame);
    }
    println!(
        "/ws long poll answered {:?} after the send",
        sent_at.elapsed()
    );
    let message = &answers["poll"]["messages"][0];
    assert_eq!(
        text(message),
        r#"{"n": [1, 2]}"#,
        "a JSON body is sent as its text"
    );
    assert_eq!(message["message_id"], answers["s"]["message_id"]);
    assert!(
        message["sender"]
            .as_str()
            .expect("sender")
            .starts_with("$ws/")
    );

    ws::send(
        &mut socket,
        op(
            "queue_delete",
            "d",
            json!({"receipt_handle": message["receipt_handle"]}),
        ),
    )
    .await;
    assert_eq!(
        ws::next_json(&mut socket).await,
        json!({"type": "result", "id": "d"})
    );
    ws::send(
        &mut socket,
        op("queue_delete", "d2", json!({"receipt_handle": "bogus"})),
    )
    .await;
    let bad = ws::next_json(&mut socket).await;
    assert_eq!((&bad["type"], &bad["id"]), (&json!("error"), &json!("d2")));
    assert!(
        bad["error"]
            .as_str()
            .expect("error")
            .contains("receipt handle"),
        "{bad}"
    );

    // At most four receives wait per socket.
    for i in 0..4 {
        let id = format!("w{i}");
        ws::send(
            &mut socket,
            op("queue_receive", &id, json!({"wait_ms": 20000})),
        )
        .await;
    }
    ws::send(
        &mut socket,
        op("queue_receive", "w4", json!({"wait_ms": 20000})),
    )
    .await;
    let busy = ws::next_json(&mut socket).await;
    assert_eq!(
        (&busy["type"], &busy["id"]),
        (&json!("error"), &json!("w4")),
        "{busy}"
    );
    for (frame, needle) in [
        (
            json!({"op": "queue_send", "id": 1, "queue": "nope", "body": "x"}),
            "does not exist",
        ),
        (op("queue_send", "2", json!({})), "body"),
        (op("queue_send", "3", json!({"bdoy": "x"})), "bdoy"),
        (op("queue_receive", "4", json!({"max": 11})), "max"),
        (
            op("queue_receive", "5", json!({"visibility_ms": 43_200_001})),
            "visibility_ms",
        ),
    ] {
        ws::send(&mut socket, frame.clone()).await;
        let error = ws::next_json(&mut socket).await;
        assert_eq!(error["type"], "error", "{frame} -> {error}");
        assert!(
            error["error"].as_str().expect("error").contains(needle),
            "{frame} -> {error}"
        );
    }
    // A send over HTTP wakes one of the waiting receives.
    send(&api, "jobs", json!({"body": "for a waiter"})).await;
    let woken = ws::next_json(&mut socket).await;
    assert_eq!(text(&woken["messages"][0]), "for a waiter", "{woken}");
}

#[tokio::test]
async fn queue_takes_mqtt_publishes_to_its_from_topics_durably_before_the_puback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(
        dir.path(),
        r#"
[[queues]]
name = "telemetry"
from = ["tele/#"]

[[queues]]
name = "tele.fifo"
from = ["tele/+/t"]
group = "{1}"
"#,
    )
    .await;
    let mut expected = HashSet::new();
    for device in 0..3 {
        let topic = format!("tele/dev-{device}/t");
        let payloads: Vec<String> = (0..15).map(|i| format!("dev-{device}:{i}")).collect();
        expected.extend(payloads.iter().map(|p| (topic.clone(), p.clone())));
        publish_mqtt(broker.mqtt_addr(), &topic, &payloads).await;
    }
    // Every PUBACK is in: no time to flush anything.
    let broker = broker
        .kill()
        .await
        .expect("SIGKILL")
        .start()
        .await
        .expect("restart");
    let api = Api::new(broker.http_url());
    let mut got = HashSet::new();
    while got.len() < expected.len() {
        let messages = receive(&api, "telemetry", "max=10&wait_ms=1000").await;
        assert!(
            !messages.is_empty(),
            "{} of {} arrived",
            got.len(),
            expected.len()
        );
        for m in &messages {
            assert_eq!(m["sender"], "catalog-test");
            let topic = m["topic"].as_str().expect("topic").to_owned();
            got.insert((topic, text(m).to_owned()));
            assert_eq!(delete(&api, "telemetry", &m["receipt_handle"]).await, 204);
        }
    }
    assert_eq!(got, expected);
    // The FIFO queue groups by device (level 1 of the topic) and keeps
    // each device's order.
    let mut next: HashMap<String, u32> = HashMap::new();
    for _ in 0..45 {
        let messages = receive(&api, "tele.fifo", "max=10").await;
        for m in &messages {
            let group = m["group"].as_str().expect("group");
            let (device, index) = text(m).split_once(':').expect("device:i");
            assert_eq!(group, device);
            let n = next.entry(group.to_owned()).or_default();
            assert_eq!(index.parse::<u32>().expect("index"), *n, "{group} in order");
            *n += 1;
            assert_eq!(delete(&api, "tele.fifo", &m["receipt_handle"]).await, 204);
        }
    }
    assert_eq!(next.values().sum::<u32>(), 45);
}

/// A request that may fail (the broker is killed under it): status and
/// JSON, or `None`.
async fn attempt(
    client: &reqwest::Client,
    url: String,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = client.post(url).timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// What the load saw: sends acknowledged, deletes tried and deletes
/// acknowledged, by body.
#[derive(Debug, Default)]
struct Ledger {
    sent: HashSet<String>,
    delete_tried: HashSet<String>,
    deleted: HashSet<String>,
}

#[tokio::test]
async fn queue_sigkill_under_mixed_load_loses_nothing_acknowledged_and_revives_no_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Launch::new(BIN, dir.path().join("data"))
        .start()
        .await
        .expect("start");
    let api = Api::new(broker.http_url());
    let definition = json!({"name": "load", "visibility_timeout": "2s"});
    let (status, body) = call(&api, "POST", "/api/v1/queues", Some(definition)).await;
    assert_eq!(status, 201, "{body}");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let base = broker.http_url();
    let mut load = Vec::new();
    for producer in 0..3 {
        let (ledger, url) = (
            Arc::clone(&ledger),
            format!("{base}/api/v1/queues/load/messages"),
        );
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0.. {
                let bodies = [format!("p{producer}-{i}a"), format!("p{producer}-{i}b")];
                let batch = json!({"messages": [{"body": bodies[0]}, {"body": bodies[1]}]});
                let Some((200, answer)) = attempt(&client, url.clone(), Some(batch)).await else {
                    return;
                };
                let results = answer["results"].as_array().expect("results");
                let mut l = ledger.lock().expect("lock");
                for (result, body) in results.iter().zip(bodies) {
                    if result["message_id"].is_string() {
                        l.sent.insert(body);
                    }
                }
            }
        }));
    }
    for _ in 0..3 {
        let ledger = Arc::clone(&ledger);
        let (receive_url, delete_url) = (
            format!("{base}/api/v1/queues/load/receive?max=10&wait_ms=100"),
            format!("{base}/api/v1/queues/load/delete"),
        );
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Some((200, got)) = attempt(&client, receive_url.clone(), None).await else {
                    return;
                };
                // About one message in ten is left to time out and come
                // back.
                let (bodies, handles): (Vec<String>, Vec<Value>) = got["messages"]
                    .as_array()
                    .expect("messages")
                    .iter()
                    .filter(|m| !text(m).ends_with("0a") && !text(m).ends_with("5b"))
                    .map(|m| (text(m).to_owned(), m["receipt_handle"].clone()))
                    .unzip();
                if bodies.is_empty() {
                    continue;
                }
                ledger
                    .lock()
                    .expect("lock")
                    .delete_tried
                    .extend(bodies.iter().cloned());
                let request = json!({ "receipt_handles": handles });
                let Some((200, answer)) = attempt(&client, delete_url.clone(), Some(request)).await
                else {
                    return;
                };
                let mut l = ledger.lock().expect("lock");
                for (result, body) in answer["results"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .zip(bodies)
                {
                    if result["deleted"] == true {
                        l.deleted.insert(body);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let launch = broker.kill().await.expect("SIGKILL");
    for task in load {
        task.await.expect("load task");
    }
    // Every load task is done: what they saw is final.
    let ledger = std::mem::take(&mut *ledger.lock().expect("lock"));
    assert!(
        ledger.sent.len() > 50 && ledger.deleted.len() > 20,
        "{} sent, {} deleted",
        ledger.sent.len(),
        ledger.deleted.len()
    );

    let broker = launch.start().await.expect("restart");
    let api = Api::new(broker.http_url());
    assert_eq!(queue(&api, "load").await["origin"], "api");
    let must_return: HashSet<&String> = ledger.sent.difference(&ledger.delete_tried).collect();
    let mut back: HashSet<String> = HashSet::new();
    let mut revived = Vec::new();
    // Until every undeleted message is back, and then past one more
    // visibility timeout, so anything that would wrongly come back does.
    let mut quiet_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let messages = receive(&api, "load", "max=10&wait_ms=500").await;
        for m in &messages {
            let body = text(m).to_owned();
            if ledger.deleted.contains(&body) {
                revived.push(body.clone());
            }
            back.insert(body);
            assert_eq!(delete(&api, "load", &m["receipt_handle"]).await, 204);
        }
        let complete = must_return.iter().all(|b| back.contains(*b));
        match (complete, messages.is_empty(), quiet_since) {
            (true, true, None) => quiet_since = Some(Instant::now()),
            (true, true, Some(t)) if t.elapsed() > Duration::from_secs(3) => break,
            (_, false, _) => quiet_since = None,
            _ => {}
        }
    }
    let lost: Vec<&&String> = must_return.iter().filter(|b| !back.contains(**b)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged, undeleted messages lost: {lost:?}",
        lost.len()
    );
    assert!(
        revived.is_empty(),
        "deleted messages came back: {revived:?}"
    );
    println!(
        "SIGKILL under load: {} sends acknowledged, {} deletes acknowledged, {} received after the restart",
        ledger.sent.len(),
        ledger.deleted.len(),
        back.len()
    );
}

#[tokio::test]
async fn queue_created_through_the_api_survives_restarts_and_stays_gone_once_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Launch::new(BIN, dir.path().join("data"))
        .start()
        .await
        .expect("start");
    let api = Api::new(broker.http_url());
    let definition = json!({"name": "made", "visibility_timeout": "10s", "from": ["made/#"]});
    let response = api
        .client()
        .post(api.url("/api/v1/queues"))
        .json(&definition)
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/api/v1/queues/made");
    let created: Value = response.json().await.expect("json");
    assert_eq!(
        (
            &created["origin"],
            &created["fifo"],
            &created["definition"]["visibility_timeout"]
        ),
        (&json!("api"), &json!(false), &json!("10s"))
    );
    let (status, same) = call(&api, "POST", "/api/v1/queues", Some(definition)).await;
    assert_eq!(
        (status, &same["name"]),
        (200, &json!("made")),
        "an identical create"
    );
    let different = json!({"name": "made", "visibility_timeout": "11s"});
    let (status, _) = call(&api, "POST", "/api/v1/queues", Some(different)).await;
    assert_eq!(status, 409);
    let change = json!({"visibility_timeout": "5s", "from": null});
    let (status, changed) = call(&api, "PATCH", "/api/v1/queues/made", Some(change)).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["definition"]["visibility_timeout"], "5s");
    assert!(changed["definition"].get("from").is_none(), "{changed}");
    for i in 0..3 {
        send(&api, "made", json!({ "body": format!("m{i}") })).await;
    }

    let broker = broker
        .kill()
        .await
        .expect("SIGKILL")
        .start()
        .await
        .expect("restart");
    let api = Api::new(broker.http_url());
    let made = queue(&api, "made").await;
    assert_eq!(made["origin"], "api");
    assert_eq!(made["definition"]["visibility_timeout"], "5s");
    assert_eq!(made["depth"]["visible"], 3);
    assert!(made["depth"]["oldest_age_ms"].as_i64() >= Some(0));
    assert_eq!(made["created_ts"], created["created_ts"]);
    let (status, body) = call(&api, "DELETE", "/api/v1/queues/made", None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = call(&api, "GET", "/api/v1/queues/made", None).await;
    assert_eq!(status, 404);

    let (status, launch) = broker.terminate().await.expect("SIGTERM");
    assert!(status.success());
    let broker = launch.start().await.expect("restart");
    let api = Api::new(broker.http_url());
    let (_, list) = call(&api, "GET", "/api/v1/queues", None).await;
    assert_eq!(list, json!({"queues": []}));
    let (status, again) = call(
        &api,
        "POST",
        "/api/v1/queues",
        Some(json!({"name": "made"})),
    )
    .await;
    assert_eq!((status, &again["depth"]["visible"]), (201, &json!(0)));
}

#[tokio::test]
async fn queue_bad_input_gets_a_4xx_that_names_the_field_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), QUEUES).await;
    let api = Api::new(broker.http_url());
    send(&api, "jobs", json!({"body": "good"})).await;
    let held = receive(&api, "work", "").await;
    assert!(held.is_empty());
    send(&api, "work", json!({"body": "to hold"})).await;
    let held = receive(&api, "work", "").await;
    let handle = held[0]["receipt_handle"].clone();

    let attribute = |name: &str, kind: &str, value: &str| json!({"body": "x", "attributes": {name: {"type": kind, "value": value}}});
    let eleven: serde_json::Map<String, Value> = (0..11)
        .map(|i| (format!("a{i}"), json!({"type": "String", "value": "v"})))
        .collect();
    let stale = format!(
        "/api/v1/queues/jobs/messages/{}",
        handle.as_str().expect("handle")
    );
    let jobs = "/api/v1/queues/jobs/messages";
    let fifo = "/api/v1/queues/orders.fifo/messages";
    let create = "/api/v1/queues";
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("GET", "/api/v1/queues/nope", None, 404, "does not exist"),
        ("POST", "/api/v1/queues/nope/messages", Some(json!({"body": "x"})), 404, "does not exist"),
        ("POST", "/api/v1/queues/nope/receive", None, 404, "does not exist"),
        ("GET", "/api/v1/queues/nope/peek", None, 404, "does not exist"),
        ("POST", create, Some(json!({"name": "a b"})), 400, "name"),
        ("POST", create, Some(json!({"from": ["#"]})), 400, "missing field `name`"),
        ("POST", create, Some(json!({"name": "q", "visibility_timeout": "13h"})), 400, "visibility_timeout"),
        ("POST", create, Some(json!({"name": "q", "retention": "15days"})), 400, "retention"),
        ("POST", create, Some(json!({"name": "q", "delay": "soon"})), 400, "delay"),
        ("POST", create, Some(json!({"name": "q", "visbility_timeout": "1s"})), 400, "visbility_timeout"),
        ("POST", create, Some(json!({"name": "q", "dead_letter": {"queue": "none", "max_receive_count": 3}})), 400, "dead_letter.queue"),
        ("POST", create, Some(json!({"name": "q", "content_based_dedup": true})), 400, "content_based_dedup"),
        ("POST", create, Some(json!(["q"])), 400, "JSON object"),
        ("POST", create, Some(json!({"name": "jobs", "visibility_timeout": "5s"})), 409, "exists"),
        ("PATCH", "/api/v1/queues/jobs", Some(json!({"delay": "1s"})), 409, "config file"),
        ("DELETE", "/api/v1/queues/jobs", None, 409, "config file"),
        ("PATCH", "/api/v1/queues/nope", Some(json!({"delay": "1s"})), 404, "does not exist"),
        ("POST", jobs, Some(json!({})), 400, "body"),
        ("POST", jobs, Some(json!({"body": "x", "body_base64": "eA=="})), 400, "body"),
        ("POST", jobs, Some(json!({"body_base64": "%%%"})), 400, "body_base64"),
        ("POST", jobs, Some(json!({"body": "x", "bdoy": "y"})), 400, "bdoy"),
        ("POST", jobs, Some(json!({"body": "x", "delay_ms": 900_001})), 400, "delay_ms"),
        ("POST", jobs, Some(json!({"body": "x", "delay_ms": -1})), 400, "delay_ms"),
        ("POST", jobs, Some(json!({"body": "x".repeat(256 * 1024 + 1)})), 413, "limit"),
        ("POST", jobs, Some(attribute("k", "Text", "v")), 400, "attributes"),
        ("POST", jobs, Some(attribute("AWS.k", "String", "v")), 400, "reserved"),
        ("POST", jobs, Some(attribute("k k", "String", "v")), 400, "attributes"),
        ("POST", jobs, Some(attribute("k", "Number", "ten")), 400, "not a number"),
        ("POST", jobs, Some(attribute("k", "Binary", "!!")), 400, "attributes.k.value"),
        ("POST", jobs, Some(attribute("k", "String", "")), 400, "attributes"),
        ("POST", jobs, Some(json!({"body": "x", "attributes": eleven})), 400, "attributes"),
        ("POST", jobs, Some(json!({"body": "x", "group": "g"})), 400, "group"),
        ("POST", fifo, Some(json!({"body": "x", "dedup_id": "d"})), 400, "group"),
        ("POST", fifo, Some(json!({"body": "x", "group": "g"})), 400, "dedup_id"),
        ("POST", fifo, Some(json!({"body": "x", "group": "g", "dedup_id": "d", "delay_ms": 5})), 400, "delay_ms"),
        ("POST", jobs, Some(json!({"messages": []})), 400, "messages"),
        ("POST", jobs, Some(json!({"messages": vec![json!({"body": "x"}); 11]})), 400, "messages"),
        ("POST", jobs, Some(json!({"messages": [{"body": "x", "bdoy": 1}]})), 400, "messages[0].bdoy"),
        ("POST", "/api/v1/queues/jobs/receive?max=0", None, 400, "max"),
        ("POST", "/api/v1/queues/jobs/receive?max=11", None, 400, "max"),
        ("POST", "/api/v1/queues/jobs/receive?max=many", None, 400, "max"),
        ("POST", "/api/v1/queues/jobs/receive?wait_ms=20001", None, 400, "wait_ms"),
        ("POST", "/api/v1/queues/jobs/receive?visibility_ms=43200001", None, 400, "visibility_ms"),
        ("POST", "/api/v1/queues/jobs/receive?colour=blue", None, 400, "colour"),
        ("GET", "/api/v1/queues/jobs/peek?max=0", None, 400, "max"),
        ("DELETE", "/api/v1/queues/jobs/messages/bogus", None, 400, "receipt handle"),
        ("DELETE", &stale, None, 400, "receipt handle"),
        ("POST", "/api/v1/queues/jobs/delete", Some(json!({"receipt_handles": []})), 400, "receipt_handles"),
        ("POST", "/api/v1/queues/jobs/delete", Some(json!({"receipt_handles": vec!["h"; 11]})), 400, "receipt_handles"),
        ("POST", "/api/v1/queues/jobs/delete", Some(json!({"handles": ["h"]})), 400, "handles"),
        ("POST", "/api/v1/queues/work/visibility", Some(json!({"receipt_handle": "bogus", "visibility_ms": 10})), 400, "receipt handle"),
        ("POST", "/api/v1/queues/work/visibility", Some(json!({"receipt_handle": handle, "visibility_ms": 43_200_001})), 400, "visibility_ms"),
        ("POST", "/api/v1/queues/work/visibility", Some(json!({"receipt_handle": handle})), 400, "visibility_ms"),
        ("POST", "/api/v1/queues/work/redrive", Some(json!({})), 400, "not a dead-letter queue"),
        ("POST", "/api/v1/queues/work-dlq/redrive", Some(json!({"per_second": 0})), 400, "per_second"),
        ("POST", "/api/v1/queues/work-dlq/redrive", Some(json!({"destination": "nope"})), 404, "does not exist"),
        ("POST", "/api/v1/queues/work-dlq/redrive", Some(json!({"destination": "orders.fifo"})), 400, "destination"),
        ("DELETE", "/api/v1/queues/work-dlq", None, 409, "config file"),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, answer) = call(&api, method, path, body.clone()).await;
        assert_eq!(got, status, "{method} {path} {body:?}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(error.contains(needle), "{method} {path} {body:?}: {error}");
    }
    let (status, answer) = call(
        &api,
        "POST",
        "/api/v1/queues/jobs/delete",
        Some(json!({"receipt_handles": ["bogus"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["deleted"], false);
    assert!(
        answer["results"][0]["error"]
            .as_str()
            .expect("error")
            .contains("receipt handle")
    );
    let batch = json!({"messages": [{"body": "ok"}, {"body": "x", "group": "g"}, {"body": "y".repeat(300_000)}]});
    let answer = send(&api, "jobs", batch).await;
    let results = answer["results"].as_array().expect("results");
    assert!(results[0]["message_id"].is_string(), "{answer}");
    assert!(
        results[1]["error"]
            .as_str()
            .expect("error")
            .starts_with("group: "),
        "{answer}"
    );
    assert!(
        results[2]["error"]
            .as_str()
            .expect("error")
            .contains("limit"),
        "{answer}"
    );
    for (path, body) in [
        (
            "/api/v1/queues/jobs/messages",
            vec![b' '; 4 * 1024 * 1024 + 1],
        ),
        ("/api/v1/queues", vec![b' '; 64 * 1024 + 1]),
        ("/api/v1/queues/jobs/messages", b"body = 1".to_vec()),
    ] {
        let response = api
            .client()
            .post(api.url(path))
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("a JSON error");
        assert!(status == 413 || status == 400, "{path}: {status} {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // Nothing refused was stored: `jobs` holds the two good messages.
    let (_, peeked) = call(&api, "GET", "/api/v1/queues/jobs/peek", None).await;
    let bodies: Vec<&str> = peeked["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(text)
        .collect();
    assert_eq!(bodies, ["good", "ok"]);
    let (_, list) = call(&api, "GET", "/api/v1/queues", None).await;
    assert_eq!(
        list["queues"].as_array().expect("queues").len(),
        4,
        "no queue made"
    );
}

/// `worker` may use `jobs`; `boss` administers; `stranger` may do
/// neither.
fn users() -> String {
    let hash = |secret: &str| tidewire_auth::hash_password(secret).expect("hash");
    format!(
        r#"{QUEUES}
[auth]
allow_anonymous = false

[[users]]
username = "worker"
password_hash = "{worker}"
queues = ["jobs"]

[[users]]
username = "boss"
password_hash = "{boss}"
admin = true

[[users]]
username = "stranger"
password_hash = "{stranger}"
"#,
        worker = hash("w-pass"),
        boss = hash("b-pass"),
        stranger = hash("s-pass"),
    )
}

#[tokio::test]
async fn queue_permissions_hold_over_http_and_ws() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), &users()).await;
    let api = Api::new(broker.http_url());
    let shared = &api;
    let as_user = |user: &'static str, password: &'static str| {
        move |method: &str, path: &str, body: Option<Value>| {
            let client = shared.client();
            let url = shared.url(path);
            let request = match method {
                "GET" => client.get(url),
                "DELETE" => client.delete(url),
                _ => client.post(url),
            };
            let request = request.basic_auth(user, Some(password));
            let request = match body {
                Some(body) => request.json(&body),
                None => request,
            };
            async move {
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                let text = response.text().await.expect("body");
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
        }
    };
    let worker = as_user("worker", "w-pass");
    let boss = as_user("boss", "b-pass");
    let stranger = as_user("stranger", "s-pass");
    let names = |list: &Value| -> Vec<String> {
        list["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .map(|q| q["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let message = || Some(json!({"body": "x"}));

    let (status, _) = call(&api, "GET", "/api/v1/queues", None).await;
    assert_eq!(status, 401, "no credentials");
    assert_eq!(
        names(&worker("GET", "/api/v1/queues", None).await.1),
        ["jobs"]
    );
    assert_eq!(names(&boss("GET", "/api/v1/queues", None).await.1).len(), 4);
    assert!(names(&stranger("GET", "/api/v1/queues", None).await.1).is_empty());
    assert_eq!(
        worker("POST", "/api/v1/queues/jobs/messages", message())
            .await
            .0,
        200
    );
    assert_eq!(
        worker("POST", "/api/v1/queues/jobs/receive", None).await.0,
        200
    );
    assert_eq!(worker("GET", "/api/v1/queues/jobs", None).await.0, 200);
    assert_eq!(boss("GET", "/api/v1/queues/work/peek", None).await.0, 200);
    assert_eq!(boss("POST", "/api/v1/queues/jobs/purge", None).await.0, 204);
    let created = boss("POST", "/api/v1/queues", Some(json!({"name": "fresh"}))).await;
    assert_eq!(created.0, 201, "{}", created.1);
    let receipt = Some(json!({"receipt_handles": ["h"]}));
    #[rustfmt::skip]
    let denials = [
        (&worker, "POST", "/api/v1/queues/work/messages", message(), "queues"),
        (&worker, "GET", "/api/v1/queues/work", None, "queues"),
        (&worker, "POST", "/api/v1/queues/jobs/purge", None, "admin"),
        (&worker, "POST", "/api/v1/queues", Some(json!({"name": "mine"})), "admin"),
        (&worker, "DELETE", "/api/v1/queues/fresh", None, "admin"),
        (&worker, "POST", "/api/v1/queues/work-dlq/redrive", None, "admin"),
        (&boss, "POST", "/api/v1/queues/jobs/messages", message(), "queues"),
        (&boss, "POST", "/api/v1/queues/jobs/receive", None, "queues"),
        (&stranger, "GET", "/api/v1/queues/jobs/peek", None, "queues"),
        (&stranger, "POST", "/api/v1/queues/jobs/delete", receipt, "queues"),
    ];
    for (caller, method, path, body, permission) in denials {
        let (status, answer) = caller(method, path, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        let error = answer["error"].as_str().expect("error");
        assert!(
            error.contains(&format!("the {permission} permission")),
            "{method} {path}: {error}"
        );
    }

    let connect_as = |user: &str, password: &str| {
        format!(
            "{}?username={user}&password={password}",
            ws::ws_url(&broker, "/ws")
        )
    };
    let (mut denied, _): (Ws, _) =
        tokio_tungstenite::connect_async(connect_as("stranger", "s-pass"))
            .await
            .expect("connect");
    ws::send(
        &mut denied,
        json!({"op": "queue_send", "id": 1, "queue": "jobs", "body": "x"}),
    )
    .await;
    let error = ws::next_json(&mut denied).await;
    assert_eq!(error["type"], "error");
    assert!(
        error["error"]
            .as_str()
            .expect("error")
            .contains("the queues permission"),
        "{error}"
    );
    let (mut allowed, _): (Ws, _) =
        tokio_tungstenite::connect_async(connect_as("worker", "w-pass"))
            .await
            .expect("connect");
    ws::send(
        &mut allowed,
        json!({"op": "queue_send", "id": 1, "queue": "jobs", "body": "x"}),
    )
    .await;
    let sent = ws::next_json(&mut allowed).await;
    assert_eq!(sent["type"], "result", "{sent}");
    ws::send(
        &mut allowed,
        json!({"op": "queue_receive", "id": 2, "queue": "jobs"}),
    )
    .await;
    let got = ws::next_json(&mut allowed).await;
    assert_eq!(got["messages"][0]["sender"], "worker", "{got}");
}
