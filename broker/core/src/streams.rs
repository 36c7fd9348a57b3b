//! The open streams. The publish path routes by a snapshot of them
//! ([`StreamSet`]) that is swapped whole when the catalog adds, changes or
//! removes a stream, so a publish never waits for a change; and the holds
//! that keep a stream somebody reads (a bridge, a continuous query, an
//! export) from being removed under them.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tidewire_storage::{OnFatal, StorageError, StorageMetrics, StreamLog};

use crate::stream_config::StreamSpec;

/// One open stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Its definition.
    pub spec: Arc<StreamSpec>,
    /// Its log.
    pub log: StreamLog,
}

/// The streams open at one moment, in the order they were opened (the
/// config's first, then those created at run time).
#[derive(Debug, Default)]
pub struct StreamSet {
    streams: Vec<Stream>,
}

impl StreamSet {
    /// Every stream.
    pub fn iter(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter()
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.spec.name == name)
    }

    /// The streams that keep messages published to `topic`.
    pub fn keeping<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a Stream> + 'a {
        self.streams.iter().filter(move |s| s.spec.keeps(topic))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// Why a stream could not be held or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamUseError {
    /// No stream has that name (user input).
    #[error("no stream named {0:?}")]
    NotFound(String),
    /// A stream has that name already (user input).
    #[error("a stream named {0:?} exists")]
    Exists(String),
    /// Somebody reads the stream (user input: stop them first).
    #[error("stream {stream:?} is in use by {}", .by.join(", "))]
    InUse {
        /// The stream.
        stream: String,
        /// Who reads it, e.g. `nats bridge "edge" (outbound)`.
        by: Vec<String>,
    },
}

/// Who holds which stream.
#[derive(Debug, Default)]
struct Holds {
    by_id: BTreeMap<u64, (String, String)>,
    next_id: u64,
}

impl Holds {
    fn holders_of(&self, stream: &str) -> Vec<String> {
        self.by_id
            .values()
            .filter(|(held, _)| held == stream)
            .map(|(_, by)| by.clone())
            .collect()
    }
}

/// A stream somebody reads; it cannot be removed until this is dropped.
#[derive(Debug)]
pub struct StreamHold {
    stream: Stream,
    id: u64,
    holds: Arc<Mutex<Holds>>,
}

impl StreamHold {
    /// The held stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        lock(&self.holds).by_id.remove(&self.id);
    }
}

/// All open streams, the holds on them, and the lock that keeps a second
/// process off the data directory.
#[derive(Debug)]
pub struct Streams {
    current: RwLock<Arc<StreamSet>>,
    /// Taken by every change and hold, so a removal and a new hold cannot
    /// cross.
    holds: Arc<Mutex<Holds>>,
    generation: AtomicU64,
    data_dir: PathBuf,
    _lock: File,
}

impl Streams {
    /// Locks `data_dir` (creating it if needed) and opens every stream under
    /// `data_dir/streams/<name>`, recovering each. Blocking.
    pub fn open(
        data_dir: &Path,
        specs: Vec<StreamSpec>,
        metrics: &StorageMetrics,
        on_fatal: OnFatal,
    ) -> Result<Streams, StorageError> {
        let lock = lock_data_dir(data_dir)?;
        let mut streams = Vec::with_capacity(specs.len());
        for spec in specs {
            let log = open_log(data_dir, &spec, metrics, on_fatal.clone())?;
            streams.push(Stream {
                spec: Arc::new(spec),
                log,
            });
        }
        Ok(Streams {
            current: RwLock::new(Arc::new(StreamSet { streams })),
            holds: Arc::default(),
            generation: AtomicU64::new(0),
            data_dir: data_dir.to_owned(),
            _lock: lock,
        })
    }

    /// The data directory the streams live under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the stream called `name` (which may not exist).
    pub fn dir_of(&self, name: &str) -> PathBuf {
        stream_dir(&self.data_dir, name)
    }

