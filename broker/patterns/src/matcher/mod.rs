//! Many patterns compiled into one state machine, in the manner of
//! aws/event-ruler and Quamina, so that matching an event costs what the
//! event reaches in it, not what the patterns number: ten thousand
//! patterns that an event does not start to match cost it nothing.
//!
//! Each pattern is a set of alternatives, each a sequence of steps (a
//! field path and what its value must pass, or that it has none). The
//! machine is a trie of those sequences: a state's children are keyed by
//! step, so patterns that start alike share states. Out of each state, the
//! steps on one path share a [`Transition`], which files every value test
//! in an index ([`ValueIndex`]): exact values are one hash lookup however
//! many patterns list them, prefixes one lookup per distinct length,
//! ranges an interval tree. `anything-but` steps are *negations*: taken
//! unless a lookup in the exclusions finds them.
//!
//! Matching walks from the root: at each state reached, for each of its
//! paths the event has, each value at that path is looked up and leads to
//! more states; a state where an alternative ends reports its pattern. A
//! state is visited once per set of chosen array elements, so the work is
//! bounded by the states the event reaches, not by the patterns
//! ([`Matcher::work`] counts them). An event reaches more of them when
//! more patterns start alike with it (a site's, a device type's), and in a
//! large machine each is likely a cache miss: so a state is one cache
//! line, so is a transition (what an exact string or a range is looked up
//! in), and a state where one pattern ends and nothing leads on (where
//! most matches end) is not visited at all: the transitions into it hold
//! that pattern's slot instead of the state ([`LEAF`]).

mod affix;
mod index;
mod keys;
mod ranges;
mod scratch;
mod strings;
mod transitions;

use std::fmt;
use std::hash::Hash;

use index::{Item, Probe, ValueIndex};
use prefetch_index::prefetch_index;
use scratch::{Scratch, with_scratch};
use smallvec::SmallVec;
use transitions::Transitions;

use crate::event::{Element, Event, Leaf, consistent, merge};
use crate::pattern::{Pattern, StepTest};
use crate::value::ValuePattern;

const ROOT: u32 = 0;

/// Set in a transition's target when it is not a state but the slot of
/// the one pattern that ends at a state with no way on (a *leaf*): an
/// event that takes the transition matches that pattern, and visiting the
/// state, a cache miss in a large machine, would find nothing more. A
/// state is filed as a leaf or not ([`Matcher::target`]) as patterns come
/// and go ([`Matcher::refile`]); the machine holds fewer than 2^31
/// patterns, and fewer than 2^30 states (a state id is also the id of its
/// home transition, in `transitions.rs`): 64 GiB of states.
const LEAF: u32 = 1 << 31;

/// Set on a transition's id in its state's list when the transition has
/// [`Loose`] steps, which few have, so that a lookup reads them only then;
/// transition ids are below 2^31 (`transitions.rs`).
const LOOSE: u32 = 1 << 31;

/// The matcher's hash maps (foldhash, with a seed drawn at random once
/// per process, so that a map costs no room for its own).
type Map<K, V> = std::collections::HashMap<K, V, Seeded>;
/// The matcher's hash sets.
type Set<T> = std::collections::HashSet<T, Seeded>;

/// Builds foldhash hashers with this process's seed.
#[derive(Debug, Clone, Copy, Default)]
struct Seeded;

impl std::hash::BuildHasher for Seeded {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| std::hash::RandomState::new().hash_one(0u8));
        foldhash::fast::FoldHasher::with_seed(seed, foldhash::SharedSeed::global_random())
    }
}

/// Compiled patterns, each under an id of the caller's.
///
/// ```
/// use serde_json::json;
/// use tidewire_patterns::{Event, Matcher, Pattern};
///
/// let mut matcher = Matcher::new();
/// matcher.add("hot", &Pattern::parse(&json!({"temp": [{"numeric": [">", 30]}]}))?);
/// matcher.add("pump", &Pattern::parse(&json!({"type": ["pump"]}))?);
/// let event = Event::from_json(&json!({"type": "pump", "temp": 35}));
/// let mut ids = matcher.matches(&event);
/// ids.sort();
/// assert_eq!(ids, ["hot", "pump"]);
/// # Ok::<(), tidewire_patterns::PatternError>(())
/// ```
#[derive(Clone)]
pub struct Matcher<Id> {
    /// Path ids, by path.
    paths: Map<Box<str>, u32>,
    /// By path id: how many steps of added patterns use it (0: free),
    /// and the path.
    path_uses: Vec<(u32, Box<str>)>,
    free_paths: Vec<u32>,
    /// What matching reads of each state; `states[0]` is the root.
    states: Vec<State>,
    /// What adding and removing patterns read of each state, by state.
    links: Vec<Links>,
    free_states: Vec<u32>,
    /// The transitions of all states, with their `exists: true` and
    /// `anything-but` steps.
    transitions: Transitions,
    /// By pattern slot: the id of the pattern added there (`None`: a free
    /// slot), apart from the rest so that reporting a match reads a dense
    /// array, which stays in the cache, rather than a slot's bookkeeping.
    ids: Vec<Option<Id>>,
    /// By pattern slot: its alternatives as the machine holds them (to
    /// take them out again).
    alternatives: Vec<Vec<Vec<StepKey>>>,
    free_slots: Vec<u32>,
    by_id: Map<Id, u32>,
}

