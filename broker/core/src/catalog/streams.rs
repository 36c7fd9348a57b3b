//! Streams in the catalog: opening those it holds at start-up, and
//! creating, changing and deleting them while the broker runs.
//!
//! Each change is durable in the catalog file before it takes effect, in
//! an order a crash cannot hurt: a new stream is written to the file
//! before its directory exists (a crash leaves an entry whose stream opens
//! empty); a deletion is written as a tombstone before the directory goes
//! (a crash leaves a tombstone the next start finishes).

use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize};
use tidewire_storage::StorageError;

use super::{Catalog, CatalogError, blocking, discard};
use crate::stream_config::StreamConfig;
use crate::streams::{Stream, open_log};

/// What the messages call a stream.
const KIND: &str = "stream";
/// The catalog file's section for streams.
const SECTION: &str = "streams";

/// Where a stream's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The config file (or the default `events` stream).
    Config,
    /// `POST /api/v1/streams`, kept in the catalog file.
    Api,
}

/// A change to a stream created through the API (`PATCH`): fields left out
/// stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPatch {
    /// New topic filters, replacing the old ones.
    #[serde(default)]
    pub filters: Option<Vec<String>>,
    /// New retention limits.
    #[serde(default)]
    pub retention: Option<RetentionPatch>,
}

/// A change to a stream's retention: a field left out stays as it is, and
/// `null` removes the limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPatch {
    /// Keep records this long, e.g. `"7d"`.
    #[serde(default, deserialize_with = "given_duration")]
    pub max_age: Option<Option<Duration>>,
    /// Keep at most this much, e.g. `"10GiB"`.
    #[serde(default, deserialize_with = "given_size")]
    pub max_bytes: Option<Option<ByteSize>>,
}

fn given_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Duration>>, D::Error> {
    humantime_serde::option::deserialize(d).map(Some)
}

fn given_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<ByteSize>>, D::Error> {
    Option::<ByteSize>::deserialize(d).map(Some)
}

impl StreamPatch {
    fn apply(self, mut config: StreamConfig) -> StreamConfig {
        if let Some(filters) = self.filters {
            config.filters = filters;
        }
        if let Some(retention) = self.retention {
            if let Some(max_age) = retention.max_age {
                config.retention.max_age = max_age;
            }
            if let Some(max_bytes) = retention.max_bytes {
                config.retention.max_bytes = max_bytes;
            }
        }
        config
    }
}

impl Catalog {
    /// Finishes interrupted deletions, then opens the catalog's streams
    /// that the config does not define. Blocking.
    pub(super) fn open_streams(&self) -> Result<(), CatalogError> {
        let inner = &self.inner;
        let streams = inner.broker.streams();
        for name in inner.file.deleting(SECTION) {
            if streams.get(&name).is_some() {
                tracing::warn!(
                    stream = %name,
                    "the deletion of stream {name:?} was interrupted and the config file now defines a stream of that name: its data is kept"
                );
            } else {
                let dir = streams.dir_of(&name);
                discard(streams.data_dir(), &dir)
                    .map_err(|e| StorageError::io("delete", &dir, e))?;
                tracing::info!(stream = %name, "finished deleting stream {name:?}");
            }
            inner.file.end_delete(SECTION, &name)?;
        }
        for (name, definition) in inner.file.entries(SECTION) {
            let damaged = |reason: String| CatalogError::Damaged {
                path: inner.file.path().to_owned(),
                reason: format!("{SECTION}.{name}: {reason}"),
            };
            let config: StreamConfig =
                serde_json::from_value(definition).map_err(|e| damaged(e.to_string()))?;
            if config.name != name {
                return Err(damaged(format!("holds a stream named {:?}", config.name)));
            }
            let spec = config.validate("").map_err(|e| damaged(e.to_string()))?;
            if streams.get(&name).is_some() {
                tracing::warn!(
                    stream = %name,
                    "stream {name:?} is defined in both the config file and the catalog ({}); the config file's definition is used",
                    inner.file.path().display()
                );
                continue;
            }
            let log = open_log(
                streams.data_dir(),
                &spec,
                &inner.storage_metrics,
                inner.on_fatal.clone(),
            )?;
            streams
                .insert(Stream {
                    spec: Arc::new(spec),
                    log,
                })
                .map_err(|e| CatalogError::from_use(KIND, e))?;
            self.created().insert(name, config);
        }
        Ok(())
    }

    /// Where the definition of the open stream `name` comes from.
    pub fn origin(&self, name: &str) -> Option<Origin> {
        if self.created().contains_key(name) {
            Some(Origin::Api)
        } else {
            self.broker().streams().get(name).map(|_| Origin::Config)
        }
    }

    /// The definition of a stream the API created, as it was written.
    fn created_stream(&self, name: &str) -> Option<StreamConfig> {
        self.created().get(name).cloned()
    }

