//! The delivery loop: reads a stream from a consumer's durable cursor, in
//! offset order, and hands each record to a [`Sink`].
//!
//! - It tails the stream, waking when records are appended (no polling),
//!   and reads the next batch on a blocking thread while the current one
//!   is sent. With a `linger`, a caught-up pump waits that long after a
//!   record arrives before reading, so it takes what arrived meanwhile in
//!   one batch (for sinks that gather records into files anyway).
//! - Up to `max_in_flight` records await their acknowledgement at once;
//!   acknowledgements are awaited in order, each within `ack_timeout`.
//! - The cursor is committed (fsynced, on a blocking thread, at most every
//!   `commit_interval`, also once caught up) only past accepted records, so
//!   after a failure or a crash the records after it are sent again: at
//!   least once, in order.
//! - Records that retention deleted before they were sent, and records
//!   the sink rejected for good, are counted as lost, never skipped
//!   silently.
//!
//! [`Pump::run`] is one session (a bridge that owns its connection calls
//! it per connection); [`Pump::run_retrying`] runs sessions with capped
//! exponential backoff for sinks that have no session of their own.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewire_storage::{Record, StorageError, StreamLog};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cursor::Cursor;
use crate::error::DeliveryError;
use crate::position::{Start, records_after};
use crate::sink::{Sent, Sink, SinkError};
use crate::status::{Lag, Report};

/// Records read from the stream at a time.
pub const DEFAULT_BATCH: u64 = 512;
/// Records awaiting their acknowledgement at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// How long an acknowledgement or a flush may take.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Commit the cursor at least this often while records flow.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// The first wait after a failed session ([`Pump::run_retrying`]).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How often the lag is reported while waiting to retry.
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// The longest wait after failed sessions ([`Pump::run_retrying`]): a
/// target back from an outage is found within this long. Measured with
/// `benches/src/bin/delivery.rs` (10k msg/s, a 60 s outage): with 30 s the
/// pump slept 21 s after the sink came back, then caught up 800k records
/// in 1.5 s; retrying every 5 s at most costs one failed send per 5 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a pump delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpConfig {
    /// Records read from the stream at a time.
    pub batch: u64,
    /// Records awaiting their acknowledgement at once (at least 1).
    pub max_in_flight: usize,
    /// How long an acknowledgement or a flush may take before the session
    /// fails with a retry.
    pub ack_timeout: Duration,
    /// The cursor is committed at most this often while records flow.
    pub commit_interval: Duration,
    /// The first wait after a failed session.
    pub backoff_min: Duration,
    /// The longest wait after failed sessions.
    pub backoff_max: Duration,
    /// Once caught up, how long to wait after a record arrives before
    /// reading it; zero: at once.
    pub linger: Duration,
}

impl Default for PumpConfig {
    fn default() -> Self {
        PumpConfig {
            batch: DEFAULT_BATCH,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            linger: Duration::ZERO,
        }
    }
}

/// One consumer of one stream, and its position, kept across sessions.
pub struct Pump {
    log: StreamLog,
    cursor: Cursor,
    config: PumpConfig,
    report: Arc<dyn Report>,
    /// The next offset to deliver; everything before it is accepted and
    /// committed.
    committed: u64,
    /// The broker timestamp of the newest record accepted, for the lag in
    /// time.
    delivered_ts: Option<i64>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("stream", &self.log.name())
            .field("cursor", &self.cursor.path())
            .field("committed", &self.committed)
            .finish()
    }
}

/// A record sent and not yet confirmed.
struct Pending<A> {
    offset: u64,
    timestamp_ms: i64,
    /// The acknowledgement to await; none when a flush confirms it.
    ack: Option<A>,
}

/// A batch being read on a blocking thread.
type Read = JoinHandle<Result<Vec<Record>, StorageError>>;

/// One session's reading position.
struct Run<A> {
    /// The next offset to read.
    read_to: u64,
    /// Everything before this is accepted (or skipped, or lost).
    acked_to: u64,
    pending: VecDeque<Pending<A>>,
    /// Accepted records before this offset were confirmed by a flush.
    flushed_to: u64,
    last_commit: Instant,
    /// A commit running on a blocking thread, and the offset it writes.
    committing: Option<(u64, JoinHandle<std::io::Result<()>>)>,
}

