//! A minimal AMQP 0.9.1 client for the queue benchmark's RabbitMQ peer.
//!
//! It speaks only what the benchmark needs, on one channel per
//! connection: the handshake (PLAIN, no heartbeats), declaring a durable
//! quorum queue, publisher confirms, `basic.publish` of persistent
//! messages to the default exchange, `basic.qos` + `basic.consume`,
//! deliveries and `basic.ack`. Each connection belongs to one task, so
//! there is no multiplexing.
//!
//! Why not lapin: every lapin release that builds on tokio turns on
//! `futures-io/default` (and lapin 3's tokio adapters `tokio-util/compat`)
//! for the whole workspace, which changes the features of crates the
//! broker and DataFusion build on and rebuilds them all. This client needs
//! nothing the workspace does not already build, and like `raw_mqtt` it
//! spends little CPU, so the broker, not the client, sets the pace.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xce;
/// The channel every connection uses.
const CHANNEL: u16 = 1;
/// Frame size this client asks for (the server may lower it).
const FRAME_MAX: u32 = 128 * 1024;

/// (class, method) ids.
const CONNECTION_START: (u16, u16) = (10, 10);
const CONNECTION_START_OK: (u16, u16) = (10, 11);
const CONNECTION_TUNE: (u16, u16) = (10, 30);
const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
const CONNECTION_OPEN: (u16, u16) = (10, 40);
const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
const CONNECTION_CLOSE: (u16, u16) = (10, 50);
const CHANNEL_OPEN: (u16, u16) = (20, 10);
const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
const CHANNEL_CLOSE: (u16, u16) = (20, 40);
const QUEUE_DECLARE: (u16, u16) = (50, 10);
const QUEUE_DECLARE_OK: (u16, u16) = (50, 11);
const BASIC_QOS: (u16, u16) = (60, 10);
const BASIC_QOS_OK: (u16, u16) = (60, 11);
const BASIC_CONSUME: (u16, u16) = (60, 20);
const BASIC_CONSUME_OK: (u16, u16) = (60, 21);
const BASIC_PUBLISH: (u16, u16) = (60, 40);
const BASIC_DELIVER: (u16, u16) = (60, 60);
const BASIC_ACK: (u16, u16) = (60, 80);
const BASIC_NACK: (u16, u16) = (60, 120);
const CONFIRM_SELECT: (u16, u16) = (85, 10);
const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);

/// One open connection with channel 1 open on it.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// What was read and not yet taken.
    buf: BytesMut,
    frame_max: usize,
    /// Publisher confirms: the sequence number of the next publish.
    next_seq: u64,
    /// Publisher confirms: publishes not yet confirmed.
    unconfirmed: BTreeSet<u64>,
}

