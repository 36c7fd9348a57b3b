//! Continuous queries: windowed aggregations on event time that keep
//! running. Each definition is a `SELECT` over one stream; when a window
//! closes (its end plus the allowed lateness has passed on the wall clock,
//! so windows close even when the stream is idle) the `SELECT` runs once
//! with that stream narrowed to the window: records already stored whose
//! event time falls in the window. Records that arrive after their window
//! closed are counted as late, never merged. Results go to subscribers (for
//! WebSocket watchers), and optionally to an MQTT topic through the
//! broker's publish path, so a stream keeping that topic makes them
//! queryable.
//!
//! Cost per window: with `ts` as event time the narrowed scan prunes to
//! the window's segments and offsets, so a window costs O(records in the
//! window), independent of how long the stream is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use serde::Serialize;
use serde_json::{Map, Value};
use tidewire_core::{Message, Properties, Source, StreamHold};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::{QueryConfig, QuerySpec};
use crate::engine::{QueryOutput, SqlEngine};
use crate::error::SqlError;
use crate::output;
use crate::sandbox;
use crate::table::{StreamTable, Window};

/// Results kept for a subscriber that falls behind; past this it sees
/// `RecvError::Lagged` with the number it missed.
pub const SUBSCRIBER_BUFFER: usize = 64;

/// One closed window's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowResult {
    /// The continuous query's id.
    pub query: String,
    /// Window start, ms since the Unix epoch (inclusive).
    pub window_start: i64,
    /// Window end, ms since the Unix epoch (exclusive).
    pub window_end: i64,
    /// Result rows as JSON objects.
    pub rows: Vec<Map<String, Value>>,
    /// Late records counted so far by this query.
    pub late_records: u64,
    /// Why this window has no rows, if computing it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A continuous query's definition and progress.
#[derive(Debug, Clone, Serialize)]
pub struct QueryInfo {
    /// The definition as given.
    pub definition: QueryConfig,
    /// The stream it reads.
    pub stream: String,
    /// Windows closed so far.
    pub windows_emitted: u64,
    /// Records that arrived after their window closed.
    pub late_records: u64,
    /// The latest window's result.
    pub last_result: Option<WindowResult>,
}

#[derive(Debug, Default)]
struct Progress {
    windows: AtomicU64,
    late: AtomicU64,
    last: Mutex<Option<WindowResult>>,
}

struct Running {
    config: QueryConfig,
    stream: String,
    results: broadcast::Sender<Arc<WindowResult>>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

/// The set of running continuous queries. Cheap to clone.
#[derive(Clone)]
pub struct ContinuousQueries {
    engine: SqlEngine,
    running: Arc<Mutex<BTreeMap<String, Running>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ContinuousQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuousQueries").finish_non_exhaustive()
    }
}

