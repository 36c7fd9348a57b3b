//! The sparse index of one segment: every few KiB of log, one entry of
//! (offset, byte position, timestamp). Because offsets and broker timestamps
//! both never decrease within a stream, one index serves lookups by offset
//! and by time.
//!
//! The index of a sealed segment is written next to it as `<base>.idx` with
//! a summary footer and a CRC. It is only a cache: a missing or damaged index
//! is rebuilt by scanning the log.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StorageError};

const MAGIC: &[u8; 8] = b"TWIDX\0\0\x01";
const ENTRY_LEN: usize = 24;
const FOOTER_LEN: usize = 8 * 5 + 4;

/// One index point: the record at `offset` starts at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Record offset.
    pub offset: u64,
    /// Byte position of its frame in the segment file.
    pub position: u64,
    /// Its broker timestamp.
    pub timestamp_ms: i64,
}

/// What a segment holds, summarised; stored in the index footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Offset after the last record (the base offset when empty).
    pub end_offset: u64,
    /// Length of the valid log, header included.
    pub size: u64,
    /// Timestamp of the first record, if any.
    pub min_ts: Option<i64>,
    /// Timestamp of the last record, if any.
    pub max_ts: Option<i64>,
}

/// The sparse index of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// Adds an entry if the record at `position` is at least `interval`
    /// bytes past the last entry (the first record is always indexed).
    pub fn observe(&mut self, entry: IndexEntry, interval: u64) {
        let due = self
            .entries
            .last()
            .is_none_or(|last| entry.position >= last.position + interval);
        if due {
            self.entries.push(entry);
        }
    }

    /// Appends entries observed elsewhere (they must follow this index).
    pub fn extend(&mut self, entries: &[IndexEntry]) {
        self.entries.extend_from_slice(entries);
    }

    /// Drops entries past the first `len` (used to undo a failed write).
    pub fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The last entry at or before `offset`: where a scan for it can start.
    pub fn floor_offset(&self, offset: u64) -> Option<IndexEntry> {
        let idx = self.entries.partition_point(|e| e.offset <= offset);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry strictly before time `ts`: every record before it is
    /// older than `ts`, so a scan for the first record at `ts` starts there.
    pub fn floor_time(&self, ts: i64) -> Option<IndexEntry> {
        let idx = self.entries.partition_point(|e| e.timestamp_ms < ts);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// Writes the index and summary to `path` atomically and durably
    /// (temporary file, fsync, rename). The caller fsyncs the directory.
    pub fn write(&self, path: &Path, summary: &SegmentSummary) -> Result<()> {
        let mut buf = Vec::with_capacity(MAGIC.len() + self.entries.len() * ENTRY_LEN + FOOTER_LEN);
        buf.extend_from_slice(MAGIC);
        for e in &self.entries {
            buf.extend_from_slice(&e.offset.to_le_bytes());
            buf.extend_from_slice(&e.position.to_le_bytes());
            buf.extend_from_slice(&e.timestamp_ms.to_le_bytes());
        }
        buf.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        buf.extend_from_slice(&summary.end_offset.to_le_bytes());
        buf.extend_from_slice(&summary.size.to_le_bytes());
        buf.extend_from_slice(&summary.min_ts.unwrap_or(i64::MAX).to_le_bytes());
        buf.extend_from_slice(&summary.max_ts.unwrap_or(i64::MIN).to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());

        let tmp = path.with_extension("idx.tmp");
        let mut file = fs::File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
        file.write_all(&buf)
            .map_err(|e| StorageError::io("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StorageError::io("rename", path, e))
    }

    /// Reads an index written by [`SparseIndex::write`]. Returns `None` when
    /// the file is missing or fails any check, so the caller rebuilds it.
    pub fn load(path: &Path) -> Option<(SparseIndex, SegmentSummary)> {
        let buf = fs::read(path).ok()?;
        if buf.len() < MAGIC.len() + FOOTER_LEN || &buf[..MAGIC.len()] != MAGIC {
            return None;
        }
        let (content, crc) = buf.split_at(buf.len() - 4);
        if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let footer = &content[content.len() - (FOOTER_LEN - 4)..];
        let word = |i: usize| -> Option<[u8; 8]> { footer.get(i * 8..i * 8 + 8)?.try_into().ok() };
        let count = u64::from_le_bytes(word(0)?) as usize;
        let entries_bytes = &content[MAGIC.len()..content.len() - (FOOTER_LEN - 4)];
        if entries_bytes.len() != count.checked_mul(ENTRY_LEN)? {
            return None;
        }
        let min_ts = i64::from_le_bytes(word(3)?);
        let max_ts = i64::from_le_bytes(word(4)?);
        let summary = SegmentSummary {
            end_offset: u64::from_le_bytes(word(1)?),
            size: u64::from_le_bytes(word(2)?),
            min_ts: (min_ts != i64::MAX).then_some(min_ts),
            max_ts: (max_ts != i64::MIN).then_some(max_ts),
        };
        let entries = entries_bytes
            .chunks_exact(ENTRY_LEN)
            .map(|c| {
                let field = |i: usize| -> [u8; 8] {
                    let mut b = [0; 8];
                    b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                    b
                };
                IndexEntry {
                    offset: u64::from_le_bytes(field(0)),
                    position: u64::from_le_bytes(field(1)),
                    timestamp_ms: i64::from_le_bytes(field(2)),
                }
            })
            .collect();
        Some((SparseIndex { entries }, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseIndex {
        let mut index = SparseIndex::default();
        for i in 0..100u64 {
            let entry = IndexEntry {
                offset: 10 + i,
                position: 16 + i * 100,
                timestamp_ms: 1_000 + (i as i64 / 3),
            };
            index.observe(entry, 1000);
        }
        index
    }

    #[test]
    fn observe_is_sparse_and_lookups_floor() {
        let index = sample();
        assert_eq!(index.entries().len(), 10);
        assert_eq!(index.floor_offset(9), None);
        assert_eq!(index.floor_offset(10).map(|e| e.offset), Some(10));
        assert_eq!(index.floor_offset(25).map(|e| e.offset), Some(20));
        assert_eq!(index.floor_offset(u64::MAX).map(|e| e.offset), Some(100));
        // Entry timestamps are 1000, 1003, 1006, ...: floor_time is strict.
        assert_eq!(index.floor_time(1000), None);
        assert_eq!(index.floor_time(1003).map(|e| e.offset), Some(10));
        assert_eq!(index.floor_time(1004).map(|e| e.offset), Some(20));
    }

    #[test]
    fn write_then_load_round_trips_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000010.idx");
        let index = sample();
        let summary = SegmentSummary {
            end_offset: 110,
            size: 10_016,
            min_ts: Some(1000),
            max_ts: Some(1033),
        };
        index.write(&path, &summary).expect("write");
        assert_eq!(SparseIndex::load(&path), Some((index.clone(), summary)));

        let good = fs::read(&path).expect("read");
        for at in [0, 9, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(&path, &bad).expect("write");
            assert_eq!(SparseIndex::load(&path), None, "flip at {at}");
        }
        fs::write(&path, &good[..good.len() - 3]).expect("write");
        assert_eq!(SparseIndex::load(&path), None);
        let empty = SparseIndex::default();
        let summary = SegmentSummary {
            end_offset: 0,
            size: 16,
            min_ts: None,
            max_ts: None,
        };
        empty.write(&path, &summary).expect("write");
        assert_eq!(SparseIndex::load(&path), Some((empty, summary)));
    }
}
