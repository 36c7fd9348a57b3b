//! FIFO deduplication: a send whose deduplication id was seen within the
//! last five minutes is accepted and answered with the first send's
//! result, and nothing is stored. At start-up the window is rebuilt from
//! the last five minutes of the queue's log, so a restart forgets nothing.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::message::Sent;

/// How long a deduplication id is remembered, as in SQS.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;

/// What a check found.
pub enum Check {
    /// First of its id: store it, then call [`Dedup::sent`] or
    /// [`Dedup::failed`].
    New,
    /// A duplicate: the first send's result, once it has one.
    Duplicate(watch::Receiver<Option<Sent>>),
}

/// The ids seen within the window.
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashMap<String, (i64, watch::Sender<Option<Sent>>)>,
    order: VecDeque<(i64, String)>,
}

impl Dedup {
    /// Checks `id` at `now_ms`, remembering it if new.
    pub fn check(&mut self, id: &str, now_ms: i64) -> Check {
        self.forget_before(now_ms - WINDOW_MS);
        if let Some((_, sender)) = self.seen.get(id) {
            return Check::Duplicate(sender.subscribe());
        }
        self.seen
            .insert(id.to_owned(), (now_ms, watch::Sender::new(None)));
        self.order.push_back((now_ms, id.to_owned()));
        Check::New
    }

    /// Remembers a send found in the log at start-up.
    pub fn restore(&mut self, id: String, at_ms: i64, sent: Sent) {
        self.seen
            .insert(id.clone(), (at_ms, watch::Sender::new(Some(sent))));
        self.order.push_back((at_ms, id));
    }

    /// The first send of `id` is stored.
    pub fn sent(&mut self, id: &str, sent: Sent) {
        if let Some((_, sender)) = self.seen.get(id) {
            sender.send_replace(Some(sent));
        }
    }

    /// The first send of `id` failed: forget it, so a retry is new.
    pub fn failed(&mut self, id: &str) {
        self.seen.remove(id);
    }

    fn forget_before(&mut self, horizon_ms: i64) {
        while let Some((at, _)) = self.order.front() {
            if *at >= horizon_ms {
                break;
            }
            if let Some((at, id)) = self.order.pop_front()
                && self.seen.get(&id).is_some_and(|(added, _)| *added == at)
            {
                self.seen.remove(&id);
            }
        }
    }
}

/// The deduplication id of a body, for content-based deduplication.
pub fn content_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(id: &str) -> Sent {
        Sent {
            message_id: id.into(),
            sequence_number: None,
            duplicate: false,
        }
    }

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate_and_after_it_new() {
        let mut d = Dedup::default();
        assert!(matches!(d.check("a", 0), Check::New));
        d.sent("a", sent("m1"));
        match d.check("a", WINDOW_MS - 1) {
            Check::Duplicate(rx) => assert_eq!(*rx.borrow(), Some(sent("m1"))),
            Check::New => panic!("a duplicate"),
        }
        assert!(matches!(d.check("a", WINDOW_MS + 1), Check::New));
        d.failed("a");
        assert!(matches!(d.check("a", WINDOW_MS + 2), Check::New));
    }
}
