//! One queue: its messages in a log of their own (`messages/`), its
//! consumer state in memory ([`crate::state`]) and on disk
//! ([`crate::journal`]: records in that same log, plus a snapshot), and the
//! operations SQS defines on them. A send is acknowledged once its record
//! is durable under the queue's fsync policy; a delete or visibility
//! change once its journal record is, and a receive once its journal
//! record is written. Sends and journal records share the log's group
//! commit: one fdatasync makes a batch of both durable.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tidewire_storage::{
    AppendTicket, FsyncPolicy, LogConfig, Message, OnFatal, Record, Retention, StorageError,
    StorageMetrics, StreamLog,
};
use tokio::sync::Notify;

use crate::config::QueueSpec;
use crate::dedup::{self, Check, Dedup};
use crate::error::QueueError;
use crate::journal::{self, Change, Receipt as JournalReceipt};
use crate::message::{self, Delivered, Header, Moved, Outgoing, Sent};
use crate::metrics::Counters;
use crate::receipt::{self, Receipt};
use crate::state::{State, Tracked};

/// Most messages one receive hands out, as in SQS.
pub const MAX_RECEIVE: usize = 10;
/// Messages looked at and not yet received (delayed, or behind a FIFO group
/// in flight) that a queue keeps in memory; past it, it stops reading ahead
/// until some are received.
const MAX_LOOKAHEAD: usize = 20_000;
/// Most messages in flight in a standard queue, as in SQS: a consumer that
/// receives and never deletes cannot make the consumer state grow past it.
const MAX_IN_FLIGHT: usize = 120_000;
/// Most messages in flight in a FIFO queue, as in SQS.
const MAX_IN_FLIGHT_FIFO: usize = 20_000;
/// Fewest records read ahead from the log at a time (more when a receive
/// wants more).
const MIN_SCAN: u64 = 1;
/// A snapshot is taken once the log has grown this many records (messages
/// and journal records) past the last one, so that recovery replays at
/// most about this many.
const SNAPSHOT_EVERY_RECORDS: u64 = 65_536;
/// A log that grew at all is snapshotted at least this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);
/// A message on its way to the dead-letter queue stays hidden this long.
const MOVE_TIMEOUT_MS: i64 = 60_000;
/// How often consumer state already in flight is checked for retention.
const EXPIRY_SWEEP: Duration = Duration::from_secs(10);

/// What a queue holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Messages ready to be received.
    pub visible: u64,
    /// Received and hidden.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
    /// When the oldest message was sent, ms since the Unix epoch.
    pub oldest_sent_ms: Option<i64>,
}

/// A message that must move to the dead-letter queue: its record, and its
/// history for the header there.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub offset: u64,
    pub nonce: u64,
    pub record: Record,
    pub moved: Moved,
}

/// What one receive pass found.
#[derive(Debug, Default)]
pub(crate) struct Pass {
    pub delivered: Vec<Delivered>,
    pub dead_letters: Vec<DeadLetter>,
}

/// One open queue.
pub struct Queue {
    spec: RwLock<Arc<QueueSpec>>,
    incarnation: u64,
    dir: PathBuf,
    messages: StreamLog,
    /// The journal records in the log at or past the head.
    journal_records: Arc<Mutex<JournalRecords>>,
    /// Bumped as each message appended is answered, for long polls (the
    /// log's own commits include journal records, which would wake every
    /// waiting receive at each receive and delete).
    sent: tokio::sync::watch::Sender<u64>,
    state: tokio::sync::Mutex<State>,
    /// Woken when hidden messages may have become visible before their
    /// time (visibility set to 0, a dead-letter move that failed).
    woken: Notify,
    dedup: Mutex<Dedup>,
    counters: Counters,
    compaction: tokio::sync::Mutex<Compaction>,
    /// The scan receives read ahead with, kept open between them.
    read_ahead: Mutex<Option<ReadAhead>>,
    /// When the definition last changed at run time, ms since the Unix
    /// epoch (0: not since the queue was opened).
    modified_ms: AtomicI64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.spec().name())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The journal records at or past the head: readers of unread messages
/// skip them, and the depth does not count them. They are few: consumer
/// changes made while unread messages wait (about one for every five
/// messages received and deleted while a backlog drains).
#[derive(Debug, Default)]
struct JournalRecords {
    /// Their offsets, ascending.
    offsets: VecDeque<u64>,
    /// Where reading has passed: a record that lands below it was passed
    /// already (it is noted once its append is answered, which can be
    /// after a receive has read past it).
    passed_below: u64,
    /// Journal records not yet in `offsets` because their appends are not
    /// answered yet: the log's end when each was enqueued (at most its
    /// offset), with how many share it. A snapshot taken meanwhile starts
    /// replay at the lowest, so that such a record is read again after a
    /// restart rather than counted as a message.
    unanswered: BTreeMap<u64, u32>,
}

impl JournalRecords {
    fn add(&mut self, offset: u64) {
        let at = self.offsets.partition_point(|&o| o < offset);
        if offset >= self.passed_below && self.offsets.get(at) != Some(&offset) {
            self.offsets.insert(at, offset);
        }
    }

    /// Reading has passed everything below `head`.
    fn pass(&mut self, head: u64) {
        self.passed_below = self.passed_below.max(head);
        while self.offsets.front().is_some_and(|&o| o < self.passed_below) {
            self.offsets.pop_front();
        }
    }

    /// How many are in `range`.
    fn count(&self, range: std::ops::Range<u64>) -> u64 {
        let below = |end: u64| self.offsets.partition_point(|&o| o < end);
        below(range.end).saturating_sub(below(range.start)) as u64
    }

    /// Where replay after a snapshot taken now starts, the log ending at
    /// `end`: there, or lower if a journal record's append is unanswered.
    fn replay_from(&self, end: u64) -> u64 {
        self.unanswered
            .keys()
            .next()
            .map_or(end, |&floor| floor.min(end))
    }

    /// A journal append noted with this floor is answered (or given up).
    fn answered(&mut self, floor: u64) {
        if let Some(n) = self.unanswered.get_mut(&floor) {
            *n -= 1;
            if *n == 0 {
                self.unanswered.remove(&floor);
            }
        }
    }
}

/// A journal record's floor in [`JournalRecords::unanswered`]: the log's
/// end before the record was enqueued (at most its offset), noted under
/// the state lock, which snapshots take too. Cleared when settled, or
/// when dropped.
struct Floor {
    records: Arc<Mutex<JournalRecords>>,
    at: u64,
    settled: bool,
}

impl Floor {
    fn note(records: &Arc<Mutex<JournalRecords>>, at: u64) -> Floor {
        *lock(records).unanswered.entry(at).or_default() += 1;
        Floor {
            records: Arc::clone(records),
            at,
            settled: false,
        }
    }

