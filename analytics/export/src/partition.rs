//! Partition templates: `dt={ts:%Y-%m-%d}/hour={ts:%H}` turns a record's
//! broker time into the Hive-style directory its file goes to. A template
//! is literal text and `{ts:FORMAT}` fields, `FORMAT` in strftime's syntax
//! (chrono's); `ts` is the only field. `{{` and `}}` are literal braces.
//! Formats are parsed once; records of the same second (of the same
//! millisecond, for a format with fractions of a second) share a
//! partition, so a caller renders it once per [`Template::granule`].

use std::fmt::Write as _;

use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
use chrono::{DateTime, Utc};

/// A parsed partition template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// A format shows fractions of a second.
    subsecond: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ts(Vec<Item<'static>>),
}

/// Whether a strftime item shows fractions of a second.
fn is_subsecond(item: &Item<'_>) -> bool {
    matches!(
        item,
        Item::Numeric(Numeric::Nanosecond, _)
            | Item::Fixed(
                Fixed::Nanosecond
                    | Fixed::Nanosecond3
                    | Fixed::Nanosecond6
                    | Fixed::Nanosecond9
                    | Fixed::Internal(_)
            )
    )
}

impl Template {
    /// Parses a template; the error names the unknown field or bad format.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: a '{{' without its '}}'"))?;
                let inside = &rest[1..end];
                let (name, format) = inside.split_once(':').unwrap_or((inside, ""));
                if name != "ts" {
                    return Err(format!(
                        "unknown field {name:?} in {{{inside}}}: the only field is ts, as {{ts:%Y-%m-%d}}"
                    ));
                }
                if format.is_empty() {
                    return Err(format!("{{{inside}}} needs a format, as {{ts:%Y-%m-%d}}"));
                }
                let items = StrftimeItems::new(format)
                    .parse_to_owned()
                    .map_err(|_| format!("{format:?} is not a valid strftime format"))?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Ts(items));
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(format!("{text:?}: a '}}' without its '{{'"));
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        let subsecond = parts
            .iter()
            .any(|part| matches!(part, Part::Ts(items) if items.iter().any(is_subsecond)));
        let template = Template { parts, subsecond };
        let sample = template.render(0);
        if sample.split('/').any(|level| level == ".." || level == ".")
            || sample.starts_with('/')
            || sample.contains(['\\', '\0'])
        {
            return Err(format!(
                "{text:?} must make a relative path without '.' or '..' levels"
            ));
        }
        Ok(template)
    }

    /// The partition of a record with broker time `ts_ms` (ms since the
    /// epoch); empty for an empty template.
    pub fn render(&self, ts_ms: i64) -> String {
        let at = DateTime::<Utc>::from_timestamp_millis(ts_ms).unwrap_or_default();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ts(items) => {
                    // Writing to a String cannot fail; the items parsed.
                    let _ = write!(out, "{}", at.format_with_items(items.iter()));
                }
            }
        }
        out
    }

    /// Records whose `ts_ms` have the same granule have the same partition.
    pub fn granule(&self, ts_ms: i64) -> i64 {
        if self.subsecond {
            ts_ms
        } else {
            ts_ms.div_euclid(1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_partitions_from_the_broker_time() {
        let t = Template::parse("dt={ts:%Y-%m-%d}/hour={ts:%H}").expect("valid");
        // 2023-11-14T22:13:20Z
        assert_eq!(t.render(1_700_000_000_000), "dt=2023-11-14/hour=22");
        assert_eq!(Template::parse("").expect("none").render(5), "");
        assert_eq!(
            Template::parse("y={ts:%Y}/{{raw}}")
                .expect("escapes")
                .render(0),
            "y=1970/{raw}"
        );
    }

    #[test]
    fn a_partition_is_the_same_within_its_granule() {
        let hourly = Template::parse("dt={ts:%Y-%m-%d}/hour={ts:%H}").expect("valid");
        assert_eq!(
            hourly.granule(1_700_000_000_999),
            hourly.granule(1_700_000_000_000)
        );
        assert_ne!(
            hourly.granule(1_700_000_001_000),
            hourly.granule(1_700_000_000_999)
        );
        let fine = Template::parse("t={ts:%H%M%S%.3f}").expect("valid");
        assert_eq!(fine.render(1_700_000_000_123), "t=221320.123");
        assert_ne!(
            fine.granule(1_700_000_000_001),
            fine.granule(1_700_000_000_000)
        );
        let millis = Template::parse("t={ts:%3f}").expect("valid");
        assert_ne!(millis.granule(1), millis.granule(0));
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, says) in [
            ("dt={day}", "unknown field \"day\""),
            ("dt={topic:%Y}", "unknown field \"topic\""),
            ("dt={ts}", "needs a format"),
            ("dt={ts:%Q}", "not a valid strftime"),
            ("dt={ts:%Y", "without its"),
            ("../{ts:%Y}", "relative path"),
            ("/abs/{ts:%Y}", "relative path"),
        ] {
            let error = Template::parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
