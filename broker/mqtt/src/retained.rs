//! Retained messages, kept durably.
//!
//! Every retained publish is appended to a log of its own
//! (`DATA_DIR/mqtt/retained`, the same storage engine as the streams, fsync
//! `always`) before the publisher is acknowledged; an empty payload deletes
//! the topic's retained message. At start-up the log is replayed into a
//! map, and rewritten with only the live messages when it has grown to more
//! than twice their number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidewire_core::topic;
use tidewire_core::{Message, StorageError};
use tidewire_storage::{LogConfig, OnFatal, StorageMetrics, StreamLog};

use crate::metrics::MqttMetrics;

const STREAM: &str = "mqtt-retained";
const COMPACTING: &str = "retained.compacting";
const OLD: &str = "retained.old";
/// Rewrite the log at start-up when it holds more than this many records
/// beyond twice the live ones.
const COMPACT_SLACK: u64 = 1000;

/// A retained message and when it was stored.
#[derive(Debug, Clone)]
pub struct Retained {
    /// The message.
    pub message: Arc<Message>,
    /// Broker time it was stored, ms since the epoch.
    pub stored_ms: i64,
    offset: u64,
}

impl Retained {
    /// True when its Message Expiry Interval has passed.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.message
            .properties
            .message_expiry_secs
            .is_some_and(|secs| self.stored_ms + i64::from(secs) * 1000 <= now_ms)
    }

    /// Seconds of its expiry interval left.
    pub fn remaining_secs(&self, now_ms: i64) -> Option<u32> {
        self.message.properties.message_expiry_secs.map(|secs| {
            let left = self.stored_ms + i64::from(secs) * 1000 - now_ms;
            u32::try_from(left.max(0) / 1000).unwrap_or(0)
        })
    }
}

/// The retained-message store.
#[derive(Debug)]
pub struct RetainedStore {
    log: StreamLog,
    messages: RwLock<BTreeMap<String, Retained>>,
    metrics: MqttMetrics,
}

impl RetainedStore {
    /// Opens (and if worthwhile compacts) the store under `dir`. Blocking.
    pub fn open(
        dir: &Path,
        storage_metrics: &StorageMetrics,
        metrics: MqttMetrics,
        on_fatal: OnFatal,
    ) -> Result<RetainedStore, StorageError> {
        let live_dir = dir.join("retained");
        finish_interrupted_compaction(dir, &live_dir)?;
        let open = |path: &Path| {
            StreamLog::open(
                path,
                STREAM,
                LogConfig::default(),
                storage_metrics,
                on_fatal.clone(),
            )
        };
        let log = open(&live_dir)?;
        let messages = replay(&log)?;
        let log = if log.stats().records > 2 * messages.len() as u64 + COMPACT_SLACK {
            compact(log, &messages, dir, &live_dir, open)?
        } else {
            log
        };
        let messages = replay(&log)?;
        metrics.retained.set(messages.len() as i64);
        Ok(RetainedStore {
            log,
            messages: RwLock::new(messages),
            metrics,
        })
    }

    /// Stores (or, with an empty payload, deletes) the retained message for
    /// its topic. Resolves once durable.
    pub async fn set(&self, message: Arc<Message>) -> Result<(), StorageError> {
        let appended = self.log.append(Arc::clone(&message)).await?;
        let mut messages = self.messages.write().unwrap_or_else(|p| p.into_inner());
        let newer = messages
            .get(&message.topic)
            .is_none_or(|r| r.offset < appended.offset);
        if newer {
            if message.payload.is_empty() {
                messages.remove(&message.topic);
            } else {
                messages.insert(
                    message.topic.clone(),
                    Retained {
                        message,
                        stored_ms: appended.timestamp_ms,
                        offset: appended.offset,
                    },
                );
            }
        }
        self.metrics.retained.set(messages.len() as i64);
        Ok(())
    }

    /// The unexpired retained messages whose topics match `filter`.
    pub fn matching(&self, filter: &str) -> Vec<Retained> {
        let now = now_ms();
        self.messages
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(topic, r)| topic::matches(filter, topic) && !r.expired(now))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.messages
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Syncs and closes the log.
    pub async fn close(&self) {
        self.log.close().await;
    }
}

fn replay(log: &StreamLog) -> Result<BTreeMap<String, Retained>, StorageError> {
    let mut messages = BTreeMap::new();
    for record in log.scan(0..u64::MAX) {
        let record = record?;
        let topic = record.message.topic.clone();
        if record.message.payload.is_empty() {
            messages.remove(&topic);
        } else {
            messages.insert(
                topic,
                Retained {
                    message: Arc::new(record.message),
                    stored_ms: record.timestamp_ms,
                    offset: record.offset,
                },
            );
        }
    }
    Ok(messages)
}

/// Completes or undoes a compaction that a crash interrupted. The fresh
/// log is complete before the live one is moved aside, so if the live one
/// is missing, the fresh one (or else the moved-aside one) is the data.
fn finish_interrupted_compaction(dir: &Path, live_dir: &Path) -> Result<(), StorageError> {
    let fresh_dir = dir.join(COMPACTING);
    let old_dir = dir.join(OLD);
    if !live_dir.exists() {
        let survivor = if fresh_dir.exists() && old_dir.exists() {
            &fresh_dir
        } else {
            &old_dir
        };
        if survivor.exists() {
            std::fs::rename(survivor, live_dir)
                .map_err(|e| StorageError::io("rename", survivor, e))?;
        }
    }
    for leftover in [&fresh_dir, &old_dir] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)
                .map_err(|e| StorageError::io("remove", leftover, e))?;
        }
    }
    Ok(())
}

/// Writes the live messages to a fresh log and swaps it in with renames,
/// so a crash at any point leaves one complete log.
fn compact(
    old: StreamLog,
    messages: &BTreeMap<String, Retained>,
    dir: &Path,
    live_dir: &Path,
    open: impl Fn(&Path) -> Result<StreamLog, StorageError>,
) -> Result<StreamLog, StorageError> {
    let fresh_dir = dir.join(COMPACTING);
    let old_dir: PathBuf = dir.join(OLD);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StorageError::io("start compaction of", &fresh_dir, e))?;
    runtime.block_on(async {
        old.close().await;
        let fresh = open(&fresh_dir)?;
        for retained in messages.values() {
            fresh.append(Arc::clone(&retained.message)).await?;
        }
        fresh.close().await;
        Ok::<_, StorageError>(())
    })?;
    let _ = std::fs::remove_dir_all(&old_dir);
    std::fs::rename(live_dir, &old_dir).map_err(|e| StorageError::io("rename", live_dir, e))?;
    std::fs::rename(&fresh_dir, live_dir).map_err(|e| StorageError::io("rename", &fresh_dir, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync", dir, e))?;
    std::fs::remove_dir_all(&old_dir).map_err(|e| StorageError::io("remove", &old_dir, e))?;
    tracing::info!(live = messages.len(), "compacted the retained-message log");
    open(live_dir)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(i64::MAX)
}
