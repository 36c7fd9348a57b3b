//! The reference interpreter: walks one pattern as written against an
//! event, trying every way of choosing a value for each field. It is the
//! definition the compiled [`Matcher`](crate::Matcher) is tested against
//! (and the "naive loop" its benchmark compares with), so it is written to
//! be obviously right rather than fast.
//!
//! A pattern matches when each of its fields, and one branch of each of
//! its `$or`s, can be given a value from the event such that:
//! - the value passes one element of the field's list;
//! - no two chosen values come from different elements of one array of
//!   objects (their trails are consistent);
//! - and, once all those are chosen, each field whose list holds
//!   `{"exists": false}` and that was not given a value has no value in
//!   the event, apart from values in other elements of the arrays the
//!   chosen values came from.

use crate::event::{Element, Event, consistent, merge};
use crate::pattern::{Conjunction, FieldPattern};
use crate::value::ValuePattern;

/// What to check once every field has been given a value: the chosen
/// array elements, and the paths that must have no value.
type Then<'a, 'p> = dyn FnMut(&[Element], &mut Vec<&'p str>) -> bool + 'a;

pub(crate) fn matches(root: &Conjunction, event: &Event) -> bool {
    let mut absent = Vec::new();
    fields(
        event,
        &root.fields,
        &root.ors,
        &[],
        &mut absent,
        &mut |chosen, absent| {
            absent
                .iter()
                .all(|path| event.at(path).all(|i| !consistent(chosen, event.trail(i))))
        },
    )
}

fn fields<'p>(
    event: &Event,
    list: &'p [FieldPattern],
    ors: &'p [Vec<Conjunction>],
    chosen: &[Element],
    absent: &mut Vec<&'p str>,
    then: &mut Then<'_, 'p>,
) -> bool {
    let Some((field, rest)) = list.split_first() else {
        return groups(event, ors, chosen, absent, then);
    };
    for i in event.at(&field.path) {
        let trail = event.trail(i);
        let leaf = event.leaf(i);
        if !consistent(chosen, trail) || !field.values.iter().any(|v| v.test(leaf)) {
            continue;
        }
        let mut merged = Vec::new();
        merge(chosen, trail, &mut merged);
        if fields(event, rest, ors, &merged, absent, then) {
            return true;
        }
    }
    if field.values.contains(&ValuePattern::Exists(false)) {
        absent.push(&field.path);
        let found = fields(event, rest, ors, chosen, absent, then);
        absent.pop();
        if found {
            return true;
        }
    }
    false
}

fn groups<'p>(
    event: &Event,
    ors: &'p [Vec<Conjunction>],
    chosen: &[Element],
    absent: &mut Vec<&'p str>,
    then: &mut Then<'_, 'p>,
) -> bool {
    let Some((branches, rest)) = ors.split_first() else {
        return then(chosen, absent);
    };
    branches.iter().any(|branch| {
        fields(
            event,
            &branch.fields,
            &branch.ors,
            chosen,
            absent,
            &mut |chosen, absent| groups(event, rest, chosen, absent, then),
        )
    })
}
