//! The compiled matcher against the reference interpreter, on random
//! patterns and events drawn from small spaces of paths and values so
//! that matches actually happen: the same patterns must match, after
//! adding, after removing some, and after adding them back.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};
use tidewire_patterns::{Event, Matcher, Pattern};

/// Leaf paths: top-level, nested, in an array of objects, a leaf array.
const PATHS: [&str; 8] = ["a", "b", "c", "n.x", "n.y", "arr.p", "arr.q", "tags"];

fn string() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "",
        "a",
        "ab",
        "abc",
        "b",
        "AB",
        "Ab",
        "a*b",
        "10.0.0.1",
        "10.0.1.7",
        "::1",
        "2001:db8::5",
    ])
}

fn number() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![-1.0, 0.0, 1.0, 2.5, 3.0, 100.0])
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => string().prop_map(|s| json!(s)),
        3 => number().prop_map(|x| json!(x)),
        1 => any::<bool>().prop_map(|b| json!(b)),
        1 => Just(Value::Null),
    ]
}

/// A leaf, or a few of them in an array.
fn leaves() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => leaf(),
        1 => prop::collection::vec(leaf(), 0..3).prop_map(Value::Array),
    ]
}

fn event() -> impl Strategy<Value = Value> {
    let object = |keys: &'static [&'static str]| {
        prop::collection::vec(prop::option::of(leaves()), keys.len()).prop_map(move |values| {
            let mut map = Map::new();
            for (key, value) in keys.iter().zip(values) {
                if let Some(value) = value {
                    map.insert((*key).to_owned(), value);
                }
            }
            Value::Object(map)
        })
    };
    (
        object(&["a", "b", "c", "tags"]),
        prop::option::of(object(&["x", "y"])),
        prop::option::of(prop::collection::vec(object(&["p", "q"]), 0..4)),
    )
        .prop_map(|(top, nested, array)| {
            let mut map = match top {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            if let Some(nested) = nested {
                map.insert("n".to_owned(), nested);
            }
            if let Some(array) = array {
                map.insert("arr".to_owned(), Value::Array(array));
            }
            Value::Object(map)
        })
}

fn strings(list: Vec<&'static str>) -> Value {
    Value::Array(list.into_iter().map(|s| json!(s)).collect())
}

/// One element of a value list: every operator, over the same values.
fn value_pattern() -> impl Strategy<Value = Value> {
    let affix = prop::sample::select(vec!["", "a", "ab", "b", "A", "B"]);
    let wildcard = prop::sample::select(vec!["a*", "*b", "a*b", "*", "*b*", "a\\*b", "A*", "*.1"]);
    let cidr = prop::sample::select(vec!["10.0.0.0/24", "10.0.0.0/8", "::/0", "2001:db8::/32"]);
    let op = prop::sample::select(vec![">", ">=", "<", "<="]);
    prop_oneof![
        4 => leaf(),
        1 => affix.clone().prop_map(|p| json!({"prefix": p})),
        1 => affix.clone().prop_map(|p| json!({"prefix": {"equals-ignore-case": p}})),
        1 => affix.clone().prop_map(|s| json!({"suffix": s})),
        1 => affix.clone().prop_map(|s| json!({"suffix": {"equals-ignore-case": s}})),
        1 => string().prop_map(|s| json!({"equals-ignore-case": s})),
        1 => wildcard.clone().prop_map(|w| json!({"wildcard": w})),
        1 => string().prop_map(|s| json!({"anything-but": s})),
        1 => number().prop_map(|x| json!({"anything-but": x})),
        1 => prop::collection::vec(string(), 1..3).prop_map(|l| json!({"anything-but": strings(l)})),
        1 => prop::collection::vec(number(), 1..3).prop_map(|l| json!({"anything-but": l})),
        1 => prop::collection::vec(affix.clone(), 1..3)
            .prop_map(|l| json!({"anything-but": {"prefix": strings(l)}})),
        1 => affix.clone().prop_map(|s| json!({"anything-but": {"suffix": s}})),
        1 => string().prop_map(|s| json!({"anything-but": {"equals-ignore-case": s}})),
        1 => wildcard.prop_map(|w| json!({"anything-but": {"wildcard": w}})),
        2 => (op.clone(), number()).prop_map(|(op, x)| json!({"numeric": [op, x]})),
        1 => number().prop_map(|x| json!({"numeric": ["=", x]})),
        1 => (prop::sample::select(vec![">", ">="]), prop::sample::select(vec!["<", "<="]), number(), 1..4usize)
            .prop_map(|(lo, hi, x, w)| json!({"numeric": [lo, x, hi, x + w as f64]})),
        2 => any::<bool>().prop_map(|b| json!({"exists": b})),
        1 => cidr.prop_map(|c| json!({"cidr": c})),
    ]
}

