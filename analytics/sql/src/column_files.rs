//! Column files: an Arrow IPC copy of each sealed segment's columns
//! except the payload (`offset`, `ts`, `topic`, `client_id`, `qos`,
//! `retain` and the stream's typed schema columns).
//!
//! The active segment's columns are kept in memory as [`Tail`] batches,
//! decoded in the background as records are committed. When the segment
//! is sealed, those batches are written to its file; a sealed segment
//! never changes, so the file is final. Segments sealed while the server
//! was down get their files at start-up, from their records. A scan that
//! needs no payload column reads the files and the tail instead of
//! decoding records and parsing JSON.
//!
//! The files are derived data: a missing one is built, one built for
//! another schema is rebuilt, and one that fails to read is deleted and
//! the scan reads the records instead. They live in
//! `<stream dir>/columns/` and go when their segment does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Int64Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use prometheus_client::metrics::counter::Counter;
use tidewire_core::SchemaField;
use tidewire_storage::{RecordScan, StreamLog};
use tokio_util::sync::CancellationToken;

use crate::columns::{BATCH_ROWS, BatchBuilder, OFFSET, PAYLOAD, PAYLOAD_BYTES, stream_schema};
use crate::metrics::SqlMetrics;

/// Schema metadata key: the offset after the segment's last record.
const END_OFFSET_KEY: &str = "tidewire.end_offset";
/// File name suffix of a finished column file.
const SUFFIX: &str = ".arrow";
/// Batches of [`BATCH_ROWS`] rows per block of a column file.
const FILE_BLOCK_BATCHES: usize = 8;
/// Suffix of a column file being written.
const TMP_SUFFIX: &str = ".arrow.tmp";

/// A segment's offsets, `base..end`, as covered by a column file or the
/// tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// Its segment's first offset; names the file.
    pub base: u64,
    /// The offset after the last row.
    pub end: u64,
}

/// Where a scan can read some rows' columns from.
#[derive(Debug)]
pub(crate) enum Piece {
    /// A sealed segment's column file.
    File(Extent),
    /// The tail's batches.
    Memory(Extent, Vec<RecordBatch>),
}

impl Piece {
    /// The offsets it holds.
    pub(crate) fn extent(&self) -> Extent {
        match self {
            Piece::File(extent) | Piece::Memory(extent, _) => *extent,
        }
    }
}

/// The column files of one stream, and its tail.
#[derive(Debug)]
pub(crate) struct ColumnFiles {
    dir: PathBuf,
    fields: Arc<[SchemaField]>,
    /// Table column index of each file column.
    table_columns: Vec<usize>,
    /// The files' columns (the files add the end-offset metadata).
    schema: SchemaRef,
    state: Mutex<State>,
    tail: Mutex<Option<Tail>>,
    metrics: SqlMetrics,
}

#[derive(Debug, Default)]
struct State {
    /// Readable files by base offset, with their end offsets.
    built: BTreeMap<u64, u64>,
    /// Segments whose file could not be built; not retried until restart.
    failed: BTreeSet<u64>,
}

/// One segment's columns in memory, decoded up to `end`.
#[derive(Debug)]
struct Tail {
    base: u64,
    /// Batches of [`BATCH_ROWS`] rows each, from `base` to `full_end`.
    full: Vec<RecordBatch>,
    full_end: u64,
    /// The rows from `full_end` to `end`; decoded again as they grow.
    partial: Option<RecordBatch>,
    end: u64,
}

impl Tail {
    fn new(base: u64) -> Tail {
        Tail {
            base,
            full: Vec::new(),
            full_end: base,
            partial: None,
            end: base,
        }
    }

    fn extent(&self) -> Extent {
        Extent {
            base: self.base,
            end: self.end,
        }
    }

    fn batches(&self) -> Vec<RecordBatch> {
        self.full.iter().chain(&self.partial).cloned().collect()
    }
}

/// True when every column in `columns` (table column indexes) is in the
/// column files: none is `payload` or `payload_bytes`.
pub(crate) fn hold(columns: &[usize]) -> bool {
    !columns.iter().any(|&c| c == PAYLOAD || c == PAYLOAD_BYTES)
}

