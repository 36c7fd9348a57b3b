//! The durable consumer state of one queue: a journal of changes, kept as
//! records of their own in the queue's messages log (so that one group
//! commit, one fdatasync, makes a batch of sends and a batch of deletes
//! durable together), plus a snapshot that lets the journal be cut.
//!
//! A journal record is told from a message by its topic, [`JOURNAL_TOPIC`],
//! which no message can have (MQTT forbids U+0000 in topic names). Each
//! change is an absolute fact about one message (received with this nonce,
//! hidden until then; deleted) or about everything below an offset
//! (purged), so replaying a change twice changes nothing. That is what
//! makes compaction simple: the snapshot is taken from the state in
//! memory, which may already include changes the log has not committed
//! yet, and replay starts at the log's end at that moment, or lower, at
//! the log's end when a journal record whose append is unanswered (so not
//! yet listed) was enqueued, so that the list is whole again after replay.
//!
//! The snapshot (`consumers.snapshot`) is written whole with
//! [`tidewire_storage::durable_file::replace`]. It also lists the journal
//! records past the head, which readers of unread messages skip and the
//! depth does not count. Queues written before the journal moved into the
//! messages log kept it in a log of its own (`journal/`, snapshots
//! `TWQ1`): [`read_snapshot_in`] and [`replay`] read that layout too, and
//! the queue then writes a new snapshot and removes it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use bytes::{Buf, BufMut};
use tidewire_storage::{Record, StorageError, StreamLog};

/// The snapshot's file name in the queue's directory.
pub const SNAPSHOT_FILE: &str = "consumers.snapshot";
/// The directory of the journal's own log, in queues written before it
/// moved into the messages log.
pub const SEPARATE_LOG_DIR: &str = "journal";
/// A snapshot whose journal is in the messages log.
const MAGIC: &[u8; 4] = b"TWQ2";
/// A snapshot whose journal is a log of its own ([`SEPARATE_LOG_DIR`]).
const MAGIC_SEPARATE: &[u8; 4] = b"TWQ1";
/// The topic of journal records in the messages log.
pub const JOURNAL_TOPIC: &str = "\u{0}journal";

/// Whether a record of the messages log is a journal record.
pub fn is_journal(record: &Record) -> bool {
    record.message.topic == JOURNAL_TOPIC
}

const RECEIVE: u8 = 1;
const DELETE: u8 = 2;
const VISIBILITY: u8 = 3;
const PURGE: u8 = 4;
const PENDING: u8 = 5;

/// A message's receive history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub nonce: u64,
    pub count: u32,
    pub visible_at_ms: i64,
    pub first_receive_ms: i64,
}

/// One change to the consumer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The message was received (or its history moved here).
    Receive { offset: u64, receipt: Receipt },
    /// The message is gone: deleted, moved to another queue, or expired.
    Delete { offset: u64 },
    /// The message is hidden until then.
    Visibility { offset: u64, visible_at_ms: i64 },
    /// Every message below the offset is gone.
    Purge { below: u64 },
    /// Snapshots only: looked at, never received (delayed, or behind a
    /// FIFO group in flight).
    Pending { offset: u64 },
}

impl Change {
    /// Appends the change's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Change::Receive { offset, receipt } => {
                out.put_u8(RECEIVE);
                out.put_u64_le(offset);
                out.put_u64_le(receipt.nonce);
                out.put_u32_le(receipt.count);
                out.put_i64_le(receipt.visible_at_ms);
                out.put_i64_le(receipt.first_receive_ms);
            }
            Change::Delete { offset } => {
                out.put_u8(DELETE);
                out.put_u64_le(offset);
            }
            Change::Visibility {
                offset,
                visible_at_ms,
            } => {
                out.put_u8(VISIBILITY);
                out.put_u64_le(offset);
                out.put_i64_le(visible_at_ms);
            }
            Change::Purge { below } => {
                out.put_u8(PURGE);
                out.put_u64_le(below);
            }
            Change::Pending { offset } => {
                out.put_u8(PENDING);
                out.put_u64_le(offset);
            }
        }
    }

    /// Reads every change in `bytes`; `None` if they are not changes.
    pub fn decode_all(mut bytes: &[u8]) -> Option<Vec<Change>> {
        let mut out = Vec::new();
        while bytes.has_remaining() {
            let tag = bytes.get_u8();
            let need = match tag {
                RECEIVE => 36,
                VISIBILITY => 16,
                DELETE | PURGE | PENDING => 8,
                _ => return None,
            };
            if bytes.remaining() < need {
                return None;
            }
            out.push(match tag {
                RECEIVE => Change::Receive {
                    offset: bytes.get_u64_le(),
                    receipt: Receipt {
                        nonce: bytes.get_u64_le(),
                        count: bytes.get_u32_le(),
                        visible_at_ms: bytes.get_i64_le(),
                        first_receive_ms: bytes.get_i64_le(),
                    },
                },
                DELETE => Change::Delete {
                    offset: bytes.get_u64_le(),
                },
                VISIBILITY => Change::Visibility {
                    offset: bytes.get_u64_le(),
                    visible_at_ms: bytes.get_i64_le(),
                },
                PURGE => Change::Purge {
                    below: bytes.get_u64_le(),
                },
                _ => Change::Pending {
                    offset: bytes.get_u64_le(),
                },
            });
        }
        Some(out)
    }
}