/// A message the server delivered to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// Its delivery tag, for [`Connection::ack`].
    pub tag: u64,
    /// Its body.
    pub body: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` as `user`/`password` (PLAIN) on vhost `/` and
    /// opens channel 1.
    pub async fn open(addr: SocketAddr, user: &str, password: &str) -> Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            frame_max: FRAME_MAX as usize,
            next_seq: 1,
            unconfirmed: BTreeSet::new(),
        };
        conn.stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        conn.expect(0, CONNECTION_START).await?;
        let mut args = Vec::new();
        table(&mut args, &[]);
        shortstr(&mut args, "PLAIN");
        longstr(&mut args, format!("\0{user}\0{password}").as_bytes());
        shortstr(&mut args, "en_US");
        conn.send_method(0, CONNECTION_START_OK, &args).await?;
        let tune = conn.expect(0, CONNECTION_TUNE).await?;
        let mut r = Reader::new(&tune);
        let channel_max = r.u16()?;
        let server_frame_max = r.u32()?;
        let frame_max = match server_frame_max {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        };
        conn.frame_max = frame_max as usize;
        let mut args = Vec::new();
        args.extend(channel_max.to_be_bytes());
        args.extend(frame_max.to_be_bytes());
        args.extend(0u16.to_be_bytes()); // no heartbeats
        conn.send_method(0, CONNECTION_TUNE_OK, &args).await?;
        let mut args = Vec::new();
        shortstr(&mut args, "/");
        shortstr(&mut args, "");
        args.push(0);
        conn.send_method(0, CONNECTION_OPEN, &args).await?;
        conn.expect(0, CONNECTION_OPEN_OK).await?;
        let mut args = Vec::new();
        shortstr(&mut args, "");
        conn.send_method(CHANNEL, CHANNEL_OPEN, &args).await?;
        conn.expect(CHANNEL, CHANNEL_OPEN_OK).await?;
        Ok(conn)
    }

    /// Declares a durable quorum queue (or finds it); answers how many
    /// messages it holds.
    pub async fn declare_quorum_queue(&mut self, name: &str) -> Result<u32> {
        let mut args = Vec::new();
        args.extend(0u16.to_be_bytes());
        shortstr(&mut args, name);
        args.push(0b0000_0010); // durable
        table(&mut args, &[("x-queue-type", "quorum")]);
        self.send_method(CHANNEL, QUEUE_DECLARE, &args).await?;
        let ok = self.expect(CHANNEL, QUEUE_DECLARE_OK).await?;
        let mut r = Reader::new(&ok);
        r.shortstr()?;
        r.u32()
    }

    /// How many ready messages the queue holds (a passive declare).
    pub async fn message_count(&mut self, name: &str) -> Result<u32> {
        let mut args = Vec::new();
        args.extend(0u16.to_be_bytes());
        shortstr(&mut args, name);
        args.push(0b0000_0001); // passive
        table(&mut args, &[]);
        self.send_method(CHANNEL, QUEUE_DECLARE, &args).await?;
        let ok = self.expect(CHANNEL, QUEUE_DECLARE_OK).await?;
        let mut r = Reader::new(&ok);
        r.shortstr()?;
        r.u32()
    }

    /// Turns on publisher confirms.
    pub async fn confirm_select(&mut self) -> Result<()> {
        self.send_method(CHANNEL, CONFIRM_SELECT, &[0]).await?;
        self.expect(CHANNEL, CONFIRM_SELECT_OK).await?;
        Ok(())
    }

    /// Publishes `bodies` as persistent messages to `queue` (through the
    /// default exchange) in one write, and waits until the server has
    /// confirmed every one. Needs [`Connection::confirm_select`].
    pub async fn publish_confirmed(&mut self, queue: &str, bodies: &[Vec<u8>]) -> Result<()> {
        let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 96).sum());
        for body in bodies {
            let mut args = Vec::with_capacity(8 + queue.len());
            args.extend(0u16.to_be_bytes());
            shortstr(&mut args, "");
            shortstr(&mut args, queue);
            args.push(0);
            method_frame(&mut out, CHANNEL, BASIC_PUBLISH, &args);
            let mut header = Vec::with_capacity(15);
            header.extend(BASIC_PUBLISH.0.to_be_bytes());
            header.extend(0u16.to_be_bytes());
            header.extend((body.len() as u64).to_be_bytes());
            header.extend(0x1000u16.to_be_bytes()); // delivery-mode present
            header.push(2); // persistent
            frame(&mut out, FRAME_HEADER, CHANNEL, &header);
            for chunk in body.chunks(self.frame_max - 8) {
                frame(&mut out, FRAME_BODY, CHANNEL, chunk);
            }
            self.unconfirmed.insert(self.next_seq);
            self.next_seq += 1;
        }
        self.stream.write_all(&out).await?;
        while !self.unconfirmed.is_empty() {
            let (id, args) = self.method(CHANNEL).await?;
            let mut r = Reader::new(&args);
            let tag = r.u64()?;
            let multiple = r.u8()? & 1 == 1;
            match id {
                BASIC_ACK if multiple => self.unconfirmed = self.unconfirmed.split_off(&(tag + 1)),
                BASIC_ACK => {
                    self.unconfirmed.remove(&tag);
                }
                BASIC_NACK => bail!("the server refused publish {tag} (basic.nack)"),
                other => bail!("unexpected method {other:?} while waiting for confirms"),
            }
        }
        Ok(())
    }

    /// Starts consuming `queue` with manual acks, at most `prefetch`
    /// unacknowledged deliveries at a time.
    pub async fn consume(&mut self, queue: &str, prefetch: u16) -> Result<()> {
        let mut args = Vec::new();
        args.extend(0u32.to_be_bytes());
        args.extend(prefetch.to_be_bytes());
        args.push(0);
        self.send_method(CHANNEL, BASIC_QOS, &args).await?;
        self.expect(CHANNEL, BASIC_QOS_OK).await?;
        let mut args = Vec::new();
        args.extend(0u16.to_be_bytes());
        shortstr(&mut args, queue);
        shortstr(&mut args, "");
        args.push(0); // no-local, no-ack, exclusive, no-wait: all off
        table(&mut args, &[]);
        self.send_method(CHANNEL, BASIC_CONSUME, &args).await?;
        self.expect(CHANNEL, BASIC_CONSUME_OK).await?;
        Ok(())
    }

    /// The next delivery to this connection's consumer. Cancel-safe: a
    /// delivery is taken from the buffer only once all its frames are
    /// there, so a timeout around this loses nothing.
    pub async fn next_delivery(&mut self) -> Result<Delivery> {
        loop {
            if let Some(delivery) = self.buffered_delivery()? {
                return Ok(delivery);
            }
            self.fill().await?;
        }
    }

    /// A delivery whose frames have all arrived already, without waiting.
    pub fn buffered_delivery(&mut self) -> Result<Option<Delivery>> {
        let Some((delivery, len)) = parse_delivery(&self.buf)? else {
            return Ok(None);
        };
        self.buf.advance(len);
        Ok(Some(delivery))
    }

    /// Acknowledges delivery `tag` (and, with `multiple`, every earlier
    /// one).
    pub async fn ack(&mut self, tag: u64, multiple: bool) -> Result<()> {
        let mut args = Vec::with_capacity(9);
        args.extend(tag.to_be_bytes());
        args.push(u8::from(multiple));
        self.send_method(CHANNEL, BASIC_ACK, &args).await
    }

    /// Reads what the socket has into the buffer.
    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(64 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }

    async fn send_method(&mut self, channel: u16, id: (u16, u16), args: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(args.len() + 12);
        method_frame(&mut out, channel, id, args);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Reads the next method on `channel` (or a close on any), skipping
    /// heartbeats: its ids and arguments.
    async fn method(&mut self, channel: u16) -> Result<((u16, u16), Vec<u8>)> {
        let (frame_channel, id, args, len) = loop {
            if let Some((frame, len)) = peek_frame(&self.buf, 0)? {
                if frame.kind == FRAME_HEARTBEAT {
                    self.buf.advance(len);
                    continue;
                }
                let (id, args) = method_of(&frame)?;
                break (frame.channel, id, args.to_vec(), len);
            }
            self.fill().await?;
        };
        self.buf.advance(len);
        if id == CONNECTION_CLOSE || id == CHANNEL_CLOSE {
            let mut r = Reader::new(&args);
            let code = r.u16()?;
            let text = r.shortstr()?;
            let what = if frame_channel == 0 {
                "connection"
            } else {
                "channel"
            };
            bail!("the server closed the {what}: {code} {text}");
        }
        ensure!(
            frame_channel == channel,
            "a method on channel {frame_channel}, expected {channel}"
        );
        Ok((id, args))
    }

    async fn expect(&mut self, channel: u16, id: (u16, u16)) -> Result<Vec<u8>> {
        let (got, args) = self.method(channel).await?;
        ensure!(got == id, "expected method {id:?}, got {got:?}");
        Ok(args)
    }
}

/// A frame in a buffer.
struct Frame<'a> {
    kind: u8,
    channel: u16,
    payload: &'a [u8],
}

/// The frame that starts at `at` in `buf`, and where the next one starts;
/// `None` until all of it has arrived.
fn peek_frame(buf: &[u8], at: usize) -> Result<Option<(Frame<'_>, usize)>> {
    let Some(head) = buf.get(at..at + 7) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let end = at + 7 + size;
    let Some(&last) = buf.get(end) else {
        return Ok(None);
    };
    ensure!(last == FRAME_END, "bad AMQP frame end");
    Ok(Some((
        Frame {
            kind: head[0],
            channel: u16::from_be_bytes([head[1], head[2]]),
            payload: &buf[at + 7..end],
        },
        end + 1,
    )))
}

/// The delivery (`basic.deliver`, content header, body frames) at the
/// start of `buf`, after any heartbeats, and the bytes it takes; `None`
/// until all of it has arrived.
fn parse_delivery(buf: &[u8]) -> Result<Option<(Delivery, usize)>> {
    let mut at = 0;
    let method = loop {
        let Some((frame, next)) = peek_frame(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if frame.kind != FRAME_HEARTBEAT {
            break frame;
        }
    };
    let (id, args) = method_of(&method)?;
    ensure!(id == BASIC_DELIVER, "expected basic.deliver, got {id:?}");
    let mut r = Reader::new(args);
    r.shortstr()?;
    let tag = r.u64()?;
    let Some((header, next)) = peek_frame(buf, at)? else {
        return Ok(None);
    };
    ensure!(header.kind == FRAME_HEADER, "expected a content header");
    at = next;
    let mut r = Reader::new(header.payload);
    r.u16()?;
    r.u16()?;
    let size = usize::try_from(r.u64()?)?;
    let mut body = Vec::with_capacity(size);
    while body.len() < size {
        let Some((part, next)) = peek_frame(buf, at)? else {
            return Ok(None);
        };
        ensure!(part.kind == FRAME_BODY, "expected a body frame");
        body.extend_from_slice(part.payload);
        at = next;
    }
    Ok(Some((Delivery { tag, body }, at)))
}

/// A method frame's ids and arguments.
fn method_of<'a>(frame: &Frame<'a>) -> Result<((u16, u16), &'a [u8])> {
    ensure!(
        frame.kind == FRAME_METHOD,
        "expected a method frame, got type {}",
        frame.kind
    );
    let p = frame.payload;
    ensure!(p.len() >= 4, "short method frame");
    Ok((
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        &p[4..],
    ))
}

fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend(channel.to_be_bytes());
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

fn method_frame(out: &mut Vec<u8>, channel: u16, id: (u16, u16), args: &[u8]) {
    out.push(FRAME_METHOD);
    out.extend(channel.to_be_bytes());
    out.extend((args.len() as u32 + 4).to_be_bytes());
    out.extend(id.0.to_be_bytes());
    out.extend(id.1.to_be_bytes());
    out.extend_from_slice(args);
    out.push(FRAME_END);
}

fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A field table of string values.
fn table(out: &mut Vec<u8>, entries: &[(&str, &str)]) {
    let mut body = Vec::new();
    for (key, value) in entries {
        shortstr(&mut body, key);
        body.push(b'S');
        longstr(&mut body, value.as_bytes());
    }
    longstr(out, &body);
}

/// Reads big-endian fields from a method's arguments.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.bytes.len() >= n, "short AMQP method arguments");
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn shortstr(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_fields_encode_as_the_spec_says() {
        let mut out = Vec::new();
        method_frame(&mut out, 1, BASIC_ACK, &[0, 0, 0, 0, 0, 0, 0, 7, 1]);
        assert_eq!(
            out,
            [
                1, 0, 1, 0, 0, 0, 13, 0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 7, 1, 0xce
            ]
        );
        let mut t = Vec::new();
        table(&mut t, &[("x-queue-type", "quorum")]);
        assert_eq!(&t[..4], &(1 + 12 + 1 + 4 + 6u32).to_be_bytes());
        assert_eq!(t[4], 12);
        assert_eq!(&t[5..17], b"x-queue-type");
        assert_eq!(t[17], b'S');
        let mut r = Reader::new(&[0, 3, b'a', b'b', b'c', 0, 0, 0, 9]);
        assert_eq!(r.u8().ok(), Some(0));
        assert_eq!(r.u8().ok(), Some(3));
        let mut r = Reader::new(&[3, b'a', b'b', b'c', 0, 0, 0, 9]);
        assert_eq!(r.shortstr().ok().as_deref(), Some("abc"));
        assert_eq!(r.u32().ok(), Some(9));
        assert!(r.u8().is_err());
    }

    #[test]
    fn a_delivery_is_taken_only_once_all_its_frames_are_there() {
        let mut wire = Vec::new();
        frame(&mut wire, FRAME_HEARTBEAT, 0, &[]);
        let mut args = Vec::new();
        shortstr(&mut args, "ctag");
        args.extend(42u64.to_be_bytes());
        args.push(0);
        shortstr(&mut args, "");
        shortstr(&mut args, "bench");
        method_frame(&mut wire, CHANNEL, BASIC_DELIVER, &args);
        let mut header = Vec::new();
        header.extend(60u16.to_be_bytes());
        header.extend(0u16.to_be_bytes());
        header.extend(5u64.to_be_bytes());
        header.extend(0u16.to_be_bytes());
        frame(&mut wire, FRAME_HEADER, CHANNEL, &header);
        frame(&mut wire, FRAME_BODY, CHANNEL, b"he");
        frame(&mut wire, FRAME_BODY, CHANNEL, b"llo");
        for cut in 0..wire.len() {
            assert!(
                parse_delivery(&wire[..cut])
                    .expect("valid prefix")
                    .is_none(),
                "cut at {cut}"
            );
        }
        wire.extend_from_slice(b"next");
        let (delivery, len) = parse_delivery(&wire).expect("valid").expect("complete");
        assert_eq!((delivery.tag, &delivery.body[..]), (42, &b"hello"[..]));
        assert_eq!(&wire[len..], b"next");
    }
}
