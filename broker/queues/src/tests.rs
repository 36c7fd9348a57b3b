//! The queue engine through its public API, over real files: a broker with
//! its catalog, queues opened from definitions, closed and opened again as
//! a restart does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidewire_core::stream_config::StreamConfig;
use tidewire_core::{
    Broker, Catalog, CatalogLimits, Limits, Message, PublishMetrics, Source, Streams,
};
use tidewire_storage::{OnFatal, StorageMetrics};

use crate::config::{DeadLetterConfig, QueueConfig};
use crate::message::Outgoing;
use crate::metrics::QueueMetrics;
use crate::moves::MoveStatus;
use crate::registry::{Queues, ReceiveOptions};

struct Node {
    broker: Broker,
    queues: Queues,
}

impl Node {
    fn open(dir: &Path, configs: &[QueueConfig]) -> Node {
        let mut registry = prometheus_client::registry::Registry::default();
        let storage = StorageMetrics::register(&mut registry);
        let on_fatal: OnFatal = Arc::new(|e| panic!("fatal storage error: {e}"));
        let spec = StreamConfig::default_stream()
            .validate("streams[0]")
            .expect("valid");
        let streams = Streams::open(dir, vec![spec], &storage, on_fatal.clone()).expect("streams");
        let broker = Broker::new(
            streams,
            Limits::default(),
            PublishMetrics::register(&mut registry),
        );
        let catalog = Catalog::open(
            broker.clone(),
            storage.clone(),
            on_fatal.clone(),
            CatalogLimits::default(),
        )
        .expect("catalog");
        let queues = Queues::open(
            catalog,
            configs,
            storage,
            on_fatal,
            QueueMetrics::register(&mut registry),
            100,
        )
        .expect("queues");
        broker.set_routes(vec![queues.publish_routes()]);
        Node { broker, queues }
    }

    async fn close(self) {
        self.queues.close().await;
        self.broker.streams().close().await;
    }

    async fn send(&self, queue: &str, body: &str) -> String {
        self.queues
            .get(queue)
            .expect("queue")
            .send(text(body))
            .await
            .expect("send")
            .message_id
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Vec<crate::Delivered> {
        self.queues
            .receive(
                queue,
                ReceiveOptions {
                    max: Some(max),
                    wait: Some(Duration::ZERO),
                    visibility: Some(visibility),
                },
            )
            .await
            .expect("receive")
    }
}

fn text(body: &str) -> Outgoing {
    Outgoing {
        body: Bytes::from(body.to_owned()),
        sender: "test".into(),
        ..Outgoing::default()
    }
}

fn bodies(messages: &[crate::Delivered]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

const LONG: Duration = Duration::from_secs(600);

#[tokio::test]
async fn receive_hides_delete_forgets_and_a_restart_keeps_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig::named("jobs")];
    let node = Node::open(dir.path(), &configs);
    for i in 0..5 {
        node.send("jobs", &format!("m{i}")).await;
    }
    let got = node.receive("jobs", 3, LONG).await;
    assert_eq!(bodies(&got), ["m0", "m1", "m2"]);
    assert_eq!(bodies(&node.receive("jobs", 10, LONG).await), ["m3", "m4"]);
    assert!(
        node.receive("jobs", 10, LONG).await.is_empty(),
        "all hidden"
    );
    let queue = node.queues.get("jobs").expect("queue");
    queue.delete(&got[0].receipt_handle).await.expect("delete");
    queue
        .delete(&got[0].receipt_handle)
        .await
        .expect("deleting twice is fine");
    queue
        .change_visibility(&got[1].receipt_handle, Duration::ZERO)
        .await
        .expect("show m1 again");
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (1, 3));
    node.close().await;

    let node = Node::open(dir.path(), &configs);
    let again = node.receive("jobs", 10, LONG).await;
    assert_eq!(bodies(&again), ["m1"], "m0 deleted, the rest still hidden");
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].message_id, got[1].message_id);
    let queue = node.queues.get("jobs").expect("queue");
    let stale = queue.delete(&got[1].receipt_handle).await;
    assert!(
        matches!(stale, Err(crate::QueueError::InvalidReceiptHandle(_))),
        "{stale:?}"
    );
    node.close().await;
}

