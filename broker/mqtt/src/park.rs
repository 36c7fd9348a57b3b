//! The parking lot: connections over TCP (plain or TLS) that have gone
//! quiet wait here with no task and no registration in the runtime's
//! reactor of their own, so a quiet device costs little more than its
//! session.
//!
//! One thread watches every parked socket with a mio poller. A parked
//! connection gets a task again when its socket turns readable (input or a
//! close), or when the waker it was given is woken (for MQTT, by its
//! session: a message queued, keep alive overdue, takeover, shutdown).
//! Wakers only queue the connection's token for that thread, so waking
//! never blocks and never re-enters the lot.

use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use prometheus_client::metrics::gauge::Gauge;
use slab::Slab;
use tokio::runtime::Handle;

/// Readiness events taken from the poller at a time.
const EVENTS: usize = 1024;
/// The poller's token for its own waker (connection tokens never reach it:
/// their slot number is below `u32::MAX`).
const WAKE: Token = Token(usize::MAX);

/// What waits in the lot with its socket.
pub(crate) trait Parkable: Send + Sized + 'static {
    /// Arranges for `waker` to be woken when the connection has work other
    /// than socket input, and returns true if it already has some.
    fn watch(&self, waker: &Waker) -> bool;

    /// Serves the connection again, on `socket`. Called on the runtime.
    fn resume(self, socket: TcpStream) -> impl Future<Output = ()> + Send + 'static;
}

/// Quiet connections of one kind, and the task that watches them.
pub(crate) struct ParkingLot<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    registry: Registry,
    slots: Mutex<Slots<T>>,
    /// Tokens of parked connections whose wakers were woken.
    woken: Mutex<Vec<Token>>,
    /// Wakes the watching thread, for `woken` and for `closed`.
    poll_waker: mio::Waker,
    /// Ends the watching thread (the lot was dropped), or the thread has
    /// failed: nothing parks any more.
    closed: AtomicBool,
    /// Where resumed connections are spawned.
    runtime: Handle,
    parked: Gauge,
}

/// The parked connections by slot. The slab holds only pointers, so it
/// stays small as it grows.
struct Slots<T> {
    parked: Slab<Arc<Parked<T>>>,
    /// Tells a slot's occupants apart, so a stale event or waker is
    /// ignored rather than waking whoever took the slot next.
    generation: u32,
}

/// One parked connection, in the same allocation as its waker.
struct Parked<T> {
    lot: Weak<Shared<T>>,
    token: Token,
    /// Already queued: each waker queues its connection at most once, so
    /// the queue stays within about the number of parked connections.
    queued: AtomicBool,
    /// Taken when the connection resumes.
    held: Mutex<Option<(TcpStream, T)>>,
}

impl<T> std::fmt::Debug for ParkingLot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.shared.parked.get())
            .finish_non_exhaustive()
    }
}

impl<T> Drop for ParkingLot<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Err(e) = self.shared.poll_waker.wake() {
            tracing::warn!(error = %e, "could not stop the parking lot's thread");
        }
    }
}

fn token(key: usize, generation: u32) -> Token {
    Token((key << 32) | generation as usize)
}

fn slot_of(token: Token) -> usize {
    token.0 >> 32
}

impl<T: Parkable> ParkingLot<T> {
    /// An empty lot and its watching thread; connections resume on the
    /// current runtime. `parked` counts the lot's occupants.
    pub(crate) fn start(parked: Gauge) -> io::Result<ParkingLot<T>> {
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        let poll = Poll::new()?;
        let shared = Arc::new(Shared {
            registry: poll.registry().try_clone()?,
            slots: Mutex::new(Slots {
                parked: Slab::new(),
                generation: 0,
            }),
            woken: Mutex::new(Vec::new()),
            poll_waker: mio::Waker::new(poll.registry(), WAKE)?,
            closed: AtomicBool::new(false),
            runtime,
            parked,
        });
        let watched = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tidewire-parking".into())
            .spawn(move || watch(&watched, poll))?;
        Ok(ParkingLot { shared })
    }

    /// Parks `value` with its `socket` (non-blocking, and registered with
    /// no reactor). Gives both back if the poller refuses the socket.
    pub(crate) fn park(&self, socket: TcpStream, value: T) -> Result<(), (TcpStream, T)> {
        let mut slots = lock(&self.shared.slots);
        if self.shared.closed.load(Ordering::Acquire) {
            return Err((socket, value));
        }
        slots.generation = slots.generation.wrapping_add(1);
        let generation = slots.generation;
        let entry = slots.parked.vacant_entry();
        let token = token(entry.key(), generation);
        let fd = socket.as_raw_fd();
        if let Err(e) = self
            .shared
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            tracing::warn!(error = %e, "could not park a quiet connection");
            return Err((socket, value));
        }
        let due = {
            let parked = Arc::new(Parked {
                lot: Arc::downgrade(&self.shared),
                token,
                queued: AtomicBool::new(false),
                held: Mutex::new(None),
            });
            let waker = Waker::from(Arc::clone(&parked));
            // A wake from here on is queued, and handled by the watching
            // thread once the slot is filled and the lock released.
            let due = value.watch(&waker);
            *lock(&parked.held) = Some((socket, value));
            entry.insert(parked);
            due
        };
        self.shared.parked.inc();
        drop(slots);
        if due {
            self.shared.queue(token);
        }
        Ok(())
    }
}

/// Resumes connections whose sockets turn readable or whose wakers were
/// woken, until the lot is dropped.
fn watch<T: Parkable>(shared: &Shared<T>, mut poll: Poll) {
    let mut events = Events::with_capacity(EVENTS);
    while !shared.closed.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "the parking lot's poller failed; resuming every parked connection");
            shared.closed.store(true, Ordering::Release);
            let tokens: Vec<Token> = lock(&shared.slots)
                .parked
                .iter()
                .map(|(_, parked)| parked.token)
                .collect();
            for token in tokens {
                shared.unpark(token);
            }
            return;
        }
        for event in &events {
            if event.token() == WAKE {
                let woken = std::mem::take(&mut *lock(&shared.woken));
                for token in woken {
                    shared.unpark(token);
                }
            } else {
                shared.unpark(event.token());
            }
        }
    }
}

fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Parkable> Shared<T> {
    /// Queues `token` for the watching thread to resume.
    fn queue(&self, token: Token) {
        lock(&self.woken).push(token);
        if let Err(e) = self.poll_waker.wake() {
            tracing::warn!(error = %e, "could not wake the parking lot's thread");
        }
    }

    /// Takes the connection at `token` out of the lot, if it is still
    /// there, and spawns its task.
    fn unpark(&self, token: Token) {
        let key = slot_of(token);
        let parked = {
            let mut slots = lock(&self.slots);
            match slots.parked.get(key) {
                Some(parked) if parked.token == token => slots.parked.remove(key),
                _ => return,
            }
        };
        self.parked.dec();
        let Some((socket, value)) = lock(&parked.held).take() else {
            return;
        };
        let fd = socket.as_raw_fd();
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::debug!(error = %e, "deregistering a parked socket failed");
        }
        self.runtime.spawn(value.resume(socket));
    }
}

impl<T: Parkable> Wake for Parked<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(lot) = self.lot.upgrade() {
            lot.queue(self.token);
        }
    }
}
