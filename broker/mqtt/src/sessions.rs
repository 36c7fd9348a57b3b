//! The session table: which sessions exist, which connection (if any) has
//! each, takeover of a client id by a new connection, expiry of offline
//! sessions, and saving persistent sessions across restarts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::MqttMetrics;
use crate::persist;
use crate::router::Router;
use crate::session::{NEVER_EXPIRES, Session};

/// How long a new connection waits for the one it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a connection goes without input or output before it counts
/// as quiet (and a TCP connection parks), in ms.
const QUIET_AFTER_MS: u64 = 1000;

/// What the table and the connection serving a session share: how the
/// table takes the session away, and when the client is overdue. Waking
/// goes through the session, so a connection waits on one thing.
#[derive(Debug)]
pub struct Link {
    /// The connection's id in the table.
    id: u64,
    /// Another connection took the client id over (or the server is
    /// shutting down).
    kicked: AtomicBool,
    /// When the client is overdue under its keep alive, in ms on the
    /// table's clock; 0 without keep alive.
    deadline_ms: AtomicU64,
    /// When the connection last read or wrote, in ms on the table's clock.
    active_ms: AtomicU64,
    /// The sweep found the connection quiet since `active_ms`.
    quiet: AtomicBool,
    /// The connection has finished with the session.
    finished: AtomicBool,
    finished_notify: Notify,
}

impl Link {
    fn new(id: u64, now_ms: u64) -> Link {
        Link {
            id,
            kicked: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(0),
            active_ms: AtomicU64::new(now_ms),
            quiet: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            finished_notify: Notify::new(),
        }
    }

    /// The connection's id in the table.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once the connection must give the session up.
    pub fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// True once the connection has been quiet for a while (nothing read
    /// or written).
    pub fn quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    /// Lets the connection park as soon as it waits.
    pub fn mark_quiet(&self) {
        self.quiet.store(true, Ordering::Relaxed);
    }

    fn touch(&self, now_ms: u64) {
        self.active_ms.store(now_ms, Ordering::Relaxed);
        if self.quiet.load(Ordering::Relaxed) {
            self.quiet.store(false, Ordering::Relaxed);
        }
    }

    /// Tells the connection on `session` to give it up, and wakes it.
    fn kick(&self, session: &Session) {
        self.kicked.store(true, Ordering::Release);
        session.wake();
    }

