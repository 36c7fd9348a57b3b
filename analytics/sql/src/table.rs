//! [`StreamTable`]: a stream as a DataFusion table. It reads the stream's
//! segments directly (sealed ones and the live tail), decodes only the
//! projected columns, prunes segments by `ts` and `offset` filters, stops
//! at a pushed-down `LIMIT`, and declares that rows come in `offset` and
//! `ts` order.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int8Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use tidewire_core::{FieldType, Record, SchemaField};
use tidewire_storage::StreamLog;
use tokio::sync::mpsc;

use crate::error::StorageFailure;
use crate::json_fields::{self, FieldPicker};
use crate::metrics::SqlMetrics;

/// Rows per record batch.
const BATCH_ROWS: usize = 8192;
/// Index of the `offset` column.
const OFFSET: usize = 0;
/// Index of the `ts` column.
const TS: usize = 1;
/// Index of the `payload_bytes` column; schema columns follow it.
const PAYLOAD_BYTES: usize = 7;

/// A fixed restriction of a stream, used by continuous queries to show
/// one window's records as the whole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Offsets to read.
    pub offsets: (u64, u64),
    /// Broker timestamps to keep, ms, half-open; `None` keeps all.
    pub ts: Option<(i64, i64)>,
}

/// One stream as a table.
#[derive(Debug, Clone)]
pub struct StreamTable {
    log: StreamLog,
    fields: Arc<[SchemaField]>,
    schema: SchemaRef,
    window: Option<Window>,
    metrics: SqlMetrics,
}

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

impl StreamTable {
    /// The whole stream as a table.
    pub fn new(log: StreamLog, fields: &[SchemaField], metrics: SqlMetrics) -> StreamTable {
        StreamTable {
            log,
            fields: fields.into(),
            schema: stream_schema(fields),
            window: None,
            metrics,
        }
    }

    /// The same stream narrowed to `window`.
    pub fn windowed(&self, window: Window) -> StreamTable {
        StreamTable {
            window: Some(window),
            ..self.clone()
        }
    }

    /// The offset the next record appended to the stream will get.
    pub(crate) fn next_offset(&self) -> u64 {
        self.log.next_offset()
    }

    /// The offsets a scan must read to see every row matching `filters`,
    /// and how many segments that touches.
    fn plan_range(&self, filters: &[Expr]) -> Result<(Range<u64>, usize)> {
        let mut bounds = Bounds::default();
        for filter in filters {
            bounds.add(filter);
        }
        if let Some(window) = self.window {
            bounds.offset.narrow(
                Some(window.offsets.0 as i128),
                Some(window.offsets.1 as i128),
            );
            if let Some((from, until)) = window.ts {
                bounds.ts.narrow(Some(from as i128), Some(until as i128));
            }
        }
        let segments = self.log.segments();
        let mut start = bounds.offset.lo.map_or(0, clamp_offset);
        let mut end = bounds.offset.hi.map_or(u64::MAX, clamp_offset);
        if let Some(lo) = bounds.ts.lo {
            let lo = clamp_ms(lo);
            let first = segments
                .iter()
                .find(|s| s.max_timestamp_ms.is_some_and(|max| max >= lo));
            start = match first {
                Some(_) => start.max(self.log.offset_at_time(lo).map_err(|e| {
                    DataFusionError::External(Box::new(StorageFailure(e.to_string())))
                })?),
                None => u64::MAX,
            };
        }
        if let Some(hi) = bounds.ts.hi {
            let hi = clamp_ms(hi);
            let last = segments
                .iter()
                .rev()
                .find(|s| s.min_timestamp_ms.is_some_and(|min| min < hi));
            end = end.min(last.map_or(0, |s| s.end_offset));
        }
        let end = end.min(self.log.next_offset());
        let touched = segments
            .iter()
            .filter(|s| s.end_offset > start && s.base_offset < end)
            .count();
        Ok((start..end.max(start), touched))
    }
}

fn clamp_offset(v: i128) -> u64 {
    v.clamp(0, u64::MAX as i128) as u64
}

