//! Segment files: naming, the 16-byte header, and sequential frame reading
//! used both by readers and by recovery.
//!
//! A segment is `<base offset, 20 digits>.log`: a header (`magic | base
//! offset`) followed by frames. The file name is authoritative for the base
//! offset; the header marks the format.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::error::{CorruptReason, Result, StorageError};
use crate::index::{IndexEntry, SegmentSummary, SparseIndex};
use crate::record::{Decoded, FRAME_HEADER_LEN, Record, decode_frame};

/// Bytes of the segment header.
pub const HEADER_LEN: u64 = 16;
const MAGIC: &[u8; 8] = b"TWSEG\0\0\x01";
/// How much a reader fetches from disk at a time.
const READ_CHUNK: usize = 256 * 1024;
/// How much a reader of one record fetches at a time: the index entry it
/// starts from is at most an index interval (4 KiB by default) before the
/// record, and a larger frame is fetched whole once its length is read.
pub(crate) const POINT_READ_CHUNK: usize = 8 * 1024;

/// The path of the segment with `base` offset in `dir`.
pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The path of the index of the segment with `base` offset in `dir`.
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// The base offset named by a segment or index file name, with its kind.
pub fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// The header bytes for a segment with `base` offset.
pub fn header(base: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&base.to_le_bytes());
    h
}

/// True when `file` starts with a valid header for `base`.
pub fn has_valid_header(file: &File, base: u64) -> bool {
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0).is_ok() && h == header(base)
}

/// Why a [`FrameReader`] stopped. No frame starts with eight zero bytes
/// (a body is never empty), so zeros where a frame should start are
/// [`Stop::Unwritten`], not damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It reached its end limit exactly at a frame boundary.
    End,
    /// It reached the zero-filled space the writer keeps ahead of the
    /// active segment's last record (see [`crate::writer`]): the end of
    /// what was written, left by a crash.
    Unwritten,
    /// The bytes up to the limit end inside a frame (a torn write).
    Torn,
    /// The frame at the current position is damaged.
    Corrupt(CorruptReason),
}

/// Reads frames sequentially from one segment file, between a start
/// position and an end limit (the committed size for readers; the file
/// length for recovery).
#[derive(Debug)]
pub struct FrameReader {
    file: File,
    path: PathBuf,
    /// File position just past the bytes in `buf`.
    read_pos: u64,
    end: u64,
    buf: Bytes,
    /// How much one read fetches at least.
    chunk: usize,
}

impl FrameReader {
    /// Opens `path` for reading frames from `start` up to `end`.
    pub fn open(path: &Path, start: u64, end: u64) -> std::io::Result<FrameReader> {
        Ok(FrameReader {
            file: File::open(path)?,
            path: path.to_owned(),
            read_pos: start,
            end,
            buf: Bytes::new(),
            chunk: READ_CHUNK,
        })
    }

    /// Fetches `chunk` bytes at a time rather than [`READ_CHUNK`]: for
    /// reading one record, where a large read would be mostly waste.
    pub(crate) fn with_chunk(mut self, chunk: usize) -> FrameReader {
        self.chunk = chunk;
        self
    }

    /// The segment file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file position of the next frame.
    pub fn position(&self) -> u64 {
        self.read_pos - self.buf.len() as u64
    }

    /// The next record, or why there is none.
    pub fn next_record(&mut self) -> Result<std::result::Result<Record, Stop>> {
        loop {
            if self.buf.starts_with(&[0; FRAME_HEADER_LEN]) {
                return Ok(Err(Stop::Unwritten));
            }
            let needed = match decode_frame(&self.buf) {
                Decoded::Record { record, len } => {
                    let _ = self.buf.split_to(len);
                    return Ok(Ok(record));
                }
                Decoded::Corrupt(reason) => return Ok(Err(Stop::Corrupt(reason))),
                Decoded::NeedMore => frame_len_hint(&self.buf),
            };
            if self.read_pos >= self.end {
                return Ok(Err(if self.buf.is_empty() {
                    Stop::End
                } else {
                    Stop::Torn
                }));
            }
            self.fill(needed.max(self.chunk))?;
        }
    }

    /// Reads up to `want` more bytes (bounded by the end limit) after the
    /// unconsumed ones.
    fn fill(&mut self, want: usize) -> Result<()> {
        let more = want.min((self.end - self.read_pos) as usize);
        let mut next = BytesMut::with_capacity(self.buf.len() + more);
        next.extend_from_slice(&self.buf);
        next.resize(self.buf.len() + more, 0);
        let tail = &mut next[self.buf.len()..];
        let mut filled = 0;
        while filled < tail.len() {
            let n = self
                .file
                .read_at(&mut tail[filled..], self.read_pos + filled as u64)
                .map_err(|e| StorageError::io("read", &self.path, e))?;
            if n == 0 {
                break; // the file is shorter than the limit: treat as its end
            }
            filled += n;
        }
        next.truncate(self.buf.len() + filled);
        self.read_pos += filled as u64;
        if filled < more {
            self.end = self.read_pos;
        }
        self.buf = next.freeze();
        Ok(())
    }
}

