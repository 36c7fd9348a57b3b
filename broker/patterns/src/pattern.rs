//! A parsed pattern: the tree as written (fields ANDed, `$or` groups of
//! branches), which the reference interpreter walks, and the same pattern
//! as a list of alternatives (its disjunctive normal form), each a list of
//! steps, which the compiled matcher adds to its state machine.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde_json::Value;

use crate::error::PatternError;
use crate::event::Event;
use crate::limits::Limits;
use crate::value::ValuePattern;

/// An event pattern (an SNS filter policy, an EventBridge rule's pattern).
///
/// ```
/// use serde_json::json;
/// use tidewire_patterns::{Event, Pattern};
///
/// let pattern = Pattern::parse(&json!({
///     "detail": {"state": ["running"], "temp": [{"numeric": [">", 30]}]}
/// }))?;
/// assert!(pattern.matches(&Event::from_json(&json!({
///     "detail": {"state": "running", "temp": 31.5}
/// }))));
/// # Ok::<(), tidewire_patterns::PatternError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub(crate) root: Conjunction,
    pub(crate) alternatives: Vec<Alternative>,
}

/// Fields that must all match, and `$or` groups of which one branch each
/// must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Conjunction {
    pub(crate) fields: Vec<FieldPattern>,
    pub(crate) ors: Vec<Vec<Conjunction>>,
}

/// A field's path and its value list (any element may match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPattern {
    pub(crate) path: String,
    pub(crate) values: Vec<ValuePattern>,
}

/// One way through the pattern's `$or`s: steps that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alternative {
    pub(crate) steps: Vec<Step>,
}

/// One field of an alternative.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Step {
    pub(crate) path: String,
    pub(crate) test: StepTest,
}

/// What a step asks of its field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum StepTest {
    /// A value that passes one of these (sorted, without duplicates,
    /// never `{"exists": false}`).
    Values(Vec<ValuePattern>),
    /// No value (`{"exists": false}`).
    Absent,
}

impl Step {
    /// Steps are ordered so that an event reaches few states: one exact
    /// value first (patterns that start alike share its state), then lists
    /// of exact values that were not split ([`split_lists`]: each is a
    /// state of its own, and an event can reach several), then the looser
    /// tests; absences last, where every positive step has chosen its
    /// array elements.
    fn rank(&self) -> u8 {
        match &self.test {
            StepTest::Values(_) if self.test.exact_list().is_some() => 1,
            StepTest::Values(values) => values.iter().map(ValuePattern::fan_out).max().unwrap_or(0),
            StepTest::Absent => u8::MAX,
        }
    }

    fn combinations(&self) -> usize {
        match &self.test {
            StepTest::Values(values) => values.len(),
            StepTest::Absent => 1,
        }
    }
}

impl StepTest {
    /// The values of a list of two or more exact values: what
    /// [`split_lists`] splits, and what ranks right after one exact value.
    fn exact_list(&self) -> Option<&[ValuePattern]> {
        match self {
            StepTest::Values(values)
                if values.len() > 1 && values.iter().all(|v| v.fan_out() == 0) =>
            {
                Some(values)
            }
            _ => None,
        }
    }
}

impl Pattern {
    /// Parses a pattern within [`Limits::DEFAULT`].
    pub fn parse(value: &Value) -> Result<Pattern, PatternError> {
        Pattern::parse_with(value, &Limits::DEFAULT)
    }

    /// Parses a pattern within `limits`.
    pub fn parse_with(value: &Value, limits: &Limits) -> Result<Pattern, PatternError> {
        let root = crate::parse::parse(value, limits)?;
        let alternatives = expand(&root, limits)?;
        Ok(Pattern { root, alternatives })
    }

    /// Whether the pattern matches the event. This is the reference
    /// interpreter: it walks the pattern as written, one pattern at a
    /// time; use a [`Matcher`](crate::Matcher) for many patterns.
    pub fn matches(&self, event: &Event) -> bool {
        crate::naive::matches(&self.root, event)
    }

    /// How many alternatives the pattern is matched as: its ways through
    /// its `$or`s, with short lists of exact values split into one
    /// alternative per value.
    pub fn alternatives(&self) -> usize {
        self.alternatives.len()
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    /// Parses pattern JSON text within [`Limits::DEFAULT`].
    fn from_str(text: &str) -> Result<Pattern, PatternError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PatternError::invalid("", format!("the pattern is not JSON: {e}")))?;
        Pattern::parse(&value)
    }
}