/// What matching one event took ([`Matcher::work`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchWork {
    /// States reached (the root included), each visited once (once per
    /// set of chosen array elements); a state where a pattern ends and
    /// nothing leads on is not visited, its pattern reported at the lookup
    /// that reaches it.
    pub states: usize,
    /// Lookups made: one event value looked up in the value index of one
    /// transition out of a reached state.
    pub lookups: usize,
    /// Patterns matched.
    pub matches: usize,
}

/// A step with its path interned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StepKey {
    path: u32,
    test: StepTest,
}

/// A state as matching sees it: one cache line, so that visiting one
/// reads one line of memory.
#[derive(Debug, Clone, Default)]
#[repr(align(64))]
struct State {
    /// (path id, transition id with [`LOOSE`] when it has loose steps),
    /// by path id ascending; most states have one or two, held here
    /// rather than behind a pointer.
    transitions: SmallVec<[(u32, u32); 2]>,
    /// `{"exists": false}` steps: (path id, target: a child state or a
    /// [`LEAF`]), which few states have (behind a thin pointer, a third of
    /// the room of a `Vec`).
    #[allow(clippy::box_collection)]
    absent: Option<Box<Vec<(u32, u32)>>>,
    /// The pattern slots of the alternatives that end here.
    ends: SmallVec<[u32; 2]>,
}

/// A state's bookkeeping, for adding and removing patterns.
#[derive(Debug, Clone, Default)]
struct Links {
    /// How many alternatives pass through or end at this state.
    uses: u32,
    children: Map<StepKey, Child>,
}

#[derive(Debug, Clone)]
struct Child {
    state: u32,
    /// What the parent's transition holds for it: the state, or its
    /// pattern's slot as a [`LEAF`] (`None` while the pattern that made it
    /// is being added).
    filed: Option<u32>,
    /// The negation ids of the step's `anything-but`s, in list order.
    negations: Vec<u32>,
}

/// The value tests of the steps out of one state on one path, leading to
/// targets (child states, or [`LEAF`]s): one cache line, which is all that
/// looking up an exact string or a number in one range reads of it.
#[derive(Debug, Clone, Default)]
#[repr(align(64))]
struct Transition {
    positive: ValueIndex,
}

/// The steps a value takes without a lookup, or unless a lookup finds it.
#[derive(Debug, Clone, Default)]
struct Loose {
    /// Targets any value leads to (`{"exists": true}`).
    any: Vec<u32>,
    /// Excluded values leading to negation ids.
    negative: ValueIndex,
    /// By negation id: the target a value not excluded leads to.
    negations: Vec<Option<u32>>,
    free_negations: Vec<u32>,
}

impl<Id: Clone + Eq + Hash> Matcher<Id> {
    /// An empty matcher.
    pub fn new() -> Matcher<Id> {
        Matcher {
            paths: Map::default(),
            path_uses: Vec::new(),
            free_paths: Vec::new(),
            states: vec![State::default()],
            links: vec![Links::default()],
            free_states: Vec::new(),
            transitions: Transitions::new(),
            ids: Vec::new(),
            alternatives: Vec::new(),
            free_slots: Vec::new(),
            by_id: Map::default(),
        }
    }

    /// How many patterns are added.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no pattern is added.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether a pattern is added under `id`.
    pub fn contains(&self, id: &Id) -> bool {
        self.by_id.contains_key(id)
    }

