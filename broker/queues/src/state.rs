//! One queue's consumer state, in memory: the messages somebody has looked
//! at and not deleted. Messages nobody has looked at yet need no state:
//! they are the log from `head` on, so a queue of a million unreceived
//! messages costs nothing here.
//!
//! Below `head`, every message not in `tracked` is gone (deleted, moved,
//! purged or expired). A tracked message is either visible (ready to be
//! received), or hidden until a time (in flight after a receive, or
//! delayed after its send). FIFO queues keep the visible ones per message
//! group, and a group with a message in flight hands out nothing else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What the queue knows of one message it has looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracked {
    /// The nonce of its latest receive (what its receipt handle carries);
    /// 0 when never received.
    pub nonce: u64,
    /// Receives so far.
    pub receive_count: u32,
    /// Its first receive, ms since the Unix epoch (0: never).
    pub first_receive_ms: i64,
    /// Hidden until then, ms since the Unix epoch.
    pub visible_at_ms: i64,
    /// When it was sent.
    pub sent_ms: i64,
    /// FIFO: its message group.
    pub group: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Group {
    ready: BTreeSet<u64>,
    in_flight: u32,
    /// Its key in `runnable`, when it is there.
    runnable_at: Option<u64>,
}

/// The consumer state.
#[derive(Debug)]
pub(crate) struct State {
    fifo: bool,
    /// Every offset below it is gone.
    lwm: u64,
    /// The first offset never looked at.
    head: u64,
    tracked: BTreeMap<u64, Tracked>,
    /// Hidden messages by the time they become visible.
    timers: BTreeSet<(i64, u64)>,
    /// Hidden messages that were received (the rest of `timers` is delayed).
    in_flight: usize,
    /// Standard queues: the visible messages.
    ready: BTreeSet<u64>,
    /// FIFO queues: the visible messages by group ...
    groups: HashMap<Arc<str>, Group>,
    /// ... and the groups that may hand one out, by their first offset.
    runnable: BTreeSet<(u64, Arc<str>)>,
}

