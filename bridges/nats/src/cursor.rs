//! An outbound link's durable cursor: the next stream offset to send,
//! in a small JSON file replaced atomically (write, fsync, rename, fsync
//! the directory) so a crash leaves the old or the new value, never a
//! torn one. The file also names the link, so a link whose stream, filter
//! or subject changed starts afresh instead of inheriting a foreign cursor.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the cursor file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorFile {
    /// The stream read.
    pub stream: String,
    /// The link's topic filter.
    pub from: String,
    /// The link's subject template.
    pub subject: String,
    /// The next offset to send: everything before it was acknowledged.
    pub next_offset: u64,
}

/// One link's cursor file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
    link: CursorFile,
}

impl Cursor {
    /// The cursor at `dir/outbound-<index>.json` for the link described
    /// by `link` (its `next_offset` is ignored).
    pub fn new(dir: &Path, index: usize, link: CursorFile) -> Cursor {
        Cursor {
            path: dir.join(format!("outbound-{index}.json")),
            link,
        }
    }

    /// The committed offset, or `None` when there is none for this link.
    /// A file that cannot be read or parsed is an error: the operator
    /// must look, rather than the bridge silently starting over.
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
        let same_link = CursorFile {
            next_offset: file.next_offset,
            ..self.link.clone()
        } == file;
        Ok(same_link.then_some(file.next_offset))
    }

    /// Durably records `next_offset`. Blocking file I/O.
    pub fn commit(&self, next_offset: u64) -> std::io::Result<()> {
        let file = CursorFile {
            next_offset,
            ..self.link.clone()
        };
        let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut out = File::create(&tmp)?;
        out.write_all(&text)?;
        out.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(stream: &str) -> CursorFile {
        CursorFile {
            stream: stream.into(),
            from: "a/#".into(),
            subject: "x.>".into(),
            next_offset: 0,
        }
    }

    #[test]
    fn commits_survive_and_belong_to_their_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cursor = Cursor::new(dir.path(), 0, link("events"));
        assert_eq!(cursor.load().expect("load"), None);
        cursor.commit(42).expect("commit");
        cursor.commit(43).expect("commit");
        assert_eq!(cursor.load().expect("load"), Some(43));
        let changed = Cursor::new(dir.path(), 0, link("other"));
        assert_eq!(changed.load().expect("load"), None);
        fs::write(cursor.path(), b"{torn").expect("write");
        assert!(cursor.load().is_err());
    }
}
