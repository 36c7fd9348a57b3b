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

use super::Exit;
use super::context::Transport;
use super::handshake::Accepted;
use super::packet_loop::{Connection, IDLE_READ_BUFFER, TopicAliases};
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
                let mut conn = self.into_connection(io, BytesMut::from(&waiting[..read]));
                if read > 0 {
                    conn.note_read();
                }
                drive(conn, Some(park_tcp)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resume a parked connection");
                self.state.release(Exit::Closed);
            }
        }
    }
}
