//! Partition templates: `dt={ts:%Y-%m-%d}/hour={ts:%H}` turns a record's
//! broker time into the Hive-style directory its file goes to. A template
//! is literal text and `{ts:FORMAT}` fields, `FORMAT` in strftime's syntax
//! (chrono's); `ts` is the only field. `{{` and `}}` are literal braces.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

/// A parsed partition template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ts(String),
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
                if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
                    return Err(format!("{format:?} is not a valid strftime format"));
                }
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Ts(format.to_owned()));
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
        let template = Template { parts };
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
                Part::Ts(format) => out.push_str(&at.format(format).to_string()),
            }
        }
        out
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
