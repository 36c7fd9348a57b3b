//! The session table: which sessions exist, which connection (if any) has
//! each, takeover of a client id by a new connection, expiry of offline
//! sessions, and saving persistent sessions across restarts.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::link::{Link, QUIET_AFTER_MS};
use crate::metrics::MqttMetrics;
use crate::persist;
use crate::router::Router;
use crate::session::{NEVER_EXPIRES, Session, SessionCommon};

/// Shards of the takeover notifications.
const HANDOVER_SHARDS: u64 = 64;
/// How long a new connection waits for the one it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Tells the connection that has `session`, if any, to give it up, and
/// wakes it.
fn kick(session: &Session) {
    session.link.owner.store(0, Ordering::Release);
    session.wake();
}

/// How a wait for a taken-over session ended.
enum HandOver {
    /// No connection holds it any more.
    LetGo,
    /// Another connection was given it meanwhile.
    Attached,
}

/// What became of a session when its connection let go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// It lives on offline (or for a connection taking it over): a will
    /// waits out its delay.
    Offline,
    /// It ended with the connection: a will is due now.
    Ended,
    /// A connection that took it over has it now: a will is due only
    /// without a delay.
    Resumed,
}

/// A session in the table, found by its client id.
#[derive(Debug)]
struct Entry(Arc<Session>);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.client_id.as_str().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Entry {}

/// A connection's claim on a session.
#[derive(Debug)]
pub struct Attached {
    /// The session.
    pub session: Arc<Session>,
    /// True when an existing session was resumed (CONNACK Session Present).
    pub present: bool,
    /// The connection's id: it has the session while the session's link
    /// is [owned by](Link::owned_by) it.
    pub connection: u64,
}

