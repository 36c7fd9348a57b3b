//! Message move tasks (SQS `StartMessageMoveTask`): a redrive from a
//! dead-letter queue back to the queues its messages came from, or to a
//! named queue. One task at a time per source; finished tasks are kept
//! for listing, the newest few per source.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::QueueError;
use crate::queue::now_ms;

/// Finished tasks kept per source.
const KEPT_PER_SOURCE: usize = 10;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveStatus {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl MoveStatus {
    /// SQS's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStatus::Running => "RUNNING",
            MoveStatus::Completed => "COMPLETED",
            MoveStatus::Cancelled => "CANCELLED",
            MoveStatus::Failed => "FAILED",
        }
    }
}

/// One move task.
#[derive(Debug)]
pub struct MoveTask {
    handle: String,
    source: String,
    destination: Option<String>,
    per_second: Option<u32>,
    started_ms: i64,
    moved: AtomicU64,
    to_move: AtomicU64,
    cancelled: AtomicBool,
    outcome: Mutex<(MoveStatus, Option<String>)>,
}

impl MoveTask {
    pub(crate) fn new(
        source: &str,
        destination: Option<&str>,
        per_second: Option<u32>,
    ) -> Arc<MoveTask> {
        Arc::new(MoveTask {
            handle: format!("{source}:{:016x}", fastrand::u64(..)),
            source: source.to_owned(),
            destination: destination.map(str::to_owned),
            per_second,
            started_ms: now_ms(),
            moved: AtomicU64::new(0),
            to_move: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            outcome: Mutex::new((MoveStatus::Running, None)),
        })
    }

    /// The task's handle.
    pub fn handle(&self) -> &str {
        &self.handle
    }
    /// The queue it moves from.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The queue it moves to; none: each message's source.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }
    /// Its rate limit.
    pub fn per_second(&self) -> Option<u32> {
        self.per_second
    }
    /// When it started, ms since the Unix epoch.
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }
    /// Messages moved so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
    /// Messages the source held when it started.
    pub fn to_move(&self) -> u64 {
        self.to_move.load(Ordering::Relaxed)
    }
    /// Its status, and why it failed.
    pub fn status(&self) -> (MoveStatus, Option<String>) {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_to_move(&self, n: u64) {
        self.to_move.store(n, Ordering::Relaxed);
    }
    pub(crate) fn moved_one(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
    pub(crate) fn fail(&self, reason: String) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) =
            (MoveStatus::Failed, Some(reason));
    }
    pub(crate) fn finish(&self) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.0 == MoveStatus::Running {
            outcome.0 = if self.is_cancelled() {
                MoveStatus::Cancelled
            } else {
                MoveStatus::Completed
            };
        }
    }
}

/// Every task, by source.
#[derive(Debug, Default)]
pub(crate) struct MoveTasks {
    by_source: BTreeMap<String, Vec<Arc<MoveTask>>>,
}

impl MoveTasks {
    /// Registers a task unless its source has one running.
    pub fn start(&mut self, task: Arc<MoveTask>) -> Result<String, QueueError> {
        let tasks = self.by_source.entry(task.source.clone()).or_default();
        if tasks.iter().any(|t| t.status().0 == MoveStatus::Running) {
            return Err(QueueError::invalid(
                "SourceArn",
                "a message move task is already running on this queue",
            ));
        }
        let handle = task.handle.clone();
        tasks.insert(0, task);
        tasks.truncate(KEPT_PER_SOURCE);
        Ok(handle)
    }

    pub fn of(&self, source: &str) -> Vec<Arc<MoveTask>> {
        self.by_source.get(source).cloned().unwrap_or_default()
    }

    pub fn cancel(&self, handle: &str) -> Result<Arc<MoveTask>, QueueError> {
        let task = self
            .by_source
            .values()
            .flatten()
            .find(|t| t.handle == handle)
            .cloned()
            .ok_or_else(|| QueueError::invalid("TaskHandle", "no such task"))?;
        if task.status().0 != MoveStatus::Running {
            return Err(QueueError::invalid("TaskHandle", "the task is not running"));
        }
        task.cancelled.store(true, Ordering::Relaxed);
        Ok(task)
    }
}
