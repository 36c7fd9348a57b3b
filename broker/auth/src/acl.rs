//! Topic ACLs: [`Rules`] as written (topic filters that may hold `%u`, the
//! username, and `%c`, the client id), and the [`Acl`] they resolve to for
//! one client, which the publish and subscribe paths check. A `deny` rule
//! wins over `publish` and `subscribe`.
//!
//! In an ACL, `#` means everything: unlike in a subscription, a wildcard at
//! the first level covers `$` topics too. A subscription is allowed when an
//! allow rule covers every topic it could match and no deny rule could
//! match any of them.

use tidewire_core::ConfigError;
use tidewire_core::topic::TopicFilter;

/// The longest rule accepted.
const MAX_RULE_BYTES: usize = 65535;

/// One rule as written, e.g. `devices/%c/up/#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Checks `text` is a topic filter once its placeholders are filled.
    pub fn new(text: &str, key: &str) -> Result<Pattern, ConfigError> {
        let sample = text.replace("%u", "u").replace("%c", "c");
        TopicFilter::new(&sample, MAX_RULE_BYTES)
            .map_err(|e| ConfigError::new(key, e.to_string()))?;
        Ok(Pattern {
            text: text.to_owned(),
        })
    }

    /// The filter for one client, or `None` when a placeholder's value
    /// cannot stand in a topic level (empty, or holding `/`, `+` or `#`):
    /// such a value could widen the rule.
    fn fill(&self, username: Option<&str>, client_id: &str) -> Option<String> {
        let mut text = self.text.clone();
        for (placeholder, value) in [("%u", username), ("%c", Some(client_id))] {
            if text.contains(placeholder) {
                let value = value.filter(|v| safe_level(v))?;
                text = text.replace(placeholder, value);
            }
        }
        Some(text)
    }

    /// [`Pattern::fill`] for a deny rule: a value that cannot be filled in
    /// denies everything under the levels before it, so a strange name
    /// never escapes a deny rule.
    fn fill_deny(&self, username: Option<&str>, client_id: &str) -> String {
        if let Some(text) = self.fill(username, client_id) {
            return text;
        }
        let kept: Vec<&str> = self
            .text
            .split('/')
            .take_while(|level| !level.contains("%u") && !level.contains("%c"))
            .collect();
        kept.into_iter().chain(["#"]).collect::<Vec<_>>().join("/")
    }

    /// The rule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn safe_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
}

/// Topic rules as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Topics one may publish to.
    pub publish: Vec<Pattern>,
    /// Filters one may subscribe within.
    pub subscribe: Vec<Pattern>,
    /// Topics one may neither publish to nor receive.
    pub deny: Vec<Pattern>,
}

impl Rules {
    /// Parses rule lists; `key` names their table in errors.
    pub fn parse(
        publish: &[String],
        subscribe: &[String],
        deny: &[String],
        key: &str,
    ) -> Result<Rules, ConfigError> {
        let list = |rules: &[String], what: &str| {
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| Pattern::new(r, &format!("{key}.{what}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Rules {
            publish: list(publish, "publish")?,
            subscribe: list(subscribe, "subscribe")?,
            deny: list(deny, "deny")?,
        })
    }

    /// The rules of one client, with its username and client id filled in.
    pub fn resolve(&self, username: Option<&str>, client_id: &str) -> Acl {
        let filters = |patterns: &[Pattern]| {
            patterns
                .iter()
                .filter_map(|p| p.fill(username, client_id))
                .collect()
        };
        Acl {
            publish: filters(&self.publish),
            subscribe: filters(&self.subscribe),
            deny: self
                .deny
                .iter()
                .map(|p| p.fill_deny(username, client_id))
                .collect(),
        }
    }
}

/// One client's topic ACL, placeholders filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    publish: Vec<String>,
    subscribe: Vec<String>,
    deny: Vec<String>,
}

impl Acl {
    /// May the client publish to `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        // A topic name is a filter that matches only itself.
        self.publish.iter().any(|f| covers(f, topic)) && !self.deny.iter().any(|d| covers(d, topic))
    }

    /// May the client subscribe to `filter` (without any `$share/` prefix)?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| covers(f, filter))
            && !self.deny.iter().any(|d| overlaps(d, filter))
    }
}

/// True when every topic matched by `requested` is matched by `allowed`.
fn covers(allowed: &str, requested: &str) -> bool {
    let mut asked = requested.split('/');
    for level in allowed.split('/') {
        match (level, asked.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some("#")) => return false,
            ("+", Some(_)) => {}
            (exact, Some(other)) => {
                if exact != other {
                    return false;
                }
            }
        }
    }
    asked.next().is_none()
}

