//! The delivery pump against a real stream log and a sink that fails,
//! times out and accepts in turn: everything arrives at least once and in
//! order, and the cursor file never passes a record the sink has not
//! accepted, also when the pump is dropped mid-flight (a crash) and a new
//! one starts from the cursor file.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tidewire_delivery::{Cursor, DeliveryStatus, Pump, PumpConfig, Sent, Sink, SinkError, Start};
use tidewire_storage::{LogConfig, Message, OnFatal, Record, StorageMetrics, StreamLog};
use tokio_util::sync::CancellationToken;

const N: u64 = 600;

/// The topic of record `i`: every 17th is not for the sink, every 101st
/// is one it rejects for good.
fn topic(i: u64) -> &'static str {
    if i % 17 == 3 {
        "skip"
    } else if i % 101 == 50 {
        "poison"
    } else {
        "data"
    }
}

fn deliverable() -> Vec<u64> {
    (0..N).filter(|&i| topic(i) == "data").collect()
}

fn open_log(dir: &Path) -> StreamLog {
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let on_fatal: OnFatal = Arc::new(|e| panic!("unexpected fatal storage error: {e}"));
    StreamLog::open(dir, "events", LogConfig::default(), &metrics, on_fatal).expect("open log")
}

async fn append(log: &StreamLog, range: std::ops::Range<u64>) {
    for i in range {
        let message = Message {
            topic: topic(i).to_owned(),
            client_id: "test".to_owned(),
            qos: 1,
            retain: false,
            payload: Bytes::from(i.to_string()),
            properties: Default::default(),
        };
        let appended = log.append(Arc::new(message)).await.expect("append");
        assert_eq!(appended.offset, i);
    }
}

type Ack = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// A sink whose answers follow its call count: some sends are refused,
/// some acknowledgements never come back (the record arrived, its answer
/// was lost), some flushes fail; the rest are accepted, half with an
/// acknowledgement and half confirmed by a flush. `arrived` is what the
/// target received, in order; `confirmed` what it acknowledged.
struct FlakySink {
    calls: u64,
    flushes: u64,
    unflushed: Vec<u64>,
    arrived: Arc<Mutex<Vec<u64>>>,
    confirmed: Arc<Mutex<Vec<u64>>>,
}

impl FlakySink {
    fn new(log: &Logs) -> FlakySink {
        FlakySink {
            calls: 0,
            flushes: 0,
            unflushed: Vec::new(),
            arrived: Arc::clone(&log.arrived),
            confirmed: Arc::clone(&log.confirmed),
        }
    }
}

/// What a test target saw.
#[derive(Clone, Default)]
struct Logs {
    arrived: Arc<Mutex<Vec<u64>>>,
    confirmed: Arc<Mutex<Vec<u64>>>,
}

impl Sink for FlakySink {
    type Ack = Ack;

    async fn send(&mut self, record: &Record) -> Result<Sent<Ack>, SinkError> {
        self.calls += 1;
        let offset = record.offset;
        match record.message.topic.as_str() {
            "skip" => return Ok(Sent::Skipped),
            "poison" => return Err(SinkError::rejected("poison")),
            _ => {}
        }
        if self.calls % 97 == 11 {
            return Err(SinkError::retry("refused"));
        }
        lock(&self.arrived).push(offset);
        match self.calls % 97 {
            60 => Ok(Sent::Pending(Box::pin(std::future::pending()))),
            n if n % 2 == 0 => {
                self.unflushed.push(offset);
                Ok(Sent::Accepted)
            }
            _ => {
                let confirmed = Arc::clone(&self.confirmed);
                Ok(Sent::Pending(Box::pin(async move {
                    // Answers take a while, so the pump has records in
                    // flight when it commits and when it crashes.
                    tokio::time::sleep(Duration::from_micros(offset % 4 * 500)).await;
                    lock(&confirmed).push(offset);
                    Ok(())
                })))
            }
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.flushes += 1;
        if self.flushes % 9 == 4 {
            self.unflushed.clear();
            return Err(SinkError::retry("flush failed"));
        }
        lock(&self.confirmed).append(&mut self.unflushed);
        Ok(())
    }

    fn reset(&mut self) {
        self.unflushed.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("lock")
}

fn config() -> PumpConfig {
    PumpConfig {
        batch: 16,
        max_in_flight: 8,
        ack_timeout: Duration::from_millis(20),
        commit_interval: Duration::from_millis(5),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(10),
        linger: Duration::ZERO,
    }
}

fn cursor(dir: &Path) -> Cursor {
    Cursor::new(dir.join("consumer.json"), [("consumer", "test")])
}

fn cursor_offset(path: &Path) -> Option<u64> {
    let text = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).expect("a whole cursor file");
    value["next_offset"].as_u64()
}

/// Checks, until stopped, that every deliverable record before the
/// committed cursor was confirmed by the target.
fn watch_cursor(
    path: PathBuf,
    confirmed: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let wanted = deliverable();
        let mut checks = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(cursor) = cursor_offset(&path) {
                let seen: HashSet<u64> = lock(&confirmed).iter().copied().collect();
                let missing: Vec<_> = wanted
                    .iter()
                    .filter(|&&o| o < cursor && !seen.contains(&o))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "cursor {cursor} passed unconfirmed records {missing:?}"
                );
                checks += 1;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        checks
    })
}

