//! Numeric ranges filed so that finding the ones holding a number costs
//! about the logarithm of their count plus the number found: a centered
//! interval tree, rebuilt when enough ranges were added or removed since
//! the last build (the newest ones wait in a short list scanned as is).
//! The one or few ranges most transitions have are held inline and
//! scanned, so that looking them up reads no memory of their own.

use smallvec::SmallVec;

use super::Map;
use crate::value::Range;

/// How many ranges are held inline before the tree takes them.
const FEW: usize = 4;

#[derive(Debug, Clone, Default)]
#[repr(C)]
pub(crate) struct RangeIndex {
    /// All of them once there are more.
    many: Option<Box<Tree>>,
    /// The ranges while there are few.
    few: SmallVec<[(Range, u32); 1]>,
}

impl RangeIndex {
    pub(crate) fn is_empty(&self) -> bool {
        self.few.is_empty() && self.many.is_none()
    }

    pub(crate) fn insert(&mut self, range: Range, target: u32) {
        if self.few.contains(&(range, target)) {
            return;
        }
        match &mut self.many {
            Some(tree) => tree.insert(range, target),
            None if self.few.len() < FEW => self.few.push((range, target)),
            None => {
                let mut tree = Box::<Tree>::default();
                for (r, t) in self.few.drain(..) {
                    tree.insert(r, t);
                }
                tree.insert(range, target);
                self.many = Some(tree);
            }
        }
    }

    pub(crate) fn remove(&mut self, range: Range, target: u32) {
        if let Some(at) = self.few.iter().position(|e| *e == (range, target)) {
            self.few.swap_remove(at);
        } else if let Some(tree) = &mut self.many {
            tree.remove(range, target);
            if tree.is_empty() {
                self.many = None;
            }
        }
    }

    /// Calls `emit` with the target of every range holding `x`.
    pub(crate) fn query(&self, x: f64, emit: &mut impl FnMut(u32)) {
        for &(range, target) in &self.few {
            if range.contains(x) {
                emit(target);
            }
        }
        if let Some(tree) = &self.many {
            tree.query(x, emit);
        }
    }
}

/// How many ranges may wait outside the tree, or be removed inside it,
/// before it is built again.
const UNBUILT: usize = 32;

/// Many ranges.
#[derive(Debug, Clone, Default)]
struct Tree {
    /// The ranges and their targets; `None` once removed.
    entries: Vec<Option<(Range, u32)>>,
    /// Where each (range, target) is in `entries`.
    positions: Map<(Range, u32), u32>,
    /// Entries added since the tree was built.
    pending: Vec<u32>,
    /// The tree; `nodes[0]` is the root when there is one.
    nodes: Vec<Node>,
    /// Entries removed from the tree since it was built.
    dead: usize,
}

#[derive(Debug, Clone)]
struct Node {
    center: f64,
    /// The entries whose range holds `center`, by lower end ascending.
    by_low: Vec<u32>,
    /// The same, by upper end descending.
    by_high: Vec<u32>,
    /// The subtree of ranges wholly below `center`.
    left: Option<u32>,
    /// The subtree of ranges wholly above `center`.
    right: Option<u32>,
}

impl Tree {
    fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    fn insert(&mut self, range: Range, target: u32) {
        if self.positions.contains_key(&(range, target)) {
            return;
        }
        let at = position(self.entries.len());
        self.entries.push(Some((range, target)));
        self.positions.insert((range, target), at);
        self.pending.push(at);
        if self.pending.len() > UNBUILT {
            self.rebuild();
        }
    }

    fn remove(&mut self, range: Range, target: u32) {
        let Some(at) = self.positions.remove(&(range, target)) else {
            return;
        };
        self.entries[at as usize] = None;
        match self.pending.iter().position(|&p| p == at) {
            Some(i) => {
                self.pending.swap_remove(i);
            }
            None => self.dead += 1,
        }
        if self.positions.is_empty() {
            *self = Tree::default();
        } else if self.dead > UNBUILT && self.dead > self.positions.len() {
            self.rebuild();
        }
    }

    fn query(&self, x: f64, emit: &mut impl FnMut(u32)) {
        for &at in &self.pending {
            if let Some((range, target)) = self.entries[at as usize]
                && range.contains(x)
            {
                emit(target);
            }
        }
        let mut next = (!self.nodes.is_empty()).then_some(0);
        while let Some(n) = next {
            let node = &self.nodes[n as usize];
            if x < node.center {
                // Every range here ends at or above the center, above x.
                for &at in &node.by_low {
                    let Some((range, target)) = self.entries[at as usize] else {
                        continue;
                    };
                    if range.low() > x {
                        break;
                    }
                    if range.contains(x) {
                        emit(target);
                    }
                }
                next = node.left;
            } else if x > node.center {
                for &at in &node.by_high {
                    let Some((range, target)) = self.entries[at as usize] else {
                        continue;
                    };
                    if range.high() < x {
                        break;
                    }
                    if range.contains(x) {
                        emit(target);
                    }
                }
                next = node.right;
            } else {
                for &at in &node.by_low {
                    if let Some((range, target)) = self.entries[at as usize]
                        && range.contains(x)
                    {
                        emit(target);
                    }
                }
                next = None;
            }
        }
    }

