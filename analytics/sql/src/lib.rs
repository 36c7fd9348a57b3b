//! SQL over live streams (Apache DataFusion): every stream is a table
//! ([`table`]) that reads sealed segments' column files where it can
//! ([`column_files`]), ad-hoc read-only queries run in a sandbox with
//! memory and time limits on an executor of their own ([`engine`],
//! [`sandbox`], [`executor`]), continuous windowed
//! queries keep running and feed subscribers and topics ([`continuous`]),
//! served over HTTP ([`http`]) and the `tidewire sql` CLI ([`cli`]);
//! [`records`] gives other crates (exports) a stream's records as Arrow,
//! and [`history`] makes a stream's exported Parquet files and its live
//! segments one table, `<stream>_history`.
//!
//! Wiring: build a [`SqlEngine`] from the broker, spawn
//! [`SqlEngine::maintain_column_files`], build a [`ContinuousQueries`]
//! from the engine and the shutdown token, start the `[[queries]]` from
//! config, and merge [`http::router`] into the server's router.

pub mod access;
mod bounded_functions;
pub mod cli;
mod column_files;
mod columns;
pub mod config;
pub mod continuous;
pub mod engine;
pub mod error;
pub mod executor;
pub mod history;
pub mod http;
mod json_fields;
mod memory;
pub mod metrics;
pub mod output;
mod plan_cache;
mod plan_guards;
pub mod records;
pub mod sandbox;
pub mod table;
mod tables;

pub use access::ReadAccess;
pub use config::{QueryConfig, QuerySpec, SqlConfig, SqlLimits};
pub use continuous::{ContinuousQueries, QueryInfo, WindowResult};
pub use engine::{QueryOutput, SqlEngine};
pub use error::SqlError;
pub use history::{Histories, HistorySource};
pub use metrics::SqlMetrics;
pub use records::{RecordBatches, Transform};
