//! The columns of a stream table ([`stream_schema`]) and [`BatchBuilder`],
//! which turns records into Arrow batches of any projection of them:
//! scans use it, and so do column files when they are built.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int8Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Result;
use tidewire_core::{FieldType, Record, SchemaField};

use crate::json_fields::{self, FieldPicker};

/// Rows per record batch.
pub(crate) const BATCH_ROWS: usize = 8192;
/// Index of the `offset` column.
pub(crate) const OFFSET: usize = 0;
/// Index of the `ts` column.
pub(crate) const TS: usize = 1;
/// Index of the `payload` column.
pub(crate) const PAYLOAD: usize = 6;
/// Index of the `payload_bytes` column; schema columns follow it.
pub(crate) const PAYLOAD_BYTES: usize = 7;

/// The columns of a stream with payload schema `fields`, in SPEC order.
pub fn stream_schema(fields: &[SchemaField]) -> SchemaRef {
    let utc = Some(Arc::from("UTC"));
    let mut columns = vec![
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
            false,
        ),
        Field::new("topic", DataType::Utf8, false),
        Field::new("client_id", DataType::Utf8, false),
        Field::new("qos", DataType::Int8, false),
        Field::new("retain", DataType::Boolean, false),
        Field::new("payload", DataType::Utf8, true),
        Field::new("payload_bytes", DataType::Binary, false),
    ];
    for field in fields {
        let data_type = match field.kind {
            FieldType::BigInt => DataType::Int64,
            FieldType::Double => DataType::Float64,
            FieldType::Varchar => DataType::Utf8,
            FieldType::Boolean => DataType::Boolean,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
        };
        columns.push(Field::new(&field.name, data_type, true));
    }
    Arc::new(Schema::new(columns))
}

/// One column being built.
enum ColumnBuilder {
    Int64(Int64Builder),
    Int8(Int8Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

impl ColumnBuilder {
    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Int64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int8(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// Builds one batch of the projected columns.
pub(crate) struct BatchBuilder {
    columns: Vec<(usize, ColumnBuilder)>,
    /// Finds the selected schema columns' values, in column order; `None`
    /// when no schema column is selected.
    picker: Option<FieldPicker>,
    pub(crate) rows: usize,
}

impl BatchBuilder {
    pub(crate) fn new(columns: &[usize], fields: &[SchemaField]) -> BatchBuilder {
        let built = columns
            .iter()
            .map(|&c| {
                let b = match c {
                    0 => ColumnBuilder::Int64(Int64Builder::with_capacity(BATCH_ROWS)),
                    1 => ColumnBuilder::Timestamp(TimestampMillisecondBuilder::with_capacity(
                        BATCH_ROWS,
                    )),
                    2..=3 | PAYLOAD => ColumnBuilder::Utf8(StringBuilder::new()),
                    4 => ColumnBuilder::Int8(Int8Builder::with_capacity(BATCH_ROWS)),
                    5 => ColumnBuilder::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
                    PAYLOAD_BYTES => ColumnBuilder::Binary(BinaryBuilder::new()),
                    _ => match fields[c - PAYLOAD_BYTES - 1].kind {
                        FieldType::BigInt => {
                            ColumnBuilder::Int64(Int64Builder::with_capacity(BATCH_ROWS))
                        }
                        FieldType::Double => {
                            ColumnBuilder::Float64(Float64Builder::with_capacity(BATCH_ROWS))
                        }
                        FieldType::Varchar => ColumnBuilder::Utf8(StringBuilder::new()),
                        FieldType::Boolean => {
                            ColumnBuilder::Bool(BooleanBuilder::with_capacity(BATCH_ROWS))
                        }
                        FieldType::Timestamp => ColumnBuilder::Timestamp(
                            TimestampMillisecondBuilder::with_capacity(BATCH_ROWS),
                        ),
                    },
                };
                (c, b)
            })
            .collect();
        let schema_paths: Vec<&[String]> = columns
            .iter()
            .filter(|&&c| c > PAYLOAD_BYTES)
            .map(|&c| fields[c - PAYLOAD_BYTES - 1].path.as_slice())
            .collect();
        BatchBuilder {
            columns: built,
            picker: (!schema_paths.is_empty()).then(|| FieldPicker::new(schema_paths)),
            rows: 0,
        }
    }

    pub(crate) fn push(&mut self, record: &Record) {
        let m = &record.message;
        let picked = self.picker.as_ref().map(|p| p.pick(&m.payload));
        let mut schema_values = picked.iter().flatten();
        for (c, b) in &mut self.columns {
            match (*c, b) {
                (0, ColumnBuilder::Int64(b)) => b.append_value(record.offset as i64),
                (1, ColumnBuilder::Timestamp(b)) => b.append_value(record.timestamp_ms),
                (2, ColumnBuilder::Utf8(b)) => b.append_value(&m.topic),
                (3, ColumnBuilder::Utf8(b)) => b.append_value(&m.client_id),
                (4, ColumnBuilder::Int8(b)) => b.append_value(m.qos as i8),
                (5, ColumnBuilder::Bool(b)) => b.append_value(m.retain),
                (PAYLOAD, ColumnBuilder::Utf8(b)) => {
                    b.append_option(std::str::from_utf8(&m.payload).ok())
                }
                (PAYLOAD_BYTES, ColumnBuilder::Binary(b)) => b.append_value(&m.payload),
                (_, b) => append_json(b, schema_values.next().copied().flatten()),
            }
        }
        self.rows += 1;
    }

    pub(crate) fn finish(self, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.rows;
        let arrays: Vec<ArrayRef> = self.columns.into_iter().map(|(_, b)| b.finish()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            arrays,
            &options,
        )?)
    }
}

/// Appends a JSON value to a typed schema column; a missing value or one
/// of the wrong type is NULL.
fn append_json(b: &mut ColumnBuilder, value: Option<json_fields::Raw<'_>>) {
    match b {
        ColumnBuilder::Int64(b) => b.append_option(value.and_then(json_fields::as_i64)),
        ColumnBuilder::Float64(b) => b.append_option(value.and_then(json_fields::as_f64)),
        ColumnBuilder::Bool(b) => b.append_option(value.and_then(json_fields::as_bool)),
        ColumnBuilder::Utf8(b) => b.append_option(value.and_then(json_fields::as_text)),
        ColumnBuilder::Timestamp(b) => {
            b.append_option(value.and_then(json_fields::as_timestamp_ms))
        }
        ColumnBuilder::Int8(b) => b.append_null(),
        ColumnBuilder::Binary(b) => b.append_null(),
    }
}
