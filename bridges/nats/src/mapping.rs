//! MQTT topics <-> NATS subjects, following nats-server's own MQTT rules:
//!
//! | MQTT                 | NATS                 |
//! |----------------------|----------------------|
//! | `/` between levels   | `.`                  |
//! | an empty level       | the token `/` (`/a` -> `/.a`, `a//b` -> `a./.b`, `a/` -> `a./`) |
//! | `.` inside a level   | `//` (`v1.0/x` -> `v1//0.x`) |
//! | `+`, `#` (filters)   | `*`, `>`             |
//!
//! Whitespace has no encoding, and a level that is exactly `*` or `>` would
//! turn into a wildcard: such topics are refused (and counted), like
//! nats-server refuses them. In the other direction a token holding a lone
//! `/` (not `//`, not the whole token) has no MQTT form and is refused.
//!
//! A [`Route`] maps names matching a source pattern to a target template:
//! each wildcard of the source captures levels (`+`/`*` one, `#`/`>` the
//! rest), converted level by level, and fills the wildcard at the same
//! position of the target. `from = "sensors/#"`, `subject = "edge.n1.>"`
//! sends `sensors/a.b/t` to `edge.n1.a//b.t`; when `#` captures nothing
//! (topic `sensors`) the target's `.>` is left off (`edge.n1`).

use std::fmt;

/// Why a name could not be mapped (the message's own name is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The name contains whitespace, which NATS subjects cannot hold.
    #[error("{0:?} contains whitespace, which NATS subjects cannot hold")]
    Whitespace(String),
    /// A topic level that is exactly `*` or `>`.
    #[error("topic {0:?} has a level that would become a NATS wildcard")]
    WildcardLevel(String),
    /// A subject token with a lone `/`.
    #[error("subject {0:?} has a token with a lone '/', which has no MQTT form")]
    LoneSlash(String),
    /// A subject with an empty token.
    #[error("subject {0:?} has an empty token")]
    EmptyToken(String),
    /// The name does not match the route's source pattern.
    #[error("{0:?} does not match the route")]
    NoMatch(String),
}

/// Converts an MQTT topic name to a NATS subject.
pub fn topic_to_subject(topic: &str) -> Result<String, MapError> {
    let tokens = topic
        .split('/')
        .map(|level| level_to_token(level, topic))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tokens.join("."))
}

/// Converts a NATS subject to an MQTT topic name.
pub fn subject_to_topic(subject: &str) -> Result<String, MapError> {
    let levels = subject
        .split('.')
        .map(|token| token_to_level(token, subject))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(levels.join("/"))
}

fn level_to_token(level: &str, topic: &str) -> Result<String, MapError> {
    if level.chars().any(char::is_whitespace) {
        return Err(MapError::Whitespace(topic.to_owned()));
    }
    match level {
        "" => Ok("/".to_owned()),
        "*" | ">" => Err(MapError::WildcardLevel(topic.to_owned())),
        _ => Ok(level.replace('.', "//")),
    }
}

fn token_to_level(token: &str, subject: &str) -> Result<String, MapError> {
    if token.chars().any(char::is_whitespace) {
        return Err(MapError::Whitespace(subject.to_owned()));
    }
    match token {
        "" => Err(MapError::EmptyToken(subject.to_owned())),
        "/" => Ok(String::new()),
        _ => {
            let level = token.replace("//", ".");
            if level.contains('/') {
                return Err(MapError::LoneSlash(subject.to_owned()));
            }
            Ok(level)
        }
    }
}

/// Which side of a route a pattern is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// MQTT: `/`, `+`, `#`.
    Mqtt,
    /// NATS: `.`, `*`, `>`.
    Nats,
}

impl Side {
    fn separator(self) -> char {
        match self {
            Side::Mqtt => '/',
            Side::Nats => '.',
        }
    }

    fn one(self) -> &'static str {
        match self {
            Side::Mqtt => "+",
            Side::Nats => "*",
        }
    }

    fn rest(self) -> &'static str {
        match self {
            Side::Mqtt => "#",
            Side::Nats => ">",
        }
    }
}

/// One part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    One,
    Rest,
}

/// A parsed MQTT filter or NATS subject pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    side: Side,
    text: String,
    parts: Vec<Part>,
}