    /// The streams open now. Cheap: a shared snapshot.
    pub fn snapshot(&self) -> Arc<StreamSet> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The stream called `name`, if open now.
    pub fn get(&self, name: &str) -> Option<Stream> {
        self.snapshot().get(name).cloned()
    }

    /// Counts every change to the set (a stream added, changed or
    /// removed), so a cache of anything derived from it (SQL plans) can
    /// tell it is stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks the stream called `name` as read by `by` (shown to whoever
    /// tries to delete it) until the hold is dropped.
    pub fn hold(&self, name: &str, by: impl Into<String>) -> Result<StreamHold, StreamUseError> {
        let mut holds = lock(&self.holds);
        let stream = self
            .get(name)
            .ok_or_else(|| StreamUseError::NotFound(name.to_owned()))?;
        let id = holds.next_id;
        holds.next_id += 1;
        holds.by_id.insert(id, (name.to_owned(), by.into()));
        Ok(StreamHold {
            stream,
            id,
            holds: Arc::clone(&self.holds),
        })
    }

    /// Adds an opened stream. Fails if one of that name is open.
    pub fn insert(&self, stream: Stream) -> Result<(), StreamUseError> {
        let _holds = lock(&self.holds);
        self.change(|streams| {
            if streams.iter().any(|s| s.spec.name == stream.spec.name) {
                return Err(StreamUseError::Exists(stream.spec.name.clone()));
            }
            streams.push(stream);
            Ok(())
        })
    }

    /// Replaces the definition of the stream called `name` (its filters
    /// or retention; the log stays).
    pub fn replace_spec(&self, spec: StreamSpec) -> Result<(), StreamUseError> {
        let _holds = lock(&self.holds);
        self.change(|streams| {
            let stream = streams
                .iter_mut()
                .find(|s| s.spec.name == spec.name)
                .ok_or_else(|| StreamUseError::NotFound(spec.name.clone()))?;
            stream.spec = Arc::new(spec);
            Ok(())
        })
    }

    /// Takes the stream called `name` out of the set, unless somebody
    /// holds it. Publishes from then on do not reach it; the caller closes
    /// its log.
    pub fn remove(&self, name: &str) -> Result<Stream, StreamUseError> {
        let holds = lock(&self.holds);
        let by = holds.holders_of(name);
        if !by.is_empty() {
            return Err(StreamUseError::InUse {
                stream: name.to_owned(),
                by,
            });
        }
        self.change(|streams| {
            let at = streams
                .iter()
                .position(|s| s.spec.name == name)
                .ok_or_else(|| StreamUseError::NotFound(name.to_owned()))?;
            Ok(streams.remove(at))
        })
    }

    /// Applies `edit` to a copy of the set and publishes it. Callers hold
    /// the holds lock, so changes are serialized.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut Vec<Stream>) -> Result<T, StreamUseError>,
    ) -> Result<T, StreamUseError> {
        let mut streams = self.snapshot().streams.clone();
        let outcome = edit(&mut streams)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(StreamSet { streams });
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(outcome)
    }

    /// Syncs and stops every stream's writer.
    pub async fn close(&self) {
        for stream in self.snapshot().iter() {
            stream.log.close().await;
        }
    }
}

/// Opens (recovering, or creating) the log of `spec` under `data_dir`.
/// Blocking.
pub fn open_log(
    data_dir: &Path,
    spec: &StreamSpec,
    metrics: &StorageMetrics,
    on_fatal: OnFatal,
) -> Result<StreamLog, StorageError> {
    StreamLog::open(
        &stream_dir(data_dir, &spec.name),
        &spec.name,
        spec.log,
        metrics,
        on_fatal,
    )
}

fn stream_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("streams").join(name)
}

fn lock(holds: &Mutex<Holds>) -> MutexGuard<'_, Holds> {
    // The map stays consistent whatever panicked while it was held.
    holds.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates `dir` if missing, checks it is a writable directory, and takes an
