//! The hand-off between a connection's task and the parking lot
//! ([`crate::park`]): [`drive`] runs a connection until it ends or goes
//! quiet, a quiet connection over TCP (plain, or TLS with no bytes
//! buffered either way) leaves its socket and [`Quiet`] state in the lot
//! and its task ends, and the lot resumes it on a new task when input
//! arrives or its session wakes it. A TLS connection keeps only its TLS
//! session while parked ([`ParkedTls`]); its buffers go.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::task::Waker;

use bytes::BytesMut;
use tidewire_tls::{ParkedTls, TlsStream};
use tokio::net::TcpStream;

use tidewire_core::panics::contain;

use super::handshake::Accepted;
use super::packet_loop::{Connection, TopicAliases};
use super::{Exit, IDLE_READ_BUFFER, Transport};
use crate::park::Parkable;

/// Hands a quiet connection over to wait without its task, or gives it
/// back to go on serving.
pub(super) type Park<S> = fn(Box<Connection<S>>) -> Option<Box<Connection<S>>>;

/// Runs an accepted connection until it ends, or until it is quiet and
/// `park` takes it.
pub(super) async fn drive<S: Transport>(mut conn: Box<Connection<S>>, park: Option<Park<S>>) {
    conn.set_parkable(park.is_some());
    let exit = loop {
        let exit = conn.run().await;
        let (Exit::Quiet, Some(park)) = (exit, park) else {
            break exit;
        };
        match park(conn) {
            None => return,
            Some(back) => {
                conn = back;
                conn.set_parkable(false);
            }
        }
    };
    Box::pin(conn.finish(exit)).await;
}

/// What a parked connection keeps of its transport besides the socket.
pub(super) enum Dormant {
    /// Plain TCP: nothing.
    Tcp,
    /// TLS: the session (keys, sequence numbers, state).
    Tls(ParkedTls),
}

/// A transport over TCP whose connections can park.
pub(super) trait Parks: Transport + Sized {
    /// The socket underneath.
    fn socket(&self) -> &TcpStream;

    /// Takes the transport apart into its socket and what else it keeps
    /// while parked; gives it back if it holds bytes not yet passed on
    /// (TLS: part of a record, plaintext not yet read, output not yet
    /// sent).
    fn into_dormant(self) -> Result<(TcpStream, Dormant), Self>;

    /// Puts the transport together again on `socket`, with `waiting`:
    /// what was read from the socket when it woke. Returns it with the
    /// input it hands the packet loop.
    fn wake(socket: TcpStream, dormant: Dormant, waiting: &[u8]) -> Option<(Self, BytesMut)>;
}

impl Parks for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    fn into_dormant(self) -> Result<(TcpStream, Dormant), Self> {
        Ok((self, Dormant::Tcp))
    }

    fn wake(socket: TcpStream, dormant: Dormant, waiting: &[u8]) -> Option<(Self, BytesMut)> {
        matches!(dormant, Dormant::Tcp).then(|| (socket, BytesMut::from(waiting)))
    }
}

impl Parks for TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref()
    }

    fn into_dormant(self) -> Result<(TcpStream, Dormant), Self> {
        let (socket, tls) = self.into_parts()?;
        Ok((socket, Dormant::Tls(tls)))
    }

    fn wake(socket: TcpStream, dormant: Dormant, waiting: &[u8]) -> Option<(Self, BytesMut)> {
        // What was read is ciphertext: the stream decrypts it on its
        // first read.
        match dormant {
            Dormant::Tls(tls) => Some((tls.resume(socket, waiting), BytesMut::new())),
            Dormant::Tcp => None,
        }
    }
}

/// Parks a quiet connection: the lot keeps its socket (a duplicate of the
/// descriptor, so dropping the tokio stream only takes it out of the
/// runtime's reactor) and everything but its buffers.
pub(super) fn park<S: Parks>(conn: Box<Connection<S>>) -> Option<Box<Connection<S>>> {
    let ctx = Arc::clone(conn.ctx());
    let Some(lot) = ctx.parking.as_ref() else {
        return Some(conn);
    };
    let socket = match conn.io().socket().as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            tracing::debug!(error = %e, "could not park a quiet connection");
            return Some(conn);
        }
    };
    let (io, state, aliases) = conn.into_parts();
    let (tcp, dormant) = match io.into_dormant() {
        Ok(parts) => parts,
        // Bytes under way: it serves on (and parks no more).
        Err(io) => return Some(Connection::new(io, BytesMut::new(), state, aliases)),
    };
    let quiet = Quiet {
        state,
        aliases,
        dormant,
    };
    match lot.park(socket, quiet) {
        Ok(()) => None,
        Err((_, quiet)) => {
            let (io, read_buf) = S::wake(tcp, quiet.dormant, &[])?;
            Some(Connection::new(io, read_buf, quiet.state, quiet.aliases))
        }
    }
}

