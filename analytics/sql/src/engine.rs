//! [`SqlEngine`]: runs ad-hoc read-only SQL over every stream, with one
//! reused `SessionContext` and cached plans. Each query is parsed, planned
//! and run on the SQL executor ([`crate::executor`]: its own threads, a
//! bounded number at once, a timeout that ends it) with a memory pool of
//! its own inside the shared SQL budget ([`crate::memory`]), and every
//! function bounded by the same limit ([`crate::bounded_functions`]), and
//! every plan guarded so it yields and its joins count what they hold
//! ([`crate::plan_guards`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::{SQLOptions, SessionContext, SessionState};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use futures_util::StreamExt;
use tidewire_core::Broker;
use tokio_util::sync::CancellationToken;

use crate::access::ReadAccess;
use crate::bounded_functions;
use crate::config::SqlLimits;
use crate::error::SqlError;
use crate::executor::SqlExecutor;
use crate::history::{Histories, LIST_TIMEOUT};
use crate::memory::SqlBudget;
use crate::metrics::{OutcomeLabel, SqlMetrics};
use crate::plan_cache::{CachedPlan, PlanCache};
use crate::plan_guards;
use crate::sandbox;
use crate::table::StreamTable;
use crate::tables::StreamTables;

/// How often the column files are checked against the sealed segments.
const COLUMN_FILE_CHECK: Duration = Duration::from_secs(1);

/// A query's result: its schema and batches.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

/// Runs SQL over the broker's streams. Cheap to clone.
#[derive(Clone)]
pub struct SqlEngine {
    ctx: Arc<SessionContext>,
    tables: Arc<StreamTables>,
    plans: Arc<PlanCache>,
    broker: Broker,
    limits: SqlLimits,
    metrics: SqlMetrics,
    executor: SqlExecutor,
    budget: SqlBudget,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("limits", &self.limits)
            .finish()
    }
}

impl SqlEngine {
    /// An engine over every stream of `broker`, each registered as a table
    /// of the same name. Starts the executor's threads; they stop with
    /// [`SqlEngine::shutdown`] or when the last clone is dropped.
    pub fn new(
        broker: Broker,
        limits: SqlLimits,
        metrics: SqlMetrics,
    ) -> Result<SqlEngine, SqlError> {
        let config = SessionConfig::new()
            .with_information_schema(false)
            // Scans split themselves by size (see `table`), so a small
            // dashboard query runs without repartitioning while a large
            // one still uses every core.
            .with_target_partitions(1)
            // One pass of the logical optimizer reaches the plans stream
            // queries need (constants folded, filters and limits pushed
            // into the scan; the pruning tests check it); the default
            // three passes cost a dashboard query about half a millisecond.
            .set_usize("datafusion.optimizer.max_passes", 1);
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        datafusion_functions_json::register_all(&mut ctx)
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        bounded_functions::bound_all(&ctx, limits.memory_limit);
        let tables = Arc::new(StreamTables::new(
            broker.clone(),
            metrics.clone(),
            LIST_TIMEOUT.min(limits.query_timeout / 2),
        ));
        ctx.catalog("datafusion")
            .ok_or_else(|| SqlError::Internal("the default catalog is missing".into()))?
            .register_schema("public", Arc::clone(&tables) as _)
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok(SqlEngine {
            ctx: Arc::new(ctx),
            tables,
            plans: Arc::default(),
            broker,
            executor: SqlExecutor::new(&limits, metrics.clone())?,
            budget: SqlBudget::new(limits.total_memory_limit),
            limits,
            metrics,
        })
    }

    /// Ends every running and waiting query and refuses new ones; the
    /// executor's threads go once what they run reaches a yield point.
    pub fn shutdown(&self) {
        self.executor.shutdown();
    }

