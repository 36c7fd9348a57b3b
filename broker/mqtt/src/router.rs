//! The subscription tree: which sessions get a message published to a
//! topic.
//!
//! Filters are stored level by level in a trie, so a publish walks only the
//! branches its topic can match (`+` and `#` children included), not every
//! subscription. Shared subscriptions (`$share/group/filter`) are kept per
//! group at the filter's node and delivered to one member in turn.
//! A client with several matching subscriptions gets one copy, at the
//! highest QoS granted, with every matching subscription identifier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use smallvec::SmallVec;

use tidewire_core::Message;

use crate::session::{Delivery, Session, SubOptions};

/// How many clients' deliveries [`Router::route`] keeps inline.
pub const INLINE_ROUTES: usize = 4;

/// The deliveries of one message, one per client.
pub type Routes = SmallVec<[(Arc<Session>, Delivery); INLINE_ROUTES]>;

/// Subscriptions matched by one topic.
type Matches<'a> = SmallVec<[&'a Subscriber; 8]>;

/// A subscription filter split into its shared-subscription group (if
/// any) and the topic filter proper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFilter<'a> {
    /// `Some(group)` for `$share/group/filter`.
    pub group: Option<&'a str>,
    /// The topic filter.
    pub filter: &'a str,
}

/// Splits `$share/group/filter`; returns `None` for a malformed share.
pub fn parse_filter(full: &str) -> Option<ParsedFilter<'_>> {
    match full.strip_prefix("$share/") {
        None => Some(ParsedFilter {
            group: None,
            filter: full,
        }),
        Some(rest) => {
            let (group, filter) = rest.split_once('/')?;
            let bad_group = group.is_empty() || group.contains(['+', '#']);
            (!bad_group && !filter.is_empty()).then_some(ParsedFilter {
                group: Some(group),
                filter,
            })
        }
    }
}

#[derive(Debug, Clone)]
struct Subscriber {
    session: Arc<Session>,
    options: SubOptions,
}

#[derive(Debug, Default)]
struct SharedGroup {
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// Plain subscriptions whose filter ends at this node, by client id.
    subscribers: HashMap<String, Subscriber>,
    /// Shared subscriptions ending here, by group name.
    groups: HashMap<String, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// The subscription tree.
#[derive(Debug, Default)]
pub struct Router {
    root: RwLock<Node>,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `full` (a valid filter,
    /// possibly `$share/...`). Returns true if it already existed.
    pub fn subscribe(&self, full: &str, session: &Arc<Session>, options: SubOptions) -> bool {
        let Some(parsed) = parse_filter(full) else {
            return false;
        };
        let mut root = self.root.write().unwrap_or_else(|p| p.into_inner());
        let mut node = &mut *root;
        for level in parsed.filter.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
        }
        let subscriber = Subscriber {
            session: Arc::clone(session),
            options,
        };
        match parsed.group {
            None => node
                .subscribers
                .insert(session.client_id.clone(), subscriber)
                .is_some(),
            Some(group) => {
                let members = &mut node.groups.entry(group.to_owned()).or_default().members;
                let existing = members
                    .iter()
                    .position(|m| m.session.client_id == session.client_id);
                match existing {
                    Some(i) => {
                        members[i] = subscriber;
                        true
                    }
                    None => {
                        members.push(subscriber);
                        false
                    }
                }
            }
        }
    }

    /// Removes `client_id`'s subscription to `full`. Returns true if it
    /// existed.
    pub fn unsubscribe(&self, full: &str, client_id: &str) -> bool {
        let Some(parsed) = parse_filter(full) else {
            return false;
        };
        let levels: Vec<&str> = parsed.filter.split('/').collect();
        let mut root = self.root.write().unwrap_or_else(|p| p.into_inner());
        remove(&mut root, &levels, parsed.group, client_id)
    }

