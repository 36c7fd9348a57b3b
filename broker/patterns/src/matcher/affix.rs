//! Prefix and suffix lookups: the keys are kept in a hash map, with the
//! distinct key lengths beside it, so finding the keys a value starts (or
//! ends) with costs one lookup per distinct length, not one per key.

use super::keys::Removed;
use super::strings::{Sought, StringMap};

/// Keys (prefixes or suffixes) with the items filed under each.
#[derive(Debug, Clone)]
pub(crate) struct Affixes<T> {
    map: StringMap<T>,
    /// Each distinct key length, ascending, with how many keys have it.
    lengths: Vec<(usize, usize)>,
}

impl<T> Default for Affixes<T> {
    fn default() -> Self {
        Affixes {
            map: StringMap::default(),
            lengths: Vec::new(),
        }
    }
}

impl<T: PartialEq> Affixes<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn insert(&mut self, key: &str, item: T) {
        if self.map.insert(key.as_bytes(), item) {
            match self
                .lengths
                .binary_search_by_key(&key.len(), |&(len, _)| len)
            {
                Ok(i) => self.lengths[i].1 += 1,
                Err(i) => self.lengths.insert(i, (key.len(), 1)),
            }
        }
    }

    /// Removes one `item` filed under `key`; false if there was none.
    pub(crate) fn remove(&mut self, key: &str, item: &T) -> bool {
        let removed = self.map.remove(key.as_bytes(), item);
        if removed == Removed::Last
            && let Ok(i) = self
                .lengths
                .binary_search_by_key(&key.len(), |&(len, _)| len)
        {
            self.lengths[i].1 -= 1;
            if self.lengths[i].1 == 0 {
                self.lengths.remove(i);
            }
        }
        removed != Removed::Absent
    }

    /// Calls `f` for the items of every key `value` starts with.
    pub(crate) fn prefixes_of<'s>(&'s self, value: &str, mut f: impl FnMut(&'s T)) {
        for &(len, _) in &self.lengths {
            let Some(head) = value.get(..len) else {
                // Too long, or not on a character boundary: then `value`
                // cannot start with a key of this length.
                if len > value.len() {
                    break;
                }
                continue;
            };
            self.map.get(&Sought::new(head)).iter().for_each(&mut f);
        }
    }

    /// Calls `f` for the items of every key `value` ends with.
    pub(crate) fn suffixes_of<'s>(&'s self, value: &str, mut f: impl FnMut(&'s T)) {
        for &(len, _) in &self.lengths {
            if len > value.len() {
                break;
            }
            let Some(tail) = value.get(value.len() - len..) else {
                continue;
            };
            self.map.get(&Sought::new(tail)).iter().for_each(&mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Affixes;

    fn prefixes(a: &Affixes<u32>, value: &str) -> Vec<u32> {
        let mut out = Vec::new();
        a.prefixes_of(value, |&t| out.push(t));
        out.sort_unstable();
        out
    }

    #[test]
    fn finds_every_prefix_and_suffix() {
        let mut a = Affixes::default();
        a.insert("", 0);
        a.insert("ab", 1);
        a.insert("abc", 2);
        a.insert("abc", 3);
        a.insert("x", 4);
        assert_eq!(prefixes(&a, "abcd"), [0, 1, 2, 3]);
        assert_eq!(prefixes(&a, "ab"), [0, 1]);
        assert_eq!(prefixes(&a, "é"), [0]);
        assert!(a.remove("abc", &2));
        assert!(!a.remove("abc", &2));
        assert_eq!(prefixes(&a, "abcd"), [0, 1, 3]);
        assert!(a.remove("abc", &3));
        assert_eq!(a.lengths, [(0, 1), (1, 1), (2, 1)]);
        let mut out = Vec::new();
        a.suffixes_of("zzx", |&t| out.push(t));
        assert_eq!(out, [0, 4]);
    }
}
