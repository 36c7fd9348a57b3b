//! [`StreamLog`]: one stream's durable log, the handle every other part of
//! tidewire appends to and reads from.
//!
//! One writer thread per stream owns the active segment (see
//! [`crate::writer`]). Appenders hand it records over a bounded channel and
//! wait for their acknowledgement; readers read committed bytes straight from
//! the segment files, guided by the shared segment list.

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{LogConfig, Retention};
use crate::error::{Result, StorageError};
use crate::metrics::StorageMetrics;
use crate::reader::RecordScan;
use crate::record::{MAX_BODY_LEN, Message, frame_len};
use crate::shared::{AppendRequest, Appended, Command, OnFatal, Shared, State};
use crate::{recovery, writer};

/// Appends waiting for the writer thread, per stream. When full, appenders
/// wait: this is the backpressure towards publishers.
const APPEND_QUEUE: usize = 8192;

/// A snapshot of what a stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// Records retained.
    pub records: u64,
    /// Bytes retained on disk, headers and framing included.
    pub bytes: u64,
    /// Offset of the oldest retained record (equals `next_offset` when empty).
    pub first_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
    /// Broker time of the oldest retained record.
    pub first_timestamp_ms: Option<i64>,
    /// Broker time of the newest record.
    pub last_timestamp_ms: Option<i64>,
    /// Segment files.
    pub segments: usize,
}

/// What one segment holds, for planners that prune by offset or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last committed record.
    pub end_offset: u64,
    /// Timestamp of its first record.
    pub min_timestamp_ms: Option<i64>,
    /// Timestamp of its last committed record.
    pub max_timestamp_ms: Option<i64>,
    /// Committed bytes.
    pub size: u64,
}

/// A queued append; resolves to where the record landed once it is durable.
#[derive(Debug)]
pub struct AppendTicket {
    answer: oneshot::Receiver<Result<Appended>>,
    stream: Arc<str>,
}

impl AppendTicket {
    /// The stream it appends to.
    pub fn stream(&self) -> &Arc<str> {
        &self.stream
    }
}

impl Future for AppendTicket {
    type Output = Result<Appended>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| Err(StorageError::Closed(self.stream.to_string())))
        })
    }
}

/// A cheap, cloneable handle to one stream's log.
#[derive(Clone)]
pub struct StreamLog {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog")
            .field("name", &self.shared.name)
            .field("dir", &self.shared.dir)
            .finish()
    }
}

impl StreamLog {
    /// Opens (creating if needed) the log in `dir`, recovering from any
    /// crash, and starts its writer thread. Blocking: call it at start-up or
    /// from a blocking task.
    pub fn open(
        dir: &Path,
        name: &str,
        config: LogConfig,
        metrics: &StorageMetrics,
        on_fatal: OnFatal,
    ) -> Result<StreamLog> {
        let metrics = metrics.for_stream(name);
        let recovered = recovery::recover(dir, &config, name)?;
        metrics.truncated_bytes.inc_by(recovered.truncated_bytes);
        let committed = recovered
            .segments
            .back()
            .map_or(0, |s| s.summary.end_offset);
        let shared = Arc::new(Shared {
            name: name.into(),
            dir: dir.to_owned(),
            config: RwLock::new(config),
            state: RwLock::new(State {
                segments: recovered.segments,
                failure: None,
            }),
            committed: watch::Sender::new(committed),
            durable: AtomicU64::new(committed),
            released: AtomicU64::new(0),
            metrics,
        });
        let (commands, rx) = mpsc::channel(APPEND_QUEUE);
        writer::spawn(Arc::clone(&shared), recovered.active, rx, on_fatal)?;
        Ok(StreamLog { shared, commands })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The stream's directory. Its segment files belong to the log;
    /// readers may keep derived files in subdirectories.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The stream's settings now.
    pub fn config(&self) -> LogConfig {
        self.shared.config()
    }

    /// Changes what the stream keeps. The writer applies it at its next
    /// housekeeping pass (within half a second), and seals the active
    /// segment by the new age if that is sooner.
    pub fn set_retention(&self, retention: Retention) {
        let mut config = self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner());
        config.retention = retention;
    }

