//! Numeric ranges filed so that finding the ones holding a number costs
//! about the logarithm of their count plus the number found: a centered
//! interval tree, rebuilt when enough ranges were added or removed since
//! the last build (the newest ones wait in a short list scanned as is).
//! The one or few ranges most transitions have are held inline and
//! scanned, so that looking them up reads no memory of their own; a
//! transition's first range is held in the transition itself, in the
//! 24 bytes of a [`OneRange`].

use smallvec::SmallVec;

use super::Map;
use super::keys::{Targets, file, remove_keyed};
use crate::value::{Bound, Range};

/// A range and its target in 24 bytes (a [`Range`] and a target take
/// 40), so that it fits in the cache line of the transition that holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OneRange {
    low: f64,
    high: f64,
    target: u32,
    low_end: End,
    high_end: End,
}

/// How a [`OneRange`] ends on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Exclusive,
    Inclusive,
}

impl End {
    fn of(bound: Option<Bound>) -> (End, f64) {
        match bound {
            None => (End::Open, 0.0),
            Some(b) if b.inclusive => (End::Inclusive, b.value.get()),
            Some(b) => (End::Exclusive, b.value.get()),
        }
    }
}

impl OneRange {
    pub(crate) fn new(range: Range, target: u32) -> OneRange {
        let (low_end, low) = End::of(range.lower);
        let (high_end, high) = End::of(range.upper);
        OneRange {
            low,
            high,
            target,
            low_end,
            high_end,
        }
    }

    /// The target, when the range holds `x` (as [`Range::contains`]).
    #[inline]
    pub(crate) fn target_at(&self, x: f64) -> Option<u32> {
        let above = match self.low_end {
            End::Open => true,
            End::Exclusive => x > self.low,
            End::Inclusive => x >= self.low,
        };
        let below = match self.high_end {
            End::Open => true,
            End::Exclusive => x < self.high,
            End::Inclusive => x <= self.high,
        };
        (above && below).then_some(self.target)
    }
}

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

    /// Files `target` under `range` (again, if it is already: then it
    /// takes removing twice).
    pub(crate) fn insert(&mut self, range: Range, target: u32) {
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
    /// Where each (range, target) is in `entries`, once for each time it
    /// was added.
    positions: Map<(Range, u32), Targets<u32>>,
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
        let at = position(self.entries.len());
        self.entries.push(Some((range, target)));
        file(&mut self.positions, (range, target), at);
        self.pending.push(at);
        if self.pending.len() > UNBUILT {
            self.rebuild();
        }
    }

    fn remove(&mut self, range: Range, target: u32) {
        let Some(&at) = self
            .positions
            .get(&(range, target))
            .and_then(|ats| ats.as_slice().last())
        else {
            return;
        };
        remove_keyed(&mut self.positions, &(range, target), at);
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
            file(&mut self.positions, *entry, position(i));
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

    use super::{OneRange, RangeIndex};
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

    /// A range filed twice under one target is found until removed twice,
    /// inline or in the tree.
    #[test]
    fn filed_twice() {
        for others in [0, 40] {
            let mut index = RangeIndex::default();
            let range = Range {
                lower: bound(1, false),
                upper: None,
            };
            for i in 0..others {
                index.insert(range, 100 + i);
            }
            index.insert(range, 7);
            index.insert(range, 7);
            let sevens = |index: &RangeIndex| found(index, 2.0).iter().filter(|&&t| t == 7).count();
            assert_eq!(sevens(&index), 2);
            index.remove(range, 7);
            assert_eq!(sevens(&index), 1);
            index.remove(range, 7);
            assert_eq!(sevens(&index), 0);
        }
    }

    /// A range in 24 bytes holds what the range holds.
    #[test]
    fn one_range() {
        assert_eq!(std::mem::size_of::<Option<OneRange>>(), 24);
        let ranges = [
            (bound(1, false), bound(5, true)),
            (bound(1, true), None),
            (None, bound(-3, false)),
        ];
        for (lower, upper) in ranges {
            let range = Range { lower, upper };
            let one = OneRange::new(range, 7);
            for x in [-4.0, -3.0, 0.0, 1.0, 3.0, 5.0, 6.0, f64::NAN, f64::INFINITY] {
                assert_eq!(
                    one.target_at(x),
                    range.contains(x).then_some(7),
                    "{range:?} at {x}"
                );
            }
        }
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
