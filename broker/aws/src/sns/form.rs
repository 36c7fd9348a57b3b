//! The Query protocol's request form: flat `Name=value` pairs, where lists
//! and maps are numbered members, e.g. `Attributes.entry.1.key`,
//! `MessageAttributes.entry.2.Value.DataType` or
//! `PublishBatchRequestEntries.member.3.Message`. [`Form::members`] groups
//! a list's members by number, each as a form of its own.

use std::collections::BTreeMap;

use super::errors::{invalid, missing};
use crate::AwsError;

/// A request's parameters (or one member's, with the member's prefix
/// taken off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// The form of `pairs`.
    pub fn new(pairs: Vec<(String, String)>) -> Form {
        Form { pairs }
    }

    /// The value of `name` (the last, if given twice).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, which the action needs.
    pub fn required(&self, name: &str) -> Result<&str, AwsError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(name))
    }

    /// A `true`/`false` parameter (any case); absent: `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, AwsError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse_flag(name, value),
        }
    }

    /// The members of the list `prefix` (e.g. `Attributes.entry`), in the
    /// order of their numbers, each holding its parameters without
    /// `prefix.N.`. A number that is not a positive integer is refused.
    pub fn members(&self, prefix: &str) -> Result<Vec<Form>, AwsError> {
        let mut members: BTreeMap<u32, Form> = BTreeMap::new();
        for (key, value) in &self.pairs {
            let Some(rest) = key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                continue;
            };
            let (number, field) = rest.split_once('.').unwrap_or((rest, ""));
            let n = number
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    invalid(
                        key,
                        format!("{prefix} members are numbered from 1, not {number:?}"),
                    )
                })?;
            members
                .entry(n)
                .or_default()
                .pairs
                .push((field.to_owned(), value.clone()));
        }
        Ok(members.into_values().collect())
    }

    /// The map `name` sent as `name.entry.N.key` / `name.entry.N.value`
    /// (as `CreateTopic` and `Subscribe` send their `Attributes`).
    pub fn entries(&self, name: &str) -> Result<BTreeMap<String, String>, AwsError> {
        let mut map = BTreeMap::new();
        for entry in self.members(&format!("{name}.entry"))? {
            let key = entry
                .get("key")
                .filter(|k| !k.is_empty())
                .ok_or_else(|| invalid(name, "an entry has no key"))?;
            let value = entry.get("value").unwrap_or_default();
            if map.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(invalid(name, format!("the key {key} is given twice")));
            }
        }
        Ok(map)
    }
}

/// `true` or `false`, in any case, as the parameter (or attribute) `name`.
pub fn parse_flag(name: &str, value: &str) -> Result<bool, AwsError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid(
            name,
            format!("must be true or false, not {value:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn attribute_entries_become_a_map() {
        let f = form(&[
            ("Action", "Subscribe"),
            ("Attributes.entry.2.key", "RawMessageDelivery"),
            ("Attributes.entry.2.value", "true"),
            ("Attributes.entry.1.key", "FilterPolicy"),
            ("Attributes.entry.1.value", "{\"a\":[\"b\"]}"),
        ]);
        let map = f.entries("Attributes").expect("entries");
        assert_eq!(map.len(), 2);
        assert_eq!(map["RawMessageDelivery"], "true");
        assert_eq!(map["FilterPolicy"], "{\"a\":[\"b\"]}");
        assert!(form(&[]).entries("Attributes").expect("none").is_empty());
        let twice = form(&[
            ("Attributes.entry.1.key", "A"),
            ("Attributes.entry.2.key", "A"),
        ]);
        assert_eq!(
            twice.entries("Attributes").expect_err("twice").code,
            "InvalidParameter"
        );
        let keyless = form(&[("Attributes.entry.1.value", "v")]);
        assert!(keyless.entries("Attributes").is_err());
    }

    #[test]
    fn members_are_grouped_and_ordered_by_number() {
        let f = form(&[
            ("TopicArn", "arn:aws:sns:us-east-1:000000000000:t"),
            ("PublishBatchRequestEntries.member.10.Id", "ten"),
            ("PublishBatchRequestEntries.member.2.Id", "two"),
            ("PublishBatchRequestEntries.member.2.Message", "hello"),
            (
                "PublishBatchRequestEntries.member.2.MessageAttributes.entry.1.Name",
                "kind",
            ),
            (
                "PublishBatchRequestEntries.member.2.MessageAttributes.entry.1.Value.DataType",
                "String",
            ),
        ]);
        let members = f.members("PublishBatchRequestEntries.member").expect("ok");
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].get("Id"), Some("two"));
        assert_eq!(members[0].get("Message"), Some("hello"));
        assert_eq!(members[1].get("Id"), Some("ten"));
        let nested = members[0].members("MessageAttributes.entry").expect("ok");
        assert_eq!(nested.len(), 1);
        assert_eq!(nested[0].get("Name"), Some("kind"));
        assert_eq!(nested[0].get("Value.DataType"), Some("String"));
        // A member list's prefix does not match a longer name.
        assert!(
            form(&[("AttributesX.entry.1.key", "k")])
                .entries("Attributes")
                .expect("ok")
                .is_empty()
        );
        for bad in ["0", "x", "-1"] {
            let key = format!("PublishBatchRequestEntries.member.{bad}.Id");
            let err = form(&[(&key, "a")])
                .members("PublishBatchRequestEntries.member")
                .expect_err(bad);
            assert_eq!(err.code, "InvalidParameter");
        }
    }

    #[test]
    fn flags_and_required_values() {
        let f = form(&[("ReturnSubscriptionArn", "TRUE"), ("Empty", "")]);
        assert_eq!(f.flag("ReturnSubscriptionArn", false).ok(), Some(true));
        assert_eq!(f.flag("Absent", false).ok(), Some(false));
        assert!(parse_flag("RawMessageDelivery", "yes").is_err());
        assert!(f.required("Empty").is_err());
        assert!(f.required("Absent").is_err());
        assert_eq!(f.required("ReturnSubscriptionArn").ok(), Some("TRUE"));
    }
}
