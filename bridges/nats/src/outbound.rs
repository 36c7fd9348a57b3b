//! Outbound links: tidewire stream -> NATS, at least once.
//!
//! A link reads its stream from the durable cursor, in offset order, and
//! publishes each record whose topic matches `from` (records bridged in
//! from NATS are skipped: see [`crate::is_from_nats`]). Up to
//! `max_in_flight` publishes await their JetStream PubAck at once; core
//! NATS publishes are confirmed by a flush. The cursor is committed
//! (fsynced) only past acknowledged records, so after a crash the records
//! after it are sent again, and JetStream drops those repeats by their
//! `Nats-Msg-Id` (`<node>:<stream>:<offset>`; the node name keeps ids of
//! different edge nodes apart in a shared stream). Records that retention
//! deleted before they were sent are counted as lost, never skipped
//! silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::{self, context::PublishAckFuture};
use tidewire_bridge::{BridgeError, LinkState};
use tidewire_core::{Record, Stream};
use tokio_util::sync::CancellationToken;

use crate::config::{Outbound, Start};
use crate::cursor::{Cursor, CursorFile};
use crate::error::LinkError;
use crate::headers;

/// Records read from the stream at a time.
const READ_BATCH: u64 = 512;
/// Commit the cursor at least this often while messages flow.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// One outbound link and its position, kept across sessions.
#[derive(Debug)]
pub struct OutboundLink {
    spec: Outbound,
    stream: Stream,
    cursor: Cursor,
    node: String,
    state: Arc<LinkState>,
    /// The next offset to send; everything before it is acknowledged and
    /// committed.
    committed: u64,
}

/// A publish awaiting its acknowledgement.
struct Pending {
    offset: u64,
    ack: Option<PublishAckFuture>,
}

impl OutboundLink {
    /// Opens the link's cursor, or starts one per `spec.start`.
    pub fn open(
        spec: Outbound,
        stream: Stream,
        cursor_dir: &std::path::Path,
        index: usize,
        node: &str,
        state: Arc<LinkState>,
    ) -> Result<OutboundLink, BridgeError> {
        let cursor = Cursor::new(
            cursor_dir,
            index,
            CursorFile {
                stream: stream.spec.name.clone(),
                from: spec.route.source().to_string(),
                subject: spec.route.target().to_string(),
                next_offset: 0,
            },
        );
        let cursor_error = |source| BridgeError::Io {
            action: "use cursor file",
            path: cursor.path().to_owned(),
            source,
        };
        let committed = match cursor.load().map_err(cursor_error)? {
            Some(offset) => offset,
            None => {
                let start = match spec.start {
                    Start::Latest => stream.log.next_offset(),
                    Start::Earliest => stream.log.stats().first_offset,
                };
                cursor.commit(start).map_err(cursor_error)?;
                start
            }
        };
        state.set_position(committed, stream.log.next_offset());
        Ok(OutboundLink {
            spec,
            stream,
            cursor,
            node: node.to_owned(),
            state,
            committed,
        })
    }

    /// Its status board and the stream it reads, for lag tracking.
    pub fn watch(&self) -> (Arc<LinkState>, tidewire_core::Stream) {
        (Arc::clone(&self.state), self.stream.clone())
    }

