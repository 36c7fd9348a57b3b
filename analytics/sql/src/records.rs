//! Outside SQL, a stream's records as Arrow: [`RecordBatches`] builds
//! batches of every column of a stream (its SQL columns, typed schema
//! columns included), and [`Transform`] runs a `SELECT`'s projection and
//! `WHERE` over them with the engine's functions, for exports.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use tidewire_core::{Record, SchemaField};

use crate::columns::{BatchBuilder, stream_schema};

/// The name the input goes by in a [`Transform`]'s query.
pub const INPUT_TABLE: &str = "input";

/// Builds batches of every column of a stream's records.
pub struct RecordBatches {
    schema: SchemaRef,
    fields: Vec<SchemaField>,
    columns: Vec<usize>,
    builder: BatchBuilder,
}

impl std::fmt::Debug for RecordBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatches")
            .field("rows", &self.builder.rows)
            .finish()
    }
}

impl RecordBatches {
    /// A builder for a stream with payload schema `fields`.
    pub fn new(fields: &[SchemaField]) -> RecordBatches {
        let schema = stream_schema(fields);
        let columns: Vec<usize> = (0..schema.fields().len()).collect();
        RecordBatches {
            builder: BatchBuilder::new(&columns, fields),
            schema,
            fields: fields.to_vec(),
            columns,
        }
    }

    /// The columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Adds a record.
    pub fn push(&mut self, record: &Record) {
        self.builder.push(record);
    }

    /// Records added since the last [`RecordBatches::finish`].
    pub fn rows(&self) -> usize {
        self.builder.rows
    }

    /// The records added so far as one batch; the builder starts afresh.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let builder = std::mem::replace(
            &mut self.builder,
            BatchBuilder::new(&self.columns, &self.fields),
        );
        builder.finish(&self.schema)
    }
}

/// A projection and filter over a stream's columns, written in SQL:
/// `SELECT <select> FROM input WHERE <where>`.
#[derive(Debug, Clone)]
pub struct Transform {
    sql: String,
    input: SchemaRef,
    output: SchemaRef,
}

impl Transform {
    /// Checks `select` (default `*`) and `filter` against a stream with
    /// payload schema `fields` by planning the query; the error is
    /// DataFusion's (a missing column, a bad expression).
    pub async fn new(
        select: Option<&str>,
        filter: Option<&str>,
        fields: &[SchemaField],
    ) -> Result<Transform> {
        let mut sql = format!("SELECT {} FROM {INPUT_TABLE}", select.unwrap_or("*"));
        if let Some(filter) = filter {
            sql.push_str(&format!(" WHERE {filter}"));
        }
        let input = stream_schema(fields);
        let ctx = context(MemTable::try_new(Arc::clone(&input), vec![vec![]])?)?;
        let frame = ctx.sql(&sql).await?;
        let output = Arc::new(frame.schema().as_arrow().clone());
        Ok(Transform { sql, input, output })
    }

    /// The columns it answers.
    pub fn schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Runs it over `batch` (of the stream's columns).
    pub async fn apply(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let ctx = context(MemTable::try_new(
            Arc::clone(&self.input),
            vec![vec![batch]],
        )?)?;
        ctx.sql(&self.sql).await?.collect().await
    }
}

/// A context with the engine's JSON functions and `table` as `input`.
fn context(table: MemTable) -> Result<SessionContext> {
    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    datafusion_functions_json::register_all(&mut ctx)?;
    ctx.register_table(INPUT_TABLE, Arc::new(table))?;
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use datafusion::arrow::array::{Array, Float64Array, Int64Array};
    use tidewire_core::{FieldType, Message};

    use super::*;

    fn record(offset: u64, payload: &str) -> Record {
        Record {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset as i64,
            message: Message {
                topic: format!("sensors/{offset}"),
                payload: Bytes::from(payload.to_owned()),
                ..Message::default()
            },
        }
    }

    #[tokio::test]
    async fn projects_and_filters_with_json_functions() {
        let fields = [SchemaField {
            name: "temp".into(),
            path: vec!["temp".into()],
            kind: FieldType::Double,
        }];
        let mut batches = RecordBatches::new(&fields);
        for (i, t) in [18.5, 31.0, 25.0].iter().enumerate() {
            batches.push(&record(i as u64, &format!("{{\"temp\": {t}}}")));
        }
        assert_eq!(batches.rows(), 3);
        let batch = batches.finish().expect("batch");
        assert_eq!(batches.rows(), 0);
        assert_eq!(batch.num_columns(), batches.schema().fields().len());
        let transform = Transform::new(
            Some("\"offset\", temp, json_get_float(payload, 'temp') AS again"),
            Some("temp > 20"),
            &fields,
        )
        .await
        .expect("valid");
        let out = transform.apply(batch).await.expect("runs");
        let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2);
        let offsets = out[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("offsets");
        assert_eq!(offsets.values(), &[1, 2]);
        let again = out[0]
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("floats");
        assert_eq!(again.value(0), 31.0);
        assert!(!again.is_null(1));
    }

    #[tokio::test]
    async fn a_missing_column_is_refused_when_planned() {
        let error = Transform::new(Some("nope"), None, &[])
            .await
            .expect_err("no column");
        assert!(error.to_string().contains("nope"), "{error}");
        let error = Transform::new(None, Some("temp >"), &[])
            .await
            .expect_err("bad SQL");
        assert!(!error.to_string().is_empty());
    }
}