    /// Keeps every stream's column files in step with its sealed segments
    /// until `shutdown`: builds a file soon after a segment is sealed, and
    /// deletes it with its segment. Spawn it once per engine.
    pub async fn maintain_column_files(self, shutdown: CancellationToken) {
        loop {
            self.sync_column_files(&shutdown).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(COLUMN_FILE_CHECK) => {}
            }
        }
    }

    /// One pass of [`SqlEngine::maintain_column_files`]: returns once every
    /// segment sealed now has its column file (or failed to get one), or
    /// `stop` is cancelled.
    pub async fn sync_column_files(&self, stop: &CancellationToken) {
        for table in self.tables.all() {
            let stop = stop.clone();
            let _ = tokio::task::spawn_blocking(move || table.sync_column_files(&stop)).await;
        }
    }

    /// Finds stream exports through `histories` from the next query on: a
    /// stream with a full export is also the table `<stream>_history`
    /// ([`crate::history`]).
    pub fn set_histories(&self, histories: Arc<dyn Histories>) {
        self.tables.set_histories(histories);
    }

    /// The broker whose streams this engine reads.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The limits queries run under.
    pub fn limits(&self) -> SqlLimits {
        self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &SqlMetrics {
        &self.metrics
    }

    /// The stream table called `name`.
    pub(crate) fn table(&self, name: &str) -> Option<StreamTable> {
        self.tables.get(name)
    }

    /// A snapshot of the session state, to plan a query against.
    pub(crate) fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Runs one read-only query on the executor, under the limits.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput, SqlError> {
        self.query_into(sql, ReadAccess::all(), Ok).await
    }

    /// [`SqlEngine::query`], with the result turned into what the caller
    /// sends (JSON, CSV, Arrow IPC) by `encode`, on the executor too and
    /// while the result still counts against the query's memory limit, so
    /// a large answer is neither encoded on the threads that serve MQTT and
    /// HTTP nor held outside the budget.
    pub async fn query_into<T, E>(
        &self,
        sql: &str,
        access: ReadAccess,
        encode: E,
    ) -> Result<T, SqlError>
    where
        T: Send + 'static,
        E: FnOnce(QueryOutput) -> Result<T, SqlError> + Send + 'static,
    {
        let started = Instant::now();
        let (engine, sql) = (self.clone(), sql.to_owned());
        let outcome = self
            .executor
            .run(move || async move {
                let state = engine.state();
                engine
                    .plan_and_collect(state, &sql, &access, Some(&engine.plans), encode)
                    .await
            })
            .await;
        let label = match &outcome {
            Ok(_) => {
                self.metrics
                    .query_seconds
                    .observe(started.elapsed().as_secs_f64());
                "ok"
            }
            Err(SqlError::Invalid(_) | SqlError::Evaluation(_)) => "invalid",
            Err(SqlError::Rejected(_)) => "rejected",
            Err(SqlError::Forbidden(_)) => "forbidden",
            Err(SqlError::MemoryLimit { .. }) => "memory",
            Err(SqlError::Timeout(_)) => "timeout",
            Err(SqlError::Busy { .. } | SqlError::BudgetExhausted(_) | SqlError::ShuttingDown) => {
                "busy"
            }
            Err(_) => "error",
        };
        self.metrics
            .queries
            .get_or_create(&OutcomeLabel { outcome: label })
            .inc();
        outcome
    }

    /// Runs the future `job` makes on the executor, under its timeout and
    /// concurrency limits. Whatever parses or plans SQL runs this way,
    /// never on the caller's runtime.
    pub(crate) async fn execute<T, F, Fut>(&self, job: F) -> Result<T, SqlError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, SqlError>> + Send + 'static,
        T: Send + 'static,
    {
        self.executor.run(job).await
    }

    /// [`SqlEngine::execute`] for a continuous query's window: it waits
    /// for a turn instead of being refused when the executor is busy.
    pub(crate) async fn execute_waiting<T, F, Fut>(&self, job: F) -> Result<T, SqlError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, SqlError>> + Send + 'static,
        T: Send + 'static,
    {
        self.executor.run_waiting(job).await
    }

    /// Plans and runs `sql` against `state` (whose tables may be windowed
    /// views) under the memory limit. Call it inside
    /// [`SqlEngine::execute`].
    pub(crate) async fn collect(
        &self,
        state: SessionState,
        sql: &str,
    ) -> Result<QueryOutput, SqlError> {
        self.plan_and_collect(state, sql, &ReadAccess::all(), None, Ok)
            .await
    }

    /// The physical plan of `sql`, from a cached logical plan when there is
    /// one.
    async fn plan(
        &self,
        state: &SessionState,
        sql: &str,
        access: &ReadAccess,
        plans: Option<&PlanCache>,
    ) -> Result<Arc<dyn ExecutionPlan>, SqlError> {
        let df_err = |e: DataFusionError| SqlError::from_datafusion(e, self.limits.memory_limit);
        let generation = self.broker.streams().generation();
        let optimized = match plans.and_then(|p| p.get(sql, generation)) {
            Some(CachedPlan::Optimized(plan)) => {
                self.metrics.plan_cache_hits.inc();
                plan
            }
            Some(CachedPlan::Unoptimized(plan)) => {
                self.metrics.plan_cache_hits.inc();
                let optimized = state.optimize(&plan).map_err(df_err)?;
                refuse_large_constants(&optimized, self.limits.memory_limit, state)?;
                optimized
            }
            None => {
                let statement = sandbox::parse(sql)?;
                let plan = state.statement_to_plan(statement).await.map_err(df_err)?;
                verify(&plan)?;
                let optimized = state.optimize(&plan).map_err(df_err)?;
                // Checked before it is cached: a cached optimized plan is
                // not walked again.
                refuse_large_constants(&optimized, self.limits.memory_limit, state)?;
                if let Some(plans) = plans {
                    plans.insert(sql, generation, CachedPlan::of(plan, &optimized));
                }
                optimized
            }
        };
        access.check(&optimized)?;
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, state)
            .await
            .map_err(df_err)?;
        plan_guards::guard(physical).map_err(df_err)
    }

    /// Plans and runs `sql`, then hands the result to `encode` while it
    /// still counts against the query's pool.
    async fn plan_and_collect<T>(
        &self,
        state: SessionState,
        sql: &str,
        access: &ReadAccess,
        plans: Option<&PlanCache>,
        encode: impl FnOnce(QueryOutput) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let limit = self.limits.memory_limit;
        let df_err = |e: DataFusionError| SqlError::from_datafusion(e, limit);
        let physical = self.plan(&state, sql, access, plans).await?;
        let pool = self.budget.query_pool(limit);
        // The session's object stores (exports' files) and caches (Parquet
        // footers), with a memory pool of the query's own.
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_pool(Arc::clone(&pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(df_err)?;
        let task = Arc::new(TaskContext::from(&state).with_runtime(runtime));
        let schema = physical.schema();
        let mut stream =
            datafusion::physical_plan::execute_stream(physical, task).map_err(df_err)?;
        // The result is held until sent, so it counts against the limit too.
        let held = MemoryConsumer::new("query result").register(&pool);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df_err)?;
            held.try_grow(batch.get_array_memory_size())
                .map_err(df_err)?;
            batches.push(batch);
        }
        let encoded = encode(QueryOutput { schema, batches });
        drop(held);
        encoded
    }
}