impl ContinuousQueries {
    /// No queries yet. Every query stops when `shutdown` is cancelled.
    pub fn new(engine: SqlEngine, shutdown: CancellationToken) -> ContinuousQueries {
        ContinuousQueries {
            engine,
            running: Arc::default(),
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates `config`, plans it once, and starts it. Must run inside a
    /// Tokio runtime.
    pub async fn start(&self, config: QueryConfig) -> Result<QueryInfo, SqlError> {
        let spec = config
            .validate("query")
            .map_err(|e| SqlError::Invalid(e.to_string()))?;
        if self.lock().contains_key(&spec.id) {
            return Err(SqlError::DuplicateQuery(spec.id));
        }
        let engine = self.engine.clone();
        let window = self
            .engine
            .execute(move || async move {
                let window = WindowRunner::new(engine, spec)?;
                // Plan once over nothing, so a bad query fails here, not later.
                window.run_here(0, 0, 0..0).await?;
                Ok(Arc::new(window))
            })
            .await?;
        let (results, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let progress = Arc::new(Progress::default());
        let cancel = self.shutdown.child_token();
        let mut running = self.lock();
        if running.contains_key(&window.spec.id) {
            return Err(SqlError::DuplicateQuery(window.spec.id.clone()));
        }
        let id = window.spec.id.clone();
        let entry = Running {
            config,
            stream: window.stream.clone(),
            results: results.clone(),
            progress: Arc::clone(&progress),
            cancel: cancel.clone(),
        };
        let info = entry.info();
        running.insert(id.clone(), entry);
        drop(running);
        // Records from here on are checked for lateness, including those
        // that arrive before the task first runs.
        let checked = window.next_offset();
        tokio::spawn(drive(window, results, progress, checked, cancel));
        tracing::info!(query = %id, "continuous query started");
        Ok(info)
    }

    /// Every query, by id.
    pub fn list(&self) -> Vec<QueryInfo> {
        self.lock().values().map(Running::info).collect()
    }

    /// The query `id`.
    pub fn get(&self, id: &str) -> Result<QueryInfo, SqlError> {
        self.lock()
            .get(id)
            .map(Running::info)
            .ok_or_else(|| SqlError::UnknownQuery(id.to_owned()))
    }

    /// Stops and forgets the query `id`; its subscribers' receivers end.
    pub fn stop(&self, id: &str) -> Result<(), SqlError> {
        let running = self
            .lock()
            .remove(id)
            .ok_or_else(|| SqlError::UnknownQuery(id.to_owned()))?;
        running.cancel.cancel();
        tracing::info!(query = %id, "continuous query stopped");
        Ok(())
    }

    /// Receives every window the query `id` closes from now on, until it
    /// stops.
    pub fn subscribe(&self, id: &str) -> Result<broadcast::Receiver<Arc<WindowResult>>, SqlError> {
        self.lock()
            .get(id)
            .map(|r| r.results.subscribe())
            .ok_or_else(|| SqlError::UnknownQuery(id.to_owned()))
    }
}

impl Running {
    fn info(&self) -> QueryInfo {
        QueryInfo {
            definition: self.config.clone(),
            stream: self.stream.clone(),
            windows_emitted: self.progress.windows.load(Ordering::Relaxed),
            late_records: self.progress.late.load(Ordering::Relaxed),
            last_result: self
                .progress
                .last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Runs a query's SQL over one window of its stream. Everything that
/// parses or plans runs on the SQL executor.
struct WindowRunner {
    engine: SqlEngine,
    spec: QuerySpec,
    stream: String,
    table: StreamTable,
    /// Keeps the stream from being deleted while the query runs.
    _hold: StreamHold,
}

impl WindowRunner {
    fn new(engine: SqlEngine, mut spec: QuerySpec) -> Result<WindowRunner, SqlError> {
        let statement = sandbox::parse(&spec.sql)?;
        // The event time goes into SQL this runner writes: only as one
        // expression that passed the sandbox, in canonical form.
        spec.event_time = spec
            .event_time
            .as_deref()
            .map(sandbox::parse_expression)
            .transpose()?;
        let tables = engine
            .state()
            .resolve_table_references(&statement)
            .map_err(|e| SqlError::Invalid(e.strip_backtrace()))?;
        let mut names: Vec<String> = tables.iter().map(|t| t.table().to_owned()).collect();
        names.sort();
        names.dedup();
        let [stream] = names.as_slice() else {
            return Err(SqlError::Invalid(format!(
                "a continuous query reads exactly one stream; this one reads {names:?}"
            )));
        };
        let table = engine
            .table(stream)
            .ok_or_else(|| SqlError::Invalid(format!("no stream called {stream:?}")))?;
        let hold = engine
            .broker()
            .streams()
            .hold(stream, format!("continuous query {:?}", spec.id))
            .map_err(|e| SqlError::Invalid(e.to_string()))?;
        Ok(WindowRunner {
            stream: stream.clone(),
            engine,
            spec,
            table,
            _hold: hold,
        })
    }

    fn next_offset(&self) -> u64 {
        self.table.next_offset()
    }

    /// A session whose only table is the stream narrowed by `window` and,
    /// for a payload event time, by `event_filter` (an SQL condition).
    async fn session(
        &self,
        window: Window,
        event_filter: Option<String>,
    ) -> Result<SessionState, SqlError> {
        let schema = Arc::new(MemorySchemaProvider::new());
        let view: Arc<dyn TableProvider> = Arc::new(self.table.windowed(window));
        let invalid =
            |e: datafusion::error::DataFusionError| SqlError::Invalid(e.strip_backtrace());
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema("public", Arc::clone(&schema) as _)
            .map_err(invalid)?;
        catalogs.register_catalog("datafusion".to_owned(), catalog);
        let state = SessionStateBuilder::new_from_existing(self.engine.state())
            .with_catalog_list(catalogs)
            .build();
        match event_filter {
            None => {
                schema
                    .register_table(self.stream.clone(), view)
                    .map_err(invalid)?;
            }
            Some(condition) => {
                schema
                    .register_table(RAW_TABLE.to_owned(), view)
                    .map_err(invalid)?;
                let plan = state
                    .create_logical_plan(&format!("SELECT * FROM {RAW_TABLE} WHERE {condition}"))
                    .await
                    .map_err(invalid)?;
                schema
                    .register_table(self.stream.clone(), Arc::new(ViewTable::new(plan, None)))
                    .map_err(invalid)?;
            }
        }
        Ok(state)
    }

    fn event_time(&self) -> &str {
        self.spec.event_time.as_deref().unwrap_or("ts")
    }

    /// The query over window `[start, end)` with the records in `offsets`,
    /// on the executor.
    async fn run(
        self: &Arc<Self>,
        start: i64,
        end: i64,
        offsets: std::ops::Range<u64>,
    ) -> Result<QueryOutput, SqlError> {
        let runner = Arc::clone(self);
        self.engine
            .execute_waiting(move || async move { runner.run_here(start, end, offsets).await })
            .await
    }

    /// [`WindowRunner::run`], on the executor thread it is called from.
    async fn run_here(
        &self,
        start: i64,
        end: i64,
        offsets: std::ops::Range<u64>,
    ) -> Result<QueryOutput, SqlError> {
        let (ts, filter) = match &self.spec.event_time {
            None => (Some((start, end)), None),
            // Records may carry event times up to a window ahead of the
            // broker clock.
            Some(_) => (
                Some((start.saturating_sub(self.spec.window_ms), i64::MAX)),
                Some(format!(
                    "({et}) >= to_timestamp_millis({start}) AND ({et}) < to_timestamp_millis({end})",
                    et = self.event_time()
                )),
            ),
        };
        let window = Window {
            offsets: (offsets.start, offsets.end),
            ts,
        };
        let state = self.session(window, filter).await?;
        self.engine.collect(state, &self.spec.sql).await
    }

    /// Records in `offsets` whose event time is before `closed_until`,
    /// counted on the executor.
    async fn count_late(
        self: &Arc<Self>,
        offsets: std::ops::Range<u64>,
        closed_until: i64,
    ) -> Result<u64, SqlError> {
        if offsets.is_empty() {
            return Ok(0);
        }
        let runner = Arc::clone(self);
        self.engine
            .execute_waiting(
                move || async move { runner.count_late_here(offsets, closed_until).await },
            )
            .await
    }

    async fn count_late_here(
        &self,
        offsets: std::ops::Range<u64>,
        closed_until: i64,
    ) -> Result<u64, SqlError> {
        let window = Window {
            offsets: (offsets.start, offsets.end),
            ts: None,
        };
        let state = self.session(window, None).await?;
        let sql = format!(
            "SELECT count(*) AS n FROM \"{}\" WHERE ({}) < to_timestamp_millis({closed_until})",
            self.stream,
            self.event_time()
        );
        let out = self.engine.collect(state, &sql).await?;
        let rows = output::to_objects(&out).map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok(rows
            .first()
            .and_then(|r| r.get("n"))
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }
}

/// The name the unfiltered stream has inside a payload-event-time window.
const RAW_TABLE: &str = "__tidewire_raw";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The query's task: closes windows on the wall clock until cancelled.
async fn drive(
    runner: Arc<WindowRunner>,
    results: broadcast::Sender<Arc<WindowResult>>,
    progress: Arc<Progress>,
    mut checked: u64,
    cancel: CancellationToken,
) {
    let spec = &runner.spec;
    let metrics = runner.engine.metrics().clone();
    let now = now_ms();
    // The first window still open: the first end with end + lateness > now.
    let k = (now - spec.lateness_ms - spec.window_ms).div_euclid(spec.hop_ms) + 1;
    let mut next_end = k * spec.hop_ms + spec.window_ms;
    let mut closed_until = next_end - spec.hop_ms;
    loop {
        let wait = (next_end + spec.lateness_ms - now_ms()).max(0) as u64;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        let snapshot = runner.next_offset();
        match runner.count_late(checked..snapshot, closed_until).await {
            Ok(late) => {
                progress.late.fetch_add(late, Ordering::Relaxed);
                metrics.late_records.inc_by(late);
            }
            Err(e) => tracing::warn!(query = %spec.id, error = %e, "counting late records failed"),
        }
        checked = snapshot;
        while next_end + spec.lateness_ms <= now_ms() {
            let start = next_end - spec.window_ms;
            let started = Instant::now();
            let outcome = runner.run(start, next_end, 0..snapshot).await;
            metrics
                .window_seconds
                .observe(started.elapsed().as_secs_f64());
            let (rows, error) = match outcome.and_then(|out| {
                output::to_objects(&out).map_err(|e| SqlError::Internal(e.to_string()))
            }) {
                Ok(rows) => (rows, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            let result = WindowResult {
                query: spec.id.clone(),
                window_start: start,
                window_end: next_end,
                rows,
                late_records: progress.late.load(Ordering::Relaxed),
                error,
            };
            if let Some(topic) = &spec.publish_topic {
                publish(&runner.engine, topic, &result).await;
            }
            closed_until = next_end;
            next_end += spec.hop_ms;
            progress.windows.fetch_add(1, Ordering::Relaxed);
            metrics.windows_emitted.inc();
            *progress.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
            // No subscriber is fine: results are also kept as `last_result`.
            let _ = results.send(Arc::new(result));
        }
    }
}

/// Publishes each row of `result`, with `window_start`/`window_end`, as a
/// JSON message to `topic`.
async fn publish(engine: &SqlEngine, topic: &str, result: &WindowResult) {
    for row in &result.rows {
        let mut object = row.clone();
        object.insert("window_start".into(), result.window_start.into());
        object.insert("window_end".into(), result.window_end.into());
        let message = Message {
            topic: topic.to_owned(),
            client_id: format!("query:{}", result.query),
            qos: 1,
            retain: false,
            payload: Bytes::from(Value::Object(object).to_string()),
            properties: Properties {
                content_type: Some("application/json".into()),
                payload_format_utf8: true,
                ..Properties::default()
            },
        };
        if let Err(e) = engine.broker().publish(Source::Query, message).await {
            tracing::warn!(query = %result.query, topic, error = %e, "publishing a window result failed");
        }
    }
}
