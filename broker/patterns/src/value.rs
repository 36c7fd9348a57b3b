//! What one element of a field's value list tests: an exact value, or an
//! operator (`prefix`, `numeric`, `anything-but`, ...). These are the parsed
//! forms; [`ValuePattern::test`] is their meaning on one leaf value, which
//! the reference interpreter uses directly and the compiled matcher must
//! agree with.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::cidr::Cidr;
use crate::event::Leaf;
use crate::wildcard::Wildcard;

/// A finite number with total equality, order and hashing (`-0` is `0`),
/// so that patterns can be compared and numbers used as index keys.
#[derive(Clone, Copy)]
pub struct Number(f64);

impl Number {
    /// `None` for NaN and the infinities, which JSON cannot carry.
    pub fn new(value: f64) -> Option<Number> {
        // Adding 0.0 turns -0.0 into 0.0.
        value.is_finite().then_some(Number(value + 0.0))
    }

    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }

    /// A key equal for equal numbers.
    pub(crate) fn key(self) -> u64 {
        self.0.to_bits()
    }

    /// The key of `value` if it were a pattern number.
    pub(crate) fn key_of(value: f64) -> u64 {
        (value + 0.0).to_bits()
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An exact value in a pattern: `"a"`, `3`, `true`, `null`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Literal {
    /// A string, compared byte for byte.
    String(String),
    /// A number, compared numerically (`300` equals `3e2`).
    Number(Number),
    /// `true` or `false`.
    Bool(bool),
    /// `null` (not the same as an empty string or a missing field).
    Null,
}

impl Literal {
    /// Whether `leaf` is this value.
    pub fn equals(&self, leaf: Leaf<'_>) -> bool {
        match (self, leaf) {
            (Literal::String(a), Leaf::String(b)) => a == b,
            (Literal::Number(a), Leaf::Number(b)) => a.get() == b,
            (Literal::Bool(a), Leaf::Bool(b)) => *a == b,
            (Literal::Null, Leaf::Null) => true,
            _ => false,
        }
    }
}

/// One end of a numeric range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bound {
    /// Where the range ends.
    pub value: Number,
    /// Whether `value` itself is in the range (`<=`, `>=`).
    pub inclusive: bool,
}

/// `{"numeric": [">", 0, "<=", 5]}`: a range with at least one end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range {
    /// The lower end (`>`, `>=`), if any.
    pub lower: Option<Bound>,
    /// The upper end (`<`, `<=`), if any.
    pub upper: Option<Bound>,
}

impl Range {
    /// Whether `x` is in the range.
    pub fn contains(&self, x: f64) -> bool {
        let above = match self.lower {
            None => true,
            Some(b) if b.inclusive => x >= b.value.get(),
            Some(b) => x > b.value.get(),
        };
        let below = match self.upper {
            None => true,
            Some(b) if b.inclusive => x <= b.value.get(),
            Some(b) => x < b.value.get(),
        };
        above && below
    }

    /// The lower end as a number (minus infinity when open).
    pub(crate) fn low(&self) -> f64 {
        self.lower.map_or(f64::NEG_INFINITY, |b| b.value.get())
    }

    /// The upper end as a number (infinity when open).
    pub(crate) fn high(&self) -> f64 {
        self.upper.map_or(f64::INFINITY, |b| b.value.get())
    }
}

/// `{"anything-but": ...}`: matches every value the list does not exclude,
/// of any type (`{"anything-but": "a"}` matches `3` and `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnythingBut {
    /// Excludes these strings.
    Strings(Vec<String>),
    /// Excludes these numbers (numerically).
    Numbers(Vec<Number>),
    /// Excludes strings with one of these prefixes.
    Prefixes(Vec<String>),
    /// Excludes strings with one of these suffixes.
    Suffixes(Vec<String>),
    /// Excludes strings equal to one of these, ignoring case (held folded).
    IgnoreCase(Vec<String>),
    /// Excludes strings that match one of these wildcards.
    Wildcards(Vec<Wildcard>),
}

impl AnythingBut {
    /// Whether `leaf` is one of the excluded values.
    pub fn excludes(&self, leaf: Leaf<'_>) -> bool {
        match (self, leaf) {
            (AnythingBut::Numbers(list), Leaf::Number(x)) => list.iter().any(|n| n.get() == x),
            (AnythingBut::Numbers(_), _) => false,
            (_, Leaf::String(s)) => match self {
                AnythingBut::Strings(list) => list.iter().any(|v| v == s),
                AnythingBut::Prefixes(list) => list.iter().any(|p| s.starts_with(p.as_str())),
                AnythingBut::Suffixes(list) => list.iter().any(|p| s.ends_with(p.as_str())),
                AnythingBut::IgnoreCase(list) => {
                    let folded = fold(s);
                    list.contains(&folded)
                }
                AnythingBut::Wildcards(list) => list.iter().any(|w| w.matches(s)),
                AnythingBut::Numbers(_) => false,
            },
            _ => false,
        }
    }