    /// Sends from the cursor until `ended` is cancelled or something
    /// fails. Acknowledged progress is committed before returning.
    pub async fn run(
        &mut self,
        client: &Client,
        ended: &CancellationToken,
    ) -> Result<(), LinkError> {
        let js = jetstream::ContextBuilder::new()
            .ack_timeout(self.spec.ack_timeout)
            .max_ack_inflight(self.spec.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let mut run = Run {
            read_to: self.committed,
            acked_to: self.committed,
            pending: VecDeque::with_capacity(self.spec.max_in_flight),
            last_commit: Instant::now(),
            committing: None,
        };
        // A dropped connection can leave publishes and acks waiting for
        // a client that will never reconnect: stop waiting when it ends.
        let outcome = tokio::select! {
            outcome = self.pump(client, &js, &mut run, ended) => outcome,
            () = ended.cancelled() => Ok(()),
        };
        // Keep what was acknowledged even when the session broke.
        let committed = match self.finish_commit(&mut run).await {
            Ok(()) => self.commit(run.acked_to).await,
            Err(e) => Err(e),
        };
        let outcome = outcome.and(committed);
        if let Err(e) = &outcome {
            self.state.error(e);
        }
        outcome
    }

    async fn pump(
        &mut self,
        client: &Client,
        js: &jetstream::Context,
        run: &mut Run,
        ended: &CancellationToken,
    ) -> Result<(), LinkError> {
        let mut tail = self.stream.log.subscribe();
        let mut prefetched = None;
        loop {
            if ended.is_cancelled() {
                return Ok(());
            }
            self.skip_retained_away(run);
            let end = self.stream.log.next_offset();
            if run.read_to >= end {
                self.settle(client, run, 0).await?;
                self.finish_commit(run).await?;
                self.commit(run.acked_to).await?;
                tokio::select! {
                    changed = tail.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                    }
                    () = ended.cancelled() => return Ok(()),
                }
                continue;
            }
            let batch_end = end.min(run.read_to + READ_BATCH);
            let batch = match prefetched.take() {
                Some((start, read)) if start == run.read_to => self.finish_read(read).await?,
                _ => {
                    self.finish_read(self.start_read(run.read_to..batch_end))
                        .await?
                }
            };
            // Read the next batch from disk while this one is published.
            let next_end = self.stream.log.next_offset().min(batch_end + READ_BATCH);
            if batch_end < next_end {
                prefetched = Some((batch_end, self.start_read(batch_end..next_end)));
            }
            for record in batch {
                if record.offset > run.read_to {
                    // Retention dropped these between the check and the read.
                    self.state.lost(record.offset - run.read_to);
                }
                run.read_to = record.offset + 1;
                if let Some(ack) = self.publish(client, js, &record).await? {
                    run.pending.push_back(Pending {
                        offset: record.offset,
                        ack,
                    });
                } else if run.pending.is_empty() {
                    run.acked_to = run.read_to;
                }
                self.settle(client, run, self.spec.max_in_flight - 1)
                    .await?;
            }
            if !self.spec.jetstream {
                self.settle(client, run, 0).await?;
            }
            self.commit_in_background(run).await?;
        }
    }

    /// While messages flow, commits the cursor every [`COMMIT_INTERVAL`]
    /// on a blocking thread, so the fsyncs do not stall publishing; one
    /// commit at a time.
    async fn commit_in_background(&mut self, run: &mut Run) -> Result<(), LinkError> {
        if run
            .committing
            .as_ref()
            .is_some_and(|(_, task)| !task.is_finished())
        {
            return Ok(());
        }
        self.finish_commit(run).await?;
        if run.acked_to > self.committed && run.last_commit.elapsed() >= COMMIT_INTERVAL {
            let cursor = self.cursor.clone();
            let next = run.acked_to;
            run.committing = Some((
                next,
                tokio::task::spawn_blocking(move || cursor.commit(next)),
            ));
            run.last_commit = Instant::now();
        }
        Ok(())
    }

    /// Waits for the background commit, if any, and records its result.
    async fn finish_commit(&mut self, run: &mut Run) -> Result<(), LinkError> {
        let Some((next, task)) = run.committing.take() else {
            return Ok(());
        };
        self.committed_by(task.await)?;
        self.committed = next;
        self.state
            .set_position(self.committed, self.stream.log.next_offset());
        Ok(())
    }

    /// Moves past records that retention deleted before they were sent,
    /// counting them.
    fn skip_retained_away(&self, run: &mut Run) {
        let first = self.stream.log.stats().first_offset;
        if run.read_to < first {
            let lost = first - run.read_to;
            tracing::warn!(
                stream = %self.stream.spec.name,
                lost,
                "retention dropped records the NATS bridge had not sent yet"
            );
            self.state.lost(lost);
            self.state.error(format!(
                "retention dropped {lost} records of stream {} before they were sent",
                self.stream.spec.name
            ));
            run.read_to = first;
            if run.pending.is_empty() {
                run.acked_to = first;
            }
        }
    }

    /// Starts reading `range` on a blocking thread.
    fn start_read(&self, range: std::ops::Range<u64>) -> Read {
        let log = self.stream.log.clone();
        tokio::task::spawn_blocking(move || log.scan(range).collect::<Result<Vec<_>, _>>())
    }