    /// Adds `pattern` under `id`, replacing the pattern added under `id`
    /// before, if any.
    pub fn add(&mut self, id: Id, pattern: &Pattern) {
        self.remove(&id);
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.ids.push(None);
                self.alternatives.push(Vec::new());
                index(self.ids.len() - 1)
            }
        };
        let alternatives: Vec<Vec<StepKey>> = pattern
            .alternatives
            .iter()
            .map(|alternative| {
                alternative
                    .steps
                    .iter()
                    .map(|step| StepKey {
                        path: self.intern(&step.path),
                        test: step.test.clone(),
                    })
                    .collect()
            })
            .collect();
        for steps in &alternatives {
            self.insert(steps, slot);
        }
        self.by_id.insert(id.clone(), slot);
        self.ids[slot as usize] = Some(id);
        self.alternatives[slot as usize] = alternatives;
    }

    /// Removes the pattern added under `id`; false if there was none.
    pub fn remove(&mut self, id: &Id) -> bool {
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        if self.ids[slot as usize].take().is_none() {
            return false;
        }
        for steps in &std::mem::take(&mut self.alternatives[slot as usize]) {
            self.take_out(steps, slot);
            for step in steps {
                self.release(step.path);
            }
        }
        self.free_slots.push(slot);
        true
    }

    /// The ids of the patterns that match `event`, each once, in no
    /// particular order.
    pub fn matches(&self, event: &Event) -> Vec<Id> {
        let mut ids = Vec::new();
        self.for_each_match(event, |id| ids.push(id.clone()));
        ids
    }

    /// Calls `f` with the id of each pattern that matches `event`, once
    /// each, in no particular order.
    pub fn for_each_match(&self, event: &Event, mut f: impl FnMut(&Id)) {
        with_scratch(|scratch| {
            self.run(event, scratch);
            for &slot in &scratch.matched {
                if let Some(id) = &self.ids[slot as usize] {
                    f(id);
                }
            }
        });
    }

    /// Matches `event` and tells how much work that took: the states it
    /// reached and the lookups it made there, which is what matching
    /// costs grow with, and the patterns it matched. For benchmarks and
    /// diagnostics.
    pub fn work(&self, event: &Event) -> MatchWork {
        with_scratch(|scratch| {
            self.run(event, scratch);
            MatchWork {
                states: scratch.visited,
                lookups: scratch.lookups,
                matches: scratch.matched.len(),
            }
        })
    }

    /// The id of the transition out of `state` on `path`, made if it has
    /// none.
    fn transition_on(&mut self, state_id: u32, path: u32) -> u32 {
        let state = &mut self.states[state_id as usize];
        match state.transitions.binary_search_by_key(&path, |(p, _)| *p) {
            Ok(at) => state.transitions[at].1 & !LOOSE,
            Err(at) => {
                let home_taken = state
                    .transitions
                    .iter()
                    .any(|&(_, entry)| Transitions::is_home(entry & !LOOSE, state_id));
                let id = self.transitions.make(state_id, home_taken);
                state.transitions.insert(at, (path, id));
                id
            }
        }
    }

    /// The loose steps of transition `id`, out of `state` on `path`,
    /// made if it has none.
    fn loose_on(&mut self, state: u32, path: u32, id: u32) -> &mut Loose {
        let state = &mut self.states[state as usize];
        if let Ok(at) = state.transitions.binary_search_by_key(&path, |(p, _)| *p) {
            state.transitions[at].1 |= LOOSE;
        }
        self.transitions.loose_mut(id).get_or_insert_default()
    }

    /// What matching reads of the transition an entry of a state's list
    /// names: its value tests, and its loose steps if it has some.
    fn transition(&self, entry: u32) -> (&Transition, Option<&Loose>) {
        let id = entry & !LOOSE;
        let loose = if entry & LOOSE == 0 {
            None
        } else {
            self.transitions.loose(id)
        };
        (self.transitions.get(id), loose)
    }

    fn intern(&mut self, path: &str) -> u32 {
        let id = match self.paths.get(path) {
            Some(&id) => id,
            None => {
                let id = match self.free_paths.pop() {
                    Some(id) => {
                        self.path_uses[id as usize] = (0, path.into());
                        id
                    }
                    None => {
                        self.path_uses.push((0, path.into()));
                        index(self.path_uses.len() - 1)
                    }
                };
                self.paths.insert(path.into(), id);
                id
            }
        };
        self.path_uses[id as usize].0 += 1;
        id
    }

    fn release(&mut self, path: u32) {
        let (uses, name) = &mut self.path_uses[path as usize];
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            self.paths.remove(&**name);
            *name = "".into();
            self.free_paths.push(path);
        }
    }

    /// Adds one alternative: follows its steps from the root, making the
    /// states it lacks, and files its pattern where it ends.
    fn insert(&mut self, steps: &[StepKey], slot: u32) {
        let mut chain = vec![ROOT];
        for step in steps {
            let state = chain[chain.len() - 1];
            let existing = self.links[state as usize]
                .children
                .get(step)
                .map(|c| c.state);
            let next = match existing {
                Some(next) => next,
                None => self.make_child(state, step),
            };
            self.links[next as usize].uses += 1;
            chain.push(next);
        }
        self.states[chain[chain.len() - 1] as usize].ends.push(slot);
        self.refile_chain(&chain, steps);
    }

    /// What the transition into `state` should hold for it: its pattern's
    /// slot as a [`LEAF`] when exactly one pattern ends there and no step
    /// leads on, else the state.
    fn target(&self, state: u32) -> u32 {
        let s = &self.states[state as usize];
        match s.ends.as_slice() {
            [slot] if s.transitions.is_empty() && s.absent.is_none() => LEAF | slot,
            _ => state,
        }
    }

    /// Files each state of `chain` (the states `steps` lead through from
    /// the root, or the first of them) again where what its parent's
    /// transition should hold for it changed: adding or removing a pattern
    /// changes what ends at, or leads on from, only the states it goes
    /// through. Deepest first: a state leads on once its child is filed.
    fn refile_chain(&mut self, chain: &[u32], steps: &[StepKey]) {
        for i in (1..chain.len()).rev() {
            self.refile(chain[i - 1], &steps[i - 1], chain[i]);
        }
    }

    fn refile(&mut self, parent: u32, step: &StepKey, state: u32) {
        let want = self.target(state);
        let Some(child) = self.links[parent as usize].children.get(step) else {
            return;
        };
        if child.filed == Some(want) {
            return;
        }
        if let Some(filed) = child.filed {
            let negations = child.negations.clone();
            self.unfile(parent, step, &negations, filed);
        }
        let negations = self.file(parent, step, want);
        if let Some(child) = self.links[parent as usize].children.get_mut(step) {
            child.filed = Some(want);
            child.negations = negations;
        }
    }

    fn make_child(&mut self, parent: u32, step: &StepKey) -> u32 {
        let child = match self.free_states.pop() {
            Some(child) => child,
            None => {
                self.states.push(State::default());
                self.links.push(Links::default());
                self.transitions.add_state();
                index(self.states.len() - 1)
            }
        };
        // Filed once the pattern is in, as what it is then.
        self.links[parent as usize].children.insert(
            step.clone(),
            Child {
                state: child,
                filed: None,
                negations: Vec::new(),
            },
        );
        child
    }

    /// Files `target` as where `step` leads from `parent`: in the
    /// parent's transition on the step's path, or its absences. Returns
    /// the negation ids of the step's `anything-but`s.
    fn file(&mut self, parent: u32, step: &StepKey, target: u32) -> Vec<u32> {
        let mut negations = Vec::new();
        match &step.test {
            StepTest::Absent => self.states[parent as usize]
                .absent
                .get_or_insert_default()
                .push((step.path, target)),
            StepTest::Values(values) => {
                let id = self.transition_on(parent, step.path);
                for value in values {
                    match value {
                        ValuePattern::Exists(true) => {
                            self.loose_on(parent, step.path, id).any.push(target);
                        }
                        ValuePattern::Exists(false) => {}
                        ValuePattern::AnythingBut(list) => {
                            let loose = self.loose_on(parent, step.path, id);
                            let negation = loose.negate(target);
                            for item in Item::excluded(list) {
                                loose.negative.insert(item, negation);
                            }
                            negations.push(negation);
                        }
                        other => {
                            if let Some(item) = Item::positive(other) {
                                self.transitions.get_mut(id).positive.insert(item, target);
                            }
                        }
                    }
                }
            }
        }
        negations
    }

    /// Takes one alternative out: unfiles its pattern, and drops the
    /// states no other alternative uses.
    fn take_out(&mut self, steps: &[StepKey], slot: u32) {
        let mut chain = vec![ROOT];
        for step in steps {
            let state = chain[chain.len() - 1];
            match self.links[state as usize].children.get(step) {
                Some(child) => chain.push(child.state),
                // Not in the machine: nothing of it to take out.
                None => return,
            }
        }
        let end = &mut self.states[chain[chain.len() - 1] as usize].ends;
        if let Some(at) = end.iter().position(|&s| s == slot) {
            end.swap_remove(at);
        }
        for &state in &chain[1..] {
            let uses = &mut self.links[state as usize].uses;
            *uses = uses.saturating_sub(1);
        }
        let mut live = chain.len();
        for i in (1..chain.len()).rev() {
            if self.links[chain[i] as usize].uses == 0 {
                let (parent, step) = (chain[i - 1], &steps[i - 1]);
                if let Some(child) = self.links[parent as usize].children.remove(step)
                    && let Some(filed) = child.filed
                {
                    self.unfile(parent, step, &child.negations, filed);
                }
                self.states[chain[i] as usize] = State::default();
                self.links[chain[i] as usize] = Links::default();
                self.free_states.push(chain[i]);
                live = i;
            }
        }
        self.refile_chain(&chain[..live], steps);
    }

    /// Takes `target` out of where `step` filed it from `parent` (with
    /// these negation ids), dropping what holds nothing more.
    fn unfile(&mut self, parent: u32, step: &StepKey, negations: &[u32], target: u32) {
        let parent = &mut self.states[parent as usize];
        match &step.test {
            StepTest::Absent => {
                if let Some(absent) = &mut parent.absent {
                    absent.retain(|&filed| filed != (step.path, target));
                    if absent.is_empty() {
                        parent.absent = None;
                    }
                }
            }
            StepTest::Values(values) => {
                let Ok(at) = parent
                    .transitions
                    .binary_search_by_key(&step.path, |(path, _)| *path)
                else {
                    return;
                };
                let id = parent.transitions[at].1 & !LOOSE;
                let mut negations = negations.iter();
                for value in values {
                    match value {
                        ValuePattern::Exists(true) => {
                            if let Some(loose) = self.transitions.loose_mut(id)
                                && let Some(i) = loose.any.iter().position(|&s| s == target)
                            {
                                loose.any.swap_remove(i);
                            }
                        }
                        ValuePattern::Exists(false) => {}
                        ValuePattern::AnythingBut(list) => {
                            if let Some(&negation) = negations.next()
                                && let Some(loose) = self.transitions.loose_mut(id)
                            {
                                for item in Item::excluded(list) {
                                    loose.negative.remove(item, negation);
                                }
                                loose.negations[negation as usize] = None;
                                loose.free_negations.push(negation);
                            }
                        }
                        other => {
                            if let Some(item) = Item::positive(other) {
                                self.transitions.get_mut(id).positive.remove(item, target);
                            }
                        }
                    }
                }
                let loose = self.transitions.loose_mut(id);
                if loose.as_deref().is_some_and(Loose::is_empty) {
                    *loose = None;
                    parent.transitions[at].1 = id;
                }
                // Every step files something: a transition that holds
                // nothing is used by none.
                if self.transitions.get(id).positive.is_empty()
                    && self.transitions.loose(id).is_none()
                {
                    parent.transitions.remove(at);
                    self.transitions.free(id);
                }
            }
        }
    }

    /// Fills `scratch.matched` with the slots of the patterns `event`
    /// matches.
    fn run(&self, event: &Event, scratch: &mut Scratch) {
        scratch.begin(
            self.states.len(),
            self.ids.len(),
            self.path_uses.len(),
            event.len(),
        );
        // The event's fields are sorted by path: group them, keeping the
        // paths some pattern uses.
        let mut start = 0;
        while start < event.len() {
            let path = event.path(start);
            let mut end = start + 1;
            while end < event.len() && event.same_path(start, end) {
                end += 1;
            }
            if let Some(&id) = self.paths.get(path) {
                scratch.group(id, index(start), index(end));
            }
            start = end;
        }
        scratch.reach(ROOT, 0, 0);
        while let Some((state, from, to)) = scratch.work.pop() {
            scratch.visited += 1;
            let state = &self.states[state as usize];
            for &slot in &state.ends {
                self.report(scratch, slot);
            }
            if state.transitions.len() <= scratch.present.len() {
                for &(path, entry) in &state.transitions {
                    if let Some(fields) = scratch.fields_at(path) {
                        self.step(entry, event, fields, (from, to), scratch);
                    }
                }
            } else {
                for g in 0..scratch.present.len() {
                    let (path, start, end) = scratch.present[g];
                    if let Ok(t) = state
                        .transitions
                        .binary_search_by_key(&path, |(path, _)| *path)
                    {
                        let entry = state.transitions[t].1;
                        self.step(entry, event, (start, end), (from, to), scratch);
                    }
                }
            }
            for &(path, child) in state.absent.iter().flat_map(|a| a.iter()) {
                let present = scratch.fields_at(path).is_some_and(|(start, end)| {
                    let chosen = &scratch.elements[from as usize..to as usize];
                    (start..end).any(|i| consistent(chosen, event.trail(i as usize)))
                });
                if !present {
                    self.arrive(scratch, child, (from, to));
                }
            }
        }
    }

    /// Follows the transition that `entry` of a state's list names (with
    /// its loose steps) with each of the event's `fields` (a span of field
    /// indices) consistent with the `chosen` array elements (a span of
    /// `scratch.elements`). Inlined into its callers: it runs once per
    /// transition followed, mostly for one lookup, which costs less than a
    /// call's saving and restoring of registers did (a tenth of an event's
    /// instructions in a large machine).
    #[inline(always)]
    fn step(
        &self,
        entry: u32,
        event: &Event,
        fields: (u32, u32),
        chosen: (u32, u32),
        scratch: &mut Scratch,
    ) {
        let (transition, loose) = self.transition(entry);
        for i in fields.0..fields.1 {
            let trail = event.trail(i as usize);
            if !consistent(
                &scratch.elements[chosen.0 as usize..chosen.1 as usize],
                trail,
            ) {
                continue;
            }
            scratch.lookups += 1;
            let leaf = event.leaf(i as usize);
            // Most lookups are of a string in a transition that has only
            // exact strings: that one hash lookup, its targets followed where
            // the map holds them.
            if loose.is_none()
                && let Leaf::String(s) = leaf
                && let Some(strings) = transition.positive.strings_only()
            {
                if !strings.is_empty() {
                    let targets = strings.get(&scratch.derived(i).sought(s));
                    if !targets.is_empty() {
                        let now = taking(scratch, chosen, trail);
                        for &target in targets {
                            self.arrive(scratch, target, now);
                        }
                    }
                }
                continue;
            }
            let (derived, next, hits) = scratch.lookup_space(i);
            next.clear();
            transition.lookup(loose, &mut Probe::new(leaf, derived), next, hits);
            if scratch.next.is_empty() {
                continue;
            }
            let now = taking(scratch, chosen, trail);
            for k in 0..scratch.next.len() {
                let next = scratch.next[k];
                self.arrive(scratch, next, now);
            }
        }
    }

    /// Goes where a transition's `target` leads, with the `chosen` array
    /// elements: reports a [`LEAF`]'s pattern, or queues a state and starts
    /// fetching it and its home transition, so that the cache misses of the
    /// states one state leads to overlap rather than follow each other.
    fn arrive(&self, scratch: &mut Scratch, target: u32, chosen: (u32, u32)) {
        if target & LEAF == 0 {
            prefetch_index(&self.states, target as usize);
            self.transitions.prefetch_home(target);
            scratch.reach(target, chosen.0, chosen.1);
        } else {
            self.report(scratch, target & !LEAF);
        }
    }

    /// Notes that the pattern in `slot` matched, and starts fetching its
    /// id, which is read once the match is over.
    fn report(&self, scratch: &mut Scratch, slot: u32) {
        prefetch_index(&self.ids, slot as usize);
        scratch.report(slot);
    }
}

