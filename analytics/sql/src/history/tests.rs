//! `<stream>_history` over a real stream whose oldest segments are gone
//! and Parquet files written for them (and past them) as an export
//! writes them: the seam, answers against the records, pruning, and the
//! bad cases.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::{ExecutionPlan, collect};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tidewire_auth::{Identity, Permissions, Principal, StreamAccess};
use tidewire_core::{
    Broker, Limits, Message, PublishMetrics, Record, SchemaField, Source, StreamConfig, Streams,
};
use tidewire_storage::{StorageMetrics, StreamLog};

use super::{Histories, HistorySource};
use crate::access::ReadAccess;
use crate::columns::stream_schema;
use crate::config::SqlLimits;
use crate::engine::SqlEngine;
use crate::error::SqlError;
use crate::metrics::SqlMetrics;
use crate::records::RecordBatches;

/// Records in the test stream.
const RECORDS: u64 = 2000;
/// Records a sleep separates, so blocks of them have distinct times.
const BLOCK: u64 = 50;
/// Records per exported file (4 blocks), and per row group (1 block).
const FILE_RECORDS: u64 = 200;
const GROUP_ROWS: usize = BLOCK as usize;

/// The exports the engine sees, changed by the test.
#[derive(Debug, Default)]
struct Exports(Mutex<Vec<HistorySource>>);

impl Exports {
    fn set(&self, sources: Vec<HistorySource>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = sources;
    }
}

impl Histories for Exports {
    fn sources(&self) -> Vec<HistorySource> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A stream `events` of small segments with a typed column `i`, filled
/// with [`RECORDS`] records, an engine over it, and a directory for an
/// export's files.
struct Fixture {
    _dir: tempfile::TempDir,
    files: tempfile::TempDir,
    broker: Broker,
    engine: SqlEngine,
    exports: Arc<Exports>,
    fields: Vec<SchemaField>,
    records: Vec<Record>,
}

impl Fixture {
    async fn new(limits: SqlLimits) -> Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let mut registry = Registry::default();
        let config: StreamConfig = toml::from_str(
            "name = \"events\"\nsegment_bytes = \"4KiB\"\nfsync = \"never\"\n\
             [schema]\ni = { type = \"bigint\" }",
        )?;
        let spec = config.validate("streams[0]")?;
        let fields = spec.schema.to_vec();
        let opened = Streams::open(
            dir.path(),
            vec![spec],
            &StorageMetrics::register(&mut registry),
            Arc::new(|_| {}),
        )?;
        let broker = Broker::new(
            opened,
            Limits::default(),
            PublishMetrics::register(&mut registry),
        );
        let engine = SqlEngine::new(broker.clone(), limits, SqlMetrics::register(&mut registry))?;
        let exports = Arc::new(Exports::default());
        engine.set_histories(Arc::clone(&exports) as Arc<dyn Histories>);
        for i in 0..RECORDS {
            let message = Message {
                topic: format!("sensors/{}", i % 7),
                client_id: "test".into(),
                qos: 1,
                payload: Bytes::from(json!({ "i": i, "pad": "x".repeat(40) }).to_string()),
                ..Message::default()
            };
            broker.publish(Source::Http, message).await?;
            if i % BLOCK == BLOCK - 1 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        let mut fixture = Fixture {
            _dir: dir,
            files: tempfile::tempdir()?,
            broker,
            engine,
            exports,
            fields,
            records: Vec::new(),
        };
        fixture.records = fixture.log()?.scan(0..RECORDS).collect::<Result<_, _>>()?;
        ensure!(fixture.records.len() as u64 == RECORDS);
        Ok(fixture)
    }

    fn log(&self) -> Result<StreamLog> {
        Ok(self
            .broker
            .streams()
            .get("events")
            .context("the stream")?
            .log
            .clone())
    }

    /// Releases the records below `offset` and waits until the writer has
    /// deleted the segments wholly below it; returns the seam, the first
    /// offset the stream still holds.
    async fn forget_before(&self, offset: u64) -> Result<u64> {
        let log = self.log()?;
        log.release_before(offset);
        let segments = log.segments();
        let expected = segments
            .iter()
            .find(|s| s.end_offset > offset)
            .map_or(offset, |s| s.base_offset);
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.stats().first_offset < expected {
            ensure!(Instant::now() < deadline, "segments below {offset} kept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seam = log.stats().first_offset;
        ensure!(seam > 0 && seam <= offset, "seam {seam}");
        Ok(seam)
    }

    /// The export's store: the files directory.
    fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(LocalFileSystem::new_with_prefix(
            self.files.path(),
        )?))
    }