    async fn finish_read(&self, read: Read) -> Result<Vec<Record>, LinkError> {
        read.await
            .map_err(|e| LinkError::Internal(e.to_string()))?
            .map_err(|source| LinkError::Read {
                stream: self.stream.spec.name.clone(),
                source,
            })
    }

    /// Publishes one record if it belongs to this link. `Some` carries the
    /// publish to wait for (an ack future for JetStream, none for core).
    async fn publish(
        &self,
        client: &Client,
        js: &jetstream::Context,
        record: &Record,
    ) -> Result<Option<Option<PublishAckFuture>>, LinkError> {
        let message = &record.message;
        if crate::is_from_nats(message) || !self.spec.route.matches(&message.topic) {
            return Ok(None);
        }
        let subject = match self.spec.route.map(&message.topic) {
            Ok(subject) => subject,
            Err(e) => {
                tracing::warn!(offset = record.offset, error = %e, "record cannot be sent to NATS");
                self.state.error(&e);
                self.state.lost(1);
                return Ok(None);
            }
        };
        let id = self
            .spec
            .jetstream
            .then(|| format!("{}:{}:{}", self.node, self.stream.spec.name, record.offset));
        let (headers, dropped) = headers::to_headers(message, id.as_deref());
        if dropped > 0 {
            self.state.error(format!(
                "offset {}: {dropped} properties NATS headers cannot carry",
                record.offset
            ));
        }
        let payload = message.payload.clone();
        if self.spec.jetstream {
            let ack = js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| LinkError::nats("JetStream publish", e))?;
            Ok(Some(Some(ack)))
        } else {
            client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| LinkError::nats("publish", e))?;
            Ok(Some(None))
        }
    }

    /// Waits for acknowledgements until at most `keep` are pending.
    async fn settle(&self, client: &Client, run: &mut Run, keep: usize) -> Result<(), LinkError> {
        if run.pending.len() <= keep {
            return Ok(());
        }
        if !self.spec.jetstream {
            tokio::time::timeout(self.spec.ack_timeout, client.flush())
                .await
                .map_err(|_| LinkError::nats("flush", "timed out"))?
                .map_err(|e| LinkError::nats("flush", e))?;
            self.state.delivered(run.pending.len() as u64);
            run.pending.clear();
            run.acked_to = run.read_to;
            return Ok(());
        }
        while run.pending.len() > keep {
            let Some(front) = run.pending.pop_front() else {
                break;
            };
            if let Some(ack) = front.ack {
                ack.await
                    .map_err(|e| LinkError::nats("JetStream PubAck", e))?;
            }
            self.state.delivered(1);
            run.acked_to = if run.pending.is_empty() {
                run.read_to
            } else {
                front.offset + 1
            };
        }
        Ok(())
    }

    /// The outcome of a cursor commit run on a blocking thread.
    fn committed_by(
        &self,
        outcome: Result<std::io::Result<()>, tokio::task::JoinError>,
    ) -> Result<(), LinkError> {
        outcome
            .map_err(|e| LinkError::Internal(e.to_string()))?
            .map_err(|source| LinkError::Cursor {
                path: self.cursor.path().to_owned(),
                source,
            })
    }

    /// Durably records `next` as the cursor, if it moved.
    async fn commit(&mut self, next: u64) -> Result<(), LinkError> {
        if next > self.committed {
            let cursor = self.cursor.clone();
            self.committed_by(tokio::task::spawn_blocking(move || cursor.commit(next)).await)?;
            self.committed = next;
        }
        self.state
            .set_position(self.committed, self.stream.log.next_offset());
        Ok(())
    }
}

/// A batch being read on a blocking thread.
type Read = tokio::task::JoinHandle<Result<Vec<Record>, tidewire_core::StorageError>>;

/// One session's reading position.
struct Run {
    /// The next offset to read.
    read_to: u64,
    /// Everything before this is acknowledged (or not for this link).
    acked_to: u64,
    pending: VecDeque<Pending>,
    last_commit: Instant,
    /// A commit running on a blocking thread, and the offset it writes.
    committing: Option<(u64, tokio::task::JoinHandle<std::io::Result<()>>)>,
}