/// The consumer state as the journal and snapshot say, before the
/// messages themselves are read back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The first offset never looked at.
    pub head: u64,
    /// Where the journal's replay started.
    pub journal_from: u64,
    /// Messages received and not deleted.
    pub received: BTreeMap<u64, Receipt>,
    /// Messages looked at, never received, not deleted.
    pub pending: BTreeSet<u64>,
    /// Everything below it was purged.
    pub purged_below: u64,
    /// The journal records the snapshot listed past its head, then those
    /// replayed (which can repeat some of the snapshot's, and come before
    /// its last ones; the queue's list sorts them and drops repeats).
    pub journal_records: Vec<u64>,
    /// Whether the journal was a log of its own (an older queue).
    pub separate: bool,
}

impl Recovered {
    fn apply(&mut self, change: Change, deleted: &mut HashSet<u64>) {
        match change {
            Change::Receive { offset, receipt } => {
                self.pending.remove(&offset);
                self.received.insert(offset, receipt);
                deleted.remove(&offset);
                self.head = self.head.max(offset + 1);
            }
            Change::Delete { offset } => {
                self.received.remove(&offset);
                self.pending.remove(&offset);
                deleted.insert(offset);
                self.head = self.head.max(offset + 1);
            }
            Change::Visibility {
                offset,
                visible_at_ms,
            } => {
                if let Some(receipt) = self.received.get_mut(&offset) {
                    receipt.visible_at_ms = visible_at_ms;
                }
            }
            Change::Purge { below } => {
                self.received.retain(|o, _| *o >= below);
                self.pending.retain(|o| *o >= below);
                self.head = self.head.max(below);
                self.purged_below = self.purged_below.max(below);
            }
            Change::Pending { offset } => {
                self.pending.insert(offset);
                self.head = self.head.max(offset + 1);
            }
        }
    }
}

