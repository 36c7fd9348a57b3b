//! `/mqtt`: MQTT 3.1.1 and 5.0 over WebSocket (subprotocol `mqtt`). The
//! socket becomes a byte stream ([`WsByteStream`]) and is served by the
//! same session layer as the TCP listener, under the same connection cap.
//! A WebSocket message may carry part of a packet or several packets: the
//! MQTT codec sees only bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use tidewire_auth::Peer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::Gateway;

/// Subprotocols accepted, in order of preference (`mqttv3.1` is what old
/// 3.1 clients ask for).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// How long sending the close for an oversize message may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Upgrades to MQTT over WebSocket.
pub(crate) async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    peer: Option<Extension<Peer>>,
    ws: WebSocketUpgrade,
) -> Response {
    let peer = peer.map(|Extension(peer)| peer);
    // A message may hold several packets, so allow two of the largest.
    let max_message = gateway.mqtt.settings.max_packet_bytes.saturating_mul(2);
    gateway
        .configure(ws, max_message)
        .protocols(SUBPROTOCOLS)
        .on_upgrade(move |socket| async move {
            let open = gateway.metrics.connections("mqtt");
            open.inc();
            let stream = WsByteStream::new(socket);
            Arc::clone(&gateway.mqtt).admit(stream, peer).await;
            open.dec();
        })
}

/// A WebSocket as a byte stream: binary messages in, one binary message
/// per write out. Text messages break the MQTT-over-WebSocket rules and end
/// the stream with an error; pings are answered by the WebSocket layer. A
/// message over the limit ends it too, after a close with status 1009
/// (Message Too Big).
pub struct WsByteStream {
    socket: WebSocket,
    unread: Bytes,
    too_big: TooBig,
}

/// Where the stream is in answering a message over the limit.
enum TooBig {
    /// No such message seen.
    No,
    /// The 1009 close still has to be queued (`Some`) and flushed, by the
    /// deadline.
    Closing(Option<CloseFrame>, Pin<Box<Sleep>>),
    /// The close was sent (or could not be); every read now fails.
    Closed,
}

impl std::fmt::Debug for WsByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsByteStream")
            .field("unread", &self.unread.len())
            .finish_non_exhaustive()
    }
}

impl WsByteStream {
    /// Wraps an upgraded socket.
    pub fn new(socket: WebSocket) -> WsByteStream {
        WsByteStream {
            socket,
            unread: Bytes::new(),
            too_big: TooBig::No,
        }
    }

    /// Sends the 1009 close once (giving up after [`CLOSE_WAIT`] on a peer
    /// that does not read), then fails the read.
    fn poll_too_big(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if let TooBig::Closing(frame, deadline) = &mut self.too_big {
            if deadline.as_mut().poll(cx).is_pending() {
                let socket = Pin::new(&mut self.socket);
                if let Err(e) = ready!(poll_send_close(socket, frame, cx)) {
                    tracing::debug!(error = %e, "could not send close 1009 to an /mqtt peer");
                }
            } else {
                tracing::debug!("an /mqtt peer did not take close 1009 in time");
            }
            self.too_big = TooBig::Closed;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a WebSocket message over the size limit",
        )))
    }
}

/// Queues `frame` (once) and flushes it.
fn poll_send_close(
    mut socket: Pin<&mut WebSocket>,
    frame: &mut Option<CloseFrame>,
    cx: &mut TaskContext<'_>,
) -> Poll<Result<(), axum::Error>> {
    if frame.is_some() {
        ready!(socket.as_mut().poll_ready(cx))?;
        socket.as_mut().start_send(Message::Close(frame.take()))?;
    }
    socket.poll_flush(cx)
}

fn io_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for WsByteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !matches!(self.too_big, TooBig::No) {
                return self.poll_too_big(cx);
            }
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                let chunk = self.unread.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Err(e)) if crate::is_too_big(&e) => {
                    let frame = CloseFrame {
                        code: close_code::SIZE,
                        reason: "message larger than twice mqtt.max_packet_bytes".into(),
                    };
                    let deadline = Box::pin(tokio::time::sleep(CLOSE_WAIT));
                    self.too_big = TooBig::Closing(Some(frame), deadline);
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Some(Ok(Message::Binary(data))) => self.unread = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket carries binary messages only",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }
}

impl AsyncWrite for WsByteStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut socket = Pin::new(&mut self.socket);
        ready!(socket.as_mut().poll_ready(cx)).map_err(io_error)?;
        socket
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(io_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_close(cx).map_err(io_error)
    }
}
