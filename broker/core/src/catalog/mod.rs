//! The run-time catalog: the one place that says which streams exist
//! (later also queues, topics, rules and exports), whether the config file
//! defines them or the API created them. What the API creates is kept in
//! `DATA_DIR/catalog.json` ([`file`]) before it is acknowledged; a change
//! reaches the publish path and SQL through the broker's open streams
//! ([`crate::Streams`]), whose generation tells caches they are stale.
//!
//! The config file wins: a name it defines is served from its definition,
//! and a catalog entry of the same name is left in the file, unused (a
//! warning at start-up says so), and comes back if the config stops
//! defining the name. Definitions from the config cannot be changed or
//! deleted through the API.

mod file;
mod streams;

pub use file::{CatalogFile, FILE_NAME};
pub use streams::{Origin, RetentionPatch, StreamPatch};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tidewire_storage::{OnFatal, StorageError, StorageMetrics};

use crate::error::ConfigError;
use crate::publish::Broker;
use crate::stream_config::StreamConfig;
use crate::streams::StreamUseError;

/// Default most streams the broker keeps open (config and API together).
pub const DEFAULT_MAX_STREAMS: usize = 256;

/// Why a catalog change was refused or failed, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A definition is not valid (user input); the key names the field.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The request names something that does not exist (user input).
    #[error("no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
    /// The name is taken (user input).
    #[error("a {kind} named {name:?} exists")]
    Exists { kind: &'static str, name: String },
    /// The config file defines it, so only the file can change it (user
    /// input).
    #[error(
        "{kind} {name:?} is defined in the config file; change it there (the API changes only what it created)"
    )]
    DefinedInConfig { kind: &'static str, name: String },
    /// Somebody reads it (user input: stop them first).
    #[error("cannot delete {kind} {name:?}: it is in use by {}", .by.join(", "))]
    InUse {
        kind: &'static str,
        name: String,
        by: Vec<String>,
    },
    /// A configured limit is reached (user input, or raise the limit).
    #[error("cannot create another {kind}: the broker has {max}, the limit ({key})")]
    LimitReached {
        kind: &'static str,
        max: usize,
        key: &'static str,
    },
    /// Data of an earlier stream of that name is still on disk (user
    /// input: move it away or pick another name).
    #[error(
        "{} exists, left by an earlier stream of that name that is no longer configured; move it away or pick another name",
        .path.display()
    )]
    LeftoverData { path: PathBuf },
    /// The catalog file cannot be read as a catalog (external: the disk,
    /// or a hand edit). The streams' data is not touched.
    #[error(
        "catalog file {} is damaged: {reason}; the streams' data is untouched (restore the file from a backup, or move it away to start with only the config file's streams)",
        .path.display()
    )]
    Damaged { path: PathBuf, reason: String },
    /// The catalog file could not be read or written (external).
    #[error("cannot {what} catalog file {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stream's log could not be opened or closed (external).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A bug: a task the change ran on ended unexpectedly.
    #[error("internal error (a bug): {0}")]
    Internal(String),
}

impl CatalogError {
    /// True when the request was at fault (a 4xx), false when the broker
    /// or its disk was (a 5xx).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            CatalogError::Damaged { .. }
                | CatalogError::Io { .. }
                | CatalogError::Storage(_)
                | CatalogError::Internal(_)
        )
    }

    fn from_use(kind: &'static str, e: StreamUseError) -> CatalogError {
        match e {
            StreamUseError::NotFound(name) => CatalogError::NotFound { kind, name },
            StreamUseError::Exists(name) => CatalogError::Exists { kind, name },
            StreamUseError::InUse { stream, by } => CatalogError::InUse {
                kind,
                name: stream,
                by,
            },
        }
    }
}

/// Limits on what the catalog holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogLimits {
    /// Most streams open at once, config and API together.
    pub max_streams: usize,
}

impl Default for CatalogLimits {
    fn default() -> Self {
        CatalogLimits {
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

/// The run-time catalog. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    file: CatalogFile,
    storage_metrics: StorageMetrics,
    on_fatal: OnFatal,
    limits: CatalogLimits,
    /// One change at a time, from its check to its last write.
    changes: tokio::sync::Mutex<()>,
    /// The streams the API created (and the config does not define), as
    /// written.
    created: Mutex<BTreeMap<String, StreamConfig>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("file", &self.file)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Loads the catalog file under the broker's data directory, finishes
    /// deletions a crash interrupted, and opens every stream it holds that
    /// the config does not define. Blocking: call it at start-up, before
    /// serving.
    pub fn open(
        broker: Broker,
        storage_metrics: StorageMetrics,
        on_fatal: OnFatal,
        limits: CatalogLimits,
    ) -> Result<Catalog, CatalogError> {
        let data_dir = broker.streams().data_dir().to_owned();
        let file = CatalogFile::open(&data_dir)?;
        let catalog = Catalog {
            inner: Arc::new(Inner {
                broker,
                file,
                storage_metrics,
                on_fatal,
                limits,
                changes: tokio::sync::Mutex::new(()),
                created: Mutex::default(),
            }),
        };
        catalog.open_streams()?;
        empty_trash(&data_dir);
        Ok(catalog)
    }

    /// The broker whose streams this catalog manages.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The catalog file, for the other kinds' managers (queues, ...),
    /// each keeping its own section.
    pub fn file(&self) -> &CatalogFile {
        &self.inner.file
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        self.inner.broker.streams().data_dir()
    }

    /// Moves a deleted definition's directory to the trash, durably, and
    /// removes it there. Blocking file I/O.
    pub fn discard(&self, dir: &Path) -> std::io::Result<()> {
        discard(self.data_dir(), dir)
    }

    fn created(&self) -> MutexGuard<'_, BTreeMap<String, StreamConfig>> {
        self.inner.created.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CatalogError::Internal(format!("catalog task: {e}")))?
}

/// Where deleted data goes before it is removed: a rename is atomic, so a
/// crash never leaves half a stream directory under its live name.
fn trash_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("trash")
}

