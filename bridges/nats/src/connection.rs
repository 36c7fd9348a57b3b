//! Connecting to NATS for one bridge session.
//!
//! The bridge, not async-nats, owns reconnection: when the connection
//! drops, the session ends, the client is closed and a new one connects
//! with backoff. async-nats would otherwise reconnect on its own and send
//! the publishes still queued in the old client after messages lost with
//! the old socket, which breaks the order JetStream receives. So the
//! client's own reconnect delay is made effectively infinite once
//! connected, and its `Disconnected` event ends the session.
//!
//! That leaves the old client's connection task waiting out the delay,
//! with its socket, buffers and queued publishes, and async-nats offers no
//! way to stop it: the task has no handle, `max_reconnects` always allows
//! one attempt after a disconnect (and 0 means no limit), and a drain is a
//! command queued behind the publishes, read only once reconnected. So
//! each session's client runs on a runtime of its own (one thread, named
//! `nats-<bridge>`), and [`Session::close`] shuts that runtime down, which
//! drops the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tidewire_bridge::BridgeState;
use tokio_util::sync::CancellationToken;

use crate::config::{Auth, NatsBridge};

/// How long the client would wait before reconnecting by itself: never,
/// in practice; the session ends first.
const NO_SELF_RECONNECT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A connected client and the token its disconnection cancels. Dropping
/// it stops the client's tasks at once; [`Session::close`] lets a client
/// that is still connected flush first.
#[derive(Debug)]
pub struct Session {
    /// The client.
    pub client: Client,
    /// Cancelled when the connection drops or the bridge shuts down.
    pub ended: CancellationToken,
    /// Cancelled when the client reports `Closed` (a drain finished).
    closed: CancellationToken,
    /// Where the client's tasks run.
    runtime: ClientRuntime,
}

impl Session {
    /// Ends the session. A client that is still connected drains first
    /// (what it has queued, e.g. inbound acks, is sent) for at most
    /// `timeout`; then the client's tasks stop, whatever they are doing,
    /// so a disconnected client never reconnects and leaves nothing
    /// behind.
    pub async fn close(self, timeout: Duration) {
        if self.client.connection_state() == State::Connected {
            let drained = async {
                if self.client.drain().await.is_ok() {
                    self.closed.cancelled().await;
                }
            };
            if tokio::time::timeout(timeout, drained).await.is_err() {
                tracing::debug!("NATS connection did not drain in time");
            }
        }
        drop(self.runtime);
    }
}

/// The runtime a session's client runs on, shut down (without waiting)
/// when dropped: dropping a runtime inside async code would panic.
#[derive(Debug)]
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn new(bridge: &str) -> Result<ClientRuntime, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("nats-{bridge}"))
            .enable_all()
            .build()
            .map(|r| ClientRuntime(Some(r)))
            .map_err(|e| format!("cannot start a runtime for the NATS client: {e}"))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
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
    let closed = CancellationToken::new();
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
            let closed = closed.clone();
            let state = Arc::clone(state);
            move |event| {
                let ended = ended.clone();
                let closed = closed.clone();
                let state = Arc::clone(&state);
                async move {
                    match event {
                        Event::Disconnected => ended.cancel(),
                        Event::Closed => {
                            ended.cancel();
                            closed.cancel();
                        }
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
    // The client spawns its tasks on the runtime that runs `connect`.
    let runtime = ClientRuntime::new(&spec.name)?;
    let connecting = runtime
        .handle()
        .ok_or("no runtime for the NATS client")?
        .spawn(options.connect(urls));
    let client = tokio::select! {
        joined = connecting => joined
            .map_err(|e| format!("the NATS client failed to start: {e}"))?
            .map_err(|e| describe_connect_error(&e))?,
        () = shutdown.cancelled() => return Err("shutting down".to_owned()),
    };
    connected.store(true, Ordering::SeqCst);
    Ok(Session {
        client,
        ended,
        closed,
        runtime,
    })
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
