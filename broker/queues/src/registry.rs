//! All queues: opening them at start-up, creating, changing and deleting
//! them at run time through the catalog (section `queues` of
//! `DATA_DIR/catalog.json`, the same crash-safe order as streams), routing
//! published messages into them by topic, receiving with long polls and
//! dead-letter moves, and redrive tasks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tidewire_core::{
    Catalog, CatalogError, Enqueue, Message, Origin, PublishError, QueuedAppend, Source,
};
use tidewire_storage::{OnFatal, StorageMetrics};

use crate::config::{MAX_RECEIVE_WAIT, MAX_VISIBILITY, QueueConfig, QueueSpec};
use crate::error::QueueError;
use crate::message::{Delivered, Header, Moved};
use crate::metrics::QueueMetrics;
use crate::moves::{MoveTask, MoveTasks};
use crate::queue::{DeadLetter, MAX_RECEIVE, Queue};

/// What the messages call a queue.
const KIND: &str = "queue";
/// The catalog file's section for queues.
const SECTION: &str = "queues";
/// Default most queues (config and API together).
pub const DEFAULT_MAX_QUEUES: usize = 1000;
/// How often each queue's housekeeping runs.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// A receive's options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveOptions {
    /// At most this many messages (1 to 10; default 1).
    pub max: Option<usize>,
    /// Long poll: wait this long for a first message (at most 20 s;
    /// default the queue's `receive_wait`).
    pub wait: Option<Duration>,
    /// Hide the received messages this long (default the queue's).
    pub visibility: Option<Duration>,
}

/// The open queues, by name.
#[derive(Debug, Default)]
struct Open {
    queues: BTreeMap<String, Arc<Queue>>,
    origins: BTreeMap<String, Origin>,
}

/// All queues. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    dir: PathBuf,
    storage: StorageMetrics,
    on_fatal: OnFatal,
    metrics: QueueMetrics,
    max_queues: usize,
    open: RwLock<Arc<Open>>,
    /// True when some queue takes published messages: the publish path's
    /// check when none does is one load.
    fed_by_topics: AtomicBool,
    changes: tokio::sync::Mutex<()>,
    tasks: Mutex<MoveTasks>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("dir", &self.dir)
            .field("max_queues", &self.max_queues)
            .finish_non_exhaustive()
    }
}

