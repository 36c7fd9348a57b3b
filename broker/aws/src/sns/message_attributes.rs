//! A publish's `MessageAttributes` (`MessageAttributes.entry.N.Name`,
//! `.Value.DataType`, `.Value.StringValue`, `.Value.BinaryValue` in
//! base64), checked as SNS checks them: at most ten, names of letters,
//! digits, `_`, `-` and `.` (not `AWS.` or `Amazon.`), the types `String`,
//! `String.Array` (a JSON array), `Number` (which must parse) and
//! `Binary`, each with a value.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tidewire_queues::Attribute;

use super::errors::invalid;
use super::form::Form;
use crate::AwsError;

/// Most attributes on one message, as in SNS.
pub const MAX_ATTRIBUTES: usize = 10;
/// Longest attribute name, as in SNS.
const MAX_NAME_LEN: usize = 256;
/// The parameter errors name.
const PARAM: &str = "MessageAttributes";

/// The attributes of a publish (or of one batch entry).
pub fn parse(form: &Form) -> Result<BTreeMap<String, Attribute>, AwsError> {
    let entries = form.members("MessageAttributes.entry")?;
    if entries.len() > MAX_ATTRIBUTES {
        return Err(invalid(
            PARAM,
            format!(
                "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
                entries.len()
            ),
        ));
    }
    let mut attributes = BTreeMap::new();
    for entry in entries {
        let name = entry
            .get("Name")
            .ok_or_else(|| invalid(PARAM, "an entry has no Name"))?;
        check_name(name)?;
        let attribute = attribute(name, &entry)?;
        if attributes.insert(name.to_owned(), attribute).is_some() {
            return Err(invalid(
                PARAM,
                format!("the message attribute {name:?} is given twice"),
            ));
        }
    }
    Ok(attributes)
}

fn check_name(name: &str) -> Result<(), AwsError> {
    let lower = name.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.");
    if valid {
        return Ok(());
    }
    Err(invalid(
        PARAM,
        format!(
            "the message attribute name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' and '.' (not at either end, not twice in a row), not starting with AWS. or Amazon."
        ),
    ))
}

fn attribute(name: &str, entry: &Form) -> Result<Attribute, AwsError> {
    let fail = |reason: String| invalid(PARAM, reason);
    let data_type = entry
        .get("Value.DataType")
        .ok_or_else(|| fail(format!("the message attribute {name:?} has no DataType")))?;
    let text = || {
        entry
            .get("Value.StringValue")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                fail(format!(
                    "the message attribute {name:?} must contain a non-empty StringValue for the type {data_type}"
                ))
            })
    };
    let string = |value: &str| Attribute {
        data_type: data_type.to_owned(),
        string: Some(value.to_owned()),
        binary: None,
    };
    match data_type {
        "String" => Ok(string(text()?)),
        "Number" => {
            let value = text()?;
            if value.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                Ok(string(value))
            } else {
                Err(fail(format!(
                    "Could not cast message attribute {name:?} value {value:?} to number."
                )))
            }
        }
        "String.Array" => {
            let value = text()?;
            match serde_json::from_str::<serde_json::Value>(value) {
                Ok(serde_json::Value::Array(_)) => Ok(string(value)),
                _ => Err(fail(format!(
                    "the message attribute {name:?} of type String.Array must be a JSON array"
                ))),
            }
        }
        "Binary" => {
            let encoded = entry
                .get("Value.BinaryValue")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    fail(format!(
                        "the message attribute {name:?} must contain a non-empty BinaryValue for the type Binary"
                    ))
                })?;
            let bytes = STANDARD.decode(encoded).map_err(|e| {
                fail(format!(
                    "the BinaryValue of the message attribute {name:?} is not base64: {e}"
                ))
            })?;
            Ok(Attribute {
                data_type: data_type.to_owned(),
                string: None,
                binary: Some(bytes),
            })
        }
        other => Err(fail(format!(
            "the message attribute {name:?} has an invalid type {other:?}: the types are String, String.Array, Number and Binary"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute as `(name, type, string, binary)`.
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

    /// A form with one attribute per row.
    fn form(attributes: &[Row<'_>]) -> Form {
        let mut pairs = Vec::new();
        for (i, (name, data_type, string, binary)) in attributes.iter().enumerate() {
            let key = |field: &str| format!("MessageAttributes.entry.{}.{field}", i + 1);
            pairs.push((key("Name"), (*name).to_owned()));
            pairs.push((key("Value.DataType"), (*data_type).to_owned()));
            if let Some(s) = string {
                pairs.push((key("Value.StringValue"), (*s).to_owned()));
            }
            if let Some(b) = binary {
                pairs.push((key("Value.BinaryValue"), (*b).to_owned()));
            }
        }
        Form::new(pairs)
    }

    #[test]
    fn attributes_are_decoded() {
        let parsed = parse(&form(&[
            ("severity", "String", Some("high"), None),
            ("count", "Number", Some("-1.5e3"), None),
            ("tags", "String.Array", Some("[\"a\", 1]"), None),
            ("blob", "Binary", None, Some("AAEC/w==")),
        ]))
        .expect("valid");
        assert_eq!(parsed["severity"].string.as_deref(), Some("high"));
        assert_eq!(parsed["count"].data_type, "Number");
        assert_eq!(parsed["tags"].data_type, "String.Array");
        assert_eq!(
            parsed["blob"].binary.as_deref(),
            Some(&[0u8, 1, 2, 255][..])
        );
        assert!(parse(&Form::default()).expect("none").is_empty());
    }

    #[test]
    fn bad_attributes_are_refused_as_sns_does() {
        let eleven: Vec<(String, &str, Option<&str>, Option<&str>)> = (0..11)
            .map(|i| (format!("a{i}"), "String", Some("v"), None))
            .collect();
        let eleven: Vec<Row<'_>> = eleven
            .iter()
            .map(|(n, t, s, b)| (n.as_str(), *t, *s, *b))
            .collect();
        let cases: Vec<Vec<Row<'_>>> = vec![
            eleven,
            vec![("n", "Number", Some("ten"), None)],
            vec![("n", "Number", Some("NaN"), None)],
            vec![("s", "String", Some(""), None)],
            vec![("s", "String", None, None)],
            vec![("s", "Text", Some("v"), None)],
            vec![("s", "String.Array", Some("{\"a\":1}"), None)],
            vec![("b", "Binary", None, Some("not base64!"))],
            vec![("b", "Binary", None, None)],
            vec![("AWS.trace", "String", Some("v"), None)],
            vec![("a..b", "String", Some("v"), None)],
            vec![("a b", "String", Some("v"), None)],
            vec![
                ("dup", "String", Some("v"), None),
                ("dup", "String", Some("w"), None),
            ],
        ];
        for case in cases {
            let error = parse(&form(&case)).expect_err(&format!("{case:?}"));
            assert_eq!(error.code, "InvalidParameter", "{case:?}");
            assert!(
                error.message.contains("MessageAttributes"),
                "{}",
                error.message
            );
        }
        let ten: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
        let ten: Vec<Row<'_>> = ten
            .iter()
            .map(|n| (n.as_str(), "String", Some("v"), None))
            .collect();
        assert_eq!(parse(&form(&ten)).expect("ten").len(), 10);
    }
}