    /// The record's append was answered: the record is listed at `offset`
    /// if it landed, and the floor cleared.
    fn settle(&mut self, offset: Option<u64>) {
        let mut records = lock(&self.records);
        if let Some(offset) = offset {
            records.add(offset);
        }
        records.answered(self.at);
        self.settled = true;
    }

    /// This floor, moved out: `self` clears nothing any more.
    fn take(&mut self) -> Floor {
        self.settled = true;
        Floor {
            records: Arc::clone(&self.records),
            at: self.at,
            settled: false,
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        if !self.settled {
            lock(&self.records).answered(self.at);
        }
    }
}

/// A journal record's append on its way, with its [`Floor`] kept until the
/// record is listed. Dropped before its answer (a request given up), it
/// leaves the wait for the answer to a task of its own, which takes the
/// floor along; outside a runtime it clears the floor, and the record
/// stays unlisted (counted in the depth until reading passes it).
struct JournalTicket {
    /// Until the answer is taken, here or by a drop.
    append: Option<AppendTicket>,
    floor: Floor,
}

impl JournalTicket {
    /// Waits for the append, and lists where the record landed.
    async fn landed(mut self) -> Result<(), StorageError> {
        let Some(append) = &mut self.append else {
            return Ok(());
        };
        let landed = append.await.map(|a| a.offset);
        self.append = None;
        self.floor.settle(landed.as_ref().ok().copied());
        landed.map(drop)
    }
}

impl Drop for JournalTicket {
    fn drop(&mut self) {
        if let (Some(append), Ok(runtime)) =
            (self.append.take(), tokio::runtime::Handle::try_current())
        {
            let mut floor = self.floor.take();
            runtime.spawn(async move {
                floor.settle(append.await.ok().map(|a| a.offset));
            });
        }
    }
}

#[derive(Debug)]
struct Compaction {
    /// Where replay would start: the log's end at the last snapshot (or
    /// below it, at a journal record then unanswered).
    journal_from: u64,
    at: std::time::Instant,
    last_sweep: std::time::Instant,
    /// Whether an older queue's journal log, if there was one, is gone.
    retired_removed: bool,
}

impl Queue {
    /// Opens (creating if needed) the queue in `dir`, recovering its
    /// messages and consumer state. Blocking I/O.
    pub(crate) fn open(
        dir: &Path,
        spec: QueueSpec,
        storage: &StorageMetrics,
        on_fatal: OnFatal,
        counters: Counters,
    ) -> Result<Queue, QueueError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| QueueError::State(format!("create {}: {e}", dir.display())))?;
        let incarnation = incarnation(dir)?;
        let name = spec.name().to_owned();
        let messages = StreamLog::open(
            &dir.join("messages"),
            &format!("queue:{name}"),
            messages_config(&spec),
            storage,
            on_fatal.clone(),
        )?;
        let snapshot = journal::read_snapshot_in(dir, messages.stats().first_offset)
            .map_err(|e| QueueError::State(e.to_string()))?;
        let separate = snapshot.separate;
        let recovered = if separate {
            // An older queue, whose journal is a log of its own: read it
            // once; the snapshot below moves the state out of it.
            let log = StreamLog::open(
                &dir.join(journal::SEPARATE_LOG_DIR),
                &format!("queue:{name}:journal"),
                separate_journal_config(spec.fsync),
                storage,
                on_fatal,
            )?;
            journal::replay(snapshot, &log)
        } else {
            journal::replay(snapshot, &messages)
        }
        .map_err(|e| QueueError::State(e.to_string()))?;
        let queue = Queue {
            spec: RwLock::new(Arc::new(spec)),
            incarnation,
            dir: dir.to_owned(),
            state: tokio::sync::Mutex::new(State::new(false, 0)),
            messages,
            journal_records: Arc::default(),
            sent: tokio::sync::watch::Sender::new(0),
            woken: Notify::new(),
            dedup: Mutex::default(),
            counters,
            read_ahead: Mutex::new(None),
            compaction: tokio::sync::Mutex::new(Compaction {
                // Set below once the journal is where it belongs.
                journal_from: 0,
                at: std::time::Instant::now(),
                last_sweep: std::time::Instant::now(),
                retired_removed: false,
            }),
            modified_ms: AtomicI64::new(0),
        };
        let state = queue.rebuild(&recovered)?;
        {
            let mut journal_records = queue.journal_records();
            for &offset in &recovered.journal_records {
                journal_records.add(offset);
            }
            journal_records.pass(state.head());
        }
        let journal_from = if separate {
            queue.move_separate_journal(&state)?
        } else {
            recovered.journal_from
        };
        queue.messages.release_before(state.lwm().min(journal_from));
        queue
            .compaction
            .try_lock()
            .map_err(|_| QueueError::State("busy at open".into()))?
            .journal_from = journal_from;
        *queue
            .state
            .try_lock()
            .map_err(|_| QueueError::State("busy at open".into()))? = state;
        queue.restore_dedup()?;
        queue.update_gauges_blocking();
        Ok(queue)
    }

    /// The queue's definition now.
    pub fn spec(&self) -> Arc<QueueSpec> {
        Arc::clone(&self.spec.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the definition (attributes changed at run time). The log's
    /// retention follows.
    pub(crate) fn set_spec(&self, spec: QueueSpec) {
        self.messages
            .set_retention(messages_config(&spec).retention);
        *self.spec.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(spec);
        self.modified_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The queue's name.
    pub fn name(&self) -> String {
        self.spec().name().to_owned()
    }

    /// The queue's metric series.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True for the queue of this incarnation: a queue deleted and created
    /// again under the same name is another.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// When the queue was created, ms since the Unix epoch.
    pub fn created_ms(&self) -> i64 {
        file_time_ms(&self.dir.join(INCARNATION_FILE))
    }

    /// When its definition last changed, ms since the Unix epoch: a change
    /// since the queue was opened, else its creation (changes before a
    /// restart are not remembered).
    pub fn modified_ms(&self) -> i64 {
        match self.modified_ms.load(Ordering::Relaxed) {
            0 => self.created_ms(),
            ms => ms,
        }
    }

    /// Stops the log; later operations fail.
    pub(crate) async fn close(&self) {
        self.messages.close().await;
    }

    /// Checks a message for this queue: its size and FIFO fields.
    fn check(&self, spec: &QueueSpec, out: &Outgoing) -> Result<(), QueueError> {
        message::check_attributes(&out.attributes)?;
        let size = out.size();
        let max = spec.config.max_message_bytes.as_u64();
        if size as u64 > max {
            return Err(QueueError::TooLarge { size, max });
        }
        if spec.fifo {
            match out.group.as_deref() {
                None | Some("") => {
                    return Err(QueueError::invalid(
                        "MessageGroupId",
                        "a FIFO queue needs a MessageGroupId",
                    ));
                }
                Some(group) => check_fifo_id("MessageGroupId", group)?,
            }
            if let Some(id) = &out.dedup_id {
                check_fifo_id("MessageDeduplicationId", id)?;
            } else if !spec.config.content_based_dedup {
                return Err(QueueError::invalid(
                    "MessageDeduplicationId",
                    "the queue should either have content-based deduplication enabled or MessageDeduplicationId provided explicitly",
                ));
            }
            if out.delay.is_some_and(|d| !d.is_zero()) {
                return Err(QueueError::invalid(
                    "DelaySeconds",
                    "a FIFO queue sets its delay per queue, not per message",
                ));
            }
        } else if out.group.is_some() || out.dedup_id.is_some() {
            let name = if out.group.is_some() {
                "MessageGroupId"
            } else {
                "MessageDeduplicationId"
            };
            return Err(QueueError::invalid(
                name,
                "only FIFO queues (names ending in .fifo) take it",
            ));
        }
        if out.delay.is_some_and(|d| d > crate::config::MAX_DELAY) {
            return Err(QueueError::invalid(
                "DelaySeconds",
                "must be from 0 to 900 seconds",
            ));
        }
        Ok(())
    }

    /// Sends messages: checks each, queues every accepted one on the log
    /// in one go (so they share one group commit, one fsync), and answers
    /// each once it is durable.
    pub async fn send_batch(&self, batch: Vec<Outgoing>) -> Vec<Result<Sent, QueueError>> {
        let spec = self.spec();
        let now = now_ms();
        let steps: Vec<_> = batch
            .into_iter()
            .map(|out| self.prepare(&spec, out, now))
            .collect();
        let records = steps
            .iter()
            .filter_map(|step| match step {
                Ok(Step::Encoded { record, .. }) => Some(Arc::clone(record)),
                _ => None,
            })
            .collect();
        let (mut tickets, refused) = match self.messages.enqueue_all(records).await {
            Ok(tickets) => (tickets.into_iter(), None),
            Err(e) => (Vec::new().into_iter(), Some(e)),
        };
        let mut answers = Vec::with_capacity(steps.len());
        for step in steps {
            answers.push(match step {
                Err(e) => Err(e),
                Ok(Step::Duplicate(mut rx)) => {
                    self.counters.deduplicated.inc();
                    match rx.wait_for(Option::is_some).await {
                        Ok(sent) => Ok(Sent {
                            duplicate: true,
                            ..sent.clone().unwrap_or_else(unreachable_sent)
                        }),
                        Err(_) => Err(QueueError::State(
                            "the first send of this deduplication id failed; send again".into(),
                        )),
                    }
                }
                Ok(Step::Encoded { dedup_id, .. }) => match tickets.next() {
                    Some(ticket) => self.finish_send(&spec, ticket, dedup_id).await,
                    None => {
                        let e = refused.as_ref().map_or_else(
                            || tidewire_storage::StorageError::Internal("no append ticket".into()),
                            tidewire_storage::StorageError::duplicate,
                        );
                        self.send_failed(dedup_id, e)
                    }
                },
            });
        }
        answers
    }

    /// Sends one message.
    pub async fn send(&self, out: Outgoing) -> Result<Sent, QueueError> {
        self.send_batch(vec![out])
            .await
            .pop()
            .unwrap_or_else(|| Err(QueueError::State("no answer".into())))
    }

    /// Checks a message and encodes its record, or finds it a duplicate.
    fn prepare(&self, spec: &QueueSpec, out: Outgoing, now: i64) -> Result<Step, QueueError> {
        self.check(spec, &out)?;
        let dedup_id = if spec.fifo {
            let id = out
                .dedup_id
                .clone()
                .unwrap_or_else(|| dedup::content_id(&out.body));
            if let Check::Duplicate(rx) = self.dedup().check(&id, now) {
                return Ok(Step::Duplicate(rx));
            }
            Some(id)
        } else {
            None
        };
        let default_delay = spec.config.delay;
        let header = Header {
            attributes: out.attributes,
            group: out.group,
            // The id deduplicated by, the body's hash when content-based:
            // what a restart refills the window from.
            dedup_id: dedup_id.clone(),
            delay_ms: out
                .delay
                .filter(|d| *d != default_delay)
                .map(|d| d.as_millis() as u64),
            moved: None,
        };
        let record = message::encode("", &out.sender, Default::default(), &header, &out.body);
        Ok(Step::Encoded {
            record: Arc::new(record),
            dedup_id,
        })
    }

    /// A send whose record did not reach the log: its deduplication id is
    /// free again.
    fn send_failed(
        &self,
        dedup_id: Option<String>,
        e: tidewire_storage::StorageError,
    ) -> Result<Sent, QueueError> {
        if let Some(id) = &dedup_id {
            self.dedup().failed(id);
        }
        Err(e.into())
    }

    async fn finish_send(
        &self,
        spec: &QueueSpec,
        ticket: tidewire_storage::AppendTicket,
        dedup_id: Option<String>,
    ) -> Result<Sent, QueueError> {
        match ticket.await {
            Ok(appended) => {
                self.appended();
                self.counters.sent.inc();
                let sent = Sent {
                    message_id: message::message_id(self.incarnation, appended.offset),
                    sequence_number: spec.fifo.then(|| sequence_number(appended.offset)),
                    duplicate: false,
                };
                if let Some(id) = &dedup_id {
                    self.dedup().sent(id, sent.clone());
                }
                Ok(sent)
            }
            Err(e) => self.send_failed(dedup_id, e),
        }
    }

    /// Queues an MQTT publish (or any message of the publish path) whose
    /// topic this queue takes: the future resolves once it is durable.
    /// `None` when a FIFO queue drops it as a duplicate.
    pub(crate) async fn enqueue_publish(
        self: &Arc<Self>,
        published: &Message,
    ) -> Result<Option<futures_util::future::BoxFuture<'static, Result<(), QueueError>>>, QueueError>
    {
        let spec = self.spec();
        let group = spec
            .fifo
            .then(|| spec.group.render(&published.topic, &published.client_id));
        let size = published.payload.len();
        let max = spec.config.max_message_bytes.as_u64();
        if size as u64 > max {
            return Err(QueueError::TooLarge { size, max });
        }
        let dedup_id = if spec.fifo && spec.config.content_based_dedup {
            let id = dedup::content_id(&published.payload);
            if let Check::Duplicate(_) = self.dedup().check(&id, now_ms()) {
                self.counters.deduplicated.inc();
                return Ok(None);
            }
            Some(id)
        } else {
            None
        };
        let header = Header {
            group,
            dedup_id: dedup_id.clone(),
            ..Header::default()
        };
        let record = message::encode(
            &published.topic,
            &published.client_id,
            published.properties.clone(),
            &header,
            &published.payload,
        );
        let ticket = match self.messages.enqueue(Arc::new(record)).await {
            Ok(ticket) => ticket,
            Err(e) => {
                if let Some(id) = &dedup_id {
                    self.dedup().failed(id);
                }
                return Err(e.into());
            }
        };
        let queue = Arc::clone(self);
        Ok(Some(Box::pin(async move {
            queue.finish_send(&spec, ticket, dedup_id).await.map(|_| ())
        })))
    }

    /// Appends a message moved from another queue (dead letters, redrive),
    /// keeping its id, attributes and history. Durable when it resolves.
    pub(crate) async fn append_moved(
        &self,
        record: &Record,
        moved: Moved,
        keep_history: bool,
    ) -> Result<(), QueueError> {
        let (mut header, body) = message::decode(&record.message.payload);
        if !keep_history {
            header.moved = Some(Moved {
                receive_count: 0,
                first_receive_ms: 0,
                ..moved
            });
        } else {
            header.moved = Some(moved);
        }
        header.delay_ms = None;
        let message = message::encode(
            &record.message.topic,
            &record.message.client_id,
            record.message.properties.clone(),
            &header,
            &body,
        );
        self.messages.append(Arc::new(message)).await?;
        self.appended();
        self.counters.sent.inc();
        Ok(())
    }

    /// One receive pass: hands out up to `max` visible messages, hidden for
    /// `visibility`; messages over the dead-letter limit are set aside for
    /// the caller to move. Durable in the journal when it returns.
    /// With `move_all`, every message found is set aside to move (a
    /// redrive).
    pub(crate) async fn receive_pass(
        &self,
        max: usize,
        visibility: Duration,
        move_all: bool,
    ) -> Result<Pass, QueueError> {
        let spec = self.spec();
        let now = now_ms();
        let visible_at = now + (visibility.as_millis() as i64).max(1);
        let horizon = now - spec.config.retention.as_millis() as i64;
        let max_receives = spec
            .config
            .dead_letter
            .as_ref()
            .map(|d| d.max_receive_count);
        let mut pass = Pass::default();
        let mut changes = Vec::new();
        // Records read ahead in this pass, so they are not read twice.
        let mut fresh = BTreeMap::new();
        let mut state = self.state.lock().await;
        state.expire(now);
        let in_flight_limit = if spec.fifo {
            MAX_IN_FLIGHT_FIFO
        } else {
            MAX_IN_FLIGHT
        };
        if state.in_flight() >= in_flight_limit {
            return Err(QueueError::OverLimit(in_flight_limit));
        }
        while pass.delivered.len() + pass.dead_letters.len() < max
            && state.in_flight() < in_flight_limit
        {
            let want = max - pass.delivered.len() - pass.dead_letters.len();
            let candidates = state.candidates(want);
            if candidates.is_empty() {
                if self.read_ahead(&spec, &mut state, now, want as u64, &mut fresh)? {
                    continue;
                }
                break;
            }
            for offset in candidates {
                let record = match fresh.remove(&offset) {
                    Some(record) => Some(record),
                    None => self.read(offset)?,
                };
                let record = record.filter(|r: &Record| r.timestamp_ms >= horizon);
                let Some(record) = record else {
                    state.remove(offset);
                    changes.push(Change::Delete { offset });
                    self.counters.expired.inc();
                    continue;
                };
                let Some(tracked) = state.get(offset).cloned() else {
                    continue;
                };
                if move_all || max_receives.is_some_and(|limit| tracked.receive_count >= limit) {
                    let nonce = receipt::nonce();
                    state.receive(offset, nonce, now + MOVE_TIMEOUT_MS, now);
                    let (header, _) = message::decode(&record.message.payload);
                    let (id, sent_ms) = self.origin(&record, header.moved.as_ref());
                    pass.dead_letters.push(DeadLetter {
                        offset,
                        nonce,
                        moved: Moved {
                            from: spec.name().to_owned(),
                            id,
                            sent_ms,
                            receive_count: tracked.receive_count,
                            first_receive_ms: tracked.first_receive_ms,
                        },
                        record,
                    });
                    continue;
                }
                let nonce = receipt::nonce();
                state.receive(offset, nonce, visible_at, now);
                let Some(tracked) = state.get(offset).cloned() else {
                    continue;
                };
                changes.push(Change::Receive {
                    offset,
                    receipt: JournalReceipt {
                        nonce,
                        count: tracked.receive_count,
                        visible_at_ms: tracked.visible_at_ms,
                        first_receive_ms: tracked.first_receive_ms,
                    },
                });
                if tracked.receive_count > 1 {
                    self.counters.redelivered.inc();
                }
                pass.delivered
                    .push(self.delivered(&spec, record, offset, &tracked, nonce));
            }
        }
        let ticket = self.journal_changes(&changes, Wait::Written).await?;
        drop(state);
        if let Some(ticket) = ticket {
            ticket.landed().await?;
        }
        self.counters.received.inc_by(pass.delivered.len() as u64);
        Ok(pass)
    }

    /// Reads the next records from the log into the state. False when there
    /// is nothing more to read (or the look-ahead is full).
    fn read_ahead(
        &self,
        spec: &QueueSpec,
        state: &mut State,
        now: i64,
        want: u64,
        fresh: &mut BTreeMap<u64, Record>,
    ) -> Result<bool, QueueError> {
        let head = state.head();
        // Only records that are durable: a send committed beside a
        // receive's journal record is readable before its fsync.
        let end = self.messages.durable_offset();
        if head >= end || state.tracked_len() - state.in_flight() >= MAX_LOOKAHEAD {
            return Ok(false);
        }
        let horizon = now - spec.config.retention.as_millis() as i64;
        let mut last = None;
        let mut reader = lock(&self.read_ahead);
        if reader.as_ref().is_none_or(|r| r.next != head) {
            *reader = Some(ReadAhead::open(&self.messages, head, end));
        }
        let mut read = 0;
        while read < want.max(MIN_SCAN) {
            let Some(open) = reader.as_mut() else {
                break;
            };
            let record = match open.scan.next() {
                Some(Ok(record)) => record,
                Some(Err(e)) => {
                    *reader = None;
                    return Err(e.into());
                }
                // The scan has read what was durable when it opened: a
                // new one sees what came since, unless it was new itself.
                None if open.read_any => {
                    let end = self.messages.durable_offset();
                    *reader = Some(ReadAhead::open(&self.messages, open.next, end));
                    continue;
                }
                None => {
                    *reader = None;
                    break;
                }
            };
            open.next = record.offset + 1;
            open.read_any = true;
            last = Some(record.offset);
            if journal::is_journal(&record) {
                continue;
            }
            read += 1;
            if record.timestamp_ms < horizon {
                self.counters.expired.inc();
                continue;
            }
            let tracked = tracked_from(spec, &record, None);
            state.insert(record.offset, tracked, now);
            fresh.insert(record.offset, record);
        }
        // Records below the log's first one were dropped by retention.
        let first = self.messages.stats().first_offset;
        state.set_head(last.map_or(first.max(head), |o| o + 1));
        self.journal_records().pass(state.head());
        Ok(state.head() > head)
    }

    /// Deletes the message of a receipt handle. A handle of a message
    /// already deleted succeeds again; one of an older receive does not.
    pub async fn delete(&self, handle: &str) -> Result<(), QueueError> {
        self.delete_batch(&[handle])
            .await
            .pop()
            .unwrap_or_else(|| Err(QueueError::State("no answer".into())))
    }

    /// Deletes the messages of several receipt handles, with one journal
    /// record (one fsync) for all of them; answers each in order.
    pub async fn delete_batch(&self, handles: &[&str]) -> Vec<Result<(), QueueError>> {
        let mut answers = Vec::with_capacity(handles.len());
        let mut changes = Vec::with_capacity(handles.len());
        let ticket = {
            let mut state = self.state.lock().await;
            for handle in handles {
                answers.push(match self.receipt(handle) {
                    Err(e) => Err(e),
                    Ok(receipt) => match state.get(receipt.offset) {
                        Some(t) if t.nonce == receipt.nonce => {
                            state.remove(receipt.offset);
                            changes.push(Change::Delete {
                                offset: receipt.offset,
                            });
                            Ok(())
                        }
                        None if receipt.offset < state.head() => Ok(()),
                        _ => Err(QueueError::InvalidReceiptHandle((*handle).to_owned())),
                    },
                });
            }
            match self.journal_changes(&changes, Wait::Durable).await {
                Ok(ticket) => ticket,
                Err(e) => return fail_all(answers, &e),
            }
        };
        if let Some(ticket) = ticket
            && let Err(e) = ticket.landed().await
        {
            return fail_all(answers, &QueueError::from(e));
        }
        self.counters.deleted.inc_by(changes.len() as u64);
        answers
    }

    /// Changes how long the message of a receipt handle stays hidden,
    /// counted from now; zero makes it visible at once.
    pub async fn change_visibility(
        &self,
        handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        if timeout > crate::config::MAX_VISIBILITY {
            return Err(QueueError::invalid(
                "VisibilityTimeout",
                "must be from 0 to 43200 seconds (12 hours)",
            ));
        }
        let receipt = self.receipt(handle)?;
        let now = now_ms();
        let ticket = {
            let mut state = self.state.lock().await;
            state.expire(now);
            match state.get(receipt.offset) {
                Some(t) if t.nonce == receipt.nonce => {
                    if t.visible_at_ms <= now {
                        return Err(QueueError::NotInFlight);
                    }
                    let visible_at_ms = now + timeout.as_millis() as i64;
                    state.set_visible_at(receipt.offset, visible_at_ms, now);
                    self.journal_changes(
                        &[Change::Visibility {
                            offset: receipt.offset,
                            visible_at_ms,
                        }],
                        Wait::Durable,
                    )
                    .await?
                }
                Some(_) => return Err(QueueError::InvalidReceiptHandle(handle.to_owned())),
                None if receipt.offset < state.head() => return Err(QueueError::NotInFlight),
                None => return Err(QueueError::InvalidReceiptHandle(handle.to_owned())),
            }
        };
        if let Some(ticket) = ticket {
            ticket.landed().await?;
        }
        if timeout.is_zero() {
            self.woken.notify_waiters();
        }
        Ok(())
    }

    /// Up to `max` messages in queue order, without receiving them: those
    /// already looked at (with their receive history), then unread ones.
    /// Their receipt handles are empty. For people (the dashboard).
    pub async fn peek(&self, max: usize) -> Result<Vec<Delivered>, QueueError> {
        let spec = self.spec();
        let (tracked, head): (Vec<(u64, Tracked)>, u64) = {
            let state = self.state.lock().await;
            (
                state
                    .tracked()
                    .take(max)
                    .map(|(o, t)| (*o, t.clone()))
                    .collect(),
                state.head(),
            )
        };
        let mut out = Vec::with_capacity(max);
        for (offset, t) in tracked {
            if let Some(record) = self.read(offset)? {
                out.push(self.delivered(&spec, record, offset, &t, 0));
            }
        }
        let end = self.messages.next_offset();
        for record in self.scan_messages(head..end) {
            if out.len() >= max {
                break;
            }
            let record = record?;
            let offset = record.offset;
            let t = tracked_from(&spec, &record, None);
            out.push(self.delivered(&spec, record, offset, &t, 0));
        }
        for message in &mut out {
            message.receipt_handle.clear();
        }
        Ok(out)
    }

    /// Finishes a dead-letter or redrive move: the message is gone from
    /// here, if it is still the move's.
    pub(crate) async fn forget_moved(&self, offset: u64, nonce: u64) -> Result<(), QueueError> {
        let ticket = {
            let mut state = self.state.lock().await;
            if state.get(offset).is_none_or(|t| t.nonce != nonce) {
                return Ok(());
            }
            state.remove(offset);
            self.journal_changes(&[Change::Delete { offset }], Wait::Durable)
                .await?
        };
        if let Some(ticket) = ticket {
            ticket.landed().await?;
        }
        Ok(())
    }

    /// A move failed: the message becomes visible again now.
    pub(crate) async fn return_moved(&self, offset: u64, nonce: u64) {
        let now = now_ms();
        let mut state = self.state.lock().await;
        if state.get(offset).is_some_and(|t| t.nonce == nonce) {
            state.set_visible_at(offset, now, now);
        }
        drop(state);
        self.woken.notify_waiters();
    }

    /// Deletes every message in the queue now.
    pub async fn purge(&self) -> Result<(), QueueError> {
        let ticket = {
            let mut state = self.state.lock().await;
            let below = self.messages.next_offset();
            state.purge(below);
            self.journal_records().pass(below);
            self.journal_changes(&[Change::Purge { below }], Wait::Durable)
                .await?
        };
        if let Some(ticket) = ticket {
            ticket.landed().await?;
        }
        Ok(())
    }

    /// Waits until messages may be visible: a new record on `commits`, a
    /// wake-up on `woken` (both taken before the receive pass that found
    /// nothing), or the next hidden message coming due; at most until
    /// `deadline`.
    pub(crate) async fn wait_for_messages(
        &self,
        commits: &mut tokio::sync::watch::Receiver<u64>,
        woken: tokio::sync::futures::Notified<'_>,
        deadline: tokio::time::Instant,
    ) {
        let next_timer = self.state.lock().await.next_timer();
        let mut until = deadline;
        if let Some(at) = next_timer {
            let wait = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
            until = until.min(tokio::time::Instant::now() + wait);
        }
        tokio::select! {
            _ = commits.changed() => {}
            () = woken => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    /// New messages, watched from now (take it before a receive pass).
    pub(crate) fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sent.subscribe()
    }

    /// A message appended is in the log: wakes the long polls.
    fn appended(&self) {
        self.sent.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Early wake-ups, watched from now (take it before a receive pass).
    pub(crate) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.woken.notified()
    }

    /// How many messages are in each state.
    pub async fn depth(&self) -> Depth {
        let now = now_ms();
        let spec = self.spec();
        let (visible, in_flight, delayed, head, oldest_tracked) = {
            let mut state = self.state.lock().await;
            state.expire(now);
            let oldest = state.tracked().map(|(_, t)| t.sent_ms).min();
            (
                state.visible() as u64,
                state.in_flight() as u64,
                state.delayed() as u64,
                state.head(),
                oldest,
            )
        };
        let end = self.messages.next_offset();
        let first = self.messages.stats().first_offset;
        let unread_from = head.max(first);
        // Records, less the journal's among them.
        let messages_in = |from: u64| {
            let records = end.saturating_sub(from);
            records.saturating_sub(self.journal_records().count(from..end))
        };
        let unread = messages_in(unread_from);
        // Unread messages sent within the queue's delay are still delayed.
        let unread_delayed = if spec.config.delay.is_zero() || unread == 0 {
            0
        } else {
            let since = now - spec.config.delay.as_millis() as i64;
            let log = self.messages.clone();
            let from = tokio::task::spawn_blocking(move || log.offset_at_time(since))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(end);
            messages_in(from.max(unread_from))
        };
        let oldest_unread = if unread > 0 {
            self.scan_messages(unread_from..end)
                .find_map(Result::ok)
                .map(|r| r.timestamp_ms)
        } else {
            None
        };
        let oldest_sent_ms = match (oldest_tracked, oldest_unread) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Depth {
            visible: visible + unread - unread_delayed,
            in_flight,
            delayed: delayed + unread_delayed,
            oldest_sent_ms,
        }
    }

    /// Housekeeping, about once a second: gauges, retention of messages
    /// already looked at, and journal compaction.
    pub(crate) async fn housekeeping(&self) -> Result<(), QueueError> {
        let depth = self.depth().await;
        self.set_gauges(&depth);
        let mut compaction = self.compaction.lock().await;
        if !compaction.retired_removed {
            self.remove_retired_journal().await;
            compaction.retired_removed = true;
        }
        if compaction.last_sweep.elapsed() >= EXPIRY_SWEEP {
            compaction.last_sweep = std::time::Instant::now();
            self.expire_tracked().await?;
        }
        let grown = self
            .messages
            .next_offset()
            .saturating_sub(compaction.journal_from);
        if grown >= SNAPSHOT_EVERY_RECORDS
            || (grown > 0 && compaction.at.elapsed() >= SNAPSHOT_EVERY)
        {
            self.write_snapshot(&mut compaction).await?;
        }
        Ok(())
    }

    /// Writes a snapshot of the consumer state, and releases what replay
    /// no longer needs.
    async fn write_snapshot(&self, compaction: &mut Compaction) -> Result<(), QueueError> {
        let (bytes, journal_from, lwm) = {
            let state = self.state.lock().await;
            let (bytes, journal_from) = self.snapshot(&state);
            (bytes, journal_from, state.lwm())
        };
        let path = self.dir.join(journal::SNAPSHOT_FILE);
        tokio::task::spawn_blocking(move || tidewire_storage::durable_file::replace(&path, &bytes))
            .await
            .map_err(|e| QueueError::State(format!("snapshot task: {e}")))?
            .map_err(|e| QueueError::State(format!("writing the consumer snapshot: {e}")))?;
        // Replay starts at `journal_from` now: the records before it are
        // needed only as messages not yet gone.
        self.messages.release_before(lwm.min(journal_from));
        compaction.journal_from = journal_from;
        compaction.at = std::time::Instant::now();
        Ok(())
    }

    /// A snapshot of `state`, and the offset replay after it starts from:
    /// the log's end now, or the floor of a journal record whose append is
    /// unanswered (its offset is not listed yet). Changes committed after
    /// that are in the state already or replayed; both are the same
    /// (changes are idempotent, and replayed in the order they were made).
    fn snapshot(&self, state: &State) -> (Vec<u8>, u64) {
        let journal_records = self.journal_records();
        let journal_from = journal_records.replay_from(self.messages.next_offset());
        let bytes = journal::encode_snapshot(
            journal_from,
            state.head(),
            journal_records.offsets.iter().copied(),
            state
                .tracked()
                .map(|(offset, t)| snapshot_entry(*offset, t)),
        );
        (bytes, journal_from)
    }

    /// Moves an older queue's consumer state out of its journal log (read
    /// already, into `state`): a snapshot with replay starting at the
    /// messages log's end, then the journal log's directory goes, first
    /// renamed (its writer may still be stopping), then removed. Returns
    /// where replay starts. Blocking I/O.
    fn move_separate_journal(&self, state: &State) -> Result<u64, QueueError> {
        let (bytes, journal_from) = self.snapshot(state);
        tidewire_storage::durable_file::replace(&self.dir.join(journal::SNAPSHOT_FILE), &bytes)
            .map_err(|e| QueueError::State(format!("writing the consumer snapshot: {e}")))?;
        let old = self.dir.join(journal::SEPARATE_LOG_DIR);
        let moved = self.dir.join(RETIRED_JOURNAL_DIR);
        if let Err(e) = std::fs::rename(&old, &moved) {
            tracing::warn!(queue = %self.spec().name(), error = %e, "could not retire the old journal log");
        }
        tracing::info!(queue = %self.spec().name(), "moved the consumer journal into the messages log");
        Ok(journal_from)
    }

    /// Removes what is left of an older queue's journal log.
    async fn remove_retired_journal(&self) {
        let retired = [journal::SEPARATE_LOG_DIR, RETIRED_JOURNAL_DIR].map(|d| self.dir.join(d));
        for dir in retired {
            if dir.is_dir() {
                let result =
                    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
                if let Ok(Err(e)) = result {
                    tracing::warn!(queue = %self.spec().name(), error = %e, "could not remove the old journal log");
                }
            }
        }
    }

    /// Drops tracked messages older than the retention.
    async fn expire_tracked(&self) -> Result<(), QueueError> {
        let now = now_ms();
        let horizon = now - self.spec().config.retention.as_millis() as i64;
        let ticket = {
            let mut state = self.state.lock().await;
            let old: Vec<u64> = state
                .tracked()
                .filter(|(_, t)| t.sent_ms < horizon)
                .map(|(o, _)| *o)
                .collect();
            let mut changes = Vec::with_capacity(old.len());
            for offset in old {
                state.remove(offset);
                changes.push(Change::Delete { offset });
            }
            self.counters.expired.inc_by(changes.len() as u64);
            self.journal_changes(&changes, Wait::Durable).await?
        };
        if let Some(ticket) = ticket {
            ticket.landed().await?;
        }
        Ok(())
    }

    fn set_gauges(&self, depth: &Depth) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.counters.visible.set(gauge(depth.visible));
        self.counters.in_flight.set(gauge(depth.in_flight));
        self.counters.delayed.set(gauge(depth.delayed));
        self.counters.oldest_age_seconds.set(
            depth
                .oldest_sent_ms
                .map_or(0, |sent| (now_ms() - sent).max(0) / 1000),
        );
    }

    fn update_gauges_blocking(&self) {
        if let Ok(state) = self.state.try_lock() {
            let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            self.counters.in_flight.set(gauge(state.in_flight()));
            self.counters.delayed.set(gauge(state.delayed()));
        }
    }

    /// Appends a journal record of `changes` (called under the state lock,
    /// where they were made).
    async fn journal_changes(
        &self,
        changes: &[Change],
        wait: Wait,
    ) -> Result<Option<JournalTicket>, QueueError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let mut payload = Vec::with_capacity(changes.len() * 37);
        for change in changes {
            change.encode(&mut payload);
        }
        let record = Message {
            topic: journal::JOURNAL_TOPIC.to_owned(),
            payload: Bytes::from(payload),
            ..Message::default()
        };
        let record = Arc::new(record);
        let floor = Floor::note(&self.journal_records, self.messages.next_offset());
        let append = match wait {
            Wait::Durable => self.messages.enqueue(record).await?,
            Wait::Written => self.messages.enqueue_written(record).await?,
        };
        Ok(Some(JournalTicket {
            append: Some(append),
            floor,
        }))
    }

    fn journal_records(&self) -> MutexGuard<'_, JournalRecords> {
        lock(&self.journal_records)
    }

    fn receipt(&self, handle: &str) -> Result<Receipt, QueueError> {
        Receipt::decode(handle)
            .filter(|r| r.incarnation == self.incarnation)
            .ok_or_else(|| QueueError::InvalidReceiptHandle(handle.to_owned()))
    }

    /// The message at `offset`, if the log still has it (a journal record
    /// is none). Blocking I/O.
    pub(crate) fn read(&self, offset: u64) -> Result<Option<Record>, QueueError> {
        match self.scan_messages(offset..offset + 1).next() {
            Some(Ok(record)) if record.offset == offset => Ok(Some(record)),
            Some(Ok(_)) | None => Ok(None),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// The log's records in `range`, less the journal's: the messages.
    /// Blocking I/O.
    fn scan_messages(
        &self,
        range: std::ops::Range<u64>,
    ) -> impl Iterator<Item = Result<Record, StorageError>> + use<> {
        self.messages
            .scan(range)
            .filter(|record| !record.as_ref().is_ok_and(journal::is_journal))
    }

    /// A message's id and first send time: kept from the queue it moved
    /// from, else its own.
    fn origin(&self, record: &Record, moved: Option<&Moved>) -> (String, i64) {
        match moved {
            Some(m) => (m.id.clone(), m.sent_ms),
            None => (
                message::message_id(self.incarnation, record.offset),
                record.timestamp_ms,
            ),
        }
    }

    fn delivered(
        &self,
        spec: &QueueSpec,
        record: Record,
        offset: u64,
        tracked: &Tracked,
        nonce: u64,
    ) -> Delivered {
        let (header, body) = message::decode(&record.message.payload);
        let mut attributes = message::attributes_of_properties(&record.message.properties);
        attributes.extend(header.attributes);
        let moved = header.moved;
        let (message_id, sent_ms) = self.origin(&record, moved.as_ref());
        Delivered {
            message_id,
            receipt_handle: Receipt {
                incarnation: self.incarnation,
                offset,
                nonce,
            }
            .encode(),
            body,
            attributes,
            topic: record.message.topic,
            sender: record.message.client_id,
            sent_ms,
            receive_count: tracked.receive_count + moved.as_ref().map_or(0, |m| m.receive_count),
            first_receive_ms: moved
                .as_ref()
                .map(|m| m.first_receive_ms)
                .filter(|ms| *ms > 0)
                .unwrap_or(tracked.first_receive_ms),
            group: header.group,
            dedup_id: header.dedup_id,
            sequence_number: spec.fifo.then(|| sequence_number(offset)),
        }
    }

    fn dedup(&self) -> MutexGuard<'_, Dedup> {
        lock(&self.dedup)
    }

    /// Rebuilds the in-memory state from what recovery found, reading each
    /// tracked message's record. Blocking I/O.
    fn rebuild(&self, recovered: &journal::Recovered) -> Result<State, QueueError> {
        let spec = self.spec();
        let now = now_ms();
        let first = self.messages.stats().first_offset;
        let mut state = State::new(spec.fifo, recovered.head.max(first));
        let tracked = recovered
            .received
            .iter()
            .map(|(o, r)| (*o, Some(*r)))
            .chain(recovered.pending.iter().map(|o| (*o, None)));
        for (offset, receipt) in tracked {
            if let Some(record) = self.read(offset)? {
                state.insert(offset, tracked_from(&spec, &record, receipt), now);
            }
        }
        state.set_head(recovered.head.max(first));
        Ok(state)
    }

    /// Refills the deduplication window from the last five minutes of the
    /// log. Blocking I/O.
    fn restore_dedup(&self) -> Result<(), QueueError> {
        let spec = self.spec();
        if !spec.fifo {
            return Ok(());
        }
        let since = now_ms() - dedup::WINDOW_MS;
        let from = self.messages.offset_at_time(since)?;
        let mut dedup = self.dedup();
        for record in self.scan_messages(from..u64::MAX) {
            let record = record?;
            let (header, _) = message::decode(&record.message.payload);
            if header.moved.is_some() {
                continue;
            }
            if let Some(id) = header.dedup_id {
                dedup.restore(
                    id,
                    record.timestamp_ms,
                    Sent {
                        message_id: message::message_id(self.incarnation, record.offset),
                        sequence_number: Some(sequence_number(record.offset)),
                        duplicate: false,
                    },
                );
            }
        }
        Ok(())
    }
}

/// Every answer that was a success becomes `e`: the change they were part
/// of did not become durable.
fn fail_all(answers: Vec<Result<(), QueueError>>, e: &QueueError) -> Vec<Result<(), QueueError>> {
    answers
        .into_iter()
        .map(|a| a.and_then(|()| Err(QueueError::State(e.to_string()))))
        .collect()
}

/// The log scan that receives read new messages with. It stays open from
/// one receive to the next, so a backlog is read in the storage reader's
/// large sequential chunks (256 KiB) rather than one chunk per receive for
/// the ten or so records it wants: a fresh scan reads a whole chunk however
/// few records it yields. It is used only while it is exactly at the
/// state's head (anything that moves the head, such as a purge, makes the
/// next receive open a new one).
struct ReadAhead {
    scan: tidewire_storage::RecordScan,
    /// The offset after the last record it yielded (where it opened, before
    /// any).
    next: u64,
    /// True once it has yielded a record.
    read_any: bool,
}

impl ReadAhead {
    /// A scan of `from..end`.
    fn open(log: &StreamLog, from: u64, end: u64) -> ReadAhead {
        ReadAhead {
            scan: log.scan(from..end),
            next: from,
            read_any: false,
        }
    }
}

/// A send on its way to the log.
enum Step {
    /// Checked and encoded.
    Encoded {
        record: Arc<Message>,
        dedup_id: Option<String>,
    },
    Duplicate(tokio::sync::watch::Receiver<Option<Sent>>),
}

fn unreachable_sent() -> Sent {
    Sent {
        message_id: String::new(),
        sequence_number: None,
        duplicate: true,
    }
}

/// A mutex's guard, poisoned or not (a panic elsewhere does not stop the
/// queue).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn snapshot_entry(offset: u64, t: &Tracked) -> Change {
    if t.nonce == 0 {
        Change::Pending { offset }
    } else {
        Change::Receive {
            offset,
            receipt: JournalReceipt {
                nonce: t.nonce,
                count: t.receive_count,
                visible_at_ms: t.visible_at_ms,
                first_receive_ms: t.first_receive_ms,
            },
        }
    }
}

