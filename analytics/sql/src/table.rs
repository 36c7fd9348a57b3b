//! [`StreamTable`]: a stream as a DataFusion table. It reads the stream's
//! segments directly (sealed ones and the live tail), decodes only the
//! projected columns, prunes segments by `ts` and `offset` filters, stops
//! at a pushed-down `LIMIT`, and declares that rows come in `offset` and
//! `ts` order.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
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
use tidewire_core::SchemaField;
use tidewire_storage::StreamLog;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::column_files::{self, ColumnFiles};
use crate::columns::{BATCH_ROWS, BatchBuilder, OFFSET, TS, stream_schema};
use crate::error::StorageFailure;
use crate::metrics::SqlMetrics;

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
    files: Arc<ColumnFiles>,
    schema: SchemaRef,
    window: Option<Window>,
    metrics: SqlMetrics,
}

impl StreamTable {
    /// The whole stream as a table.
    pub fn new(log: StreamLog, fields: &[SchemaField], metrics: SqlMetrics) -> StreamTable {
        let fields: Arc<[SchemaField]> = fields.into();
        StreamTable {
            files: Arc::new(ColumnFiles::new(&log, Arc::clone(&fields), metrics.clone())),
            schema: stream_schema(&fields),
            log,
            fields,
            window: None,
            metrics,
        }
    }

    /// True when this table reads `log` (and not an older log of the same
    /// name).
    pub(crate) fn reads(&self, log: &StreamLog) -> bool {
        self.log.same_log(log)
    }

    /// The same stream narrowed to `window`.
    pub fn windowed(&self, window: Window) -> StreamTable {
        StreamTable {
            window: Some(window),
            ..self.clone()
        }
    }

    /// Builds the column files of segments sealed since the last call and
    /// deletes those of deleted segments, until `stop`. Blocking file I/O.
    pub(crate) fn sync_column_files(&self, stop: &CancellationToken) {
        self.files.sync(&self.log, stop);
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
        let reader = BatchReader {
            log: self.log.clone(),
            files: Arc::clone(&self.files),
            fields: Arc::clone(&self.fields),
            schema: Arc::clone(&schema),
            columns,
            range: range.clone(),
            ts: self.window.and_then(|w| w.ts),
            limit,
            metrics: self.metrics.clone(),
        };
        let partitions: Vec<Arc<dyn PartitionStream>> = split(&range, limit)
            .map(|range| {
                Arc::new(ScanPartition {
                    reader: BatchReader {
                        range,
                        ..reader.clone()
                    },
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        let exec = StreamingTableExec::try_new(schema, partitions, None, orderings, false, limit)?;
        Ok(Arc::new(exec))
    }
}

/// Rows a scan partition should have at least (one batch): smaller scans
/// are not split, as a parallel plan costs more than it saves on them.
const MIN_PARTITION_ROWS: u64 = BATCH_ROWS as u64;

/// Splits a scan of `range` into contiguous offset ranges, one per core
/// for large scans and one for small ones or those with a limit. The
/// engine plans with one target partition, so these partitions are the
/// query's parallelism: each is decoded, filtered and partially
/// aggregated on its own.
fn split(range: &Range<u64>, limit: Option<usize>) -> impl Iterator<Item = Range<u64>> {
    static CORES: OnceLock<u64> = OnceLock::new();
    let cores =
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let len = range.end - range.start;
    let parts = match limit {
        Some(_) => 1,
        None => (len / MIN_PARTITION_ROWS).clamp(1, cores),
    };
    let start = range.start;
    (0..parts).map(move |i| start + len * i / parts..start + len * (i + 1) / parts)
}

/// One partition of a scan: reads its range on a blocking thread.
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

/// Reads the scan's rows, from column files where they hold every
/// projected column and from records elsewhere, and sends them as batches
/// until done, the limit, or the receiver going away.
#[derive(Debug, Clone)]
struct BatchReader {
    log: StreamLog,
    files: Arc<ColumnFiles>,
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
        let mut out = Output {
            tx,
            left: self.limit.unwrap_or(usize::MAX),
            sent_any: false,
        };
        let pieces = if self.ts.is_none() && column_files::hold(&self.columns) {
            self.files.covering(&self.log, &self.range)
        } else {
            Vec::new()
        };
        let mut cursor = self.range.start;
        for piece in pieces {
            let extent = piece.extent();
            if cursor < extent.base && !self.records(cursor..extent.base, &mut out) {
                return;
            }
            cursor = cursor.max(extent.base);
            let range = cursor..self.range.end.min(extent.end);
            let read = self.files.read(
                piece,
                range,
                &self.columns,
                &self.schema,
                &mut cursor,
                |batch| out.send(Ok(batch)),
            );
            match read {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    // Derived data: read the rest of the segment's records.
                    tracing::warn!(stream = self.log.name(), segment = extent.base, error = %e,
                        "column file unreadable; deleted, and the records are read instead");
                    self.files.discard(extent);
                }
            }
        }
        if cursor < self.range.end && !self.records(cursor..self.range.end, &mut out) {
            return;
        }
        if !out.sent_any {
            out.send(BatchBuilder::new(&self.columns, &self.fields).finish(&self.schema));
        }
    }

    /// Decodes the records in `range` into batches. Returns whether the
    /// scan goes on.
    fn records(&self, range: Range<u64>, out: &mut Output<'_>) -> bool {
        let mut scan = self.log.scan(range);
        let mut builder = BatchBuilder::new(&self.columns, &self.fields);
        let mut progress = Progress::default();
        while let Some(record) = scan.next() {
            progress.records += 1;
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    progress.report(&self.metrics, &scan);
                    let failure = StorageFailure(e.to_string());
                    out.send(Err(DataFusionError::External(Box::new(failure))));
                    return false;
                }
            };
            if let Some((from, until)) = self.ts
                && (record.timestamp_ms < from || record.timestamp_ms >= until)
            {
                continue;
            }
            builder.push(&record);
            if builder.rows == BATCH_ROWS || builder.rows >= out.left {
                let full =
                    std::mem::replace(&mut builder, BatchBuilder::new(&self.columns, &self.fields));
                // Counted before the batch is seen, so a finished query's
                // reads are all in the metrics.
                progress.report(&self.metrics, &scan);
                if !out.send(full.finish(&self.schema)) {
                    return false;
                }
            }
        }
        progress.report(&self.metrics, &scan);
        builder.rows == 0 || out.send(builder.finish(&self.schema))
    }
}

/// Where a scan's batches go, and how many more rows the limit allows.
struct Output<'a> {
    tx: &'a mpsc::Sender<Result<RecordBatch>>,
    left: usize,
    sent_any: bool,
}

impl Output<'_> {
    /// Sends `batch`, cut to the limit. Returns whether the scan goes on:
    /// not after an error, at the limit, or once the receiver has gone.
    fn send(&mut self, batch: Result<RecordBatch>) -> bool {
        let batch = batch.map(|b| {
            let rows = b.num_rows().min(self.left);
            self.left -= rows;
            b.slice(0, rows)
        });
        let more = batch.is_ok() && self.left > 0;
        self.sent_any = true;
        self.tx.blocking_send(batch).is_ok() && more
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
