//! One subscription at run time: its definition, whether it waits for
//! confirmation, its status board, and its pump: a task on the delivery
//! layer that reads the topic's log from the subscription's own durable
//! cursor (`DATA_DIR/topics/TOPIC/subscriptions/NAME.cursor`) through a
//! [`SubscriptionSink`]. A change of definition restarts the pump from
//! the same cursor.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tidewire_core::Origin;
use tidewire_delivery::{Cursor, Pump, PumpConfig, Start};
use tidewire_storage::StreamLog;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SubscriptionSpec;
use crate::metrics::SubscriptionStatus;
use crate::sink::{Shape, SubscriptionSink};

/// The first wait after a failed delivery without a delivery policy.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between failed deliveries without a delivery policy.
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
/// How long one attempt may take at most before the pump gives up on it
/// (targets time out well before: webhooks after 10 s by default).
const ATTEMPT_CEILING: Duration = Duration::from_secs(60);

/// A subscription of a topic.
#[derive(Debug)]
pub struct Subscription {
    topic: String,
    origin: Origin,
    spec: RwLock<Arc<SubscriptionSpec>>,
    /// The confirmation token while it waits for one (SNS HTTP
    /// subscriptions).
    pending: Mutex<Option<String>>,
    status: Arc<SubscriptionStatus>,
    cursor: PathBuf,
    running: tokio::sync::Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Subscription {
    pub(crate) fn new(
        topic: &str,
        origin: Origin,
        spec: SubscriptionSpec,
        pending: Option<String>,
        status: SubscriptionStatus,
        cursor: PathBuf,
    ) -> Subscription {
        Subscription {
            topic: topic.to_owned(),
            origin,
            spec: RwLock::new(Arc::new(spec)),
            pending: Mutex::new(pending),
            status: Arc::new(status),
            cursor,
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// Its name, unique within its topic.
    pub fn name(&self) -> String {
        self.spec().config.name.clone()
    }

    /// Its topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Where it was defined.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Its definition.
    pub fn spec(&self) -> Arc<SubscriptionSpec> {
        Arc::clone(&self.spec.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn set_spec(&self, spec: SubscriptionSpec) {
        *self.spec.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(spec);
    }

    /// The confirmation token, while it waits for one.
    pub fn pending_token(&self) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_confirmed(&self) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Its figures.
    pub fn status(&self) -> &Arc<SubscriptionStatus> {
        &self.status
    }

    /// The cursor file.
    pub(crate) fn cursor_path(&self) -> &PathBuf {
        &self.cursor
    }

    /// Starts (or restarts) its pump over `log` with `shape`; a new cursor
    /// starts at `start`.
    pub(crate) async fn start(&self, log: StreamLog, shape: Shape, start: Start) {
        let mut running = self.running.lock().await;
        if let Some(old) = running.take() {
            old.stop.cancel();
            let _ = old.task.await;
        }
        let spec = self.spec();
        let config = pump_config(&spec);
        let cursor = Cursor::new(
            self.cursor.clone(),
            [
                ("topic", self.topic.clone()),
                ("subscription", spec.config.name.clone()),
            ],
        );
        let status = Arc::clone(&self.status);
        let stop = CancellationToken::new();
        let ended = stop.clone();
        let task = tokio::spawn(async move {
            let report: Arc<dyn tidewire_delivery::Report> = status.clone();
            let (topic, name) = (shape.topic.clone(), shape.subscription.clone());
            let opened =
                tokio::task::spawn_blocking(move || Pump::open(log, cursor, start, config, report))
                    .await;
            let mut pump = match opened {
                Ok(Ok(pump)) => pump,
                Ok(Err(e)) => {
                    tracing::error!(%topic, subscription = %name, error = %e, "subscription cannot start");
                    status.failed(&e.to_string());
                    return;
                }
                Err(e) => {
                    status.failed(&format!("starting: {e}"));
                    return;
                }
            };
            let mut sink = SubscriptionSink {
                shape: Arc::new(shape),
                status,
            };
            pump.run_retrying(&mut sink, &ended).await;
        });
        *running = Some(Running { stop, task });
    }

    /// Stops its pump, keeping what it committed.
    pub(crate) async fn stop(&self) {
        if let Some(old) = self.running.lock().await.take() {
            old.stop.cancel();
            let _ = old.task.await;
        }
    }

    /// True while its pump runs.
    pub async fn is_running(&self) -> bool {
        self.running
            .lock()
            .await
            .as_ref()
            .is_some_and(|r| !r.task.is_finished())
    }
}

/// The pump's settings for a subscription: its in-flight limit, and an
/// acknowledgement timeout long enough for every attempt and wait of its
/// delivery policy.
fn pump_config(spec: &SubscriptionSpec) -> PumpConfig {
    let config = &spec.config;
    let per_attempt = config
        .options
        .timeout
        .unwrap_or(ATTEMPT_CEILING)
        .max(ATTEMPT_CEILING);
    let ack_timeout = match &config.delivery {
        None => per_attempt,
        Some(policy) => {
            per_attempt * (policy.retries + 1)
                + (1..=policy.retries)
                    .map(|n| policy.delay(n))
                    .sum::<Duration>()
        }
    };
    PumpConfig {
        max_in_flight: config.max_in_flight,
        ack_timeout,
        backoff_min: BACKOFF_MIN,
        backoff_max: BACKOFF_MAX,
        ..PumpConfig::default()
    }
}
