//! The broker core: topics, the streams and the run-time catalog that
//! creates and deletes them, and the publish path
//! that every ingest (HTTP today; MQTT, WebSocket and NATS on top of it)
//! shares, and how payloads travel inside JSON.

pub mod catalog;
pub mod error;
pub mod metrics;
pub mod panics;
pub mod payload;
pub mod publish;
pub mod source;
pub mod stream_config;
pub mod streams;
pub mod topic;

pub use catalog::{Catalog, CatalogError, CatalogLimits, Origin};
pub use error::{ConfigError, PublishError, RejectReason};
pub use metrics::PublishMetrics;
pub use publish::{Broker, Enqueue, Fanout, Limits, PublishTicket, QueuedAppend, Stored};
pub use source::Source;
pub use stream_config::{FieldType, SchemaField, StreamConfig, StreamSpec};
pub use streams::{Stream, StreamHold, StreamSet, StreamUseError, Streams};
pub use tidewire_storage::{Message, Properties, Record, StorageError};