impl Queues {
    /// Opens every queue the config defines and the catalog holds,
    /// finishing deletions a crash interrupted, and starts their
    /// housekeeping. Blocking: call it at start-up, from a runtime.
    pub fn open(
        catalog: Catalog,
        configs: &[QueueConfig],
        storage: StorageMetrics,
        on_fatal: OnFatal,
        metrics: QueueMetrics,
        max_queues: usize,
    ) -> Result<Queues, QueueError> {
        let dir = catalog.data_dir().join("queues");
        for name in catalog.file().deleting(SECTION) {
            catalog.discard(&dir.join(&name)).map_err(|e| {
                QueueError::State(format!("finishing the deletion of queue {name:?}: {e}"))
            })?;
            catalog.file().end_delete(SECTION, &name)?;
        }
        let mut specs: Vec<(QueueSpec, Origin)> = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let spec = config
                .validate(&format!("queues[{i}]"))
                .map_err(CatalogError::from)?;
            if specs.iter().any(|(s, _)| s.name() == spec.name()) {
                return Err(CatalogError::from(tidewire_core::ConfigError::new(
                    format!("queues[{i}].name"),
                    format!("a queue named {:?} is defined twice", spec.name()),
                ))
                .into());
            }
            specs.push((spec, Origin::Config));
        }
        for (name, value) in catalog.file().entries(SECTION) {
            if specs.iter().any(|(s, _)| s.name() == name) {
                tracing::warn!(queue = %name, "the config file defines this queue; its catalog entry is not used");
                continue;
            }
            let config: QueueConfig =
                serde_json::from_value(value).map_err(|e| CatalogError::Damaged {
                    path: catalog.file().path().to_owned(),
                    reason: format!("queue {name:?}: {e}"),
                })?;
            let spec = config
                .validate(&format!("catalog queues.{name}"))
                .map_err(CatalogError::from)?;
            specs.push((spec, Origin::Api));
        }
        for (i, (spec, _)) in specs.iter().enumerate() {
            if let Some(dl) = &spec.config.dead_letter
                && !specs.iter().any(|(s, _)| s.name() == dl.queue)
            {
                return Err(CatalogError::from(tidewire_core::ConfigError::new(
                    format!("queues[{i}].dead_letter.queue"),
                    format!("no queue named {:?}", dl.queue),
                ))
                .into());
            }
        }
        let mut open = Open::default();
        for (spec, origin) in specs {
            let name = spec.name().to_owned();
            let queue = Queue::open(
                &dir.join(&name),
                spec,
                &storage,
                on_fatal.clone(),
                metrics.for_queue(&name),
            )?;
            open.queues.insert(name.clone(), Arc::new(queue));
            open.origins.insert(name, origin);
        }
        let queues = Queues {
            inner: Arc::new(Inner {
                catalog,
                dir,
                storage,
                on_fatal,
                metrics,
                max_queues,
                fed_by_topics: AtomicBool::new(fed_by_topics(&open)),
                open: RwLock::new(Arc::new(open)),
                changes: tokio::sync::Mutex::new(()),
                tasks: Mutex::default(),
            }),
        };
        queues.spawn_housekeeping();
        Ok(queues)
    }

    fn spawn_housekeeping(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let open = Queues { inner }.snapshot();
                for queue in open.queues.values() {
                    if let Err(e) = queue.housekeeping().await {
                        tracing::warn!(queue = %queue.name(), error = %e, "queue housekeeping failed");
                    }
                }
            }
        });
    }

    fn snapshot(&self) -> Arc<Open> {
        Arc::clone(&self.inner.open.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn replace(&self, edit: impl FnOnce(&mut Open)) {
        let mut current = self.inner.open.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Open {
            queues: current.queues.clone(),
            origins: current.origins.clone(),
        };
        edit(&mut next);
        self.inner
            .fed_by_topics
            .store(fed_by_topics(&next), Ordering::Relaxed);
        *current = Arc::new(next);
    }

    /// The queue called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Queue>, QueueError> {
        self.snapshot()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(name.to_owned()))
    }

    /// Every queue, by name.
    pub fn list(&self) -> Vec<Arc<Queue>> {
        self.snapshot().queues.values().cloned().collect()
    }

    /// Where a queue's definition comes from.
    pub fn origin(&self, name: &str) -> Option<Origin> {
        self.snapshot().origins.get(name).copied()
    }

    /// The queues whose dead-letter queue is `name`.
    pub fn dead_letter_sources(&self, name: &str) -> Vec<String> {
        self.snapshot()
            .queues
            .values()
            .filter(|q| {
                q.spec()
                    .config
                    .dead_letter
                    .as_ref()
                    .is_some_and(|d| d.queue == name)
            })
            .map(|q| q.name())
            .collect()
    }

    /// Creates a queue. A queue of that name with the same definition is
    /// answered as created (`false`: it existed), as SQS does.
    pub async fn create(&self, config: QueueConfig) -> Result<(Arc<Queue>, bool), QueueError> {
        let spec = config.validate("queue").map_err(CatalogError::from)?;
        let _change = self.inner.changes.lock().await;
        let open = self.snapshot();
        if let Some(existing) = open.queues.get(spec.name()) {
            if existing.spec().config == spec.config {
                return Ok((Arc::clone(existing), false));
            }
            return Err(CatalogError::Exists {
                kind: KIND,
                name: spec.name().to_owned(),
            }
            .into());
        }
        self.check_dead_letter(&spec, &open)?;
        if open.queues.len() >= self.inner.max_queues {
            return Err(CatalogError::LimitReached {
                kind: KIND,
                max: self.inner.max_queues,
                key: "limits.max_queues",
            }
            .into());
        }
        let name = spec.name().to_owned();
        let dir = self.inner.dir.join(&name);
        if dir.exists() {
            return Err(CatalogError::LeftoverData { path: dir }.into());
        }
        let definition = serde_json::to_value(&spec.config)
            .map_err(|e| QueueError::State(format!("encoding the definition: {e}")))?;
        let file = self.inner.catalog.clone();
        let key = name.clone();
        blocking(move || {
            file.file()
                .put(SECTION, &key, definition)
                .map_err(QueueError::from)
        })
        .await?;
        let (storage, on_fatal) = (self.inner.storage.clone(), self.inner.on_fatal.clone());
        let counters = self.inner.metrics.for_queue(&name);
        let opened = blocking(move || Queue::open(&dir, spec, &storage, on_fatal, counters)).await;
        let queue = match opened {
            Ok(queue) => Arc::new(queue),
            Err(e) => {
                let file = self.inner.catalog.clone();
                let key = name.clone();
                let _ =
                    blocking(move || file.file().remove(SECTION, &key).map_err(QueueError::from))
                        .await;
                return Err(e);
            }
        };
        self.replace(|open| {
            open.queues.insert(name.clone(), Arc::clone(&queue));
            open.origins.insert(name.clone(), Origin::Api);
        });
        tracing::info!(queue = %name, "queue created");
        Ok((queue, true))
    }

    /// Replaces the definition of a queue created through the API (its
    /// name stays).
    pub async fn update(&self, config: QueueConfig) -> Result<Arc<Queue>, QueueError> {
        let spec = config.validate("queue").map_err(CatalogError::from)?;
        let _change = self.inner.changes.lock().await;
        let open = self.snapshot();
        let name = spec.name().to_owned();
        let queue = open
            .queues
            .get(&name)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(name.clone()))?;
        if open.origins.get(&name) == Some(&Origin::Config) {
            return Err(CatalogError::DefinedInConfig { kind: KIND, name }.into());
        }
        self.check_dead_letter(&spec, &open)?;
        let definition = serde_json::to_value(&spec.config)
            .map_err(|e| QueueError::State(format!("encoding the definition: {e}")))?;
        let file = self.inner.catalog.clone();
        let key = name.clone();
        blocking(move || {
            file.file()
                .put(SECTION, &key, definition)
                .map_err(QueueError::from)
        })
        .await?;
        queue.set_spec(spec);
        // The routes by topic may have changed.
        self.replace(|_| {});
        Ok(queue)
    }

    /// Deletes a queue created through the API, with its messages.
    pub async fn delete(&self, name: &str) -> Result<(), QueueError> {
        let _change = self.inner.changes.lock().await;
        let open = self.snapshot();
        let queue = open
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(name.to_owned()))?;
        if open.origins.get(name) == Some(&Origin::Config) {
            return Err(CatalogError::DefinedInConfig {
                kind: KIND,
                name: name.to_owned(),
            }
            .into());
        }
        let sources = self.dead_letter_sources(name);
        if !sources.is_empty() {
            return Err(CatalogError::InUse {
                kind: KIND,
                name: name.to_owned(),
                by: sources
                    .iter()
                    .map(|s| format!("queue {s:?} (dead_letter)"))
                    .collect(),
            }
            .into());
        }
        let catalog = self.inner.catalog.clone();
        let key = name.to_owned();
        blocking(move || {
            catalog
                .file()
                .begin_delete(SECTION, &key)
                .map_err(QueueError::from)
        })
        .await?;
        self.replace(|open| {
            open.queues.remove(name);
            open.origins.remove(name);
        });
        queue.close().await;
        let catalog = self.inner.catalog.clone();
        let (key, dir) = (name.to_owned(), queue.dir().to_owned());
        blocking(move || {
            catalog
                .discard(&dir)
                .map_err(|e| QueueError::State(format!("removing {}: {e}", dir.display())))?;
            catalog
                .file()
                .end_delete(SECTION, &key)
                .map_err(QueueError::from)
        })
        .await?;
        self.inner.metrics.remove(name);
        tracing::info!(queue = %name, "queue deleted");
        Ok(())
    }

    fn check_dead_letter(&self, spec: &QueueSpec, open: &Open) -> Result<(), QueueError> {
        if let Some(dl) = &spec.config.dead_letter
            && !open.queues.contains_key(&dl.queue)
        {
            return Err(QueueError::invalid(
                "dead_letter.queue",
                format!("no queue named {:?}", dl.queue),
            ));
        }
        Ok(())
    }

    /// Receives up to `max` messages, waiting up to the long poll for a
    /// first one; messages past the dead-letter limit move on the way.
    pub async fn receive(
        &self,
        name: &str,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivered>, QueueError> {
        let queue = self.get(name)?;
        let spec = queue.spec();
        let max = options.max.unwrap_or(1);
        if max == 0 || max > MAX_RECEIVE {
            return Err(QueueError::invalid(
                "MaxNumberOfMessages",
                "must be from 1 to 10",
            ));
        }
        let wait = options.wait.unwrap_or(spec.config.receive_wait);
        if wait > MAX_RECEIVE_WAIT {
            return Err(QueueError::invalid(
                "WaitTimeSeconds",
                "must be from 0 to 20 seconds",
            ));
        }
        let visibility = options.visibility.unwrap_or(spec.config.visibility_timeout);
        if visibility > MAX_VISIBILITY {
            return Err(QueueError::invalid(
                "VisibilityTimeout",
                "must be from 0 to 43200 seconds (12 hours)",
            ));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = queue.commits();
        loop {
            commits.borrow_and_update();
            let woken = queue.woken();
            let pass = queue.receive_pass(max, visibility, false).await?;
            self.move_dead_letters(&queue, pass.dead_letters).await;
            if !pass.delivered.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(pass.delivered);
            }
            queue.wait_for_messages(&mut commits, woken, deadline).await;
        }
    }

    async fn move_dead_letters(&self, queue: &Queue, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        let target = queue
            .spec()
            .config
            .dead_letter
            .as_ref()
            .map(|d| d.queue.clone());
        for letter in letters {
            let moved = match target.as_deref().map(|t| self.get(t)) {
                Some(Ok(dlq)) => {
                    dlq.append_moved(&letter.record, letter.moved.clone(), true)
                        .await
                }
                Some(Err(e)) => Err(e),
                None => Err(QueueError::State(
                    "the queue has no dead-letter queue".into(),
                )),
            };
            self.finish_move(queue, &letter, moved, "dead-letter").await;
        }
    }

    /// Forgets a moved message at its source, or puts it back if the move
    /// failed.
    pub(crate) async fn finish_move(
        &self,
        queue: &Queue,
        letter: &DeadLetter,
        moved: Result<(), QueueError>,
        what: &str,
    ) -> bool {
        match moved {
            Ok(()) => {
                if let Err(e) = queue.forget_moved(letter.offset, letter.nonce).await {
                    tracing::warn!(queue = %queue.name(), error = %e, "{what} move: the message reached its new queue but is not yet forgotten here");
                }
                if what == "dead-letter" {
                    queue.counters().dead_lettered.inc();
                }
                true
            }
            Err(e) => {
                tracing::warn!(queue = %queue.name(), error = %e, "{what} move failed; the message stays");
                queue.return_moved(letter.offset, letter.nonce).await;
                false
            }
        }
    }

    /// Starts moving the messages of `source` (a dead-letter queue) back to
    /// the queues they came from, or to `destination`; at most
    /// `per_second` a second. Answers the task's handle.
    pub fn start_move(
        &self,
        source: &str,
        destination: Option<&str>,
        per_second: Option<u32>,
    ) -> Result<String, QueueError> {
        let queue = self.get(source)?;
        if let Some(destination) = destination {
            let target = self.get(destination)?;
            if target.spec().fifo != queue.spec().fifo {
                return Err(QueueError::invalid(
                    "DestinationArn",
                    "the destination must be of the same type (FIFO or standard) as the source",
                ));
            }
        } else if self.dead_letter_sources(source).is_empty() {
            return Err(QueueError::invalid(
                "SourceArn",
                "the source queue is not a dead-letter queue of any queue; name a destination",
            ));
        }
        if per_second.is_some_and(|n| n == 0 || n > 500) {
            return Err(QueueError::invalid(
                "MaxNumberOfMessagesPerSecond",
                "must be from 1 to 500",
            ));
        }
        let task = MoveTask::new(source, destination, per_second);
        let handle = self.tasks().start(task.clone())?;
        let queues = self.clone();
        tokio::spawn(async move { queues.run_move(queue, task).await });
        Ok(handle)
    }

    async fn run_move(&self, queue: Arc<Queue>, task: Arc<MoveTask>) {
        let depth = queue.depth().await;
        task.set_to_move(depth.visible);
        let pause = task
            .per_second()
            .map(|n| Duration::from_secs_f64(1.0 / f64::from(n)));
        while !task.is_cancelled() {
            let batch = if pause.is_some() { 1 } else { MAX_RECEIVE };
            let pass = match queue
                .receive_pass(batch, Duration::from_secs(60), true)
                .await
            {
                Ok(pass) => pass,
                Err(e) => {
                    task.fail(e.to_string());
                    return;
                }
            };
            if pass.dead_letters.is_empty() {
                break;
            }
            for letter in pass.dead_letters {
                let moved = self.move_back(&task, &letter).await;
                if self.finish_move(&queue, &letter, moved, "redrive").await {
                    task.moved_one();
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
        }
        task.finish();
    }

    async fn move_back(&self, task: &MoveTask, letter: &DeadLetter) -> Result<(), QueueError> {
        let (header, _) = crate::message::decode(&letter.record.message.payload);
        let target = match (task.destination(), header_source(&header)) {
            (Some(destination), _) => destination.to_owned(),
            (None, Some(from)) => from,
            (None, None) => {
                return Err(QueueError::invalid(
                    "DestinationArn",
                    "the message was not moved here from another queue; name a destination",
                ));
            }
        };
        self.get(&target)?
            .append_moved(&letter.record, letter.moved.clone(), false)
            .await
    }

    /// The move tasks of `source`, newest first.
    pub fn move_tasks(&self, source: &str) -> Vec<Arc<MoveTask>> {
        self.tasks().of(source)
    }

    /// Cancels a running move task.
    pub fn cancel_move(&self, handle: &str) -> Result<Arc<MoveTask>, QueueError> {
        self.tasks().cancel(handle)
    }

    fn tasks(&self) -> MutexGuard<'_, MoveTasks> {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every queue's logs (at shutdown).
    pub async fn close(&self) {
        for queue in self.list() {
            queue.close().await;
        }
    }
}

fn fed_by_topics(open: &Open) -> bool {
    open.queues.values().any(|q| !q.spec().from.is_empty())
}

fn header_source(header: &Header) -> Option<String> {
    header.moved.as_ref().map(|m: &Moved| m.from.clone())
}

/// The publish path's way into the queues ([`Queues::publish_routes`]).
/// It holds them weakly: the broker holds it, and the queues hold the
/// broker (through the catalog).
struct TopicRoutes {
    inner: Weak<Inner>,
}

impl TopicRoutes {
    fn queues(&self) -> Option<Queues> {
        self.inner.upgrade().map(|inner| Queues { inner })
    }
}

impl Enqueue for TopicRoutes {
    fn takes(&self, topic: &str, _source: Source) -> bool {
        self.queues().is_some_and(|queues| queues.takes(topic))
    }

    fn enqueue<'a>(
        &'a self,
        message: &'a Arc<Message>,
        _source: Source,
    ) -> BoxFuture<'a, Result<Vec<QueuedAppend>, PublishError>> {
        match self.queues() {
            Some(queues) => Box::pin(async move { queues.enqueue(message).await }),
            None => Box::pin(async { Ok(Vec::new()) }),
        }
    }
}

