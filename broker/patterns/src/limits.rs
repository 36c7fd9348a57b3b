//! How large a pattern may be. A pattern is refused at parse time when it
//! passes one of these, so that no subscriber can make matching slow for
//! everyone else.
//!
//! AWS publishes these limits: SNS allows at most 5 keys and 150
//! combinations per filter policy and no nesting for attribute policies
//! (<https://docs.aws.amazon.com/sns/latest/dg/subscription-filter-policy-constraints.html>);
//! EventBridge caps a pattern at 2,048 characters
//! (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html>),
//! which bounds the rest. [`Limits::DEFAULT`] is sized like that 2,048
//! characters; [`Limits::SNS_ATTRIBUTES`] and [`Limits::SNS_BODY`] are SNS's.

/// The most a pattern may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How deeply pattern objects may nest: `{"a": ["x"]}` is 1 level,
    /// `{"a": {"b": ["x"]}}` 2. `$or` adds no level.
    pub max_depth: usize,
    /// How many values the whole pattern may list: every element of every
    /// value list counts one, every element of an `anything-but` list too.
    pub max_values: usize,
    /// How many combinations the pattern may stand for: for each way
    /// through its `$or`s (and each field list that mixes
    /// `{"exists": false}` with values), the product of the sizes of its
    /// value lists; summed over those ways. This is SNS's "total
    /// combination of values".
    pub max_combinations: usize,
    /// How many distinct top-level keys the pattern may have, counting the
    /// keys inside a top-level `$or` and not `$or` itself.
    pub max_keys: usize,
}

impl Limits {
    /// Tidewire's own patterns (rules, topic subscriptions written in the
    /// EventBridge dialect).
    pub const DEFAULT: Limits = Limits {
        max_depth: 8,
        max_values: 300,
        max_combinations: 1_000,
        max_keys: 100,
    };

    /// An SNS filter policy with `FilterPolicyScope` `MessageAttributes`:
    /// no nesting, 5 keys, 150 combinations.
    pub const SNS_ATTRIBUTES: Limits = Limits {
        max_depth: 1,
        max_values: 150,
        max_combinations: 150,
        max_keys: 5,
    };

    /// An SNS filter policy with `FilterPolicyScope` `MessageBody`: nesting
    /// allowed, 5 top-level keys, 150 combinations.
    pub const SNS_BODY: Limits = Limits {
        max_depth: 8,
        max_values: 150,
        max_combinations: 150,
        max_keys: 5,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
