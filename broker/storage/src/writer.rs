//! The writer thread of one stream: group commit, segment rolling and
//! retention.
//!
//! Appends queue up on a channel while the previous batch is being written
//! and fdatasync'ed. The writer then takes everything queued (up to a bound),
//! encodes it into one buffer, writes it with one `pwrite`, syncs once, and
//! only then publishes the new committed offset and answers every appender.
//! So the cost of an fdatasync is shared by the whole batch. Appends that
//! wait only for their write ([`crate::StreamLog::enqueue_written`]) are
//! answered before it, and need none of their own: the next batch with a
//! durable append, or the next housekeeping pass, syncs them.
//!
//! The active segment's file runs ahead of its records: once they reach
//! its end it is extended by writing zeros (as much as the segment holds
//! already, between [`PREALLOCATE_MIN`] and [`PREALLOCATE_MAX`]), so the
//! fdatasync of a commit that lands inside that space has only data to
//! flush, not a new file size and new blocks (on ext4 that halves its
//! time and its CPU).
//! Sealing a segment, a clean stop and recovery after a crash cut the
//! zeros off again ([`crate::segment::Stop::Unwritten`]).
//!
//! An fdatasync error is fatal for the stream: the kernel may already have
//! dropped the dirty pages, so retrying could report success for data that
//! is gone. The stream then refuses all writes and reports to `on_fatal`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::config::FsyncPolicy;
use crate::error::{Result, StorageError};
use crate::index::{IndexEntry, SegmentSummary, SparseIndex};
use crate::metrics::StreamMetrics;
use crate::record::encode_frame;
use crate::segment::{create_segment, index_path, log_path, remove_if_exists, sync_dir};
use crate::shared::{AppendRequest, Appended, Command, OnFatal, SegmentState, Shared};

/// The most records one commit takes from the queue.
const MAX_BATCH_RECORDS: usize = 8192;
/// The most bytes one commit takes from the queue.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The least the active segment's file is extended ahead of its records.
const PREALLOCATE_MIN: u64 = 64 * 1024;
/// The most the active segment's file is extended ahead of its records.
const PREALLOCATE_MAX: u64 = 1024 * 1024;
/// How often an idle writer checks retention, segment age and interval syncs.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_millis(500);

/// Starts the writer thread for a recovered stream.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    active: File,
    commands: mpsc::Receiver<Command>,
    on_fatal: OnFatal,
) -> Result<()> {
    let (base, index, committed) = {
        let state = shared.read_state();
        let last = state
            .segments
            .back()
            .ok_or_else(|| StorageError::Internal("recovered stream has no segment".into()))?;
        (last.base, last.index.clone(), last.summary)
    };
    let name = format!("tw-log-{}", shared.name);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| StorageError::io("start writer for", &shared.dir, e))?;
    let writer = Writer {
        last_ts: committed.max_ts.unwrap_or(i64::MIN),
        active_path: log_path(&shared.dir, base),
        shared,
        active,
        base,
        committed_index_len: index.entries().len(),
        index,
        committed,
        staged: committed,
        allocated: committed.size,
        buf: Vec::with_capacity(1024 * 1024),
        unsynced: false,
        last_sync: Instant::now(),
        on_fatal,
    };
    writer.update_gauges();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || runtime.block_on(writer.run(commands)))
        .map_err(|e| StorageError::io("spawn writer thread", PathBuf::new(), e))?;
    Ok(())
}

struct Writer {
    shared: Arc<Shared>,
    active: File,
    active_path: PathBuf,
    base: u64,
    /// The active segment's index; entries past `committed_index_len` are
    /// not yet durable.
    index: SparseIndex,
    committed_index_len: usize,
    /// The active segment as readers see it.
    committed: SegmentSummary,
    /// The active segment including records encoded but not yet written.
    staged: SegmentSummary,
    /// The active segment file's length: its records, then zeros.
    allocated: u64,
    last_ts: i64,
    buf: Vec<u8>,
    /// Written data not yet fdatasync'ed.
    unsynced: bool,
    last_sync: Instant,
    on_fatal: OnFatal,
}

