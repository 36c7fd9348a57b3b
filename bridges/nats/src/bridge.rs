//! The NATS bridge as a [`BridgeConfig`]: resolving its links against the
//! server's streams, and the task that connects, runs every link on one
//! connection, and reconnects with backoff when anything breaks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tidewire_bridge::{
    BridgeConfig, BridgeContext, BridgeError, BridgeState, Direction, Health, LinkState, Running,
};
use tidewire_core::{Stream, StreamHold};
use tokio_util::sync::CancellationToken;

use crate::config::NatsBridge;
use crate::connection::{self, Session};
use crate::inbound::InboundLink;
use crate::outbound::OutboundLink;

/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How often outbound lag is refreshed while a link is not sending.
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// Time given to the old connection to flush when a session ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

impl BridgeConfig for NatsBridge {
    fn kind(&self) -> &'static str {
        crate::KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, ctx: BridgeContext) -> Result<Running, BridgeError> {
        let streams: Vec<StreamHold> = self
            .outbound
            .iter()
            .enumerate()
            .map(|(i, o)| self.stream_for(&ctx, i, o))
            .collect::<Result<_, _>>()?;
        let descriptions = self
            .outbound
            .iter()
            .zip(&streams)
            .map(|(o, s)| {
                (
                    Direction::Outbound,
                    format!(
                        "stream {}, topics {}",
                        s.stream().spec.name,
                        o.route.source()
                    ),
                    format!(
                        "{} {}",
                        if o.jetstream { "jetstream" } else { "subject" },
                        o.route.target()
                    ),
                )
            })
            .chain(self.inbound.iter().map(|i| {
                (
                    Direction::Inbound,
                    match &i.durable {
                        Some(d) => format!("durable {d}, subject {}", i.route.source()),
                        None => format!("subject {}", i.route.source()),
                    },
                    format!("topic {}", i.route.target()),
                )
            }));
        let state = BridgeState::new(crate::KIND, &self.name, descriptions, &ctx.metrics);
        let outbound = self
            .outbound
            .iter()
            .zip(streams)
            .enumerate()
            .map(|(i, (o, stream))| {
                OutboundLink::open(
                    o.clone(),
                    stream,
                    &ctx.state_dir,
                    i,
                    &self.node,
                    Arc::clone(&state.links()[i]),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let user = match &self.publish_as {
            Some(name) => Some((
                ctx.auth.clone(),
                ctx.auth.user(name).ok_or_else(|| BridgeError::Config {
                    key: format!("bridge.nats.{}.publish_as", self.name),
                    message: format!("no user named {name:?} in [[users]]"),
                })?,
            )),
            None => None,
        };
        let inbound = self
            .inbound
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                InboundLink::new(
                    spec.clone(),
                    ctx.broker.clone(),
                    &self.name,
                    Arc::clone(&state.links()[outbound.len() + i]),
                    user.clone(),
                )
            })
            .collect();
        let task = tokio::spawn(run(
            self.clone(),
            Arc::clone(&state),
            outbound,
            inbound,
            ctx.shutdown,
        ));
        Ok(Running { state, task })
    }
}

impl NatsBridge {
    /// The stream outbound link `i` reads (the named one, or the first
    /// whose filters cover `from`), held so that it cannot be deleted while
    /// the bridge runs.
    fn stream_for(
        &self,
        ctx: &BridgeContext,
        i: usize,
        o: &crate::config::Outbound,
    ) -> Result<StreamHold, BridgeError> {
        let streams = ctx.broker.streams();
        let open = streams.snapshot();
        let key = format!("bridge.nats.{}.outbound[{i}]", self.name);
        let found = match &o.stream {
            Some(name) => open.get(name).ok_or_else(|| BridgeError::Config {
                key: format!("{key}.stream"),
                message: format!("no stream named {name:?}"),
            })?,
            None => open
                .iter()
                .find(|s| {
                    s.spec
                        .filters
                        .iter()
                        .any(|f| covers(f.as_str(), o.route.source().as_str()))
                })
                .ok_or_else(|| BridgeError::Config {
                    key: format!("{key}.from"),
                    message: format!(
                        "no stream keeps every topic of {}; add one or name it with `stream`",
                        o.route.source()
                    ),
                })?,
        };
        streams
            .hold(
                &found.spec.name,
                format!("nats bridge {:?} (outbound[{i}])", self.name),
            )
            .map_err(|e| BridgeError::Config {
                key,
                message: e.to_string(),
            })
    }
}