impl Pump {
    /// Opens the consumer's cursor, or starts one per `start` (committing
    /// it, so a restart does not move a `Latest` consumer forward; an
    /// offset past the stream's end starts at the end). Blocking file I/O.
    pub fn open(
        log: StreamLog,
        cursor: Cursor,
        start: Start,
        config: PumpConfig,
        report: Arc<dyn Report>,
    ) -> Result<Pump, DeliveryError> {
        let cursor_error = |source| DeliveryError::Cursor {
            path: cursor.path().to_owned(),
            source,
        };
        let committed = match cursor.load().map_err(cursor_error)? {
            Some(offset) => offset,
            None => {
                let start = start
                    .resolve(&log)
                    .map_err(|source| DeliveryError::Read {
                        stream: log.name().to_owned(),
                        source,
                    })?
                    .min(log.next_offset());
                cursor.commit(start).map_err(cursor_error)?;
                start
            }
        };
        // The record before the cursor was the last one delivered.
        let delivered_ts = committed
            .checked_sub(1)
            .and_then(|last| log.scan(last..committed).next())
            .and_then(Result::ok)
            .map(|record| record.timestamp_ms);
        let pump = Pump {
            log,
            cursor,
            config: PumpConfig {
                max_in_flight: config.max_in_flight.max(1),
                batch: config.batch.max(1),
                ..config
            },
            report,
            committed,
            delivered_ts,
        };
        pump.report_position();
        Ok(pump)
    }

    /// Tells the report where the consumer is and how far behind.
    fn report_position(&self) {
        let lag = Lag::of(&self.log, self.committed, self.delivered_ts);
        self.report.position(self.committed, self.delivered_ts, lag);
    }

    /// The committed cursor: the next offset to deliver.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The stream read.
    pub fn log(&self) -> &StreamLog {
        &self.log
    }

    /// Delivers from the cursor until `ended` is cancelled, the stream is
    /// closed, or something fails. Accepted progress is committed before
    /// returning; a failure is also reported.
    pub async fn run<S: Sink>(
        &mut self,
        sink: &mut S,
        ended: &CancellationToken,
    ) -> Result<(), DeliveryError> {
        sink.reset();
        let mut run = Run {
            read_to: self.committed,
            acked_to: self.committed,
            pending: VecDeque::with_capacity(self.config.max_in_flight),
            flushed_to: self.committed,
            last_commit: Instant::now(),
            committing: None,
        };
        // A target that went away can leave sends and acknowledgements
        // waiting for ever: stop waiting when the session ends.
        let outcome = tokio::select! {
            outcome = self.pump(sink, &mut run, ended) => outcome,
            () = ended.cancelled() => Ok(()),
        };
        // Keep what was accepted even when the session broke.
        let committed = match self.finish_commit(&mut run).await {
            Ok(()) => self.commit(sink.committable(run.acked_to)).await,
            Err(e) => Err(e),
        };
        let outcome = outcome.and(committed);
        if let Err(e) = &outcome {
            self.report.error(&e.to_string());
        }
        outcome
    }

