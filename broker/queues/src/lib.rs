//! Queues: durable work queues with SQS's semantics (visibility timeouts,
//! receive counts, dead letters, redrive, FIFO groups and deduplication),
//! built on the storage engine. Each queue keeps its messages in a log of
//! their own, and its consumer state's journal in the same log ([`queue`]); the
//! registry ([`Queues`]) opens them, keeps their definitions in the
//! run-time catalog, and takes published messages into them by topic, so
//! MQTT, `/ws`, HTTP and NATS ingest all feed them. The front doors (SQS,
//! `/api/v1/queues`, `/ws`) call [`Queues`] and [`Queue`]; the two JSON
//! ones share their message shapes ([`json`]).

pub mod config;
mod dedup;
pub mod error;
mod journal;
pub mod json;
pub mod message;
pub mod metrics;
pub mod moves;
pub mod queue;
mod receipt;
mod registry;
mod state;
#[cfg(test)]
mod tests;

pub use config::{DeadLetterConfig, QueueConfig, QueueSpec};
pub use error::QueueError;
pub use message::{Attribute, Delivered, Outgoing, Sent};
pub use metrics::QueueMetrics;
pub use moves::{MoveStatus, MoveTask};
pub use queue::{Depth, MAX_RECEIVE, Queue};
pub use registry::{DEFAULT_MAX_QUEUES, Queues, ReceiveOptions};
