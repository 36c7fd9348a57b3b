//! What the writer thread, readers and recovery share about one stream:
//! the segment list, the committed offset, and the writer's requests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::index::{SegmentSummary, SparseIndex};
use crate::metrics::StreamMetrics;
use crate::record::Message;
use crate::segment::HEADER_LEN;

/// Called once when a stream fails for good (an fsync error), so the process
/// can stop rather than carry on with data it cannot make durable.
pub type OnFatal = Arc<dyn Fn(&StorageError) + Send + Sync>;

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its offset.
    pub offset: u64,
    /// Its broker timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// One segment in the shared list.
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub base: u64,
    pub index: SparseIndex,
    pub summary: SegmentSummary,
}

/// The segment list and health, shared by the writer and readers.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub segments: VecDeque<SegmentState>,
    pub failure: Option<String>,
}

/// What the writer and every handle share.
pub(crate) struct Shared {
    pub name: Arc<str>,
    pub dir: PathBuf,
    /// Settings; only retention changes after opening
    /// ([`crate::StreamLog::set_retention`]).
    pub config: RwLock<LogConfig>,
    pub state: RwLock<State>,
    /// The offset after the last committed record; readers never read past it.
    pub committed: watch::Sender<u64>,
    /// The offset after the last record that is durable under the policy:
    /// fsynced under `always`, written under the others. Below
    /// `committed` while a commit's records that waited only for their
    /// write are readable and its fsync is under way.
    pub durable: AtomicU64,
    /// Records below this offset are no longer needed by the log's owner
    /// (a queue whose messages are all deleted): whole sealed segments
    /// below it are deleted like expired ones.
    pub released: AtomicU64,
    pub metrics: StreamMetrics,
}

impl Shared {
    /// The stream's settings now.
    pub fn config(&self) -> LogConfig {
        *self.config.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request to the writer thread.
pub(crate) enum Command {
    Append(AppendRequest),
    /// Appends that go into one commit together.
    AppendAll(Vec<AppendRequest>),
    /// Sync everything and stop; answered when done.
    Close(oneshot::Sender<()>),
}

pub(crate) struct AppendRequest {
    pub message: Arc<Message>,
    pub frame_len: usize,
    pub enqueued: Instant,
    /// Whether the answer waits for the stream's fsync policy (else only
    /// for the write: [`crate::StreamLog::enqueue_written`]).
    pub durable: bool,
    pub reply: oneshot::Sender<Result<Appended>>,
}

impl SegmentState {
    /// The state of a segment that has only its header.
    pub fn empty(base: u64) -> SegmentState {
        SegmentState {
            base,
            index: SparseIndex::default(),
            summary: SegmentSummary {
                end_offset: base,
                size: HEADER_LEN,
                min_ts: None,
                max_ts: None,
            },
        }
    }
}
