//! SNS's dialect: a subscription's filter policy is a pattern, applied
//! either to the message attributes (`FilterPolicyScope`
//! `MessageAttributes`, the default) or to the JSON body (`MessageBody`).
//!
//! With attributes, the policy's keys are attribute names and cannot nest;
//! an attribute's value is its string value, a `Number` attribute is a
//! number (so `numeric` and numeric equality apply), a `String.Array` (or
//! `Number.Array`) attribute is an array, any element of which may match,
//! and `Binary` attributes are not looked at
//! (<https://docs.aws.amazon.com/sns/latest/dg/sns-message-filtering.html>,
//! <https://docs.aws.amazon.com/sns/latest/dg/subscription-filter-policy-constraints.html>).

use std::str::FromStr;

use serde_json::Value;

use crate::error::{EventError, PatternError};
use crate::event::{Event, EventBuilder, Leaf};
use crate::limits::Limits;
use crate::pattern::Pattern;

/// What a subscription's filter policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterPolicyScope {
    /// The message attributes (SNS's default).
    #[default]
    MessageAttributes,
    /// The message body, which must be a JSON object.
    MessageBody,
}

impl FilterPolicyScope {
    /// The name SNS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterPolicyScope::MessageAttributes => "MessageAttributes",
            FilterPolicyScope::MessageBody => "MessageBody",
        }
    }

    /// The limits SNS puts on a policy of this scope.
    pub fn limits(self) -> Limits {
        match self {
            FilterPolicyScope::MessageAttributes => Limits::SNS_ATTRIBUTES,
            FilterPolicyScope::MessageBody => Limits::SNS_BODY,
        }
    }

    /// Parses a filter policy for this scope, within SNS's limits.
    pub fn parse_policy(self, policy: &Value) -> Result<Pattern, PatternError> {
        Pattern::parse_with(policy, &self.limits())
    }
}

impl FromStr for FilterPolicyScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MessageAttributes" => Ok(FilterPolicyScope::MessageAttributes),
            "MessageBody" => Ok(FilterPolicyScope::MessageBody),
            other => Err(format!(
                "FilterPolicyScope must be MessageAttributes or MessageBody, not {other:?}"
            )),
        }
    }
}

/// The event a `MessageAttributes` policy is matched against, from each
/// attribute's name, data type (`String`, `Number`, `String.Array`,
/// `Number.Array`, `Binary`, any of them with a custom `.label`) and
/// string value.
pub fn attributes_event<N, T, V>(
    attributes: impl IntoIterator<Item = (N, (T, V))>,
) -> Result<Event, EventError>
where
    N: AsRef<str>,
    T: AsRef<str>,
    V: AsRef<str>,
{
    let mut builder = EventBuilder::new();
    for (name, (data_type, value)) in attributes {
        let (name, data_type, value) = (name.as_ref(), data_type.as_ref(), value.as_ref());
        let bad = |reason: String| EventError::Attribute {
            name: name.to_owned(),
            reason,
        };
        let base = data_type.split('.').next().unwrap_or(data_type);
        match (base, data_type) {
            (_, "String.Array" | "Number.Array") => {
                let items: Value = serde_json::from_str(value)
                    .map_err(|e| bad(format!("a {data_type} value must be a JSON array: {e}")))?;
                let Value::Array(items) = items else {
                    return Err(bad(format!("a {data_type} value must be a JSON array")));
                };
                if items.iter().any(|i| i.is_array() || i.is_object()) {
                    return Err(bad(format!(
                        "a {data_type} holds strings, numbers, true, false and null"
                    )));
                }
                builder.json(name, &Value::Array(items));
            }
            ("String", _) => {
                builder.leaf(name, Leaf::String(value));
            }
            ("Number", _) => {
                let number = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("{value:?} is not a number")))?;
                builder.leaf(name, Leaf::Number(number));
            }
            ("Binary", _) => {}
            _ => {
                return Err(bad(format!(
                    "unknown data type {data_type:?} (String, Number, Binary, String.Array)"
                )));
            }
        }
    }
    Ok(builder.build())
}