/// The `chosen` array elements with those of a field's `trail`.
fn taking(scratch: &mut Scratch, chosen: (u32, u32), trail: &[Element]) -> (u32, u32) {
    if trail.is_empty() {
        return chosen;
    }
    let before = scratch.elements[chosen.0 as usize..chosen.1 as usize].to_vec();
    let start = index(scratch.elements.len());
    merge(&before, trail, &mut scratch.elements);
    (start, index(scratch.elements.len()))
}

impl Transition {
    /// Pushes onto `next` the targets `probe` leads to, by this
    /// transition and its `loose` steps.
    #[inline(never)]
    fn lookup(
        &self,
        loose: Option<&Loose>,
        probe: &mut Probe<'_>,
        next: &mut Vec<u32>,
        hits: &mut Vec<u32>,
    ) {
        self.positive.query(probe, &mut |t| next.push(t));
        if let Some(loose) = loose {
            loose.lookup(probe, next, hits);
        }
    }
}

impl Loose {
    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.negations.len() == self.free_negations.len()
    }

    fn negate(&mut self, child: u32) -> u32 {
        match self.free_negations.pop() {
            Some(negation) => {
                self.negations[negation as usize] = Some(child);
                negation
            }
            None => {
                self.negations.push(Some(child));
                index(self.negations.len() - 1)
            }
        }
    }

    /// Pushes onto `next` the targets `probe` leads to without a
    /// lookup, or unless one finds an exclusion.
    fn lookup(&self, probe: &mut Probe<'_>, next: &mut Vec<u32>, hits: &mut Vec<u32>) {
        next.extend_from_slice(&self.any);
        if self.negations.len() > self.free_negations.len() {
            hits.clear();
            if !self.negative.is_empty() {
                self.negative.query(probe, &mut |n| hits.push(n));
            }
            hits.sort_unstable();
            for (negation, child) in self.negations.iter().enumerate() {
                if let Some(child) = child
                    && hits.binary_search(&index(negation)).is_err()
                {
                    next.push(*child);
                }
            }
        }
    }
}