fn clamp_ms(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A half-open interval `[lo, hi)` learned from filters.
#[derive(Debug, Default, Clone, Copy)]
struct Interval {
    lo: Option<i128>,
    hi: Option<i128>,
}

impl Interval {
    fn narrow(&mut self, lo: Option<i128>, hi: Option<i128>) {
        if let Some(lo) = lo {
            self.lo = Some(self.lo.map_or(lo, |old| old.max(lo)));
        }
        if let Some(hi) = hi {
            self.hi = Some(self.hi.map_or(hi, |old| old.min(hi)));
        }
    }
}

/// Bounds on `offset` and `ts` (in ms) implied by pushed-down filters.
#[derive(Debug, Default)]
struct Bounds {
    offset: Interval,
    ts: Interval,
}

impl Bounds {
    fn add(&mut self, filter: &Expr) {
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.add(left);
                self.add(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, *op, literal(right)),
                    (None, Some(c)) => match op.swap() {
                        Some(op) => (c, op, literal(left)),
                        None => return,
                    },
                    _ => return,
                };
                let Some(v) = value else { return };
                let (lo, hi) = match op {
                    Operator::Eq => (Some(v), Some(v + 1)),
                    Operator::Gt => (Some(v + 1), None),
                    Operator::GtEq => (Some(v), None),
                    Operator::Lt => (None, Some(v)),
                    Operator::LtEq => (None, Some(v + 1)),
                    _ => return,
                };
                if let Some(interval) = self.interval(column) {
                    interval.narrow(lo, hi);
                }
            }
            Expr::Between(between) if !between.negated => {
                if let (Some(column), Some(lo), Some(hi)) = (
                    column_name(&between.expr),
                    literal(&between.low),
                    literal(&between.high),
                ) && let Some(interval) = self.interval(column)
                {
                    interval.narrow(Some(lo), Some(hi + 1));
                }
            }
            _ => {}
        }
    }

    fn interval(&mut self, column: &str) -> Option<&mut Interval> {
        match column {
            "offset" => Some(&mut self.offset),
            "ts" => Some(&mut self.ts),
            _ => None,
        }
    }
}

/// True when a filter only constrains `offset` or `ts` against literals,
/// so [`Bounds`] can use it.
fn is_prunable(filter: &Expr) -> bool {
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => is_prunable(left) || is_prunable(right),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(
                op,
                Operator::Eq | Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq
            ) && ((column_name(left).is_some() && literal(right).is_some())
                || (column_name(right).is_some() && literal(left).is_some()))
        }
        Expr::Between(b) => {
            !b.negated
                && column_name(&b.expr).is_some()
                && literal(&b.low).is_some()
                && literal(&b.high).is_some()
        }
        _ => false,
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) if c.name == "offset" || c.name == "ts" => Some(&c.name),
        _ => None,
    }
}

/// An integer or timestamp literal, timestamps in ms (rounded so that
/// bounds only widen).
fn literal(expr: &Expr) -> Option<i128> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let v = match value {
        ScalarValue::Int8(Some(v)) => *v as i128,
        ScalarValue::Int16(Some(v)) => *v as i128,
        ScalarValue::Int32(Some(v)) => *v as i128,
        ScalarValue::Int64(Some(v)) => *v as i128,
        ScalarValue::UInt8(Some(v)) => *v as i128,
        ScalarValue::UInt16(Some(v)) => *v as i128,
        ScalarValue::UInt32(Some(v)) => *v as i128,
        ScalarValue::UInt64(Some(v)) => *v as i128,
        ScalarValue::TimestampSecond(Some(v), _) => *v as i128 * 1000,
        ScalarValue::TimestampMillisecond(Some(v), _) => *v as i128,
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v as i128).div_euclid(1000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v as i128).div_euclid(1_000_000),
        _ => return None,
    };
    Some(v)
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if is_prunable(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&columns)?);
        let (range, segments) = self.plan_range(filters)?;
        self.metrics.segments_scanned.inc_by(segments as u64);
        let mut orderings = Vec::new();
        for (name, index) in [("offset", OFFSET), ("ts", TS)] {
            if let Some(at) = columns.iter().position(|&c| c == index) {
                let sort = PhysicalSortExpr::new(
                    Arc::new(Column::new(name, at)),
                    SortOptions::new(false, false),
                );
                orderings.extend(LexOrdering::new([sort]));
            }
        }
        let partition = Arc::new(ScanPartition {
            reader: BatchReader {
                log: self.log.clone(),
                fields: Arc::clone(&self.fields),
                schema: Arc::clone(&schema),
                columns,
                range,
                ts: self.window.and_then(|w| w.ts),
                limit,
                metrics: self.metrics.clone(),
            },
        });
        let partitions: Vec<Arc<dyn PartitionStream>> = vec![partition];
        let exec = StreamingTableExec::try_new(schema, partitions, None, orderings, false, limit)?;
        Ok(Arc::new(exec))
    }
}

