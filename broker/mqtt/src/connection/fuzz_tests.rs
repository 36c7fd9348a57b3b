//! Fuzzing the session layer: random bytes, and streams of valid packets
//! of either version (a CONNECT, then publishes, acks, subscriptions,
//! pings, goodbyes) mutated byte by byte, each sent over an in-memory
//! stream to a whole connection (handshake, packet loop, goodbye, will)
//! on a real [`Context`], in reads split at random places, then closed
//! (half-closed, or dropped outright). Every connection ends on its own,
//! without a panic, and gives its slot back; afterwards a well-behaved
//! client of either version on the same context still connects,
//! subscribes, publishes at QoS 1 and gets its acks and its message.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rumqttd::protocol::{
    Connect, Disconnect, DisconnectReasonCode, Filter, Packet, PubAck, PubAckReason, QoS,
    RetainForwardRule, Subscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::Context;
use super::test_support::TestContext;
use crate::codec::fuzz_tests::{after_connect, config, connect, encode, mutate, mutation, version};
use crate::codec::{Codec, OutgoingPublish, Version};

/// Small limits, so the fuzzed streams reach them: packets over 4 KiB, a
/// receive maximum of 4, short queues; anonymous clients may publish to
/// some topics only.
const SETTINGS: &str = r##"
max_packet_bytes = "4KiB"
receive_maximum = 4
max_inflight = 4
max_queued_messages = 32
connect_timeout = "1s"
allow_anonymous = true

[anonymous]
publish = ["fuzz/#", "a/#", "good/#"]
subscribe = ["#"]
"##;

/// Longest a fuzzed connection, or the good client's exchange, may take.
const CASE_LIMIT: Duration = Duration::from_secs(15);

/// What a fuzzed client sends and how it leaves.
#[derive(Debug, Clone)]
struct Client {
    bytes: Vec<u8>,
    /// Where reads are split (any values, taken modulo the length).
    cuts: Vec<usize>,
    /// Drop the stream without reading what the server sent, instead of
    /// half-closing it and reading to the end.
    abrupt: bool,
}

/// A CONNECT and up to a dozen packets after it, as bytes.
fn packet_stream() -> impl Strategy<Value = Vec<u8>> {
    version().prop_flat_map(|version| {
        (connect(version), vec(after_connect(version), 0..12)).prop_map(
            move |(connect, packets)| {
                let mut bytes = encode(version, connect);
                for packet in packets {
                    bytes.extend(encode(version, packet));
                }
                bytes
            },
        )
    })
}

fn client() -> impl Strategy<Value = Client> {
    let bytes = prop_oneof![
        1 => vec(any::<u8>(), 0..400),
        2 => packet_stream(),
        4 => (packet_stream(), vec(mutation(), 1..4)).prop_map(|(bytes, m)| mutate(bytes, &m)),
    ];
    (bytes, vec(any::<usize>(), 0..6), any::<bool>()).prop_map(|(bytes, cuts, abrupt)| Client {
        bytes,
        cuts,
        abrupt,
    })
}

/// Serves `client` on a connection of `ctx` and waits for the connection
/// to end: it must, within [`CASE_LIMIT`], without a panic.
async fn serve_fuzzed(ctx: &Arc<Context>, client: &Client) -> Result<(), TestCaseError> {
    let (server, stream) = tokio::io::duplex(8 * 1024);
    let served = tokio::spawn(Arc::clone(ctx).admit(server, None));
    let (mut reader, mut writer) = tokio::io::split(stream);
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink).await;
    });
    let mut ends: Vec<usize> = client
        .cuts
        .iter()
        .map(|c| c % (client.bytes.len() + 1))
        .collect();
    ends.push(client.bytes.len());
    ends.sort_unstable();
    let mut sent = 0;
    for end in ends {
        if writer.write_all(&client.bytes[sent..end]).await.is_err() {
            break;
        }
        sent = end;
        tokio::task::yield_now().await;
    }
    if client.abrupt {
        drain.abort();
        drop(writer);
    } else {
        let _ = writer.shutdown().await;
    }
    match tokio::time::timeout(CASE_LIMIT, served).await {
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "the connection did not end within {CASE_LIMIT:?}"
            )));
        }
        Ok(Err(e)) if e.is_panic() => {
            return Err(TestCaseError::fail(format!("the connection panicked: {e}")));
        }
        Ok(Err(e)) => return Err(TestCaseError::fail(format!("the connection failed: {e}"))),
        Ok(Ok(())) => {}
    }
    let _ = drain.await;
    Ok(())
}

/// Every connection that ended gave its slot back.
fn no_slot_held(ctx: &Context) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        ctx.metrics.connections.get(),
        0,
        "connections that ended still hold their slots"
    );
    Ok(())
}

/// The packets at the front of `buf` that the server sent, as whole
/// frames with the length of their fixed header, taken off `buf`; a
/// partial packet stays.
fn server_frames(buf: &mut BytesMut) -> Vec<(BytesMut, usize)> {
    let mut frames = Vec::new();
    loop {
        let mut len = 0usize;
        let mut at = 1;
        let complete = loop {
            let Some(&byte) = buf.get(at) else {
                break false;
            };
            len |= usize::from(byte & 0x7F) << (7 * (at - 1));
            at += 1;
            if byte & 0x80 == 0 {
                break true;
            }
        };
        if !complete || buf.len() < at + len {
            return frames;
        }
        frames.push((buf.split_to(at + len), at));
    }
}

