//! The working memory of one match, kept per thread and reused, so that
//! matching an event allocates nothing in the common case. Marks (of the
//! states reached, the patterns reported) are a short list while a match
//! makes few, as most do, and generation stamps in arrays by id past that:
//! starting a match bumps the generation instead of clearing the arrays.

use std::cell::RefCell;

use super::Set;
use super::index::Derived;
use crate::event::Element;

#[derive(Debug, Default)]
pub(crate) struct Scratch {
    generation: u32,
    /// States reached with no array elements chosen.
    reached: Marks,
    /// States reached with array elements chosen.
    reached_with: Set<(u32, Vec<Element>)>,
    /// Pattern slots reported.
    reported: Marks,
    /// By path id: the generation and the event's fields at that path.
    groups: Vec<(u32, u32, u32)>,
    /// The event's fields whose paths some pattern uses: (path id,
    /// first field, end).
    pub(crate) present: Vec<(u32, u32, u32)>,
    /// States to visit: (state, chosen elements as a span of `elements`).
    pub(crate) work: Vec<(u32, u32, u32)>,
    /// The chosen-element sets of the work items, back to back.
    pub(crate) elements: Vec<Element>,
    /// By event field: the generation and what lookups derived from its
    /// value.
    derived: Vec<(u32, Derived)>,
    /// Targets one lookup found (but for exact strings only: those are
    /// followed where their map holds them).
    pub(crate) next: Vec<u32>,
    /// Negation ids one lookup found.
    pub(crate) hits: Vec<u32>,
    /// Pattern slots matched, each once.
    pub(crate) matched: Vec<u32>,
    /// States visited and lookups made in this match.
    pub(crate) visited: usize,
    pub(crate) lookups: usize,
}

impl Scratch {
    /// Starts a match over a machine of this many states, pattern slots
    /// and path ids, of an event of this many fields.
    pub(crate) fn begin(&mut self, states: usize, slots: usize, paths: usize, fields: usize) {
        if self.generation == u32::MAX {
            self.groups.iter_mut().for_each(|g| g.0 = 0);
            self.derived.iter_mut().for_each(|d| d.0 = 0);
            self.generation = 0;
        }
        self.generation += 1;
        self.reached.begin(states);
        self.reported.begin(slots);
        grow(&mut self.groups, paths, (0, 0, 0));
        if self.derived.len() < fields {
            self.derived.resize_with(fields, Default::default);
        }
        if !self.reached_with.is_empty() {
            self.reached_with.clear();
        }
        self.present.clear();
        self.work.clear();
        self.elements.clear();
        self.matched.clear();
        self.visited = 0;
        self.lookups = 0;
    }

    /// Notes that the event has fields `start..end` at path `path`.
    pub(crate) fn group(&mut self, path: u32, start: u32, end: u32) {
        self.groups[path as usize] = (self.generation, start, end);
        self.present.push((path, start, end));
    }

    /// The event's fields at path `path`, if it has any.
    pub(crate) fn fields_at(&self, path: u32) -> Option<(u32, u32)> {
        let (generation, start, end) = self.groups[path as usize];
        (generation == self.generation).then_some((start, end))
    }

    /// What a lookup of field `field` works with: what was derived from its
    /// value in this match, and the lists for the targets and negation ids
    /// it finds.
    pub(crate) fn lookup_space(
        &mut self,
        field: u32,
    ) -> (&mut Derived, &mut Vec<u32>, &mut Vec<u32>) {
        let derived = derive(&mut self.derived, self.generation, field);
        (derived, &mut self.next, &mut self.hits)
    }

    /// What was derived from field `field`'s value in this match.
    #[inline]
    pub(crate) fn derived(&mut self, field: u32) -> &mut Derived {
        derive(&mut self.derived, self.generation, field)
    }

    /// Queues `state` with the chosen elements `elements[start..end]`,
    /// unless it was reached with them already.
    pub(crate) fn reach(&mut self, state: u32, start: u32, end: u32) {
        if start == end {
            if !self.reached.mark(state) {
                return;
            }
        } else {
            let chosen = self.elements[start as usize..end as usize].to_vec();
            if !self.reached_with.insert((state, chosen)) {
                return;
            }
        }
        self.work.push((state, start, end));
    }

    /// Notes that pattern slot `slot` matched.
    pub(crate) fn report(&mut self, slot: u32) {
        if self.reported.mark(slot) {
            self.matched.push(slot);
        }
    }
}

/// What was derived from field `field`'s value in the match of
/// `generation`, forgetting what an earlier match derived.
#[inline]
fn derive(derived: &mut [(u32, Derived)], generation: u32, field: u32) -> &mut Derived {
    let (stamp, derived) = &mut derived[field as usize];
    if *stamp != generation {
        *stamp = generation;
        derived.reset();
    }
    derived
}

/// How many marks a match keeps in a list before it stamps them by id.
const LISTED: usize = 16;

/// Marks on ids below a bound, for one match at a time: a list scanned
/// while it is short, so that marking reads only memory the match already
/// holds in cache (an array by id is a cache miss a mark in a large
/// machine), and generation stamps by id once it is long, so that a match
/// that marks many ids costs no more than a lookup each.
#[derive(Debug, Default)]
struct Marks {
    listed: Vec<u32>,
    /// Whether the marks are in `stamps` (the list is then unused).
    stamped: bool,
    generation: u32,
    /// By id: the generation it was last marked in.
    stamps: Vec<u32>,
    /// The bound of this match's ids.
    ids: usize,
}

impl Marks {
    /// Clears the marks, for ids below `ids`.
    fn begin(&mut self, ids: usize) {
        self.listed.clear();
        self.stamped = false;
        self.ids = ids;
    }

    /// Marks `id`; false if it was marked already.
    fn mark(&mut self, id: u32) -> bool {
        if !self.stamped {
            if self.listed.contains(&id) {
                return false;
            }
            if self.listed.len() < LISTED {
                self.listed.push(id);
                return true;
            }
            self.stamp_listed();
        }
        let stamp = &mut self.stamps[id as usize];
        if *stamp == self.generation {
            return false;
        }
        *stamp = self.generation;
        true
    }

    /// Moves the marks from the list to `stamps`, under a new generation.
    #[cold]
    fn stamp_listed(&mut self) {
        if self.generation == u32::MAX {
            self.stamps.iter_mut().for_each(|g| *g = 0);
            self.generation = 0;
        }
        self.generation += 1;
        grow(&mut self.stamps, self.ids, 0);
        for &id in &self.listed {
            self.stamps[id as usize] = self.generation;
        }
        self.stamped = true;
    }
}

fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if a match is already
/// using it, as when a callback matches another event).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}