    /// Runs sessions until `shutdown`, waiting with capped exponential
    /// backoff after each failure (reset once a session made progress).
    pub async fn run_retrying<S: Sink>(&mut self, sink: &mut S, shutdown: &CancellationToken) {
        let mut backoff = self.config.backoff_min;
        while !shutdown.is_cancelled() {
            let before = self.committed;
            let Err(e) = self.run(sink, shutdown).await else {
                return;
            };
            if self.committed > before {
                backoff = self.config.backoff_min;
            }
            tracing::warn!(
                stream = %self.log.name(),
                error = %e,
                retry_in = ?backoff,
                "delivery failed"
            );
            if !self.wait_reporting(backoff, shutdown).await {
                return;
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    /// Waits `backoff` before the next session, keeping the reported lag
    /// current meanwhile (records keep arriving while the target is down).
    /// False if `shutdown` came first.
    async fn wait_reporting(&self, backoff: Duration, shutdown: &CancellationToken) -> bool {
        let until = tokio::time::Instant::now() + backoff;
        loop {
            let step = until
                .saturating_duration_since(tokio::time::Instant::now())
                .min(LAG_REFRESH);
            if step.is_zero() {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep(step) => self.report_position(),
                () = shutdown.cancelled() => return false,
            }
        }
    }

    async fn pump<S: Sink>(
        &mut self,
        sink: &mut S,
        run: &mut Run<S::Ack>,
        ended: &CancellationToken,
    ) -> Result<(), DeliveryError> {
        let mut prefetched: Option<(u64, Read)> = None;
        loop {
            if ended.is_cancelled() {
                return Ok(());
            }
            self.skip_retained_away(run);
            let end = self.log.next_offset();
            if run.read_to >= end {
                self.settle(sink, run, 0).await?;
                self.finish_commit(run).await?;
                // Caught up: commit, but at most every `commit_interval`,
                // so a trickle of records does not cost a cursor fsync
                // each; a commit not due yet is made when it is.
                let committable = sink.committable(run.acked_to);
                let commit_due = run.last_commit + self.config.commit_interval;
                let mut later = None;
                if committable > self.committed {
                    if Instant::now() >= commit_due {
                        self.commit(committable).await?;
                        run.last_commit = Instant::now();
                    } else {
                        later = Some(commit_due);
                    }
                } else {
                    self.report_position();
                }
                let deadline = sink.flush_deadline();
                tokio::select! {
                    () = records_after(&self.log, run.read_to) => self.linger(ended).await,
                    () = sleep_until(deadline) => self.flush_idle(sink).await?,
                    () = sleep_until(later) => {}
                    () = ended.cancelled() => return Ok(()),
                }
                continue;
            }
            let batch_end = end.min(run.read_to + self.config.batch);
            let batch = match prefetched.take() {
                Some((start, read)) if start == run.read_to => self.finish_read(read).await?,
                _ => {
                    self.finish_read(self.start_read(run.read_to..batch_end))
                        .await?
                }
            };
            // Read the next batch from disk while this one is sent.
            let next_end = self.log.next_offset().min(batch_end + self.config.batch);
            if batch_end < next_end {
                prefetched = Some((batch_end, self.start_read(batch_end..next_end)));
            }
            for record in batch {
                if record.offset > run.read_to {
                    // Retention dropped these between the check and the read.
                    self.report.lost(record.offset - run.read_to);
                }
                run.read_to = record.offset + 1;
                let (offset, timestamp_ms) = (record.offset, record.timestamp_ms);
                match sink.send(&record).await {
                    Ok(Sent::Skipped) => {}
                    Ok(Sent::Accepted) => run.pending.push_back(Pending {
                        offset,
                        timestamp_ms,
                        ack: None,
                    }),
                    Ok(Sent::Pending(ack)) => run.pending.push_back(Pending {
                        offset,
                        timestamp_ms,
                        ack: Some(ack),
                    }),
                    Err(SinkError::Rejected { reason }) => self.rejected(record.offset, &reason),
                    Err(e) => return Err(e.into()),
                }
                if run.pending.is_empty() {
                    run.acked_to = run.read_to;
                    self.delivered_ts = Some(timestamp_ms);
                }
                self.settle(sink, run, self.config.max_in_flight - 1)
                    .await?;
            }
            // Records confirmed by a flush are flushed once per batch.
            if run.pending.back().is_some_and(|p| p.ack.is_none()) {
                self.settle(sink, run, 0).await?;
            }
            let committable = sink.committable(run.acked_to);
            self.commit_in_background(run, committable).await?;
        }
    }

    /// Counts a record the sink will never take.
    fn rejected(&self, offset: u64, reason: &str) {
        tracing::warn!(stream = %self.log.name(), offset, reason, "record rejected for good");
        self.report.lost(1);
        self.report.error(&format!("offset {offset}: {reason}"));
    }

    /// Waits for acknowledgements until at most `keep` records are
    /// pending (records a flush already confirmed are never kept).
    async fn settle<S: Sink>(
        &mut self,
        sink: &mut S,
        run: &mut Run<S::Ack>,
        keep: usize,
    ) -> Result<(), DeliveryError> {
        let mut delivered = 0;
        let outcome = self.settle_counting(sink, run, keep, &mut delivered).await;
        if delivered > 0 {
            self.report.delivered(delivered);
        }
        outcome
    }

    async fn settle_counting<S: Sink>(
        &mut self,
        sink: &mut S,
        run: &mut Run<S::Ack>,
        keep: usize,
        delivered: &mut u64,
    ) -> Result<(), DeliveryError> {
        let timeout = self.config.ack_timeout;
        while let Some(front) = run.pending.front() {
            let flushed = front.ack.is_none() && front.offset < run.flushed_to;
            if run.pending.len() <= keep && !flushed {
                break;
            }
            let Some(front) = run.pending.pop_front() else {
                break;
            };
            let outcome = match front.ack {
                Some(ack) => tokio::time::timeout(timeout, ack)
                    .await
                    .unwrap_or_else(|_| {
                        Err(SinkError::retry(format!(
                            "no acknowledgement within {timeout:?}"
                        )))
                    }),
                None if flushed => Ok(()),
                None => {
                    let to = run.read_to;
                    match tokio::time::timeout(timeout, sink.flush()).await {
                        Ok(Ok(())) => {
                            run.flushed_to = to;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(SinkError::retry(e)),
                        Err(_) => Err(SinkError::retry(format!("no flush within {timeout:?}"))),
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    *delivered += 1;
                    self.delivered_ts = Some(front.timestamp_ms);
                }
                Err(SinkError::Rejected { reason }) => self.rejected(front.offset, &reason),
                Err(e) => return Err(e.into()),
            }
            run.acked_to = run.pending.front().map_or(run.read_to, |p| p.offset);
        }
        Ok(())
    }

    /// Moves past records that retention deleted before they were sent,
    /// counting them.
    fn skip_retained_away(&self, run: &mut Run<impl Sized>) {
        let first = self.log.stats().first_offset;
        if run.read_to < first {
            let lost = first - run.read_to;
            tracing::warn!(
                stream = %self.log.name(),
                lost,
                "retention dropped records not delivered yet"
            );
            self.report.lost(lost);
            self.report.error(&format!(
                "retention dropped {lost} records of stream {} before they were sent",
                self.log.name()
            ));
            run.read_to = first;
            if run.pending.is_empty() {
                run.acked_to = first;
            }
        }
    }

    /// Starts reading `range` on a blocking thread.
    fn start_read(&self, range: Range<u64>) -> Read {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.scan(range).collect::<Result<Vec<_>, _>>())
    }

    async fn finish_read(&self, read: Read) -> Result<Vec<Record>, DeliveryError> {
        read.await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .map_err(|source| DeliveryError::Read {
                stream: self.log.name().to_owned(),
                source,
            })
    }

    /// While records flow, commits the cursor every `commit_interval` on a
    /// blocking thread, so the fsyncs do not stall sending; one commit at
    /// a time.
    async fn commit_in_background(
        &mut self,
        run: &mut Run<impl Sized>,
        committable: u64,
    ) -> Result<(), DeliveryError> {
        if run
            .committing
            .as_ref()
            .is_some_and(|(_, task)| !task.is_finished())
        {
            return Ok(());
        }
        self.finish_commit(run).await?;
        if committable > self.committed && run.last_commit.elapsed() >= self.config.commit_interval
        {
            let cursor = self.cursor.clone();
            let next = committable;
            run.committing = Some((
                next,
                tokio::task::spawn_blocking(move || cursor.commit(next)),
            ));
            run.last_commit = Instant::now();
        }
        Ok(())
    }

    /// Waits `linger` (or until the session ends), so that what arrives
    /// meanwhile is read with the record that woke the pump.
    async fn linger(&self, ended: &CancellationToken) {
        if !self.config.linger.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.config.linger) => {}
                () = ended.cancelled() => {}
            }
        }
    }

    /// Flushes a sink whose flush deadline came while no record did (an
    /// export's `max_interval`).
    async fn flush_idle<S: Sink>(&self, sink: &mut S) -> Result<(), DeliveryError> {
        let timeout = self.config.ack_timeout;
        match tokio::time::timeout(timeout, sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::retry(e).into()),
            Err(_) => Err(SinkError::retry(format!("no flush within {timeout:?}")).into()),
        }
    }

