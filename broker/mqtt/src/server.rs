//! The MQTT listener and its background work: accepting connections under
//! the connection cap, saving persistent sessions, expiring offline ones,
//! and stopping cleanly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tidewire_core::Broker;
use tidewire_storage::{OnFatal, StorageMetrics};
use tidewire_tls::Tls;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::MqttSettings;
use crate::connection::Context;
use crate::error::MqttError;
use crate::fanout::MqttFanout;
use crate::metrics::MqttMetrics;
use crate::retained::RetainedStore;
use crate::router::Router;
use crate::sessions::SessionTable;

/// How long connections get to finish their acks at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How often offline sessions are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How often connections past their keep-alive deadline, or newly quiet,
/// are looked for: a silent client is closed at most this long after its
/// deadline.
const KEEPALIVE_SWEEP: Duration = Duration::from_millis(250);

/// A started MQTT server: state loaded, listener bound, not yet serving.
#[derive(Debug)]
pub struct MqttServer {
    listener: TcpListener,
    addr: SocketAddr,
    /// The MQTT-over-TLS listener, its address and acceptor.
    tls: Option<(TcpListener, SocketAddr, Tls)>,
    ctx: Arc<Context>,
}

impl MqttServer {
    /// Loads retained messages and saved sessions from `data_dir/mqtt`,
    /// installs the MQTT fan-out into `broker`, and binds the listener.
    pub async fn start(
        settings: MqttSettings,
        broker: Broker,
        data_dir: &Path,
        registry: &mut Registry,
        storage_metrics: &StorageMetrics,
        on_fatal: OnFatal,
    ) -> Result<MqttServer, MqttError> {
        let metrics = MqttMetrics::register(registry);
        let dir = data_dir.join("mqtt");
        let retained = {
            let (dir, storage_metrics, metrics) =
                (dir.clone(), storage_metrics.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || {
                RetainedStore::open(&dir, &storage_metrics, metrics, on_fatal)
            })
            .await
            .map_err(|e| MqttError::Internal(e.to_string()))??
        };
        let retained = Arc::new(retained);
        let router = Arc::new(Router::default());
        let sessions_file = dir.join("sessions.json");
        let sessions = Arc::new(SessionTable::new(
            Arc::clone(&router),
            settings.max_queued_messages,
            metrics.clone(),
            sessions_file.clone(),
        ));
        let restored = sessions.restore().map_err(|source| MqttError::Sessions {
            path: sessions_file.display().to_string(),
            source,
        })?;
        if restored > 0 {
            tracing::info!(sessions = restored, "restored persistent MQTT sessions");
        }
        broker.set_fanout(Arc::new(MqttFanout::new(
            Arc::clone(&router),
            Arc::clone(&retained),
        )));

        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| MqttError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| MqttError::Bind {
            addr: settings.listen,
            source,
        })?;
        let tls = match &settings.tls {
            Some((tls_addr, tls)) => {
                let bind_error = |source| MqttError::Bind {
                    addr: *tls_addr,
                    source,
                };
                let listener = TcpListener::bind(tls_addr).await.map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                Some((listener, bound, tls.clone()))
            }
            None => None,
        };
        let ctx = Arc::new(Context::new(
            broker, router, sessions, retained, settings, metrics,
        ));
        Ok(MqttServer {
            listener,
            addr,
            tls,
            ctx,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of the TLS listener, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, addr, _)| *addr)
    }

    /// The shared state, for serving sessions over other transports
    /// (WebSocket) with [`Context::admit`].
    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.ctx)
    }

    /// Accepts connections until `shutdown`, then lets them finish, saves
    /// sessions and closes the retained store.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), MqttError> {
        let ctx = self.ctx;
        let housekeeping = tokio::spawn(housekeeping(Arc::clone(&ctx), shutdown.clone()));
        let tls = self.tls.map(|(listener, _, tls)| (listener, tls));
        loop {
            let (accepted, secure) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => (accepted, None),
                accepted = accept_tls(&tls) => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accepting an MQTT connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match secure {
                Some(tls) => tokio::spawn(Arc::clone(&ctx).admit_tls(stream, tls)),
                None => tokio::spawn(Arc::clone(&ctx).admit_tcp(stream)),
            };
        }
        drop(tls);
        drop(self.listener);
        ctx.shut_down();
        if !ctx.drain(DRAIN_TIMEOUT).await {
            tracing::warn!("MQTT connections did not finish in time");
        }
        let _ = housekeeping.await;
        save_sessions(&ctx).await;
        ctx.retained.close().await;
        Ok(())
    }
}

/// The next connection on the TLS listener, with its acceptor; never
/// resolves without one.
async fn accept_tls(
    tls: &Option<(TcpListener, Tls)>,
) -> (std::io::Result<(TcpStream, SocketAddr)>, Option<Tls>) {
    match tls {
        Some((listener, tls)) => (listener.accept().await, Some(tls.clone())),
        None => std::future::pending().await,
    }
}

/// Saves changed sessions, expires offline ones and wakes connections
/// whose clients are past their keep alive, until shutdown.
async fn housekeeping(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut save = tokio::time::interval(ctx.settings.session_save_interval);
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    let mut keepalive = tokio::time::interval(KEEPALIVE_SWEEP);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = keepalive.tick() => ctx.sessions.wake_overdue_and_quiet(),
            _ = save.tick() => save_sessions(&ctx).await,
            _ = sweep.tick() => {
                // A delayed will is scheduled for min(will delay, session
                // expiry), so it has fired by the time its session expires.
                for session in ctx.sessions.expire() {
                    tracing::debug!(client_id = %session.client_id, "session expired");
                }
            }
        }
    }
}

async fn save_sessions(ctx: &Arc<Context>) {
    let sessions = Arc::clone(&ctx.sessions);
    match tokio::task::spawn_blocking(move || sessions.save_if_changed()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not save MQTT sessions"),
        Err(e) => tracing::error!(error = %e, "session save task failed"),
    }
}
