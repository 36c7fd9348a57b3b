//! An export on the delivery layer: [`ExportSink`] is the [`Sink`] its
//! pump delivers through. It takes each record into a buffer per
//! partition (`Sent::Accepted`), and when the buffer reaches `max_bytes`,
//! or `max_interval` after its first record, hands it to a flush that
//! writes one Parquet file per partition in the background while the
//! next buffer fills (one flush at a time: the next waits for it, so at
//! most two buffers are held). The pump's cursor moves only to the first
//! record not yet in a completed file ([`Sink::committable`]), so records
//! are in the cursor's past only once their file is complete; the flush's
//! range is planned in the [`Manifest`] first, so a crash replays into
//! the same files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewire_core::{Record, SchemaField};
use tidewire_delivery::{Sent, Sink, SinkError};
use tidewire_sql::{RecordBatches, Transform};
use tokio::task::JoinHandle;

use crate::config::ExportSpec;
use crate::destination::Destination;
use crate::manifest::Manifest;
use crate::status::ExportStatus;
use crate::writer;

/// Bytes a record costs in the buffer besides its payload and topic
/// (offset, time, the other columns' share).
const RECORD_OVERHEAD: usize = 48;

/// The records of one partition waiting for the next flush.
struct Part {
    batches: RecordBatches,
    first: u64,
    last: u64,
}

/// What is buffered.
#[derive(Default)]
struct Buffer {
    parts: BTreeMap<String, Part>,
    first: Option<u64>,
    last: u64,
    bytes: usize,
    since: Option<Instant>,
    /// The planned end of this flush, after a crash.
    planned_end: Option<u64>,
}

/// How often a flush in flight is looked at while no record comes, so the
/// cursor moves past its files soon after they are complete.
const FLUSH_POLL: Duration = Duration::from_millis(50);

/// A flush writing its files in the background.
struct InFlight {
    /// Its first record: the cursor stays before it until it is done.
    first: u64,
    task: JoinHandle<Result<(), SinkError>>,
    /// Started by an earlier session (before [`Sink::reset`]): waited for
    /// before the next flush writes, its outcome ignored.
    stale: bool,
}

/// The sink of one export's pump.
pub(crate) struct ExportSink {
    pub spec: Arc<ExportSpec>,
    pub fields: Vec<SchemaField>,
    pub destination: Destination,
    pub transform: Option<Transform>,
    pub manifest: Option<Manifest>,
    pub status: Arc<ExportStatus>,
    buffer: Buffer,
    in_flight: Option<InFlight>,
    /// The first record of a flush that failed in this session.
    failed_from: Option<u64>,
    /// The last record's partition, by [`crate::partition::Template::granule`].
    partition: Option<(i64, String)>,
}

impl ExportSink {
    pub fn new(
        spec: Arc<ExportSpec>,
        fields: Vec<SchemaField>,
        destination: Destination,
        transform: Option<Transform>,
        manifest: Manifest,
        status: Arc<ExportStatus>,
    ) -> ExportSink {
        ExportSink {
            spec,
            fields,
            destination,
            transform,
            manifest: Some(manifest),
            status,
            buffer: Buffer::default(),
            in_flight: None,
            failed_from: None,
            partition: None,
        }
    }

    fn max_interval(&self) -> Duration {
        self.spec.config.max_interval
    }

    fn is_due(&self) -> bool {
        self.buffer
            .since
            .is_some_and(|since| since.elapsed() >= self.max_interval())
    }

    /// Hands the buffer to a flush, once the one in flight is done.
    async fn write(&mut self) -> Result<(), SinkError> {
        self.finish_in_flight().await?;
        let Some(first) = self.buffer.first else {
            return Ok(());
        };
        let last = self.buffer.last;
        if let Err(e) = self.plan(first, last).await {
            self.status.failed(&e.to_string());
            return Err(e);
        }
        let parts = std::mem::take(&mut self.buffer).parts;
        let flush = Flush {
            export: Arc::clone(&self.spec),
            destination: self.destination.clone(),
            transform: self.transform.clone(),
            status: Arc::clone(&self.status),
        };
        self.in_flight = Some(InFlight {
            first,
            task: tokio::spawn(flush.write(parts)),
            stale: false,
        });
        self.status.next_flush(0);
        Ok(())
    }

