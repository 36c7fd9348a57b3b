//! The webhook and email targets through [`Targets`], over real sockets:
//! an axum HTTP receiver and a minimal SMTP responder, both in-process on
//! port 0. Nothing is mocked on the client side: the requests go through
//! the shared reqwest client and the lettre transport the broker uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use tidewire_core::stream_config::StreamConfig;
use tidewire_core::{Broker, Catalog, CatalogLimits, ConfigError, Limits, PublishMetrics, Streams};
use tidewire_queues::{QueueMetrics, Queues};
use tidewire_storage::{OnFatal, StorageMetrics};
use tidewire_targets::http::{DEFAULT_CONTENT_TYPE, MAX_IN_FLIGHT, MAX_REASON_BODY_CHARS};
use tidewire_targets::{
    Delivery, SinkError, SmtpConfig, SmtpTls, Target, TargetOptions, TargetSpec, Targets,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const KEY: &str = "subscriptions[0].target";

/// A broker with no queues and the default stream, for [`Targets`].
struct Node {
    _dir: tempfile::TempDir,
    targets: Targets,
}

fn node(smtp: Option<SmtpConfig>) -> Node {
    open(smtp).unwrap_or_else(|e| panic!("targets: {e}"))
}

fn open(smtp: Option<SmtpConfig>) -> Result<Node, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut registry = prometheus_client::registry::Registry::default();
    let storage = StorageMetrics::register(&mut registry);
    let on_fatal: OnFatal = Arc::new(|e| panic!("fatal storage error: {e}"));
    let spec = StreamConfig::default_stream()
        .validate("streams[0]")
        .expect("valid");
    let streams =
        Streams::open(dir.path(), vec![spec], &storage, on_fatal.clone()).expect("streams");
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
        &[],
        storage,
        on_fatal,
        QueueMetrics::register(&mut registry),
        10,
    )
    .expect("queues");
    let targets = Targets::new(broker, queues, smtp)?;
    Ok(Node { _dir: dir, targets })
}

fn delivery(body: &'static [u8]) -> Delivery {
    Delivery {
        message_id: "0b6c8a4e-1".to_owned(),
        topic: "plant/boiler/temp".to_owned(),
        subject: None,
        body: Bytes::from_static(body),
        content_type: None,
        attributes: BTreeMap::new(),
        headers: Vec::new(),
        timestamp_ms: 1_714_564_800_000,
    }
}

fn build(node: &Node, spec: &str, options: &TargetOptions) -> Arc<dyn Target> {
    let spec = TargetSpec::parse(spec, KEY).expect("spec");
    node.targets.build(&spec, options, KEY).expect("build")
}

fn reason(outcome: Result<(), SinkError>) -> (&'static str, String) {
    match outcome {
        Ok(()) => ("ok", String::new()),
        Err(SinkError::Retry { reason }) => ("retry", reason),
        Err(SinkError::Rejected { reason }) => ("rejected", reason),
    }
}

// ---------------------------------------------------------------------------
// The HTTP receiver.

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    accepts: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// The 10 MB answered by `/huge-*`, after which the body never ends: a
/// client that read it all would wait until its timeout.
const HUGE: usize = 10 * 1024 * 1024;

async fn start() -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/ok", post(ok))
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/busy", post(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route(
            "/missing",
            post(|| async { (StatusCode::NOT_FOUND, "no such hook") }),
        )
        .route(
            "/moved",
            post(|| async { (StatusCode::MOVED_PERMANENTLY, [("location", "/ok")]) }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::OK
            }),
        )
        .route("/huge-ok", post(|| async { huge(StatusCode::OK) }))
        .route(
            "/huge-bad",
            post(|| async { huge(StatusCode::BAD_REQUEST) }),
        )
        .route("/hold", post(hold))
        .with_state(Arc::clone(&receiver));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let counting = Arc::clone(&receiver);
    let listener = listener.tap_io(move |_| {
        counting.accepts.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), receiver)
}

async fn ok(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> &'static str {
    r.seen.lock().expect("lock").push(Seen { headers, body });
    "ok"
}

