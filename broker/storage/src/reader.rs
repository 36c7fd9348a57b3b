//! [`RecordScan`]: an iterator over committed records in an offset range,
//! across segment files.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{CorruptReason, Result, StorageError};
use crate::record::Record;
use crate::segment::{FrameReader, HEADER_LEN, POINT_READ_CHUNK, Stop, log_path};
use crate::shared::SegmentState;

/// The part of one segment a scan reads.
#[derive(Debug)]
struct Slice {
    path: PathBuf,
    start: u64,
    end: u64,
}

/// Committed records with offsets in a range, oldest first. Each item is
/// read from disk as the iterator advances (blocking I/O). Segments deleted
/// by retention while the scan runs are skipped.
#[derive(Debug)]
pub struct RecordScan {
    slices: VecDeque<Slice>,
    current: Option<FrameReader>,
    range: Range<u64>,
    bytes_read: u64,
}

impl RecordScan {
    pub(crate) fn new(dir: &Path, segments: &VecDeque<SegmentState>, range: Range<u64>) -> Self {
        let slices = segments
            .iter()
            .filter(|s| s.summary.end_offset > range.start && s.base < range.end)
            .map(|s| Slice {
                path: log_path(dir, s.base),
                start: s
                    .index
                    .floor_offset(range.start)
                    .map_or(HEADER_LEN, |e| e.position),
                end: s.summary.size,
            })
            .collect();
        RecordScan {
            slices,
            current: None,
            range,
            bytes_read: 0,
        }
    }

    /// Bytes of segment data this scan has opened for reading so far, which
    /// shows how much an offset or time bound pruned.
    pub fn bytes_opened(&self) -> u64 {
        self.bytes_read
    }

    fn next_reader(&mut self) -> Option<Result<FrameReader>> {
        while let Some(slice) = self.slices.pop_front() {
            match FrameReader::open(&slice.path, slice.start, slice.end) {
                Ok(reader) => {
                    let reader = if self.range.end.saturating_sub(self.range.start) == 1 {
                        reader.with_chunk(POINT_READ_CHUNK)
                    } else {
                        reader
                    };
                    self.bytes_read += slice.end.saturating_sub(slice.start);
                    return Some(Ok(reader));
                }
                // Retention deleted it after the scan was planned.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Some(Err(StorageError::io("open", slice.path, e))),
            }
        }
        None
    }
}

impl Iterator for RecordScan {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let reader = match &mut self.current {
                Some(reader) => reader,
                None => match self.next_reader()? {
                    Ok(reader) => self.current.insert(reader),
                    Err(e) => {
                        self.slices.clear();
                        return Some(Err(e));
                    }
                },
            };
            let position = reader.position();
            match reader.next_record() {
                Ok(Ok(record)) if record.offset < self.range.start => continue,
                Ok(Ok(record)) if record.offset >= self.range.end => {
                    self.slices.clear();
                    self.current = None;
                    return None;
                }
                Ok(Ok(record)) => return Some(Ok(record)),
                Ok(Err(Stop::End)) => self.current = None,
                Ok(Err(stop)) => {
                    let reason = match stop {
                        Stop::Corrupt(reason) => reason,
                        _ => CorruptReason::BadLength,
                    };
                    let path = reader.path().to_owned();
                    self.slices.clear();
                    self.current = None;
                    return Some(Err(StorageError::Corrupt {
                        path,
                        position,
                        reason,
                    }));
                }
                Err(e) => {
                    self.slices.clear();
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}
