//! The flushes an export planned: before a flush writes its files, the
//! offset range it covers is recorded here (`DATA_DIR/exports/NAME/
//! flushes.json`, replaced durably). After a crash the export re-reads the
//! stream from its cursor and cuts its flushes at the recorded ends, so it
//! writes the same files with the same names and contents: a file written
//! before the crash is replaced by an identical one, never joined by a
//! second copy of its records. Ranges wholly before the cursor are
//! forgotten at start-up, and only the latest [`KEEP`] are kept.

use std::collections::VecDeque;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Planned flushes kept: far more than a cursor commit can lag behind.
pub const KEEP: usize = 1000;

/// One planned flush: the offsets it covers, first and last included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub first: u64,
    pub last: u64,
}

/// The planned flushes of one export.
#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    planned: VecDeque<Planned>,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    flushes: Vec<Planned>,
}

impl Manifest {
    /// Loads the manifest at `path`, forgetting the ranges wholly before
    /// `cursor`. Blocking file I/O.
    pub fn load(path: PathBuf, cursor: u64) -> std::io::Result<Manifest> {
        let planned = match std::fs::read(&path) {
            Ok(text) => {
                let file: File = serde_json::from_slice(&text).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                file.flushes
                    .into_iter()
                    .filter(|p| p.last >= cursor)
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => return Err(e),
        };
        Ok(Manifest { path, planned })
    }

    /// Where a flush that started at `first` must end, if one was planned.
    pub fn planned_end(&self, first: u64) -> Option<u64> {
        self.planned
            .iter()
            .find(|p| p.last >= first)
            .map(|p| p.last)
    }

    /// Records a flush of `first..=last` before its files are written
    /// (nothing to do when it was planned already). Blocking file I/O.
    pub fn plan(&mut self, first: u64, last: u64) -> std::io::Result<()> {
        if self
            .planned
            .iter()
            .any(|p| p.first <= first && p.last == last)
        {
            return Ok(());
        }
        self.planned.retain(|p| p.last < first);
        self.planned.push_back(Planned { first, last });
        while self.planned.len() > KEEP {
            self.planned.pop_front();
        }
        let file = File {
            flushes: self.planned.iter().copied().collect(),
        };
        let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        tidewire_storage::durable_file::replace(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_ends_survive_a_restart_and_old_ones_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flushes.json");
        let mut manifest = Manifest::load(path.clone(), 0).expect("empty");
        assert_eq!(manifest.planned_end(0), None);
        manifest.plan(0, 99).expect("plan");
        manifest.plan(100, 149).expect("plan");
        manifest.plan(100, 149).expect("again");
        let again = Manifest::load(path.clone(), 100).expect("reload");
        assert_eq!(again.planned_end(100), Some(149));
        assert_eq!(
            again.planned_end(0),
            Some(149),
            "0..=99 is before the cursor"
        );
        let fresh = Manifest::load(path, 150).expect("reload");
        assert_eq!(fresh.planned_end(150), None);
    }
}
