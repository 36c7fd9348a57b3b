//! tidewire's storage engine: durable, replayable streams.
//!
//! Each stream is a directory of append-only segment files
//! (`<base offset>.log`, see [`segment`]) holding CRC-framed records
//! ([`record`]), each sealed segment with a sparse offset/time index
//! ([`index`]). A [`StreamLog`] handle appends with group commit
//! ([`writer`]), reads by offset or time ([`reader`]), and is opened through
//! crash recovery ([`recovery`]).

pub mod config;
pub mod durable_file;
pub mod error;
pub mod index;
mod log;
pub mod metrics;
pub mod reader;
pub mod record;
mod recovery;
pub mod segment;
mod shared;
mod writer;

pub use config::{FsyncPolicy, LogConfig, Retention};
pub use error::{Result, StorageError};
pub use log::{AppendTicket, SegmentInfo, StreamLog, StreamStats};
pub use metrics::StorageMetrics;
pub use reader::RecordScan;
pub use record::{Message, Properties, Record};
pub use shared::{Appended, OnFatal};