/// The alternatives of a conjunction, each with its steps in matching
/// order. Refuses more than `limits.max_combinations` combinations, and a
/// path that one alternative would test twice (as EventBridge does).
fn expand(root: &Conjunction, limits: &Limits) -> Result<Vec<Alternative>, PatternError> {
    let mut alternatives = Vec::new();
    for mut steps in split_lists(expand_conjunction(root, limits)?) {
        steps.sort_by(|a, b| (a.rank(), a).cmp(&(b.rank(), b)));
        let mut seen = BTreeSet::new();
        for step in &steps {
            if !seen.insert(step.path.as_str()) {
                return Err(PatternError::invalid(
                    &step.path,
                    "the field is tested twice in one alternative (beside an $or that \
                     tests it too, or as both a dotted key and a nested object)",
                ));
            }
        }
        alternatives.push(Alternative { steps });
    }
    let combinations: usize = alternatives
        .iter()
        .map(|a| a.steps.iter().map(Step::combinations).product::<usize>())
        .sum();
    if combinations > limits.max_combinations {
        return Err(too_many_combinations(limits));
    }
    Ok(alternatives)
}

/// The most alternatives [`split_lists`] makes of one pattern. Each
/// alternative can take states of its own past the value it was split
/// on, so this bounds how many times its room a pattern can take: short
/// lists (a few device types, a few ids) are split, and a long list stays
/// one state.
const SPLIT_BUDGET: usize = 4;

/// Splits a list of exact values into an alternative per value, while the
/// pattern has at most [`SPLIT_BUDGET`] alternatives. One exact value is a
/// state that every pattern testing that value at that point shares (a
/// device type's, a site's), where a list is a state that only patterns
/// with the very same list share: an event with a value that many lists
/// hold would reach a state for each. The number of combinations is what
/// it was (each list of n became n lists of one), and a pattern is reported
/// once however many of its alternatives an event matches.
fn split_lists(alternatives: Vec<Vec<Step>>) -> Vec<Vec<Step>> {
    let mut count = alternatives.len();
    let mut out = Vec::with_capacity(count);
    for steps in alternatives {
        let mut split = vec![steps];
        for at in 0..split[0].len() {
            let Some(values) = split[0][at].test.exact_list() else {
                continue;
            };
            let grown = count + split.len() * (values.len() - 1);
            if grown > SPLIT_BUDGET {
                continue;
            }
            count = grown;
            let values = values.to_vec();
            split = split
                .into_iter()
                .flat_map(|steps| {
                    values.iter().map(move |value| {
                        let mut steps = steps.clone();
                        steps[at].test = StepTest::Values(vec![value.clone()]);
                        steps
                    })
                })
                .collect();
        }
        out.extend(split);
    }
    out
}

fn expand_conjunction(c: &Conjunction, limits: &Limits) -> Result<Vec<Vec<Step>>, PatternError> {
    let mut alternatives = vec![Vec::new()];
    for field in &c.fields {
        alternatives = product(alternatives, &field_steps(field), limits)?;
    }
    for branches in &c.ors {
        let mut options = Vec::new();
        for branch in branches {
            options.extend(expand_conjunction(branch, limits)?);
            if options.len() > limits.max_combinations {
                return Err(too_many_combinations(limits));
            }
        }
        alternatives = product(alternatives, &options, limits)?;
    }
    Ok(alternatives)
}

/// A field as steps: one for its values, one for `{"exists": false}`; a
/// list with both is either.
fn field_steps(field: &FieldPattern) -> Vec<Vec<Step>> {
    let mut values: Vec<ValuePattern> = field
        .values
        .iter()
        .filter(|v| **v != ValuePattern::Exists(false))
        .cloned()
        .collect();
    values.sort();
    values.dedup();
    let mut options = Vec::new();
    if !values.is_empty() {
        options.push(vec![Step {
            path: field.path.clone(),
            test: StepTest::Values(values),
        }]);
    }
    if field.values.contains(&ValuePattern::Exists(false)) {
        options.push(vec![Step {
            path: field.path.clone(),
            test: StepTest::Absent,
        }]);
    }
    options
}

fn product(
    left: Vec<Vec<Step>>,
    right: &[Vec<Step>],
    limits: &Limits,
) -> Result<Vec<Vec<Step>>, PatternError> {
    if left.len().saturating_mul(right.len()) > limits.max_combinations {
        return Err(too_many_combinations(limits));
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in right {
            let mut steps = l.clone();
            steps.extend(r.iter().cloned());
            out.push(steps);
        }
    }
    Ok(out)
}

fn too_many_combinations(limits: &Limits) -> PatternError {
    PatternError::too_complex(
        "",
        format!(
            "the pattern stands for more than {} combinations of values \
             (the product of its value lists' sizes, summed over its $or branches)",
            limits.max_combinations
        ),
    )
}
