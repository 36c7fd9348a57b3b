//! A minimal MQTT 3.1.1 client for load generation. It writes publishes
//! encoded straight into large batches and reads frames without building
//! packet objects, so the client spends far less CPU than the brokers it
//! measures. On two cores a heavier client (rumqttc) took more CPU than
//! either broker and capped both at the client's speed.
//!
//! It speaks only what the benchmarks need: CONNECT, SUBSCRIBE, PUBLISH at
//! QoS 0/1, PUBACK and DISCONNECT, over plain TCP ([`connect`]) or TLS
//! ([`connect_tls`]). The reader and the helpers are generic over the
//! transport's halves, so the plain path compiles to what it was before
//! TLS existed.
//!
//! TLS clients come from [`tls_connector`]: they trust exactly one
//! server certificate (compared byte for byte) and skip the handshake
//! signature check and session resumption, so every connection is a full
//! handshake whose cryptography the broker, not this client, pays for.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

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

/// The reading half of a connection: plain TCP unless said otherwise.
#[derive(Debug)]
pub struct Reader<R = OwnedReadHalf> {
    io: R,
    buf: BytesMut,
}

/// The reading half of a TLS connection.
pub type TlsReader = Reader<ReadHalf<TlsStream<TcpStream>>>;
/// The writing half of a TLS connection.
pub type TlsWriter = WriteHalf<TlsStream<TcpStream>>;

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(io: R) -> Self {
        Reader {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

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

    /// Reads until `count` PUBACKs have come (other frames are skipped).
    pub async fn pubacks(&mut self, count: usize) -> Result<()> {
        let mut acked = 0;
        while acked < count {
            let frame = self.next().await?.context("closed before every PUBACK")?;
            acked += usize::from(frame.is_puback());
        }
        Ok(())
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

/// Reads `count` PUBACKs from `reader` on a task of its own, giving a
/// permit back to `window` for each: a publisher takes a permit per
/// publish, so at most the window's size are unacknowledged.
pub fn count_pubacks<R>(
    mut reader: Reader<R>,
    count: u64,
    window: Arc<tokio::sync::Semaphore>,
) -> tokio::task::JoinHandle<Result<u64>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut acked = 0;
        while acked < count {
            let frame = reader.next().await?.context("closed before every PUBACK")?;
            if frame.is_puback() {
                acked += 1;
                window.add_permits(1);
            }
        }
        Ok(acked)
    })
}

/// Takes, without waiting, the permits already free in `window` beside
/// the one the caller holds, up to `max` in all: how many publishes the
/// caller may send now (at least one).
pub fn take_free(window: &tokio::sync::Semaphore, max: u64) -> u64 {
    let mut n = 1;
    while n < max {
        match window.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        n += 1;
    }
    n
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
fn put_puback(out: &mut Vec<u8>, pkid: u16) {
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
    let (read, write) = stream.into_split();
    mqtt_connect(Reader::new(read), write, client_id).await
}

/// [`connect`] over TLS: the TLS handshake, then CONNECT and CONNACK.
pub async fn connect_tls(
    addr: SocketAddr,
    tls: &TlsConnector,
    client_id: &str,
) -> Result<(TlsReader, TlsWriter)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let server_name = ServerName::IpAddress(addr.ip().into());
    let stream = tls
        .connect(server_name, stream)
        .await
        .context("TLS handshake")?;
    let (read, write) = tokio::io::split(stream);
    mqtt_connect(Reader::new(read), write, client_id).await
}

/// What a TLS handshake with the broker at `addr` negotiates: protocol
/// version, cipher suite and key exchange group, for the report.
pub async fn tls_parameters(addr: SocketAddr, tls: &TlsConnector) -> Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let server_name = ServerName::IpAddress(addr.ip().into());
    let mut stream = tls
        .connect(server_name, stream)
        .await
        .context("TLS handshake")?;
    let connection = stream.get_ref().1;
    let parameters = format!(
        "{:?}, {:?}, {:?}",
        connection.protocol_version().context("no version")?,
        connection
            .negotiated_cipher_suite()
            .context("no cipher suite")?
            .suite(),
        connection
            .negotiated_key_exchange_group()
            .context("no key exchange")?
            .name()
    );
    let _ = stream.shutdown().await;
    Ok(parameters)
}

/// Sends CONNECT on a fresh connection and waits for a successful CONNACK.
async fn mqtt_connect<R, W>(
    mut reader: Reader<R>,
    mut writer: W,
    client_id: &str,
) -> Result<(Reader<R>, W)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    send(&mut writer, &connect_packet(client_id, 0)).await?;
    let ack = reader.next().await?.context("closed before CONNACK")?;
    if ack.kind() != CONNACK || ack.body.get(1) != Some(&0) {
        bail!("CONNECT refused: {:02x} {:?}", ack.first, &ack.body[..]);
    }
    Ok((reader, writer))
}

/// Writes `bytes` and flushes them: a TLS writer may keep the tail of a
/// write encrypted but unsent until the next write or a flush (a no-op on
/// plain TCP).
pub async fn send<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Acknowledges a received publish: a QoS 1 publish's PUBACK joins
/// `acks`, and `acks` are written once `reader` holds no further frame,
/// so a burst of publishes is acknowledged in one write.
pub async fn acknowledge<R, W>(
    reader: &Reader<R>,
    writer: &mut W,
    acks: &mut Vec<u8>,
    qos: u8,
    pkid: u16,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if qos > 0 {
        put_puback(acks, pkid);
    }
    if !acks.is_empty() && !reader.has_frame() {
        send(writer, acks).await?;
        acks.clear();
    }
    Ok(())
}

/// Subscribes to `filter` and waits for the SUBACK.
pub async fn subscribe<R, W>(
    reader: &mut Reader<R>,
    writer: &mut W,
    filter: &str,
    qos: u8,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    send(writer, &subscribe_packet(filter, qos)).await?;
    let ack = reader.next().await?.context("closed before SUBACK")?;
    if ack.kind() != SUBACK || ack.body.get(2).is_none_or(|code| *code >= 0x80) {
        bail!("SUBSCRIBE refused: {:?}", &ack.body[..]);
    }
    Ok(())
}

/// Sends DISCONNECT and closes the connection (over TLS: close_notify
/// first).
pub async fn disconnect<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<()> {
    writer.write_all(&[DISCONNECT, 0]).await?;
    writer.shutdown().await?;
    Ok(())
}

/// A TLS client configuration (TLS 1.3 or 1.2, ring) that trusts exactly
/// `server_certificate` and resumes no sessions.
pub fn tls_connector(server_certificate: CertificateDer<'static>) -> Result<TlsConnector> {
    let provider = Arc::new(ring::default_provider());
    let verifier = PinnedServerCertificate {
        certificate: server_certificate,
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts the one certificate the benchmark made for its brokers and
/// nothing else, without checking the handshake's signature: a load
/// generator that verified ECDSA signatures would spend more CPU per
/// handshake than the broker that made them.
#[derive(Debug)]
struct PinnedServerCertificate {
    certificate: CertificateDer<'static>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for PinnedServerCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _certificate: &CertificateDer<'_>,
        _signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _certificate: &CertificateDer<'_>,
        _signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
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