    /// How many values it lists.
    pub(crate) fn len(&self) -> usize {
        match self {
            AnythingBut::Strings(v)
            | AnythingBut::Prefixes(v)
            | AnythingBut::Suffixes(v)
            | AnythingBut::IgnoreCase(v) => v.len(),
            AnythingBut::Numbers(v) => v.len(),
            AnythingBut::Wildcards(v) => v.len(),
        }
    }
}

/// One element of a field's value list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValuePattern {
    /// An exact value; `{"numeric": ["=", x]}` is parsed to this too.
    Exact(Literal),
    /// `{"prefix": "p"}`: a string starting with `p`.
    Prefix(String),
    /// `{"prefix": {"equals-ignore-case": "p"}}` (held folded).
    PrefixIgnoreCase(String),
    /// `{"suffix": "s"}`: a string ending with `s`.
    Suffix(String),
    /// `{"suffix": {"equals-ignore-case": "s"}}` (held folded).
    SuffixIgnoreCase(String),
    /// `{"equals-ignore-case": "v"}` (held folded).
    EqualsIgnoreCase(String),
    /// `{"wildcard": "a*b"}`.
    Wildcard(Wildcard),
    /// `{"numeric": [...]}` with at least one open or closed end.
    Numeric(Range),
    /// `{"cidr": "10.0.0.0/8"}`: a string that is an address in the block.
    Cidr(Cidr),
    /// `{"anything-but": ...}`.
    AnythingBut(AnythingBut),
    /// `{"exists": true}` (any value is present) or `{"exists": false}`
    /// (no value: see the crate documentation for arrays).
    Exists(bool),
}

impl ValuePattern {
    /// Whether a present value `leaf` satisfies this element.
    /// `{"exists": false}` is never satisfied by a value: it is the
    /// absence of one, which the interpreters check separately.
    pub fn test(&self, leaf: Leaf<'_>) -> bool {
        match self {
            ValuePattern::Exact(literal) => literal.equals(leaf),
            ValuePattern::Numeric(range) => matches!(leaf, Leaf::Number(x) if range.contains(x)),
            ValuePattern::AnythingBut(list) => !list.excludes(leaf),
            ValuePattern::Exists(present) => *present,
            _ => {
                let Leaf::String(s) = leaf else {
                    return false;
                };
                match self {
                    ValuePattern::Prefix(p) => s.starts_with(p.as_str()),
                    ValuePattern::Suffix(p) => s.ends_with(p.as_str()),
                    ValuePattern::PrefixIgnoreCase(p) => fold(s).starts_with(p.as_str()),
                    ValuePattern::SuffixIgnoreCase(p) => fold(s).ends_with(p.as_str()),
                    ValuePattern::EqualsIgnoreCase(v) => fold(s) == *v,
                    ValuePattern::Wildcard(w) => w.matches(s),
                    ValuePattern::Cidr(net) => net.contains(s),
                    _ => false,
                }
            }
        }
    }

    /// How many values pass this element, roughly, in classes: exact
    /// values, then prefixes and the like, ranges, wildcards, and last
    /// the ones most values pass.
    pub(crate) fn fan_out(&self) -> u8 {
        match self {
            ValuePattern::Exact(_) | ValuePattern::EqualsIgnoreCase(_) => 0,
            ValuePattern::Prefix(_)
            | ValuePattern::PrefixIgnoreCase(_)
            | ValuePattern::Suffix(_)
            | ValuePattern::SuffixIgnoreCase(_)
            | ValuePattern::Cidr(_) => 2,
            ValuePattern::Numeric(_) => 3,
            ValuePattern::Wildcard(_) => 4,
            ValuePattern::AnythingBut(_) | ValuePattern::Exists(_) => 5,
        }
    }
}

/// Case folding for `equals-ignore-case`: both sides are lowercased.
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(x: f64) -> Number {
        Number::new(x).expect("finite")
    }

    #[test]
    fn numbers_compare_numerically() {
        assert_eq!(num(300.0), num(3e2));
        assert_eq!(num(-0.0), num(0.0));
        assert_eq!(num(-0.0).key(), Number::key_of(0.0));
        assert!(Number::new(f64::NAN).is_none());
        assert!(Literal::Number(num(301.8)).equals(Leaf::Number(3.018e2)));
        assert!(!Literal::Number(num(5.0)).equals(Leaf::String("5")));
    }

    #[test]
    fn ranges() {
        let r = Range {
            lower: Some(Bound {
                value: num(0.0),
                inclusive: false,
            }),
            upper: Some(Bound {
                value: num(5.0),
                inclusive: true,
            }),
        };
        assert!(!r.contains(0.0));
        assert!(r.contains(0.1));
        assert!(r.contains(5.0));
        assert!(!r.contains(5.1));
    }

    #[test]
    fn anything_but_matches_other_types() {
        let ab = ValuePattern::AnythingBut(AnythingBut::Strings(vec!["a".into()]));
        assert!(!ab.test(Leaf::String("a")));
        assert!(ab.test(Leaf::String("b")));
        assert!(ab.test(Leaf::Number(1.0)));
        assert!(ab.test(Leaf::Null));
        let ab = ValuePattern::AnythingBut(AnythingBut::Numbers(vec![num(100.0)]));
        assert!(!ab.test(Leaf::Number(1e2)));
        assert!(ab.test(Leaf::String("100")));
    }
}
