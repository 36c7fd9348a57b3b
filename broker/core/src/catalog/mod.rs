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

    /// The catalog file's path.
    pub fn path(&self) -> &Path {
        self.inner.file.path()
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