    /// Tells the log that its owner no longer needs records below
    /// `offset` (a queue whose messages there are all deleted). The writer
    /// deletes whole sealed segments below it at its next housekeeping
    /// pass, as retention does. Never moves back.
    pub fn release_before(&self, offset: u64) {
        self.shared.released.fetch_max(offset, Ordering::Relaxed);
    }

    /// True when both handles are to the same open log (not merely logs of
    /// the same name: a stream deleted and created again is a new log).
    pub fn same_log(&self, other: &StreamLog) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Appends a message. Resolves once it is durable under the stream's
    /// fsync policy. Waits while the stream's append queue is full.
    pub async fn append(&self, message: Arc<Message>) -> Result<Appended> {
        self.enqueue(message).await?.await
    }

    /// Queues a message for appending and returns once it is queued (waiting
    /// while the queue is full). Messages queued by one caller are stored in
    /// the order queued. The returned ticket resolves once it is durable, so
    /// a caller can keep many appends in flight and still see them complete
    /// in order.
    pub async fn enqueue(&self, message: Arc<Message>) -> Result<AppendTicket> {
        self.queue_append(message, true).await
    }

    /// Queues a record whose ticket resolves once it is written to the
    /// segment file, without waiting for an fsync: it survives the process
    /// being killed, and an fsync takes it along with the next durable
    /// append (or the next housekeeping pass, within half a second). For
    /// records whose loss in a machine crash breaks no promise made to a
    /// client: a queue journals its receives this way, so a power cut can
    /// make a received message visible again early, never lose one. The
    /// other records of the commit it is written in become visible to
    /// readers with it, before their fsync ([`StreamLog::durable_offset`]
    /// stays below them until it is done).
    pub async fn enqueue_written(&self, message: Arc<Message>) -> Result<AppendTicket> {
        self.queue_append(message, false).await
    }