/// A client that does everything right: CONNECT, SUBSCRIBE to its own
/// topic, PUBLISH there at QoS 1; it must get a successful CONNACK, a
/// SUBACK granting QoS 1, a PUBACK, and its message back.
async fn good_client(ctx: &Arc<Context>, version: Version, n: u64) -> Result<(), TestCaseError> {
    let client_id = format!("good-{n}");
    let topic = format!("good/{n}");
    let payload = format!("message {n}");
    let (server, mut stream) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(Arc::clone(ctx).admit(server, None));
    let mut out = encode(
        version,
        Packet::Connect(
            Connect {
                keep_alive: 0,
                client_id,
                clean_session: true,
            },
            None,
            None,
            None,
            None,
        ),
    );
    let filter = Filter {
        path: topic.clone(),
        qos: QoS::AtLeastOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    };
    out.extend(encode(
        version,
        Packet::Subscribe(
            Subscribe {
                pkid: 1,
                filters: vec![filter],
            },
            None,
        ),
    ));
    let publish = OutgoingPublish {
        topic: topic.as_bytes(),
        payload: payload.as_bytes(),
        qos: 1,
        pkid: 2,
        dup: false,
        retain: false,
    };
    out.extend(encode(version, Packet::Publish(publish.packet(), None)));
    prop_assert!(stream.write_all(&out).await.is_ok(), "CONNECT refused");

    let codec = Codec::new(version, 1 << 20);
    let (mut connacked, mut subacked, mut pubacked, mut delivered) = (false, false, false, None);
    let mut buf = BytesMut::new();
    let exchange = tokio::time::timeout(CASE_LIMIT, async {
        while !(connacked && subacked && pubacked && delivered.is_some()) {
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                break;
            }
            for (mut frame, at) in server_frames(&mut buf) {
                let kind = frame[0] >> 4;
                let body = frame.split_off(at);
                match kind {
                    2 => connacked = body.get(1) == Some(&0),
                    9 => subacked = body.starts_with(&[0, 1]) && body.last() == Some(&1),
                    4 => {
                        let success = body.get(2).is_none_or(|&reason| reason == 0);
                        pubacked |= body.starts_with(&[0, 2]) && success;
                    }
                    3 => {
                        frame.unsplit(body);
                        if let Ok(Some((Packet::Publish(p, _), Some(header)))) =
                            codec.decode(&mut frame)
                        {
                            delivered = Some((p.topic, p.payload, header.pkid));
                        }
                    }
                    _ => {}
                }
            }
        }
    })
    .await;
    prop_assert!(exchange.is_ok(), "no answer within {:?}", CASE_LIMIT);
    prop_assert!(connacked, "no successful CONNACK");
    prop_assert!(subacked, "no SUBACK granting QoS 1");
    prop_assert!(pubacked, "no PUBACK");
    let Some((got_topic, got_payload, pkid)) = delivered else {
        return Err(TestCaseError::fail("the message did not come back"));
    };
    prop_assert_eq!(&got_topic[..], topic.as_bytes());
    prop_assert_eq!(&got_payload[..], payload.as_bytes());

    let mut goodbye = encode(
        version,
        Packet::PubAck(
            PubAck {
                pkid,
                reason: PubAckReason::Success,
            },
            None,
        ),
    );
    goodbye.extend(encode(
        version,
        Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ),
    ));
    let _ = stream.write_all(&goodbye).await;
    let ended = tokio::time::timeout(CASE_LIMIT, served).await;
    prop_assert!(
        matches!(ended, Ok(Ok(()))),
        "the good client's connection did not end cleanly: {:?}",
        ended
    );
    drop(stream);
    Ok(())
}

/// Names the worker threads of the runtimes these tests serve on.
const WORKER: &str = "mqtt-fuzz-worker";

/// Panics on the [`WORKER`] threads so far, caught or not: the broker
/// catches a connection's panic so it ends only that connection, which
/// would otherwise hide it from these tests.
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts the panics on [`WORKER`] threads (once per process), then
/// reports them as the default hook does.
fn count_worker_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(WORKER) {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            report(info);
        }));
    });
}

fn no_panic_so_far() -> Result<(), TestCaseError> {
    let panics = WORKER_PANICS.load(Ordering::SeqCst);
    prop_assert_eq!(
        panics,
        0,
        "a connection panicked (see the panic message above)"
    );
    Ok(())
}

/// A runtime like the server's, and a context on it.
fn fixture() -> (Runtime, TestContext) {
    count_worker_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(WORKER)
        .enable_all()
        .build()
        .expect("runtime");
    let test = {
        let _entered = runtime.enter();
        TestContext::new(SETTINGS)
    };
    (runtime, test)
}

#[test]
fn fuzzed_connections_end_cleanly_and_a_good_client_is_served_after_each() {
    let (runtime, test) = fixture();
    let ctx = &test.ctx;
    let mut runner = TestRunner::new(config(256));
    let cases = Cell::new(0u64);
    let result = runner.run(&(client(), version()), |(client, good_version)| {
        let n = cases.get() + 1;
        cases.set(n);
        runtime.block_on(async {
            serve_fuzzed(ctx, &client).await?;
            no_panic_so_far()?;
            no_slot_held(ctx)?;
            good_client(ctx, good_version, n).await?;
            no_slot_held(ctx)
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn many_fuzzed_connections_at_once_end_cleanly() {
    let (runtime, test) = fixture();
    let ctx = &test.ctx;
    let mut runner = TestRunner::new(config(32));
    let cases = Cell::new(0u64);
    let result = runner.run(&vec(client(), 2..12), |clients| {
        let n = cases.get() + 1;
        cases.set(n);
        runtime.block_on(async {
            let all = clients.iter().map(|c| serve_fuzzed(ctx, c));
            for outcome in futures_util::future::join_all(all).await {
                outcome?;
            }
            no_panic_so_far()?;
            no_slot_held(ctx)?;
            good_client(ctx, Version::V5, n).await?;
            good_client(ctx, Version::V311, n).await?;
            no_slot_held(ctx)
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