    /// Tells the table the connection is done with the session.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.finished_notify.notify_waiters();
    }

    async fn finished(&self) {
        loop {
            let notified = self.finished_notify.notified();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
struct Entry {
    session: Arc<Session>,
    /// The connection that has the session, if any.
    live: Option<Arc<Link>>,
    offline_since: Option<Instant>,
}

/// A connection's claim on a session.
#[derive(Debug)]
pub struct Attached {
    /// The session.
    pub session: Arc<Session>,
    /// True when an existing session was resumed (CONNACK Session Present).
    pub present: bool,
    /// Shared with the table: kicks, keep alive, finishing.
    pub link: Arc<Link>,
}

/// All sessions.
#[derive(Debug)]
pub struct SessionTable {
    entries: Mutex<HashMap<String, Entry>>,
    router: Arc<Router>,
    max_queued: usize,
    metrics: MqttMetrics,
    next_connection: AtomicU64,
    changed: Arc<AtomicBool>,
    file: PathBuf,
    epoch: Instant,
}

impl SessionTable {
    /// An empty table whose persistent sessions are saved to `file`.
    pub fn new(
        router: Arc<Router>,
        max_queued: usize,
        metrics: MqttMetrics,
        file: PathBuf,
    ) -> SessionTable {
        SessionTable {
            entries: Mutex::new(HashMap::new()),
            router,
            max_queued,
            metrics,
            next_connection: AtomicU64::new(1),
            changed: Arc::default(),
            file,
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `client_id` to a new connection: takes it over from a live
    /// connection (waiting for that one to finish), discards the old
    /// session on clean start, or resumes it.
    pub async fn attach(&self, client_id: &str, clean_start: bool, expiry_secs: u32) -> Attached {
        // Kick the connection that has the session and wait for it to
        // finish; again if another one attached meanwhile.
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let previous = self
                .lock()
                .get_mut(client_id)
                .and_then(|e| Some((e.live.take()?, Arc::clone(&e.session))));
            let Some((old, session)) = previous else {
                break;
            };
            old.kick(&session);
            if tokio::time::timeout_at(deadline, old.finished())
                .await
                .is_err()
            {
                tracing::warn!(client_id, "taken-over connection did not finish in time");
                break;
            }
        }
        let link = Arc::new(Link::new(
            self.next_connection.fetch_add(1, Ordering::Relaxed),
            self.clock_ms(),
        ));
        let mut entries = self.lock();
        let resumable = !clean_start && entries.contains_key(client_id);
        if !resumable {
            if let Some(old) = entries.remove(client_id) {
                self.drop_subscriptions(&old.session);
            }
            let session = Arc::new(Session::new(
                client_id.to_owned(),
                expiry_secs,
                self.max_queued,
                self.metrics.clone(),
                Arc::clone(&self.changed),
            ));
            entries.insert(
                client_id.to_owned(),
                Entry {
                    session,
                    live: None,
                    offline_since: None,
                },
            );
        }
        let entry = entries
            .get_mut(client_id)
            .unwrap_or_else(|| unreachable!("inserted above"));
        if let Some(other) = entry.live.replace(Arc::clone(&link)) {
            // Attached while this one waited: the newest connection wins.
            other.kick(&entry.session);
        }
        entry.offline_since = None;
        entry.session.lock().expiry_secs = expiry_secs;
        if let Some(will) = entry
            .session
            .pending_will
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            will.cancel();
        }
        let session = Arc::clone(&entry.session);
        self.metrics.sessions.set(entries.len() as i64);
        self.changed.store(true, Ordering::Relaxed);
        Attached {
            session,
            present: resumable,
            link,
        }
    }

    /// Called when connection `connection` ends: the session goes offline,
    /// or ends now if its expiry interval is 0. Returns true if the session
    /// ended.
    pub fn detach(&self, client_id: &str, connection: u64) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(client_id) else {
            return true;
        };
        if entry.live.as_ref().is_none_or(|link| link.id != connection) {
            return false; // taken over: the session lives on
        }
        entry.live = None;
        let ended = entry.session.lock().expiry_secs == 0;
        if ended {
            if let Some(entry) = entries.remove(client_id) {
                self.drop_subscriptions(&entry.session);
            }
        } else {
            entry.offline_since = Some(Instant::now());
        }
        self.metrics.sessions.set(entries.len() as i64);
        self.changed.store(true, Ordering::Relaxed);
        ended
    }

    /// Milliseconds on the table's clock now, for keep-alive deadlines
    /// and activity.
    pub fn clock_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `at` in milliseconds on the table's clock.
    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The client on `link` was heard from: sets when it is overdue
    /// (`None`: no keep alive), and marks the connection active.
    pub fn note_input(&self, link: &Link, at: Instant, keepalive: Option<Duration>) {
        let deadline = keepalive.map_or(0, |timeout| self.ms_at(at + timeout).max(1));
        link.deadline_ms.store(deadline, Ordering::Relaxed);
        link.touch(self.ms_at(at));
    }

    /// Marks the connection on `link` active (it wrote).
    pub fn touch(&self, link: &Link) {
        link.touch(self.clock_ms());
    }

    /// Wakes every connection whose client is past its keep-alive
    /// deadline, so it closes itself, and every connection that has just
    /// gone quiet, so it can park. Called periodically.
    pub fn wake_overdue_and_quiet(&self) {
        let now = self.clock_ms();
        for entry in self.lock().values() {
            let Some(link) = &entry.live else { continue };
            let deadline = link.deadline_ms.load(Ordering::Relaxed);
            let overdue = deadline != 0 && deadline <= now;
            let quiet = !link.quiet()
                && now.saturating_sub(link.active_ms.load(Ordering::Relaxed)) >= QUIET_AFTER_MS;
            if quiet {
                link.mark_quiet();
            }
            if overdue || quiet {
                entry.session.wake();
            }
        }
    }

    /// Kicks every connection off its session, for shutdown.
    pub fn kick_all(&self) {
        for entry in self.lock().values() {
            if let Some(link) = &entry.live {
                link.kick(&entry.session);
            }
        }
    }

    /// Ends offline sessions whose expiry interval has passed and returns
    /// them.
    pub fn expire(&self) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let mut entries = self.lock();
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, e)| {
                let secs = e.session.lock().expiry_secs;
                e.live.is_none()
                    && secs != NEVER_EXPIRES
                    && e.offline_since.is_some_and(|t| {
                        now.duration_since(t) >= Duration::from_secs(u64::from(secs))
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let ended: Vec<Arc<Session>> = expired
            .iter()
            .filter_map(|id| entries.remove(id))
            .map(|e| {
                self.drop_subscriptions(&e.session);
                e.session
            })
            .collect();
        if !ended.is_empty() {
            self.metrics.sessions.set(entries.len() as i64);
            self.changed.store(true, Ordering::Relaxed);
        }
        ended
    }

    fn drop_subscriptions(&self, session: &Session) {
        let filters: Vec<String> = session.lock().subscriptions.keys().cloned().collect();
        for filter in filters {
            self.router.unsubscribe(&filter, &session.client_id);
        }
    }

    /// Writes persistent sessions to disk if anything changed since the
    /// last save. Blocking.
    pub fn save_if_changed(&self) -> std::io::Result<()> {
        if !self.changed.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let sessions: Vec<(Arc<Session>, Option<Instant>)> = self
            .lock()
            .values()
            .map(|e| (Arc::clone(&e.session), e.offline_since))
            .collect();
        let result = persist::save(&self.file, &sessions);
        if result.is_err() {
            self.changed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Loads the sessions saved by a previous run, all offline, with their
    /// subscriptions back in the router. Blocking.
    pub fn restore(&self) -> std::io::Result<usize> {
        let restored = persist::load(&self.file, self.max_queued, &self.metrics, &self.changed)?;
        let mut entries = self.lock();
        let count = restored.len();
        for (session, offline_since) in restored {
            let subscriptions: Vec<_> = session
                .lock()
                .subscriptions
                .iter()
                .map(|(f, o)| (f.clone(), *o))
                .collect();
            for (filter, options) in subscriptions {
                self.router.subscribe(&filter, &session, options);
            }
            entries.insert(
                session.client_id.clone(),
                Entry {
                    session,
                    live: None,
                    offline_since: Some(offline_since),
                },
            );
        }
        self.metrics.sessions.set(entries.len() as i64);
        Ok(count)
    }
}
