//! The HTTP listener against the real binary: every error answer in the
//! API's JSON shape, a deadline for request headers (slowloris), and the
//! cap on connections per client address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::*;

/// A generous bound for the server to act on a connection.
const CLOSE_WAIT: Duration = Duration::from_secs(20);
/// axum's default body limit, which `POST /api/v1/sql` keeps.
const SQL_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Asserts a JSON error answer: `status`, `application/json` and an
/// `error` text containing `text`.
async fn assert_json_error(response: reqwest::Response, status: u16, text: &str) {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json", "status {status}");
    let body: Value = response.json().await.expect("a JSON body");
    let error = body["error"].as_str().expect("an error text");
    assert!(
        error.to_lowercase().contains(text),
        "status {status}: {body}"
    );
}

#[tokio::test]
async fn every_error_answer_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "").await;
    let api = Api::new(broker.http_url());

    // A body over the SQL route's limit: axum's own 413. Exactly one byte
    // over, so the server reads everything sent and the answer arrives
    // cleanly.
    let filler = "x".repeat(SQL_BODY_LIMIT + 1 - r#"{"sql":"SELECT ''"}"#.len());
    let body = format!(r#"{{"sql":"SELECT '{filler}'"}}"#);
    assert_eq!(body.len(), SQL_BODY_LIMIT + 1);
    let response = api
        .client()
        .post(api.url("/api/v1/sql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /api/v1/sql");
    assert_json_error(response, 413, "length limit").await;

    // A wrong method on a route of another crate's router: axum's empty
    // 405, which keeps its Allow header.
    let response = api
        .client()
        .put(api.url("/api/v1/sql"))
        .send()
        .await
        .expect("PUT /api/v1/sql");
    let allow = response.headers().get("allow").cloned();
    assert!(
        allow.is_some_and(|a| a.to_str().is_ok_and(|a| a.contains("POST"))),
        "405 keeps Allow"
    );
    assert_json_error(response, 405, "method not allowed").await;

    // A query string the records route cannot parse, and a missing route.
    let response = api
        .client()
        .get(api.url("/api/v1/streams/events/records?limit=x"))
        .send()
        .await
        .expect("GET records");
    assert_json_error(response, 400, "limit").await;
    let response = api
        .client()
        .delete(api.url("/api/v1/nothing"))
        .send()
        .await
        .expect("DELETE");
    assert_json_error(response, 404, "no such endpoint").await;

    // Answers that are not errors keep their own format.
    let response = api
        .client()
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"text/plain"))
    );
}

/// Reads until the server hangs up; what it sent meanwhile. Fails the test
/// unless that happens within [`CLOSE_WAIT`].
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server did not close the connection");
    received
}

#[tokio::test]
async fn slow_headers_are_cut_off_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "[http]\nheader_read_timeout = \"1s\"\n").await;
    let addr = broker.listeners["http"];
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: tidewire\r\nX-Slow: ")
        .await
        .expect("write");
    // A slowloris client: one header byte every 100 ms, never the end of
    // the headers. The server must hang up on its own.
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let hung_up = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            if tcp.write_all(b"a").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(hung_up.is_ok(), "the server held a slow client");
    let answer = String::from_utf8_lossy(&received);
    assert!(!answer.contains(" 200 "), "no request was served: {answer}");
    assert!(metric(&broker, "tidewire_http_header_timeouts_total").await >= 1.0);

    // A connection that sends nothing at all is closed too.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    read_until_closed(&mut idle).await;

    // Prompt clients are served as before.
    let (status, _) = Api::new(broker.http_url())
        .get("/healthz")
        .await
        .expect("healthz");
    assert_eq!(status, 200);
}

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// Sends a whole request on `tcp`; whether an answer came back before the
/// server hung up.
async fn answered(mut tcp: TcpStream) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nHost: tidewire\r\nConnection: close\r\n\r\n";
    // A write to a connection the server already closed may fail; the
    // read below tells.
    let _ = tcp.write_all(request).await;
    let received = read_until_closed(&mut tcp).await;
    String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "[http]\nmax_connections_per_ip = 3\n").await;
    let addr = broker.listeners["http"];
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // The server takes connections in order: the fourth is over the cap.
    let over = TcpStream::connect(addr).await.expect("connect");
    assert!(
        !answered(over).await,
        "a fourth connection is closed unserved"
    );

    // The count is per address: another loopback address is served (where
    // the system routes 127.0.0.2 to the loopback interface, as Linux
    // does).
    match connect_from([127, 0, 0, 2], addr).await {
        Ok(other) => assert!(answered(other).await, "another address has its own cap"),
        Err(e) => eprintln!("skipping the second address: {e}"),
    }

    // Closing one frees its slot.
    held.pop();
    let mut served = false;
    for _ in 0..50 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        if answered(tcp).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a slot frees when a connection closes");
    drop(held);
    let mut refused = 0.0;
    for _ in 0..50 {
        let got = reqwest::get(format!("{}/metrics", broker.http_url())).await;
        if let Ok(response) = got {
            let text = response.text().await.expect("metrics text");
            refused = text
                .lines()
                .filter(|l| {
                    l.starts_with(
                        "tidewire_http_connections_refused_total{reason=\"per_ip_limit\"}",
                    )
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused >= 1.0, "refusals are counted");
}