    /// A full export of `events` called `name` over `store`.
    fn source(&self, name: &str, store: Arc<dyn ObjectStore>) -> HistorySource {
        HistorySource {
            export: name.into(),
            stream: "events".into(),
            store,
            prefix: Path::from(""),
            schema: stream_schema(&self.fields),
            full: true,
        }
    }

    /// Writes the records in `range` as an export does: zstd Parquet
    /// files of [`FILE_RECORDS`] records with page statistics, row groups
    /// of [`GROUP_ROWS`], in Hive-style hourly partitions, named by their
    /// offsets. Returns the paths written.
    async fn export(&self, name: &str, range: Range<u64>) -> Result<Vec<Path>> {
        let store = self.store()?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(GROUP_ROWS))
            .build();
        let mut paths = Vec::new();
        let mut first = range.start;
        while first < range.end {
            let last = (first + FILE_RECORDS).min(range.end) - 1;
            let mut batches = RecordBatches::new(&self.fields);
            for record in &self.records[first as usize..=last as usize] {
                batches.push(record);
            }
            let mut bytes = Vec::new();
            let mut writer = ArrowWriter::try_new(
                &mut bytes,
                Arc::clone(batches.schema()),
                Some(properties.clone()),
            )?;
            writer.write(&batches.finish()?)?;
            writer.close()?;
            let ts =
                chrono::DateTime::from_timestamp_millis(self.records[first as usize].timestamp_ms)
                    .context("a time")?;
            let path = Path::from(format!(
                "dt={}/hour={}/{name}-{first}-{last}.parquet",
                ts.format("%Y-%m-%d"),
                ts.format("%H")
            ));
            store.put(&path, PutPayload::from(bytes)).await?;
            paths.push(path);
            first = last + 1;
        }
        Ok(paths)
    }

    async fn rows(&self, sql: &str) -> Result<Vec<Vec<Value>>> {
        let out = self
            .engine
            .query(sql)
            .await
            .with_context(|| sql.to_owned())?;
        Ok(crate::output::to_json(&out)?.rows)
    }

    /// The records in `range` whose time is in `[from, until)`: their
    /// count and the sum of `i`.
    fn expected(&self, range: Range<u64>, from: i64, until: i64) -> (u64, u64) {
        let kept = self.records[range.start as usize..range.end as usize]
            .iter()
            .filter(|r| r.timestamp_ms >= from && r.timestamp_ms < until);
        kept.fold((0, 0), |(n, sum), r| (n + 1, sum + r.offset))
    }

    fn ts(&self, offset: u64) -> i64 {
        self.records[offset as usize].timestamp_ms
    }
}