/// The whole frame length when the buffer holds at least a frame header.
fn frame_len_hint(buf: &[u8]) -> usize {
    if buf.len() < 4 {
        return 0;
    }
    FRAME_HEADER_LEN + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The result of scanning a segment from its header to the end of the file.
#[derive(Debug)]
pub struct Scan {
    /// The index rebuilt from the valid records.
    pub index: SparseIndex,
    /// What the valid prefix holds.
    pub summary: SegmentSummary,
    /// Why the scan stopped; anything but [`Stop::End`] means the bytes from
    /// `summary.size` on are not valid records.
    pub stop: Stop,
}

/// Scans the segment with `base` offset, checking every frame's CRC and
/// that offsets follow one another, and rebuilds its index.
pub fn scan(path: &Path, base: u64, file_len: u64, index_interval: u64) -> Result<Scan> {
    let mut reader = FrameReader::open(path, HEADER_LEN, file_len)
        .map_err(|e| StorageError::io("open", path, e))?;
    let mut index = SparseIndex::default();
    let mut summary = SegmentSummary {
        end_offset: base,
        size: HEADER_LEN,
        min_ts: None,
        max_ts: None,
    };
    let stop = loop {
        let position = reader.position();
        let record = match reader.next_record()? {
            Ok(record) => record,
            Err(stop) => break stop,
        };
        let out_of_order = summary.max_ts.is_some_and(|max| record.timestamp_ms < max);
        if record.offset != summary.end_offset || out_of_order {
            break Stop::Corrupt(CorruptReason::BadBody);
        }
        index.observe(
            IndexEntry {
                offset: record.offset,
                position,
                timestamp_ms: record.timestamp_ms,
            },
            index_interval,
        );
        summary.end_offset = record.offset + 1;
        summary.size = reader.position();
        summary.min_ts.get_or_insert(record.timestamp_ms);
        summary.max_ts = Some(record.timestamp_ms);
    };
    Ok(Scan {
        index,
        summary,
        stop,
    })
}

/// Creates a new, empty segment durably: file, header, fsync, directory fsync.
pub(crate) fn create_segment(dir: &Path, base: u64) -> Result<File> {
    let path = log_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| StorageError::io("create", &path, e))?;
    file.write_all_at(&header(base), 0)
        .map_err(|e| StorageError::io("write", &path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync", &path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Fsyncs a directory, making file creations and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Removes a file; one already gone is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io("remove", path, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of one record fetches what it needs, not a whole chunk.
    #[test]
    fn point_reads_fetch_little() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), 0);
        let mut bytes = header(0).to_vec();
        let message = crate::Message {
            topic: "t".into(),
            payload: bytes::Bytes::from(vec![b'x'; 1000]),
            ..crate::Message::default()
        };
        for offset in 0..300 {
            crate::record::encode_frame(&mut bytes, offset, 1, &message);
        }
        std::fs::write(&path, &bytes).expect("write");
        let end = bytes.len() as u64;
        for (chunk, fetched) in [
            (READ_CHUNK, READ_CHUNK),
            (POINT_READ_CHUNK, POINT_READ_CHUNK),
        ] {
            let mut reader = FrameReader::open(&path, HEADER_LEN, end)
                .expect("open")
                .with_chunk(chunk);
            let record = reader.next_record().expect("read").expect("a record");
            assert_eq!(record.offset, 0);
            assert_eq!(reader.read_pos, HEADER_LEN + fetched as u64);
        }
        // A frame larger than the chunk is fetched whole.
        let big = crate::Message {
            payload: bytes::Bytes::from(vec![b'y'; 3 * POINT_READ_CHUNK]),
            ..message
        };
        let mut bytes = header(0).to_vec();
        crate::record::encode_frame(&mut bytes, 0, 1, &big);
        std::fs::write(&path, &bytes).expect("write");
        let mut reader = FrameReader::open(&path, HEADER_LEN, bytes.len() as u64)
            .expect("open")
            .with_chunk(POINT_READ_CHUNK);
        let record = reader.next_record().expect("read").expect("a record");
        assert_eq!(record.message.payload, big.payload);
    }

    #[test]
    fn file_names_round_trip() {
        let dir = Path::new("/d");
        let path = log_path(dir, 42);
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_file_name(name), Some((42, "log")));
        assert_eq!(
            parse_file_name("00000000000000000042.idx"),
            Some((42, "idx"))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }
}
