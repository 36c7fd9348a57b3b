//! Serving the HTTP listener: one hyper HTTP/1 connection per accepted
//! socket (upgrades included, for `/ws` and `/mqtt`), with a deadline for
//! reading request headers and a cap on connections per client address,
//! so slow or numerous connections from one place cannot hold the
//! listener. Over the cap a connection is closed at once and counted.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidewire_auth::Peer;
use tidewire_core::panics::contain;
use tidewire_tls::Tls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpLimits;

/// How long to wait before accepting again after an accept error that is
/// not about one connection (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The HTTP listener's metric families.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    open: Gauge,
    refused: Family<ReasonLabel, Counter>,
    header_timeouts: Counter,
    panics: Counter,
}

impl HttpMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics::default();
        let r = registry.sub_registry_with_prefix("tidewire_http");
        r.register(
            "connection_panics",
            "HTTP connections ended by a panic in a handler (a bug; the broker goes on)",
            m.panics.clone(),
        );
        r.register(
            "connections",
            "Open HTTP connections (a WebSocket leaves once upgraded)",
            m.open.clone(),
        );
        r.register(
            "connections_refused",
            "HTTP connections closed at once, by reason (per_ip_limit)",
            m.refused.clone(),
        );
        r.register(
            "header_timeouts",
            "HTTP connections closed for not sending request headers within http.header_read_timeout",
            m.header_timeouts.clone(),
        );
        m
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`], given back on drop.
struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Takes a slot for `ip` unless it already holds `max`.
    fn take(table: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` (HTTPS with `tls`) until `stop` is
/// cancelled. Then stops
/// accepting, lets every connection finish its in-flight request, and
/// returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    tls: Option<Tls>,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let per_ip = Arc::new(PerIp::default());
    let listener_on_loopback = listener.local_addr()?.ip().is_loopback();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accepting HTTP connections");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let ip = remote.ip().to_canonical();
        let Some(slot) = PerIp::take(&per_ip, ip, limits.max_connections_per_ip) else {
            metrics
                .refused
                .get_or_create(&ReasonLabel {
                    reason: "per_ip_limit",
                })
                .inc();
            tracing::debug!(%ip, "closing an HTTP connection over http.max_connections_per_ip");
            drop(tcp);
            continue;
        };
        // No Nagle: WebSocket frames and long-poll answers are small and
        // must leave at once (as MQTT's TCP connections do).
        let _ = tcp.set_nodelay(true);
        // Every request knows where it came from (for anonymous access and
        // per-address login throttling).
        let peer = Peer {
            address: ip,
            listener_on_loopback,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<_>| {
                request.extensions_mut().insert(peer);
                request
            },
        ));
        let (stop, metrics, builder, tls) =
            (stop.clone(), metrics.clone(), builder.clone(), tls.clone());
        connections.spawn(async move {
            metrics.open.inc();
            let serving = async {
                match tls {
                    // The handshake runs in the connection's task, under
                    // the same per-address cap, within its own deadline.
                    Some(tls) => {
                        if let Some(accepted) = tls.accept(tcp, "https").await {
                            serve_one(&builder, accepted.stream, service, &stop, &metrics, remote)
                                .await;
                        }
                    }
                    None => serve_one(&builder, tcp, service, &stop, &metrics, remote).await,
                }
            };
            contain("HTTP connection", &metrics.panics, serving).await;
            metrics.open.dec();
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection until it ends or `stop` (then gracefully).
async fn serve_one<I, S>(
    builder: &http1::Builder,
    io: I,
    service: S,
    stop: &CancellationToken,
    metrics: &HttpMetrics,
    remote: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<axum::body::Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            metrics.header_timeouts.inc();
        }
        tracing::trace!(error = %e, %remote, "HTTP connection ended");
    }
}

/// Accept errors about one connection (it went away before it was
/// accepted); the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_address_are_capped_and_given_back() {
        let table = Arc::new(PerIp::default());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = PerIp::take(&table, a, 2).expect("first");
        let second = PerIp::take(&table, a, 2).expect("second");
        assert!(
            PerIp::take(&table, a, 2).is_none(),
            "a third is over the cap"
        );
        let other = PerIp::take(&table, b, 2).expect("another address has its own count");
        drop(first);
        let third = PerIp::take(&table, a, 2).expect("a slot was given back");
        drop((second, third, other));
        let open = table.open.lock().expect("lock");
        assert!(open.is_empty(), "no entry is left for closed addresses");
    }
}