#[tokio::test]
async fn an_expired_visibility_redelivers_with_a_higher_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path(), &[QueueConfig::named("q")]);
    node.send("q", "x").await;
    let first = node.receive("q", 1, Duration::from_millis(100)).await;
    assert_eq!(first[0].receive_count, 1);
    let second = node
        .queues
        .receive(
            "q",
            ReceiveOptions {
                max: Some(1),
                wait: Some(Duration::from_secs(5)),
                visibility: Some(LONG),
            },
        )
        .await
        .expect("long poll");
    assert_eq!(bodies(&second), ["x"]);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt_handle, first[0].receipt_handle);
    node.close().await;
}

#[tokio::test]
async fn past_max_receives_a_message_moves_to_the_dead_letter_queue_and_redrives_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [
        QueueConfig {
            dead_letter: Some(DeadLetterConfig {
                queue: "dlq".into(),
                max_receive_count: 2,
            }),
            ..QueueConfig::named("work")
        },
        QueueConfig::named("dlq"),
    ];
    let node = Node::open(dir.path(), &configs);
    let id = node.send("work", "poison").await;
    for _ in 0..2 {
        assert_eq!(
            node.receive("work", 1, Duration::from_millis(1))
                .await
                .len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        node.receive("work", 1, LONG).await.is_empty(),
        "moved, not handed out"
    );
    let dead = node.receive("dlq", 1, Duration::from_millis(1)).await;
    assert_eq!(bodies(&dead), ["poison"]);
    assert_eq!(dead[0].message_id, id, "the id travels with it");
    assert_eq!(node.queues.dead_letter_sources("dlq"), ["work"]);
    tokio::time::sleep(Duration::from_millis(5)).await;

    let handle = node.queues.start_move("dlq", None, None).expect("redrive");
    let task = loop {
        let tasks = node.queues.move_tasks("dlq");
        let task = tasks
            .iter()
            .find(|t| t.handle() == handle)
            .cloned()
            .expect("task");
        if task.status().0 != MoveStatus::Running {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(task.status().0, MoveStatus::Completed);
    assert_eq!(task.moved(), 1);
    let back = node.receive("work", 1, LONG).await;
    assert_eq!(bodies(&back), ["poison"]);
    assert_eq!(back[0].message_id, id);
    node.close().await;
}

#[tokio::test]
async fn fifo_groups_keep_order_and_one_in_flight_and_dedup_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig::named("orders.fifo")];
    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("orders.fifo").expect("queue");
    let send = |group: &str, body: &str, dedup: &str| Outgoing {
        group: Some(group.into()),
        dedup_id: Some(dedup.into()),
        ..text(body)
    };
    for (i, group) in ["a", "a", "b", "a", "b"].iter().enumerate() {
        queue
            .send(send(group, &format!("{group}{i}"), &format!("d{i}")))
            .await
            .expect("send");
    }
    let dup = queue
        .send(send("a", "again", "d0"))
        .await
        .expect("duplicate");
    assert!(dup.duplicate);
    let missing_group = queue.send(text("no group")).await;
    assert!(missing_group.is_err());

    let first = node.receive("orders.fifo", 10, LONG).await;
    assert_eq!(bodies(&first), ["a0", "b2"], "one per group");
    assert!(node.receive("orders.fifo", 10, LONG).await.is_empty());
    queue
        .delete(&first[0].receipt_handle)
        .await
        .expect("delete");
    assert_eq!(bodies(&node.receive("orders.fifo", 10, LONG).await), ["a1"]);
    node.close().await;

    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("orders.fifo").expect("queue");
    let dup = queue
        .send(send("a", "again", "d4"))
        .await
        .expect("duplicate after restart");
    assert!(dup.duplicate);
    assert_eq!(dup.sequence_number.as_deref(), Some("00000000000000000004"));
    node.close().await;
}

#[tokio::test]
async fn a_publish_to_a_topic_in_from_is_enqueued_with_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig {
        from: vec!["dev/+/up".into()],
        group: Some("{1}".into()),
        ..QueueConfig::named("up.fifo")
    }];
    let node = Node::open(dir.path(), &configs);
    for device in ["d1", "d2", "d1"] {
        let message = Message {
            topic: format!("dev/{device}/up"),
            client_id: device.into(),
            qos: 1,
            payload: Bytes::from(device),
            ..Message::default()
        };
        let stored = node
            .broker
            .publish(Source::Http, message)
            .await
            .expect("publish");
        assert_eq!(
            stored.len(),
            1,
            "the events stream; the queue is not a stream"
        );
    }
    let got = node.receive("up.fifo", 10, LONG).await;
    assert_eq!(bodies(&got), ["d1", "d2"]);
    assert_eq!(got[0].group.as_deref(), Some("d1"));
    assert_eq!(got[0].topic, "dev/d1/up");
    assert_eq!(got[0].sender, "d1");
    node.close().await;
}

