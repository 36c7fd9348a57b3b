//! Batches to a Parquet file in memory: zstd, row groups of the export's
//! `row_group_rows`, and page statistics, so DataFusion prunes row groups
//! by `ts` and `offset` when it reads them back.

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::Result;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};

/// The zstd level: fast to write, about as small as level 3 on telemetry.
const ZSTD_LEVEL: i32 = 1;

/// `batches` (of `schema`) as one Parquet file.
pub fn parquet(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<Bytes> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by("tidewire".to_owned())
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(Bytes::from(writer.into_inner()?))
}
