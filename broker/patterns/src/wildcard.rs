//! `{"wildcard": "dir/*.png"}`: `*` stands for any run of characters
//! (none included); `\*` is a literal asterisk and `\\` a literal
//! backslash. As in EventBridge, two `*` in a row and a backslash before
//! any other character are refused.

use std::fmt;

/// A parsed wildcard: the literal runs between its `*`s.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Wildcard {
    /// The pattern as written, for display and ordering.
    source: String,
    /// The literal runs: one more than there are `*`s. The first must
    /// start the value, the last must end it, the others come in order
    /// between.
    parts: Vec<String>,
}

impl Wildcard {
    /// Parses a wildcard expression; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Wildcard, String> {
        let mut parts = vec![String::new()];
        let mut chars = source.chars();
        let mut after_star = false;
        while let Some(c) = chars.next() {
            match c {
                '*' if after_star => {
                    return Err("consecutive '*' are not allowed in a wildcard".to_owned());
                }
                '*' => {
                    parts.push(String::new());
                    after_star = true;
                    continue;
                }
                '\\' => match chars.next() {
                    Some(escaped @ ('*' | '\\')) => push(&mut parts, escaped),
                    Some(other) => {
                        return Err(format!(
                            "'\\{other}' is not an escape: only '\\*' and '\\\\' are"
                        ));
                    }
                    None => return Err("a wildcard cannot end with a lone '\\'".to_owned()),
                },
                other => push(&mut parts, other),
            }
            after_star = false;
        }
        Ok(Wildcard {
            source: source.to_owned(),
            parts,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The literal text the value must start with (empty when the
    /// expression starts with `*`). A wildcard without `*` is an exact
    /// value and has no prefix of its own.
    pub(crate) fn literal_prefix(&self) -> &str {
        match self.parts.as_slice() {
            [first, _, ..] => first,
            _ => "",
        }
    }

    /// The literal text the value must end with (empty when the
    /// expression ends with `*`, or has none).
    pub(crate) fn literal_suffix(&self) -> &str {
        match self.parts.as_slice() {
            [_, .., last] => last,
            _ => "",
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return value.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return value == first;
        };
        if value.len() < first.len() + last.len()
            || !value.starts_with(first.as_str())
            || !value.ends_with(last.as_str())
        {
            return false;
        }
        // The leftmost place for each middle run leaves the most room for
        // the ones after it, so a greedy scan decides.
        let mut between = &value[first.len()..value.len() - last.len()];
        for part in middle {
            match between.find(part.as_str()) {
                Some(at) => between = &between[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

fn push(parts: &mut [String], c: char) {
    if let Some(last) = parts.last_mut() {
        last.push(c);
    }
}

impl fmt::Debug for Wildcard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wildcard({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::Wildcard;

    fn matches(pattern: &str, value: &str) -> bool {
        Wildcard::parse(pattern).map(|w| w.matches(value)) == Ok(true)
    }

    #[test]
    fn stars_match_any_run() {
        // From the EventBridge documentation's wildcard examples.
        assert!(matches("dir/*.png", "dir/a.png"));
        assert!(matches("dir/*.png", "dir/.png"));
        assert!(!matches("dir/*.png", "dir/a.jpg"));
        assert!(matches("*/dir/*.png", "x/dir/y.png"));
        assert!(matches("us-*-1", "us-east-1"));
        assert!(!matches("us-*-1", "us-east-2"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("ab*ba", "abba"));
        assert!(matches("plain", "plain"));
        assert!(!matches("plain", "plainer"));
    }

    #[test]
    fn escapes() {
        assert!(matches(r"a\*b", "a*b"));
        assert!(!matches(r"a\*b", "axb"));
        assert!(matches(r"a\\*", r"a\anything"));
        assert!(Wildcard::parse("a**b").is_err());
        assert!(Wildcard::parse(r"a\b").is_err());
        assert!(Wildcard::parse("a\\").is_err());
        assert!(Wildcard::parse(r"a*\**b").is_ok());
    }

    #[test]
    fn literal_ends() {
        let w = Wildcard::parse("ab*cd*ef").expect("valid");
        assert_eq!((w.literal_prefix(), w.literal_suffix()), ("ab", "ef"));
        let w = Wildcard::parse("*x").expect("valid");
        assert_eq!((w.literal_prefix(), w.literal_suffix()), ("", "x"));
        let w = Wildcard::parse("exact").expect("valid");
        assert_eq!((w.literal_prefix(), w.literal_suffix()), ("", ""));
    }
}