/// An index into the machine's vectors, which hold fewer than 2^32
/// entries.
fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl<Id: Clone + Eq + Hash> Default for Matcher<Id> {
    fn default() -> Self {
        Matcher::new()
    }
}

impl<Id> fmt::Debug for Matcher<Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matcher")
            .field("patterns", &self.by_id.len())
            .field("states", &(self.states.len() - self.free_states.len()))
            .field("paths", &self.paths.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{MatchWork, Matcher};
    use crate::{Event, Pattern};

    fn pattern(value: serde_json::Value) -> Pattern {
        Pattern::parse(&value).expect("valid pattern")
    }

    /// What matching reads of a state is one cache line, and so is a
    /// transition.
    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<super::State>(), 64);
        assert_eq!(std::mem::size_of::<super::Transition>(), 64);
        assert_eq!(std::mem::align_of::<super::Transition>(), 64);
    }

    #[test]
    fn shareable_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Matcher<String>>();
    }

    /// Removing every pattern leaves nothing behind: no states but the
    /// root, no transitions, no paths.
    #[test]
    fn removal_frees_everything() {
        let patterns = [
            json!({"a": ["x", {"prefix": "y"}], "b": [{"numeric": [">", 1]}]}),
            json!({"a": ["x"], "c": [{"exists": false}], "$or": [{"d": [1]}, {"e": [{"anything-but": "z"}]}]}),
            json!({"a": [{"wildcard": "*x*"}, {"cidr": "10.0.0.0/8"}, {"exists": true}]}),
            json!({"f": [{"equals-ignore-case": "Q"}, {"suffix": {"equals-ignore-case": "Z"}}, true, null]}),
        ];
        let mut matcher = Matcher::new();
        for round in 0..2 {
            for (i, p) in patterns.iter().enumerate() {
                matcher.add(i, &pattern(p.clone()));
            }
            assert!(matcher.states.len() > 5, "round {round}");
            let event = Event::from_json(&json!({"a": "x", "b": 2, "d": 1}));
            let mut ids = matcher.matches(&event);
            ids.sort_unstable();
            assert_eq!(ids, [0, 1, 2]);
            for i in 0..patterns.len() {
                assert!(matcher.remove(&i));
            }
            assert!(!matcher.remove(&0));
            assert!(matcher.is_empty());
            assert_eq!(matcher.states.len() - matcher.free_states.len(), 1);
            assert_eq!(matcher.transitions.in_use(), 0);
            assert!(matcher.paths.is_empty());
            let root = &matcher.states[0];
            assert!(root.transitions.is_empty() && root.absent.is_none() && root.ends.is_empty());
            assert!(matcher.links[0].children.is_empty());
            assert!(matcher.matches(&event).is_empty());
        }
    }

    /// A state where a pattern ends and nothing leads on is filed as that
    /// pattern ([`super::LEAF`]) as patterns that lead on from it, or end
    /// at it, come and go; and alternatives of one pattern so filed under
    /// the same test stay filed as some of them stop being leaves.
    #[test]
    fn leaves_come_and_go() {
        let range = json!({"numeric": [">", 1]});
        let steps = [json!([range]), json!([range, 5]), json!([range, 6])];
        let alternatives: Vec<_> = steps.iter().map(|s| json!({"n": s})).collect();
        let mut patterns = vec![pattern(json!({"$or": alternatives}))];
        // Each leads on from one of those alternatives' states (a step on
        // `m` comes after one on `n`), or ends there too.
        for s in &steps {
            patterns.push(pattern(json!({"n": s, "m": [{"exists": true}]})));
            patterns.push(pattern(json!({"n": s})));
        }
        let events = [
            json!({"n": 3}),
            json!({"n": 5, "m": 1}),
            json!({"n": 6, "m": 1}),
        ]
        .map(|e| Event::from_json(&e));
        let check = |matcher: &Matcher<usize>, live: &[usize]| {
            for event in &events {
                let mut found = matcher.matches(event);
                found.sort_unstable();
                let expected: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|&i| patterns[i].matches(event))
                    .collect();
                assert_eq!(found, expected, "{live:?} on {event:?}");
            }
        };
        // Every order of adding the others after the first, and of
        // removing them again.
        for order in [[1, 2, 3, 4, 5, 6], [6, 4, 2, 5, 3, 1], [3, 6, 1, 4, 2, 5]] {
            let mut matcher = Matcher::new();
            let mut live = vec![0];
            matcher.add(0, &patterns[0]);
            for i in order {
                matcher.add(i, &patterns[i]);
                live.push(i);
                live.sort_unstable();
                check(&matcher, &live);
            }
            for i in order.iter().rev().chain(&[0]) {
                matcher.remove(i);
                live.retain(|l| l != i);
                check(&matcher, &live);
            }
            assert_eq!(matcher.transitions.in_use(), 0);
        }
    }

    #[test]
    fn adding_an_id_again_replaces_its_pattern() {
        let mut matcher = Matcher::new();
        matcher.add("s", &pattern(json!({"a": [1]})));
        matcher.add("s", &pattern(json!({"a": [2]})));
        assert_eq!(matcher.len(), 1);
        assert!(
            matcher
                .matches(&Event::from_json(&json!({"a": 1})))
                .is_empty()
        );
        assert_eq!(matcher.matches(&Event::from_json(&json!({"a": 2}))), ["s"]);
        assert!(matcher.contains(&"s"));
    }

    #[test]
    fn work_counts_states_lookups_and_matches() {
        let mut matcher = Matcher::new();
        matcher.add(1, &pattern(json!({"a": ["x"], "b": ["y"]})));
        matcher.add(2, &pattern(json!({"a": ["z"]})));
        let work = matcher.work(&Event::from_json(&json!({"a": "x", "b": "y", "c": 1})));
        // The root and a = x; pattern 1 ends at b = y, where nothing leads
        // on, so it is reported at the lookup, without visiting the state.
        assert_eq!(
            work,
            MatchWork {
                states: 2,
                lookups: 2,
                matches: 1
            }
        );
        let work = matcher.work(&Event::from_json(&json!({"c": 1})));
        assert_eq!(
            work,
            MatchWork {
                states: 1,
                lookups: 0,
                matches: 0
            }
        );
    }

    /// A list of exact values is split into one alternative per value, so
    /// that a pump reaches one state for the pumps, not one per list that
    /// holds "pump".
    #[test]
    fn lists_share_the_states_of_their_values() {
        let mut matcher = Matcher::new();
        matcher.add(
            1,
            &pattern(json!({"type": ["pump", "valve"], "sev": ["a"]})),
        );
        matcher.add(2, &pattern(json!({"type": ["pump"], "sev": ["b"]})));
        matcher.add(
            3,
            &pattern(json!({"type": ["meter", "pump"], "sev": ["c"]})),
        );
        let event = Event::from_json(&json!({"type": "pump", "sev": "a"}));
        assert_eq!(matcher.matches(&event), [1]);
        assert_eq!(
            matcher.work(&event),
            MatchWork {
                states: 2,
                lookups: 2,
                matches: 1
            }
        );
        // Both of its values: reported once.
        let both = Event::from_json(&json!({"type": ["valve", "pump"], "sev": "a"}));
        assert_eq!(matcher.matches(&both), [1]);
        for id in [1, 3] {
            matcher.remove(&id);
        }
        assert_eq!(matcher.matches(&event), Vec::<i32>::new());
        let b = Event::from_json(&json!({"type": "pump", "sev": "b"}));
        assert_eq!(matcher.matches(&b), [2]);
    }

    /// Splitting stops at 4 alternatives a pattern.
    #[test]
    fn lists_are_split_within_a_budget() {
        let values = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>();
        let alternatives = |p: serde_json::Value| pattern(p).alternatives();
        assert_eq!(alternatives(json!({"a": values(3)})), 3);
        assert_eq!(alternatives(json!({"a": values(4)})), 4);
        assert_eq!(alternatives(json!({"a": values(5)})), 1);
        assert_eq!(alternatives(json!({"a": values(2), "b": values(2)})), 4);
        assert_eq!(alternatives(json!({"a": values(2), "b": values(3)})), 2);
        // Beside an $or's two branches, a list of two.
        let or = json!({"a": values(2), "$or": [{"b": ["x"]}, {"c": ["y"]}]});
        assert_eq!(alternatives(or), 4);
        // Only exact values.
        assert_eq!(alternatives(json!({"a": ["x", {"prefix": "y"}]})), 1);
    }

    /// A callback that matches another event gets its own scratch space.
    #[test]
    fn matching_inside_a_callback() {
        let mut matcher = Matcher::new();
        matcher.add(1, &pattern(json!({"a": [1]})));
        let event = Event::from_json(&json!({"a": 1}));
        let mut inner = Vec::new();
        matcher.for_each_match(&event, |_| inner = matcher.matches(&event));
        assert_eq!(inner, [1]);
    }
}
