//! The working memory of one match, kept per thread and reused, so that
//! matching an event allocates nothing in the common case. Marks are
//! generation stamps: starting a match bumps the generation instead of
//! clearing the arrays.

use std::cell::RefCell;

use super::Set;
use super::index::Derived;
use crate::event::Element;

#[derive(Debug, Default)]
pub(crate) struct Scratch {
    generation: u32,
    /// By state: the generation it was last reached with no array
    /// elements chosen.
    reached: Vec<u32>,
    /// States reached with array elements chosen.
    reached_with: Set<(u32, Vec<Element>)>,
    /// By pattern slot: the generation it was last reported.
    reported: Vec<u32>,
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
    /// Targets one lookup found.
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
            self.reached.iter_mut().for_each(|g| *g = 0);
            self.reported.iter_mut().for_each(|g| *g = 0);
            self.groups.iter_mut().for_each(|g| g.0 = 0);
            self.derived.iter_mut().for_each(|d| d.0 = 0);
            self.generation = 0;
        }
        self.generation += 1;
        grow(&mut self.reached, states, 0);
        grow(&mut self.reported, slots, 0);
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
        let (generation, derived) = &mut self.derived[field as usize];
        if *generation != self.generation {
            *generation = self.generation;
            derived.reset();
        }
        (derived, &mut self.next, &mut self.hits)
    }

    /// Queues `state` with the chosen elements `elements[start..end]`,
    /// unless it was reached with them already.
    pub(crate) fn reach(&mut self, state: u32, start: u32, end: u32) {
        if start == end {
            let mark = &mut self.reached[state as usize];
            if *mark == self.generation {
                return;
            }
            *mark = self.generation;
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
        let mark = &mut self.reported[slot as usize];
        if *mark != self.generation {
            *mark = self.generation;
            self.matched.push(slot);
        }
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