/// An append that has an offset but is not yet acknowledged.
struct Pending {
    reply: oneshot::Sender<Result<Appended>>,
    appended: Appended,
    enqueued: Instant,
    /// Answered after the fsync the policy asks for (else after the write).
    durable: bool,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut housekeeping = tokio::time::interval(self.housekeeping_period());
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let (close, every_handle_dropped) = match command {
                        Some(Command::Append(request)) => {
                            batch.push(request);
                            (take_queued(&mut commands, &mut batch), false)
                        }
                        Some(Command::AppendAll(requests)) => {
                            batch.extend(requests);
                            (take_queued(&mut commands, &mut batch), false)
                        }
                        Some(Command::Close(done)) => (Some(done), false),
                        None => (None, true),
                    };
                    let stop = close.is_some() || every_handle_dropped;
                    if !batch.is_empty() {
                        self.commit(std::mem::take(&mut batch));
                        self.sync_if_due();
                    }
                    if stop {
                        self.shutdown();
                        if let Some(done) = close {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
    }

    fn housekeeping_period(&self) -> Duration {
        match self.shared.config().fsync {
            FsyncPolicy::Interval(every) => every.min(HOUSEKEEPING_PERIOD),
            _ => HOUSEKEEPING_PERIOD,
        }
    }

    /// Writes, syncs (per policy) and acknowledges a batch, sealing the
    /// active segment whenever the next record would overflow it.
    fn commit(&mut self, batch: Vec<AppendRequest>) {
        let mut pending = Vec::with_capacity(batch.len());
        for request in batch {
            if let Some(reason) = self.failure() {
                let _ = request.reply.send(Err(self.failed_error(reason)));
                continue;
            }
            let limit = self.shared.config().segment_bytes;
            let non_empty = self.staged.end_offset > self.base;
            if non_empty && self.staged.size + request.frame_len as u64 > limit {
                self.flush(&mut pending);
                // A failed fsync fails the stream: no sealing, no more
                // records after it.
                if let Some(reason) = self.failure() {
                    let _ = request.reply.send(Err(self.failed_error(reason)));
                    continue;
                }
                if let Err(e) = self.roll() {
                    let _ = request.reply.send(Err(e));
                    continue;
                }
            }
            self.stage(request, &mut pending);
        }
        self.flush(&mut pending);
    }

    /// Encodes one record into the write buffer and gives it an offset.
    fn stage(&mut self, request: AppendRequest, pending: &mut Vec<Pending>) {
        let offset = self.staged.end_offset;
        let timestamp_ms = now_ms().max(self.last_ts);
        let position = self.staged.size;
        encode_frame(&mut self.buf, offset, timestamp_ms, &request.message);
        self.index.observe(
            IndexEntry {
                offset,
                position,
                timestamp_ms,
            },
            self.shared.config().index_interval_bytes,
        );
        self.last_ts = timestamp_ms;
        self.staged.end_offset = offset + 1;
        self.staged.size += request.frame_len as u64;
        self.staged.min_ts.get_or_insert(timestamp_ms);
        self.staged.max_ts = Some(timestamp_ms);
        pending.push(Pending {
            reply: request.reply,
            appended: Appended {
                offset,
                timestamp_ms,
            },
            enqueued: request.enqueued,
            durable: request.durable,
        });
    }

    /// Writes the staged records, syncs them if the policy says so, makes
    /// them visible and acknowledges them. On a write error the staged
    /// records are undone and their appenders get the error. Records that
    /// wait only for the write are acknowledged before the fsync, and the
    /// batch becomes visible with them.
    fn flush(&mut self, pending: &mut Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let metrics = &shared.metrics;
        if let Err(e) = self.write_staged() {
            self.unstage();
            answer(pending.drain(..), &Err(e), metrics);
            return;
        }
        let sync = matches!(self.shared.config().fsync, FsyncPolicy::Always)
            && pending.iter().any(|p| p.durable);
        let mut committed = 0;
        if !sync || pending.iter().any(|p| !p.durable) {
            self.publish();
            let written = pending.extract_if(.., |p| !sync || !p.durable);
            committed += answer(written, &Ok(()), metrics);
        }
        if !pending.is_empty() {
            match self.sync() {
                Ok(()) => {
                    if self.staged.end_offset != self.committed.end_offset {
                        self.publish();
                    }
                    committed += answer(pending.drain(..), &Ok(()), metrics);
                }
                Err(e) => {
                    self.unstage();
                    answer(pending.drain(..), &Err(e), metrics);
                }
            }
        }
        metrics.records.inc_by(committed);
        metrics.commit_batch.observe(committed as f64);
    }

    fn write_staged(&mut self) -> Result<()> {
        let written = self.buf.len() as u64;
        let end = self.committed.size + written;
        let result = self.active.write_all_at(&self.buf, self.committed.size);
        self.buf.clear();
        result.map_err(|e| StorageError::io("write", &self.active_path, e))?;
        self.preallocate(end);
        self.unsynced = true;
        self.shared.metrics.bytes.inc_by(written);
        Ok(())
    }

    /// Extends the file with zeros once the records reach its end, not
    /// past the segment size. A failure (a full disk) costs only speed:
    /// the zeros written are given back, so that they take no space the
    /// records need, and the next write reports the disk.
    fn preallocate(&mut self, end: u64) {
        if end < self.allocated {
            return;
        }
        let ahead = end.clamp(PREALLOCATE_MIN, PREALLOCATE_MAX);
        let target = (end + ahead).min(self.shared.config().segment_bytes.max(end));
        let zeros = vec![0; (target - end) as usize];
        match self.active.write_all_at(&zeros, end) {
            Ok(()) => self.allocated = target,
            Err(e) => {
                tracing::debug!(stream = %self.shared.name, error = %e, "could not preallocate");
                self.allocated = end;
                let _ = self.active.set_len(end);
            }
        }
    }

    /// Cuts the zeros after the last record off the file, so that a sealed
    /// or cleanly closed segment is exactly its records.
    fn trim(&mut self) -> Result<()> {
        if self.allocated == self.committed.size {
            return Ok(());
        }
        self.active
            .set_len(self.committed.size)
            .map_err(|e| StorageError::io("truncate", &self.active_path, e))?;
        self.allocated = self.committed.size;
        self.unsynced = true;
        Ok(())
    }

    /// Undoes staged records after a failed write, cutting any partial
    /// write off the file.
    fn unstage(&mut self) {
        self.buf.clear();
        self.staged = self.committed;
        self.index.truncate(self.committed_index_len);
        self.allocated = self.committed.size;
        if let Err(e) = self.active.set_len(self.committed.size) {
            self.fail(&StorageError::io("truncate", &self.active_path, e));
        }
    }

    /// Makes written records visible to readers and updates the shared
    /// segment list.
    fn publish(&mut self) {
        self.committed = self.staged;
        {
            let mut state = self.shared.write_state();
            if let Some(active) = state.segments.back_mut() {
                active
                    .index
                    .extend(&self.index.entries()[self.committed_index_len..]);
                active.summary = self.committed;
            }
        }
        self.committed_index_len = self.index.entries().len();
        if !matches!(self.shared.config().fsync, FsyncPolicy::Always) {
            self.shared
                .durable
                .store(self.committed.end_offset, Ordering::Release);
        }
        self.shared
            .committed
            .send_replace(self.committed.end_offset);
        self.update_gauges();
    }

    /// fdatasync's the active segment. A failure is fatal.
    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.shared.metrics.fsyncs.inc();
        if let Err(e) = self.active.sync_data() {
            let err = StorageError::io("fdatasync", &self.active_path, e);
            self.fail(&err);
            return Err(err);
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        // Everything staged was written before this sync.
        self.shared
            .durable
            .fetch_max(self.staged.end_offset, Ordering::Release);
        Ok(())
    }

    fn sync_if_due(&mut self) {
        if let FsyncPolicy::Interval(every) = self.shared.config().fsync
            && self.unsynced
            && self.last_sync.elapsed() >= every
        {
            let _ = self.sync();
        }
    }

    /// Seals the active segment (sync, write its index) and starts a new one.
    fn roll(&mut self) -> Result<()> {
        self.trim()?;
        self.sync()?;
        let dir = self.shared.dir.clone();
        self.index
            .write(&index_path(&dir, self.base), &self.committed)?;
        let base = self.committed.end_offset;
        self.active = create_segment(&dir, base)?;
        self.active_path = log_path(&dir, base);
        let fresh = SegmentState::empty(base);
        self.base = base;
        self.committed = fresh.summary;
        self.staged = fresh.summary;
        self.allocated = fresh.summary.size;
        self.index = SparseIndex::default();
        self.committed_index_len = 0;
        self.shared.write_state().segments.push_back(fresh);
        self.update_gauges();
        tracing::debug!(stream = %self.shared.name, base, "rolled to a new segment");
        Ok(())
    }

    fn housekeeping(&mut self) {
        if self.failure().is_some() {
            return;
        }
        self.sync_if_due();
        // Records written without waiting for an fsync, and no durable
        // append since to take them along.
        if matches!(self.shared.config().fsync, FsyncPolicy::Always) {
            let _ = self.sync();
        }
        let age_limit = self.shared.config().effective_segment_age();
        let oldest_age = self.committed.min_ts.map(|ts| now_ms().saturating_sub(ts));
        if oldest_age.is_some_and(|age| age >= duration_ms(age_limit))
            && let Err(e) = self.roll()
        {
            tracing::error!(stream = %self.shared.name, error = %e, "could not seal an aged segment");
        }
        self.enforce_retention();
    }

    /// Deletes whole sealed segments that retention no longer keeps.
    fn enforce_retention(&mut self) {
        let retention = self.shared.config().retention;
        loop {
            let victim = {
                let state = self.shared.read_state();
                let Some(oldest) = state.segments.front().filter(|_| state.segments.len() > 1)
                else {
                    return;
                };
                let total: u64 = state.segments.iter().map(|s| s.summary.size).sum();
                let expired = retention.max_age.is_some_and(|age| {
                    let horizon = now_ms().saturating_sub(duration_ms(age));
                    oldest.summary.max_ts.is_none_or(|ts| ts < horizon)
                });
                let oversize = retention.max_bytes.is_some_and(|max| total > max);
                let released =
                    oldest.summary.end_offset <= self.shared.released.load(Ordering::Relaxed);
                if !(expired || oversize || released) {
                    return;
                }
                oldest.base
            };
            self.shared.write_state().segments.pop_front();
            let dir = &self.shared.dir;
            let removed = remove_if_exists(&log_path(dir, victim))
                .and_then(|()| remove_if_exists(&index_path(dir, victim)))
                .and_then(|()| sync_dir(dir));
            match removed {
                Ok(()) => {
                    tracing::info!(stream = %self.shared.name, base = victim, "retention deleted segment");
                }
                Err(e) => {
                    tracing::warn!(stream = %self.shared.name, error = %e, "retention could not delete segment");
                }
            }
            self.shared.metrics.deleted_segments.inc();
            self.update_gauges();
        }
    }

    fn shutdown(&mut self) {
        if self.failure().is_some() {
            return;
        }
        // Recovery cuts the zeros too, so a failed trim still syncs.
        if let Err(e) = self.trim() {
            tracing::warn!(stream = %self.shared.name, error = %e, "could not cut the preallocated zeros");
        }
        if let Err(e) = self.sync() {
            tracing::error!(stream = %self.shared.name, error = %e, "final sync failed");
        }
    }

    fn failure(&self) -> Option<String> {
        self.shared.read_state().failure.clone()
    }

    fn failed_error(&self, reason: String) -> StorageError {
        StorageError::Failed {
            stream: self.shared.name.to_string(),
            reason,
        }
    }

    fn fail(&mut self, err: &StorageError) {
        tracing::error!(stream = %self.shared.name, error = %err, "stream failed; refusing further writes");
        self.shared.write_state().failure = Some(err.to_string());
        (self.on_fatal)(err);
    }

    fn update_gauges(&self) {
        let state = self.shared.read_state();
        let bytes: u64 = state.segments.iter().map(|s| s.summary.size).sum();
        let m = &self.shared.metrics;
        m.retained_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.segments.set(state.segments.len() as i64);
    }
}

/// Acknowledges `pending` appends with `outcome` (an error goes to each);
/// how many were acknowledged as appended.
fn answer(
    pending: impl Iterator<Item = Pending>,
    outcome: &Result<()>,
    metrics: &StreamMetrics,
) -> u64 {
    let mut appended = 0;
    for p in pending {
        let _ = match outcome {
            Ok(()) => {
                appended += 1;
                metrics
                    .append_latency
                    .observe(p.enqueued.elapsed().as_secs_f64());
                p.reply.send(Ok(p.appended))
            }
            Err(e) => p.reply.send(Err(e.duplicate())),
        };
    }
    appended
}

/// Moves whatever else is already queued into `batch`, within the batch
/// bounds. Returns the close request if one was queued behind the appends.
fn take_queued(
    commands: &mut mpsc::Receiver<Command>,
    batch: &mut Vec<AppendRequest>,
) -> Option<oneshot::Sender<()>> {
    let mut bytes: usize = batch.iter().map(|r| r.frame_len).sum();
    while batch.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
        match commands.try_recv() {
            Ok(Command::Append(request)) => {
                bytes += request.frame_len;
                batch.push(request);
            }
            Ok(Command::AppendAll(requests)) => {
                bytes += requests.iter().map(|r| r.frame_len).sum::<usize>();
                batch.extend(requests);
            }
            Ok(Command::Close(done)) => return Some(done),
            Err(_) => break,
        }
    }
    None
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