    /// Creates a stream: durable in the catalog, open, and routed to by
    /// the next publish that matches its filters.
    pub async fn create_stream(&self, config: StreamConfig) -> Result<Stream, CatalogError> {
        let spec = config.validate("")?;
        let name = spec.name.clone();
        let _change = self.inner.changes.lock().await;
        let streams = self.broker().streams();
        let open = streams.snapshot();
        if open.iter().any(|s| s.spec.name.eq_ignore_ascii_case(&name)) {
            return Err(CatalogError::Exists { kind: KIND, name });
        }
        if open.len() >= self.inner.limits.max_streams {
            return Err(CatalogError::LimitReached {
                kind: KIND,
                max: self.inner.limits.max_streams,
                key: "limits.max_streams",
            });
        }
        let dir = streams.dir_of(&name);
        if dir.exists() {
            return Err(CatalogError::LeftoverData { path: dir });
        }
        let definition = serde_json::to_value(&config)
            .map_err(|e| CatalogError::Internal(format!("encoding a stream definition: {e}")))?;
        let this = self.clone();
        let opened = blocking(move || {
            let inner = &this.inner;
            if inner.file.deleting(SECTION).contains(&name) {
                // Its data is gone (checked above); only the tombstone is
                // left, and it must not delete the new stream at a restart.
                inner.file.end_delete(SECTION, &name)?;
            }
            inner.file.put(SECTION, &name, definition)?;
            let streams = inner.broker.streams();
            open_log(
                streams.data_dir(),
                &spec,
                &inner.storage_metrics,
                inner.on_fatal.clone(),
            )
            .map(|log| Stream {
                spec: Arc::new(spec),
                log,
            })
            .or_else(|e| {
                inner.file.remove(SECTION, &name)?;
                let _ = discard(streams.data_dir(), &streams.dir_of(&name));
                Err(CatalogError::Storage(e))
            })
        })
        .await?;
        streams
            .insert(opened.clone())
            .map_err(|e| CatalogError::from_use(KIND, e))?;
        self.created().insert(opened.spec.name.clone(), config);
        tracing::info!(stream = %opened.spec.name, "stream created");
        Ok(opened)
    }

    /// Changes the filters or retention of a stream the API created. New
    /// filters apply to the next publish; new retention within a second.
    pub async fn update_stream(
        &self,
        name: &str,
        patch: StreamPatch,
    ) -> Result<Stream, CatalogError> {
        let _change = self.inner.changes.lock().await;
        let current = self.api_stream(name)?;
        let next = patch.apply(current);
        let spec = next.validate("")?;
        let definition = serde_json::to_value(&next)
            .map_err(|e| CatalogError::Internal(format!("encoding a stream definition: {e}")))?;
        let (this, key) = (self.clone(), name.to_owned());
        blocking(move || this.inner.file.put(SECTION, &key, definition)).await?;
        let streams = self.broker().streams();
        let retention = spec.log.retention;
        streams
            .replace_spec(spec)
            .map_err(|e| CatalogError::from_use(KIND, e))?;
        let stream = streams.get(name).ok_or_else(|| CatalogError::NotFound {
            kind: KIND,
            name: name.to_owned(),
        })?;
        stream.log.set_retention(retention);
        self.created().insert(name.to_owned(), next);
        tracing::info!(stream = %name, "stream changed");
        Ok(stream)
    }

    /// Deletes a stream the API created, unless somebody reads it: it
    /// leaves the publish path and SQL at once, then its files go.
    pub async fn delete_stream(&self, name: &str) -> Result<(), CatalogError> {
        let _change = self.inner.changes.lock().await;
        self.api_stream(name)?;
        let streams = self.broker().streams();
        let stream = streams
            .remove(name)
            .map_err(|e| CatalogError::from_use(KIND, e))?;
        let (this, key) = (self.clone(), name.to_owned());
        if let Err(e) = blocking(move || this.inner.file.begin_delete(SECTION, &key)).await {
            let _ = streams.insert(stream);
            return Err(e);
        }
        self.created().remove(name);
        stream.log.close().await;
        self.inner.storage_metrics.forget_stream(name);
        let (this, key, dir) = (self.clone(), name.to_owned(), stream.log.dir().to_owned());
        let finished = blocking(move || {
            let data_dir = this.broker().streams().data_dir();
            discard(data_dir, &dir).map_err(|e| StorageError::io("delete", &dir, e))?;
            this.inner.file.end_delete(SECTION, &key)
        })
        .await;
        if let Err(e) = finished {
            tracing::warn!(stream = %name, error = %e, "stream deleted, but its files are not all gone yet; the next start finishes");
        }
        tracing::info!(stream = %name, "stream deleted");
        Ok(())
    }

    /// The definition of `name` if the API created it; otherwise why it
    /// cannot be changed.
    fn api_stream(&self, name: &str) -> Result<StreamConfig, CatalogError> {
        match (self.created_stream(name), self.origin(name)) {
            (Some(config), _) => Ok(config),
            (None, Some(_)) => Err(CatalogError::DefinedInConfig {
                kind: KIND,
                name: name.to_owned(),
            }),
            (None, None) => Err(CatalogError::NotFound {
                kind: KIND,
                name: name.to_owned(),
            }),
        }
    }
}