impl Queues {
    /// What the broker's publish path calls to feed queues by topic
    /// ([`tidewire_core::Broker::set_routes`]).
    pub fn publish_routes(&self) -> Arc<dyn Enqueue> {
        Arc::new(TopicRoutes {
            inner: Arc::downgrade(&self.inner),
        })
    }

    fn takes(&self, topic: &str) -> bool {
        self.inner.fed_by_topics.load(Ordering::Relaxed)
            && self
                .snapshot()
                .queues
                .values()
                .any(|q| q.spec().takes(topic))
    }

    async fn enqueue(&self, message: &Arc<Message>) -> Result<Vec<QueuedAppend>, PublishError> {
        let mut queued: Vec<QueuedAppend> = Vec::new();
        for queue in self.snapshot().queues.values() {
            if !queue.spec().takes(&message.topic) {
                continue;
            }
            let name = queue.name();
            let queued_here = queue
                .enqueue_publish(message)
                .await
                .map_err(|e| refusal(&name, &e))?;
            if let Some(durable) = queued_here {
                queued.push(Box::pin(async move {
                    durable.await.map_err(|e| refusal(&name, &e))
                }));
            }
        }
        Ok(queued)
    }
}

/// A queue's refusal as the publish path reports it.
fn refusal(queue: &str, e: &QueueError) -> PublishError {
    PublishError::Queue {
        queue: queue.to_owned(),
        client_error: e.is_user_error(),
        message: e.to_string(),
    }
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| QueueError::State(format!("queue task: {e}")))?
}
