//! Opening a stream directory after a clean stop or a crash.
//!
//! Sealed segments were fsynced, with their index, when they were sealed, so
//! they are trusted once their index agrees with the file length; otherwise
//! they are scanned and re-indexed. The active (last) segment is the only one
//! a crash can leave torn: it is scanned frame by frame, checking each CRC
//! and that offsets follow on, and cut at the first bad frame, or where the
//! zero-filled space the writer keeps ahead of its records begins.
//! Everything before that point is kept; nothing after it is invented.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::index::SparseIndex;
use crate::segment::{
    self, HEADER_LEN, create_segment, has_valid_header, index_path, log_path, remove_if_exists,
    sync_dir,
};
use crate::shared::SegmentState;

/// A recovered stream directory.
pub(crate) struct Recovered {
    /// All segments, oldest first; the last is the active one.
    pub segments: VecDeque<SegmentState>,
    /// The active segment, open for writing.
    pub active: File,
    /// Bytes cut off damaged tails.
    pub truncated_bytes: u64,
}

/// Recovers (or creates) the stream directory `dir`.
pub(crate) fn recover(dir: &Path, config: &LogConfig, stream: &str) -> Result<Recovered> {
    create_dir(dir)?;
    let bases = segment_bases(dir)?;
    let mut truncated_bytes = 0;
    let mut segments = VecDeque::with_capacity(bases.len().max(1));

    let Some((&active_base, sealed)) = bases.split_last() else {
        let active = create_segment(dir, 0)?;
        segments.push_back(SegmentState::empty(0));
        return Ok(Recovered {
            segments,
            active,
            truncated_bytes,
        });
    };

    for &base in sealed {
        let (state, cut) = recover_sealed(dir, base, config, stream)?;
        truncated_bytes += cut;
        segments.push_back(state);
    }

    let path = log_path(dir, active_base);
    let active = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open", &path, e))?;
    repair_header(&active, &path, active_base, stream)?;
    let (state, cut) = scan_and_cut(&active, &path, active_base, config, stream, true)?;
    truncated_bytes += cut;
    // An index left over from a crash mid-roll describes a segment that is
    // active again and will grow: drop it.
    remove_if_exists(&index_path(dir, active_base))?;
    segments.push_back(state);
    Ok(Recovered {
        segments,
        active,
        truncated_bytes,
    })
}

fn recover_sealed(
    dir: &Path,
    base: u64,
    config: &LogConfig,
    stream: &str,
) -> Result<(SegmentState, u64)> {
    let path = log_path(dir, base);
    let idx_path = index_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open", &path, e))?;
    let len = file_len(&file, &path)?;
    if let Some((index, summary)) = SparseIndex::load(&idx_path)
        && summary.size == len
        && has_valid_header(&file, base)
    {
        return Ok((
            SegmentState {
                base,
                index,
                summary,
            },
            0,
        ));
    }
    tracing::info!(stream, segment = %path.display(), "rebuilding segment index");
    repair_header(&file, &path, base, stream)?;
    let (state, cut) = scan_and_cut(&file, &path, base, config, stream, false)?;
    state.index.write(&idx_path, &state.summary)?;
    sync_dir(dir)?;
    Ok((state, cut))
}

/// Scans a segment and truncates anything after its last valid record.
/// In the active segment, zeros after the records are the space the
/// writer keeps ahead of them (a crash left it): cut quietly, and only the
/// bytes up to the last non-zero one count as damage. In a sealed segment
/// everything cut is damage.
fn scan_and_cut(
    file: &File,
    path: &Path,
    base: u64,
    config: &LogConfig,
    stream: &str,
    active: bool,
) -> Result<(SegmentState, u64)> {
    let len = file_len(file, path)?;
    let scan = segment::scan(path, base, len, config.index_interval_bytes)?;
    let valid = scan.summary.size;
    let mut cut = 0;
    if valid < len {
        let written = if active {
            end_of_non_zero(file, path, valid, len)?
        } else {
            len
        };
        if written == valid {
            tracing::debug!(
                stream,
                segment = %path.display(),
                bytes = len - valid,
                "cutting the preallocated zeros after the last record"
            );
        } else {
            cut = written - valid;
            tracing::warn!(
                stream,
                segment = %path.display(),
                kept_records = scan.summary.end_offset - base,
                valid_bytes = valid,
                cut_bytes = cut,
                reason = ?scan.stop,
                "truncating damaged or torn segment tail"
            );
        }
        file.set_len(valid)
            .map_err(|e| StorageError::io("truncate", path, e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync", path, e))?;
    }
    let state = SegmentState {
        base,
        index: scan.index,
        summary: scan.summary,
    };
    Ok((state, cut))
}

/// The position just past the last non-zero byte between `from` and `to`
/// (`from` when they are all zeros).
fn end_of_non_zero(file: &File, path: &Path, from: u64, to: u64) -> Result<u64> {
    let mut buf = vec![0; 64 * 1024];
    let mut end = from;
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| StorageError::io("read", path, e))?;
        if let Some(last) = buf[..n].iter().rposition(|&b| b != 0) {
            end = at + last as u64 + 1;
        }
        at += n as u64;
    }
    Ok(end)
}

/// Rewrites a missing or damaged header. The file name carries the base
/// offset, so the records behind the header stay usable.
fn repair_header(file: &File, path: &Path, base: u64, stream: &str) -> Result<()> {
    if has_valid_header(file, base) {
        return Ok(());
    }
    tracing::warn!(stream, segment = %path.display(), "rewriting damaged segment header");
    if file_len(file, path)? < HEADER_LEN {
        file.set_len(HEADER_LEN)
            .map_err(|e| StorageError::io("extend", path, e))?;
    }
    file.write_all_at(&segment::header(base), 0)
        .map_err(|e| StorageError::io("write", path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync", path, e))
}

fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Lists the segment base offsets in `dir`, sorted, and removes leftovers:
/// temporary files and indexes whose segment is gone.
fn segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match segment::parse_file_name(name) {
            Some((base, "log")) => logs.push(base),
            Some((base, "idx")) => indexes.push(base),
            Some((_, "idx.tmp")) => remove_if_exists(&entry.path())?,
            _ => {}
        }
    }
    logs.sort_unstable();
    for base in indexes {
        if logs.binary_search(&base).is_err() {
            remove_if_exists(&index_path(dir, base))?;
        }
    }
    Ok(logs)
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| StorageError::io("stat", path, e))
}
