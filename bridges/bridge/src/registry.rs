//! Starting and stopping bridges: the [`BridgeConfig`] trait every bridge
//! kind's validated config implements, the [`BridgeContext`] it starts
//! with, and [`Bridges`], the running set the server owns.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use tidewire_auth::Auth;
use tidewire_core::{Broker, ConfigError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::BridgeError;
use crate::metrics::BridgeMetrics;
use crate::status::{BridgeState, BridgeStatus, Health};

/// What a bridge gets when it starts.
#[derive(Debug, Clone)]
pub struct BridgeContext {
    /// The broker core: streams to read, and the publish path for inbound
    /// messages.
    pub broker: Broker,
    /// A directory the bridge owns for its state (cursors), created.
    pub state_dir: PathBuf,
    /// Cancelled when tidewire shuts down.
    pub shutdown: CancellationToken,
    /// The shared bridge metrics.
    pub metrics: BridgeMetrics,
    /// The users and rules, for a bridge that publishes as a user.
    pub auth: Auth,
}

/// A running bridge: its status board and its task.
#[derive(Debug)]
pub struct Running {
    /// Live status.
    pub state: Arc<BridgeState>,
    /// The bridge's task; it ends after `shutdown` is cancelled.
    pub task: JoinHandle<()>,
}

/// A validated bridge config of some kind, ready to start.
pub trait BridgeConfig: Send + Sync + std::fmt::Debug {
    /// The bridge kind, e.g. `nats`; also its state directory's parent.
    fn kind(&self) -> &'static str;
    /// The configured name, unique within its kind.
    fn name(&self) -> &str;
    /// Starts the bridge's task on the current tokio runtime. Fails only
    /// when the config does not fit this server (e.g. a missing stream);
    /// an unreachable peer is a status, never a start failure.
    fn start(&self, ctx: BridgeContext) -> Result<Running, BridgeError>;
}

/// Validates every configured bridge of one kind: `validate` turns each
/// entry into its kind's [`BridgeConfig`] (with `key` = `<list_key>[i]`
/// naming it in errors), and names must be unique within the kind. Each
/// kind's `validate_all` is this with its own types.
pub fn validate_kind<C, B>(
    entries: &[C],
    list_key: &str,
    name: impl Fn(&C) -> &str,
    validate: impl Fn(&C, &str) -> Result<B, ConfigError>,
) -> Result<Vec<B>, ConfigError>
where
    B: BridgeConfig,
{
    let mut names = HashSet::new();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let key = format!("{list_key}[{i}]");
            if !names.insert(name(entry)) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!(
                        "another bridge of this kind is already called {:?}",
                        name(entry)
                    ),
                ));
            }
            validate(entry, &key)
        })
        .collect()
}

/// The running bridges.
#[derive(Debug)]
pub struct Bridges {
    states: Arc<[Arc<BridgeState>]>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Bridges {
    /// Starts every bridge. Each gets `data_dir/bridges/<kind>/<name>` as
    /// its state directory and a child of `shutdown`. On an error, the
    /// bridges already started are stopped.
    pub async fn start(
        configs: &[Arc<dyn BridgeConfig>],
        broker: &Broker,
        data_dir: &std::path::Path,
        metrics: &BridgeMetrics,
        auth: &Auth,
        shutdown: &CancellationToken,
    ) -> Result<Bridges, BridgeError> {
        let mut bridges = Bridges {
            states: Arc::from(Vec::new()),
            tasks: Vec::new(),
            shutdown: shutdown.child_token(),
        };
        let mut states = Vec::with_capacity(configs.len());
        for config in configs {
            let state_dir = data_dir
                .join("bridges")
                .join(config.kind())
                .join(config.name());
            if let Err(source) = std::fs::create_dir_all(&state_dir) {
                bridges.stop().await;
                return Err(BridgeError::Io {
                    action: "create bridge state directory",
                    path: state_dir,
                    source,
                });
            }
            let ctx = BridgeContext {
                broker: broker.clone(),
                state_dir,
                shutdown: bridges.shutdown.child_token(),
                metrics: metrics.clone(),
                auth: auth.clone(),
            };
            match config.start(ctx) {
                Ok(running) => {
                    states.push(running.state);
                    bridges.tasks.push(running.task);
                }
                Err(e) => {
                    bridges.stop().await;
                    return Err(e);
                }
            }
        }
        bridges.states = Arc::from(states);
        Ok(bridges)
    }

    /// Every bridge's status, in config order.
    pub fn statuses(&self) -> Vec<BridgeStatus> {
        self.states.iter().map(|s| s.snapshot()).collect()
    }

    /// The status boards, for the API.
    pub fn states(&self) -> Arc<[Arc<BridgeState>]> {
        Arc::clone(&self.states)
    }

    /// Stops every bridge and waits for their tasks. Outbound links commit
    /// what the peer acknowledged; the rest is sent again after restart.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "bridge task panicked");
            }
        }
        for state in self.states.iter() {
            state.set_health(Health::Stopped, None);
        }
    }
}
