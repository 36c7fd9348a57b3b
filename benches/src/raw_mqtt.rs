//! A minimal MQTT 3.1.1 client for load generation. It writes publishes
//! encoded straight into large batches and reads frames without building
//! packet objects, so the client spends far less CPU than the brokers it
//! measures. On two cores a heavier client (rumqttc) took more CPU than
//! either broker and capped both at the client's speed.
//!
//! It speaks only what the benchmarks need: CONNECT, SUBSCRIBE, PUBLISH at
//! QoS 0/1, PUBACK and DISCONNECT.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const PUBACK: u8 = 0x40;
const SUBSCRIBE: u8 = 0x82;
const SUBACK: u8 = 0x90;
const DISCONNECT: u8 = 0xe0;

/// One frame: the fixed header's first byte and the rest of the packet.
#[derive(Debug)]
pub struct Frame {
    /// Packet type and flags.
    pub first: u8,
    /// Everything after the remaining-length field.
    pub body: BytesMut,
}

impl Frame {
    /// The packet type, upper four bits.
    pub fn kind(&self) -> u8 {
        self.first & 0xf0
    }

    /// True for a PUBLISH.
    pub fn is_publish(&self) -> bool {
        self.kind() == PUBLISH
    }

    /// True for a SUBACK.
    pub fn is_suback(&self) -> bool {
        self.kind() == SUBACK
    }

    /// True for a PUBACK.
    pub fn is_puback(&self) -> bool {
        self.kind() == PUBACK
    }

    /// For a PUBLISH: its QoS, packet id (0 at QoS 0) and payload.
    pub fn publish(&self) -> Result<(u8, u16, &[u8])> {
        let qos = (self.first >> 1) & 3;
        let body = &self.body[..];
        let topic_len = usize::from(read_u16(body, 0)?);
        let mut at = 2 + topic_len;
        let mut pkid = 0;
        if qos > 0 {
            pkid = read_u16(body, at)?;
            at += 2;
        }
        body.get(at..)
            .map(|payload| (qos, pkid, payload))
            .context("short PUBLISH")
    }

    /// For a PUBACK: its packet id.
    pub fn pkid(&self) -> Result<u16> {
        read_u16(&self.body, 0)
    }
}

fn read_u16(body: &[u8], at: usize) -> Result<u16> {
    body.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .context("short packet")
}

/// The reading half of a connection.
#[derive(Debug)]
pub struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// The next frame, or `None` when the broker closed the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// True when whole frames are already buffered (no read needed).
    pub fn has_frame(&self) -> bool {
        matches!(header(&self.buf), Some((_, len, at)) if self.buf.len() >= at + len)
    }

    fn parse(&mut self) -> Result<Option<Frame>> {
        split_frame(&mut self.buf)
    }
}

/// Splits one whole frame off the front of `buf`, if it holds one.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>> {
    let Some((first, len, at)) = header(buf) else {
        if buf.len() >= 5 {
            bail!("malformed remaining length");
        }
        return Ok(None);
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    buf.advance(at);
    let body = buf.split_to(len);
    Ok(Some(Frame { first, body }))
}

/// The fixed header at the start of `buf`: first byte, remaining length,
/// and where the body starts.
fn header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let first = *buf.first()?;
    let mut len = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((first, len, i + 2));
        }
    }
    None
}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a PUBLISH (packet id used only at QoS 1).
pub fn put_publish(out: &mut Vec<u8>, topic: &str, qos: u8, pkid: u16, payload: &[u8]) {
    out.push(PUBLISH | (qos << 1));
    let id_len = if qos > 0 { 2 } else { 0 };
    put_remaining_length(out, 2 + topic.len() + id_len + payload.len());
    put_str(out, topic);
    if qos > 0 {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a PUBACK.
pub fn put_puback(out: &mut Vec<u8>, pkid: u16) {
    out.extend_from_slice(&[PUBACK, 2]);
    out.extend_from_slice(&pkid.to_be_bytes());
}

/// A whole packet: `first` byte, remaining length, `body`.
fn framed(first: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![first];
    put_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(body);
    packet
}

/// CONNECT with a clean session and `keep_alive` seconds (0: none).
pub fn connect_packet(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, client_id);
    framed(CONNECT, &body)
}

/// SUBSCRIBE (packet id 1) to `filter` at `qos`.
pub fn subscribe_packet(filter: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0, 1];
    put_str(&mut body, filter);
    body.push(qos);
    framed(SUBSCRIBE, &body)
}

/// Connects with a clean session and no keep alive, and waits for a
/// successful CONNACK. Nagle is off, as in every bench client.
pub async fn connect(addr: SocketAddr, client_id: &str) -> Result<(Reader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    write.write_all(&connect_packet(client_id, 0)).await?;
    let mut reader = Reader {
        io: read,
        buf: BytesMut::with_capacity(64 * 1024),
    };
    let ack = reader.next().await?.context("closed before CONNACK")?;
    if ack.kind() != CONNACK || ack.body.get(1) != Some(&0) {
        bail!("CONNECT refused: {:02x} {:?}", ack.first, &ack.body[..]);
    }
    Ok((reader, write))
}

/// Subscribes to `filter` and waits for the SUBACK.
pub async fn subscribe(
    reader: &mut Reader,
    writer: &mut OwnedWriteHalf,
    filter: &str,
    qos: u8,
) -> Result<()> {
    writer.write_all(&subscribe_packet(filter, qos)).await?;
    let ack = reader.next().await?.context("closed before SUBACK")?;
    if ack.kind() != SUBACK || ack.body.get(2).is_none_or(|code| *code >= 0x80) {
        bail!("SUBSCRIBE refused: {:?}", &ack.body[..]);
    }
    Ok(())
}

/// Sends DISCONNECT and closes the connection.
pub async fn disconnect(writer: &mut OwnedWriteHalf) -> Result<()> {
    writer.write_all(&[DISCONNECT, 0]).await?;
    writer.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_round_trips() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let mut out = vec![PUBLISH];
            put_remaining_length(&mut out, len);
            assert_eq!(header(&out), Some((PUBLISH, len, out.len())));
        }
    }

    #[test]
    fn publish_frames_parse_back() {
        let mut out = Vec::new();
        put_publish(&mut out, "a/b", 1, 7, b"hello");
        let (first, len, at) = header(&out).expect("header");
        let frame = Frame {
            first,
            body: BytesMut::from(&out[at..at + len]),
        };
        assert!(frame.is_publish());
        let (qos, pkid, payload) = frame.publish().expect("publish");
        assert_eq!((qos, pkid, payload), (1, 7, &b"hello"[..]));
    }
}
