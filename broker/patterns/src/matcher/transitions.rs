//! Where the transitions out of the states are kept. A state's first
//! transition lives at the state's own id (its *home*), so that an event
//! arriving at a state can fetch the state and its transition from memory
//! together, before reading the state says where its transitions are:
//! in a large machine each is a cache miss, and two at once cost about
//! one. The few more a state has are kept apart, under ids with
//! [`OTHER`] set; a state whose home transition was removed while others
//! stayed keeps them there, and its home is used again by the next one
//! it gets. Every state has room for a home, used or not: 72 bytes.

use prefetch_index::prefetch_index;

use super::{Loose, Transition};

/// Set in the id of a transition that is not its state's home; the
/// machine holds fewer than 2^30 states and as many other transitions
/// (each 64 bytes: 64 GiB of them).
const OTHER: u32 = 1 << 30;

/// The transitions of all states, with their loose steps.
#[derive(Debug, Clone)]
pub(super) struct Transitions {
    /// By state id: the state's home transition (empty while unused).
    homes: Vec<Transition>,
    /// By state id: the loose steps of its home transition.
    home_loose: Vec<Option<Box<Loose>>>,
    others: Vec<Transition>,
    other_loose: Vec<Option<Box<Loose>>>,
    free_others: Vec<u32>,
}

impl Transitions {
    /// Room for the root's.
    pub(super) fn new() -> Transitions {
        let mut transitions = Transitions {
            homes: Vec::new(),
            home_loose: Vec::new(),
            others: Vec::new(),
            other_loose: Vec::new(),
            free_others: Vec::new(),
        };
        transitions.add_state();
        transitions
    }

    /// Makes room for the home of the state the machine has just added.
    pub(super) fn add_state(&mut self) {
        self.homes.push(Transition::default());
        self.home_loose.push(None);
    }

    /// A new, empty transition out of `state`: its home unless
    /// `home_taken`.
    pub(super) fn make(&mut self, state: u32, home_taken: bool) -> u32 {
        if !home_taken {
            return state;
        }
        let other = match self.free_others.pop() {
            Some(other) => other,
            None => {
                self.others.push(Transition::default());
                self.other_loose.push(None);
                super::index(self.others.len() - 1)
            }
        };
        other | OTHER
    }

    /// Empties transition `id`, for reuse.
    pub(super) fn free(&mut self, id: u32) {
        *self.get_mut(id) = Transition::default();
        *self.loose_mut(id) = None;
        if id & OTHER != 0 {
            self.free_others.push(id & !OTHER);
        }
    }

    /// Whether `id` is the home of `state`.
    pub(super) fn is_home(id: u32, state: u32) -> bool {
        id == state
    }

    pub(super) fn get(&self, id: u32) -> &Transition {
        if id & OTHER == 0 {
            &self.homes[id as usize]
        } else {
            &self.others[(id & !OTHER) as usize]
        }
    }

    pub(super) fn get_mut(&mut self, id: u32) -> &mut Transition {
        if id & OTHER == 0 {
            &mut self.homes[id as usize]
        } else {
            &mut self.others[(id & !OTHER) as usize]
        }
    }

    /// The loose steps of transition `id`, if it has some.
    pub(super) fn loose(&self, id: u32) -> Option<&Loose> {
        if id & OTHER == 0 {
            self.home_loose[id as usize].as_deref()
        } else {
            self.other_loose[(id & !OTHER) as usize].as_deref()
        }
    }

    pub(super) fn loose_mut(&mut self, id: u32) -> &mut Option<Box<Loose>> {
        if id & OTHER == 0 {
            &mut self.home_loose[id as usize]
        } else {
            &mut self.other_loose[(id & !OTHER) as usize]
        }
    }

    /// Starts fetching the home transition of `state` into the cache.
    #[inline]
    pub(super) fn prefetch_home(&self, state: u32) {
        prefetch_index(&self.homes, state as usize);
    }

    /// How many are in use (hold a value test or loose steps).
    #[cfg(test)]
    pub(super) fn in_use(&self) -> usize {
        let used =
            |(t, l): (&Transition, &Option<Box<Loose>>)| !t.positive.is_empty() || l.is_some();
        let homes = self
            .homes
            .iter()
            .zip(&self.home_loose)
            .filter(|&e| used(e))
            .count();
        homes + self.others.len() - self.free_others.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{OTHER, Transitions};
    use crate::matcher::index::Item;

    /// A state's first transition is its home; more are kept apart, and
    /// freed ones are used again.
    #[test]
    fn homes_first_then_others() {
        let mut transitions = Transitions::new();
        transitions.add_state();
        assert_eq!(transitions.make(1, false), 1);
        let other = transitions.make(1, true);
        assert_ne!(other & OTHER, 0);
        transitions
            .get_mut(other)
            .positive
            .insert(Item::Bool(true), 7);
        transitions.get_mut(1).positive.insert(Item::Null, 8);
        assert_eq!(transitions.in_use(), 2);
        assert!(transitions.get(0).positive.is_empty());
        transitions.free(other);
        transitions.free(1);
        assert_eq!(transitions.in_use(), 0);
        assert!(transitions.get(1).positive.is_empty());
        assert_eq!(transitions.make(1, true), other);
    }
}
