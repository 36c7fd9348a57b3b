//! Batches to a Parquet file in memory: zstd, row groups of the export's
//! `row_group_rows`, and page statistics, so DataFusion prunes row groups
//! by `ts` and `offset` when it reads them back.
//!
//! The stream's own columns are set by what they hold: `offset` and `ts`
//! rise with every record and `payload`/`payload_bytes` are rarely
//! repeated, so a dictionary for them is built only to be given up; the
//! payload's minimum and maximum prune nothing, so they are not kept.
//! Other columns (a typed schema's, a projection's) keep the defaults:
//! dictionary and page statistics.

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::Result;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

/// The zstd level: fast to write, about as small as level 3 on telemetry.
const ZSTD_LEVEL: i32 = 1;

/// Columns whose values are (nearly) all different.
const UNIQUE: [&str; 4] = ["offset", "ts", "payload", "payload_bytes"];
/// Columns whose statistics prune nothing.
const UNPRUNED: [&str; 2] = ["payload", "payload_bytes"];

/// `batches` (of `schema`) as one Parquet file.
pub fn parquet(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<Bytes> {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by("tidewire".to_owned());
    for field in schema.fields() {
        let column = || ColumnPath::from(field.name().as_str());
        if UNIQUE.contains(&field.name().as_str()) {
            properties = properties.set_column_dictionary_enabled(column(), false);
        }
        if UNPRUNED.contains(&field.name().as_str()) {
            properties =
                properties.set_column_statistics_enabled(column(), EnabledStatistics::None);
        }
    }
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties.build()))?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(Bytes::from(writer.into_inner()?))
}
