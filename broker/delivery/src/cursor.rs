//! A consumer's durable cursor: the next stream offset to deliver, in a
//! small JSON file replaced atomically (write, fsync, rename, fsync the
//! directory) so a crash leaves the old or the new value, never a torn
//! one. Each commit replaces the file, so it never grows.
//!
//! The file also holds the consumer's identity (for the NATS bridge: the
//! stream, the topic filter and the subject), so a consumer whose
//! identity changed starts afresh instead of inheriting a foreign cursor.
//! The file is the identity's fields plus `next_offset`, e.g.
//! `{"stream":"events","from":"a/#","subject":"x.>","next_offset":42}`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the offset field in the file.
const NEXT_OFFSET: &str = "next_offset";

/// What the cursor file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CursorFile {
    /// Who the cursor belongs to.
    #[serde(flatten)]
    identity: BTreeMap<String, String>,
    /// The next offset to deliver: everything before it was accepted.
    next_offset: u64,
}

/// One consumer's cursor file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
    identity: BTreeMap<String, String>,
}

impl Cursor {
    /// The cursor at `path` for the consumer named by `identity`, a set
    /// of `(field, value)` pairs. A field may not be called `next_offset`.
    pub fn new<K, V>(path: PathBuf, identity: impl IntoIterator<Item = (K, V)>) -> Cursor
    where
        K: Into<String>,
        V: Into<String>,
    {
        let identity: BTreeMap<String, String> = identity
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        debug_assert!(!identity.contains_key(NEXT_OFFSET), "reserved field");
        Cursor { path, identity }
    }

    /// The committed offset, or `None` when there is none for this
    /// consumer. A file that cannot be read or parsed is an error: the
    /// operator must look, rather than the consumer silently starting
    /// over. Blocking file I/O.
    pub fn load(&self) -> std::io::Result<Option<u64>> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file: CursorFile = serde_json::from_slice(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.display()),
            )
        })?;
        Ok((file.identity == self.identity).then_some(file.next_offset))
    }

    /// Durably records `next_offset`. Blocking file I/O.
    pub fn commit(&self, next_offset: u64) -> std::io::Result<()> {
        let file = CursorFile {
            identity: self.identity.clone(),
            next_offset,
        };
        let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        tidewire_storage::durable_file::replace(&self.path, &text)
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(dir: &Path, stream: &str) -> Cursor {
        Cursor::new(
            dir.join("outbound-0.json"),
            [("stream", stream), ("from", "a/#"), ("subject", "x.>")],
        )
    }

    #[test]
    fn commits_survive_and_belong_to_their_consumer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cursor = cursor(dir.path(), "events");
        assert_eq!(cursor.load().expect("load"), None);
        cursor.commit(42).expect("commit");
        cursor.commit(43).expect("commit");
        assert_eq!(cursor.load().expect("load"), Some(43));
        let changed = self::cursor(dir.path(), "other");
        assert_eq!(changed.load().expect("load"), None);
        fs::write(cursor.path(), b"{torn").expect("write");
        assert!(cursor.load().is_err());
    }

    #[test]
    fn nats_bridge_cursor_files_still_load() {
        // The shape the NATS bridge wrote before the delivery layer.
        let dir = tempfile::tempdir().expect("tempdir");
        let cursor = cursor(dir.path(), "events");
        fs::write(
            cursor.path(),
            br#"{"stream":"events","from":"a/#","subject":"x.>","next_offset":7}"#,
        )
        .expect("write");
        assert_eq!(cursor.load().expect("load"), Some(7));
        cursor.commit(8).expect("commit");
        let text = fs::read_to_string(cursor.path()).expect("read");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"stream": "events", "from": "a/#", "subject": "x.>", "next_offset": 8})
        );
    }
}
