//! MQTT topic names and topic filters: validation and matching.
//!
//! Follows MQTT 3.1.1 section 4.7 (and 5.0 section 4.7): levels are split
//! on `/`; `+` matches exactly one level and `#` any number of trailing
//! levels (including none, so `a/#` matches `a`); wildcards must fill a
//! whole level; a filter starting with a wildcard does not match topics
//! starting with `$`.

use std::fmt;

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero-length topics are not allowed.
    #[error("topic is empty")]
    Empty,
    /// Longer than the configured limit.
    #[error("topic is {len} bytes, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// Topic names may not contain the NUL character.
    #[error("topic contains a NUL character")]
    Nul,
    /// Topic names (as opposed to filters) may not contain wildcards.
    #[error("topic name {0:?} contains a wildcard (+ or #)")]
    WildcardInName(String),
    /// A wildcard that does not fill a whole level, or `#` not at the end.
    #[error("topic filter {0:?} has a misplaced wildcard")]
    BadWildcard(String),
    /// A `$` topic, published through a front door that does not let
    /// clients use them.
    #[error("cannot publish to {0:?}: topics starting with $ are reserved for the broker")]
    Reserved(String),
}

/// Refuses a `$` topic. The HTTP API and the `/ws` JSON protocol call it;
/// MQTT leaves `$` topics to the ACLs, as MQTT brokers do.
pub fn refuse_reserved(topic: &str) -> Result<(), TopicError> {
    if topic.starts_with('$') {
        return Err(TopicError::Reserved(topic.to_owned()));
    }
    Ok(())
}

/// Checks a topic name that a message is published to.
pub fn validate_name(topic: &str, max_len: usize) -> Result<(), TopicError> {
    check_common(topic, max_len)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName(topic.to_owned()));
    }
    Ok(())
}

fn check_common(topic: &str, max_len: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > max_len {
        return Err(TopicError::TooLong {
            len: topic.len(),
            max: max_len,
        });
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// A valid topic filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Validates `filter`.
    pub fn new(filter: &str, max_len: usize) -> Result<TopicFilter, TopicError> {
        check_common(filter, max_len)?;
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            let misplaced = match *level {
                "#" => i != levels.len() - 1,
                "+" => false,
                other => other.contains(['+', '#']),
            };
            if misplaced {
                return Err(TopicError::BadWildcard(filter.to_owned()));
            }
        }
        Ok(TopicFilter(filter.to_owned()))
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `topic` (a valid topic name) matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        matches(&self.0, topic)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when the topic name `topic` matches the (valid) filter `filter`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a//b", "a//b", true),
        ];
        for (filter, topic, expected) in cases {
            TopicFilter::new(filter, 1024).expect("valid filter");
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn validation() {
        for bad in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "a/#/b",
            "",
        ] {
            assert!(TopicFilter::new(bad, 1024).is_err(), "{bad}");
        }
        for good in ["#", "+", "+/+", "a/+/c/#", "/", "$share/g/a/#"] {
            assert!(TopicFilter::new(good, 1024).is_ok(), "{good}");
        }
        assert_eq!(
            validate_name("a/+", 100),
            Err(TopicError::WildcardInName("a/+".into()))
        );
        assert_eq!(validate_name("", 100), Err(TopicError::Empty));
        assert_eq!(validate_name("a\0b", 100), Err(TopicError::Nul));
        assert_eq!(
            validate_name("abcd", 3),
            Err(TopicError::TooLong { len: 4, max: 3 })
        );
        assert_eq!(validate_name("a/ b/ü", 100), Ok(()));
    }

    /// A deliberately naive matcher: expand the filter into a regular
    /// language over levels and test membership by recursion.
    fn reference(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.first(), topic.first()) {
            (Some(&"#"), _) => true,
            (Some(&"+"), Some(_)) => reference(&filter[1..], &topic[1..]),
            (Some(f), Some(t)) => f == t && reference(&filter[1..], &topic[1..]),
            (None, None) => true,
            _ => false,
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof!["[ab]{0,2}", Just("$x".to_string())]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_string())]
    }

    proptest! {
        #[test]
        fn matches_agrees_with_reference(
            topic in proptest::collection::vec(level(), 1..5),
            filter in proptest::collection::vec(filter_level(), 1..5),
            hash in any::<bool>(),
        ) {
            let mut filter = filter;
            if hash {
                filter.push("#".into());
            }
            let topic_s = topic.join("/");
            let filter_s = filter.join("/");
            prop_assume!(TopicFilter::new(&filter_s, 1024).is_ok());
            prop_assume!(validate_name(&topic_s, 1024).is_ok());
            let f: Vec<&str> = filter.iter().map(String::as_str).collect();
            let t: Vec<&str> = topic.iter().map(String::as_str).collect();
            let dollar_excluded = topic_s.starts_with('$') && (f[0] == "+" || f[0] == "#");
            prop_assert_eq!(matches(&filter_s, &topic_s), !dollar_excluded && reference(&f, &t));
        }

        #[test]
        fn a_topic_matches_itself_and_hash(topic in proptest::collection::vec("[a-z]{0,3}", 1..6)) {
            let topic = topic.join("/");
            prop_assume!(!topic.is_empty());
            prop_assert!(matches(&topic, &topic));
            prop_assert!(matches("#", &topic));
        }
    }
}