#[tokio::test]
async fn purge_empties_and_api_queues_come_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path(), &[]);
    let (_, created) = node
        .queues
        .create(QueueConfig::named("made"))
        .await
        .expect("create");
    assert!(created);
    let (_, created) = node
        .queues
        .create(QueueConfig::named("made"))
        .await
        .expect("same definition");
    assert!(!created);
    node.send("made", "1").await;
    node.send("made", "2").await;
    node.queues
        .get("made")
        .expect("queue")
        .purge()
        .await
        .expect("purge");
    node.send("made", "3").await;
    node.close().await;

    let node = Node::open(dir.path(), &[]);
    assert_eq!(bodies(&node.receive("made", 10, LONG).await), ["3"]);
    node.queues.delete("made").await.expect("delete");
    assert!(node.queues.get("made").is_err());
    assert!(!dir.path().join("queues/made").exists());
    node.close().await;
}

/// Sends messages `from..from + n`, ten to a batch, each a five-digit
/// number padded to about 1 KiB.
async fn send_numbered(queue: &crate::Queue, from: usize, n: usize) {
    let numbers: Vec<usize> = (from..from + n).collect();
    for chunk in numbers.chunks(10) {
        let batch = chunk
            .iter()
            .map(|i| text(&format!("{i:05}{}", "x".repeat(1000))))
            .collect();
        for sent in queue.send_batch(batch).await {
            sent.expect("send");
        }
    }
}

fn numbers(messages: &[crate::Delivered]) -> Vec<usize> {
    bodies(messages)
        .iter()
        .map(|b| b[..5].parse().expect("numbered"))
        .collect()
}

#[tokio::test]
async fn a_backlog_is_received_once_in_order_across_sends_and_a_purge() {
    // More than one read chunk (256 KiB) of the log, received a few at a
    // time while more arrive: the read-ahead scan stays open across
    // receives, reopens past the end it saw, and starts again after a
    // purge moves the head.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path(), &[QueueConfig::named("q")]);
    let queue = node.queues.get("q").expect("queue");
    send_numbered(&queue, 0, 400).await;
    let mut got = Vec::new();
    let mut sent = 400;
    for round in 0..60 {
        got.extend(numbers(&node.receive("q", 7, LONG).await));
        if round % 5 == 4 {
            send_numbered(&queue, sent, 10).await;
            sent += 10;
        }
    }
    assert_eq!(got, (0..420).collect::<Vec<_>>());
    queue.purge().await.expect("purge");
    send_numbered(&queue, 1000, 20).await;
    let mut after = Vec::new();
    loop {
        let batch = numbers(&node.receive("q", 10, LONG).await);
        if batch.is_empty() {
            break;
        }
        after.extend(batch);
    }
    assert_eq!(after, (1000..1020).collect::<Vec<_>>());
    node.close().await;
}

/// Journal records share the messages log: receives skip them and the
/// depth does not count them, before a restart and after it.
#[tokio::test]
async fn the_depth_counts_messages_not_journal_records_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig::named("q")];
    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("q").expect("queue");
    for i in 0..5 {
        node.send("q", &format!("m{i}")).await;
    }
    let got = node.receive("q", 2, LONG).await;
    assert_eq!(bodies(&got), ["m0", "m1"]);
    queue.delete(&got[0].receipt_handle).await.expect("delete");
    for i in 5..8 {
        node.send("q", &format!("m{i}")).await;
    }
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (6, 1));
    node.close().await;

    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("q").expect("queue");
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (6, 1));
    let peeked = queue.peek(10).await.expect("peek");
    assert_eq!(bodies(&peeked), ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    let rest = node.receive("q", 10, LONG).await;
    assert_eq!(bodies(&rest), ["m2", "m3", "m4", "m5", "m6", "m7"]);
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (0, 7));
    node.close().await;
}

