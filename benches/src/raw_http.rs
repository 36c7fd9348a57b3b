//! A minimal HTTP/1.1 client for the queue benchmark's tidewire runs.
//!
//! One keep-alive connection per [`Connection`], one request at a time,
//! bodies framed by `Content-Length` both ways (tidewire's JSON answers
//! always carry one; a chunked answer is refused rather than misread).
//! Each request is one write and the answer's body is handed back without
//! a copy.
//!
//! Why not reqwest: per request it parses a URL, fills header maps, checks
//! a connection out of its pool and runs hyper's client dispatch, about
//! 60 µs of CPU on this machine for a request that carries ten 1 KiB
//! messages. That CPU comes out of the same two cores the broker runs on,
//! so the client, not the broker, would set the pace; RabbitMQ's peer is
//! driven by the equally minimal `raw_amqp` for the same reason.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer head this client reads.
const MAX_HEAD: usize = 16 * 1024;

/// An open keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    host: String,
    /// Bytes read past the last answer (none, as requests do not overlap).
    buf: BytesMut,
    out: Vec<u8>,
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Connection {
    /// Connects to `addr`, without Nagle's algorithm.
    pub async fn open(addr: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            host: addr.to_string(),
            buf: BytesMut::with_capacity(64 * 1024),
            out: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `method path` with a JSON `body` (none when empty) and reads
    /// the answer.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Answer> {
        // Bytes left over would be the answer to a request that was
        // dropped half way: this connection cannot be trusted any more.
        ensure!(
            self.buf.is_empty(),
            "the connection holds an unread answer (a request was cancelled)"
        );
        self.out.clear();
        self.out.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                self.host,
                body.len()
            )
            .as_bytes(),
        );
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.read_answer()
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Sends `method path` and fails unless the answer is a 2xx; its body.
    pub async fn expect_ok(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Bytes> {
        let answer = self.request(method, path, body).await?;
        ensure!(
            (200..300).contains(&answer.status),
            "{method} {path}: {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        Ok(answer.body)
    }

    async fn read_answer(&mut self) -> Result<Answer> {
        let head_len = loop {
            if let Some(at) = head_end(&self.buf) {
                break at;
            }
            ensure!(
                self.buf.len() < MAX_HEAD,
                "an answer head over {MAX_HEAD} bytes"
            );
            self.fill().await?;
        };
        let head =
            std::str::from_utf8(&self.buf[..head_len - 4]).context("a head that is not text")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .context("no status line")?;
        let length = match content_length(lines)? {
            Some(length) => length,
            None if status < 200 || status == 204 || status == 304 => 0,
            None => {
                bail!("a {status} answer without Content-Length, which this client does not read")
            }
        };
        let _ = self.buf.split_to(head_len);
        while self.buf.len() < length {
            self.fill().await?;
        }
        let body = self.buf.split_to(length).freeze();
        Ok(Answer { status, body })
    }

    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(64 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}

/// Where the HTTP head at the start of `buf` ends, just past its blank
/// line, once `buf` holds all of it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The body length a head's header `lines` give: its `Content-Length`, if
/// any. A `Transfer-Encoding` is refused, and so is a line that is not a
/// header: these minimal peers read only `Content-Length` bodies.
pub fn content_length<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Option<usize>> {
    let mut length = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("a bad header line {line:?}"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().context("a bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("transfer-encoding {} is not read here", value.trim());
        }
    }
    Ok(length)
}
