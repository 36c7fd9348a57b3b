//! An export's files as a history table sees them: listed under the
//! export's prefix, named `<export>-<first>-<last>.parquet`, pruned by
//! those offsets and by the `ts` range their footers' statistics give
//! ([`FileFacts`] remembers it per file: files are immutable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, TimestampMillisecondArray};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::statistics::Statistics;
use datafusion::physical_optimizer::pruning::PruningPredicate;
use futures_util::{StreamExt, TryStreamExt};

use super::HistorySource;

/// Footers read at once when a query meets files it has not seen.
const FOOTER_READS: usize = 16;

/// One exported file.
#[derive(Debug, Clone)]
pub(crate) struct ExportedFile {
    pub(crate) meta: ObjectMeta,
    /// The first and last offset it holds, from its name.
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// The earliest and latest `ts` it holds, from its footer; `None`
    /// until read, or when the footer has no statistics for `ts`.
    pub(crate) ts: Option<(i64, i64)>,
}

/// The offsets a file of `export` holds, from its name
/// `<export>-<first>-<last>.parquet`; `None` for any other file.
pub(crate) fn offsets_in_name(name: &str, export: &str) -> Option<(u64, u64)> {
    let range = name
        .strip_suffix(".parquet")?
        .strip_prefix(export)?
        .strip_prefix('-')?;
    let (first, last) = range.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// What the footers of each export's files said about `ts`, by export
/// and path; entries of files no longer listed are forgotten.
#[derive(Debug, Default)]
pub(crate) struct FileFacts {
    by_export: Mutex<HashMap<String, HashMap<Path, Known>>>,
}

/// What one file's footer said.
#[derive(Debug, Clone, Copy)]
struct Known {
    size: u64,
    ts: Option<(i64, i64)>,
}

impl FileFacts {
    /// The export's files holding offsets below `seam`, oldest first, with
    /// what is known of their `ts`. The store's error is returned as text.
    pub(crate) async fn list(
        &self,
        source: &HistorySource,
        seam: u64,
    ) -> std::result::Result<Vec<ExportedFile>, String> {
        let prefix = (!source.prefix.as_ref().is_empty()).then_some(&source.prefix);
        let listed: Vec<ObjectMeta> = source
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut files = Vec::new();
        let mut known = self.lock();
        let known = known.entry(source.export.clone()).or_default();
        let mut still = HashMap::with_capacity(listed.len());
        for meta in listed {
            let Some((first, last)) = meta
                .location
                .filename()
                .and_then(|name| offsets_in_name(name, &source.export))
            else {
                continue;
            };
            let ts = match known.get(&meta.location) {
                Some(k) if k.size == meta.size => {
                    still.insert(meta.location.clone(), *k);
                    k.ts
                }
                _ => None,
            };
            if first < seam {
                files.push(ExportedFile {
                    meta,
                    first,
                    last,
                    ts,
                });
            }
        }
        *known = still;
        files.sort_by_key(|f| (f.first, f.last));
        Ok(files)
    }

    /// Reads the footers of `files` whose `ts` range is not known yet,
    /// a few at once, and remembers what they say. The footers go into
    /// `footers` (the session's Parquet metadata cache), where the reader
    /// finds them when it opens the files. The store's or the file's error
    /// is returned as text, naming the file.
    pub(crate) async fn learn_ts(
        &self,
        source: &HistorySource,
        files: &mut [ExportedFile],
        footers: &Arc<FileMetadataCache>,
    ) -> std::result::Result<(), String> {
        let unknown: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].ts.is_none())
            .collect();
        let reads = unknown.into_iter().map(|i| {
            let meta = &files[i].meta;
            let store = source.store.as_ref();
            async move {
                let footer = DFParquetMetadata::new(store, meta)
                    .with_file_metadata_cache(Some(Arc::clone(footers)))
                    .fetch_metadata()
                    .await
                    .map_err(|e| format!("reading the footer of {}: {e}", meta.location))?;
                Ok::<_, String>((i, ts_range(&footer)))
            }
        });
        let learned: Vec<(usize, Option<(i64, i64)>)> = futures_util::stream::iter(reads)
            .buffer_unordered(FOOTER_READS)
            .try_collect()
            .await?;
        let mut known = self.lock();
        let known = known.entry(source.export.clone()).or_default();
        for (i, ts) in learned {
            files[i].ts = ts;
            known.insert(
                files[i].meta.location.clone(),
                Known {
                    size: files[i].meta.size,
                    ts,
                },
            );
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<Path, Known>>> {
        // Every entry is whole whatever panicked: use it.
        self.by_export.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The earliest and latest `ts` of a file, from its row groups'
/// statistics; `None` when any row group with rows lacks them.
fn ts_range(footer: &ParquetMetaData) -> Option<(i64, i64)> {
    let column = footer
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == ["ts"])?;
    let mut range: Option<(i64, i64)> = None;
    for group in footer.row_groups() {
        if group.num_rows() == 0 {
            continue;
        }
        let Some(Statistics::Int64(stats)) = group.column(column).statistics() else {
            return None;
        };
        let (min, max) = (*stats.min_opt()?, *stats.max_opt()?);
        range = Some(range.map_or((min, max), |(lo, hi)| (lo.min(min), hi.max(max))));
    }
    range
}

/// The files `pruning` may find rows in.
pub(crate) fn prune(
    pruning: Option<&PruningPredicate>,
    files: Vec<ExportedFile>,
) -> Result<Vec<ExportedFile>> {
    let Some(pruning) = pruning else {
        return Ok(files);
    };
    let keep = pruning.prune(&Candidates(&files))?;
    Ok(files
        .into_iter()
        .zip(keep)
        .filter_map(|(file, keep)| keep.then_some(file))
        .collect())
}

/// Files as containers of statistics for a [`PruningPredicate`]: `offset`
/// from their names, `ts` from their footers (null, so never pruned on,
/// when not known).
struct Candidates<'a>(&'a [ExportedFile]);

impl PruningStatistics for Candidates<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        bound(self.0, column, true)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        bound(self.0, column, false)
    }

    fn num_containers(&self) -> usize {
        self.0.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Each file's lowest (`min`) or highest value of `column`, where known.
fn bound(files: &[ExportedFile], column: &Column, min: bool) -> Option<ArrayRef> {
    match column.name() {
        "offset" => Some(Arc::new(Int64Array::from_iter_values(files.iter().map(
            |f| {
                let offset = if min { f.first } else { f.last };
                offset.min(i64::MAX as u64) as i64
            },
        )))),
        "ts" => Some(Arc::new(
            TimestampMillisecondArray::from_iter(
                files
                    .iter()
                    .map(|f| f.ts.map(|(lo, hi)| if min { lo } else { hi })),
            )
            .with_timezone("UTC"),
        )),
        _ => None,
    }
}

/// Splits `files` (oldest first) into contiguous groups, one per core at
/// most, so a large history is read in parallel: the engine plans with
/// one target partition, so these groups are the scan's parallelism.
pub(crate) fn groups(files: Vec<ExportedFile>) -> Vec<Vec<PartitionedFile>> {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let parts = files.len().clamp(1, cores);
    let len = files.len();
    let mut groups: Vec<Vec<PartitionedFile>> = (0..parts).map(|_| Vec::new()).collect();
    for (i, file) in files.into_iter().enumerate() {
        groups[i * parts / len.max(1)].push(PartitionedFile::new_from_meta(file.meta));
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_export_s_own_files_are_read_with_their_offsets() {
        assert_eq!(
            offsets_in_name("events-0-99.parquet", "events"),
            Some((0, 99))
        );
        assert_eq!(
            offsets_in_name("my-export-100-100.parquet", "my-export"),
            Some((100, 100))
        );
        for other in [
            "events-0-99.parquet.tmp",
            "events-0-99.json",
            "other-0-99.parquet",
            "events-99-0.parquet",
            "events-+1-2.parquet",
            "events--2.parquet",
            "events-1-2-3.parquet",
            "events0-99.parquet",
            "events-0-99999999999999999999999.parquet",
        ] {
            assert_eq!(offsets_in_name(other, "events"), None, "{other}");
        }
        // A name of another export that starts with this one's.
        assert_eq!(offsets_in_name("events-eu-0-9.parquet", "events"), None);
    }
}