/// Queue "q" with m0, m1 and m2 sent and m0 received, and a journal
/// record of m0 written whose append's answer is not taken.
async fn one_received_of_three_with_a_journal_record_unanswered(
    dir: &tempfile::TempDir,
    configs: &[QueueConfig],
) -> (Node, impl Sized) {
    let node = Node::open(dir.path(), configs);
    for i in 0..3 {
        node.send("q", &format!("m{i}")).await;
    }
    let got = node.receive("q", 1, LONG).await;
    assert_eq!(bodies(&got), ["m0"]);
    let unanswered = node
        .queues
        .get("q")
        .expect("queue")
        .journal_unanswered(&got[0].receipt_handle)
        .await
        .expect("journal");
    (node, unanswered)
}

/// A snapshot taken after a journal record is written but before its
/// append is answered (and its offset listed) has replay start below the
/// record: after a restart it is journal again, not a message.
#[tokio::test]
async fn a_snapshot_before_a_journal_answer_keeps_the_depth_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig::named("q")];
    let (node, unanswered) =
        one_received_of_three_with_a_journal_record_unanswered(&dir, &configs).await;
    let queue = node.queues.get("q").expect("queue");
    queue.snapshot_now().await.expect("snapshot");
    drop(unanswered);
    node.close().await;

    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("q").expect("queue");
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (2, 1));
    let rest = node.receive("q", 10, LONG).await;
    assert_eq!(bodies(&rest), ["m1", "m2"]);
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (0, 3));
    node.close().await;
}

/// A journal record whose request is given up before its append is
/// answered is still listed once the answer comes, so the depth does not
/// count it as a message.
#[tokio::test]
async fn a_journal_record_given_up_before_its_answer_is_not_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig::named("q")];
    let (node, unanswered) =
        one_received_of_three_with_a_journal_record_unanswered(&dir, &configs).await;
    let queue = node.queues.get("q").expect("queue");
    drop(unanswered);
    // The answer is taken on a task of its own.
    let mut depth = queue.depth().await;
    for _ in 0..1_000 {
        if depth.visible == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        depth = queue.depth().await;
    }
    assert_eq!((depth.visible, depth.in_flight), (2, 1));
    let rest = node.receive("q", 10, LONG).await;
    assert_eq!(bodies(&rest), ["m1", "m2"]);
    node.close().await;
}

/// A queue written when its journal was a log of its own (`journal/`, no
/// snapshot or a `TWQ1` one) opens with that state, which then moves
/// into the messages log, and the old log goes.
#[tokio::test]
async fn a_journal_in_a_log_of_its_own_moves_into_the_messages_log() {
    use crate::journal::{Change, Receipt, SNAPSHOT_FILE};
    use tidewire_storage::{LogConfig, StreamLog};

    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [QueueConfig::named("old")];
    let node = Node::open(dir.path(), &configs);
    for i in 0..3 {
        node.send("old", &format!("m{i}")).await;
    }
    let queue_dir = node.queues.get("old").expect("queue").dir().to_owned();
    node.close().await;
    let _ = std::fs::remove_file(queue_dir.join(SNAPSHOT_FILE));
    {
        // What an older tidewire kept: m0 deleted, m1 received and hidden.
        let mut registry = prometheus_client::registry::Registry::default();
        let storage = StorageMetrics::register(&mut registry);
        let on_fatal: OnFatal = Arc::new(|e| panic!("fatal storage error: {e}"));
        let log = StreamLog::open(
            &queue_dir.join("journal"),
            "queue:old:journal",
            LogConfig::default(),
            &storage,
            on_fatal,
        )
        .expect("journal log");
        let now = crate::queue::now_ms();
        let mut payload = Vec::new();
        Change::Delete { offset: 0 }.encode(&mut payload);
        Change::Receive {
            offset: 1,
            receipt: Receipt {
                nonce: 7,
                count: 1,
                visible_at_ms: now + 600_000,
                first_receive_ms: now,
            },
        }
        .encode(&mut payload);
        log.append(Arc::new(tidewire_storage::Message {
            payload: Bytes::from(payload),
            ..tidewire_storage::Message::default()
        }))
        .await
        .expect("append");
        log.close().await;
    }

    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("old").expect("queue");
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (1, 1));
    assert!(!queue_dir.join("journal").exists());
    queue.housekeeping().await.expect("housekeeping");
    assert!(
        std::fs::read_dir(&queue_dir)
            .expect("queue dir")
            .filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().starts_with("journal")),
        "the old journal log is gone"
    );
    assert_eq!(bodies(&node.receive("old", 10, LONG).await), ["m2"]);
    node.close().await;

    let node = Node::open(dir.path(), &configs);
    let queue = node.queues.get("old").expect("queue");
    let depth = queue.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (0, 2));
    node.close().await;
}
