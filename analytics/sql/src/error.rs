//! Errors of the SQL engine, by who is at fault.

use std::time::Duration;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::memory::BudgetExhausted;

/// Why a query or a continuous query definition failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The SQL does not parse or plan, or names something that does not
    /// exist (user input).
    #[error("{0}")]
    Invalid(String),
    /// The SQL is valid but not allowed: only read-only queries run (user
    /// input).
    #[error("not allowed: {0}")]
    Rejected(String),
    /// The caller may not read a stream the query reads, or may not
    /// administer queries (user input: a permission is missing).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The query needed more memory than its limit, or than is left of
    /// what all queries together may use (user input: the query is too big
    /// for `sql.memory_limit` or `sql.total_memory_limit`).
    #[error("query exceeded its memory limit of {limit} bytes (sql.memory_limit): {detail}")]
    MemoryLimit { limit: usize, detail: String },
    /// The query ran longer than its limit (user input).
    #[error("query timed out after {0:?} (sql.query_timeout)")]
    Timeout(Duration),
    /// The query failed on its data or its arguments while it ran: a
    /// division by zero, a value that does not cast, an overflow, a bad
    /// function argument (user input).
    #[error("query failed: {0}")]
    Evaluation(String),
    /// As many queries as may run and wait already do (overload; try
    /// again).
    #[error(
        "too many queries: {running} running and {waiting} waiting \
         (sql.max_concurrent_queries, sql.max_queued_queries); try again later"
    )]
    Busy { running: usize, waiting: usize },
    /// Other queries hold the shared SQL memory budget (overload; try
    /// again).
    #[error("the SQL memory budget is in use by other queries; try again later: {0}")]
    BudgetExhausted(String),
    /// The server is shutting down (try again once it is back).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// No continuous query has this id (user input).
    #[error("no continuous query {0:?}")]
    UnknownQuery(String),
    /// A continuous query with this id already exists (user input).
    #[error("continuous query {0:?} already exists")]
    DuplicateQuery(String),
    /// Reading a stream failed (external: the disk).
    #[error("reading stream: {0}")]
    Storage(String),
    /// DataFusion failed in a way no input should cause, or a query
    /// panicked (internal: a bug here or in the engine).
    #[error("query failed inside the engine: {0}")]
    Internal(String),
}

impl SqlError {
    /// The result could not be turned into the format asked for (a column
    /// type JSON or CSV cannot carry, such as a union, or a value that does
    /// not convert): the user's to fix in the query.
    pub fn encoding(e: impl std::fmt::Display) -> SqlError {
        SqlError::Evaluation(format!(
            "the result cannot be encoded as asked ({e}); cast the column to a plain type, \
             e.g. json_get_str(...) for JSON values or CAST(... AS VARCHAR)"
        ))
    }

    /// Classifies a DataFusion error by its root cause. `memory_limit` is
    /// the per-query limit, named in the message.
    pub(crate) fn from_datafusion(e: DataFusionError, memory_limit: usize) -> SqlError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => SqlError::MemoryLimit {
                limit: memory_limit,
                detail: detail.clone(),
            },
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => SqlError::Invalid(e.strip_backtrace()),
            DataFusionError::External(inner) if inner.is::<StorageFailure>() => {
                SqlError::Storage(inner.to_string())
            }
            DataFusionError::External(inner) if inner.is::<BudgetExhausted>() => {
                SqlError::BudgetExhausted(inner.to_string())
            }
            DataFusionError::Execution(_) => SqlError::Evaluation(e.strip_backtrace()),
            DataFusionError::ArrowError(arrow, _) if caused_by_input(arrow) => {
                SqlError::Evaluation(e.strip_backtrace())
            }
            DataFusionError::Internal(_) if in_type_coercion(&e) => {
                SqlError::Invalid(e.strip_backtrace())
            }
            _ => SqlError::Internal(e.strip_backtrace()),
        }
    }
}

/// Whether `e` came out of the analyzer's type coercion, which checks the
/// query's types before anything runs. DataFusion reports some type
/// mismatches there as internal errors (`"offset" BETWEEN TRUE AND 1`:
/// "Failed to coerce types Int64 and Boolean"), but only the query causes
/// them.
fn in_type_coercion(e: &DataFusionError) -> bool {
    let mut current = e;
    while let DataFusionError::Context(rule, inner) = current {
        if rule == "type_coercion" {
            return true;
        }
        current = inner;
    }
    false
}

/// Whether an Arrow kernel failed on the values it was given, rather than
/// on a bug or the system.
fn caused_by_input(e: &ArrowError) -> bool {
    matches!(
        e,
        ArrowError::DivideByZero
            | ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ComputeError(_)
            | ArrowError::OffsetOverflowError(_)
            | ArrowError::DictionaryKeyOverflowError
            | ArrowError::RunEndIndexOverflowError
    )
}

/// A storage error carried through DataFusion's error type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StorageFailure(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_mismatches_datafusion_calls_internal_are_the_query_s_fault() {
        // What `SELECT "offset" FROM events WHERE "offset" BETWEEN TRUE
        // AND 'inf'` failed with: a 500 before, found by the fuzz suite.
        let mismatch = DataFusionError::Internal(
            "Failed to coerce types Int64 and Boolean in BETWEEN expression".into(),
        )
        .context("type_coercion");
        assert!(matches!(
            SqlError::from_datafusion(mismatch, 1),
            SqlError::Invalid(m) if m.contains("Failed to coerce types")
        ));
        // An internal error anywhere else is still the engine's.
        let elsewhere = DataFusionError::Internal("unexpected state".into()).context("optimizer");
        assert!(matches!(
            SqlError::from_datafusion(elsewhere, 1),
            SqlError::Internal(_)
        ));
    }
}