/// A connection between packets, without its socket and buffers: all a
/// parked connection keeps.
pub(super) struct Quiet {
    state: Accepted,
    aliases: Option<Box<TopicAliases>>,
    dormant: Dormant,
}

impl Parkable for Quiet {
    fn watch(&self, waker: &Waker) -> bool {
        // As in `poll_wake`: a connection that must go does not register
        // with the session, where a successor may be registered already.
        if self.state.told_to_go().is_some() {
            return true;
        }
        let mut cx = std::task::Context::from_waker(waker);
        let ready = self.state.session.poll_ready(&mut cx);
        ready || self.state.told_to_go().is_some()
    }

    async fn resume(self, socket: std::net::TcpStream) {
        match self.dormant {
            Dormant::Tcp => self.resume_on::<TcpStream>(socket).await,
            Dormant::Tls(_) => self.resume_on::<TlsStream<TcpStream>>(socket).await,
        }
    }
}

impl Quiet {
    /// Serves the connection again over `S` on `socket`.
    async fn resume_on<S: Parks>(mut self, socket: std::net::TcpStream) {
        // Read what input is waiting now: the runtime's reactor reports it
        // only some time after the socket is registered, and a PINGREQ
        // that arrived late must count before keep alive is judged. A
        // close or an error shows again on the connection's next read.
        let mut waiting = [0u8; IDLE_READ_BUFFER];
        let read = std::io::Read::read(&mut &socket, &mut waiting).unwrap_or(0);
        let woken = TcpStream::from_std(socket)
            .map_err(|e| e.to_string())
            .and_then(|io| {
                S::wake(io, self.dormant, &waiting[..read])
                    .ok_or_else(|| "parked without its transport's state".to_owned())
            });
        match woken {
            Ok((io, read_buf)) => {
                // Back to work, and not quiet until it has had time to
                // read and answer.
                self.state.ctx().sessions.touch(&self.state.session.link);
                let panics = self.state.ctx().metrics.panics.clone();
                let mut conn = Connection::new(io, read_buf, self.state, self.aliases);
                if read > 0 {
                    conn.note_read();
                }
                contain("MQTT connection", &panics, drive(conn, Some(park::<S>))).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resume a parked connection");
                self.state.release(Exit::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::super::test_support::{TestContext, delivery};
    use super::*;
    use crate::codec::Version;

    /// A waker that counts its wakes, standing in for the lot's.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl CountingWaker {
        fn wakes(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_parked_connection_is_woken_by_queued_messages_and_by_shutdown() {
        let test = TestContext::new("");
        let (conn, _client) = test.connection(Version::V5, "meter").await;
        let (_io, state, aliases) = conn.into_parts();
        let quiet = Quiet {
            state,
            aliases,
            dormant: Dormant::Tcp,
        };
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));

        assert!(!quiet.watch(&waker), "nothing to do yet");
        quiet.state.session.enqueue(delivery("plant/valve", 1));
        assert_eq!(counter.wakes(), 1, "a queued message wakes it");
        assert!(quiet.watch(&waker), "and it has work");
        assert!(!quiet.watch(&waker), "seen once");

        test.ctx.shut_down();
        assert_eq!(counter.wakes(), 2, "shutdown wakes it");
        assert!(quiet.watch(&waker), "told to go");
    }

    static OFFERED: AtomicUsize = AtomicUsize::new(0);

    /// A lot that gives every connection back.
    fn give_back(conn: Box<Connection<DuplexStream>>) -> Option<Box<Connection<DuplexStream>>> {
        OFFERED.fetch_add(1, Ordering::SeqCst);
        Some(conn)
    }

    #[tokio::test]
    async fn a_connection_given_back_by_the_lot_serves_on_until_its_client_leaves() {
        let test = TestContext::new("");
        // Quiet at once: nothing came after CONNECT.
        let (conn, client) = test.connection(Version::V5, "meter").await;
        let task = tokio::spawn(drive(conn, Some(give_back as Park<DuplexStream>)));
        tokio::time::timeout(Duration::from_secs(5), async {
            while OFFERED.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a quiet connection is offered to the lot");
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "given back, it serves on");
        assert_eq!(test.ctx.metrics.connections.get(), 1);

        drop(client);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends when the client leaves")
            .expect("no panic");
        assert_eq!(OFFERED.load(Ordering::SeqCst), 1, "offered only once");
        assert_eq!(test.ctx.metrics.connections.get(), 0, "its slot went back");
    }
}
