//! Logical plans of recent ad-hoc queries, by SQL text. Dashboards send
//! the same queries every few seconds, and for a small query parsing,
//! planning and optimizing take about as long as running it; a cached plan
//! skips all three.
//!
//! A plan stays valid while the set of streams does not change (the
//! streams' generation, which every cached plan is kept under: a stream
//! created, changed or deleted empties the cache), and a scan's offset
//! ranges are only worked out
//! later, in physical planning, from the stream as it is then. The one
//! thing the logical optimizer fixes in time is a stable function such as
//! `now()`, which it folds to the query's start: plans that call one are
//! kept unoptimized and optimized again on every run.

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

/// Plans kept; past this, an arbitrary one makes room.
const CAPACITY: usize = 256;
/// Longest SQL text cached (longer queries are unlikely to repeat).
const MAX_SQL_BYTES: usize = 16 * 1024;

/// A cached plan.
#[derive(Debug, Clone)]
pub(crate) enum CachedPlan {
    /// Optimized: ready for physical planning.
    Optimized(LogicalPlan),
    /// Calls a function that is not immutable: optimize on every run.
    Unoptimized(LogicalPlan),
}

impl CachedPlan {
    /// How to keep `plan` (as planned from SQL, not yet optimized), given
    /// its optimized form.
    pub(crate) fn of(plan: LogicalPlan, optimized: &LogicalPlan) -> CachedPlan {
        if calls_non_immutable_functions(&plan) {
            CachedPlan::Unoptimized(plan)
        } else {
            CachedPlan::Optimized(optimized.clone())
        }
    }
}

/// The cache. Shared by every clone of the engine.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    plans: Mutex<Plans>,
}

/// The plans made while the streams were at one generation.
#[derive(Debug, Default)]
struct Plans {
    generation: u64,
    by_sql: HashMap<String, CachedPlan>,
}

impl PlanCache {
    /// The plan cached for `sql`, if it was made at the streams'
    /// `generation`.
    pub(crate) fn get(&self, sql: &str, generation: u64) -> Option<CachedPlan> {
        let plans = self.lock();
        (plans.generation == generation)
            .then(|| plans.by_sql.get(sql).cloned())
            .flatten()
    }

    /// Caches `plan` for `sql`, planned at the streams' `generation` (read
    /// before planning began). Plans of older generations are dropped.
    pub(crate) fn insert(&self, sql: &str, generation: u64, plan: CachedPlan) {
        if sql.len() > MAX_SQL_BYTES {
            return;
        }
        let mut guard = self.lock();
        if generation < guard.generation {
            return;
        }
        if generation > guard.generation {
            *guard = Plans {
                generation,
                by_sql: HashMap::new(),
            };
        }
        let plans = &mut guard.by_sql;
        if plans.len() >= CAPACITY
            && !plans.contains_key(sql)
            && let Some(victim) = plans.keys().next().cloned()
        {
            plans.remove(&victim);
        }
        plans.insert(sql.to_owned(), plan);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plans> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// True when `plan` (subqueries included) calls a scalar function whose
/// result may differ between runs, such as `now()` or `random()`.
fn calls_non_immutable_functions(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}
