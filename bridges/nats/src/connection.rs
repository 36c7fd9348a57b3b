//! Connecting to NATS for one bridge session.
//!
//! The bridge, not async-nats, owns reconnection: when the connection
//! drops, the session ends, the client is dropped and a new one connects
//! with backoff. async-nats would otherwise reconnect on its own and send
//! the publishes still queued in the old client after messages lost with
//! the old socket, which breaks the order JetStream receives. So the
//! client's own reconnect delay is made effectively infinite once
//! connected, and its `Disconnected` event ends the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tidewire_bridge::BridgeState;
use tokio_util::sync::CancellationToken;

use crate::config::{Auth, NatsBridge};

/// How long the client would wait before reconnecting by itself: never,
/// in practice; the session ends first.
const NO_SELF_RECONNECT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A connected client and the token its disconnection cancels.
#[derive(Debug)]
pub struct Session {
    /// The client.
    pub client: Client,
    /// Cancelled when the connection drops or the bridge shuts down.
    pub ended: CancellationToken,
}

/// Connects once (trying each URL), or explains why it could not.
pub async fn connect(
    spec: &NatsBridge,
    state: &Arc<BridgeState>,
    shutdown: &CancellationToken,
) -> Result<Session, String> {
    let urls = spec
        .urls
        .iter()
        .map(|u| u.parse::<ServerAddr>().map_err(|e| format!("{u}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ended = shutdown.child_token();
    let connected = Arc::new(AtomicBool::new(false));
    let mut options = ConnectOptions::new()
        .name(format!("tidewire bridge {} ({})", spec.name, spec.node))
        .connection_timeout(spec.connect_timeout)
        .retain_servers_order()
        .reconnect_delay_callback({
            let connected = Arc::clone(&connected);
            move |_| {
                if connected.load(Ordering::SeqCst) {
                    NO_SELF_RECONNECT
                } else {
                    Duration::ZERO
                }
            }
        })
        .event_callback({
            let ended = ended.clone();
            let state = Arc::clone(state);
            move |event| {
                let ended = ended.clone();
                let state = Arc::clone(&state);
                async move {
                    match event {
                        Event::Disconnected | Event::Closed => ended.cancel(),
                        Event::ServerError(e) => {
                            tracing::warn!(bridge = state.name(), error = %e, "NATS server error");
                            state.note_error(format!("server error: {e}"));
                        }
                        Event::ClientError(e) => {
                            tracing::warn!(bridge = state.name(), error = %e, "NATS client error");
                        }
                        _ => {}
                    }
                }
            }
        });
    options = match &spec.auth {
        Auth::None => options,
        Auth::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
        Auth::Token(t) => options.token(t.clone()),
        Auth::Nkey(seed) => options.nkey(seed.clone()),
        Auth::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| format!("credentials file {}: {e}", path.display()))?,
    };
    if spec.tls_required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &spec.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    let client = tokio::select! {
        result = options.connect(urls) => result.map_err(|e| describe_connect_error(&e))?,
        () = shutdown.cancelled() => return Err("shutting down".to_owned()),
    };
    connected.store(true, Ordering::SeqCst);
    Ok(Session { client, ended })
}

fn describe_connect_error(e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::AuthorizationViolation | K::Authentication => {
            format!("authorization failed: check the bridge's credentials ({e})")
        }
        K::TimedOut => format!("connection timed out ({e})"),
        K::Io => format!("cannot reach the server ({e})"),
        _ => e.to_string(),
    }
}
