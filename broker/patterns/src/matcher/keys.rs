//! Compact map entries for the value indexes: a string key held inline
//! when short, and a target list held inline when it has one target, so
//! that a lookup that hits reads the map's own memory and nothing behind a
//! pointer, which is most of what a lookup costs in a large machine. Each
//! takes 16 bytes, so that an entry of a map of strings is 32: half a
//! cache line, which one lookup reads whole (a 48-byte entry spans two
//! lines half the time), and the maps take less of the cache.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use super::Map;

/// The longest key held inline.
const INLINE: usize = 14;

/// A string key, compared and hashed as its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    /// Behind a thin pointer, to keep the key 16 bytes.
    Heap(Box<Box<[u8]>>),
}

impl Key {
    pub(crate) fn new(s: &str) -> Key {
        let len = s.len();
        match u8::try_from(len) {
            Ok(short) if len <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..len].copy_from_slice(s.as_bytes());
                Key::Inline { len: short, bytes }
            }
            _ => Key::Heap(Box::new(s.as_bytes().into())),
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

impl Hash for Key {
    /// As the bytes hash, so that a map of keys can be looked up by `&[u8]`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes: &[u8] = self.borrow();
        bytes.hash(state);
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

    /// Removes one `target`; true when none are left.
    pub(crate) fn remove(&mut self, target: &T) -> bool {
        match self {
            Targets::One(t) => t == target,
            Targets::Many(ts) => {
                if let Some(at) = ts.iter().position(|t| t == target) {
                    ts.swap_remove(at);
                }
                ts.is_empty()
            }
        }
    }
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
pub(crate) fn remove_keyed<K, Q>(map: &mut Map<K, Targets<u32>>, key: &Q, target: u32)
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if let Some(targets) = map.get_mut(key)
        && targets.as_slice().contains(&target)
        && targets.remove(&target)
    {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Key, Targets};

    #[test]
    fn keys_look_up_by_bytes() {
        let long = "a key longer than fourteen bytes";
        let mut map = HashMap::new();
        map.insert(Key::new("short"), 1);
        map.insert(Key::new(long), 2);
        map.insert(Key::new(""), 3);
        assert_eq!(map.get("short".as_bytes()), Some(&1));
        assert_eq!(map.get(long.as_bytes()), Some(&2));
        assert_eq!(map.get("".as_bytes()), Some(&3));
        assert_eq!(map.get("shor".as_bytes()), None);
        assert!(matches!(Key::new(&"x".repeat(14)), Key::Inline { .. }));
        assert!(matches!(Key::new(&"x".repeat(15)), Key::Heap(_)));
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
        assert!(!t.remove(&2));
        assert!(!t.remove(&1));
        assert!(t.remove(&3));
        assert!(Targets::One(4).remove(&4));
        assert!(!Targets::One(4).remove(&5));
    }
}
