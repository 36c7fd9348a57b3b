//! The server side of a TLS connection as a byte stream, on rustls's
//! unbuffered API: the stream, not rustls, owns the buffers, so a
//! connection that has gone quiet can give them up and keep only the TLS
//! session ([`TlsStream::into_parts`], [`ParkedTls`]), about 3 KiB
//! (keys, sequence numbers, state) instead of the 7 KiB and more that a
//! buffered `rustls::ServerConnection` holds for as long as it lives.
//!
//! Three buffers, each empty (and unallocated once released) when the
//! connection is idle:
//!
//! - `incoming`: ciphertext read from the socket and not yet decrypted
//!   (at most a partial record once processed);
//! - `plaintext`: decrypted application data not yet read;
//! - `outgoing`: records (handshake, alerts, application data) not yet
//!   written to the socket, in the order rustls made them.
//!
//! rustls queues handshake messages, alerts and key updates inside the
//! session; [`TlsStream::process`] always runs it until it has nothing
//! left to hand over, so between calls everything it wants sent is in
//! `outgoing` and everything it decrypted is in `plaintext`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the first read buffer; it doubles while reads fill it.
const FIRST_READ: usize = 1024;
/// Largest read buffer: room for the records of the largest handshake
/// message rustls takes (64 KiB, a client's certificate chain) and for
/// reading in bulk.
const MAX_READ: usize = 80 * 1024;
/// Plaintext encrypted per write call.
const MAX_WRITE: usize = 64 * 1024;
/// Ciphertext queued before writes wait for the socket.
const OUTGOING_HIGH_WATER: usize = 64 * 1024;
/// An output buffer larger than this is released once it has been sent.
const OUTGOING_KEEP: usize = 2 * OUTGOING_HIGH_WATER;
/// Bytes a record adds to its plaintext, at most (header, content type,
/// nonce and tag in TLS 1.2 or 1.3), to size the output buffer.
const RECORD_OVERHEAD: usize = 64;
/// Plaintext bytes in a record, at most.
const MAX_FRAGMENT: usize = 16 * 1024;

/// What a call to [`TlsStream::process`] is for, besides decrypting what
/// has arrived and queueing what rustls wants sent.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Nothing more.
    Read,
    /// Encrypt this application data.
    Write(&'a [u8]),
    /// Queue a close_notify alert.
    Close,
}

/// A TLS session without its socket and buffers: what a parked
/// connection keeps. Made by [`TlsStream::into_parts`].
pub struct ParkedTls {
    tls: Box<UnbufferedServerConnection>,
}

impl std::fmt::Debug for ParkedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedTls").finish_non_exhaustive()
    }
}

impl ParkedTls {
    /// The stream again, on `io`, with `waiting`: bytes read from the
    /// socket since it was parked (decrypted on the first read).
    pub fn resume<IO>(self, io: IO, waiting: &[u8]) -> TlsStream<IO> {
        let mut stream = TlsStream::new(io, self.tls);
        if !waiting.is_empty() {
            stream.incoming = waiting.to_vec();
            stream.filled = waiting.len();
            stream.unprocessed = true;
        }
        stream
    }
}