/// Why the consumer state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {reason}")]
    Damaged { path: String, reason: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Reads the snapshot in `dir`, if any. `start` is where a queue without
/// one starts. A queue with no snapshot and a [`SEPARATE_LOG_DIR`] is an
/// older one. Blocking I/O.
pub fn read_snapshot_in(dir: &Path, start: u64) -> Result<Recovered, JournalError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => read_snapshot(&bytes).map_err(|reason| JournalError::Damaged {
            path: path.display().to_string(),
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Recovered {
            head: start,
            separate: dir.join(SEPARATE_LOG_DIR).is_dir(),
            ..Recovered::default()
        }),
        Err(source) => Err(JournalError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Replays `log` after the snapshot `recovered` was read from: the messages
/// log (its journal records), or an older queue's journal log (all its
/// records). Blocking I/O.
pub fn replay(mut recovered: Recovered, log: &StreamLog) -> Result<Recovered, JournalError> {
    let snapshot_head = recovered.head;
    let mut deleted = HashSet::new();
    for record in log.scan(recovered.journal_from..u64::MAX) {
        let record = record?;
        if !recovered.separate {
            if !is_journal(&record) {
                continue;
            }
            recovered.journal_records.push(record.offset);
        }
        let changes =
            Change::decode_all(&record.message.payload).ok_or_else(|| JournalError::Damaged {
                path: log.dir().display().to_string(),
                reason: format!("record {} is not a consumer change", record.offset),
            })?;
        for change in changes {
            recovered.apply(change, &mut deleted);
        }
    }
    // Messages the journal passed over without a change were looked at
    // and left pending (delayed, or behind a FIFO group in flight); the
    // queue skips the journal records among them as it reads them back.
    for offset in snapshot_head.max(recovered.purged_below)..recovered.head {
        if !recovered.received.contains_key(&offset) && !deleted.contains(&offset) {
            recovered.pending.insert(offset);
        }
    }
    Ok(recovered)
}

/// Encodes a snapshot of the state: the offset of the messages log replay
/// starts from, the head, the journal records at or past the head, and
/// every tracked message.
pub fn encode_snapshot(
    journal_from: u64,
    head: u64,
    journal_records: impl ExactSizeIterator<Item = u64>,
    tracked: impl Iterator<Item = Change>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.put_u64_le(journal_from);
    out.put_u64_le(head);
    out.put_u64_le(journal_records.len() as u64);
    for offset in journal_records {
        out.put_u64_le(offset);
    }
    for change in tracked {
        change.encode(&mut out);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    out
}

fn read_snapshot(bytes: &[u8]) -> Result<Recovered, String> {
    let separate = match bytes.get(..4) {
        Some(magic) if magic == MAGIC => false,
        Some(magic) if magic == MAGIC_SEPARATE => true,
        _ => return Err("not a consumer-state snapshot".into()),
    };
    if bytes.len() < MAGIC.len() + 20 {
        return Err("not a consumer-state snapshot".into());
    }
    let (body, mut crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != crc.get_u32_le() {
        return Err("checksum mismatch".into());
    }
    let mut rest = &body[4..];
    let journal_from = rest.get_u64_le();
    let head = rest.get_u64_le();
    let mut journal_records = Vec::new();
    if !separate {
        if rest.remaining() < 8 {
            return Err("no journal record count".into());
        }
        let count = rest.get_u64_le();
        if count > (rest.remaining() / 8) as u64 {
            return Err("a journal record count past the end".into());
        }
        journal_records = (0..count).map(|_| rest.get_u64_le()).collect();
    }
    let changes = Change::decode_all(rest).ok_or("undecodable entries")?;
    let mut recovered = Recovered {
        head,
        journal_from,
        journal_records,
        separate,
        ..Recovered::default()
    };
    let mut deleted = HashSet::new();
    for change in changes {
        recovered.apply(change, &mut deleted);
    }
    recovered.head = head;
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(nonce: u64) -> Receipt {
        Receipt {
            nonce,
            count: 1,
            visible_at_ms: 100,
            first_receive_ms: 5,
        }
    }

    #[test]
    fn changes_round_trip() {
        let changes = [
            Change::Receive {
                offset: 3,
                receipt: receipt(9),
            },
            Change::Delete { offset: 4 },
            Change::Visibility {
                offset: 3,
                visible_at_ms: -1,
            },
            Change::Purge { below: 8 },
            Change::Pending { offset: 11 },
        ];
        let mut bytes = Vec::new();
        for c in &changes {
            c.encode(&mut bytes);
        }
        assert_eq!(Change::decode_all(&bytes).as_deref(), Some(&changes[..]));
        assert_eq!(Change::decode_all(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Change::decode_all(&[42]), None);
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_caught() {
        let bytes = encode_snapshot(
            17,
            10,
            [12, 15].into_iter(),
            [
                Change::Receive {
                    offset: 2,
                    receipt: receipt(1),
                },
                Change::Pending { offset: 7 },
            ]
            .into_iter(),
        );
        let back = read_snapshot(&bytes).expect("read");
        assert_eq!((back.journal_from, back.head), (17, 10));
        assert_eq!(back.journal_records, [12, 15]);
        assert!(!back.separate);
        assert_eq!(back.received.get(&2), Some(&receipt(1)));
        assert!(back.pending.contains(&7));
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(read_snapshot(&flipped).is_err());
    }

    /// A snapshot of a queue whose journal was a log of its own: no list
    /// of journal records, and replay is of that log.
    #[test]
    fn an_older_snapshot_is_read_as_one_with_a_separate_journal() {
        let mut bytes = MAGIC_SEPARATE.to_vec();
        bytes.put_u64_le(4);
        bytes.put_u64_le(3);
        Change::Pending { offset: 2 }.encode(&mut bytes);
        let crc = crc32c::crc32c(&bytes);
        bytes.put_u32_le(crc);
        let back = read_snapshot(&bytes).expect("read");
        assert!(back.separate);
        assert_eq!((back.journal_from, back.head), (4, 3));
        assert!(back.journal_records.is_empty());
        assert!(back.pending.contains(&2));
    }

    /// Replay after a snapshot can start below changes the snapshot has
    /// (at an unanswered journal record): applying any suffix of the
    /// history again, in order, leaves the state as it was.
    #[test]
    fn replaying_a_suffix_again_changes_nothing() {
        let history = [
            Change::Receive {
                offset: 0,
                receipt: receipt(1),
            },
            Change::Receive {
                offset: 1,
                receipt: receipt(2),
            },
            Change::Visibility {
                offset: 1,
                visible_at_ms: 900,
            },
            Change::Delete { offset: 0 },
            Change::Receive {
                offset: 2,
                receipt: receipt(3),
            },
            Change::Pending { offset: 3 },
            Change::Purge { below: 2 },
            Change::Receive {
                offset: 2,
                receipt: receipt(4),
            },
        ];
        let mut once = Recovered::default();
        let mut deleted = HashSet::new();
        for c in history {
            once.apply(c, &mut deleted);
        }
        assert_eq!(once.received.keys().collect::<Vec<_>>(), [&2]);
        assert_eq!(once.received[&2].nonce, 4);
        assert_eq!((once.head, once.purged_below), (4, 2));
        for from in 0..history.len() {
            let mut again = Recovered::default();
            let mut again_deleted = HashSet::new();
            for c in history.iter().chain(&history[from..]) {
                again.apply(*c, &mut again_deleted);
            }
            assert_eq!(again, once, "replayed again from change {from}");
            assert_eq!(again_deleted, deleted, "replayed again from change {from}");
        }
    }
}