/// The state of a message read from the log, with its receive history if
/// it has one.
fn tracked_from(spec: &QueueSpec, record: &Record, receipt: Option<JournalReceipt>) -> Tracked {
    let (header, _) = message::decode(&record.message.payload);
    let delay_ms = header
        .delay_ms
        .map_or(spec.config.delay.as_millis() as i64, |d| d as i64);
    let group = spec
        .fifo
        .then(|| Arc::from(header.group.as_deref().unwrap_or("")));
    match receipt {
        Some(r) => Tracked {
            nonce: r.nonce,
            receive_count: r.count,
            first_receive_ms: r.first_receive_ms,
            visible_at_ms: r.visible_at_ms,
            sent_ms: record.timestamp_ms,
            group,
        },
        None => Tracked {
            nonce: 0,
            receive_count: 0,
            first_receive_ms: 0,
            visible_at_ms: record.timestamp_ms + delay_ms,
            sent_ms: record.timestamp_ms,
            group,
        },
    }
}

/// A FIFO group or deduplication id SQS would accept: 1 to 128
/// characters of ASCII letters, digits and punctuation.
fn check_fifo_id(name: &str, id: &str) -> Result<(), QueueError> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(QueueError::invalid(
            name,
            "must be 1 to 128 characters of letters, digits and punctuation",
        ));
    }
    Ok(())
}