/// True when every topic matching the MQTT filter `inner` also matches
/// `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    let mut inner_levels = inner.split('/');
    for level in outer.split('/') {
        match (level, inner_levels.next()) {
            ("#", _) => return true,
            (_, None) | (_, Some("#")) => return false,
            ("+", Some(_)) => {}
            (_, Some("+")) => return false,
            (literal, Some(l)) => {
                if literal != l {
                    return false;
                }
            }
        }
    }
    inner_levels.next().is_none()
}

/// The bridge's task: connect, run the links, reconnect, until shutdown;
/// beside it, keep outbound lag current while NATS is unreachable.
async fn run(
    spec: NatsBridge,
    state: Arc<BridgeState>,
    outbound: Vec<OutboundLink>,
    inbound: Vec<InboundLink>,
    shutdown: CancellationToken,
) {
    let watched: Vec<_> = outbound.iter().map(OutboundLink::watch).collect();
    tokio::join!(
        connect_loop(spec, &state, outbound, inbound, &shutdown),
        track_lag(watched, &shutdown)
    );
    state.set_health(Health::Stopped, None);
}

/// Refreshes each outbound link's lag from its stream's end.
async fn track_lag(links: Vec<(Arc<LinkState>, Stream)>, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(LAG_REFRESH);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for (state, stream) in &links {
            state.refresh_lag(&stream.log);
        }
    }
}

async fn connect_loop(
    spec: NatsBridge,
    state: &Arc<BridgeState>,
    mut outbound: Vec<OutboundLink>,
    inbound: Vec<InboundLink>,
    shutdown: &CancellationToken,
) {
    let mut backoff = spec.reconnect_min;
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let reason = match connection::connect(&spec, state, shutdown).await {
            Ok(session) => {
                tracing::info!(bridge = %spec.name, "NATS bridge connected");
                state.set_health(Health::Connected, None);
                spec.publisher.connected(Some(session.client.clone()));
                let reason = session_run(&session, &mut outbound, &inbound).await;
                spec.publisher.connected(None);
                session.close(DRAIN_TIMEOUT).await;
                reason
            }
            Err(reason) => reason,
        };
        if shutdown.is_cancelled() {
            break;
        }
        tracing::warn!(bridge = %spec.name, reason = %reason, retry_in = ?backoff, "NATS bridge disconnected");
        state.set_health(Health::Disconnected, Some(reason));
        if started.elapsed() >= STABLE_SESSION {
            backoff = spec.reconnect_min;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(spec.reconnect_max);
    }
}

/// Runs every link on one connection until it drops or a link fails;
/// returns why the session ended.
async fn session_run(
    session: &Session,
    outbound: &mut [OutboundLink],
    inbound: &[InboundLink],
) -> String {
    let ended = &session.ended;
    let client = &session.client;
    let failed = |e: crate::error::LinkError| {
        ended.cancel();
        e.to_string()
    };
    let outs = join_all(outbound.iter_mut().map(|link| async move {
        link.run(client, ended).await.map_err(|e| {
            link_error(&e);
            failed(e)
        })
    }));
    let ins = join_all(inbound.iter().map(|link| async move {
        link.run(client, ended).await.map_err(|e| {
            link_error(&e);
            failed(e)
        })
    }));
    let (outs, ins) = tokio::join!(outs, ins);
    if outbound.is_empty() && inbound.is_empty() {
        // A bridge that only serves fan-out's `nats:` targets holds its
        // connection until it drops.
        ended.cancelled().await;
    }
    outs.into_iter()
        .chain(ins)
        .find_map(Result::err)
        .unwrap_or_else(|| "connection lost".to_owned())
}

fn link_error(e: &crate::error::LinkError) {
    tracing::warn!(error = %e, "NATS bridge link failed");
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn covering_filters() {
        assert!(covers("#", "sensors/#"));
        assert!(covers("sensors/#", "sensors/+/temp"));
        assert!(covers("sensors/+", "sensors/a"));
        assert!(covers("a/b", "a/b"));
        assert!(!covers("sensors/+", "sensors/#"));
        assert!(!covers("sensors/a", "sensors/+"));
        assert!(!covers("other/#", "sensors/#"));
        assert!(!covers("a/b", "a/b/c"));
    }
}