impl Pattern {
    /// Parses `text` as a pattern of `side`: wildcards fill whole levels
    /// and the multi-level one comes last. Returns a message on error.
    pub fn parse(side: Side, text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("is empty".to_owned());
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!("{text:?} contains whitespace"));
        }
        let pieces: Vec<&str> = text.split(side.separator()).collect();
        let mut parts = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let part = if *piece == side.one() {
                Part::One
            } else if *piece == side.rest() {
                if i + 1 != pieces.len() {
                    return Err(format!("{text:?}: {} must be last", side.rest()));
                }
                Part::Rest
            } else if piece.contains(side.one()) || piece.contains(side.rest()) {
                return Err(format!("{text:?}: a wildcard must fill a whole level"));
            } else if side == Side::Nats && piece.is_empty() {
                return Err(format!("{text:?} has an empty token"));
            } else {
                Part::Literal((*piece).to_owned())
            };
            parts.push(part);
        }
        Ok(Pattern {
            side,
            text: text.to_owned(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn wildcards(&self) -> Vec<&Part> {
        self.parts
            .iter()
            .filter(|p| !matches!(p, Part::Literal(_)))
            .collect()
    }

    /// The captures of `name` (in native form), or `None` if it does not
    /// match.
    fn capture<'n>(&self, name: &'n str) -> Option<Vec<Vec<&'n str>>> {
        let mut levels = name.split(self.side.separator());
        let mut captures = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => {
                    if levels.next() != Some(l.as_str()) {
                        return None;
                    }
                }
                Part::One => captures.push(vec![levels.next()?]),
                Part::Rest => {
                    captures.push(levels.by_ref().collect());
                    return Some(captures);
                }
            }
        }
        levels.next().is_none().then_some(captures)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A mapping from names matching `source` to names built from `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    source: Pattern,
    target: Pattern,
}

impl Route {
    /// A route; both patterns must have the same wildcards in the same
    /// order (`+`/`*` with `*`/`+`, `#`/`>` with `>`/`#`).
    pub fn new(source: Pattern, target: Pattern) -> Result<Route, String> {
        if source.side == target.side {
            return Err("source and target are on the same side".to_owned());
        }
        if source.wildcards() != target.wildcards() {
            return Err(format!(
                "{:?} and {:?} must have the same wildcards in the same order",
                source.text, target.text
            ));
        }
        Ok(Route { source, target })
    }

    /// The source pattern.
    pub fn source(&self) -> &Pattern {
        &self.source
    }

    /// The target pattern.
    pub fn target(&self) -> &Pattern {
        &self.target
    }

    /// True when `name` matches the source pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.source.capture(name).is_some()
    }

    /// Maps `name` (a topic when the source is MQTT, a subject when it is
    /// NATS) to the target side.
    pub fn map(&self, name: &str) -> Result<String, MapError> {
        let captures = self
            .source
            .capture(name)
            .ok_or_else(|| MapError::NoMatch(name.to_owned()))?;
        let convert = |piece: &str| match self.source.side {
            Side::Mqtt => level_to_token(piece, name),
            Side::Nats => token_to_level(piece, name),
        };
        let mut out: Vec<String> = Vec::with_capacity(self.target.parts.len());
        let mut captures = captures.into_iter();
        for part in &self.target.parts {
            match part {
                Part::Literal(l) => out.push(l.clone()),
                Part::One | Part::Rest => {
                    for piece in captures.next().unwrap_or_default() {
                        out.push(convert(piece)?);
                    }
                }
            }
        }
        Ok(out.join(&self.target.side.separator().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(from: (Side, &str), to: (Side, &str)) -> Route {
        Route::new(
            Pattern::parse(from.0, from.1).expect("source"),
            Pattern::parse(to.0, to.1).expect("target"),
        )
        .expect("route")
    }

    #[test]
    fn follows_nats_server_rules() {
        let cases = [
            ("sensors/cold-1/temp", "sensors.cold-1.temp"),
            ("/sensors/temp", "/.sensors.temp"),
            ("sensors/temp/", "sensors.temp./"),
            ("sensors//temp", "sensors./.temp"),
            ("//sensors/temp", "/./.sensors.temp"),
            ("cold-1.temp", "cold-1//temp"),
            ("spBv1.0/plant1", "spBv1//0.plant1"),
            ("/", "/./"),
        ];
        for (topic, subject) in cases {
            assert_eq!(topic_to_subject(topic).as_deref(), Ok(subject), "{topic}");
            assert_eq!(subject_to_topic(subject).as_deref(), Ok(topic), "{subject}");
        }
        assert!(matches!(
            topic_to_subject("a b"),
            Err(MapError::Whitespace(_))
        ));
        assert!(matches!(
            topic_to_subject("a/*"),
            Err(MapError::WildcardLevel(_))
        ));
        assert!(matches!(
            subject_to_topic("a/b.c"),
            Err(MapError::LoneSlash(_))
        ));
        assert!(matches!(
            subject_to_topic("a..b"),
            Err(MapError::EmptyToken(_))
        ));
    }

    #[test]
    fn routes_capture_and_fill_wildcards() {
        let out = route((Side::Mqtt, "sensors/#"), (Side::Nats, "edge.n1.>"));
        assert_eq!(out.map("sensors/a.b/t").as_deref(), Ok("edge.n1.a//b.t"));
        assert_eq!(out.map("sensors").as_deref(), Ok("edge.n1"));
        assert!(matches!(out.map("other/x"), Err(MapError::NoMatch(_))));
        let plus = route((Side::Mqtt, "site/+/temp/#"), (Side::Nats, "t.*.x.>"));
        assert_eq!(plus.map("site/s1/temp/a/b").as_deref(), Ok("t.s1.x.a.b"));
        let fixed = route((Side::Mqtt, "a/b"), (Side::Nats, "c.d"));
        assert_eq!(fixed.map("a/b").as_deref(), Ok("c.d"));
        let inbound = route((Side::Nats, "cmd.n1.>"), (Side::Mqtt, "cmd/#"));
        assert_eq!(
            inbound.map("cmd.n1.door./.open").as_deref(),
            Ok("cmd/door//open")
        );
        assert!(!inbound.matches("cmd.n2.x"));
    }

    #[test]
    fn bad_patterns_and_routes_are_refused() {
        assert!(Pattern::parse(Side::Mqtt, "a/#/b").is_err());
        assert!(Pattern::parse(Side::Mqtt, "a+/b").is_err());
        assert!(Pattern::parse(Side::Nats, "a..b").is_err());
        assert!(Pattern::parse(Side::Nats, "a.>.b").is_err());
        assert!(Pattern::parse(Side::Nats, "a b").is_err());
        assert!(Pattern::parse(Side::Nats, "").is_err());
        let mqtt = Pattern::parse(Side::Mqtt, "a/#").expect("mqtt");
        let one = Pattern::parse(Side::Nats, "a.*").expect("nats");
        assert!(Route::new(mqtt.clone(), one).is_err());
        assert!(Route::new(mqtt.clone(), mqtt).is_err());
    }

    /// Topic levels: letters, digits, `.`, `-`, non-ASCII, and empty.
    fn level() -> impl Strategy<Value = String> {
        "[a-z0-9.é_-]{0,6}".prop_filter("not a wildcard level", |l| l != "*" && l != ">")
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..6).prop_map(|levels| levels.join("/"))
    }

    /// Subject tokens built from NATS-safe pieces, `//` and the `/` token.
    fn subject() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            "[a-z0-9_-]{1,5}",
            Just("/".to_owned()),
            "[a-z]{0,3}//[a-z]{0,3}",
        ];
        proptest::collection::vec(token, 1..6).prop_map(|tokens| tokens.join("."))
    }

    proptest! {
        #[test]
        fn topics_round_trip(topic in topic()) {
            let subject = topic_to_subject(&topic).expect("maps");
            prop_assert!(!subject.split('.').any(|t| t.is_empty()), "{subject}");
            prop_assert_eq!(subject_to_topic(&subject).expect("maps back"), topic);
        }

        #[test]
        fn subjects_round_trip(subject in subject()) {
            let topic = subject_to_topic(&subject).expect("maps");
            prop_assert_eq!(topic_to_subject(&topic).expect("maps back"), subject);
        }

        #[test]
        fn routes_round_trip(suffix in topic()) {
            let out = route((Side::Mqtt, "sensors/#"), (Side::Nats, "edge.n1.>"));
            let back = route((Side::Nats, "edge.n1.>"), (Side::Mqtt, "sensors/#"));
            let topic = format!("sensors/{suffix}");
            let subject = out.map(&topic).expect("out");
            prop_assert_eq!(back.map(&subject).expect("back"), topic);
        }
    }
}
