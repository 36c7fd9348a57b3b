//! All exports: starting them at start-up, creating and deleting them at
//! run time through the catalog (section `exports` of
//! `DATA_DIR/catalog.json`), and stopping them. Each export is a pump on
//! the delivery layer over its stream, with its cursor and planned flushes
//! in `DATA_DIR/exports/NAME/`, and an [`ExportSink`]. An export holds its
//! stream, so the stream cannot be deleted under it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use tidewire_core::{Catalog, CatalogError, ConfigError, Origin, StreamHold};
use tidewire_delivery::{Cursor, Pump, PumpConfig, Start};
use tidewire_sql::Transform;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ExportConfig, ExportSpec};
use crate::destination::Destination;
use crate::error::ExportError;
use crate::manifest::Manifest;
use crate::sink::ExportSink;
use crate::status::{ExportMetrics, ExportStatus};

/// The catalog's section for exports made through the API.
const SECTION: &str = "exports";
/// Default most exports.
pub const DEFAULT_MAX_EXPORTS: usize = 64;
/// Records read from the stream at a time.
const BATCH: u64 = 4096;
/// How long writing one flush's files may take before the pump retries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest wait between failed flushes (an S3 outage): retried at
/// least this often.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A caught-up export reads new records this long after the first of them
/// arrives, in one batch: files gather records for far longer anyway, and
/// each wake-up and read of the stream has a cost of its own
/// (`target/release/export`, its CPU part, measures it).
const LINGER: Duration = Duration::from_millis(100);

/// A running export.
#[derive(Debug)]
pub struct Export {
    spec: Arc<ExportSpec>,
    origin: Origin,
    status: Arc<ExportStatus>,
    destination: Destination,
    schema: SchemaRef,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    hold: StreamHold,
}

impl Export {
    /// Its definition.
    pub fn spec(&self) -> &Arc<ExportSpec> {
        &self.spec
    }

    /// Where it was defined.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Its figures.
    pub fn status(&self) -> &Arc<ExportStatus> {
        &self.status
    }

    /// Where its files are.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The columns of its files.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The stream it reads.
    pub fn stream(&self) -> &tidewire_core::Stream {
        self.hold.stream()
    }

    /// Stops its pump, keeping its cursor (records buffered and not yet
    /// written are exported again by the next start).
    async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// All exports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exports {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    catalog: Catalog,
    metrics: ExportMetrics,
    dir: PathBuf,
    max_exports: usize,
    open: RwLock<BTreeMap<String, Arc<Export>>>,
    changes: tokio::sync::Mutex<()>,
}