/// Moves `dir` to the trash (atomically, durably) and removes it there.
/// A directory that does not exist is fine. Blocking file I/O.
fn discard(data_dir: &Path, dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let trash = trash_dir(data_dir);
    std::fs::create_dir_all(&trash)?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let target = trash.join(format!("{name}.{nanos}"));
    std::fs::rename(dir, &target)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    std::fs::remove_dir_all(&target)
}

/// Removes what a crash left in the trash. Failures are logged: the data
/// there is already deleted as far as anyone can see.
fn empty_trash(data_dir: &Path) {
    let trash = trash_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&trash) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not empty the trash");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PublishMetrics;
    use crate::publish::Limits;
    use crate::streams::Streams;
    use crate::{Message, Source};

    /// A broker over `data_dir` with the default stream, and its catalog.
    fn open(data_dir: &Path) -> Catalog {
        let mut registry = prometheus_client::registry::Registry::default();
        let storage = StorageMetrics::register(&mut registry);
        let on_fatal: OnFatal = Arc::new(|_| {});
        let spec = StreamConfig::default_stream()
            .validate("streams[0]")
            .expect("valid");
        let streams =
            Streams::open(data_dir, vec![spec], &storage, on_fatal.clone()).expect("streams");
        let broker = Broker::new(
            streams,
            Limits::default(),
            PublishMetrics::register(&mut registry),
        );
        Catalog::open(broker, storage, on_fatal, CatalogLimits { max_streams: 3 }).expect("catalog")
    }

    fn definition(name: &str, filter: &str) -> StreamConfig {
        StreamConfig {
            name: name.to_owned(),
            filters: vec![filter.to_owned()],
            ..StreamConfig::default_stream()
        }
    }

    async fn create(catalog: &Catalog, name: &str, filter: &str) -> crate::Stream {
        catalog
            .create_stream(definition(name, filter))
            .await
            .expect("create")
    }

    async fn publish(catalog: &Catalog, topic: &str) -> Vec<String> {
        let message = Message {
            topic: topic.to_owned(),
            client_id: "test".to_owned(),
            qos: 1,
            retain: false,
            payload: bytes::Bytes::from_static(b"x"),
            properties: Default::default(),
        };
        catalog
            .broker()
            .publish(Source::Http, message)
            .await
            .expect("publish")
            .into_iter()
            .map(|s| s.stream.to_string())
            .collect()
    }

    async fn close(catalog: Catalog) {
        catalog.broker().streams().close().await;
    }

    #[tokio::test]
    async fn a_created_stream_takes_the_next_publish_and_opens_again_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open(dir.path());
        create(&catalog, "lab", "lab/#").await;
        assert_eq!(publish(&catalog, "lab/1").await, ["events", "lab"]);
        assert_eq!(catalog.origin("lab"), Some(Origin::Api));
        assert_eq!(catalog.origin("events"), Some(Origin::Config));
        close(catalog).await;

        let catalog = open(dir.path());
        let lab = catalog.broker().streams().get("lab").expect("reopened");
        assert_eq!(lab.log.next_offset(), 1);
        assert_eq!(catalog.origin("lab"), Some(Origin::Api));
        close(catalog).await;
    }

    #[tokio::test]
    async fn the_stream_limit_and_leftover_data_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open(dir.path());
        for name in ["a", "b"] {
            create(&catalog, name, "#").await;
        }
        let err = catalog
            .create_stream(definition("c", "#"))
            .await
            .expect_err("over the limit");
        assert!(
            matches!(err, CatalogError::LimitReached { max: 3, .. }),
            "{err}"
        );
        catalog.delete_stream("b").await.expect("delete");

        std::fs::create_dir_all(dir.path().join("streams/old")).expect("leftover");
        let err = catalog
            .create_stream(definition("old", "#"))
            .await
            .expect_err("leftover");
        assert!(matches!(err, CatalogError::LeftoverData { .. }), "{err}");
        assert!(
            dir.path().join("streams/old").is_dir(),
            "not adopted, not removed"
        );
        close(catalog).await;
    }

    #[tokio::test]
    async fn a_deletion_cut_short_by_a_crash_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open(dir.path());
        create(&catalog, "lab", "lab/#").await;
        publish(&catalog, "lab/1").await;
        close(catalog).await;
        // The tombstone is durable, the files not yet deleted: a crash here.
        let file = CatalogFile::open(dir.path()).expect("file");
        file.begin_delete("streams", "lab").expect("tombstone");
        assert!(dir.path().join("streams/lab").is_dir());

        let catalog = open(dir.path());
        assert!(catalog.broker().streams().get("lab").is_none());
        assert!(!dir.path().join("streams/lab").exists());
        assert!(
            CatalogFile::open(dir.path())
                .expect("file")
                .deleting("streams")
                .is_empty()
        );
        // And a new stream of the name starts empty.
        let lab = create(&catalog, "lab", "lab/#").await;
        assert_eq!(lab.log.next_offset(), 0);
        close(catalog).await;
    }
}
