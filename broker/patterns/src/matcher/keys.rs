//! Compact map entries for the value indexes: a string key held inline
//! when short, and a target list held inline when it has one target, so
//! that a lookup that hits reads the map's own memory and nothing behind a
//! pointer, which is most of what a lookup costs in a large machine. Each
//! takes 16 bytes, so that an entry of a map of strings is 32: half a
//! cache line, which one lookup reads whole (a 48-byte entry spans two
//! lines half the time), and the maps take less of the cache.

use std::hash::Hash;

use super::Map;

/// The longest key held inline.
const INLINE: usize = 14;

/// A string key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Inline(Short),
    /// Behind a thin pointer, to keep the key 16 bytes.
    Heap(Box<Box<[u8]>>),
}

/// A string of at most [`INLINE`] bytes, as its length and its bytes
/// padded with zeros: two of them compare as two words. A longer string's
/// is a length no inline key has, so that it equals none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short([u8; INLINE + 1]);

impl Short {
    pub(crate) fn new(bytes: &[u8]) -> Short {
        let len = match u8::try_from(bytes.len()) {
            Ok(len) if usize::from(len) <= INLINE => len,
            _ => return Short([u8::MAX; INLINE + 1]),
        };
        // Put together in registers and stored whole: a short built byte by
        // byte in memory and then read as words stalls the processor (a
        // load cannot take its value from several smaller stores).
        let word = (padded(bytes) << 8) | u128::from(len);
        let mut short = [0; INLINE + 1];
        short.copy_from_slice(&word.to_le_bytes()[..=INLINE]);
        Short(short)
    }

    /// Whether it holds its string (which is not too long).
    pub(crate) fn is_inline(&self) -> bool {
        usize::from(self.0[0]) <= INLINE
    }

    /// The string's bytes (none if too long).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.get(1..=usize::from(self.0[0])).unwrap_or_default()
    }
}

/// Up to 16 bytes as a little-endian number (zeros past them), read in
/// at most four loads, which overlap rather than go byte by byte.
fn padded(bytes: &[u8]) -> u128 {
    let n = bytes.len();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    match n {
        0 => 0,
        1..4 => {
            let byte = |at: usize| u128::from(bytes[at]) << (8 * at);
            byte(0) | byte(n / 2) | byte(n - 1)
        }
        4..8 => u128::from(half(0)) | (u128::from(half(n - 4)) << (8 * (n - 4))),
        _ => u128::from(word(0)) | (u128::from(word(n - 8)) << (8 * (n - 8))),
    }
}

impl Key {
    pub(crate) fn new(bytes: &[u8]) -> Key {
        if bytes.len() <= INLINE {
            Key::Inline(Short::new(bytes))
        } else {
            Key::Heap(Box::new(bytes.into()))
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline(short) => short.bytes(),
            Key::Heap(bytes) => bytes,
        }
    }
}

/// The targets filed under one key: almost always one.
#[derive(Debug, Clone)]
pub(crate) enum Targets<T> {
    One(T),
    /// Behind a thin pointer, to keep a `Targets<u32>` 16 bytes.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<T>>),
}

impl<T: PartialEq> Targets<T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Targets::One(t) => std::slice::from_ref(t),
            Targets::Many(ts) => ts,
        }
    }

    pub(crate) fn push(&mut self, target: T) {
        match self {
            Targets::Many(ts) => ts.push(target),
            Targets::One(_) => {
                if let Targets::One(first) = std::mem::replace(self, Targets::Many(Box::default()))
                    && let Targets::Many(ts) = self
                {
                    ts.push(first);
                    ts.push(target);
                }
            }
        }
    }

    /// Removes one `target`, saying whether it was there and whether any
    /// are left.
    pub(crate) fn remove(&mut self, target: &T) -> Removed {
        match self {
            Targets::One(t) if t == target => Removed::Last,
            Targets::One(_) => Removed::Absent,
            Targets::Many(ts) => match ts.iter().position(|t| t == target) {
                None => Removed::Absent,
                Some(at) => {
                    ts.swap_remove(at);
                    if ts.is_empty() {
                        Removed::Last
                    } else {
                        Removed::One
                    }
                }
            },
        }
    }
}

/// What removing a target did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    /// The target was not filed there.
    Absent,
    /// It was, with others.
    One,
    /// It was the last one.
    Last,
}

/// Files `target` under `key`.
pub(crate) fn file<K: Hash + Eq>(map: &mut Map<K, Targets<u32>>, key: K, target: u32) {
    match map.get_mut(&key) {
        Some(targets) => targets.push(target),
        None => {
            map.insert(key, Targets::One(target));
        }
    }
}

/// Removes one `target` filed under `key`, and the key when none is left.
pub(crate) fn remove_keyed<K: Hash + Eq>(map: &mut Map<K, Targets<u32>>, key: &K, target: u32) {
    if let Some(targets) = map.get_mut(key)
        && targets.remove(&target) == Removed::Last
    {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::{Key, Removed, Targets};

    #[test]
    fn keys_hold_their_bytes() {
        let long = "a key longer than fourteen bytes";
        let all = "abcdefghijklmnop";
        for s in (0..=all.len()).map(|n| &all[..n]).chain([long]) {
            assert_eq!(Key::new(s.as_bytes()).bytes(), s.as_bytes(), "{s}");
        }
        assert!(matches!(Key::new(&[b'x'; 14]), Key::Inline(_)));
        assert!(matches!(Key::new(&[b'x'; 15]), Key::Heap(_)));
    }

    /// An entry of a map of strings is half a cache line.
    #[test]
    fn entries_take_16_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 16);
        assert_eq!(std::mem::size_of::<Targets<u32>>(), 16);
    }

    #[test]
    fn targets() {
        let mut t = Targets::One(1);
        t.push(2);
        t.push(3);
        assert_eq!(t.as_slice(), [1, 2, 3]);
        assert_eq!(t.remove(&2), Removed::One);
        assert_eq!(t.remove(&1), Removed::One);
        assert_eq!(t.remove(&5), Removed::Absent);
        assert_eq!(t.remove(&3), Removed::Last);
        assert_eq!(Targets::One(4).remove(&4), Removed::Last);
        assert_eq!(Targets::One(4).remove(&5), Removed::Absent);
    }
}