fn huge(status: StatusCode) -> Response {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks =
        stream::iter((0..HUGE / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    (status, Body::from_stream(chunks.chain(stream::pending()))).into_response()
}

/// Holds each request 200 ms, recording how many are in at once.
async fn hold(State(r): State<Arc<Receiver>>) -> StatusCode {
    let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    r.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.in_flight.fetch_sub(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------
// Webhooks.

#[tokio::test]
async fn webhook_answers_are_classified_with_status_and_url() {
    let (base, _receiver) = start().await;
    let node = node(None);
    let options = TargetOptions::default();
    for (path, kind, says) in [
        ("/ok", "ok", String::new()),
        (
            "/fail",
            "retry",
            format!("POST {base}/fail: 500 Internal Server Error: boom"),
        ),
        (
            "/busy",
            "retry",
            format!("POST {base}/busy: 429 Too Many Requests"),
        ),
        (
            "/missing",
            "rejected",
            format!("POST {base}/missing: 404 Not Found: no such hook"),
        ),
        (
            "/moved",
            "rejected",
            format!("POST {base}/moved: 301 Moved Permanently"),
        ),
    ] {
        let target = build(&node, &format!("{base}{path}"), &options);
        let (got, why) = reason(target.deliver(delivery(b"{}")).await);
        assert_eq!((got, why.as_str()), (kind, says.as_str()), "{path}");
    }
}

#[tokio::test]
async fn a_webhook_past_its_timeout_is_retried() {
    let (base, _receiver) = start().await;
    let node = node(None);
    let options = TargetOptions {
        timeout: Some(Duration::from_millis(300)),
        ..TargetOptions::default()
    };
    let target = build(&node, &format!("{base}/slow"), &options);
    let started = Instant::now();
    let (got, why) = reason(target.deliver(delivery(b"x")).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(got, "retry");
    assert_eq!(why, format!("POST {base}/slow: no answer within 300ms"));
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried() {
    let closed = closed_port().await;
    let node = node(None);
    let target = build(
        &node,
        &format!("http://{closed}/hook"),
        &TargetOptions::default(),
    );
    let (got, why) = reason(target.deliver(delivery(b"x")).await);
    assert_eq!(got, "retry");
    assert!(
        why.starts_with(&format!("POST http://{closed}/hook: cannot connect: ")),
        "{why}"
    );
}

/// A 10 MB answer (that then never ends) is neither read to its end nor
/// kept: the outcome comes long before the 5 s timeout, and the reason
/// quotes at most a couple of hundred characters of it.
#[tokio::test]
async fn a_huge_answer_is_not_buffered() {
    let (base, _receiver) = start().await;
    let node = node(None);
    let options = TargetOptions {
        timeout: Some(Duration::from_secs(5)),
        ..TargetOptions::default()
    };
    for (path, kind) in [("/huge-ok", "ok"), ("/huge-bad", "rejected")] {
        let target = build(&node, &format!("{base}{path}"), &options);
        let started = Instant::now();
        let (got, why) = reason(target.deliver(delivery(b"x")).await);
        let took = started.elapsed();
        assert_eq!(got, kind, "{path}: {why}");
        assert!(took < Duration::from_secs(2), "{path} took {took:?}");
        assert!(
            why.chars().count() < 100 + MAX_REASON_BODY_CHARS,
            "{path}: {} chars",
            why.len()
        );
        if kind == "rejected" {
            let prefix = format!("POST {base}{path}: 400 Bad Request: ");
            let quoted = why.strip_prefix(&prefix).expect("prefix");
            assert_eq!(quoted, format!("{}…", "x".repeat(MAX_REASON_BODY_CHARS)));
        }
    }
}

#[tokio::test]
async fn headers_are_passed_and_the_content_type_defaults() {
    let (base, receiver) = start().await;
    let node = node(None);
    let options = TargetOptions {
        headers: BTreeMap::from([
            ("Authorization".to_owned(), "Bearer t0k3n".to_owned()),
            ("x-source".to_owned(), "configured".to_owned()),
        ]),
        ..TargetOptions::default()
    };
    let target = build(&node, &format!("{base}/ok"), &options);
    let mut raw = delivery(b"hello");
    raw.headers = vec![
        (
            "x-amz-sns-message-type".to_owned(),
            "Notification".to_owned(),
        ),
        ("x-source".to_owned(), "delivery".to_owned()),
    ];
    target.deliver(raw).await.expect("raw");
    let mut enveloped = delivery(b"{\"Message\":\"hello\"}");
    enveloped.content_type = Some("application/json".to_owned());
    target.deliver(enveloped).await.expect("envelope");

    let seen = receiver.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    let header = |i: usize, name: &str| {
        seen[i]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(seen[0].body, Bytes::from_static(b"hello"));
    assert_eq!(
        header(0, "content-type").as_deref(),
        Some(DEFAULT_CONTENT_TYPE)
    );
    assert_eq!(
        header(0, "x-amz-sns-message-type").as_deref(),
        Some("Notification")
    );
    assert_eq!(header(0, "authorization").as_deref(), Some("Bearer t0k3n"));
    assert_eq!(
        header(0, "x-source").as_deref(),
        Some("configured"),
        "the target's header wins"
    );
    assert_eq!(
        header(0, "x-tidewire-signature"),
        None,
        "no secret, no signature"
    );
    assert_eq!(
        header(1, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(seen[1].body, Bytes::from_static(b"{\"Message\":\"hello\"}"));
}

/// The signature checked against RFC 4231's test case 2, computed by no
/// code of ours.
#[tokio::test]
async fn the_signature_is_the_hmac_sha256_of_the_body() {
    let (base, receiver) = start().await;
    let node = node(None);
    let options = TargetOptions {
        hmac_secret: Some("Jefe".to_owned()),
        ..TargetOptions::default()
    };
    let target = build(&node, &format!("{base}/ok"), &options);
    target
        .deliver(delivery(b"what do ya want for nothing?"))
        .await
        .expect("delivered");
    let seen = receiver.seen.lock().expect("lock").clone();
    let signature = seen[0].headers.get("x-tidewire-signature").expect("signed");
    assert_eq!(
        signature.to_str().expect("ascii"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[tokio::test]
async fn deliveries_reuse_one_kept_alive_connection() {
    let (base, receiver) = start().await;
    let node = node(None);
    let target = build(&node, &format!("{base}/ok"), &TargetOptions::default());
    for _ in 0..5 {
        target.deliver(delivery(b"again")).await.expect("delivered");
    }
    assert_eq!(receiver.seen.lock().expect("lock").len(), 5);
    assert_eq!(receiver.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn requests_in_flight_are_bounded_per_target() {
    let (base, receiver) = start().await;
    let node = node(None);
    let target = build(&node, &format!("{base}/hold"), &TargetOptions::default());
    let deliveries: Vec<_> = (0..3 * MAX_IN_FLIGHT)
        .map(|_| target.deliver(delivery(b"x")))
        .collect();
    for outcome in join_all(deliveries).await {
        outcome.expect("delivered");
    }
    assert_eq!(
        receiver.most_in_flight.load(Ordering::SeqCst),
        MAX_IN_FLIGHT
    );
}

/// HTTPS goes through rustls and checks the certificate against the OS
/// roots: a receiver with a certificate from the test CA (which they do
/// not hold) is not sent the message, and the reason says why.
#[tokio::test]
async fn https_checks_the_certificate() {
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../tls/testdata");
    let settings = tidewire_tls::TlsConfig {
        cert: Some(format!("{testdata}/server.pem").into()),
        key: Some(format!("{testdata}/server.key").into()),
        ..tidewire_tls::TlsConfig::default()
    }
    .load()
    .expect("test certificate");
    let tls = tidewire_tls::Tls::new(settings, tidewire_tls::TlsMetrics::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let handshakes = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        tls.accept(socket, "test").await.is_some()
    });
    let node = node(None);
    let url = format!("https://localhost:{}/hook", address.port());
    let target = build(&node, &url, &TargetOptions::default());
    let (got, why) = reason(target.deliver(delivery(b"secret")).await);
    assert_eq!(got, "retry");
    assert_eq!(
        why,
        format!("POST {url}: cannot connect: invalid peer certificate: UnknownIssuer")
    );
    assert!(
        !handshakes.await.expect("server"),
        "the handshake was refused"
    );
}

#[tokio::test]
async fn bad_webhook_options_name_the_target() {
    let node = node(None);
    let spec = TargetSpec::parse("https://example.com/hook", KEY).expect("spec");
    for (options, says) in [
        (
            TargetOptions {
                headers: BTreeMap::from([("bad header".to_owned(), "v".to_owned())]),
                ..TargetOptions::default()
            },
            "headers: \"bad header\" is not a valid header name",
        ),
        (
            TargetOptions {
                hmac_secret: Some(String::new()),
                ..TargetOptions::default()
            },
            "hmac_secret: must not be empty",
        ),
        (
            TargetOptions {
                timeout: Some(Duration::ZERO),
                ..TargetOptions::default()
            },
            "timeout: must be more than 0",
        ),
    ] {
        let error = node.targets.build(&spec, &options, KEY).expect_err(says);
        assert_eq!((error.key.as_str(), error.message.as_str()), (KEY, says));
    }
}

#[tokio::test]
async fn probe_connects_to_webhooks_only() {
    let (base, _receiver) = start().await;
    let node = node(None);
    let probe = |text: String| {
        let targets = node.targets.clone();
        async move {
            let spec = TargetSpec::parse(&text, KEY).expect("spec");
            targets.probe(&spec).await
        }
    };
    probe(format!("{base}/ok")).await.expect("reachable");
    let closed = closed_port().await;
    assert_eq!(
        probe(format!("http://{closed}/hook")).await,
        Err(format!(
            "http://{closed}/hook is unreachable: connection refused"
        ))
    );
    let error = probe("http://no-such-host.invalid/hook".to_owned())
        .await
        .expect_err("no such host");
    assert!(
        error.starts_with(
            "http://no-such-host.invalid/hook is unreachable: cannot resolve no-such-host.invalid: "
        ),
        "{error}"
    );
    probe("queue:nowhere".to_owned()).await.expect("not probed");
    probe("mailto:ops@example.com".to_owned())
        .await
        .expect("not probed");
}

/// A port nothing listens on (just bound, then closed).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

// ---------------------------------------------------------------------------
// Email, against a minimal SMTP responder.

/// Answers a plain SMTP session; `rcpt` is the reply to each RCPT TO.
/// Records every message's DATA.
async fn smtp_server(rcpt: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let mails = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&mails);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let mails = Arc::clone(&recorded);
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await?;
                while let Some(line) = lines.next_line().await? {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250 test",
                        "RCPT" => rcpt,
                        "DATA" => {
                            write.write_all(b"354 go ahead\r\n").await?;
                            let mut data = String::new();
                            while let Some(line) = lines.next_line().await? {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            mails.lock().expect("lock").push(data);
                            "250 queued"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await?;
                            break;
                        }
                        _ => "250 ok",
                    };
                    write.write_all(format!("{reply}\r\n").as_bytes()).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (address, mails)
}

fn smtp(address: SocketAddr) -> SmtpConfig {
    SmtpConfig {
        host: address.ip().to_string(),
        port: Some(address.port()),
        tls: SmtpTls::None,
        username: None,
        password: None,
        from: "Tidewire <alerts@example.com>".to_owned(),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn an_email_goes_out_with_its_templates() {
    let (address, mails) = smtp_server("250 ok").await;
    let node = node(Some(smtp(address)));
    let options = TargetOptions {
        email_subject: Some("[{attr.severity}] {topic}".to_owned()),
        email_body: Some("{message}\nid {message_id} at {timestamp}".to_owned()),
        ..TargetOptions::default()
    };
    let target = build(&node, "mailto:ops@example.com,oncall@example.com", &options);
    let mut alert = delivery(b"boiler at 98.5C");
    alert.attributes.insert(
        "severity".to_owned(),
        tidewire_queues::Attribute {
            data_type: "String".to_owned(),
            string: Some("high".to_owned()),
            binary: None,
        },
    );
    target.deliver(alert).await.expect("sent");
    target
        .deliver(delivery(b"second"))
        .await
        .expect("sent again");

    let mails = mails.lock().expect("lock").clone();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let first = &mails[0];
    for line in [
        "From: Tidewire <alerts@example.com>",
        "To: ops@example.com, oncall@example.com",
        "Subject: [high] plant/boiler/temp",
        "Message-ID: <0b6c8a4e-1@tidewire>",
        "Content-Type: text/plain; charset=utf-8",
        "boiler at 98.5C",
        "id 0b6c8a4e-1 at 2024-05-01T12:00:00.000Z",
    ] {
        assert!(
            first.lines().any(|l| l == line),
            "{line:?} not in:\n{first}"
        );
    }
    assert!(
        mails[1]
            .lines()
            .any(|l| l == "Subject: [] plant/boiler/temp"),
        "{}",
        mails[1]
    );
}

#[tokio::test]
async fn default_subject_is_the_message_subject_else_the_topic() {
    let (address, mails) = smtp_server("250 ok").await;
    let node = node(Some(smtp(address)));
    let target = build(&node, "mailto:ops@example.com", &TargetOptions::default());
    let mut with_subject = delivery(b"body one");
    with_subject.subject = Some("Boiler alarm".to_owned());
    target.deliver(with_subject).await.expect("sent");
    target.deliver(delivery(b"body two")).await.expect("sent");
    let mails = mails.lock().expect("lock").clone();
    assert!(
        mails[0].lines().any(|l| l == "Subject: Boiler alarm"),
        "{}",
        mails[0]
    );
    assert!(mails[0].lines().any(|l| l == "body one"), "{}", mails[0]);
    assert!(
        mails[1]
            .lines()
            .any(|l| l == "Subject: tidewire: plant/boiler/temp"),
        "{}",
        mails[1]
    );
}

#[tokio::test]
async fn smtp_refusals_are_rejected_or_retried() {
    for (rcpt, kind, says) in [
        (
            "550 5.1.1 mailbox unavailable",
            "rejected",
            "permanent error (550)",
        ),
        (
            "451 4.3.0 try again later",
            "retry",
            "transient error (451)",
        ),
        (
            "535 5.7.8 authentication failed",
            "retry",
            "permanent error (535)",
        ),
    ] {
        let (address, mails) = smtp_server(rcpt).await;
        let node = node(Some(smtp(address)));
        let target = build(&node, "mailto:ops@example.com", &TargetOptions::default());
        let (got, why) = reason(target.deliver(delivery(b"x")).await);
        assert_eq!(got, kind, "{rcpt}: {why}");
        assert!(
            why.starts_with(&format!("SMTP {address}: {says}")),
            "{rcpt}: {why}"
        );
        let server_text = rcpt.split_once(' ').map_or("", |(_, t)| t);
        assert!(why.contains(server_text), "{rcpt}: {why}");
        assert!(mails.lock().expect("lock").is_empty());
    }
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried() {
    let closed = closed_port().await;
    let node = node(Some(smtp(closed)));
    let target = build(&node, "mailto:ops@example.com", &TargetOptions::default());
    let (got, why) = reason(target.deliver(delivery(b"x")).await);
    assert_eq!(got, "retry", "{why}");
    assert!(why.starts_with(&format!("SMTP {closed}: ")), "{why}");
}

#[tokio::test]
async fn email_targets_need_smtp_and_known_placeholders() {
    let spec = TargetSpec::parse("mailto:ops@example.com", KEY).expect("spec");
    let without = node(None);
    let error = without
        .targets
        .build(&spec, &TargetOptions::default(), KEY)
        .expect_err("no [smtp]");
    assert_eq!(error.key, KEY);
    assert_eq!(error.message, "mailto: targets need [smtp] in the config");

    let (address, _mails) = smtp_server("250 ok").await;
    let with = node(Some(smtp(address)));
    let options = TargetOptions {
        email_body: Some("{message} from {sender}".to_owned()),
        ..TargetOptions::default()
    };
    let error = with
        .targets
        .build(&spec, &options, KEY)
        .expect_err("unknown placeholder");
    assert_eq!(error.key, KEY);
    assert!(
        error
            .message
            .starts_with("email_body: unknown placeholder {sender}"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_bad_smtp_table_fails_targets_naming_the_field() {
    let mut bad = smtp(closed_port().await);
    bad.from = "not an address".to_owned();
    assert_eq!(bad.validate("smtp").expect_err("bad from").key, "smtp.from");
    match open(Some(bad)) {
        Ok(_) => panic!("Targets::new took a bad [smtp]"),
        Err(error) => {
            assert_eq!(error.key, "smtp.from");
            assert!(
                error
                    .message
                    .contains("\"not an address\" is not an email address"),
                "{error}"
            );
        }
    }
}