/// Fields on distinct paths, each with a value list.
fn fields(paths: Vec<&'static str>) -> impl Strategy<Value = Vec<(&'static str, Value)>> {
    prop::sample::subsequence(paths.clone(), 1..=3.min(paths.len())).prop_flat_map(|chosen| {
        chosen
            .into_iter()
            .map(|path| {
                prop::collection::vec(value_pattern(), 1..3)
                    .prop_map(move |list| (path, Value::Array(list)))
            })
            .collect::<Vec<_>>()
    })
}

/// Puts `value` at dotted `path` in `map`, making the objects between.
fn insert(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = map
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                insert(inner, rest, value);
            }
        }
    }
}

fn object(fields: Vec<(&'static str, Value)>) -> Map<String, Value> {
    let mut map = Map::new();
    for (path, value) in fields {
        insert(&mut map, path, value);
    }
    map
}

/// A pattern: a few fields, sometimes with an `$or` over the other paths
/// at the top, or one inside `arr` over its element fields (then the top
/// one leaves them out: a field may be tested once per alternative).
fn pattern() -> impl Strategy<Value = Value> {
    (fields(PATHS.to_vec()), prop::bool::weighted(0.2))
        .prop_flat_map(|(outer, nest)| {
            let used: Vec<&str> = outer.iter().map(|(p, _)| *p).collect();
            let in_arr: Vec<&'static str> = [("p", "arr.p"), ("q", "arr.q")]
                .into_iter()
                .filter(|(_, full)| !used.contains(full))
                .map(|(p, _)| p)
                .collect();
            let nest = nest && !in_arr.is_empty();
            let rest: Vec<&'static str> = PATHS
                .iter()
                .copied()
                .filter(|p| !(used.contains(p) || nest && p.starts_with("arr.")))
                .collect();
            let branches = prop::collection::vec(fields(rest), 2..4);
            let nested = if nest {
                prop::collection::vec(fields(in_arr), 2..3)
                    .prop_map(Some)
                    .boxed()
            } else {
                Just(None).boxed()
            };
            (Just(outer), prop::option::weighted(0.3, branches), nested)
        })
        .prop_map(|(outer, or, nested)| {
            let mut map = object(outer);
            if let Some(branches) = or {
                let branches = branches.into_iter().map(|b| Value::Object(object(b)));
                map.insert("$or".to_owned(), Value::Array(branches.collect()));
            }
            if let Some(branches) = nested {
                let branches = branches.into_iter().map(|b| Value::Object(object(b)));
                insert(&mut map, "arr.$or", Value::Array(branches.collect()));
            }
            Value::Object(map)
        })
}

fn parse(json: &Value) -> Result<Pattern, TestCaseError> {
    Pattern::parse(json).map_err(|e| TestCaseError::fail(format!("{json}: {e}")))
}

/// What the interpreter says each added pattern does with `event`.
fn expected(patterns: &[(usize, Pattern)], event: &Event) -> Vec<usize> {
    patterns
        .iter()
        .filter(|(_, p)| p.matches(event))
        .map(|(id, _)| *id)
        .collect()
}

fn found(matcher: &Matcher<usize>, event: &Event) -> Vec<usize> {
    let mut ids = matcher.matches(event);
    ids.sort_unstable();
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn patterns_compiled_agree_with_the_interpreter(
        jsons in prop::collection::vec(pattern(), 1..16),
        events in prop::collection::vec(event(), 1..8),
        removed in prop::collection::vec(any::<bool>(), 16),
    ) {
        let mut live: Vec<(usize, Pattern)> = Vec::new();
        let mut matcher = Matcher::new();
        for (id, json) in jsons.iter().enumerate() {
            let pattern = parse(json)?;
            matcher.add(id, &pattern);
            live.push((id, pattern));
        }
        let events: Vec<(Value, Event)> =
            events.into_iter().map(|e| { let f = Event::from_json(&e); (e, f) }).collect();
        for (json, event) in &events {
            prop_assert_eq!(found(&matcher, event), expected(&live, event), "event {}", json);
        }

        let mut taken = Vec::new();
        live.retain(|(id, pattern)| {
            if removed[*id] {
                taken.push((*id, pattern.clone()));
                false
            } else {
                true
            }
        });
        for (id, _) in &taken {
            prop_assert!(matcher.remove(id));
        }
        prop_assert_eq!(matcher.len(), live.len());
        for (json, event) in &events {
            prop_assert_eq!(found(&matcher, event), expected(&live, event), "after removals, event {}", json);
        }

        // Back under new ids, and one pattern replaced by another.
        for (id, pattern) in taken {
            matcher.add(id + 100, &pattern);
            live.push((id + 100, pattern));
        }
        if let Some((id, _)) = live.first().cloned() {
            let replacement = live[live.len() - 1].1.clone();
            matcher.add(id, &replacement);
            live[0].1 = replacement;
        }
        live.sort_by_key(|(id, _)| *id);
        for (json, event) in &events {
            prop_assert_eq!(found(&matcher, event), expected(&live, event), "after re-adding, event {}", json);
        }
    }
}

/// The spaces above are small enough that patterns match often, and
/// varied enough that they often do not: the agreement is not vacuous.
#[test]
fn patterns_generated_match_often_enough() {
    let mut runner = TestRunner::deterministic();
    let (mut pairs, mut matched) = (0u32, 0u32);
    for _ in 0..2_000 {
        let (Ok(p), Ok(e)) = (
            pattern().new_tree(&mut runner),
            event().new_tree(&mut runner),
        ) else {
            continue;
        };
        let Ok(pattern) = Pattern::parse(&p.current()) else {
            panic!("{} was refused", p.current());
        };
        pairs += 1;
        if pattern.matches(&Event::from_json(&e.current())) {
            matched += 1;
        }
    }
    let share = f64::from(matched) / f64::from(pairs);
    assert!(
        (0.05..0.7).contains(&share),
        "{matched} of {pairs} pairs match"
    );
}

/// A numeric condition on `a`, sometimes beside an exact `b`.
fn range_pattern() -> impl Strategy<Value = Value> {
    let bound = -10i32..10;
    let range = prop_oneof![
        (
            prop::sample::select(vec![">", ">=", "<", "<="]),
            bound.clone()
        )
            .prop_map(|(op, x)| json!([op, x])),
        (
            prop::sample::select(vec![">", ">="]),
            prop::sample::select(vec!["<", "<="]),
            bound,
            1i32..8,
        )
            .prop_map(|(lo, hi, x, w)| json!([lo, x, hi, x + w])),
    ];
    (range, prop::option::of(0i32..3)).prop_map(|(range, b)| match b {
        Some(b) => json!({"a": [{"numeric": range}], "b": [b]}),
        None => json!({"a": [{"numeric": range}]}),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Enough ranges on one path that the matcher files them in its
    /// interval tree and rebuilds it as patterns come and go.
    #[test]
    fn patterns_with_many_ranges_agree(
        jsons in prop::collection::vec(range_pattern(), 30..150),
        removed in prop::collection::vec(any::<bool>(), 150),
    ) {
        let mut matcher = Matcher::new();
        let mut live = Vec::new();
        for (id, json) in jsons.iter().enumerate() {
            let pattern = parse(json)?;
            matcher.add(id, &pattern);
            live.push((id, pattern));
        }
        let events: Vec<Event> = (-24i32..=24)
            .flat_map(|x| {
                let a = f64::from(x) / 2.0;
                [json!({"a": a}), json!({"a": a, "b": x.rem_euclid(3)})]
            })
            .map(|e| Event::from_json(&e))
            .collect();
        for event in &events {
            prop_assert_eq!(found(&matcher, event), expected(&live, event), "{:?}", event);
        }
        for (id, _) in live.iter().filter(|(id, _)| removed[*id]) {
            prop_assert!(matcher.remove(id));
        }
        live.retain(|(id, _)| !removed[*id]);
        for event in &events {
            prop_assert_eq!(found(&matcher, event), expected(&live, event), "after removals, {:?}", event);
        }
    }
}