    /// The deliveries for a message published to its topic, one per
    /// client. Inline (no allocation) for up to [`INLINE_ROUTES`] clients,
    /// the common case.
    pub fn route(&self, message: &Arc<Message>) -> Routes {
        let root = self.root.read().unwrap_or_else(|p| p.into_inner());
        let levels: SmallVec<[&str; 8]> = message.topic.split('/').collect();
        let mut matched = Matches::new();
        let mut shared = SmallVec::<[&SharedGroup; 2]>::new();
        collect(
            &root,
            &levels,
            0,
            message.topic.starts_with('$'),
            &mut matched,
            &mut shared,
        );

        let local =
            |sub: &Subscriber| sub.options.no_local && sub.session.client_id == message.client_id;
        matched.retain(|s| !local(s));
        for group in shared {
            let eligible: SmallVec<[&Subscriber; 8]> =
                group.members.iter().filter(|m| !local(m)).collect();
            if !eligible.is_empty() {
                let turn = group.next.fetch_add(1, Ordering::Relaxed);
                matched.push(eligible[turn % eligible.len()]);
            }
        }
        // One delivery per client: its subscriptions sit side by side once
        // sorted by session.
        matched.sort_unstable_by_key(|sub| Arc::as_ptr(&sub.session));
        let expires_at = Delivery::expiry(message.properties.message_expiry_secs);
        let mut routes = Routes::new();
        for sub in matched {
            let same_client = routes
                .last()
                .is_some_and(|(session, _)| Arc::ptr_eq(session, &sub.session));
            if !same_client {
                let delivery = Delivery {
                    message: Arc::clone(message),
                    qos: 0,
                    retain: false,
                    subscription_ids: Vec::new(),
                    expires_at,
                };
                routes.push((Arc::clone(&sub.session), delivery));
            }
            let (_, delivery) = routes.last_mut().unwrap_or_else(|| unreachable!());
            delivery.qos = delivery.qos.max(sub.options.qos.min(message.qos));
            delivery.retain |= sub.options.retain_as_published && message.retain;
            delivery.subscription_ids.extend(sub.options.id);
        }
        for (_, delivery) in &mut routes {
            delivery.subscription_ids.sort_unstable();
        }
        routes
    }

    /// Number of subscriptions, shared members included.
    pub fn len(&self) -> usize {
        fn count(node: &Node) -> usize {
            node.subscribers.len()
                + node.groups.values().map(|g| g.members.len()).sum::<usize>()
                + node.children.values().map(count).sum::<usize>()
        }
        count(&self.root.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn collect<'a>(
    node: &'a Node,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    matched: &mut Matches<'a>,
    shared: &mut SmallVec<[&'a SharedGroup; 2]>,
) {
    let wildcards_allowed = !(depth == 0 && dollar);
    if wildcards_allowed && let Some(hash) = node.children.get("#") {
        matched.extend(hash.subscribers.values());
        shared.extend(hash.groups.values());
    }
    let Some((level, rest)) = levels.split_first() else {
        matched.extend(node.subscribers.values());
        shared.extend(node.groups.values());
        return;
    };
    if let Some(child) = node.children.get(*level) {
        collect(child, rest, depth + 1, dollar, matched, shared);
    }
    if wildcards_allowed && let Some(plus) = node.children.get("+") {
        collect(plus, rest, depth + 1, dollar, matched, shared);
    }
}

fn remove(node: &mut Node, levels: &[&str], group: Option<&str>, client_id: &str) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return match group {
            None => node.subscribers.remove(client_id).is_some(),
            Some(group) => {
                let Some(g) = node.groups.get_mut(group) else {
                    return false;
                };
                let before = g.members.len();
                g.members.retain(|m| m.session.client_id != client_id);
                let removed = g.members.len() != before;
                if g.members.is_empty() {
                    node.groups.remove(group);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*level) else {
        return false;
    };
    let removed = remove(child, rest, group, client_id);
    if child.is_empty() {
        node.children.remove(*level);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MqttMetrics;
    use crate::session::SessionCommon;

    fn session(id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            id.into(),
            0,
            SessionCommon::new(100, &MqttMetrics::default()),
        ))
    }

    fn options(qos: u8) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id: None,
        }
    }

    fn publish(topic: &str, qos: u8, from: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            client_id: from.into(),
            qos,
            ..Message::default()
        })
    }

