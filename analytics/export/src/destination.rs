//! Where an export's files go, through DataFusion's `object_store` (the
//! same stores its Parquet reader reads): a local directory, or an S3
//! bucket (any S3-compatible endpoint).
//!
//! - A local file is written durably: to a sibling `*.tmp`, fsynced,
//!   renamed, its directory fsynced (new partition directories too).
//! - An S3 object is written with a multipart upload, which S3 makes
//!   visible only when it completes.
//!
//! Either way a file is there whole or not at all, and writing one again
//! replaces it.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tidewire_core::ConfigError;

use crate::config::{ExportSpec, Location, S3Config};

/// The name of the file written and deleted to check a destination.
const PROBE: &str = ".tidewire-probe";

/// An export's destination.
#[derive(Debug, Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    /// Object paths start here (the S3 prefix; empty for a directory,
    /// whose store is rooted at it).
    prefix: Path,
    /// The directory, for a local destination.
    local: Option<PathBuf>,
    url: String,
}

impl Destination {
    /// The store for `spec`'s URL; `key` names the export in errors. No
    /// I/O yet: [`Destination::check`] tries it.
    pub fn open(spec: &ExportSpec, key: &str) -> Result<Destination, ConfigError> {
        let url = spec.config.url.clone();
        match &spec.location {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ConfigError::new(
                        format!("{key}.url"),
                        format!("cannot create {}: {e}", dir.display()),
                    )
                })?;
                let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    ConfigError::new(format!("{key}.url"), format!("{}: {e}", dir.display()))
                })?;
                Ok(Destination {
                    store: Arc::new(store),
                    prefix: Path::default(),
                    local: Some(dir.clone()),
                    url,
                })
            }
            Location::S3 { bucket, prefix } => {
                let s3 = spec.config.s3.clone().unwrap_or_default();
                let store = s3_store(bucket, &s3)
                    .map_err(|e| ConfigError::new(format!("{key}.s3"), e.to_string()))?;
                Ok(Destination {
                    store: Arc::new(store),
                    prefix: Path::from(prefix.as_str()),
                    local: None,
                    url,
                })
            }
        }
    }

    /// The store, for reading the files back.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Where the files are in the store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The object path of `relative` (a `/`-separated path under the URL).
    pub fn path(&self, relative: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// Writes and deletes a small file: the directory is writable, or the
    /// bucket exists and the credentials may write to it.
    pub async fn check(&self) -> Result<(), String> {
        self.put(PROBE, Bytes::from_static(b"tidewire"))
            .await
            .map_err(|e| format!("{} is not writable: {e}", self.url))?;
        self.store
            .delete(&self.path(PROBE))
            .await
            .map_err(|e| format!("{}: cannot delete a file written there: {e}", self.url))
    }

    /// Writes `bytes` to `relative`, whole or not at all, replacing what
    /// is there.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), String> {
        match &self.local {
            Some(dir) => {
                let path = dir.join(relative);
                let root = dir.clone();
                tokio::task::spawn_blocking(move || write_durably(&root, &path, &bytes))
                    .await
                    .map_err(|e| format!("writing task: {e}"))?
                    .map_err(|e| format!("{relative}: {e}"))
            }
            None => {
                let path = self.path(relative);
                let upload = self
                    .store
                    .put_multipart(&path)
                    .await
                    .map_err(|e| format!("{path}: {e}"))?;
                let mut writer = WriteMultipart::new(upload);
                writer.put(bytes);
                writer
                    .finish()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{path}: {e}"))
            }
        }
    }

    /// Every Parquet file under the URL, with its size.
    pub async fn list(&self) -> Result<Vec<(Path, u64)>, String> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        self.store
            .list(prefix)
            .map_ok(|meta| (meta.location, meta.size))
            .try_filter(|(path, _)| {
                std::future::ready(path.filename().is_some_and(|n| n.ends_with(".parquet")))
            })
            .try_collect()
            .await
            .map_err(|e| format!("{}: {e}", self.url))
    }

    /// Removes files a crash left half written (`*.tmp`, local only).
    pub fn remove_leftovers(&self) -> std::io::Result<usize> {
        match &self.local {
            Some(dir) => remove_tmp(dir),
            None => Ok(0),
        }
    }
}

fn s3_store(bucket: &str, s3: &S3Config) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".to_owned()));
    if let Some(endpoint) = &s3.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder.build()
}

/// Writes a file durably under `root`, creating (and syncing) missing
/// directories on the way.
fn write_durably(root: &FsPath, path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        create_dirs_durably(root, parent)?;
    }
    tidewire_storage::durable_file::replace(path, bytes)
}

/// `create_dir_all`, fsyncing the parent of each directory it makes.
fn create_dirs_durably(root: &FsPath, dir: &FsPath) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && parent.starts_with(root)
    {
        create_dirs_durably(root, parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn remove_tmp(dir: &FsPath) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            removed += remove_tmp(&path)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".parquet.tmp"))
        {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExportConfig;

    #[tokio::test]
    async fn local_files_are_written_whole_and_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().join("lake").display());
        let spec = ExportConfig::new("lake", "events", &url)
            .validate("exports[0]")
            .expect("valid");
        let destination = Destination::open(&spec, "exports[0]").expect("opens");
        destination.check().await.expect("writable");
        destination
            .put(
                "dt=2024-01-01/hour=00/lake-0-9.parquet",
                Bytes::from_static(b"PAR1"),
            )
            .await
            .expect("put");
        destination
            .put(
                "dt=2024-01-01/hour=00/lake-0-9.parquet",
                Bytes::from_static(b"PAR1x"),
            )
            .await
            .expect("replace");
        std::fs::write(
            dir.path()
                .join("lake/dt=2024-01-01/hour=00/lake-10-19.parquet.tmp"),
            b"half",
        )
        .expect("leftover");
        assert_eq!(destination.remove_leftovers().expect("cleans"), 1);
        let files = destination.list().await.expect("lists");
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].0.as_ref(),
            "dt=2024-01-01/hour=00/lake-0-9.parquet"
        );
        assert_eq!(files[0].1, 5);
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("file");
        let url = format!("file://{}/sub", file.display());
        let spec = ExportConfig::new("lake", "events", &url)
            .validate("exports[0]")
            .expect("valid");
        let error = Destination::open(&spec, "exports[0]").expect_err("not a directory");
        assert_eq!(error.key, "exports[0].url");
    }
}
