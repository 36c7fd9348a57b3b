//! Stream export (Firehose's job at the edge): each export copies a
//! stream's records into Parquet files, locally or on S3, partitioned by
//! time, each record in exactly one file also across crashes.
//!
//! Layout: [`config`] (`[[exports]]`: source, destination, buffering,
//! partitions, projection), [`partition`] (the `{ts:%Y-%m-%d}` templates),
//! [`destination`] (a directory or a bucket through `object_store`,
//! written whole or not at all), [`writer`] (batches to zstd Parquet),
//! [`manifest`] (planned flush ranges, so a crash replays into the same
//! files), `sink` (the export on the delivery layer's pump: buffer, flush,
//! commit only what is in completed files), [`Exports`] (start-up, the
//! catalog, deletion), [`status`] (figures and metrics), `sql` (the
//! exports as the SQL engine's histories: `<stream>_history`), [`error`].

pub mod config;
pub mod destination;
pub mod error;
pub mod manifest;
pub mod partition;
mod registry;
mod sink;
mod sql;
pub mod status;
pub mod writer;

pub use config::{ExportConfig, ExportSpec, Location, S3Config};
pub use error::ExportError;
pub use registry::{DEFAULT_MAX_EXPORTS, Export, Exports};
pub use status::{ExportMetrics, ExportStatus, StatusSnapshot};
