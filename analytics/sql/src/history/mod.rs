//! SQL over exported history: a stream with a full export (every column
//! of every record, see tidewire-export) also gets a table
//! `<stream>_history` ([`HistoryTable`]). It reads the export's Parquet
//! files with DataFusion's own Parquet reader for the offsets the live
//! stream no longer holds, and the live stream ([`StreamTable`]) for the
//! rest:
//!
//! - **The seam.** When a query is planned, `S` is the first offset the
//!   live stream still holds. The files answer offsets below `S`, the live
//!   stream offsets at and above it; each side has an exact filter on
//!   `offset`, so a record both exported and still live counts once, and
//!   none between is missed (records below `S` are exported, or counted
//!   lost by the exporter).
//! - **Pruning.** Whole files are pruned by the offsets in their names
//!   (`<export>-<first>-<last>.parquet`) and by the `ts` range in their
//!   footers' statistics (read once per file and cached: files are
//!   immutable), with DataFusion's `PruningPredicate` over the query's
//!   filters; inside a file the reader prunes row groups and pages with
//!   the same predicate ([`files`]).
//!
//! Exports are found through [`Histories`], which tidewire-export's
//! registry implements, set on the engine with
//! [`crate::SqlEngine::set_histories`].

mod files;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::ObjectStore;
use datafusion::object_store::path::Path;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{col, lit};
use tidewire_storage::StreamLog;

use crate::columns::OFFSET;
use crate::error::StorageFailure;
use crate::table::StreamTable;

/// What a stream's history table is called: `<stream>_history`.
pub const HISTORY_SUFFIX: &str = "_history";

/// The longest that listing an export's files (and reading the footers
/// of files not seen before) may take before a query on its history
/// fails; the engine allows half the query timeout when that is shorter.
/// An unreachable S3 endpoint then fails the query with an error naming
/// the export instead of holding it until the query timeout.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One export's files, for SQL.
#[derive(Debug, Clone)]
pub struct HistorySource {
    /// The export's name.
    pub export: String,
    /// The stream it exports.
    pub stream: String,
    /// Where its files are.
    pub store: Arc<dyn ObjectStore>,
    /// Where its files are in the store (`""` for a local directory store
    /// rooted at the directory).
    pub prefix: Path,
    /// The files' columns.
    pub schema: SchemaRef,
    /// Every column of every record (no projection, no filter): a history
    /// of the stream. Only full exports become `<stream>_history`.
    pub full: bool,
}

/// Where the engine finds exports (implemented by tidewire-export's
/// registry).
pub trait Histories: Send + Sync + std::fmt::Debug {
    /// Every export now.
    fn sources(&self) -> Vec<HistorySource>;
}

/// The engine's view of the exports: which streams have a history table,
/// and what their files' footers said.
#[derive(Debug)]
pub(crate) struct HistoryTables {
    histories: RwLock<Option<Arc<dyn Histories>>>,
    facts: files::FileFacts,
    /// Exports whose files do not match their stream, already logged.
    mismatched: Mutex<HashMap<String, SchemaRef>>,
    list_timeout: Duration,
}

impl HistoryTables {
    /// No exports yet; listing an export's files may take `list_timeout`.
    pub(crate) fn new(list_timeout: Duration) -> HistoryTables {
        HistoryTables {
            histories: RwLock::default(),
            facts: files::FileFacts::default(),
            mismatched: Mutex::default(),
            list_timeout,
        }
    }

    /// Uses `histories` from now on (the next query planned sees it).
    pub(crate) fn set(&self, histories: Arc<dyn Histories>) {
        *self.histories.write().unwrap_or_else(|p| p.into_inner()) = Some(histories);
    }

    /// Each exported stream's history source: its first full export by
    /// name.
    fn sources(&self) -> HashMap<String, HistorySource> {
        let histories = self
            .histories
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(histories) = histories else {
            return HashMap::new();
        };
        let mut full: Vec<HistorySource> =
            histories.sources().into_iter().filter(|s| s.full).collect();
        full.sort_by(|a, b| a.export.cmp(&b.export));
        let mut by_stream = HashMap::new();
        for source in full {
            by_stream.entry(source.stream.clone()).or_insert(source);
        }
        by_stream
    }

    /// The streams that have a full export (whether or not its files
    /// match the stream's columns).
    pub(crate) fn streams(&self) -> Vec<String> {
        self.sources().into_keys().collect()
    }