impl ColumnFiles {
    /// The column files of `log`, whose typed schema columns are `fields`.
    pub(crate) fn new(log: &StreamLog, fields: Arc<[SchemaField]>, metrics: SqlMetrics) -> Self {
        let table = stream_schema(&fields);
        let table_columns: Vec<usize> = (0..table.fields().len()).filter(|&c| hold(&[c])).collect();
        let schema = Arc::new(
            table
                .project(&table_columns)
                .expect("file columns are table columns"),
        );
        ColumnFiles {
            dir: log.dir().join("columns"),
            fields,
            table_columns,
            schema,
            state: Mutex::new(State::default()),
            tail: Mutex::new(None),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tail(&self) -> MutexGuard<'_, Option<Tail>> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, base: u64, suffix: &str) -> PathBuf {
        self.dir.join(format!("{base:020}{suffix}"))
    }

    /// The pieces that hold offsets in `range`, in offset order: built
    /// files, then the tail brought up to date (when the background has
    /// started it). Rows in none of them must be read from records.
    /// Blocking file I/O.
    pub(crate) fn covering(&self, log: &StreamLog, range: &Range<u64>) -> Vec<Piece> {
        let overlaps = |e: &Extent| e.end > range.start && e.base < range.end;
        let mut pieces: Vec<Piece> = self
            .state()
            .built
            .range(..range.end)
            .map(|(&base, &end)| Extent { base, end })
            .filter(overlaps)
            .map(Piece::File)
            .collect();
        let mut tail = self.tail();
        if let Some(tail) = tail.as_mut()
            && self.extend(tail, log).is_ok()
            && overlaps(&tail.extent())
            && pieces.last().is_none_or(|p| p.extent().end <= tail.base)
        {
            pieces.push(Piece::Memory(tail.extent(), tail.batches()));
        }
        pieces
    }

    /// Decodes the records committed to the tail's segment since the last
    /// call.
    fn extend(&self, tail: &mut Tail, log: &StreamLog) -> Result<(), String> {
        let segments = log.segments();
        let end = segments
            .iter()
            .find(|s| s.base_offset == tail.base)
            .map_or(tail.end, |s| s.end_offset)
            .min(log.next_offset());
        if end <= tail.end {
            return Ok(());
        }
        tail.partial = None;
        for batch in self.decode(log.scan(tail.full_end..end)) {
            let batch = batch?;
            if batch.num_rows() == BATCH_ROWS {
                tail.full_end = last_offset(&batch) + 1;
                tail.full.push(batch);
            } else {
                tail.partial = Some(batch);
            }
        }
        tail.end = end;
        Ok(())
    }

    /// Batches of the file columns from `scan`'s records, [`BATCH_ROWS`]
    /// rows each but the last.
    fn decode(&self, mut scan: RecordScan) -> impl Iterator<Item = Result<RecordBatch, String>> {
        std::iter::from_fn(move || {
            let mut builder = BatchBuilder::new(&self.table_columns, &self.fields);
            while builder.rows < BATCH_ROWS {
                match scan.next() {
                    Some(Ok(record)) => builder.push(&record),
                    Some(Err(e)) => return Some(Err(e.to_string())),
                    None => break,
                }
            }
            (builder.rows > 0).then(|| builder.finish(&self.schema).map_err(|e| e.to_string()))
        })
    }

    /// Brings the files in line with `log`'s sealed segments: deletes
    /// files whose segment is gone (and unfinished ones), builds the
    /// missing ones, oldest first, until `stop`, then moves the tail to the
    /// active segment and decodes what was committed to it. Blocking file
    /// I/O.
    pub(crate) fn sync(&self, log: &StreamLog, stop: &CancellationToken) {
        let mut segments = log.segments();
        let Some(active) = segments.pop() else {
            return;
        };
        let sealed: HashSet<u64> = segments.iter().map(|s| s.base_offset).collect();
        self.remove_stale(&sealed);
        for segment in &segments {
            if stop.is_cancelled() {
                return;
            }
            let known = {
                let state = self.state();
                state.built.contains_key(&segment.base_offset)
                    || state.failed.contains(&segment.base_offset)
            };
            if known || segment.end_offset == segment.base_offset {
                continue;
            }
            let extent = Extent {
                base: segment.base_offset,
                end: segment.end_offset,
            };
            if self.is_current(extent) {
                self.state().built.insert(extent.base, extent.end);
                continue;
            }
            match self.build(log, extent, stop) {
                Ok(true) => {
                    self.metrics.column_files_built.inc();
                    self.state().built.insert(extent.base, extent.end);
                }
                Ok(false) => return,
                Err(e) => {
                    self.metrics.column_file_errors.inc();
                    tracing::warn!(
                        stream = log.name(),
                        segment = extent.base,
                        error = %e,
                        "could not build a column file; scans of this segment decode its records"
                    );
                    let _ = fs::remove_file(self.path(extent.base, TMP_SUFFIX));
                    self.state().failed.insert(extent.base);
                }
            }
        }
        let mut tail = self.tail();
        let tail = match tail.as_mut() {
            Some(t) if t.base == active.base_offset => t,
            _ => tail.insert(Tail::new(active.base_offset)),
        };
        if let Err(e) = self.extend(tail, log) {
            tracing::warn!(stream = log.name(), error = %e, "could not decode the tail's columns");
        }
    }

    /// Deletes unfinished files and those of segments no longer sealed in
    /// the log (retention deleted them).
    fn remove_stale(&self, sealed: &HashSet<u64>) {
        self.state().built.retain(|base, _| sealed.contains(base));
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let keep = name
                .strip_suffix(SUFFIX)
                .and_then(|base| base.parse::<u64>().ok())
                .is_some_and(|base| sealed.contains(&base));
            if !keep {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// True when the file for `extent` exists and was built for this
    /// schema and the whole segment.
    fn is_current(&self, extent: Extent) -> bool {
        let Ok(file) = File::open(self.path(extent.base, SUFFIX)) else {
            return false;
        };
        let Ok(reader) = FileReader::try_new(BufReader::new(file), None) else {
            return false;
        };
        let schema = reader.schema();
        schema.fields() == self.schema.fields()
            && schema.metadata().get(END_OFFSET_KEY) == Some(&extent.end.to_string())
    }

    /// Writes the file for the sealed segment `extent`: from the tail's
    /// batches when the tail holds that segment, else from its records.
    /// Returns false when `stop` interrupted it.
    fn build(
        &self,
        log: &StreamLog,
        extent: Extent,
        stop: &CancellationToken,
    ) -> Result<bool, String> {
        let from_tail = {
            let mut tail = self.tail();
            match tail.as_mut() {
                Some(t) if t.base == extent.base => {
                    self.extend(t, log)?;
                    (t.end == extent.end).then(|| t.batches())
                }
                _ => None,
            }
        };
        match from_tail {
            Some(batches) => self.write(extent, batches.into_iter().map(Ok), stop),
            None => self.write(extent, self.decode(log.scan(extent.base..extent.end)), stop),
        }
    }

    /// Writes `batches` as the file for `extent`: to a temporary file,
    /// synced, then renamed into place.
    fn write(
        &self,
        extent: Extent,
        batches: impl Iterator<Item = Result<RecordBatch, String>>,
        stop: &CancellationToken,
    ) -> Result<bool, String> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        let tmp = self.path(extent.base, TMP_SUFFIX);
        let metadata = HashMap::from([(END_OFFSET_KEY.to_owned(), extent.end.to_string())]);
        let schema = Arc::new(Schema::new_with_metadata(
            self.schema.fields().clone(),
            metadata,
        ));
        let file = File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
        let mut writer =
            FileWriter::try_new(BufWriter::new(file), &schema).map_err(|e| e.to_string())?;
        // Fewer, larger blocks read faster; scans cut them to size.
        let mut pending = Vec::new();
        let mut batches = batches.peekable();
        while let Some(batch) = batches.next() {
            if stop.is_cancelled() {
                drop(writer);
                let _ = fs::remove_file(&tmp);
                return Ok(false);
            }
            pending.push(batch?);
            if pending.len() == FILE_BLOCK_BATCHES || batches.peek().is_none() {
                let block = concat_batches(&schema, &std::mem::take(&mut pending))
                    .map_err(|e| e.to_string())?;
                writer.write(&block).map_err(|e| e.to_string())?;
            }
        }
        writer.finish().map_err(|e| e.to_string())?;
        let file = writer
            .into_inner()
            .map_err(|e| e.to_string())?
            .into_inner()
            .map_err(|e| e.to_string())?;
        file.sync_data()
            .map_err(|e| format!("fsync {}: {e}", tmp.display()))?;
        let path = self.path(extent.base, SUFFIX);
        fs::rename(&tmp, &path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
        Ok(true)
    }

    /// Reads offsets `range` of `piece` as batches of the table `columns`
    /// with `schema`, passing each to `emit` until it returns false.
    /// `cursor` follows the offset after the last row emitted, so after an
    /// error the caller can read the rest from the records. Returns whether
    /// `emit` wants more.
    pub(crate) fn read(
        &self,
        piece: Piece,
        range: Range<u64>,
        columns: &[usize],
        schema: &SchemaRef,
        cursor: &mut u64,
        mut emit: impl FnMut(RecordBatch) -> bool,
    ) -> Result<bool, ArrowError> {
        let extent = piece.extent();
        if columns.is_empty() && matches!(piece, Piece::File(_)) {
            // Only a row count: a sealed segment has one row per offset.
            let rows = range.end.min(extent.end) - range.start.max(extent.base);
            let options = RecordBatchOptions::new().with_row_count(Some(rows as usize));
            let batch =
                RecordBatch::try_new_with_options(Arc::clone(schema), Vec::new(), &options)?;
            self.metrics.column_rows_scanned.inc_by(rows);
            *cursor = range.end.min(extent.end);
            return Ok(emit(batch));
        }
        let mut slicer = Slicer {
            counter: &self.metrics.column_rows_scanned,
            base: extent.base,
            range: range.clone(),
            schema,
            cursor,
            emit: &mut emit,
            rows: 0,
        };
        // Batches, where their offset column is, and where each wanted
        // column is.
        let (batches, offsets, positions): (Box<dyn Iterator<Item = _>>, _, Vec<usize>) =
            match piece {
                Piece::Memory(_, batches) => (
                    Box::new(batches.into_iter().map(Ok)),
                    Some(OFFSET),
                    columns.iter().map(|&c| self.file_column(c)).collect(),
                ),
                Piece::File(_) => {
                    // A segment read whole needs no offsets: its rows are
                    // its offsets, in order. Otherwise read the offset
                    // column first, to slice by.
                    let whole = range.start <= extent.base && range.end >= extent.end;
                    let mut projection = if whole { Vec::new() } else { vec![OFFSET] };
                    let positions = columns
                        .iter()
                        .map(|&c| {
                            let in_file = self.file_column(c);
                            projection
                                .iter()
                                .position(|&p| p == in_file)
                                .unwrap_or_else(|| {
                                    projection.push(in_file);
                                    projection.len() - 1
                                })
                        })
                        .collect();
                    let file = File::open(self.path(extent.base, SUFFIX))?;
                    let reader = FileReader::try_new(BufReader::new(file), Some(projection))?;
                    (Box::new(reader), (!whole).then_some(0), positions)
                }
            };
        let mut more = true;
        for batch in batches {
            match slicer.next(&batch?, offsets, &positions)? {
                Some(true) => {}
                Some(false) => break,
                None => {
                    more = false;
                    break;
                }
            }
        }
        if more {
            *slicer.cursor = (*slicer.cursor).max(range.end.min(extent.end));
        }
        Ok(more)
    }

    /// Forgets and deletes the file for `extent` (it failed to read); the
    /// next sync rebuilds it.
    pub(crate) fn discard(&self, extent: Extent) {
        self.metrics.column_file_errors.inc();
        self.state().built.remove(&extent.base);
        let _ = fs::remove_file(self.path(extent.base, SUFFIX));
    }

    /// The file column holding table column `column`.
    fn file_column(&self, column: usize) -> usize {
        self.table_columns
            .iter()
            .position(|&c| c == column)
            .expect("only columns the files hold are read from them")
    }
}

/// Cuts batches of a piece to a scan's offset range and columns.
struct Slicer<'a, F> {
    /// Counts rows read, before each batch is seen, so a finished query's
    /// reads are all in the metrics.
    counter: &'a Counter,
    /// The piece's first offset.
    base: u64,
    range: Range<u64>,
    schema: &'a SchemaRef,
    cursor: &'a mut u64,
    emit: &'a mut F,
    /// Rows emitted so far.
    rows: u64,
}

impl<F: FnMut(RecordBatch) -> bool> Slicer<'_, F> {
    /// Emits the rows of `batch` in range, as the columns at `positions`.
    /// `offsets` is the position of its offset column, `None` when the
    /// whole piece is in range (so row `i` of the piece is offset
    /// `base + i`). Returns `Some(true)` to go on, `Some(false)` once past
    /// the range, and `None` when `emit` wants no more.
    fn next(
        &mut self,
        batch: &RecordBatch,
        offsets: Option<usize>,
        positions: &[usize],
    ) -> Result<Option<bool>, ArrowError> {
        let (lo, hi, last) = match offsets {
            Some(column) => {
                let offsets = batch.column(column).as_primitive::<Int64Type>().values();
                let lo = offsets.partition_point(|&o| (o as u64) < self.range.start);
                let hi = offsets.partition_point(|&o| (o as u64) < self.range.end);
                let last = hi.checked_sub(1).map_or(0, |i| offsets[i] as u64);
                (lo, hi, last)
            }
            None => {
                let rows = batch.num_rows();
                (
                    0,
                    rows,
                    (self.base + self.rows + rows as u64).saturating_sub(1),
                )
            }
        };
        if lo < hi {
            let rows = batch.slice(lo, hi - lo);
            let arrays: Vec<ArrayRef> = positions
                .iter()
                .map(|&p| Arc::clone(rows.column(p)))
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
            let out = RecordBatch::try_new_with_options(Arc::clone(self.schema), arrays, &options)?;
            self.rows += out.num_rows() as u64;
            self.counter.inc_by(out.num_rows() as u64);
            *self.cursor = last + 1;
            if !(self.emit)(out) {
                return Ok(None);
            }
        }
        Ok(Some(hi == batch.num_rows()))
    }
}

/// The offset of `batch`'s last row (batches of file columns).
fn last_offset(batch: &RecordBatch) -> u64 {
    let offsets = batch.column(OFFSET).as_primitive::<Int64Type>().values();
    offsets.last().map_or(0, |&o| o as u64)
}