    /// Waits for the flush in flight, if any. A failed one keeps the
    /// cursor before its records until the pump sends them again.
    async fn finish_in_flight(&mut self) -> Result<(), SinkError> {
        let Some(flush) = &mut self.in_flight else {
            return Ok(());
        };
        // Awaited in place: a caller that gives up leaves it in flight.
        let outcome = (&mut flush.task)
            .await
            .unwrap_or_else(|e| Err(SinkError::retry(format!("flush task: {e}"))));
        let Some(flush) = self.in_flight.take() else {
            return Ok(());
        };
        match outcome {
            Err(e) if !flush.stale => {
                self.failed_from = Some(flush.first);
                self.status.failed(&e.to_string());
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Records the flush's range before its files are written.
    async fn plan(&mut self, first: u64, last: u64) -> Result<(), SinkError> {
        let mut manifest = self
            .manifest
            .take()
            .ok_or_else(|| SinkError::retry("the export's manifest is being written"))?;
        let (manifest, planned) = tokio::task::spawn_blocking(move || {
            let planned = manifest.plan(first, last);
            (manifest, planned)
        })
        .await
        .map_err(|e| SinkError::retry(format!("manifest task: {e}")))?;
        self.manifest = Some(manifest);
        planned.map_err(|e| SinkError::retry(format!("recording the flush: {e}")))
    }
}

/// `PARTITION/EXPORT-FIRST-LAST.parquet`.
pub(crate) fn file_name(partition: &str, export: &str, first: u64, last: u64) -> String {
    let file = format!("{export}-{first}-{last}.parquet");
    if partition.is_empty() {
        file
    } else {
        format!("{}/{file}", partition.trim_end_matches('/'))
    }
}

/// What a flush needs of its export.
struct Flush {
    export: Arc<ExportSpec>,
    destination: Destination,
    transform: Option<Transform>,
    status: Arc<ExportStatus>,
}

impl Flush {
    /// Writes a file per partition.
    async fn write(self, parts: BTreeMap<String, Part>) -> Result<(), SinkError> {
        for (partition, part) in parts {
            self.write_part(&partition, part).await?;
        }
        Ok(())
    }

    async fn write_part(&self, partition: &str, mut part: Part) -> Result<(), SinkError> {
        let batch = part.batches.finish().map_err(SinkError::retry)?;
        let (schema, batches) = match &self.transform {
            Some(transform) => (
                Arc::clone(transform.schema()),
                transform.apply(batch).await.map_err(SinkError::retry)?,
            ),
            None => (batch.schema(), vec![batch]),
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows == 0 {
            return Ok(());
        }
        let row_group_rows = self.export.config.row_group_rows;
        let bytes =
            tokio::task::spawn_blocking(move || writer::parquet(&schema, &batches, row_group_rows))
                .await
                .map_err(|e| SinkError::retry(format!("encoding task: {e}")))?
                .map_err(|e| SinkError::retry(format!("encoding Parquet: {e}")))?;
        let name = file_name(partition, self.export.name(), part.first, part.last);
        let size = bytes.len() as u64;
        self.destination
            .put(&name, bytes)
            .await
            .map_err(SinkError::retry)?;
        self.status.wrote(&name, rows as u64, size);
        Ok(())
    }
}

impl Sink for ExportSink {
    type Ack = std::future::Ready<Result<(), SinkError>>;

    async fn send(&mut self, record: &Record) -> Result<Sent<Self::Ack>, SinkError> {
        let offset = record.offset;
        if self.buffer.planned_end.is_some_and(|end| offset > end) {
            // The planned end itself is gone (retention): cut here.
            self.write().await?;
        }
        if self.buffer.first.is_none() {
            self.buffer.first = Some(offset);
            self.buffer.since = Some(Instant::now());
            self.buffer.planned_end = self.manifest.as_ref().and_then(|m| m.planned_end(offset));
            let due = chrono::Utc::now().timestamp_millis()
                + i64::try_from(self.max_interval().as_millis()).unwrap_or(i64::MAX);
            self.status.next_flush(due);
        }
        let granule = self.spec.partition.granule(record.timestamp_ms);
        let partition = match &mut self.partition {
            Some((at, rendered)) if *at == granule => rendered,
            slot => {
                let rendered = self.spec.partition.render(record.timestamp_ms);
                &mut slot.insert((granule, rendered)).1
            }
        };
        let fields = &self.fields;
        let part = self
            .buffer
            .parts
            .entry(partition.clone())
            .or_insert_with(|| Part {
                batches: RecordBatches::new(fields),
                first: offset,
                last: offset,
            });
        part.batches.push(record);
        part.last = offset;
        self.buffer.last = offset;
        self.buffer.bytes += record.message.payload.len()
            + record.message.topic.len()
            + record.message.client_id.len()
            + RECORD_OVERHEAD;
        // A flush planned before a crash ends where it was planned to, so
        // it writes the same files; others end at `max_bytes`.
        let cut = match self.buffer.planned_end {
            Some(end) => offset == end,
            None => self.buffer.bytes as u64 >= self.spec.config.max_bytes.as_u64(),
        };
        if cut {
            self.write().await?;
        }
        Ok(Sent::Accepted)
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|flush| flush.task.is_finished())
        {
            self.finish_in_flight().await?;
        }
        if self.buffer.planned_end.is_none() && self.is_due() {
            self.write().await?;
        }
        Ok(())
    }

    fn committable(&self, accepted_to: u64) -> u64 {
        let writing = self
            .in_flight
            .as_ref()
            .filter(|flush| !flush.stale)
            .map(|flush| flush.first);
        [writing, self.failed_from, self.buffer.first]
            .into_iter()
            .flatten()
            .fold(accepted_to, u64::min)
    }

    fn flush_deadline(&self) -> Option<Instant> {
        let polling = self
            .in_flight
            .as_ref()
            .filter(|flush| !flush.stale)
            .map(|_| Instant::now() + FLUSH_POLL);
        let due = self
            .buffer
            .since
            .filter(|_| self.buffer.planned_end.is_none())
            .map(|since| since + self.max_interval());
        polling.into_iter().chain(due).min()
    }

    fn reset(&mut self) {
        self.buffer = Buffer::default();
        // A flush still writing finishes before the next one starts (the
        // two may write the same file).
        if let Some(flush) = &mut self.in_flight {
            flush.stale = true;
        }
        self.failed_from = None;
        self.status.next_flush(0);
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_names_carry_the_offset_range() {
        assert_eq!(
            file_name("dt=2024-01-01/hour=03", "lake", 100, 199),
            "dt=2024-01-01/hour=03/lake-100-199.parquet"
        );
        assert_eq!(file_name("", "lake", 0, 9), "lake-0-9.parquet");
    }
}