/// A FIFO sequence number: the offset, as SQS's decimal string.
fn sequence_number(offset: u64) -> String {
    format!("{offset:020}")
}

const INCARNATION_FILE: &str = "queue.id";

/// The queue's random identity, made when its directory is.
fn incarnation(dir: &Path) -> Result<u64, QueueError> {
    let path = dir.join(INCARNATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map_err(|_| QueueError::State(format!("{} is damaged", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = fastrand::u64(1..);
            tidewire_storage::durable_file::replace(&path, format!("{id:016x}\n").as_bytes())
                .map_err(|e| QueueError::State(format!("write {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(QueueError::State(format!("read {}: {e}", path.display()))),
    }
}

fn file_time_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

fn messages_config(spec: &QueueSpec) -> LogConfig {
    LogConfig {
        fsync: spec.fsync,
        // Whole segments go once every message in them is past retention;
        // receives skip older messages before that.
        retention: Retention {
            max_age: Some(spec.config.retention),
            max_bytes: None,
        },
        segment_bytes: 16 * 1024 * 1024,
        segment_age: Duration::from_secs(600),
        ..LogConfig::default()
    }
}

/// The directory an older queue's journal log is renamed to before it is
/// removed.
const RETIRED_JOURNAL_DIR: &str = "journal.retired";

/// An older queue's journal log, as it was written.
fn separate_journal_config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        segment_bytes: 4 * 1024 * 1024,
        segment_age: Duration::from_secs(60),
        ..LogConfig::default()
    }
}

#[cfg(test)]
impl Queue {
    /// Journals the visibility the message of `handle` has already (a
    /// change that changes nothing) and waits for the record's write, but
    /// not for the answer to its append: the ticket is returned
    /// unanswered, as a request holds it before its answer comes.
    pub(crate) async fn journal_unanswered(
        &self,
        handle: &str,
    ) -> Result<impl Sized + use<>, QueueError> {
        let receipt = self.receipt(handle)?;
        let (ticket, end) = {
            let state = self.state.lock().await;
            let visible_at_ms = state
                .get(receipt.offset)
                .map(|t| t.visible_at_ms)
                .ok_or(QueueError::NotInFlight)?;
            let change = Change::Visibility {
                offset: receipt.offset,
                visible_at_ms,
            };
            let end = self.messages.next_offset();
            (self.journal_changes(&[change], Wait::Written).await?, end)
        };
        // Nothing else appends meanwhile: the next record is this one.
        for _ in 0..5_000 {
            if self.messages.next_offset() > end {
                return Ok(ticket);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(QueueError::State(
            "the journal record was not written".into(),
        ))
    }

    /// Writes a snapshot of the consumer state now.
    pub(crate) async fn snapshot_now(&self) -> Result<(), QueueError> {
        self.write_snapshot(&mut *self.compaction.lock().await)
            .await
    }
}

/// What a change to the consumer state waits for before it is answered.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The queue's fsync policy: deletes, visibility changes, purges, moves.
    Durable,
    /// The journal record's write, not its fsync: receives. A crash of the process
    /// loses nothing; a crash of the machine can lose the last receives, so
    /// their messages are visible again early (received at least once, as
    /// SQS has it), while an acknowledged delete always stays deleted.
    Written,
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