#[tokio::test]
async fn history_counts_every_record_once_across_the_seam() -> Result<()> {
    let f = Fixture::new(SqlLimits::default()).await?;
    let seam = f.forget_before(1000).await?;
    // Exported past the seam, as an export ahead of retention is: the
    // records in [seam, seam + 450) are in files and live both.
    let written = f.export("archive", 0..seam + 450).await?;
    ensure!(written.len() >= 7);
    f.exports.set(vec![f.source("archive", f.store()?)]);
    let live = f
        .rows("SELECT count(*), min(\"offset\") FROM events")
        .await?;
    assert_eq!(live[0], vec![json!(RECORDS - seam), json!(seam)]);

    let all = f
        .rows(
            "SELECT count(*), count(DISTINCT \"offset\"), min(\"offset\"), max(\"offset\"), sum(i) \
             FROM events_history",
        )
        .await?;
    let sum: u64 = (0..RECORDS).sum();
    assert_eq!(
        all[0],
        vec![
            json!(RECORDS),
            json!(RECORDS),
            json!(0),
            json!(RECORDS - 1),
            json!(sum)
        ]
    );
    // Every offset, in order, once.
    let offsets = f
        .rows("SELECT \"offset\" FROM events_history ORDER BY \"offset\"")
        .await?;
    let expected: Vec<Vec<Value>> = (0..RECORDS).map(|o| vec![json!(o)]).collect();
    assert_eq!(offsets, expected);
    // Around the seam, with filters either side prunes on.
    let near = f
        .rows(&format!(
            "SELECT count(*), min(\"offset\"), max(\"offset\") FROM events_history \
             WHERE \"offset\" BETWEEN {} AND {}",
            seam - 10,
            seam + 9
        ))
        .await?;
    assert_eq!(near[0], vec![json!(20), json!(seam - 10), json!(seam + 9)]);
    // A filter neither side can prune on, and a projection without
    // `offset`.
    let even = f
        .rows("SELECT count(*) FROM events_history WHERE i % 2 = 0")
        .await?;
    assert_eq!(even[0], vec![json!(RECORDS / 2)]);
    let topics = f
        .rows("SELECT topic, count(*) FROM events_history GROUP BY topic ORDER BY topic")
        .await?;
    assert_eq!(topics.len(), 7);
    assert_eq!(
        topics[0],
        vec![json!("sensors/0"), json!(RECORDS.div_ceil(7))]
    );
    // LIMIT over both sides.
    let limited = f
        .rows("SELECT count(*) FROM (SELECT payload FROM events_history LIMIT 5)")
        .await?;
    assert_eq!(limited[0], vec![json!(5)]);
    // Every column of an exported record reads as it was stored.
    let old = f
        .rows(
            "SELECT \"offset\", ts, topic, client_id, qos, retain, payload, i \
             FROM events_history WHERE \"offset\" = 3",
        )
        .await?;
    let record = &f.records[3];
    assert_eq!(old[0][0], json!(3));
    assert_eq!(old[0][2], json!("sensors/3"));
    assert_eq!(old[0][3], json!("test"));
    assert_eq!(old[0][4], json!(1));
    assert_eq!(old[0][5], json!(false));
    assert_eq!(
        old[0][6],
        json!(std::str::from_utf8(&record.message.payload)?)
    );
    assert_eq!(old[0][7], json!(3));
    // Rows the live stream still has are the live stream's.
    let sql = |table: &str| {
        format!(
            "SELECT * FROM {table} WHERE \"offset\" >= {seam} AND \"offset\" < {} \
             ORDER BY \"offset\"",
            seam + 30
        )
    };
    assert_eq!(
        f.rows(&sql("events_history")).await?,
        f.rows(&sql("events")).await?
    );
    Ok(())
}

#[tokio::test]
async fn history_time_ranges_match_the_records_and_the_seam_moves_with_retention() -> Result<()> {
    let f = Fixture::new(SqlLimits::default()).await?;
    let seam = f.forget_before(800).await?;
    f.export("archive", 0..seam + 100).await?;
    f.exports.set(vec![f.source("archive", f.store()?)]);
    let query = |from: i64, until: i64| {
        format!(
            "SELECT count(*), sum(i) FROM events_history \
             WHERE ts >= to_timestamp_millis({from}) AND ts < to_timestamp_millis({until})"
        )
    };
    // Only in the files, across the seam, and only live.
    for (from, until) in [
        (f.ts(120), f.ts(430)),
        (f.ts(seam - 150), f.ts(seam + 170)),
        (f.ts(1500), f.ts(1999) + 1),
    ] {
        let (count, sum) = f.expected(0..RECORDS, from, until);
        ensure!(count > 0);
        let got = f.rows(&query(from, until)).await?;
        assert_eq!(got[0], vec![json!(count), json!(sum)], "{from}..{until}");
    }
    // The same query again (its plan cached) once retention has taken
    // more and the export has caught up: still every record once.
    let everything = query(f.ts(0), f.ts(RECORDS - 1) + 1);
    let sum: u64 = (0..RECORDS).sum();
    assert_eq!(
        f.rows(&everything).await?[0],
        vec![json!(RECORDS), json!(sum)]
    );
    let later = f.forget_before(1400).await?;
    ensure!(later > seam + 100, "seam {seam}, then {later}");
    f.export("archive", seam + 100..later + 20).await?;
    assert_eq!(
        f.rows(&everything).await?[0],
        vec![json!(RECORDS), json!(sum)]
    );
    Ok(())
}

/// What the file scans of a run plan read: files listed in them, files
/// opened, and row groups matched and pruned by statistics.
#[derive(Debug, Default, PartialEq)]
struct Scanned {
    files: usize,
    opened: usize,
    groups_matched: usize,
    groups_pruned: usize,
}

