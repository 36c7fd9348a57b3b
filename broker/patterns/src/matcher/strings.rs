//! Maps from exact strings to what is filed under them, looked up by a
//! [`Sought`] value: hashed once, however many maps it is looked up in
//! (an event field's value is looked up out of every state the event
//! reaches that tests its path), and compared with a short key as two
//! words rather than a call to compare bytes.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

use super::Seeded;
use super::keys::{Key, Removed, Short, Targets};

/// A string as the maps look it up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sought<'a> {
    hash: u64,
    short: Short,
    bytes: &'a [u8],
}

impl<'a> Sought<'a> {
    pub(crate) fn new(s: &'a str) -> Sought<'a> {
        Sought::of_bytes(s.as_bytes())
    }

    fn of_bytes(bytes: &'a [u8]) -> Sought<'a> {
        Sought::from_parts(bytes, Sought::parts(bytes))
    }

    /// What [`Sought::new`] computes of a string's `bytes`, to keep for
    /// another lookup of it.
    pub(crate) fn parts(bytes: &[u8]) -> (u64, Short) {
        (hash(bytes), Short::new(bytes))
    }

    /// A string's `bytes` with their [`Sought::parts`].
    pub(crate) fn from_parts(bytes: &'a [u8], (hash, short): (u64, Short)) -> Sought<'a> {
        Sought { hash, short, bytes }
    }

    fn is(&self, key: &Key) -> bool {
        match key {
            Key::Inline(short) => *short == self.short,
            Key::Heap(bytes) => ***bytes == *self.bytes,
        }
    }
}

/// The hash of a string's bytes, the same in every map (one seed per
/// process).
#[inline]
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = Seeded.build_hasher();
    hasher.write(bytes);
    hasher.finish()
}

/// Items filed under exact strings.
#[derive(Debug, Clone)]
pub(crate) struct StringMap<T> {
    table: HashTable<(Key, Targets<T>)>,
}

impl<T> Default for StringMap<T> {
    fn default() -> Self {
        StringMap {
            table: HashTable::new(),
        }
    }
}

impl<T: PartialEq> StringMap<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The items filed under `sought`'s string (none if none).
    #[inline]
    pub(crate) fn get(&self, sought: &Sought<'_>) -> &[T] {
        self.table
            .find(sought.hash, |(key, _)| sought.is(key))
            .map_or(&[], |(_, items)| items.as_slice())
    }

    /// Files `item` under `key`; true if `key` is new.
    pub(crate) fn insert(&mut self, key: &[u8], item: T) -> bool {
        let sought = Sought::of_bytes(key);
        match self.table.find_mut(sought.hash, |(k, _)| sought.is(k)) {
            Some((_, items)) => {
                items.push(item);
                false
            }
            None => {
                self.table.insert_unique(
                    sought.hash,
                    (Key::new(key), Targets::One(item)),
                    |(k, _)| hash(k.bytes()),
                );
                true
            }
        }
    }

    /// Its one key, when it has exactly one, held inline, with one item.
    fn only(&self) -> Option<(Short, &T)> {
        if self.table.len() != 1 {
            return None;
        }
        match self.table.iter().next()? {
            (Key::Inline(short), Targets::One(item)) => Some((*short, item)),
            _ => None,
        }
    }

    /// Removes one `item` filed under `key`.
    pub(crate) fn remove(&mut self, key: &[u8], item: &T) -> Removed {
        let sought = Sought::of_bytes(key);
        let Ok(mut entry) = self.table.find_entry(sought.hash, |(k, _)| sought.is(k)) else {
            return Removed::Absent;
        };
        let removed = entry.get_mut().1.remove(item);
        if removed == Removed::Last {
            entry.remove();
        }
        removed
    }
}

/// Targets by exact string, for a transition: one short string with one
/// target, as most transitions out of a state past the root have, is held
/// in the transition itself, so that looking it up reads no other memory
/// and hashes nothing; more go to a [`StringMap`].
#[derive(Debug, Clone)]
pub(crate) enum Strings {
    One(Short, u32),
    Many(StringMap<u32>),
}

impl Default for Strings {
    fn default() -> Self {
        Strings::Many(StringMap::default())
    }
}

impl Strings {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Strings::One(..) => false,
            Strings::Many(map) => map.is_empty(),
        }
    }

    /// The targets filed under `sought`'s string (none if none).
    #[inline]
    pub(crate) fn get(&self, sought: &Sought<'_>) -> &[u32] {
        match self {
            Strings::One(short, target) if *short == sought.short => std::slice::from_ref(target),
            Strings::One(..) => &[],
            Strings::Many(map) => map.get(sought),
        }
    }

    pub(crate) fn insert(&mut self, key: &str, target: u32) {
        let short = Short::new(key.as_bytes());
        match self {
            Strings::Many(map) if map.is_empty() && short.is_inline() => {
                *self = Strings::One(short, target);
            }
            Strings::Many(map) => {
                map.insert(key.as_bytes(), target);
            }
            Strings::One(one, first) => {
                let mut map = StringMap::default();
                map.insert(one.bytes(), *first);
                map.insert(key.as_bytes(), target);
                *self = Strings::Many(map);
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &str, target: u32) {
        match self {
            Strings::One(short, one) => {
                if *short == Short::new(key.as_bytes()) && *one == target {
                    *self = Strings::default();
                }
            }
            Strings::Many(map) => {
                map.remove(key.as_bytes(), &target);
                // Down to one short string with one target: back inline.
                if let Some((short, &one)) = map.only() {
                    *self = Strings::One(short, one);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Removed, Sought, StringMap, Strings};

    #[test]
    fn files_looks_up_and_removes() {
        let long = "a key longer than fourteen bytes";
        let mut map = StringMap::default();
        assert!(map.insert(b"short", 1));
        assert!(map.insert(long.as_bytes(), 2));
        assert!(map.insert(b"", 3));
        assert!(!map.insert(b"short", 4));
        assert_eq!(map.get(&Sought::new("short")), [1, 4]);
        assert_eq!(map.get(&Sought::new(long)), [2]);
        assert_eq!(map.get(&Sought::new("")), [3]);
        assert!(map.get(&Sought::new("shor")).is_empty());
        assert!(map.get(&Sought::new(&long[..14])).is_empty());
        assert_eq!(map.remove(b"short", &5), Removed::Absent);
        assert_eq!(map.remove(b"short", &1), Removed::One);
        assert_eq!(map.remove(b"short", &4), Removed::Last);
        assert_eq!(map.remove(b"short", &4), Removed::Absent);
        assert!(map.get(&Sought::new("short")).is_empty());
        assert_eq!(map.remove(long.as_bytes(), &2), Removed::Last);
        assert_eq!(map.remove(b"", &3), Removed::Last);
        assert!(map.is_empty());
    }

    /// A key of 14 bytes is held inline, one of 15 is not: each is found
    /// only by itself.
    #[test]
    fn keys_at_the_inline_bound() {
        let fourteen = "x".repeat(14);
        let fifteen = "x".repeat(15);
        let mut map = StringMap::default();
        map.insert(fourteen.as_bytes(), 14);
        map.insert(fifteen.as_bytes(), 15);
        assert_eq!(map.get(&Sought::new(&fourteen)), [14]);
        assert_eq!(map.get(&Sought::new(&fifteen)), [15]);
    }

    /// One short string with one target is held inline; a second target
    /// or string, or a long string, moves them to a map, removing down to
    /// one short string with one target brings it back inline, and
    /// removing them all empties it.
    #[test]
    fn strings_inline_and_in_a_map() {
        let long = "a key longer than fourteen bytes";
        let found = |strings: &Strings, s: &str| strings.get(&Sought::new(s)).to_vec();
        for (key, other) in [("a", "b"), ("a", "a"), (long, "b"), ("", long)] {
            let mut strings = Strings::default();
            strings.insert(key, 1);
            assert_eq!(matches!(strings, Strings::One(..)), key != long, "{key}");
            assert_eq!(found(&strings, key), [1]);
            assert!(found(&strings, "c").is_empty());
            strings.insert(other, 2);
            assert!(matches!(strings, Strings::Many(_)));
            let both: Vec<u32> = if key == other { vec![1, 2] } else { vec![1] };
            assert_eq!(found(&strings, key), both);
            strings.remove(key, 1);
            strings.remove(other, 2);
            assert!(strings.is_empty(), "{key} {other}");
            strings.remove(key, 1);
            assert!(strings.is_empty());
        }
        // Back to one short string with one target: inline again.
        let mut strings = Strings::default();
        for (key, target) in [("a", 1), ("b", 2), ("a", 3)] {
            strings.insert(key, target);
        }
        strings.remove("a", 1);
        assert!(matches!(strings, Strings::Many(_)));
        strings.remove("a", 3);
        assert!(matches!(strings, Strings::One(..)));
        assert_eq!(found(&strings, "b"), [2]);
        let mut strings = Strings::default();
        strings.insert(long, 1);
        strings.insert("b", 2);
        strings.remove("b", 2);
        assert!(matches!(strings, Strings::Many(_)));
        assert_eq!(found(&strings, long), [1]);
        let mut strings = Strings::default();
        strings.insert("a", 1);
        strings.remove("a", 2);
        strings.remove("b", 1);
        assert_eq!(found(&strings, "a"), [1]);
        strings.remove("a", 1);
        assert!(strings.is_empty() && found(&strings, "a").is_empty());
    }
}
