//! The broker core: topics, the configured streams, and the publish path
//! that every ingest (HTTP today; MQTT, WebSocket and NATS on top of it)
//! shares, and how payloads travel inside JSON.

pub mod error;
pub mod metrics;
pub mod payload;
pub mod publish;
pub mod source;
pub mod streams;
pub mod topic;

pub use error::{ConfigError, PublishError, RejectReason};
pub use metrics::PublishMetrics;
pub use publish::{Broker, Fanout, Limits, PublishTicket, Stored};
pub use source::Source;
pub use streams::{FieldType, SchemaField, Stream, StreamConfig, StreamSpec, Streams};
pub use tidewire_storage::{Message, Properties, Record, StorageError};