impl Exports {
    /// Starts every export the config defines and the catalog holds. An
    /// export that cannot start (its stream is missing, its destination
    /// is not writable, its projection does not fit the stream) fails the
    /// start, naming the field.
    pub async fn open(
        catalog: Catalog,
        configs: &[ExportConfig],
        metrics: ExportMetrics,
        max_exports: usize,
    ) -> Result<Exports, ExportError> {
        let dir = catalog.data_dir().join("exports");
        for name in catalog.file().deleting(SECTION) {
            catalog.discard(&dir.join(&name)).map_err(|e| {
                ExportError::State(format!("finishing the deletion of export {name:?}: {e}"))
            })?;
            catalog.file().end_delete(SECTION, &name)?;
        }
        let exports = Exports {
            inner: Arc::new(Inner {
                catalog: catalog.clone(),
                metrics,
                dir,
                max_exports,
                open: RwLock::default(),
                changes: tokio::sync::Mutex::new(()),
            }),
        };
        for (i, config) in configs.iter().enumerate() {
            let key = format!("exports[{i}]");
            let spec = config.validate(&key)?;
            if exports.get(spec.name()).is_some() {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("an export named {:?} is defined twice", spec.name()),
                )
                .into());
            }
            let export = exports.start(spec, Origin::Config, &key).await?;
            exports.insert(export);
        }
        for (name, value) in catalog.file().entries(SECTION) {
            if exports.get(&name).is_some() {
                tracing::warn!(export = %name, "the config file defines this export; its catalog entry is not used");
                continue;
            }
            let config: ExportConfig =
                serde_json::from_value(value).map_err(|e| CatalogError::Damaged {
                    path: catalog.file().path().to_owned(),
                    reason: format!("export {name:?}: {e}"),
                })?;
            let key = format!("catalog exports.{name}");
            let spec = config.validate(&key)?;
            match exports.start(spec, Origin::Api, &key).await {
                Ok(export) => exports.insert(export),
                // The destination may be down now; the definition stays,
                // and the next start tries again.
                Err(e) => tracing::error!(export = %name, error = %e, "export not started"),
            }
        }
        Ok(exports)
    }

    fn insert(&self, export: Arc<Export>) {
        self.inner
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(export.spec.name().to_owned(), export);
    }

    /// Every export, by name.
    pub fn list(&self) -> Vec<Arc<Export>> {
        self.inner
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The export called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        self.inner
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Checks an export against its stream and destination, and starts
    /// its pump.
    async fn start(
        &self,
        spec: ExportSpec,
        origin: Origin,
        key: &str,
    ) -> Result<Arc<Export>, ExportError> {
        let name = spec.name().to_owned();
        let hold = self
            .inner
            .catalog
            .broker()
            .streams()
            .hold(&spec.config.stream, format!("export {name:?}"))
            .map_err(|e| ConfigError::new(format!("{key}.stream"), e.to_string()))?;
        let fields = hold.stream().spec.schema.clone();
        let transform = if spec.is_full() {
            None
        } else {
            let transform = Transform::new(
                spec.config.select.as_deref(),
                spec.config.filter.as_deref(),
                &fields,
            )
            .await
            .map_err(|e| {
                let field = if spec.config.select.is_some() {
                    "select"
                } else {
                    "where"
                };
                ConfigError::new(format!("{key}.{field}"), e.to_string())
            })?;
            Some(transform)
        };
        let schema = match &transform {
            Some(t) => Arc::clone(t.schema()),
            None => tidewire_sql::RecordBatches::new(&fields).schema().clone(),
        };
        let destination = Destination::open(&spec, key)?;
        let url_key = if spec.config.s3.is_some() {
            "s3"
        } else {
            "url"
        };
        destination
            .check()
            .await
            .map_err(|e| ConfigError::new(format!("{key}.{url_key}"), e))?;
        let state = self.inner.dir.join(&name);
        let spec = Arc::new(spec);
        let status = Arc::new(self.inner.metrics.status(&name));
        let log = hold.stream().log.clone();
        let opened = {
            let (spec, destination, status) =
                (Arc::clone(&spec), destination.clone(), Arc::clone(&status));
            tokio::task::spawn_blocking(move || -> Result<_, ExportError> {
                let removed = destination.remove_leftovers().map_err(|e| {
                    ExportError::State(format!("cleaning {}: {e}", spec.config.url))
                })?;
                if removed > 0 {
                    tracing::info!(export = %spec.name(), removed, "removed half-written files");
                }
                std::fs::create_dir_all(&state)
                    .map_err(|e| ExportError::State(format!("{}: {e}", state.display())))?;
                let cursor = Cursor::new(
                    state.join("cursor.json"),
                    [
                        ("stream", spec.config.stream.clone()),
                        ("url", spec.config.url.clone()),
                    ],
                );
                let at = cursor
                    .load()
                    .map_err(|e| ExportError::State(e.to_string()))?
                    .unwrap_or(0);
                let manifest = Manifest::load(state.join("flushes.json"), at)
                    .map_err(|e| ExportError::State(e.to_string()))?;
                let report: Arc<dyn tidewire_delivery::Report> = status;
                let pump = Pump::open(log, cursor, Start::Earliest, pump_config(), report)
                    .map_err(|e| ExportError::State(e.to_string()))?;
                Ok((pump, manifest))
            })
            .await
            .map_err(|e| ExportError::State(format!("starting the export: {e}")))??
        };
        let (mut pump, manifest) = opened;
        let mut sink = ExportSink::new(
            Arc::clone(&spec),
            fields,
            destination.clone(),
            transform,
            manifest,
            Arc::clone(&status),
        );
        let stop = CancellationToken::new();
        let ended = stop.clone();
        let task = tokio::spawn(async move {
            pump.run_retrying(&mut sink, &ended).await;
        });
        tracing::info!(export = %name, stream = %spec.config.stream, url = %spec.config.url, "export running");
        Ok(Arc::new(Export {
            spec,
            origin,
            status,
            destination,
            schema,
            stop,
            task: Mutex::new(Some(task)),
            hold,
        }))
    }

    /// Creates an export. One of that name with the same definition is
    /// answered as created (`false`: it existed).
    pub async fn create(&self, config: ExportConfig) -> Result<(Arc<Export>, bool), ExportError> {
        let spec = config.validate("export")?;
        let _change = self.inner.changes.lock().await;
        let name = spec.name().to_owned();
        if let Some(existing) = self.get(&name) {
            if existing.spec.config == spec.config {
                return Ok((existing, false));
            }
            return Err(CatalogError::Exists {
                kind: "export",
                name,
            }
            .into());
        }
        let max = self.inner.max_exports;
        if self.list().len() >= max {
            return Err(CatalogError::LimitReached {
                kind: "export",
                max,
                key: "limits.max_exports",
            }
            .into());
        }
        let export = self.start(spec, Origin::Api, "export").await?;
        let definition = serde_json::to_value(&export.spec.config)
            .map_err(|e| ExportError::State(format!("encoding the definition: {e}")))?;
        let catalog = self.inner.catalog.clone();
        let key = name.clone();
        let put =
            tokio::task::spawn_blocking(move || catalog.file().put(SECTION, &key, definition))
                .await
                .map_err(|e| ExportError::State(format!("catalog: {e}")))?;
        if let Err(e) = put {
            export.stop().await;
            return Err(e.into());
        }
        self.insert(Arc::clone(&export));
        Ok((export, true))
    }

    /// Deletes an export made through the API: stops it and forgets its
    /// cursor; the files it wrote stay where they are.
    pub async fn delete(&self, name: &str) -> Result<(), ExportError> {
        let _change = self.inner.changes.lock().await;
        let export = self.get(name).ok_or_else(|| CatalogError::NotFound {
            kind: "export",
            name: name.to_owned(),
        })?;
        if export.origin == Origin::Config {
            return Err(CatalogError::DefinedInConfig {
                kind: "export",
                name: name.to_owned(),
            }
            .into());
        }
        let catalog = self.inner.catalog.clone();
        let (key, dir) = (name.to_owned(), self.inner.dir.join(name));
        {
            let (catalog, key) = (catalog.clone(), key.clone());
            tokio::task::spawn_blocking(move || catalog.file().begin_delete(SECTION, &key))
                .await
                .map_err(|e| ExportError::State(format!("catalog: {e}")))??;
        }
        self.inner
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        export.stop().await;
        drop(export);
        tokio::task::spawn_blocking(move || -> Result<(), ExportError> {
            catalog
                .discard(&dir)
                .map_err(|e| ExportError::State(format!("removing {}: {e}", dir.display())))?;
            Ok(catalog.file().end_delete(SECTION, &key)?)
        })
        .await
        .map_err(|e| ExportError::State(format!("deleting the export: {e}")))??;
        self.inner.metrics.remove(name);
        tracing::info!(export = %name, "export deleted");
        Ok(())
    }

    /// Stops every export (at shutdown); buffered records are exported
    /// again after the restart.
    pub async fn close(&self) {
        for export in self.list() {
            export.stop().await;
        }
    }
}

fn pump_config() -> PumpConfig {
    PumpConfig {
        batch: BATCH,
        max_in_flight: BATCH as usize,
        ack_timeout: FLUSH_TIMEOUT,
        backoff_max: BACKOFF_MAX,
        linger: LINGER,
        ..PumpConfig::default()
    }
}
