//! The hand-off between a connection's task and the parking lot
//! ([`crate::park`]): [`drive`] runs a connection until it ends or goes
//! quiet, a quiet TCP connection leaves its socket and [`Quiet`] state in
//! the lot and its task ends, and the lot resumes it on a new task when
//! input arrives or its session wakes it.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::task::Waker;

use bytes::BytesMut;
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

/// Parks a quiet TCP connection: the lot keeps its socket (a duplicate of
/// the descriptor, so dropping the tokio stream only takes it out of the
/// runtime's reactor) and everything but its buffers.
pub(super) fn park_tcp(conn: Box<Connection<TcpStream>>) -> Option<Box<Connection<TcpStream>>> {
    let ctx = Arc::clone(conn.ctx());
    let Some(lot) = ctx.parking.as_ref() else {
        return Some(conn);
    };
    let socket = match conn.io().as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            tracing::debug!(error = %e, "could not park a quiet connection");
            return Some(conn);
        }
    };
    let (io, quiet) = Quiet::from_connection(*conn);
    match lot.park(socket, quiet) {
        Ok(()) => None,
        Err((_, quiet)) => Some(quiet.into_connection(io, BytesMut::new())),
    }
}

/// A connection between packets, without its socket and buffers: all a
/// parked connection keeps.
pub(super) struct Quiet {
    state: Accepted,
    aliases: Option<Box<TopicAliases>>,
}

impl Quiet {
    /// Takes the socket out, leaving what a parked connection keeps.
    fn from_connection<S: Transport>(conn: Connection<S>) -> (S, Quiet) {
        let (io, state, aliases) = conn.into_parts();
        (io, Quiet { state, aliases })
    }

    /// A connection again, on `io`.
    fn into_connection<S: Transport>(self, io: S, read_buf: BytesMut) -> Box<Connection<S>> {
        Connection::new(io, read_buf, self.state, self.aliases)
    }
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

    async fn resume(mut self, socket: std::net::TcpStream) {
        // Read what input is waiting now: the runtime's reactor reports it
        // only some time after the socket is registered, and a PINGREQ
        // that arrived late must count before keep alive is judged. A
        // close or an error shows again on the connection's next read.
        let mut waiting = [0u8; IDLE_READ_BUFFER];
        let read = std::io::Read::read(&mut &socket, &mut waiting).unwrap_or(0);
        match TcpStream::from_std(socket) {
            Ok(io) => {
                // Back to work, and not quiet until it has had time to
                // read and answer.
                self.state.ctx().sessions.touch(&self.state.session.link);
                let panics = self.state.ctx().metrics.panics.clone();
                let mut conn = self.into_connection(io, BytesMut::from(&waiting[..read]));
                if read > 0 {
                    conn.note_read();
                }
                contain("MQTT connection", &panics, drive(conn, Some(park_tcp))).await;
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
        let (_io, quiet) = Quiet::from_connection(*conn);
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