/// Refuses a plan holding a constant too large to copy into every row of
/// a batch within `limit`. Constant folding computes `range(1, 1000000)`
/// or `repeat('x', 1000000)` once, at plan time (where the function bounds
/// see one row), and a projection then copies the value into each row:
/// 300 records took 2.5 GB. The largest constant allowed is the limit
/// divided by the batch size (32 KiB with the defaults).
fn refuse_large_constants(
    plan: &LogicalPlan,
    limit: usize,
    state: &SessionState,
) -> Result<(), SqlError> {
    let batch_rows = state.config().batch_size().max(1);
    let most = limit / batch_rows;
    let mut largest = 0;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Literal(value, _) = e {
                    largest = largest.max(value.size());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    walked.map_err(|e| SqlError::from_datafusion(e, limit))?;
    if largest > most {
        return Err(SqlError::MemoryLimit {
            limit,
            detail: format!(
                "a constant of {largest} bytes (from a function such as repeat() or range() \
                 over constants) would be copied into each of up to {batch_rows} rows; \
                 constants may be at most {most} bytes"
            ),
        });
    }
    Ok(())
}

/// DataFusion's own read-only check, after [`sandbox::parse`].
fn verify(plan: &LogicalPlan) -> Result<(), SqlError> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| SqlError::Rejected(e.strip_backtrace()))
}
