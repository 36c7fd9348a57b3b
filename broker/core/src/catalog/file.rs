//! `DATA_DIR/catalog.json`: the definitions created at run time, by kind
//! (`streams` today; queues, topics, rules and exports take a kind each),
//! and the deletions not yet finished. Every change is written whole with
//! [`tidewire_storage::durable_file::replace`] before it is acknowledged,
//! so a crash leaves the catalog as it was before or after, never between.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CatalogError;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "catalog.json";
/// The format written; a file from a newer format is refused, not guessed at.
const VERSION: u32 = 1;

/// The file's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    /// kind -> name -> definition.
    #[serde(default)]
    entries: BTreeMap<String, BTreeMap<String, Value>>,
    /// kind -> names whose deletion was decided but whose data may remain.
    #[serde(default)]
    deleting: BTreeMap<String, BTreeSet<String>>,
}

/// The catalog file, loaded, with every change written through.
#[derive(Debug)]
pub struct CatalogFile {
    path: PathBuf,
    document: Mutex<Document>,
}

impl CatalogFile {
    /// Loads `data_dir/catalog.json`; a missing file is an empty catalog.
    /// Blocking file I/O.
    pub fn open(data_dir: &Path) -> Result<CatalogFile, CatalogError> {
        let path = data_dir.join(FILE_NAME);
        let document = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Document {
                version: VERSION,
                ..Document::default()
            },
            Err(e) => {
                return Err(CatalogError::Io {
                    what: "read",
                    path,
                    source: e,
                });
            }
        };
        Ok(CatalogFile {
            path,
            document: Mutex::new(document),
        })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every definition of `kind`, by name.
    pub fn entries(&self, kind: &str) -> BTreeMap<String, Value> {
        self.lock().entries.get(kind).cloned().unwrap_or_default()
    }

    /// The names of `kind` whose deletion is unfinished.
    pub fn deleting(&self, kind: &str) -> BTreeSet<String> {
        self.lock().deleting.get(kind).cloned().unwrap_or_default()
    }

    /// Adds or replaces a definition. Blocking file I/O.
    pub fn put(&self, kind: &str, name: &str, definition: Value) -> Result<(), CatalogError> {
        self.change(|d| {
            d.entries
                .entry(kind.to_owned())
                .or_default()
                .insert(name.to_owned(), definition);
        })
    }

    /// Drops a definition whose creation failed. Blocking file I/O.
    pub fn remove(&self, kind: &str, name: &str) -> Result<(), CatalogError> {
        self.change(|d| remove_entry(d, kind, name))
    }

    /// Drops a definition and records that its data is being deleted.
    /// Blocking file I/O.
    pub fn begin_delete(&self, kind: &str, name: &str) -> Result<(), CatalogError> {
        self.change(|d| {
            remove_entry(d, kind, name);
            d.deleting
                .entry(kind.to_owned())
                .or_default()
                .insert(name.to_owned());
        })
    }

    /// Records that the data of a deleted definition is gone. Blocking
    /// file I/O.
    pub fn end_delete(&self, kind: &str, name: &str) -> Result<(), CatalogError> {
        self.change(|d| {
            if let Some(names) = d.deleting.get_mut(kind) {
                names.remove(name);
                if names.is_empty() {
                    d.deleting.remove(kind);
                }
            }
        })
    }

    /// Applies `edit` to a copy, writes the copy, and keeps it only once
    /// it is durable.
    fn change(&self, edit: impl FnOnce(&mut Document)) -> Result<(), CatalogError> {
        let mut document = self.lock();
        let mut next = document.clone();
        edit(&mut next);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| CatalogError::Io {
            what: "encode",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        tidewire_storage::durable_file::replace(&self.path, &bytes).map_err(|source| {
            CatalogError::Io {
                what: "write",
                path: self.path.clone(),
                source,
            }
        })?;
        *document = next;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Document> {
        // A panic mid-change leaves the last durable document: use it.
        self.document.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn remove_entry(document: &mut Document, kind: &str, name: &str) {
    if let Some(names) = document.entries.get_mut(kind) {
        names.remove(name);
        if names.is_empty() {
            document.entries.remove(kind);
        }
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Document, CatalogError> {
    let damaged = |reason: String| CatalogError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let document: Document =
        serde_json::from_slice(bytes).map_err(|e| damaged(format!("not a catalog: {e}")))?;
    if document.version != VERSION {
        return Err(damaged(format!(
            "format version {} (this tidewire reads version {VERSION})",
            document.version
        )));
    }
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = CatalogFile::open(dir.path()).expect("open empty");
        assert!(file.entries("streams").is_empty());
        file.put("streams", "a", json!({"name": "a"})).expect("put");
        file.put("streams", "b", json!({"name": "b"})).expect("put");
        file.begin_delete("streams", "a").expect("delete");

        let reopened = CatalogFile::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.entries("streams").keys().collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            reopened.deleting("streams").into_iter().collect::<Vec<_>>(),
            ["a"]
        );
        reopened.end_delete("streams", "a").expect("end");
        reopened.remove("streams", "b").expect("remove");
        let empty = CatalogFile::open(dir.path()).expect("reopen");
        assert!(empty.entries("streams").is_empty());
        assert!(empty.deleting("streams").is_empty());
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        for (bytes, expected) in [
            (
                &b"{\"version\":1,\"entries\":{\"streams\":"[..],
                "not a catalog",
            ),
            (b"\0\0\0garbage", "not a catalog"),
            (b"{\"version\":7}", "format version 7"),
            (b"{\"version\":1,\"extra\":1}", "unknown field"),
        ] {
            std::fs::write(&path, bytes).expect("write");
            let err = CatalogFile::open(dir.path()).expect_err("damaged");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(expected), "{text}");
        }
    }
}