    fn rebuild(&mut self) {
        let live: Vec<(Range, u32)> = self.entries.drain(..).flatten().collect();
        self.positions.clear();
        for (i, entry) in live.iter().enumerate() {
            self.positions.insert(*entry, position(i));
        }
        self.entries = live.into_iter().map(Some).collect();
        self.pending.clear();
        self.dead = 0;
        self.nodes.clear();
        let all = (0..self.entries.len()).map(position).collect();
        self.build(all);
    }

    fn range(&self, at: u32) -> Range {
        // Built only from live entries.
        self.entries[at as usize].map_or(
            Range {
                lower: None,
                upper: None,
            },
            |(range, _)| range,
        )
    }

    fn build(&mut self, ids: Vec<u32>) -> Option<u32> {
        if ids.is_empty() {
            return None;
        }
        let mut ends: Vec<f64> = ids
            .iter()
            .flat_map(|&at| {
                let r = self.range(at);
                [r.lower, r.upper]
            })
            .flatten()
            .map(|b| b.value.get())
            .collect();
        let center = if ends.is_empty() {
            0.0
        } else {
            let mid = ends.len() / 2;
            *ends.select_nth_unstable_by(mid, f64::total_cmp).1
        };
        let (mut left, mut right, mut here) = (Vec::new(), Vec::new(), Vec::new());
        for at in ids {
            let r = self.range(at);
            if r.high() < center {
                left.push(at);
            } else if r.low() > center {
                right.push(at);
            } else {
                here.push(at);
            }
        }
        let mut by_low = here.clone();
        by_low.sort_by(|&a, &b| self.range(a).low().total_cmp(&self.range(b).low()));
        let mut by_high = here;
        by_high.sort_by(|&a, &b| self.range(b).high().total_cmp(&self.range(a).high()));
        let index = position(self.nodes.len());
        self.nodes.push(Node {
            center,
            by_low,
            by_high,
            left: None,
            right: None,
        });
        let left = self.build(left);
        let right = self.build(right);
        let node = &mut self.nodes[index as usize];
        node.left = left;
        node.right = right;
        Some(index)
    }
}

/// An index into one of the vectors above, which hold fewer than 2^32
/// entries (a pattern has at most a few hundred values).
fn position(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::RangeIndex;
    use crate::value::{Bound, Number, Range};

    fn bound(x: i32, inclusive: bool) -> Option<Bound> {
        Some(Bound {
            value: Number::new(f64::from(x)).expect("finite"),
            inclusive,
        })
    }

    fn range() -> impl Strategy<Value = Range> {
        (
            proptest::option::of((-20i32..20, any::<bool>())),
            proptest::option::of((0i32..20, any::<bool>())),
        )
            .prop_filter_map("a range has an end", |(low, width)| {
                let lower = low.and_then(|(x, inc)| bound(x, inc));
                let upper =
                    width.and_then(|(w, inc)| bound(low.map_or(w, |(x, _)| x + w + 1), inc));
                (lower.is_some() || upper.is_some()).then_some(Range { lower, upper })
            })
    }

    fn found(index: &RangeIndex, x: f64) -> Vec<u32> {
        let mut out = Vec::new();
        index.query(x, &mut |t| out.push(t));
        out.sort_unstable();
        out
    }

    proptest! {
        /// Adding and removing in any order, the index finds exactly the
        /// ranges a scan would.
        #[test]
        fn agrees_with_a_scan(
            ranges in proptest::collection::vec(range(), 0..150),
            removed in proptest::collection::vec(any::<bool>(), 150),
        ) {
            let mut index = RangeIndex::default();
            let mut live = Vec::new();
            for (i, r) in ranges.iter().enumerate() {
                let target = u32::try_from(i).expect("small");
                index.insert(*r, target);
                live.push((*r, target));
            }
            for (i, r) in ranges.iter().enumerate() {
                if removed[i] {
                    let target = u32::try_from(i).expect("small");
                    index.remove(*r, target);
                    live.retain(|&(_, t)| t != target);
                }
            }
            for x in -45..=45 {
                let x = f64::from(x) / 2.0;
                let mut expected: Vec<u32> =
                    live.iter().filter(|(r, _)| r.contains(x)).map(|&(_, t)| t).collect();
                expected.sort_unstable();
                prop_assert_eq!(found(&index, x), expected, "at {}", x);
            }
        }
    }
}
