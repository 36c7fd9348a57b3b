//! A hundred disconnects leave nothing behind: the bridge talks to
//! nats-server through a proxy that cuts every connection on demand, and
//! after 100 cuts and reconnects the test runtime holds no more tasks and
//! the process no more NATS client threads than after the first few,
//! while every record still reaches JetStream once and in order.

use super::proxy::Proxy;
use super::*;

/// Threads of this process named `name` (a bridge's NATS client runs on
/// threads named `nats-<bridge>`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// The stream sequence the durable consumer `tw` of `CMD` has
/// acknowledged up to.
async fn acked(js: &jetstream::Context) -> u64 {
    let Ok(stream) = js.get_stream("CMD").await else {
        return 0;
    };
    let consumer: Result<jetstream::consumer::PullConsumer, _> = stream.get_consumer("tw").await;
    match consumer {
        Ok(mut c) => c.info().await.map_or(0, |i| i.ack_floor.stream_sequence),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_disconnects_leave_no_client_behind() {
    const CUTS: u64 = 100;
    /// Cycles run before the baseline is taken (lazily started tasks).
    const WARM_UP: u64 = 5;
    /// Tasks that may come and go with timing (an acker finishing, a
    /// proxy link ending); a leak grows by at least one per disconnect.
    const TASK_SLACK: usize = 10;
    let server = NatsServer::start();
    let js = js_stream(&server, "EDGE", &["edge.>"]).await;
    add_stream(&js, "CMD", &["cmd.>"]).await;
    let proxy = Proxy::start(&server.url()).await;
    let node = Node::new();
    let spec = bridge(&format!(
        r#"
        [[nats]]
        name = "flaky"
        url = "{}"
        node = "n1"
        reconnect_min = "10ms"
        reconnect_max = "50ms"
        [[nats.outbound]]
        from = "sensors/#"
        subject = "edge.>"
        jetstream = true
        [[nats.inbound]]
        subject = "cmd.>"
        to = "cmd/#"
        durable = "tw"
        "#,
        proxy.url()
    ));
    let mut bridges = node.start(&spec, &CancellationToken::new()).await;
    let events = node
        .broker
        .streams()
        .get("events")
        .expect("events")
        .log
        .clone();
    let runtime = tokio::runtime::Handle::current().metrics();
    let mut baseline = None;
    for i in 0..CUTS {
        // Both links work on this session: one record each way.
        node.publish(&format!("sensors/{}", i % 7), i.to_string())
            .await;
        js.publish(format!("cmd.{i}"), i.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("PubAck");
        wait_for("this session's outbound record", || async {
            js_count(&js, "EDGE").await == i + 1
        })
        .await;
        // Stored and acknowledged, so a cut cannot cause a redelivery.
        wait_for("this session's inbound record", || async {
            events.next_offset() == 2 * (i + 1) && acked(&js).await == i + 1
        })
        .await;
        if i == WARM_UP {
            baseline = Some((runtime.num_alive_tasks(), threads_named("nats-flaky")));
        }
        let before = proxy.accepted();
        proxy.cut();
        wait_for("a new connection", || async { proxy.accepted() > before }).await;
    }
    let (tasks, threads) = baseline.expect("baseline");
    assert!(threads >= 1, "the client runs on its own thread");
    let deadline = Instant::now() + PATIENCE;
    let now = loop {
        let now = (runtime.num_alive_tasks(), threads_named("nats-flaky"));
        if now.0 <= tasks + TASK_SLACK && now.1 <= threads {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "after {CUTS} disconnects: {} tasks (baseline {tasks}), {} client threads \
             (baseline {threads})",
            now.0,
            now.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "after {CUTS} disconnects: {} tasks (baseline {tasks}), {} client threads (baseline {threads})",
        now.0, now.1
    );

    // The reconnects lost and reordered nothing.
    let sent: Vec<String> = js_messages(&js, "EDGE")
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..CUTS).map(|i| i.to_string()).collect();
    assert_eq!(sent, expected);
    let status = status(&bridges);
    assert_eq!(
        status.links[1].messages, CUTS,
        "every inbound message stored"
    );
    bridges.stop().await;
    wait_for("the client thread gone after stop", || async {
        threads_named("nats-flaky") == 0
    })
    .await;
}