impl State {
    /// An empty state whose messages start at `start`.
    pub fn new(fifo: bool, start: u64) -> State {
        State {
            fifo,
            lwm: start,
            head: start,
            tracked: BTreeMap::new(),
            timers: BTreeSet::new(),
            in_flight: 0,
            ready: BTreeSet::new(),
            groups: HashMap::new(),
            runnable: BTreeSet::new(),
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn lwm(&self) -> u64 {
        self.lwm
    }

    /// Marks everything below `head` as looked at.
    pub fn set_head(&mut self, head: u64) {
        self.head = self.head.max(head);
        self.advance_lwm();
    }

    pub fn get(&self, offset: u64) -> Option<&Tracked> {
        self.tracked.get(&offset)
    }

    pub fn tracked(&self) -> impl Iterator<Item = (&u64, &Tracked)> {
        self.tracked.iter()
    }

    pub fn tracked_len(&self) -> usize {
        self.tracked.len()
    }

    /// Visible messages that were looked at (unread ones are not counted).
    pub fn visible(&self) -> usize {
        self.tracked.len() - self.timers.len()
    }

    /// Received and hidden.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Sent with a delay that has not passed.
    pub fn delayed(&self) -> usize {
        self.timers.len() - self.in_flight
    }

    /// When the next hidden message becomes visible.
    pub fn next_timer(&self) -> Option<i64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Starts tracking a message (or puts back one taken with
    /// [`State::take`]).
    pub fn insert(&mut self, offset: u64, tracked: Tracked, now_ms: i64) {
        self.head = self.head.max(offset + 1);
        let hidden = tracked.visible_at_ms > now_ms;
        if hidden {
            self.timers.insert((tracked.visible_at_ms, offset));
            if tracked.nonce != 0 {
                self.in_flight += 1;
            }
        }
        if self.fifo {
            let name = tracked.group.clone().unwrap_or_else(|| Arc::from(""));
            let group = self.groups.entry(Arc::clone(&name)).or_default();
            if !hidden {
                group.ready.insert(offset);
            } else if tracked.nonce != 0 {
                group.in_flight += 1;
            }
            self.refresh_group(&name);
        } else if !hidden {
            self.ready.insert(offset);
        }
        self.tracked.insert(offset, tracked);
        self.lwm = self.lwm.min(offset);
    }

    /// Stops tracking a message; the caller puts it back or lets it go.
    pub fn take(&mut self, offset: u64) -> Option<Tracked> {
        let tracked = self.tracked.remove(&offset)?;
        let hidden = self.timers.remove(&(tracked.visible_at_ms, offset));
        if hidden && tracked.nonce != 0 {
            self.in_flight -= 1;
        }
        if self.fifo {
            let name = tracked.group.clone().unwrap_or_else(|| Arc::from(""));
            if let Some(group) = self.groups.get_mut(&name) {
                if hidden {
                    if tracked.nonce != 0 {
                        group.in_flight -= 1;
                    }
                } else {
                    group.ready.remove(&offset);
                }
            }
            self.refresh_group(&name);
        } else {
            self.ready.remove(&offset);
        }
        Some(tracked)
    }

    /// Forgets a message for good (deleted, moved, expired).
    pub fn remove(&mut self, offset: u64) -> Option<Tracked> {
        let tracked = self.take(offset);
        self.advance_lwm();
        tracked
    }

    /// Makes visible what has come due.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some(&(at, offset)) = self.timers.first() {
            if at > now_ms {
                break;
            }
            if let Some(tracked) = self.take(offset) {
                self.insert(offset, tracked, now_ms);
            } else {
                self.timers.remove(&(at, offset));
            }
        }
    }

    /// Up to `max` visible messages to hand out, oldest first; for FIFO,
    /// the first of each group without a message in flight.
    pub fn candidates(&self, max: usize) -> Vec<u64> {
        if self.fifo {
            self.runnable
                .iter()
                .take(max)
                .map(|(offset, _)| *offset)
                .collect()
        } else {
            self.ready.iter().take(max).copied().collect()
        }
    }

    /// Records a receive: hidden until `visible_at_ms`, under a new nonce.
    pub fn receive(&mut self, offset: u64, nonce: u64, visible_at_ms: i64, now_ms: i64) {
        if let Some(mut tracked) = self.take(offset) {
            tracked.nonce = nonce;
            tracked.receive_count += 1;
            if tracked.first_receive_ms == 0 {
                tracked.first_receive_ms = now_ms;
            }
            tracked.visible_at_ms = visible_at_ms;
            self.insert(offset, tracked, now_ms);
        }
    }

    /// Changes when a message becomes visible.
    pub fn set_visible_at(&mut self, offset: u64, visible_at_ms: i64, now_ms: i64) {
        if let Some(mut tracked) = self.take(offset) {
            tracked.visible_at_ms = visible_at_ms;
            self.insert(offset, tracked, now_ms);
        }
    }

    /// Forgets every message below `below`, looked at or not.
    pub fn purge(&mut self, below: u64) {
        let doomed: Vec<u64> = self.tracked.range(..below).map(|(o, _)| *o).collect();
        for offset in doomed {
            self.take(offset);
        }
        self.head = self.head.max(below);
        self.advance_lwm();
    }

    fn advance_lwm(&mut self) {
        self.lwm = self
            .tracked
            .first_key_value()
            .map_or(self.head, |(o, _)| *o);
    }

    fn refresh_group(&mut self, name: &Arc<str>) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        if let Some(at) = group.runnable_at.take() {
            self.runnable.remove(&(at, Arc::clone(name)));
        }
        if group.in_flight == 0 {
            match group.ready.first() {
                Some(&first) => {
                    group.runnable_at = Some(first);
                    self.runnable.insert((first, Arc::clone(name)));
                }
                None => {
                    self.groups.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(sent_ms: i64, group: Option<&str>) -> Tracked {
        Tracked {
            nonce: 0,
            receive_count: 0,
            first_receive_ms: 0,
            visible_at_ms: sent_ms,
            sent_ms,
            group: group.map(Arc::from),
        }
    }

    #[test]
    fn receive_hides_until_the_timeout_then_redelivers() {
        let mut s = State::new(false, 0);
        for o in 0..3 {
            s.insert(o, fresh(0, None), 10);
        }
        assert_eq!(s.candidates(10), [0, 1, 2]);
        s.receive(0, 7, 100, 10);
        s.receive(1, 8, 50, 10);
        assert_eq!(s.candidates(10), [2]);
        assert_eq!((s.in_flight(), s.visible(), s.delayed()), (2, 1, 0));
        s.expire(60);
        assert_eq!(s.candidates(10), [1, 2]);
        assert_eq!(s.get(1).map(|t| t.receive_count), Some(1));
        s.remove(0);
        assert_eq!(s.lwm(), 1);
        s.remove(1);
        s.remove(2);
        assert_eq!((s.lwm(), s.head(), s.tracked_len()), (3, 3, 0));
    }

    #[test]
    fn a_fifo_group_in_flight_hands_out_nothing_else() {
        let mut s = State::new(true, 0);
        for (o, g) in [(0, "a"), (1, "a"), (2, "b"), (3, "a"), (4, "b")] {
            s.insert(o, fresh(0, Some(g)), 10);
        }
        assert_eq!(s.candidates(10), [0, 2], "the first of each group");
        s.receive(0, 1, 1000, 10);
        assert_eq!(s.candidates(10), [2]);
        s.receive(2, 2, 1000, 10);
        assert!(s.candidates(10).is_empty());
        s.remove(2);
        assert_eq!(s.candidates(10), [4]);
        // Group a's message times out: it comes back first, ahead of 1.
        s.expire(2000);
        assert_eq!(s.candidates(10), [0, 4]);
        s.remove(0);
        assert_eq!(s.candidates(10), [1, 4]);
    }

    #[test]
    fn delayed_messages_count_apart_and_show_up_when_due() {
        let mut s = State::new(false, 5);
        s.insert(5, fresh(500, None), 10);
        assert_eq!((s.delayed(), s.visible()), (1, 0));
        assert_eq!(s.next_timer(), Some(500));
        s.expire(500);
        assert_eq!((s.delayed(), s.visible()), (0, 1));
        s.purge(6);
        assert_eq!((s.tracked_len(), s.lwm(), s.head()), (0, 6, 6));
    }
}