/// The event a `MessageBody` policy is matched against.
pub fn body_event(body: &[u8]) -> Result<Event, EventError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(Event::from_json(&value)),
        Ok(_) => Err(EventError::BodyNotJson(
            "it is JSON, but not an object".to_owned(),
        )),
        Err(e) => Err(EventError::BodyNotJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attributes(list: &[(&str, &str, &str)]) -> Event {
        attributes_event(list.iter().map(|&(n, t, v)| (n, (t, v)))).expect("valid attributes")
    }

    /// The attributes of the example message in
    /// <https://docs.aws.amazon.com/sns/latest/dg/example-filter-policies.html>.
    fn example() -> Event {
        attributes(&[
            (
                "customer_interests",
                "String.Array",
                r#"["soccer", "rugby", "hockey"]"#,
            ),
            ("store", "String", "example_corp"),
            ("event", "String", "order_placed"),
            ("price_usd", "Number", "210.75"),
            ("photo", "Binary", "aGVsbG8="),
        ])
    }

    fn policy(p: Value) -> Pattern {
        FilterPolicyScope::MessageAttributes
            .parse_policy(&p)
            .expect("valid policy")
    }

    #[test]
    fn attribute_policies_from_the_sns_examples() {
        let event = example();
        // A policy that accepts the page's message: every key names an
        // attribute, and one of its values matches.
        assert!(
            policy(json!({
                "store": ["example_corp"],
                "event": [{"anything-but": "order_cancelled"}],
                "customer_interests": ["rugby", "football", "baseball"],
                "price_usd": [{"numeric": [">=", 100]}],
            }))
            .matches(&event)
        );
        // One that rejects it: the event is not order_cancelled, and there
        // is no "encrypted" attribute.
        assert!(
            !policy(json!({
                "store": ["example_corp"],
                "event": ["order_cancelled"],
                "encrypted": [false],
                "customer_interests": ["basketball", "baseball"],
            }))
            .matches(&event)
        );
        // A Number attribute compares numerically; a String one does not.
        assert!(policy(json!({"price_usd": [210.75]})).matches(&event));
        assert!(!policy(json!({"store": [{"numeric": [">", 0]}]})).matches(&event));
        assert!(policy(json!({"photo": [{"exists": false}]})).matches(&event));
    }

    #[test]
    fn numbers_in_attributes() {
        // numeric-value-matching.html: 301.5 and 3.015e2 are equal.
        let event = attributes(&[("price_usd", "Number", "3.015e2")]);
        assert!(policy(json!({"price_usd": [{"numeric": ["=", 301.5]}]})).matches(&event));
        // "It matches ... (because it contains a value that isn't 100 or 500)".
        let event = attributes(&[("price", "Number.Array", "[100, 50]")]);
        assert!(policy(json!({"price": [{"anything-but": [100, 500]}]})).matches(&event));
        let event = attributes(&[("price", "Number", "100")]);
        assert!(!policy(json!({"price": [{"anything-but": [100, 500]}]})).matches(&event));
        let event = attributes(&[("count", "Number.int", "7")]);
        assert!(policy(json!({"count": [7]})).matches(&event));
    }

    #[test]
    fn bad_attributes_are_refused() {
        let refused = |t: &str, v: &str| attributes_event([("a", (t, v))]).is_err();
        assert!(refused("Number", "seven"));
        assert!(refused("String.Array", "not json"));
        assert!(refused("String.Array", r#"{"a": 1}"#));
        assert!(refused("String.Array", r#"[["nested"]]"#));
        assert!(refused("Blob", "x"));
        assert!(!refused("String.custom", "x"));
    }

    #[test]
    fn attribute_policies_do_not_nest() {
        let err = FilterPolicyScope::MessageAttributes
            .parse_policy(&json!({"a": {"b": ["x"]}}))
            .expect_err("nested");
        assert_eq!(err.path(), "a");
        assert!(
            FilterPolicyScope::MessageBody
                .parse_policy(&json!({"a": {"b": ["x"]}}))
                .is_ok()
        );
        let six_keys = json!({"a": [1], "b": [1], "c": [1], "d": [1], "e": [1], "f": [1]});
        assert!(
            FilterPolicyScope::MessageBody
                .parse_policy(&six_keys)
                .is_err()
        );
        // SNS's complexity example: 3 x 1 x 2 = 6 combinations.
        let policy = json!({
            "key_a": ["value_one", "value_two", "value_three"],
            "key_b": ["value_one"],
            "key_c": ["value_one", "value_two"],
        });
        assert!(
            FilterPolicyScope::MessageAttributes
                .parse_policy(&policy)
                .is_ok()
        );
        let values: Vec<String> = (0..13).map(|i| i.to_string()).collect();
        let too_many = json!({"a": values, "b": values});
        let err = FilterPolicyScope::MessageAttributes
            .parse_policy(&too_many)
            .expect_err("169 combinations");
        assert!(err.reason().contains("150"), "{err}");
    }

    #[test]
    fn bodies() {
        let event = body_event(br#"{"store": "example_corp", "price_usd": 210.75}"#).expect("json");
        let pattern = FilterPolicyScope::MessageBody
            .parse_policy(&json!({"price_usd": [{"numeric": [">", 200]}]}))
            .expect("valid");
        assert!(pattern.matches(&event));
        assert!(body_event(b"[1]").is_err());
        assert!(body_event(b"not json").is_err());
        assert_eq!("MessageBody".parse(), Ok(FilterPolicyScope::MessageBody));
        assert!("messagebody".parse::<FilterPolicyScope>().is_err());
    }
}
