//! Refused patterns: each names the path where the problem is and says
//! what it is.

use serde_json::{Value, json};
use tidewire_patterns::{Limits, Pattern, PatternError};

fn refused(pattern: Value) -> PatternError {
    match Pattern::parse(&pattern) {
        Ok(_) => panic!("{pattern} was accepted"),
        Err(e) => e,
    }
}

#[rustfmt::skip]
#[test]
fn patterns_refused_name_the_path_and_the_reason() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!(["a"]), "", "a pattern is a JSON object"),
        (json!({}), "", "empty objects"),
        (json!({"a": {}}), "a", "empty objects"),
        (json!({"a": "x"}), "a", "a list of values or a nested object, not a string"),
        (json!({"a": []}), "a", "empty value lists"),
        (json!({"a": [[1]]}), "a", "not lists"),
        (json!({"a": [{"prefix": "x", "suffix": "y"}]}), "a", "exactly one key, this has 2"),
        (json!({"a": [{"bogus": 1}]}), "a", "unknown operator \"bogus\""),
        (json!({"a": [{"prefix": 1}]}), "a", "prefix: takes a string"),
        (json!({"a": [{"suffix": {"equals-ignore-case": 1}}]}), "a", "suffix: takes a string"),
        (json!({"a": [{"equals-ignore-case": null}]}), "a", "equals-ignore-case: takes a string"),
        (json!({"a": [{"exists": "yes"}]}), "a", "exists: takes true or false"),
        (json!({"a": [{"wildcard": "a**b"}]}), "a", "consecutive '*'"),
        (json!({"a": [{"wildcard": "a\\b"}]}), "a", "is not an escape"),
        (json!({"a": [{"cidr": "10.0.0.0/33"}]}), "a", "prefix length 33"),
        (json!({"a": [{"cidr": "banana/8"}]}), "a", "not an IPv4 or IPv6 address"),
        (json!({"a": [{"cidr": "10.0.0.0"}]}), "a", "not a CIDR block"),
        (json!({"a": [{"anything-but": [1, "x"]}]}), "a", "all strings or all numbers"),
        (json!({"a": [{"anything-but": []}]}), "a", "the list is empty"),
        (json!({"a": [{"anything-but": true}]}), "a", "anything-but: takes a string, a number"),
        (json!({"a": [{"anything-but": {"numeric": [">", 1]}}]}), "a", "\"numeric\" cannot go in anything-but"),
        (json!({"a": [{"anything-but": {"prefix": []}}]}), "a", "non-empty list of strings"),
        (json!({"detail": {"temp": [{"numeric": [">", "x"]}]}}), "detail.temp", "must be a JSON number"),
        (json!({"detail": {"temp": [{"numeric": ["<", 5, ">", 10]}]}}), "detail.temp", "the lower bound must be below the upper bound"),
        (json!({"detail": {"temp": [{"numeric": [">", 1, ">=", 2]}]}}), "detail.temp", "two lower bounds"),
        (json!({"detail": {"temp": [{"numeric": ["=", 1, "<", 2]}]}}), "detail.temp", "\"=\" cannot be combined"),
        (json!({"detail": {"temp": [{"numeric": ["~", 1]}]}}), "detail.temp", "unknown operator \"~\""),
        (json!({"detail": {"temp": [{"numeric": [">"]}]}}), "detail.temp", "got 1 elements"),
        (json!({"detail": {"temp": [{"numeric": 5}]}}), "detail.temp", "got a number"),
        (json!({"$or": [{"a": [1]}]}), "$or", "at least two"),
        (json!({"$or": {"a": [1]}}), "$or", "takes a list of patterns"),
        (json!({"$or": [{"a": [1]}, 3]}), "$or[1]", "each $or branch is a pattern object"),
        (json!({"x": {"$or": [{"a": [1]}, {"prefix": ["b"]}]}}), "x.$or[1].prefix", "is an operator, not a field name"),
        (json!({"x": {"$or": [{"a": [1]}, {"b": [{"numeric": []}]}]}}), "x.$or[1].b", "numeric takes"),
        (json!({"a": [1], "$or": [{"a": [2]}, {"b": [3]}]}), "a", "tested twice"),
        (json!({"a": {"b": [1]}, "a.b": [2]}), "a.b", "tested twice"),
    ];
    for (pattern, path, reason) in cases {
        let err = refused(pattern.clone());
        assert_eq!(err.path(), path, "{pattern}: {err}");
        assert!(err.reason().contains(reason), "{pattern}: {err:?} should say {reason:?}");
        assert!(matches!(err, PatternError::Invalid { .. }), "{pattern}: {err:?}");
    }
}

#[test]
fn patterns_refused_show_the_path_first() {
    let err = refused(json!({"detail": {"temp": [{"numeric": [">", 5, "<", 1]}]}}));
    assert!(
        err.to_string()
            .starts_with("\"detail.temp\": numeric takes [\"=\", n], or one or two of"),
        "{err}"
    );
    let err = "{not json".parse::<Pattern>().expect_err("not JSON");
    assert!(
        err.to_string().starts_with("the pattern is not JSON"),
        "{err}"
    );
}

#[test]
fn patterns_over_the_limits_are_refused() {
    let too_complex = |pattern: Value, path: &str, reason: &str| {
        let err = refused(pattern.clone());
        assert!(matches!(err, PatternError::TooComplex { .. }), "{err:?}");
        assert_eq!(err.path(), path, "{err}");
        assert!(err.reason().contains(reason), "{err}");
    };
    // Nine levels of nesting.
    let mut deep = json!({"leaf": [1]});
    for level in (1..=8).rev() {
        deep = json!({format!("l{level}"): deep});
    }
    too_complex(
        deep,
        "l1.l2.l3.l4.l5.l6.l7.l8",
        "nested more than 8 levels deep",
    );
    // 301 values.
    let values: Vec<u32> = (0..301).collect();
    too_complex(json!({"a": values}), "a", "more than 300 values");
    let values: Vec<u32> = (0..150).collect();
    too_complex(
        json!({"a": values, "b": [{"anything-but": values}, 1]}),
        "b",
        "more than 300 values",
    );
    // 20 x 20 x 3 = 1,200 combinations.
    let twenty: Vec<u32> = (0..20).collect();
    too_complex(
        json!({"a": twenty, "b": twenty, "c": [1, 2, 3]}),
        "",
        "more than 1000 combinations",
    );
    // An $or of $ors multiplies.
    let or = json!([{"x": [1]}, {"y": [1]}, {"z": [1]}, {"w": [1]}]);
    let ors = json!({"p": {"$or": or}, "q": {"$or": or}, "r": {"$or": or}, "s": {"$or": or}, "t": {"$or": or}});
    too_complex(ors, "", "combinations");
    // 101 top-level keys.
    let keys: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("k{i}"), json!([1]))).collect();
    too_complex(Value::Object(keys), "k99", "more than 100 top-level keys");

    // At the limits, accepted.
    let values: Vec<u32> = (0..300).collect();
    assert!(Pattern::parse(&json!({"a": values})).is_ok());
    let tight = Limits {
        max_values: 2,
        ..Limits::DEFAULT
    };
    assert!(Pattern::parse_with(&json!({"a": [1, 2]}), &tight).is_ok());
    assert!(Pattern::parse_with(&json!({"a": [1, 2, 3]}), &tight).is_err());
}
