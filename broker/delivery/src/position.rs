//! Read positions in a stream, shared by every reader: where a read
//! starts ([`Start`]: a consumer's first start, or a records request's
//! `from`), and waiting for records past a position ([`records_after`]:
//! the pump's tail and the records API's long-poll), woken by the
//! stream's commits, never by polling.

use tidewire_storage::{StorageError, StreamLog};

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the oldest record kept.
    Earliest,
    /// At the stream's end: only what is appended from now on.
    Latest,
    /// At this offset (the caller checks it against the stream's end;
    /// one older than retention reads from the oldest record kept).
    Offset(u64),
    /// At the first record with a broker timestamp at or after this one,
    /// ms since the Unix epoch.
    Time(i64),
}

impl Start {
    /// The offset a read from here begins at, in `log` as it is now.
    /// Blocking file I/O for [`Start::Time`].
    pub fn resolve(self, log: &StreamLog) -> Result<u64, StorageError> {
        match self {
            Start::Earliest => Ok(log.stats().first_offset),
            Start::Latest => Ok(log.next_offset()),
            Start::Offset(offset) => Ok(offset),
            Start::Time(ts_ms) => log.offset_at_time(ts_ms),
        }
    }
}

/// Waits until `log` holds a committed record at `offset` or later (for
/// ever if none comes: callers bound it with a timeout or a select).
pub async fn records_after(log: &StreamLog, offset: u64) {
    let mut committed = log.subscribe();
    // The sender lives as long as `log`, so the wait cannot fail while
    // this borrows it.
    let _ = committed.wait_for(|next| *next > offset).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use tidewire_storage::{LogConfig, Message, StorageMetrics};

    use super::*;

    fn message(i: u64) -> Arc<Message> {
        Arc::new(Message {
            topic: "t".into(),
            client_id: "c".into(),
            qos: 1,
            retain: false,
            payload: i.to_string().into(),
            properties: Default::default(),
        })
    }

    #[tokio::test]
    async fn every_start_resolves_and_a_waiter_wakes_on_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = StorageMetrics::register(&mut Registry::default());
        let log = StreamLog::open(
            dir.path(),
            "s",
            LogConfig::default(),
            &metrics,
            Arc::new(|_| {}),
        )
        .expect("open");
        let mut stamps = Vec::new();
        for i in 0..3 {
            stamps.push(log.append(message(i)).await.expect("append").timestamp_ms);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(Start::Earliest.resolve(&log).expect("earliest"), 0);
        assert_eq!(Start::Latest.resolve(&log).expect("latest"), 3);
        assert_eq!(Start::Offset(1).resolve(&log).expect("offset"), 1);
        assert_eq!(Start::Time(stamps[2]).resolve(&log).expect("time"), 2);
        assert_eq!(
            Start::Time(stamps[2] + 1000).resolve(&log).expect("future"),
            3
        );

        records_after(&log, 2).await;
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { records_after(&log, 3).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "nothing at offset 3 yet");
        log.append(message(3)).await.expect("append");
        waiter.await.expect("woken");
        log.close().await;
    }
}