    /// Waits for the background commit, if any, and records its result.
    async fn finish_commit(&mut self, run: &mut Run<impl Sized>) -> Result<(), DeliveryError> {
        let Some((next, task)) = run.committing.take() else {
            return Ok(());
        };
        self.committed_by(task.await)?;
        self.committed = next;
        self.report_position();
        Ok(())
    }

    /// The outcome of a cursor commit run on a blocking thread.
    fn committed_by(
        &self,
        outcome: Result<std::io::Result<()>, tokio::task::JoinError>,
    ) -> Result<(), DeliveryError> {
        outcome
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .map_err(|source| DeliveryError::Cursor {
                path: self.cursor.path().to_owned(),
                source,
            })
    }

    /// Durably records `next` as the cursor, if it moved.
    async fn commit(&mut self, next: u64) -> Result<(), DeliveryError> {
        if next > self.committed {
            let cursor = self.cursor.clone();
            self.committed_by(tokio::task::spawn_blocking(move || cursor.commit(next)).await)?;
            self.committed = next;
        }
        self.report_position();
        Ok(())
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use prometheus_client::registry::Registry;
    use tidewire_storage::{LogConfig, Message, OnFatal, StorageMetrics};

    use super::*;
    use crate::status::DeliveryStatus;

    type Ack = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

    /// A sink answering each offset by a rule, logging what it confirmed.
    struct Scripted<F> {
        answer: F,
        confirmed: Vec<u64>,
    }

    impl<F> Sink for Scripted<F>
    where
        F: FnMut(u64) -> Result<Sent<Ack>, SinkError> + Send,
    {
        type Ack = Ack;

        async fn send(&mut self, record: &Record) -> Result<Sent<Ack>, SinkError> {
            let answer = (self.answer)(record.offset);
            if matches!(answer, Ok(Sent::Accepted)) {
                self.confirmed.push(record.offset);
            }
            answer
        }

        async fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn scripted<F>(answer: F) -> Scripted<F> {
        Scripted {
            answer,
            confirmed: Vec::new(),
        }
    }

    fn ack(outcome: Result<(), SinkError>) -> Result<Sent<Ack>, SinkError> {
        Ok(Sent::Pending(Box::pin(async move { outcome })))
    }

    async fn log_with(dir: &std::path::Path, records: u64) -> StreamLog {
        let mut registry = Registry::default();
        let metrics = StorageMetrics::register(&mut registry);
        let on_fatal: OnFatal = Arc::new(|e| panic!("fatal storage error: {e}"));
        let log =
            StreamLog::open(dir, "s", LogConfig::default(), &metrics, on_fatal).expect("open log");
        for i in 0..records {
            let message = Message {
                topic: "t".into(),
                client_id: "c".into(),
                qos: 0,
                retain: false,
                payload: bytes::Bytes::from(i.to_string()),
                properties: Default::default(),
            };
            log.append(Arc::new(message)).await.expect("append");
            // Distinct broker timestamps, for the lag in time.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        log
    }

    fn pump(dir: &std::path::Path, log: &StreamLog, start: Start) -> (Pump, Arc<DeliveryStatus>) {
        let status = Arc::new(DeliveryStatus::default());
        let config = PumpConfig {
            max_in_flight: 4,
            ack_timeout: Duration::from_millis(50),
            ..PumpConfig::default()
        };
        let cursor = Cursor::new(dir.join("c.json"), [("consumer", "unit")]);
        let pump = Pump::open(log.clone(), cursor, start, config, Arc::clone(&status) as _)
            .expect("open pump");
        (pump, status)
    }

    /// Runs a session until it fails or, having had time to catch up
    /// with the stream, is ended.
    async fn run_to_end<S: Sink>(pump: &mut Pump, sink: &mut S) -> Result<(), DeliveryError> {
        let ended = CancellationToken::new();
        let run = pump.run(sink, &ended);
        tokio::pin!(run);
        tokio::select! {
            outcome = &mut run => return outcome,
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        ended.cancel();
        run.await
    }

    /// A sink that gathers records and writes them out `due` after the
    /// first one, as an export does: only written records may be behind
    /// the cursor.
    struct Gathering {
        first: Option<u64>,
        since: Option<Instant>,
        due: Duration,
        written: Vec<u64>,
        buffered: Vec<u64>,
    }

    impl Sink for Gathering {
        type Ack = Ack;

        async fn send(&mut self, record: &Record) -> Result<Sent<Ack>, SinkError> {
            self.first.get_or_insert(record.offset);
            self.since.get_or_insert_with(Instant::now);
            self.buffered.push(record.offset);
            Ok(Sent::Accepted)
        }

        async fn flush(&mut self) -> Result<(), SinkError> {
            if self.since.is_some_and(|s| s.elapsed() >= self.due) {
                self.written.append(&mut self.buffered);
                self.first = None;
                self.since = None;
            }
            Ok(())
        }

        fn committable(&self, accepted_to: u64) -> u64 {
            self.first.map_or(accepted_to, |f| f.min(accepted_to))
        }

        fn flush_deadline(&self) -> Option<Instant> {
            self.since.map(|s| s + self.due)
        }

        fn reset(&mut self) {
            self.buffered.clear();
            self.first = None;
            self.since = None;
        }
    }

    #[tokio::test]
    async fn a_gathering_sink_is_flushed_when_due_and_commits_only_what_it_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_with(&dir.path().join("log"), 5).await;
        let (mut pump, _) = pump(dir.path(), &log, Start::Earliest);
        let mut sink = Gathering {
            first: None,
            since: None,
            due: Duration::from_secs(3600),
            written: Vec::new(),
            buffered: Vec::new(),
        };
        // Not due: everything is accepted, nothing written, and the cursor
        // stays before the first buffered record.
        run_to_end(&mut pump, &mut sink).await.expect("run");
        assert!(sink.written.is_empty());
        assert_eq!(pump.committed(), 0);
        // Due soon: the idle pump wakes at the deadline, with no new
        // record, and commits past what was written.
        sink.due = Duration::from_millis(100);
        run_to_end(&mut pump, &mut sink).await.expect("run");
        assert_eq!(sink.written, vec![0, 1, 2, 3, 4]);
        assert_eq!(pump.committed(), 5);
    }

    #[tokio::test]
    async fn a_new_consumer_starts_where_it_is_told_and_keeps_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_with(&dir.path().join("log"), 3).await;
        let (latest, status) = pump(dir.path(), &log, Start::Latest);
        assert_eq!(latest.committed(), 3);
        assert_eq!(status.snapshot().lag.records, 0);
        // The start was committed: reopening with another start keeps it.
        let (again, _) = pump(dir.path(), &log, Start::Earliest);
        assert_eq!(again.committed(), 3);
        std::fs::remove_file(dir.path().join("c.json")).expect("remove");
        let (earliest, status) = pump(dir.path(), &log, Start::Earliest);
        assert_eq!(earliest.committed(), 0);
        assert_eq!(status.snapshot().lag.records, 3);
    }

    #[tokio::test]
    async fn rejected_records_are_counted_lost_and_passed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_with(&dir.path().join("log"), 5).await;
        let (mut pump, status) = pump(dir.path(), &log, Start::Earliest);
        let mut sink = scripted(|offset| match offset {
            1 => Err(SinkError::rejected("too big")),
            3 => ack(Err(SinkError::rejected("refused by the target"))),
            0 => Ok(Sent::Skipped),
            _ => Ok(Sent::Accepted),
        });
        run_to_end(&mut pump, &mut sink).await.expect("run");
        assert_eq!(pump.committed(), 5);
        assert_eq!(sink.confirmed, vec![2, 4]);
        let snapshot = status.snapshot();
        assert_eq!((snapshot.delivered, snapshot.lost), (2, 2));
        assert_eq!(
            snapshot.last_error.as_deref(),
            Some("offset 3: refused by the target")
        );
    }

    #[tokio::test]
    async fn a_failed_or_missing_acknowledgement_keeps_the_cursor_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_with(&dir.path().join("log"), 6).await;
        let (mut pump, status) = pump(dir.path(), &log, Start::Earliest);
        let mut failing = scripted(|offset| match offset {
            2 => ack(Err(SinkError::retry("broken pipe"))),
            _ => ack(Ok(())),
        });
        let e = run_to_end(&mut pump, &mut failing)
            .await
            .expect_err("fails");
        assert_eq!(e.to_string(), "broken pipe");
        assert_eq!(pump.committed(), 2);
        let snapshot = status.snapshot();
        assert_eq!(snapshot.last_error.as_deref(), Some("broken pipe"));
        assert_eq!(snapshot.lag.records, 4);
        let stamps: Vec<i64> = log
            .scan(0..6)
            .map(|r| r.expect("read").timestamp_ms)
            .collect();
        assert_eq!(snapshot.lag.millis, (stamps[5] - stamps[1]) as u64);

        let mut silent = scripted(|offset| match offset {
            4 => Ok(Sent::Pending(Box::pin(std::future::pending()) as Ack)),
            _ => ack(Ok(())),
        });
        let e = run_to_end(&mut pump, &mut silent)
            .await
            .expect_err("times out");
        assert!(e.to_string().contains("no acknowledgement within"), "{e}");
        assert_eq!(pump.committed(), 4);

        let mut good = scripted(|_| ack(Ok(())));
        run_to_end(&mut pump, &mut good).await.expect("run");
        assert_eq!(pump.committed(), 6);
        assert_eq!(status.snapshot().lag, Lag::default(), "caught up");
        let text = std::fs::read_to_string(dir.path().join("c.json")).expect("cursor");
        assert!(text.contains("\"next_offset\":6"), "{text}");
    }
}