/// All sessions.
#[derive(Debug)]
pub struct SessionTable {
    entries: Mutex<HashSet<Entry>>,
    router: Arc<Router>,
    common: Arc<SessionCommon>,
    metrics: MqttMetrics,
    next_connection: AtomicU64,
    /// Signalled whenever a session is given to a connection, or a
    /// connection finishes with its session; one per shard of client ids,
    /// so a takeover is woken by its own client's handovers and few others.
    handovers: Box<[Notify]>,
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
            entries: Mutex::new(HashSet::new()),
            router,
            common: SessionCommon::new(max_queued, &metrics),
            metrics,
            next_connection: AtomicU64::new(1),
            handovers: (0..HANDOVER_SHARDS).map(|_| Notify::new()).collect(),
            file,
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.common.changed.store(true, Ordering::Relaxed);
    }

    /// The notification for handovers of `client_id`'s session.
    fn handovers(&self, client_id: &str) -> &Notify {
        let mut hasher = std::hash::DefaultHasher::new();
        client_id.hash(&mut hasher);
        let shard = hasher.finish() % HANDOVER_SHARDS;
        &self.handovers[shard as usize]
    }

    /// Gives `client_id` to a new connection: takes it over from a live
    /// connection (waiting for that one to finish), discards the old
    /// session on clean start, or resumes it.
    pub async fn attach(&self, client_id: &str, clean_start: bool, expiry_secs: u32) -> Attached {
        // Kick the connection that has the session and wait for it to
        // finish; again if another one attached meanwhile.
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let Some(session) = self.lock().get(client_id).map(|e| Arc::clone(&e.0)) else {
                break;
            };
            kick(&session);
            match tokio::time::timeout_at(deadline, self.handed_over(&session)).await {
                Ok(HandOver::LetGo) => break,
                Ok(HandOver::Attached) => {}
                Err(_) => {
                    tracing::warn!(client_id, "taken-over connection did not finish in time");
                    self.give_up_on_holders(&session);
                    break;
                }
            }
        }
        let now_ms = self.clock_ms();
        let mut entries = self.lock();
        // Under the lock, so that a takeover giving up on this session's
        // holders either counts this connection or sees it come later.
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        // A session whose expiry is 0 ends with its connection, even one
        // taken over.
        let resumable = !clean_start
            && entries
                .get(client_id)
                .is_some_and(|e| e.0.inspect(|state| state.expiry_secs > 0));
        if !resumable {
            if let Some(Entry(old)) = entries.take(client_id) {
                // A clean start (or a transient session) ends the old
                // session; a connection that attached to it while this
                // one waited is told to go.
                kick(&old);
                self.end(&old);
            }
            let session = Session::new(client_id.to_owned(), expiry_secs, Arc::clone(&self.common));
            entries.insert(Entry(Arc::new(session)));
        }
        let session = entries
            .get(client_id)
            .map(|e| Arc::clone(&e.0))
            .unwrap_or_else(|| unreachable!("inserted above"));
        let link = &session.link;
        if link.owner.swap(connection, Ordering::AcqRel) != 0 {
            // Attached while this one waited: the newest connection wins.
            session.wake();
        }
        link.holders.fetch_add(1, Ordering::AcqRel);
        link.deadline_ms.store(0, Ordering::Relaxed);
        link.touch(now_ms);
        let pending_will = {
            let mut state = session.lock();
            state.offline_since = None;
            state.expiry_secs = expiry_secs;
            state.pending_will.take()
        };
        if let Some(will) = pending_will {
            will.cancel();
        }
        self.metrics.sessions.set(entries.len() as i64);
        drop(entries);
        self.handovers(client_id).notify_waiters();
        Attached {
            session,
            present: resumable,
            connection,
        }
    }

    /// Waits until no connection holds `session`, or another connection
    /// was given it meanwhile.
    async fn handed_over(&self, session: &Session) -> HandOver {
        loop {
            let handed_over = self.handovers(&session.client_id).notified();
            if session.link.online() {
                return HandOver::Attached;
            }
            if session.link.holders.load(Ordering::Acquire) == 0 {
                return HandOver::LetGo;
            }
            handed_over.await;
        }
    }

    /// Stops counting the connections that hold `session` now: they were
    /// told to go and did not finish in time.
    fn give_up_on_holders(&self, session: &Session) {
        let _entries = self.lock();
        let link = &session.link;
        let next = self.next_connection.load(Ordering::Relaxed);
        link.given_up_below.store(next, Ordering::Relaxed);
        link.holders.store(0, Ordering::Release);
    }

    /// Called when connection `connection` ends: the session goes offline,
    /// or ends now if its expiry interval is 0, unless another connection
    /// has it now. Call [`SessionTable::finish`] once done with the session.
    pub fn detach(&self, session: &Arc<Session>, connection: u64) -> Detached {
        let mut entries = self.lock();
        let owned = session
            .link
            .owner
            .compare_exchange(connection, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let listed = entries
            .get(session.client_id.as_str())
            .is_some_and(|e| Arc::ptr_eq(&e.0, session));
        if !listed {
            return Detached::Ended; // discarded by a clean start
        }
        if !owned && session.link.online() {
            return Detached::Resumed;
        }
        let ended = {
            let mut state = session.lock();
            let ended = state.expiry_secs == 0;
            if !ended {
                state.offline_since.get_or_insert_with(Instant::now);
            }
            ended
        };
        if ended {
            entries.remove(session.client_id.as_str());
            self.end(session);
            self.metrics.sessions.set(entries.len() as i64);
            Detached::Ended
        } else {
            Detached::Offline
        }
    }

    /// Tells the table connection `connection` is done with `session`,
    /// after [`SessionTable::detach`] and its will: a connection taking the
    /// session over may go ahead.
    pub fn finish(&self, session: &Session, connection: u64) {
        {
            let _entries = self.lock();
            let link = &session.link;
            if connection >= link.given_up_below.load(Ordering::Relaxed) {
                link.holders.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.handovers(&session.client_id).notify_waiters();
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

    /// The client of connection `connection` on `link` was heard from at
    /// `at`: sets when it is overdue (keep alive `keepalive_ms`, 0 for
    /// none), and marks the connection active. Nothing changes if the
    /// connection no longer has the session.
    pub fn note_input(&self, link: &Link, connection: u64, at: Instant, keepalive_ms: u32) {
        if !link.owned_by(connection) {
            return;
        }
        let at_ms = self.ms_at(at);
        let deadline = if keepalive_ms == 0 {
            0
        } else {
            (at_ms + u64::from(keepalive_ms)).max(1)
        };
        link.deadline_ms.store(deadline, Ordering::Relaxed);
        link.touch(at_ms);
    }

    /// True when the client on `link` is past its keep-alive deadline.
    pub fn overdue(&self, link: &Link) -> bool {
        link.overdue_at(self.clock_ms())
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
        for Entry(session) in self.lock().iter() {
            let link = &session.link;
            if !link.online() {
                continue;
            }
            let overdue = link.overdue_at(now);
            let quiet = !link.quiet()
                && now.saturating_sub(link.active_ms.load(Ordering::Relaxed)) >= QUIET_AFTER_MS;
            if quiet {
                link.mark_quiet();
            }
            if overdue || quiet {
                session.wake();
            }
        }
    }

    /// Wakes every connection, for shutdown: each finds the server
    /// closing and gives its session up.
    pub fn wake_all(&self) {
        for Entry(session) in self.lock().iter() {
            if session.link.online() {
                session.wake();
            }
        }
    }

    /// Ends offline sessions whose expiry interval has passed and returns
    /// them.
    pub fn expire(&self) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let mut entries = self.lock();
        let expired: Vec<Arc<Session>> = entries
            .iter()
            .filter(|Entry(session)| {
                !session.link.online()
                    && session.inspect(|state| {
                        let secs = state.expiry_secs;
                        secs != NEVER_EXPIRES
                            && state.offline_since.is_some_and(|t| {
                                now.duration_since(t) >= Duration::from_secs(u64::from(secs))
                            })
                    })
            })
            .map(|e| Arc::clone(&e.0))
            .collect();
        for session in &expired {
            entries.remove(session.client_id.as_str());
            self.end(session);
        }
        if !expired.is_empty() {
            self.metrics.sessions.set(entries.len() as i64);
            self.changed();
        }
        expired
    }

    /// Ends a session taken out of the table: its subscriptions go, and a
    /// will waiting out its delay is published now.
    fn end(&self, session: &Session) {
        let (filters, will) = {
            let mut state = session.lock();
            let filters: Vec<String> = state.subscriptions.keys().cloned().collect();
            (filters, state.pending_will.take())
        };
        for filter in filters {
            self.router.unsubscribe(&filter, &session.client_id);
        }
        if let Some(will) = will {
            will.publish_now();
        }
    }

    /// Writes persistent sessions to disk if anything changed since the
    /// last save. Blocking.
    pub fn save_if_changed(&self) -> std::io::Result<()> {
        if !self.common.changed.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let sessions: Vec<Arc<Session>> = self.lock().iter().map(|e| Arc::clone(&e.0)).collect();
        let result = persist::save(&self.file, &sessions);
        if result.is_err() {
            self.changed();
        }
        result
    }

    /// Loads the sessions saved by a previous run, all offline, with their
    /// subscriptions back in the router. Blocking.
    pub fn restore(&self) -> std::io::Result<usize> {
        let restored = persist::load(&self.file, &self.common)?;
        let mut entries = self.lock();
        let count = restored.len();
        for session in restored {
            let subscriptions: Vec<_> = session.inspect(|state| {
                state
                    .subscriptions
                    .iter()
                    .map(|(f, o)| (f.clone(), *o))
                    .collect()
            });
            for (filter, options) in subscriptions {
                self.router.subscribe(&filter, &session, options);
            }
            entries.replace(Entry(session));
        }
        self.metrics.sessions.set(entries.len() as i64);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_in(dir: &std::path::Path) -> SessionTable {
        SessionTable::new(
            Arc::default(),
            10,
            MqttMetrics::default(),
            dir.join("sessions.json"),
        )
    }

    #[tokio::test]
    async fn sessions_are_saved_only_after_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = table_in(dir.path());
        let file = dir.path().join("sessions.json");
        let attached = table.attach("c1", false, 600).await;
        assert_eq!(
            table.detach(&attached.session, attached.connection),
            Detached::Offline
        );
        table.finish(&attached.session, attached.connection);
        table.save_if_changed().expect("save");
        assert!(file.exists(), "the new session is saved");

        std::fs::remove_file(&file).expect("remove");
        table.wake_overdue_and_quiet();
        assert!(table.expire().is_empty());
        table.save_if_changed().expect("save");
        assert!(!file.exists(), "housekeeping changes nothing to save");

        attached.session.lock().expiry_secs = 60;
        table.save_if_changed().expect("save");
        assert!(file.exists(), "a changed session is saved again");
        let restored = table_in(dir.path());
        assert_eq!(restored.restore().expect("restore"), 1);
    }

    /// Starts a connection resuming `old`'s client id, and returns once
    /// `old` has been told to go.
    async fn take_over(
        table: &Arc<SessionTable>,
        old: &Attached,
    ) -> tokio::task::JoinHandle<Attached> {
        let table = Arc::clone(table);
        let client_id = old.session.client_id.clone();
        let taking_over = tokio::spawn(async move { table.attach(&client_id, false, 600).await });
        while old.session.link.owned_by(old.connection) {
            tokio::task::yield_now().await;
        }
        taking_over
    }

    #[tokio::test]
    async fn a_takeover_waits_for_the_old_connection_to_let_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = Arc::new(table_in(dir.path()));
        let old = table.attach("c1", false, 600).await;
        assert!(old.session.link.owned_by(old.connection));
        let taking_over = take_over(&table, &old).await;
        assert!(
            !taking_over.is_finished(),
            "waits until the old one finishes"
        );
        assert_eq!(
            table.detach(&old.session, old.connection),
            Detached::Offline,
            "a taken-over session lives on"
        );
        table.finish(&old.session, old.connection);
        let new = taking_over.await.expect("attach");
        assert!(new.present, "the session was resumed");
        assert!(Arc::ptr_eq(&new.session, &old.session));
        assert!(new.session.link.owned_by(new.connection));
        assert!(new.session.inspect(|s| s.offline_since.is_none()));
    }

    #[tokio::test]
    async fn a_session_that_ends_with_its_connection_is_not_resumed_by_a_takeover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = Arc::new(table_in(dir.path()));
        let transient = table.attach("c1", false, 0).await;
        let taking_over = take_over(&table, &transient).await;
        assert_eq!(
            table.detach(&transient.session, transient.connection),
            Detached::Ended
        );
        table.finish(&transient.session, transient.connection);
        let new = taking_over.await.expect("attach");
        assert!(!new.present, "a fresh session");
        assert!(!Arc::ptr_eq(&new.session, &transient.session));
    }

    #[tokio::test]
    async fn connections_a_takeover_gave_up_on_no_longer_hold_the_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = table_in(dir.path());
        let holders = |session: &Session| session.link.holders.load(Ordering::Acquire);
        let stuck = table.attach("c1", false, 600).await;
        // What a takeover does once the old connection is overdue.
        kick(&stuck.session);
        table.give_up_on_holders(&stuck.session);
        let next = table.attach("c1", false, 600).await;
        assert!(next.present);
        assert_eq!(holders(&next.session), 1);
        // The stuck connection lets go at last: the session is not its to
        // release, and it does not count.
        assert_eq!(
            table.detach(&stuck.session, stuck.connection),
            Detached::Resumed
        );
        table.finish(&stuck.session, stuck.connection);
        assert_eq!(holders(&next.session), 1, "the new connection holds it");
        assert_eq!(
            table.detach(&next.session, next.connection),
            Detached::Offline
        );
        table.finish(&next.session, next.connection);
        assert_eq!(holders(&next.session), 0);
    }
}
