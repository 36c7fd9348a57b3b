//! The SQL executor: a Tokio runtime of its own, apart from the one that
//! serves MQTT, WebSocket and HTTP, so a CPU-bound query never holds up a
//! publish. Every query (ad hoc, and each window of a continuous query)
//! is parsed, planned and run here as one job:
//!
//! - at most `max_concurrent` jobs run at once and `max_queued` ad-hoc
//!   queries wait for a turn; one more is refused at once as busy.
//!   Continuous queries' windows always wait for their turn;
//! - the timeout (for an ad-hoc query, its wait included) ends the job:
//!   the task is aborted, and DataFusion's operators, which yield to Tokio
//!   between batches (see [`crate::plan_guards`]), stop at their next one;
//! - a caller that goes away (a client that disconnects) aborts its job;
//! - shutdown aborts every job and lets the threads go without waiting.
//!
//! The threads have large stacks, so planning an expression as deep as
//! [`crate::sandbox`] lets through never comes near their end.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SqlLimits;
use crate::error::SqlError;
use crate::metrics::SqlMetrics;

/// Stack of each executor thread. Only what a query touches is resident.
pub const THREAD_STACK_BYTES: usize = 64 << 20;

/// Runs SQL jobs on the executor's own threads. Cheap to clone.
#[derive(Clone)]
pub struct SqlExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
    /// Turns to run, `max_concurrent` in all.
    running: Arc<Semaphore>,
    max_concurrent: usize,
    /// Places in the executor (running plus waiting), `capacity` in all.
    admitted: Arc<Semaphore>,
    capacity: usize,
    timeout: Duration,
    stopped: CancellationToken,
    metrics: SqlMetrics,
}

impl std::fmt::Debug for SqlExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlExecutor")
            .field("running", &self.running())
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl SqlExecutor {
    /// Starts the executor's threads.
    pub fn new(limits: &SqlLimits, metrics: SqlMetrics) -> Result<SqlExecutor, SqlError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads)
            .max_blocking_threads(limits.threads.max(4) * 4)
            .thread_name("sql-executor")
            .thread_stack_size(THREAD_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| SqlError::Internal(format!("starting the SQL executor: {e}")))?;
        let handle = runtime.handle().clone();
        let capacity = limits.max_concurrent + limits.max_queued;
        Ok(SqlExecutor {
            inner: Arc::new(Inner {
                runtime: Mutex::new(Some(runtime)),
                handle,
                running: Arc::new(Semaphore::new(limits.max_concurrent)),
                max_concurrent: limits.max_concurrent,
                admitted: Arc::new(Semaphore::new(capacity)),
                capacity,
                timeout: limits.query_timeout,
                stopped: CancellationToken::new(),
                metrics,
            }),
        })
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.inner.max_concurrent - self.inner.running.available_permits()
    }

    /// Jobs waiting for a turn now.
    pub fn waiting(&self) -> usize {
        let admitted = self.inner.capacity - self.inner.admitted.available_permits();
        admitted.saturating_sub(self.running())
    }

    /// Runs the future `job` makes on the executor, waiting for a turn if
    /// there is a place in the queue (else [`SqlError::Busy`] at once),
    /// under the timeout, which counts the wait too. Dropping the returned
    /// future aborts the job. For ad-hoc queries.
    pub async fn run<T, F, Fut>(&self, job: F) -> Result<T, SqlError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SqlError>> + Send + 'static,
        T: Send + 'static,
    {
        if self.inner.stopped.is_cancelled() {
            return Err(SqlError::ShuttingDown);
        }
        let place = Arc::clone(&self.inner.admitted)
            .try_acquire_owned()
            .map_err(|_| SqlError::Busy {
                running: self.running(),
                waiting: self.waiting(),
            })?;
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, self.spawn(Some(place), job).wait()).await {
            Ok(result) => result,
            Err(_) => Err(SqlError::Timeout(timeout)),
        }
    }

    /// Runs the future `job` makes once a turn is free, however long that
    /// takes, under the timeout from then on. For continuous queries'
    /// windows, which must not be lost to ad-hoc load; each continuous
    /// query waits for one window at a time, so these waits are bounded
    /// by the number of continuous queries.
    pub async fn run_waiting<T, F, Fut>(&self, job: F) -> Result<T, SqlError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SqlError>> + Send + 'static,
        T: Send + 'static,
    {
        if self.inner.stopped.is_cancelled() {
            return Err(SqlError::ShuttingDown);
        }
        self.spawn(None, job).wait().await
    }

    /// Spawns `job` on the executor: it waits for a turn, then runs under
    /// the timeout, until shutdown.
    fn spawn<T, F, Fut>(&self, place: Option<OwnedSemaphorePermit>, job: F) -> AbortOnDrop<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SqlError>> + Send + 'static,
        T: Send + 'static,
    {
        let running = Arc::clone(&self.inner.running);
        let stopped = self.inner.stopped.clone();
        let metrics = self.inner.metrics.clone();
        let timeout = self.inner.timeout;
        AbortOnDrop(self.inner.handle.spawn(async move {
            let _place = place;
            let waiting = GaugeGuard::new(&metrics.waiting);
            let _turn = tokio::select! {
                turn = running.acquire_owned() => turn,
                () = stopped.cancelled() => return Err(SqlError::ShuttingDown),
            };
            drop(waiting);
            let _running = GaugeGuard::new(&metrics.running);
            tokio::select! {
                result = tokio::time::timeout(timeout, job()) => {
                    result.unwrap_or(Err(SqlError::Timeout(timeout)))
                }
                () = stopped.cancelled() => Err(SqlError::ShuttingDown),
            }
        }))
    }

    /// Refuses new jobs, aborts the running and waiting ones, and lets the
    /// threads go without waiting for them. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

impl Inner {
    fn stop(&self) {
        self.stopped.cancel();
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A spawned job that is aborted when its caller stops waiting for it.
struct AbortOnDrop<T>(JoinHandle<Result<T, SqlError>>);

impl<T> AbortOnDrop<T> {
    async fn wait(mut self) -> Result<T, SqlError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(SqlError::Internal(format!("the query panicked: {e}"))),
            Err(_) => Err(SqlError::ShuttingDown),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts one in a gauge while it lives.
struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a Gauge) -> GaugeGuard<'a> {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
