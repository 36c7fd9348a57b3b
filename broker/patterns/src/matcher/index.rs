//! The value side of one transition: for one field path out of one
//! state, which targets a value leads to. Exact values are hash lookups,
//! prefixes and suffixes one lookup per distinct length ([`Affixes`]),
//! numeric ranges an interval tree ([`RangeIndex`]), CIDR blocks one lookup
//! per distinct prefix length; wildcards are filed under their literal
//! prefix or suffix and checked in full only when that matches.

use std::net::IpAddr;

use super::Map;
use super::affix::Affixes;
use super::keys::{Short, Targets, file, remove_keyed};
use super::ranges::{OneRange, RangeIndex};
use super::strings::{Sought, StringMap, Strings};
use crate::cidr::Cidr;
use crate::event::Leaf;
use crate::value::{AnythingBut, Literal, Number, Range, ValuePattern, fold};
use crate::wildcard::Wildcard;

/// One test an index entry stands for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item<'a> {
    String(&'a str),
    Number(Number),
    Bool(bool),
    Null,
    Prefix(&'a str),
    Suffix(&'a str),
    Folded(&'a str),
    FoldedPrefix(&'a str),
    FoldedSuffix(&'a str),
    Wildcard(&'a Wildcard),
    Range(Range),
    Cidr(Cidr),
}

impl<'a> Item<'a> {
    /// The entry for a value-list element that a value must pass; `None`
    /// for `exists` and `anything-but`, which are not looked up this way.
    pub(crate) fn positive(value: &'a ValuePattern) -> Option<Item<'a>> {
        Some(match value {
            ValuePattern::Exact(Literal::String(s)) => Item::String(s),
            ValuePattern::Exact(Literal::Number(n)) => Item::Number(*n),
            ValuePattern::Exact(Literal::Bool(b)) => Item::Bool(*b),
            ValuePattern::Exact(Literal::Null) => Item::Null,
            ValuePattern::Prefix(p) => Item::Prefix(p),
            ValuePattern::Suffix(s) => Item::Suffix(s),
            ValuePattern::PrefixIgnoreCase(p) => Item::FoldedPrefix(p),
            ValuePattern::SuffixIgnoreCase(s) => Item::FoldedSuffix(s),
            ValuePattern::EqualsIgnoreCase(v) => Item::Folded(v),
            ValuePattern::Wildcard(w) => Item::Wildcard(w),
            ValuePattern::Numeric(r) => Item::Range(*r),
            ValuePattern::Cidr(c) => Item::Cidr(*c),
            ValuePattern::AnythingBut(_) | ValuePattern::Exists(_) => return None,
        })
    }

    /// The entries for the values an `anything-but` excludes.
    pub(crate) fn excluded(list: &'a AnythingBut) -> Vec<Item<'a>> {
        match list {
            AnythingBut::Strings(v) => v.iter().map(|s| Item::String(s)).collect(),
            AnythingBut::Numbers(v) => v.iter().map(|&n| Item::Number(n)).collect(),
            AnythingBut::Prefixes(v) => v.iter().map(|s| Item::Prefix(s)).collect(),
            AnythingBut::Suffixes(v) => v.iter().map(|s| Item::Suffix(s)).collect(),
            AnythingBut::IgnoreCase(v) => v.iter().map(|s| Item::Folded(s)).collect(),
            AnythingBut::Wildcards(v) => v.iter().map(Item::Wildcard).collect(),
        }
    }
}

/// A value being looked up, with what lookups derive from it (its hash,
/// its folded form and that one's hash, the address it spells) kept in
/// `derived`, which matching keeps per event field, so that a field tested
/// out of several states derives each at most once per event, and folding
/// reuses one buffer.
pub(crate) struct Probe<'a> {
    leaf: Leaf<'a>,
    derived: &'a mut Derived,
}

/// What lookups derived from one event value.
#[derive(Debug, Default)]
pub(crate) struct Derived {
    /// What [`StringMap`]s look the string up by, once computed.
    sought: Option<(u64, Short)>,
    /// Whether the folded form is known.
    folded_known: bool,
    /// Whether folding changes the string (then the folded form is in
    /// `folded`).
    folded_differs: bool,
    folded: String,
    /// The same of the folded form, once computed when it differs.
    folded_sought: Option<(u64, Short)>,
    /// The address, once parsed (`Some(None)`: not one).
    ip: Option<Option<IpAddr>>,
}

impl Derived {
    /// Forgets what was derived from the value before (keeping the buffer).
    pub(crate) fn reset(&mut self) {
        self.sought = None;
        self.folded_known = false;
        self.folded_sought = None;
        self.ip = None;
    }

    /// `s`, the string this is derived from, as string maps look it up.
    #[inline]
    pub(crate) fn sought<'s>(&mut self, s: &'s str) -> Sought<'s> {
        Sought::from_parts(
            s.as_bytes(),
            *self
                .sought
                .get_or_insert_with(|| Sought::parts(s.as_bytes())),
        )
    }
}

impl<'a> Probe<'a> {
    pub(crate) fn new(leaf: Leaf<'a>, derived: &'a mut Derived) -> Probe<'a> {
        Probe { leaf, derived }
    }

    /// `s` folded: `s` itself when it is lowercase ASCII, as most values
    /// are, so that folding allocates nothing.
    fn folded<'s>(&'s mut self, s: &'s str) -> &'s str {
        let d = &mut *self.derived;
        if !d.folded_known {
            d.folded_known = true;
            d.folded_differs = !s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase());
            if d.folded_differs {
                d.folded.clear();
                if s.is_ascii() {
                    d.folded.push_str(s);
                    d.folded.make_ascii_lowercase();
                } else {
                    d.folded.push_str(&fold(s));
                }
            }
        }
        if d.folded_differs { &d.folded } else { s }
    }

    /// `s`, the probe's string, folded, as string maps look it up.
    fn folded_sought<'s>(&'s mut self, s: &'s str) -> Sought<'s> {
        self.folded(s);
        let d = &mut *self.derived;
        if !d.folded_differs {
            return d.sought(s);
        }
        let parts = *d
            .folded_sought
            .get_or_insert_with(|| Sought::parts(d.folded.as_bytes()));
        Sought::from_parts(d.folded.as_bytes(), parts)
    }

    fn ip(&mut self, s: &str) -> Option<IpAddr> {
        *self.derived.ip.get_or_insert_with(|| s.parse().ok())
    }
}

/// Targets (states, or negation ids) by the test that leads to them.
///
/// 64 bytes, a transition's one cache line: exact strings and one range,
/// what most transitions hold, are looked up in it, and only the rarer
/// tests are behind a pointer.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueIndex {
    strings: Strings,
    /// The rarer tests, allocated when the first one is added.
    more: Option<Box<More>>,
    /// The first range; the others are in `more`.
    range: Option<OneRange>,
}

/// The rarer tests. Several hundred bytes over several cache lines, of
/// which a transition usually has one or two kinds: so a lookup first
/// reads which kinds it has (`kinds`, in the first line, `repr(C)`) and
/// then only those, not every one's length.
#[derive(Debug, Clone, Default)]
#[repr(C)]
struct More {
    /// The kinds of test in here ([`More::kinds`]); none frees it.
    kinds: u16,
    numbers: Map<u64, Targets<u32>>,
    falses: Vec<u32>,
    trues: Vec<u32>,
    nulls: Vec<u32>,
    prefixes: Affixes<u32>,
    suffixes: Affixes<u32>,
    folded: StringMap<u32>,
    folded_prefixes: Affixes<u32>,
    folded_suffixes: Affixes<u32>,
    /// Wildcards by their literal prefix, else by their literal suffix,
    /// else in a list.
    wildcard_prefixes: Affixes<(Wildcard, u32)>,
    wildcard_suffixes: Affixes<(Wildcard, u32)>,
    wildcards: Vec<(Wildcard, u32)>,
    /// Networks by (family, prefix length), then by masked address.
    cidrs: Map<(bool, u8), Map<u128, Targets<u32>>>,
    /// The ranges but the first.
    ranges: RangeIndex,
}

impl ValueIndex {
    pub(crate) fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.range.is_none() && self.more.is_none()
    }

    pub(crate) fn insert(&mut self, item: Item<'_>, target: u32) {
        match item {
            Item::String(s) => {
                self.strings.insert(s, target);
            }
            Item::Range(r) if self.range.is_none() => self.range = Some(OneRange::new(r, target)),
            _ => {
                let more = self.more.get_or_insert_with(Box::default);
                match item {
                    Item::Number(n) => file(&mut more.numbers, n.key(), target),
                    Item::Bool(false) => more.falses.push(target),
                    Item::Bool(true) => more.trues.push(target),
                    Item::Null => more.nulls.push(target),
                    Item::Prefix(p) => more.prefixes.insert(p, target),
                    Item::Suffix(s) => more.suffixes.insert(s, target),
                    Item::Folded(v) => {
                        more.folded.insert(v.as_bytes(), target);
                    }
                    Item::FoldedPrefix(p) => more.folded_prefixes.insert(p, target),
                    Item::FoldedSuffix(s) => more.folded_suffixes.insert(s, target),
                    Item::Wildcard(w) => {
                        let entry = (w.clone(), target);
                        if !w.literal_prefix().is_empty() {
                            more.wildcard_prefixes.insert(w.literal_prefix(), entry);
                        } else if !w.literal_suffix().is_empty() {
                            more.wildcard_suffixes.insert(w.literal_suffix(), entry);
                        } else {
                            more.wildcards.push(entry);
                        }
                    }
                    Item::Cidr(c) => {
                        file(more.cidrs.entry(c.family()).or_default(), c.bits(), target);
                    }
                    Item::Range(r) => more.ranges.insert(r, target),
                    Item::String(_) => {}
                }
                more.kinds = more.kinds();
            }
        }
    }

    pub(crate) fn remove(&mut self, item: Item<'_>, target: u32) {
        match item {
            Item::String(s) => self.strings.remove(s, target),
            Item::Range(r) if self.range == Some(OneRange::new(r, target)) => self.range = None,
            _ => {
                let Some(more) = self.more.as_mut() else {
                    return;
                };
                match item {
                    Item::Number(n) => remove_keyed(&mut more.numbers, &n.key(), target),
                    Item::Bool(false) => remove_one(&mut more.falses, target),
                    Item::Bool(true) => remove_one(&mut more.trues, target),
                    Item::Null => remove_one(&mut more.nulls, target),
                    Item::Prefix(p) => {
                        more.prefixes.remove(p, &target);
                    }
                    Item::Suffix(s) => {
                        more.suffixes.remove(s, &target);
                    }
                    Item::Folded(v) => {
                        more.folded.remove(v.as_bytes(), &target);
                    }
                    Item::FoldedPrefix(p) => {
                        more.folded_prefixes.remove(p, &target);
                    }
                    Item::FoldedSuffix(s) => {
                        more.folded_suffixes.remove(s, &target);
                    }
                    Item::Wildcard(w) => {
                        let entry = (w.clone(), target);
                        if !w.literal_prefix().is_empty() {
                            more.wildcard_prefixes.remove(w.literal_prefix(), &entry);
                        } else if !w.literal_suffix().is_empty() {
                            more.wildcard_suffixes.remove(w.literal_suffix(), &entry);
                        } else if let Some(at) = more.wildcards.iter().position(|e| *e == entry) {
                            more.wildcards.swap_remove(at);
                        }
                    }
                    Item::Cidr(c) => {
                        if let Some(by_bits) = more.cidrs.get_mut(&c.family()) {
                            remove_keyed(by_bits, &c.bits(), target);
                            if by_bits.is_empty() {
                                more.cidrs.remove(&c.family());
                            }
                        }
                    }
                    Item::Range(r) => more.ranges.remove(r, target),
                    Item::String(_) => {}
                }
                more.kinds = more.kinds();
                if more.kinds == 0 {
                    self.more = None;
                }
            }
        }
    }

    /// Its exact strings, when it holds no other tests (then a string
    /// needs no [`ValueIndex::query`]).
    #[inline]
    pub(crate) fn strings_only(&self) -> Option<&Strings> {
        self.more.is_none().then_some(&self.strings)
    }

    /// Calls `emit` with the target of every entry `probe` passes (a
    /// target filed under several passing entries comes several times).
    #[inline]
    pub(crate) fn query(&self, probe: &mut Probe<'_>, emit: &mut impl FnMut(u32)) {
        match probe.leaf {
            Leaf::String(s) => {
                if !self.strings.is_empty() {
                    let sought = probe.derived.sought(s);
                    self.strings
                        .get(&sought)
                        .iter()
                        .copied()
                        .for_each(&mut *emit);
                }
                if let Some(more) = &self.more {
                    more.query_string(s, probe, emit);
                }
            }
            Leaf::Number(x) => {
                if let Some(target) = self.range.and_then(|r| r.target_at(x)) {
                    emit(target);
                }
                if let Some(more) = &self.more {
                    if more.kinds & NUMBERS != 0
                        && let Some(targets) = more.numbers.get(&Number::key_of(x))
                    {
                        targets.as_slice().iter().copied().for_each(&mut *emit);
                    }
                    if more.kinds & RANGES != 0 {
                        more.ranges.query(x, emit);
                    }
                }
            }
            Leaf::Bool(b) => {
                if let Some(more) = &self.more
                    && more.kinds & BOOLS_AND_NULLS != 0
                {
                    let targets = if b { &more.trues } else { &more.falses };
                    targets.iter().copied().for_each(emit);
                }
            }
            Leaf::Null => {
                if let Some(more) = &self.more
                    && more.kinds & BOOLS_AND_NULLS != 0
                {
                    more.nulls.iter().copied().for_each(emit);
                }
            }
        }
    }
}

/// [`More::kinds`] bits: each says that the fields it names hold tests.
const NUMBERS: u16 = 1;
const BOOLS_AND_NULLS: u16 = 1 << 1;
const PREFIXES: u16 = 1 << 2;
const SUFFIXES: u16 = 1 << 3;
const FOLDED: u16 = 1 << 4;
const WILDCARDS: u16 = 1 << 5;
const CIDRS: u16 = 1 << 6;
const RANGES: u16 = 1 << 7;

impl More {
    /// Which kinds of test it holds, as bits; 0 when it holds none.
    fn kinds(&self) -> u16 {
        [
            (NUMBERS, self.numbers.is_empty()),
            (
                BOOLS_AND_NULLS,
                self.falses.is_empty() && self.trues.is_empty() && self.nulls.is_empty(),
            ),
            (PREFIXES, self.prefixes.is_empty()),
            (SUFFIXES, self.suffixes.is_empty()),
            (
                FOLDED,
                self.folded.is_empty()
                    && self.folded_prefixes.is_empty()
                    && self.folded_suffixes.is_empty(),
            ),
            (
                WILDCARDS,
                self.wildcard_prefixes.is_empty()
                    && self.wildcard_suffixes.is_empty()
                    && self.wildcards.is_empty(),
            ),
            (CIDRS, self.cidrs.is_empty()),
            (RANGES, self.ranges.is_empty()),
        ]
        .into_iter()
        .filter(|&(_, empty)| !empty)
        .fold(0, |kinds, (kind, _)| kinds | kind)
    }

    fn query_string(&self, s: &str, probe: &mut Probe<'_>, emit: &mut impl FnMut(u32)) {
        if self.kinds & PREFIXES != 0 {
            self.prefixes.prefixes_of(s, |&t| emit(t));
        }
        if self.kinds & SUFFIXES != 0 {
            self.suffixes.suffixes_of(s, |&t| emit(t));
        }
        if self.kinds & FOLDED != 0 {
            if !self.folded.is_empty() {
                let sought = probe.folded_sought(s);
                self.folded
                    .get(&sought)
                    .iter()
                    .copied()
                    .for_each(&mut *emit);
            }
            let folded = probe.folded(s);
            self.folded_prefixes.prefixes_of(folded, |&t| emit(t));
            self.folded_suffixes.suffixes_of(folded, |&t| emit(t));
        }
        if self.kinds & WILDCARDS != 0 {
            let mut wildcard = |(w, t): &(Wildcard, u32)| {
                if w.matches(s) {
                    emit(*t);
                }
            };
            self.wildcard_prefixes.prefixes_of(s, &mut wildcard);
            self.wildcard_suffixes.suffixes_of(s, &mut wildcard);
            self.wildcards.iter().for_each(&mut wildcard);
        }
        if self.kinds & CIDRS != 0
            && let Some(ip) = probe.ip(s)
        {
            for (family, by_bits) in &self.cidrs {
                if let Some(bits) = Cidr::masked(*family, ip)
                    && let Some(targets) = by_bits.get(&bits)
                {
                    targets.as_slice().iter().copied().for_each(&mut *emit);
                }
            }
        }
    }
}

fn remove_one(targets: &mut Vec<u32>, target: u32) {
    if let Some(at) = targets.iter().position(|&t| t == target) {
        targets.swap_remove(at);
    }
}
