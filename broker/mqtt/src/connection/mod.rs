//! One client connection, over any byte stream ([`Transport`]), from
//! admission to goodbye, in four parts:
//!
//! - `context.rs`: what every connection shares ([`Context`]), admission
//!   under `max_connections`, and the slot a connection holds;
//! - `handshake.rs`: CONNECT, authentication, attaching the session, the
//!   CONNACK, and the will when the connection ends;
//! - `packet_loop.rs`: reading and dispatching packets, acknowledging
//!   publishes once they are durable, sending queued messages within the
//!   client's window, and watching keep alive, takeover and shutdown;
//! - `parking.rs`: handing a quiet TCP or TLS connection to the parking
//!   lot (`park.rs`) and taking it back when there is work.
//!
//! Inbound publishes are submitted to the broker as they arrive and
//! acknowledged in arrival order as each becomes durable, so a client can
//! keep many QoS 1/2 publishes in flight and they share fsyncs.

mod context;
mod handshake;
mod packet_loop;
mod parking;

use rumqttd::protocol::DisconnectReasonCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use context::{Context, SubscribeError, refuse_busy};

use context::ConnectionSlot;
use handshake::handshake;
use packet_loop::Connection;
use parking::{Park, drive};

/// Topic aliases a client may set towards us (MQTT 5 Topic Alias Maximum),
/// and the most we set towards a client.
pub const TOPIC_ALIAS_MAXIMUM: u16 = 64;
/// Read buffer of a connection that sends little: idle connections stay
/// small.
const IDLE_READ_BUFFER: usize = 256;

/// A byte stream a session can be served over: TCP here, WebSocket
/// elsewhere.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// DISCONNECT from the client; `true` asks for the will anyway (0x04).
    Disconnected { with_will: bool },
    /// The peer closed the stream or it failed.
    Closed,
    /// We close it with this MQTT 5 reason.
    Refused(DisconnectReasonCode),
    /// Another connection took the client id.
    TakenOver,
    /// The server is stopping.
    Shutdown,
    /// Nothing has happened for a while: the connection may park.
    Quiet,
}

impl Exit {
    /// Whether the will is published when the connection ends this way:
    /// always, except after a plain DISCONNECT and at shutdown.
    fn publishes_will(self) -> bool {
        match self {
            Exit::Disconnected { with_will } => with_will,
            Exit::Shutdown => false,
            Exit::Closed | Exit::Refused(_) | Exit::TakenOver | Exit::Quiet => true,
        }
    }

    /// The reason an MQTT 5 client is given in a DISCONNECT when the
    /// connection ends this way; `None` when the server says nothing.
    fn disconnect_reason(self) -> Option<DisconnectReasonCode> {
        match self {
            Exit::Refused(reason) => Some(reason),
            Exit::TakenOver => Some(DisconnectReasonCode::SessionTakenOver),
            Exit::Shutdown => Some(DisconnectReasonCode::ServerShuttingDown),
            Exit::Disconnected { .. } | Exit::Closed | Exit::Quiet => None,
        }
    }
}

/// Writes `bytes` and flushes: a no-op for TCP, but a WebSocket sends its
/// buffered messages only on flush.
async fn write_out<S: Transport>(io: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Serves one connection until it ends or parks.
///
/// A connection waiting for input keeps small: the handshake runs in its
/// own boxed future, the connection's state is one heap block, and the
/// wait is a single poll over the socket, the session's waker and the
/// pending acks, with no timer or notification futures of its own (keep
/// alive and shutdown wake it through the session). Once quiet, a TCP or
/// TLS connection gives up even that and parks.
async fn serve<S: Transport>(io: S, slot: ConnectionSlot, park: Option<Park<S>>) {
    slot.ctx.metrics.accepted.inc();
    match Box::pin(handshake(io, slot)).await {
        Ok(Some((io, read_buf, accepted))) => {
            drive(Connection::start(io, read_buf, accepted), park).await;
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_will_is_published_unless_the_client_said_goodbye_or_the_server_stops() {
        let publishes = [
            (Exit::Disconnected { with_will: false }, false),
            (Exit::Disconnected { with_will: true }, true),
            (Exit::Shutdown, false),
            (Exit::Closed, true),
            (Exit::Refused(DisconnectReasonCode::KeepAliveTimeout), true),
            (Exit::TakenOver, true),
            (Exit::Quiet, true),
        ];
        for (exit, expected) in publishes {
            assert_eq!(exit.publishes_will(), expected, "{exit:?}");
        }
    }

    #[test]
    fn a_goodbye_names_why_the_server_closed_the_connection() {
        let reasons = [
            (
                Exit::Refused(DisconnectReasonCode::ReceiveMaximumExceeded),
                Some(DisconnectReasonCode::ReceiveMaximumExceeded),
            ),
            (
                Exit::TakenOver,
                Some(DisconnectReasonCode::SessionTakenOver),
            ),
            (
                Exit::Shutdown,
                Some(DisconnectReasonCode::ServerShuttingDown),
            ),
            (Exit::Disconnected { with_will: true }, None),
            (Exit::Closed, None),
            (Exit::Quiet, None),
        ];
        for (exit, expected) in reasons {
            assert_eq!(exit.disconnect_reason(), expected, "{exit:?}");
        }
    }
}