/// True when some topic is matched by both filters.
fn overlaps(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                if x != "+" && y != "+" && x != y {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(publish: &[&str], subscribe: &[&str], deny: &[&str]) -> Rules {
        let own = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Rules::parse(&own(publish), &own(subscribe), &own(deny), "users[0]").expect("valid")
    }

    #[test]
    fn subscribe_acl_requires_coverage() {
        let acl = rules(&["sensors/+/data"], &["cmd/dev1/#", "status/+"], &[]).resolve(None, "c");
        assert!(acl.may_publish("sensors/a/data"));
        assert!(!acl.may_publish("sensors/a/other"));
        assert!(acl.may_subscribe("cmd/dev1/#"));
        assert!(acl.may_subscribe("cmd/dev1/reboot"));
        assert!(acl.may_subscribe("cmd/dev1/+/x"));
        assert!(acl.may_subscribe("status/a"));
        assert!(acl.may_subscribe("status/+"));
        assert!(!acl.may_subscribe("status/#"));
        assert!(!acl.may_subscribe("cmd/#"));
        assert!(!acl.may_subscribe("#"));
        assert!(!acl.may_subscribe("cmd/+/reboot"));
    }

    #[test]
    fn a_wildcard_acl_covers_dollar_topics() {
        let all = rules(&["#"], &["#"], &[]).resolve(None, "c");
        assert!(all.may_publish("$app/status"));
        assert!(all.may_subscribe("$app/#"));
        let some = rules(&["+/status"], &["+/status"], &[]).resolve(None, "c");
        assert!(some.may_publish("$app/status"));
        assert!(some.may_subscribe("$app/status"));
        assert!(!some.may_publish("$app/other"));
    }

    #[test]
    fn placeholders_fill_in_the_client_and_strange_names_match_nothing() {
        let written = rules(
            &["devices/%c/up/#", "users/%u/#"],
            &["devices/%c/down/#"],
            &[],
        );
        let acl = written.resolve(Some("alice"), "dev-7");
        assert!(acl.may_publish("devices/dev-7/up/temp"));
        assert!(!acl.may_publish("devices/dev-8/up/temp"));
        assert!(acl.may_publish("users/alice/x"));
        assert!(acl.may_subscribe("devices/dev-7/down/+"));
        assert!(!acl.may_subscribe("devices/+/down/#"));

        for client in ["a/b", "+", "#", ""] {
            let acl = written.resolve(None, client);
            assert!(!acl.may_publish("devices/a/b/up/x"), "{client:?}");
            assert!(!acl.may_publish("devices/x/up/y"), "{client:?}");
            assert!(!acl.may_publish("users/x/y"), "no username");
        }
    }

    #[test]
    fn deny_wins_over_publish_and_subscribe() {
        let acl = rules(
            &["devices/%c/#"],
            &["devices/%c/#", "test/#"],
            &["devices/%c/secret/#", "test/nosubscribe"],
        )
        .resolve(None, "d1");
        assert!(acl.may_publish("devices/d1/temp"));
        assert!(!acl.may_publish("devices/d1/secret/key"));
        assert!(acl.may_subscribe("devices/d1/temp/+"));
        assert!(!acl.may_subscribe("devices/d1/secret/key"));
        assert!(
            !acl.may_subscribe("devices/d1/#"),
            "could receive a denied topic"
        );
        assert!(!acl.may_subscribe("devices/d1/+/key"));
        assert!(!acl.may_subscribe("test/nosubscribe"));
        assert!(!acl.may_subscribe("test/+"));
        assert!(acl.may_subscribe("test/other"));

        // A client id that cannot fill a deny rule is denied the whole tree.
        let strange = rules(&["#"], &["#"], &["devices/%c/secret/#"]).resolve(None, "x/y");
        assert!(!strange.may_publish("devices/anything"));
        assert!(strange.may_publish("other/topic"));
    }

    #[test]
    fn bad_rules_name_their_key() {
        let err = Rules::parse(&["a/#/b".into()], &[], &[], "users[2]").expect_err("bad");
        assert_eq!(err.key, "users[2].publish[0]");
        let err = Rules::parse(&[], &[], &["x".into(), "%c/#/x".into()], "auth.anonymous")
            .expect_err("bad");
        assert_eq!(err.key, "auth.anonymous.deny[1]");
    }

    #[test]
    fn filters_overlap_when_one_topic_matches_both() {
        for (a, b, expected) in [
            ("a/#", "a/b/c", true),
            ("a/+/c", "a/b/+", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("#", "x", true),
            ("a/+", "a", false),
            ("a/b/#", "a/+", true),
        ] {
            assert_eq!(overlaps(a, b), expected, "{a} {b}");
            assert_eq!(overlaps(b, a), expected, "{b} {a}");
        }
    }
}