    /// Queues several messages for appending at once, so that they are
    /// written in one commit (one fsync); a ticket each, in order. None is
    /// queued when one is invalid.
    pub async fn enqueue_all(&self, messages: Vec<Arc<Message>>) -> Result<Vec<AppendTicket>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut requests = Vec::with_capacity(messages.len());
        let mut tickets = Vec::with_capacity(messages.len());
        for message in messages {
            let (request, ticket) = self.request(message, true)?;
            requests.push(request);
            tickets.push(ticket);
        }
        self.submit(Command::AppendAll(requests)).await?;
        Ok(tickets)
    }

    async fn queue_append(&self, message: Arc<Message>, durable: bool) -> Result<AppendTicket> {
        let (request, ticket) = self.request(message, durable)?;
        self.submit(Command::Append(request)).await?;
        Ok(ticket)
    }

    /// Gives appends to the writer, waiting while its queue is full.
    async fn submit(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| StorageError::Closed(self.shared.name.to_string()))
    }

    /// A checked append for the writer, and its ticket.
    fn request(
        &self,
        message: Arc<Message>,
        durable: bool,
    ) -> Result<(AppendRequest, AppendTicket)> {
        let frame_len = validate(&message)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            message,
            frame_len,
            enqueued: Instant::now(),
            durable,
            reply,
        };
        let ticket = AppendTicket {
            answer,
            stream: Arc::clone(&self.shared.name),
        };
        Ok((request, ticket))
    }

    /// Syncs and stops the writer. Appends after this fail with
    /// [`StorageError::Closed`]; reads keep working.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// The offset after the last committed record.
    pub fn next_offset(&self) -> u64 {
        *self.shared.committed.borrow()
    }

    /// The offset after the last record that is durable under the fsync
    /// policy (at most [`StreamLog::next_offset`]): what a reader that must
    /// see only acknowledged records reads up to. Under `always`, records
    /// committed beside ones that waited only for their write
    /// ([`StreamLog::enqueue_written`]) are readable before their fsync,
    /// and below this until it is done.
    pub fn durable_offset(&self) -> u64 {
        // A sync can finish just before its records are published.
        self.shared
            .durable
            .load(Ordering::Acquire)
            .min(self.next_offset())
    }

    /// A receiver that changes whenever records are committed; its value is
    /// [`StreamLog::next_offset`]. Live tails wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Reads committed records with offsets in `range`, in order. Records
    /// dropped by retention are skipped. Blocking file I/O.
    pub fn scan(&self, range: Range<u64>) -> RecordScan {
        let until = range.end.min(self.next_offset());
        let state = self.shared.read_state();
        RecordScan::new(&self.shared.dir, &state.segments, range.start..until)
    }

    /// The offset of the first record at or after time `ts_ms`, or the next
    /// offset if there is none yet. Blocking file I/O.
    pub fn offset_at_time(&self, ts_ms: i64) -> Result<u64> {
        let start = {
            let state = self.shared.read_state();
            let segment = state
                .segments
                .iter()
                .find(|s| s.summary.max_ts.is_some_and(|max| max >= ts_ms));
            match segment {
                Some(s) => s.index.floor_time(ts_ms).map_or(s.base, |e| e.offset),
                None => return Ok(self.next_offset()),
            }
        };
        for record in self.scan(start..u64::MAX) {
            let record = record?;
            if record.timestamp_ms >= ts_ms {
                return Ok(record.offset);
            }
        }
        Ok(self.next_offset())
    }

    /// What the stream holds now.
    pub fn stats(&self) -> StreamStats {
        let state = self.shared.read_state();
        let next_offset = state.segments.back().map_or(0, |s| s.summary.end_offset);
        let non_empty = || {
            state
                .segments
                .iter()
                .filter(|s| s.summary.end_offset > s.base)
        };
        StreamStats {
            records: state
                .segments
                .iter()
                .map(|s| s.summary.end_offset - s.base)
                .sum(),
            bytes: state.segments.iter().map(|s| s.summary.size).sum(),
            first_offset: non_empty().next().map_or(next_offset, |s| s.base),
            next_offset,
            first_timestamp_ms: non_empty().next().and_then(|s| s.summary.min_ts),
            last_timestamp_ms: non_empty().next_back().and_then(|s| s.summary.max_ts),
            segments: state.segments.len(),
        }
    }

    /// Every segment's extent, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .read_state()
            .segments
            .iter()
            .map(|s| SegmentInfo {
                base_offset: s.base,
                end_offset: s.summary.end_offset,
                min_timestamp_ms: s.summary.min_ts,
                max_timestamp_ms: s.summary.max_ts,
                size: s.summary.size,
            })
            .collect()
    }

    /// Why the stream stopped accepting writes, if it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.read_state().failure.clone()
    }
}

/// Checks that a message fits the frame format; returns its frame length.
fn validate(message: &Message) -> Result<usize> {
    let short = |what: &str, len: usize| {
        if len > usize::from(u16::MAX) {
            Err(StorageError::InvalidRecord(format!(
                "{what} is {len} bytes, more than 65535"
            )))
        } else {
            Ok(())
        }
    };
    short("topic", message.topic.len())?;
    short("client id", message.client_id.len())?;
    for (key, _) in &message.properties.user {
        short("user property name", key.len())?;
    }
    if message.qos > 2 {
        return Err(StorageError::InvalidRecord(format!(
            "QoS {} is not 0, 1 or 2",
            message.qos
        )));
    }
    let len = frame_len(message);
    if len > MAX_BODY_LEN {
        return Err(StorageError::InvalidRecord(format!(
            "record is {len} bytes, more than {MAX_BODY_LEN}"
        )));
    }
    Ok(len)
}