    fn routed(router: &Router, topic: &str, qos: u8, from: &str) -> Vec<(String, u8, Vec<usize>)> {
        let mut out: Vec<_> = router
            .route(&publish(topic, qos, from))
            .into_iter()
            .map(|(s, d)| (s.client_id.clone(), d.qos, d.subscription_ids))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
        let router = Router::default();
        let a = session("a");
        router.subscribe(
            "x/+",
            &a,
            SubOptions {
                id: Some(1),
                ..options(0)
            },
        );
        router.subscribe(
            "x/#",
            &a,
            SubOptions {
                id: Some(2),
                ..options(1)
            },
        );
        router.subscribe("x/y", &session("b"), options(2));
        assert_eq!(
            routed(&router, "x/y", 2, "p"),
            vec![("a".into(), 1, vec![1, 2]), ("b".into(), 2, vec![])]
        );
        // Delivered QoS is min(publish, subscription).
        assert_eq!(
            routed(&router, "x/y", 0, "p"),
            vec![("a".into(), 0, vec![1, 2]), ("b".into(), 0, vec![])]
        );
        assert_eq!(routed(&router, "x", 1, "p"), vec![("a".into(), 1, vec![2])]);
        assert!(router.unsubscribe("x/#", "a"));
        assert!(!router.unsubscribe("x/#", "a"));
        assert_eq!(router.len(), 2);
    }

    #[test]
    fn dollar_topics_skip_root_wildcards_and_no_local_applies() {
        let router = Router::default();
        router.subscribe("#", &session("all"), options(0));
        router.subscribe("+/status", &session("plus"), options(0));
        router.subscribe("$SYS/#", &session("sys"), options(0));
        router.subscribe(
            "own/#",
            &session("me"),
            SubOptions {
                no_local: true,
                ..options(1)
            },
        );
        assert_eq!(
            routed(&router, "$SYS/status", 0, "p"),
            vec![("sys".into(), 0, vec![])]
        );
        assert_eq!(
            routed(&router, "own/x", 1, "me"),
            vec![("all".into(), 0, vec![])]
        );
        assert_eq!(routed(&router, "own/status", 1, "other").len(), 3);
    }

    #[test]
    fn shared_subscriptions_take_turns() {
        let router = Router::default();
        for id in ["w1", "w2", "w3"] {
            router.subscribe("$share/workers/jobs/+", &session(id), options(1));
        }
        router.subscribe("jobs/#", &session("audit"), options(0));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..9 {
            for (client, _, _) in routed(&router, "jobs/1", 1, "p") {
                *counts.entry(client).or_default() += 1;
            }
        }
        assert_eq!(counts["audit"], 9);
        for id in ["w1", "w2", "w3"] {
            assert_eq!(counts[id], 3, "{id}");
        }
        assert!(router.unsubscribe("$share/workers/jobs/+", "w2"));
        assert_eq!(router.len(), 3);
    }

    #[test]
    fn share_syntax() {
        assert_eq!(
            parse_filter("a/b"),
            Some(ParsedFilter {
                group: None,
                filter: "a/b"
            })
        );
        assert_eq!(
            parse_filter("$share/g/a/#"),
            Some(ParsedFilter {
                group: Some("g"),
                filter: "a/#"
            })
        );
        assert_eq!(parse_filter("$share/g"), None);
        assert_eq!(parse_filter("$share//a"), None);
        assert_eq!(parse_filter("$share/g+/a"), None);
    }
}