/// The server side of a TLS connection over `IO`.
pub struct TlsStream<IO> {
    io: IO,
    tls: Box<UnbufferedServerConnection>,
    /// Ciphertext received: `incoming[..filled]`, not yet decrypted. The
    /// rest is room to read into (zeroed once, when it grows).
    incoming: Vec<u8>,
    filled: usize,
    /// `incoming` holds bytes not yet processed.
    unprocessed: bool,
    /// Decrypted, not yet read: `plaintext[taken..]`.
    plaintext: Vec<u8>,
    taken: usize,
    /// Ciphertext to send: `outgoing[sent..queued]`; the rest is room.
    outgoing: Vec<u8>,
    sent: usize,
    queued: usize,
    /// The peer closed (close_notify, or the socket): reads end once
    /// `plaintext` is read.
    eof: bool,
    /// A close_notify is queued: nothing more is encrypted.
    closing: bool,
    /// The session failed (a bad record, a handshake failure): every
    /// call fails from now on.
    failed: bool,
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("incoming", &self.filled)
            .field("plaintext", &(self.plaintext.len() - self.taken))
            .field("outgoing", &(self.queued - self.sent))
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

fn invalid_data(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn failed() -> io::Error {
    invalid_data("the TLS session failed")
}

impl<IO> TlsStream<IO> {
    fn new(io: IO, tls: Box<UnbufferedServerConnection>) -> TlsStream<IO> {
        TlsStream {
            io,
            tls,
            incoming: Vec::new(),
            filled: 0,
            unprocessed: false,
            plaintext: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            queued: 0,
            eof: false,
            closing: false,
            failed: false,
        }
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The client's certificate chain, leaf first, if it sent one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }

    /// True when no bytes wait in either direction: nothing received and
    /// not yet read (not even part of a record), nothing not yet sent.
    pub fn is_idle(&self) -> bool {
        self.filled == 0
            && self.taken == self.plaintext.len()
            && self.sent == self.queued
            && !self.eof
            && !self.failed
    }

    /// Splits an idle stream (see [`TlsStream::is_idle`]) into its
    /// transport and its TLS session, dropping the buffers; gives a busy
    /// one back unchanged.
    #[allow(clippy::result_large_err)]
    pub fn into_parts(self) -> Result<(IO, ParkedTls), TlsStream<IO>> {
        if !self.is_idle() {
            return Err(self);
        }
        Ok((self.io, ParkedTls { tls: self.tls }))
    }

    /// Runs the TLS state machine over what has arrived until it needs
    /// more input: decrypts application data into `plaintext`, queues
    /// what rustls wants sent (handshake messages, alerts, key updates)
    /// into `outgoing`, and does what `want` asks. Returns how much of
    /// `Want::Write`'s data it encrypted.
    fn process(&mut self, want: Want<'_>) -> io::Result<usize> {
        if self.failed {
            return Err(failed());
        }
        self.unprocessed = false;
        let mut encrypted = 0;
        let mut failure = None;
        let mut nothing = [0u8; 0];
        loop {
            // After a failure rustls only hands over the alert it queued:
            // the records it failed on are not shown to it again.
            let incoming = match failure {
                None => &mut self.incoming[..self.filled],
                Some(_) => &mut nothing[..],
            };
            let UnbufferedStatus { mut discard, state } = self.tls.process_tls_records(incoming);
            // Whether rustls needs more input (or, after a failure, has
            // nothing more to send).
            let mut blocked = failure.is_some();
            match state {
                Err(e) => {
                    failure.get_or_insert(e);
                    blocked = false;
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, &mut self.outgoing, &mut self.queued);
                    blocked = false;
                }
                // What was encoded is queued in `outgoing`, in order, and
                // goes out with the next flush.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    blocked = false;
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                Ok(ConnectionState::PeerClosed) => self.eof = true,
                Ok(ConnectionState::Closed) => {
                    self.eof = true;
                    blocked = true;
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    if failure.is_none() && !self.closing {
                        match want {
                            Want::Write(data) => {
                                encrypted = encrypt(
                                    &mut traffic,
                                    data,
                                    &mut self.outgoing,
                                    &mut self.queued,
                                )?;
                            }
                            Want::Close => {
                                close_notify(&mut traffic, &mut self.outgoing, &mut self.queued)?;
                                self.closing = true;
                            }
                            Want::Read => {}
                        }
                    }
                    blocked = true;
                }
                // BlockedHandshake: more input needed. ReadEarlyData does
                // not happen (no early data is accepted).
                Ok(_) => blocked = true,
            }
            if discard > 0 {
                self.incoming.copy_within(discard..self.filled, 0);
                self.filled -= discard;
            }
            if blocked {
                break;
            }
        }
        match failure {
            Some(e) => {
                self.failed = true;
                Err(invalid_data(e))
            }
            None => Ok(encrypted),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Runs the server side of the handshake on `io` with `config`.
    /// Whatever the client sent after its Finished stays buffered for the
    /// first read; TLS 1.3 session tickets go out with the first write or
    /// flush.
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>> {
        let tls = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        let mut stream = TlsStream::new(io, Box::new(tls));
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Err(e) = self.process(Want::Read) {
                // The alert rustls queued, if the socket takes it now.
                let _ = self.poll_send(cx);
                return Poll::Ready(Err(e));
            }
            // Once a TLS 1.3 handshake is over, all that is left to send is
            // the session tickets: they go out with the first write (one
            // packet with the CONNACK, not two).
            let done = !self.tls.is_handshaking();
            if done && self.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_send(cx))?;
            if done {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Reads what the socket has into `incoming`, growing it while reads
    /// fill it. Ready(0) at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.filled == self.incoming.len() {
            let grown = (self.incoming.len() * 2).clamp(FIRST_READ, MAX_READ);
            if grown <= self.filled {
                // A record larger than TLS allows would have failed.
                return Poll::Ready(Err(invalid_data("TLS record too large")));
            }
            self.incoming.resize(grown, 0);
        }
        let mut buf = ReadBuf::new(&mut self.incoming[self.filled..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        self.filled += read;
        self.unprocessed |= read > 0;
        Poll::Ready(Ok(read))
    }

    /// Writes `outgoing` to the socket until it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.queued {
            let written = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..self.queued])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.sent = 0;
        self.queued = 0;
        if self.outgoing.len() > OUTGOING_KEEP {
            self.outgoing = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Moves unsent output to the front of `outgoing`.
    fn compact_outgoing(&mut self) {
        if self.sent > 0 {
            self.outgoing.copy_within(self.sent..self.queued, 0);
            self.queued -= self.sent;
            self.sent = 0;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plaintext.len() {
                let n = buf.remaining().min(this.plaintext.len() - this.taken);
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.failed {
                return Poll::Ready(Err(failed()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.unprocessed {
                this.process(Want::Read)?;
                // What rustls answers (a key update, an alert) goes out
                // now if the socket takes it, else with the next flush.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                continue;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                this.eof = true;
                if this.filled > 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(failed()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.queued - this.sent >= OUTGOING_HIGH_WATER {
            ready!(this.poll_send(cx))?;
        }
        this.compact_outgoing();
        let taken = this.process(Want::Write(data))?;
        if taken == 0 {
            // Closing or closed: nothing more may be sent.
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Out now if the socket takes it; the rest goes with the next
        // write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing && !this.failed {
            this.compact_outgoing();
            this.process(Want::Close)?;
            // Not sent again if this call has to wait.
            this.closing = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Appends what `data` encodes to `out[..*queued]`, growing `out`.
fn encode(
    data: &mut EncodeTlsData<'_, ServerConnectionData>,
    out: &mut Vec<u8>,
    queued: &mut usize,
) {
    loop {
        match data.encode(&mut out[*queued..]) {
            Ok(n) => {
                *queued += n;
                return;
            }
            Err(EncodeError::InsufficientSize(size)) => {
                out.resize(*queued + size.required_size, 0);
            }
            Err(EncodeError::AlreadyEncoded) => return,
        }
    }
}

/// Encrypts `data` (up to [`MAX_WRITE`] of it) after `out[..*queued]`,
/// growing `out`; returns how much of `data` it took.
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    data: &[u8],
    out: &mut Vec<u8>,
    queued: &mut usize,
) -> io::Result<usize> {
    let data = &data[..data.len().min(MAX_WRITE)];
    let records = data.len().div_ceil(MAX_FRAGMENT).max(1);
    let mut room = data.len() + records * RECORD_OVERHEAD;
    loop {
        if out.len() < *queued + room {
            out.resize(*queued + room, 0);
        }
        match traffic.encrypt(data, &mut out[*queued..]) {
            Ok(n) => {
                *queued += n;
                return Ok(data.len());
            }
            Err(EncryptError::InsufficientSize(size)) => room = size.required_size,
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// Queues a close_notify alert after `out[..*queued]`.
fn close_notify(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    out: &mut Vec<u8>,
    queued: &mut usize,
) -> io::Result<()> {
    let mut room = RECORD_OVERHEAD;
    loop {
        if out.len() < *queued + room {
            out.resize(*queued + room, 0);
        }
        match traffic.queue_close_notify(&mut out[*queued..]) {
            Ok(n) => {
                *queued += n;
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(size)) => room = size.required_size,
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against tokio-rustls clients, with the test CA and server
    //! certificate in `testdata/` (P-256, valid until 2126; the CA's key
    //! was thrown away).

    use std::time::Duration;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientStream;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn testdata(name: &str) -> String {
        format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn server_config() -> Arc<ServerConfig> {
        let chain = vec![CertificateDer::from_pem_file(testdata("server.pem")).expect("cert")];
        let key = PrivateKeyDer::from_pem_file(testdata("server.key")).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }

    fn connector(version: &'static SupportedProtocolVersion) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(testdata("ca.pem")).expect("ca"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    fn localhost() -> ServerName<'static> {
        ServerName::try_from("localhost").expect("name")
    }

    /// A client and the server's stream over an in-memory pipe.
    async fn pair(
        version: &'static SupportedProtocolVersion,
    ) -> (ClientStream<DuplexStream>, TlsStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(8 * 1024);
        let (client, server) = tokio::join!(
            connector(version).connect(localhost(), client),
            TlsStream::accept(server, server_config())
        );
        (
            client.expect("client handshake"),
            server.expect("server handshake"),
        )
    }

    /// A client and the server's stream over loopback TCP.
    async fn tcp_pair() -> (ClientStream<TcpStream>, TlsStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let tls = connector(&rustls::version::TLS13);
            tls.connect(localhost(), tcp)
                .await
                .expect("client handshake")
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            TlsStream::accept(tcp, server_config())
                .await
                .expect("server handshake")
        };
        tokio::join!(connect, accept)
    }

    /// Bytes that tell their position apart.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    async fn read_exactly<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        tokio::time::timeout(WAIT, reader.read_exact(&mut got))
            .await
            .expect("in time")
            .expect("read");
        got
    }

    #[tokio::test]
    async fn small_and_large_writes_arrive_whole_both_ways_in_tls_1_2_and_1_3() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (mut client, mut server) = pair(version).await;
            assert!(
                server.peer_certificates().is_none(),
                "no client certificate"
            );

            client.write_all(b"\x10\x02hi").await.expect("write");
            client.flush().await.expect("flush");
            assert_eq!(read_exactly(&mut server, 4).await, b"\x10\x02hi");
            server.write_all(b"\x20\x02\x00\x00").await.expect("write");
            server.flush().await.expect("flush");
            assert_eq!(read_exactly(&mut client, 4).await, b"\x20\x02\x00\x00");

            // Many records each way, at once: the pipe holds 8 KiB, so
            // each side reads while it writes.
            let up = pattern(300_000, 1);
            let down = pattern(500_000, 2);
            let (mut client_read, mut client_write) = tokio::io::split(client);
            let (mut server_read, mut server_write) = tokio::io::split(server);
            let (got_down, got_up, (), ()) = tokio::join!(
                read_exactly(&mut client_read, down.len()),
                read_exactly(&mut server_read, up.len()),
                async {
                    client_write.write_all(&up).await.expect("client write");
                    client_write.flush().await.expect("client flush");
                },
                async {
                    server_write.write_all(&down).await.expect("server write");
                    server_write.flush().await.expect("server flush");
                },
            );
            assert!(got_down == down, "{version:?}: server to client");
            assert!(got_up == up, "{version:?}: client to server");
        }
    }

    #[tokio::test]
    async fn session_tickets_go_out_with_the_first_write_and_a_client_resumes_with_them() {
        let server_config = server_config();
        let client = connector(&rustls::version::TLS13);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let (client_io, server_io) = tokio::io::duplex(8 * 1024);
            let (client, server) = tokio::join!(
                client.connect(localhost(), client_io),
                TlsStream::accept(server_io, Arc::clone(&server_config))
            );
            let (mut client, mut server) = (client.expect("client"), server.expect("server"));
            assert!(
                server.queued > server.sent,
                "tickets wait for the first write"
            );
            server.write_all(b"connack").await.expect("write");
            server.flush().await.expect("flush");
            assert_eq!(read_exactly(&mut client, 7).await, b"connack");
            kinds.push(client.get_ref().1.handshake_kind());
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_answered_and_data_flows_on() {
        let (mut client, mut server) = pair(&rustls::version::TLS13).await;
        client
            .get_mut()
            .1
            .refresh_traffic_keys()
            .expect("key update");
        client.write_all(b"after the update").await.expect("write");
        client.flush().await.expect("flush");
        assert_eq!(read_exactly(&mut server, 16).await, b"after the update");
        server.write_all(b"answered").await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(read_exactly(&mut client, 8).await, b"answered");
    }

    #[tokio::test]
    async fn closing_either_way_ends_the_other_side_s_reads() {
        let (mut client, mut server) = pair(&rustls::version::TLS13).await;
        client.write_all(b"bye").await.expect("write");
        client.shutdown().await.expect("close_notify");
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, server.read_to_end(&mut rest))
            .await
            .expect("in time")
            .expect("clean end");
        assert_eq!(rest, b"bye");

        let (mut client, mut server) = pair(&rustls::version::TLS12).await;
        server.write_all(b"goodbye").await.expect("write");
        server.shutdown().await.expect("close_notify");
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
            .await
            .expect("in time")
            .expect("clean end");
        assert_eq!(rest, b"goodbye");
    }

    #[tokio::test]
    async fn plain_text_fails_the_handshake_with_an_alert() {
        let (mut client, server) = tokio::io::duplex(8 * 1024);
        let accept = tokio::spawn(TlsStream::accept(server, server_config()));
        client
            .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
            .await
            .expect("write");
        let outcome = tokio::time::timeout(WAIT, accept)
            .await
            .expect("in time")
            .expect("no panic");
        assert!(outcome.is_err(), "not TLS");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, client.read_to_end(&mut answer)).await;
        assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");
    }

    #[tokio::test]
    async fn an_idle_stream_parks_without_buffers_and_resumes_where_it_was() {
        let (mut client, mut server) = tcp_pair().await;
        client.write_all(b"first").await.expect("write");
        client.flush().await.expect("flush");
        assert_eq!(read_exactly(&mut server, 5).await, b"first");
        server.write_all(b"ack").await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(read_exactly(&mut client, 3).await, b"ack");

        // Parked with nothing buffered; the client writes meanwhile, and
        // part of what it wrote is read off the socket before resuming.
        let (tcp, parked) = server.into_parts().expect("idle");
        client.write_all(b"while parked").await.expect("write");
        client.flush().await.expect("flush");
        let mut waiting = [0u8; 7];
        tokio::time::timeout(WAIT, tcp.readable())
            .await
            .expect("in time")
            .expect("readable");
        let read = tcp.try_read(&mut waiting).expect("read");
        assert!(read > 0);
        let mut server = parked.resume(tcp, &waiting[..read]);
        assert_eq!(read_exactly(&mut server, 12).await, b"while parked");
        server.write_all(b"resumed").await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(read_exactly(&mut client, 7).await, b"resumed");

        // It parks again, and again after a large exchange.
        let (tcp, parked) = server.into_parts().expect("idle again");
        let mut server = parked.resume(tcp, &[]);
        let big = pattern(100_000, 3);
        let (_, got) = tokio::join!(
            async {
                client.write_all(&big).await.expect("write");
                client.flush().await.expect("flush");
            },
            read_exactly(&mut server, big.len())
        );
        assert!(got == big);
        assert!(server.into_parts().is_ok(), "idle after reading it all");
    }

    #[tokio::test]
    async fn a_stream_holding_unread_or_partial_input_does_not_park() {
        let (mut client, mut server) = tcp_pair().await;
        client.write_all(b"twelve bytes").await.expect("write");
        client.flush().await.expect("flush");
        assert_eq!(read_exactly(&mut server, 6).await, b"twelve");
        let mut server = server.into_parts().expect_err("six bytes unread");
        assert_eq!(read_exactly(&mut server, 6).await, b" bytes");

        // Half a record: the client's TCP stream, cut short.
        client.write_all(b"a record").await.expect("write");
        client.flush().await.expect("flush");
        let mut record = vec![0u8; 64];
        tokio::time::timeout(WAIT, server.io.readable())
            .await
            .expect("in time")
            .expect("readable");
        let read = server.io.try_read(&mut record).expect("raw read");
        assert!(read > 1, "the record came in one piece");
        // Hand the server only part of it, as if the rest were in flight.
        let (tcp, parked) = server.into_parts().expect("idle");
        let mut server = parked.resume(tcp, &record[..read - 1]);
        let mut buf = [0u8; 8];
        let pending = tokio::time::timeout(Duration::from_millis(100), server.read(&mut buf)).await;
        assert!(pending.is_err(), "no whole record yet");
        assert!(server.into_parts().is_err(), "part of a record is buffered");
    }
}
