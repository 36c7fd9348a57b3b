//! [`Link`]: which connection has a session, and what the session
//! table's sweep needs to know about it (keep-alive deadline, activity).
//! It lives inside the session, so an online session is one allocation;
//! the table (`sessions.rs`) moves it through takeovers and sweeps.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// How long a connection goes without input or output before it counts
/// as quiet (and a TCP connection parks), in ms.
pub(crate) const QUIET_AFTER_MS: u64 = 1000;

/// Which connection has a session, and what the table's sweep needs to
/// know about it. Part of the session; waking goes through the session,
/// so a connection waits on one thing.
#[derive(Debug, Default)]
pub struct Link {
    /// The connection that has the session; 0 when none has it (offline,
    /// or its connection was told to give it up).
    pub(crate) owner: AtomicU64,
    /// Connections that were given the session and have not finished with
    /// it (a taken-over connection holds it until it has let go), not
    /// counting those a takeover gave up waiting for.
    pub(crate) holders: AtomicU32,
    /// Connections with lower ids were given up on by a takeover that
    /// waited too long for them; they no longer count as holders.
    pub(crate) given_up_below: AtomicU64,
    /// The sweep found the connection quiet since `active_ms`.
    pub(crate) quiet: AtomicBool,
    /// When the client is overdue under its keep alive, in ms on the
    /// table's clock; 0 without keep alive.
    pub(crate) deadline_ms: AtomicU64,
    /// When the connection last read or wrote, in ms on the table's clock.
    pub(crate) active_ms: AtomicU64,
}

impl Link {
    /// True while connection `connection` has the session; false once it
    /// must give the session up (taken over).
    pub fn owned_by(&self, connection: u64) -> bool {
        self.owner.load(Ordering::Acquire) == connection
    }

    /// True once the connection has been quiet for a while (nothing read
    /// or written).
    pub fn quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed)
    }

    /// True while a connection has the session.
    pub fn online(&self) -> bool {
        self.owner.load(Ordering::Acquire) != 0
    }

    /// Lets the connection park as soon as it waits.
    pub fn mark_quiet(&self) {
        self.quiet.store(true, Ordering::Relaxed);
    }

    /// True when the client is past its keep-alive deadline at `now_ms`.
    pub(crate) fn overdue_at(&self, now_ms: u64) -> bool {
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        deadline != 0 && deadline <= now_ms
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.active_ms.store(now_ms, Ordering::Relaxed);
        if self.quiet.load(Ordering::Relaxed) {
            self.quiet.store(false, Ordering::Relaxed);
        }
    }
}