/// The one partition of a scan: reads `range` on a blocking thread.
#[derive(Debug)]
struct ScanPartition {
    reader: BatchReader,
}

impl PartitionStream for ScanPartition {
    fn schema(&self) -> &SchemaRef {
        &self.reader.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, mut rx) = mpsc::channel::<Result<RecordBatch>>(2);
        let reader = self.reader.clone();
        if !reader.range.is_empty() {
            tokio::task::spawn_blocking(move || reader.run(&tx));
        }
        let batches = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.reader.schema),
            batches,
        ))
    }
}

/// Reads records and sends them as batches until done, the limit, or the
/// receiver going away.
#[derive(Debug, Clone)]
struct BatchReader {
    log: StreamLog,
    fields: Arc<[SchemaField]>,
    schema: SchemaRef,
    columns: Vec<usize>,
    range: Range<u64>,
    ts: Option<(i64, i64)>,
    limit: Option<usize>,
    metrics: SqlMetrics,
}

impl BatchReader {
    fn run(self, tx: &mpsc::Sender<Result<RecordBatch>>) {
        let mut scan = self.log.scan(self.range.clone());
        let mut left = self.limit.unwrap_or(usize::MAX);
        let mut builder = Builder::new(&self.columns, &self.fields);
        let mut sent_any = false;
        let mut progress = Progress::default();
        while let Some(record) = scan.next() {
            progress.records += 1;
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    progress.report(&self.metrics, &scan);
                    let failure = StorageFailure(e.to_string());
                    let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(failure))));
                    return;
                }
            };
            if let Some((from, until)) = self.ts
                && (record.timestamp_ms < from || record.timestamp_ms >= until)
            {
                continue;
            }
            builder.push(&record);
            left -= 1;
            if builder.rows == BATCH_ROWS || left == 0 {
                let batch = builder.finish(&self.schema);
                builder = Builder::new(&self.columns, &self.fields);
                sent_any = true;
                // Counted before the batch is seen, so a finished query's
                // reads are all in the metrics.
                progress.report(&self.metrics, &scan);
                if tx.blocking_send(batch).is_err() || left == 0 {
                    return;
                }
            }
        }
        progress.report(&self.metrics, &scan);
        if builder.rows > 0 || !sent_any {
            let _ = tx.blocking_send(builder.finish(&self.schema));
        }
    }
}

/// What a scan has read and not yet added to the metrics.
#[derive(Default)]
struct Progress {
    records: u64,
    bytes_reported: u64,
}

impl Progress {
    fn report(&mut self, metrics: &SqlMetrics, scan: &tidewire_storage::RecordScan) {
        metrics
            .records_scanned
            .inc_by(std::mem::take(&mut self.records));
        let bytes = scan.bytes_opened();
        metrics.bytes_scanned.inc_by(bytes - self.bytes_reported);
        self.bytes_reported = bytes;
    }
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
struct Builder {
    columns: Vec<(usize, ColumnBuilder)>,
    /// Finds the selected schema columns' values, in column order; `None`
    /// when no schema column is selected.
    picker: Option<FieldPicker>,
    rows: usize,
}

impl Builder {
    fn new(columns: &[usize], fields: &[SchemaField]) -> Builder {
        let built = columns
            .iter()
            .map(|&c| {
                let b = match c {
                    0 => ColumnBuilder::Int64(Int64Builder::with_capacity(BATCH_ROWS)),
                    1 => ColumnBuilder::Timestamp(TimestampMillisecondBuilder::with_capacity(
                        BATCH_ROWS,
                    )),
                    2..=3 | 6 => ColumnBuilder::Utf8(StringBuilder::new()),
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
        Builder {
            columns: built,
            picker: (!schema_paths.is_empty()).then(|| FieldPicker::new(schema_paths)),
            rows: 0,
        }
    }

    fn push(&mut self, record: &Record) {
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
                (6, ColumnBuilder::Utf8(b)) => {
                    b.append_option(std::str::from_utf8(&m.payload).ok())
                }
                (PAYLOAD_BYTES, ColumnBuilder::Binary(b)) => b.append_value(&m.payload),
                (_, b) => append_json(b, schema_values.next().copied().flatten()),
            }
        }
        self.rows += 1;
    }

    fn finish(self, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.rows;
        let arrays: Vec<ArrayRef> = self.columns.into_iter().map(|(_, b)| b.finish()).collect();
        let options =
            datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
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