    /// The history source of `stream`, if it has a full export whose
    /// files have `columns` (the stream's); an export whose files do not
    /// is left out, and logged once.
    fn source(&self, stream: &str, columns: &SchemaRef) -> Option<HistorySource> {
        let source = self.sources().remove(stream)?;
        let mut mismatched = self.mismatched.lock().unwrap_or_else(|p| p.into_inner());
        if source.schema.fields() == columns.fields() {
            mismatched.remove(&source.export);
            return Some(source);
        }
        let known = mismatched
            .get(&source.export)
            .is_some_and(|schema| schema.fields() == source.schema.fields());
        if !known {
            tracing::warn!(
                export = %source.export,
                stream,
                difference = %difference(columns, &source.schema),
                "the export's files do not have the stream's columns; \
                 no history table for the stream"
            );
            mismatched.insert(source.export.clone(), Arc::clone(&source.schema));
        }
        None
    }

    /// `stream`'s history table, if it has a full export with its
    /// columns; `log` and `live` are the stream's.
    pub(crate) fn table(
        self: &Arc<Self>,
        stream: &str,
        log: StreamLog,
        live: StreamTable,
    ) -> Option<HistoryTable> {
        self.source(stream, &live.schema())?;
        Some(HistoryTable {
            stream: stream.to_owned(),
            log,
            live,
            tables: Arc::clone(self),
        })
    }
}

/// The first column that differs between what a stream has (`want`) and
/// what an export's files have (`got`).
fn difference(want: &SchemaRef, got: &SchemaRef) -> String {
    for (i, w) in want.fields().iter().enumerate() {
        match got.fields().get(i) {
            None => return format!("column {:?} is missing", w.name()),
            Some(g) if g != w => {
                return format!(
                    "column {}: the stream has {:?} {}{}, the files {:?} {}{}",
                    i + 1,
                    w.name(),
                    w.data_type(),
                    if w.is_nullable() { " NULL" } else { "" },
                    g.name(),
                    g.data_type(),
                    if g.is_nullable() { " NULL" } else { "" },
                );
            }
            Some(_) => {}
        }
    }
    match got.fields().get(want.fields().len()) {
        Some(extra) => format!("the files have an extra column {:?}", extra.name()),
        None => "the columns' metadata differ".to_owned(),
    }
}

/// A stream's history: the export's files below the seam, the live
/// stream from it on.
#[derive(Debug, Clone)]
pub(crate) struct HistoryTable {
    stream: String,
    log: StreamLog,
    live: StreamTable,
    tables: Arc<HistoryTables>,
}

impl HistoryTable {
    /// The files' side of a scan: the export's files holding offsets below
    /// `seam` that the filters may match, read with DataFusion's Parquet
    /// reader; `None` when there are none.
    async fn files_side(
        &self,
        state: &dyn Session,
        source: &HistorySource,
        seam: u64,
        columns: &[usize],
        filters: &[Expr],
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let schema = self.live.schema();
        let below = col("offset").lt(lit(seam as i64));
        let predicate = filters.iter().cloned().fold(below, Expr::and);
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(predicate, &df_schema)?;
        let pruning = PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(&schema))
            .build(Arc::clone(&predicate));
        let reads_ts = filters
            .iter()
            .any(|f| f.column_refs().iter().any(|c| c.name == "ts"));
        let facts = &self.tables.facts;
        let footers = state.runtime_env().cache_manager.get_file_metadata_cache();
        let find = async {
            let listed = facts
                .list(source, seam)
                .await
                .map_err(|e| unavailable(source, &format!("cannot list its files: {e}")))?;
            let mut candidates = files::prune(pruning.as_deref(), listed)?;
            if reads_ts && candidates.iter().any(|f| f.ts.is_none()) {
                facts
                    .learn_ts(source, &mut candidates, &footers)
                    .await
                    .map_err(|e| unavailable(source, &e))?;
                candidates = files::prune(pruning.as_deref(), candidates)?;
            }
            Ok::<_, DataFusionError>(candidates)
        };
        let timeout = self.tables.list_timeout;
        let candidates = tokio::time::timeout(timeout, find).await.map_err(|_| {
            unavailable(
                source,
                &format!("listing its files got no answer within {timeout:?}"),
            )
        })??;
        if candidates.is_empty() {
            return Ok(None);
        }
        let url = store_url(&source.export)?;
        state
            .runtime_env()
            .register_object_store(url.as_ref(), Arc::clone(&source.store));
        let reader = CachedParquetFileReaderFactory::new(Arc::clone(&source.store), footers);
        let parquet = ParquetSource::new(Arc::clone(&schema))
            .with_table_parquet_options(state.default_table_options().parquet)
            .with_parquet_file_reader_factory(Arc::new(reader))
            .with_predicate(predicate);
        let groups = files::groups(candidates);
        let config = FileScanConfigBuilder::new(url, Arc::new(parquet))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(Some(columns.to_vec()))?
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(Some(scan))
    }
}