/// exclusive lock on `dir/LOCK` for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<File, StorageError> {
    let data_dir_error = |reason: String| {
        StorageError::io(
            "use data directory",
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
        )
    };
    if dir.as_os_str().is_empty() {
        return Err(data_dir_error("the path is empty".into()));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(data_dir_error("it exists and is not a directory".into()));
    }
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create data directory", dir, e))?;
    let lock_path: PathBuf = dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StorageError::io("write to data directory", dir, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(data_dir_error(
            "it is in use by another tidewire process".into(),
        )),
        Err(TryLockError::Error(e)) => Err(StorageError::io("lock", lock_path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_config::StreamConfig;

    fn spec(name: &str, filter: &str) -> StreamSpec {
        StreamConfig {
            name: name.to_owned(),
            filters: vec![filter.to_owned()],
            ..StreamConfig::default_stream()
        }
        .validate("streams[0]")
        .expect("valid")
    }

    fn open(dir: &Path, specs: Vec<StreamSpec>) -> Result<Streams, StorageError> {
        let metrics = StorageMetrics::register(&mut Default::default());
        Streams::open(dir, specs, &metrics, Arc::new(|_| {}))
    }

    #[test]
    fn data_dir_is_locked_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open(dir.path(), vec![spec("events", "#")]).expect("open");
        let second = open(dir.path(), vec![spec("events", "#")]).expect_err("locked");
        assert!(
            second
                .to_string()
                .contains("in use by another tidewire process"),
            "{second}"
        );
        drop(first);

        let file = dir.path().join("plain-file");
        fs::write(&file, "x").expect("write");
        let err = open(&file, vec![spec("events", "#")]).expect_err("not a dir");
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = open(Path::new(""), vec![spec("events", "#")]).expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn a_held_stream_cannot_be_removed_until_the_hold_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let streams = open(dir.path(), vec![spec("a", "a/#"), spec("b", "b/#")]).expect("open");
        let hold = streams.hold("a", "nats bridge \"edge\"").expect("hold");
        assert_eq!(hold.stream().spec.name, "a");
        assert_eq!(
            streams.remove("a").expect_err("held"),
            StreamUseError::InUse {
                stream: "a".into(),
                by: vec!["nats bridge \"edge\"".into()],
            }
        );
        assert!(matches!(
            streams.hold("c", "x"),
            Err(StreamUseError::NotFound(_))
        ));
        drop(hold);
        let before = streams.generation();
        let removed = streams.remove("a").expect("removed");
        assert_eq!(removed.spec.name, "a");
        assert!(streams.generation() > before);
        assert!(streams.get("a").is_none());
        assert_eq!(streams.snapshot().len(), 1);
    }

    #[test]
    fn a_snapshot_taken_before_a_change_keeps_its_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let streams = open(dir.path(), vec![spec("a", "a/#")]).expect("open");
        let before = streams.snapshot();
        let metrics = StorageMetrics::register(&mut Default::default());
        let b = spec("b", "b/#");
        let log = open_log(dir.path(), &b, &metrics, Arc::new(|_| {})).expect("log");
        streams
            .insert(Stream {
                spec: Arc::new(b.clone()),
                log: log.clone(),
            })
            .expect("insert");
        assert!(matches!(
            streams.insert(Stream {
                spec: Arc::new(b),
                log,
            }),
            Err(StreamUseError::Exists(_))
        ));
        streams.replace_spec(spec("a", "x/#")).expect("replace");
        assert_eq!(before.len(), 1);
        assert_eq!(before.keeping("a/1").count(), 1);
        let now = streams.snapshot();
        assert_eq!(now.keeping("a/1").count(), 0);
        assert_eq!(now.keeping("x/1").count(), 1);
        assert_eq!(now.keeping("b/1").count(), 1);
    }
}