/// Every deliverable record arrived, and none before an earlier one had
/// arrived (repeats after a retry start again from the cursor).
fn assert_in_order_at_least_once(arrived: &[u64]) {
    let wanted = deliverable();
    let mut seen = HashSet::new();
    let mut next = 0; // index in `wanted` of the first record not seen yet
    for &offset in arrived {
        assert!(
            next == wanted.len() || offset <= wanted[next],
            "record {offset} arrived before {}",
            wanted[next]
        );
        seen.insert(offset);
        while next < wanted.len() && seen.contains(&wanted[next]) {
            next += 1;
        }
    }
    assert_eq!(next, wanted.len(), "records missing");
    assert!(arrived.iter().all(|o| topic(*o) == "data"));
}

/// Opens a pump on the cursor file in `dir` and runs it with a
/// [`FlakySink`] until `shutdown`.
fn spawn_pump(
    dir: &Path,
    log: &StreamLog,
    start: Start,
    logs: &Logs,
    shutdown: &CancellationToken,
) -> (tokio::task::JoinHandle<Pump>, Arc<DeliveryStatus>) {
    let status = Arc::new(DeliveryStatus::default());
    let mut pump = Pump::open(
        log.clone(),
        cursor(dir),
        start,
        config(),
        Arc::clone(&status) as _,
    )
    .expect("open pump");
    let mut sink = FlakySink::new(logs);
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        pump.run_retrying(&mut sink, &shutdown).await;
        pump
    });
    (task, status)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_sink_gets_everything_in_order_and_the_cursor_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(&dir.path().join("events"));
    append(&log, 0..N * 3 / 4).await;
    let logs = Logs::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_cursor(
        dir.path().join("consumer.json"),
        Arc::clone(&logs.confirmed),
        Arc::clone(&stop),
    );

    // A first pump, dropped mid-flight as in a crash.
    let (crashed, _) = spawn_pump(
        dir.path(),
        &log,
        Start::Earliest,
        &logs,
        &CancellationToken::new(),
    );
    wait_for("some progress", || {
        lock(&logs.confirmed).len() > (N / 6) as usize
    })
    .await;
    crashed.abort();
    let _ = crashed.await;
    // Let a cursor commit already on its blocking thread finish, as the
    // kernel would finish a rename the process had started.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_crash = cursor_offset(&dir.path().join("consumer.json")).expect("cursor");
    assert!(after_crash < N);

    // A new pump from the cursor file, tailing what is appended meanwhile.
    let shutdown = CancellationToken::new();
    let (running, status) = spawn_pump(dir.path(), &log, Start::Latest, &logs, &shutdown);
    assert_eq!(
        status.snapshot().cursor,
        after_crash,
        "starts from the cursor file"
    );
    append(&log, N * 3 / 4..N).await;
    wait_for("the cursor at the end", || status.snapshot().cursor == N).await;
    shutdown.cancel();
    let pump = running.await.expect("pump");
    assert_eq!(pump.committed(), N);
    stop.store(true, Ordering::Relaxed);
    let checks = watcher
        .join()
        .expect("the cursor never passed an unconfirmed record");
    assert!(checks > 0);

    assert_eq!(cursor_offset(&dir.path().join("consumer.json")), Some(N));
    assert_in_order_at_least_once(&lock(&logs.arrived));
    // Confirmations of a flush may come before earlier acknowledgements;
    // every record was confirmed at least once.
    let confirmed: HashSet<u64> = lock(&logs.confirmed).iter().copied().collect();
    assert_eq!(confirmed, deliverable().into_iter().collect());
    let snapshot = status.snapshot();
    assert_eq!(
        (snapshot.lag.records, snapshot.lag.millis),
        (0, 0),
        "caught up"
    );
    assert!(snapshot.failures > 0, "the sink's failures are counted");
    assert!(snapshot.lost >= (0..N).filter(|&i| topic(i) == "poison").count() as u64 / 2);
    assert!(snapshot.last_error.is_some());
}