/// The error of a query on the history of an export whose files cannot
/// be found or read: the store's fault, named.
fn unavailable(source: &HistorySource, why: &str) -> DataFusionError {
    DataFusionError::External(Box::new(StorageFailure(format!(
        "the history of stream {:?} is unavailable: export {:?} (files under {:?} in {}): {why}",
        source.stream,
        source.export,
        source.prefix.as_ref(),
        source.store
    ))))
}

/// The URL an export's store is registered under with the session:
/// `export://<name>`, the name hex-encoded if it is not plain.
fn store_url(export: &str) -> Result<ObjectStoreUrl> {
    let plain = !export.is_empty()
        && export
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let host = if plain {
        export.to_owned()
    } else {
        let hex: String = export.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    };
    ObjectStoreUrl::parse(format!("export://{host}"))
}

/// `input` with only the rows `offset` `op` `seam` keep, where `offset`
/// is the input's column `at`.
fn seam_filter(
    input: Arc<dyn ExecutionPlan>,
    at: usize,
    keep_below: bool,
    seam: u64,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
    let op = if keep_below {
        Operator::Lt
    } else {
        Operator::GtEq
    };
    let predicate = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("offset", at)),
        op,
        Arc::new(Literal::new((seam as i64).into())),
    ));
    Ok(Arc::new(FilterExec::try_new(predicate, input)?))
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.live.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Every filter prunes (files by their statistics, the live stream
        // by `offset` and `ts`), none exactly: DataFusion applies them all
        // again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.live.schema();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        // Both sides read `offset` for their seam filter, and drop it
        // after if the query did not ask for it.
        let mut columns = wanted.clone();
        let at = match columns.iter().position(|&c| c == OFFSET) {
            Some(at) => at,
            None => {
                columns.push(OFFSET);
                columns.len() - 1
            }
        };
        let seam = self.log.stats().first_offset;
        let mut sides = Vec::with_capacity(2);
        let source = self.tables.source(&self.stream, &schema);
        if let Some(source) = source.filter(|_| seam > 0)
            && let Some(files) = self
                .files_side(state, &source, seam, &columns, filters)
                .await?
        {
            let mut files = seam_filter(files, at, true, seam)?;
            if let Some(limit) = limit {
                files = Arc::new(LocalLimitExec::new(files, limit));
            }
            sides.push(files);
        }
        let mut live_filters = filters.to_vec();
        live_filters.push(col("offset").gt_eq(lit(seam as i64)));
        let live = self
            .live
            .scan(state, Some(&columns), &live_filters, limit)
            .await?;
        sides.push(seam_filter(live, at, false, seam)?);
        let union = UnionExec::try_new(sides)?;
        if columns.len() == wanted.len() {
            return Ok(union);
        }
        let input_schema = union.schema();
        let keep = (0..wanted.len()).map(|i| {
            let name = input_schema.field(i).name();
            ProjectionExpr::new(Arc::new(Column::new(name, i)), name.clone())
        });
        Ok(Arc::new(ProjectionExec::try_new(keep, union)?))
    }
}

/// The stream a scanned table reads, for permission checks: a history
/// table reads its stream's records; any other table is its stream.
pub(crate) fn stream_read_by(scan: &datafusion::logical_expr::TableScan) -> String {
    datafusion::datasource::source_as_provider(&scan.source)
        .ok()
        .and_then(|provider| {
            provider
                .as_ref()
                .downcast_ref::<HistoryTable>()
                .map(|h| h.stream.clone())
        })
        .unwrap_or_else(|| scan.table_name.table().to_owned())
}
