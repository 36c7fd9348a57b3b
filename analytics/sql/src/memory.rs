//! Memory pools for queries: each query gets its own [`QueryPool`] with
//! the per-query limit (`sql.memory_limit`), and every query's pool draws
//! on one [`SqlBudget`] shared by all of them (`sql.total_memory_limit`),
//! so many queries at once cannot add up past the SQL budget either.

use std::fmt::{Display, Formatter};
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryLimit, MemoryPool, MemoryReservation,
};

/// What all queries together may hold. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlBudget {
    total: Arc<GreedyMemoryPool>,
    limit: usize,
}

impl SqlBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> SqlBudget {
        SqlBudget {
            total: Arc::new(GreedyMemoryPool::new(limit)),
            limit,
        }
    }

    /// Bytes every running query holds together.
    pub fn reserved(&self) -> usize {
        self.total.reserved()
    }

    /// A pool for one query of at most `limit` bytes, drawing on this
    /// budget.
    pub fn query_pool(&self, limit: usize) -> Arc<dyn MemoryPool> {
        Arc::new(QueryPool {
            query: GreedyMemoryPool::new(limit),
            budget: self.clone(),
        })
    }
}

/// The shared budget is held by other queries: the query may succeed once
/// they end (overload, not the query's fault).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BudgetExhausted(pub String);

/// One query's pool: its own limit, and the shared budget.
#[derive(Debug)]
struct QueryPool {
    query: GreedyMemoryPool,
    budget: SqlBudget,
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.query.grow(reservation, additional);
        self.budget.total.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.query.shrink(reservation, shrink);
        self.budget.total.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.query.try_grow(reservation, additional)?;
        if self.budget.total.try_grow(reservation, additional).is_err() {
            self.query.shrink(reservation, additional);
            return Err(DataFusionError::External(Box::new(BudgetExhausted(
                format!(
                    "{} needed {additional} more bytes, but all queries together hold {} of the \
                 {} bytes they may use (sql.total_memory_limit)",
                    reservation.consumer().name(),
                    self.budget.reserved(),
                    self.budget.limit
                ),
            ))));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.query.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.query.memory_limit()
    }
}

impl Display for QueryPool {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool ({}), within {}",
            self.query, self.budget.total
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn a_query_is_held_to_its_own_limit_and_to_the_shared_budget() {
        let budget = SqlBudget::new(1000);
        let (a, b) = (budget.query_pool(600), budget.query_pool(600));
        let in_a = MemoryConsumer::new("a").register(&a);
        let in_b = MemoryConsumer::new("b").register(&b);
        assert!(in_a.try_grow(601).is_err(), "over its own limit");
        in_a.try_grow(600).expect("within both");
        let refused = in_b.try_grow(500).expect_err("over the budget");
        assert!(refused.to_string().contains("sql.total_memory_limit"));
        assert!(matches!(
            crate::SqlError::from_datafusion(refused, 600),
            crate::SqlError::BudgetExhausted(_)
        ));
        assert_eq!((b.reserved(), budget.reserved()), (0, 600));
        in_b.try_grow(400).expect("what is left");
        drop(in_a);
        assert_eq!(budget.reserved(), 400);
        drop(in_b);
        assert_eq!(budget.reserved(), 0);
    }
}