/// Runs `sql` through the engine's planner and returns how many rows it
/// gave and what its file scans read.
async fn scanned(engine: &SqlEngine, sql: &str) -> Result<(Vec<Vec<Value>>, Scanned)> {
    let state = engine.state();
    let logical = state.create_logical_plan(sql).await?;
    let plan = state.create_physical_plan(&logical).await?;
    let batches = collect(Arc::clone(&plan), state.task_ctx()).await?;
    let out = crate::engine::QueryOutput {
        schema: plan.schema(),
        batches,
    };
    let rows = crate::output::to_json(&out)?.rows;
    let mut scanned = Scanned::default();
    plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
        {
            scanned.files += config.file_groups.iter().map(|g| g.len()).sum::<usize>();
            for metric in exec.metrics().iter().flat_map(|m| m.iter()) {
                match metric.value() {
                    MetricValue::Count { name, count } if name == "files_opened" => {
                        scanned.opened += count.value();
                    }
                    MetricValue::PruningMetrics {
                        name,
                        pruning_metrics,
                    } if name == "row_groups_pruned_statistics" => {
                        scanned.groups_matched += pruning_metrics.matched();
                        scanned.groups_pruned += pruning_metrics.pruned();
                    }
                    _ => {}
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok((rows, scanned))
}

#[tokio::test]
async fn history_prunes_files_and_row_groups_by_ts() -> Result<()> {
    let f = Fixture::new(SqlLimits::default()).await?;
    let seam = f.forget_before(1200).await?;
    let written = f.export("archive", 0..seam).await?;
    f.exports.set(vec![f.source("archive", f.store()?)]);
    let files_below_seam = written.len();
    ensure!(files_below_seam >= 5);

    // Ten records in the middle of one row group of one file.
    let (from, until) = (f.ts(420), f.ts(430) + 1);
    let sql = format!(
        "SELECT count(*), sum(i) FROM events_history \
         WHERE ts >= to_timestamp_millis({from}) AND ts < to_timestamp_millis({until})"
    );
    let (count, sum) = f.expected(0..RECORDS, from, until);
    let (rows, pruned) = scanned(&f.engine, &sql).await?;
    assert_eq!(rows[0], vec![json!(count), json!(sum)]);
    assert_eq!(pruned.files, 1, "{pruned:?}");
    assert_eq!(pruned.opened, 1, "{pruned:?}");
    assert_eq!(pruned.groups_matched, 1, "{pruned:?}");
    assert_eq!(
        pruned.groups_pruned,
        (FILE_RECORDS as usize / GROUP_ROWS) - 1
    );

    // Without a time filter every file below the seam is read.
    let (rows, all) = scanned(&f.engine, "SELECT count(*) FROM events_history").await?;
    assert_eq!(rows[0], vec![json!(RECORDS)]);
    assert_eq!(all.files, files_below_seam, "{all:?}");
    assert_eq!(all.opened, files_below_seam, "{all:?}");

    // An offset range prunes files by their names, before any footer.
    let (rows, by_offset) = scanned(
        &f.engine,
        "SELECT count(*) FROM events_history WHERE \"offset\" >= 250 AND \"offset\" < 350",
    )
    .await?;
    assert_eq!(rows[0], vec![json!(100)]);
    assert_eq!(by_offset.files, 1, "{by_offset:?}");
    Ok(())
}

#[tokio::test]
async fn history_of_an_export_without_files_is_the_live_stream() -> Result<()> {
    let f = Fixture::new(SqlLimits::default()).await?;
    f.exports.set(vec![f.source("archive", f.store()?)]);
    let count = "SELECT count(*), min(\"offset\") FROM events_history";
    assert_eq!(f.rows(count).await?[0], vec![json!(RECORDS), json!(0)]);
    let seam = f.forget_before(500).await?;
    assert_eq!(
        f.rows(count).await?[0],
        vec![json!(RECORDS - seam), json!(seam)]
    );
    // Files of other exports, or not Parquet, in the same place are not
    // this export's.
    let store = f.store()?;
    f.export("other", 0..seam).await?;
    store
        .put(
            &Path::from("archive-0-10.parquet.tmp"),
            PutPayload::from("x"),
        )
        .await?;
    assert_eq!(
        f.rows(count).await?[0],
        vec![json!(RECORDS - seam), json!(seam)]
    );
    Ok(())
}

/// A store that cannot be reached: listing fails at once, or never
/// answers; everything else fails.
#[derive(Debug)]
struct Down {
    hangs: bool,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3(unreachable)")
    }
}

fn refused() -> datafusion::object_store::Error {
    datafusion::object_store::Error::Generic {
        store: "S3",
        source: "connection refused".into(),
    }
}

#[async_trait]
impl ObjectStore for Down {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> datafusion::object_store::Result<PutResult> {
        Err(refused())
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> datafusion::object_store::Result<Box<dyn MultipartUpload>> {
        Err(refused())
    }

    async fn get_opts(
        &self,
        _location: &Path,
        _options: GetOptions,
    ) -> datafusion::object_store::Result<GetResult> {
        Err(refused())
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, datafusion::object_store::Result<Path>>,
    ) -> BoxStream<'static, datafusion::object_store::Result<Path>> {
        locations.map(|_| Err(refused())).boxed()
    }

    fn list(
        &self,
        _prefix: Option<&Path>,
    ) -> BoxStream<'static, datafusion::object_store::Result<ObjectMeta>> {
        if self.hangs {
            futures_util::stream::pending().boxed()
        } else {
            futures_util::stream::once(async { Err(refused()) }).boxed()
        }
    }

    async fn list_with_delimiter(
        &self,
        _prefix: Option<&Path>,
    ) -> datafusion::object_store::Result<ListResult> {
        Err(refused())
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> datafusion::object_store::Result<()> {
        Err(refused())
    }
}

#[tokio::test]
async fn history_fails_naming_the_export_when_its_files_cannot_be_listed() -> Result<()> {
    let limits = SqlLimits {
        query_timeout: Duration::from_secs(4),
        ..SqlLimits::default()
    };
    let f = Fixture::new(limits).await?;
    f.forget_before(500).await?;
    let sql = "SELECT count(*) FROM events_history";
    for hangs in [false, true] {
        f.exports
            .set(vec![f.source("archive", Arc::new(Down { hangs }))]);
        let started = Instant::now();
        let error = f.engine.query(sql).await.expect_err("the store is down");
        let message = error.to_string();
        assert!(matches!(error, SqlError::Storage(_)), "{error:?}");
        assert!(message.contains("\"archive\""), "{message}");
        assert!(message.contains("\"events\""), "{message}");
        if hangs {
            // Half the query timeout, not the whole of it.
            assert!(message.contains("no answer within 2s"), "{message}");
            assert!(started.elapsed() < Duration::from_secs(4));
        } else {
            assert!(message.contains("connection refused"), "{message}");
        }
    }
    // The live stream is still there.
    let live = f.rows("SELECT count(*) FROM events").await?;
    ensure!(live[0][0].as_u64().is_some_and(|n| n > 0));
    Ok(())
}

#[tokio::test]
async fn history_needs_a_full_export_with_the_stream_s_columns() -> Result<()> {
    let f = Fixture::new(SqlLimits::default()).await?;
    let sql = "SELECT count(*) FROM events_history";
    let missing = |e: SqlError| matches!(&e, SqlError::Invalid(m) if m.contains("events_history"));
    // No exports, and an export with a projection or a filter.
    let error = f.engine.query(sql).await.expect_err("no export");
    assert!(missing(error));
    let mut partial = f.source("some", f.store()?);
    partial.full = false;
    f.exports.set(vec![partial]);
    assert!(missing(f.engine.query(sql).await.expect_err("not full")));
    // Files without the stream's typed column.
    let mut other = f.source("archive", f.store()?);
    other.schema = stream_schema(&[]);
    f.exports.set(vec![other]);
    assert!(missing(
        f.engine.query(sql).await.expect_err("other columns")
    ));
    // The first full export by name with the right columns answers.
    let mut later = f.source("zz-second", f.store()?);
    later.schema = stream_schema(&[]);
    f.exports.set(vec![later, f.source("archive", f.store()?)]);
    assert_eq!(f.rows(sql).await?[0], vec![json!(RECORDS)]);
    Ok(())
}

#[tokio::test]
async fn history_needs_the_permission_of_its_stream() -> Result<()> {
    let f = Fixture::new(SqlLimits::default()).await?;
    f.exports.set(vec![f.source("archive", f.store()?)]);
    let may_read = |stream: &str| {
        let mut permissions = Permissions::none();
        permissions.sql = StreamAccess::Only([stream.to_owned()].into());
        ReadAccess::of(&Principal {
            identity: Identity::User("reader".into()),
            permissions: Arc::new(permissions),
        })
    };
    let sql = "SELECT count(*) FROM events_history";
    let out = f.engine.query_into(sql, may_read("events"), Ok).await?;
    assert_eq!(out.batches[0].num_rows(), 1);
    let error = f
        .engine
        .query_into(sql, may_read("events_history"), Ok)
        .await
        .expect_err("the stream's permission is missing");
    assert!(
        matches!(&error, SqlError::Forbidden(m) if m.contains("\"events\"")),
        "{error:?}"
    );
    Ok(())
}
