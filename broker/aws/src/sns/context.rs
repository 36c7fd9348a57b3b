//! What every SNS action needs about its request: the topics, who calls
//! (and what they may do), whether it came through a link of a
//! notification (an unsigned `GET`), and how topics and subscriptions are
//! named on the wire — ARNs `arn:aws:sns:REGION:ACCOUNT:TOPIC[:ID]` in the
//! region the request was signed for, and the broker's base URL
//! `http://HOST` for the links SNS documents carry.

use tidewire_topics::{Naming, Topics};

use super::errors::{Kind, invalid, no_such_subscription, no_such_topic};
use crate::{AwsError, Caller, DEFAULT_REGION};

/// One SNS request's surroundings.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Every topic.
    pub topics: &'a Topics,
    /// Who asks.
    pub caller: &'a Caller,
    /// ARNs in the request's region and account, and the broker's base
    /// URL as the client reached it.
    pub naming: Naming,
    /// True when the request is a `SubscribeURL` or `UnsubscribeURL` link
    /// followed with `GET`: its token (or subscription id) is its
    /// credential.
    pub link: bool,
}

impl<'a> Context<'a> {
    /// The context of a request from `caller` in account `account`, sent
    /// to `host` (its `Host` header).
    pub fn new(
        topics: &'a Topics,
        caller: &'a Caller,
        account: &str,
        host: &str,
        link: bool,
    ) -> Context<'a> {
        Context {
            topics,
            caller,
            naming: Naming {
                account: account.to_owned(),
                region: caller
                    .region
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
                endpoint: format!("http://{host}"),
            },
            link,
        }
    }

    /// The account id.
    pub fn account(&self) -> &str {
        &self.naming.account
    }

    /// A topic's ARN.
    pub fn topic_arn(&self, topic: &str) -> String {
        self.naming.topic_arn(topic)
    }

    /// A subscription's ARN.
    pub fn subscription_arn(&self, topic: &str, subscription: &str) -> String {
        self.naming.subscription_arn(topic, subscription)
    }

    /// The topic a topic ARN (parameter `param`) names.
    pub fn topic_of<'u>(&self, arn: &'u str, param: &str) -> Result<&'u str, AwsError> {
        topic_of(arn, self.account(), param)
    }

    /// The topic and subscription a subscription ARN names.
    pub fn subscription_of<'u>(&self, arn: &'u str) -> Result<(&'u str, &'u str), AwsError> {
        subscription_of(arn, self.account())
    }

    /// Refuses unless the caller may administer (`action` changes topics
    /// or subscriptions).
    pub fn must_be_admin(&self, action: &str) -> Result<(), AwsError> {
        if self.caller.principal.is_admin() {
            return Ok(());
        }
        Err(Kind::AuthorizationError.error(format!(
            "{} is not authorized to perform {action}: it needs the `admin` permission",
            self.caller.who()
        )))
    }

    /// Refuses unless the caller may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> Result<(), AwsError> {
        if self.caller.principal.may_publish_topic(topic) {
            return Ok(());
        }
        Err(Kind::AuthorizationError.error(format!(
            "{} is not authorized to publish to the topic {topic:?}: it is not in its `topics` permission",
            self.caller.who()
        )))
    }
}

/// The topic a topic ARN (parameter `param`) names. Any region is
/// accepted; an ARN of another account than `account` names no topic here.
fn topic_of<'u>(arn: &'u str, account: &str, param: &str) -> Result<&'u str, AwsError> {
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "sns", _, owner, topic] if !topic.is_empty() => {
            if *owner == account {
                Ok(topic)
            } else {
                Err(no_such_topic())
            }
        }
        _ => Err(invalid(
            param,
            format!("{arn:?} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC)"),
        )),
    }
}

/// The topic and subscription a subscription ARN names.
fn subscription_of<'u>(arn: &'u str, account: &str) -> Result<(&'u str, &'u str), AwsError> {
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "sns", _, owner, topic, name] if !topic.is_empty() && !name.is_empty() => {
            if *owner == account {
                Ok((topic, name))
            } else {
                Err(no_such_subscription())
            }
        }
        _ => Err(invalid(
            "SubscriptionArn",
            format!(
                "{arn:?} is not a subscription ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC:ID); a pending subscription has none until it is confirmed"
            ),
        )),
    }
}

/// True for a subscription name `Subscribe` makes: a random id in the
/// UUID shape ([`tidewire_topics::message::new_id`]), which nobody can
/// guess, so its `UnsubscribeURL` is a credential of its own.
pub fn is_made_by_sns(name: &str) -> bool {
    let groups: Vec<&str> = name.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_made_names_are_uuid_shaped() {
        assert!(is_made_by_sns(&tidewire_topics::message::new_id()));
        assert!(!is_made_by_sns("ops"));
        assert!(!is_made_by_sns("0000000-0000-4000-8000-000000000000"));
        assert!(!is_made_by_sns("0000000g-0000-4000-8000-000000000000"));
    }

    #[test]
    fn arns_name_topics_and_subscriptions_of_this_account() {
        let account = "123456789012";
        assert_eq!(
            topic_of(
                "arn:aws:sns:us-east-1:123456789012:alerts",
                account,
                "TopicArn"
            )
            .ok(),
            Some("alerts")
        );
        let other = topic_of(
            "arn:aws:sns:us-east-1:999999999999:alerts",
            account,
            "TopicArn",
        )
        .expect_err("other account");
        assert_eq!(other.code, "NotFound");
        for bad in [
            "alerts",
            "arn:aws:sqs:us-east-1:123456789012:alerts",
            "arn:aws:sns:r:123456789012:",
        ] {
            let error = topic_of(bad, account, "TopicArn").expect_err(bad);
            assert_eq!(error.code, "InvalidParameter");
            assert!(error.message.contains("TopicArn"), "{}", error.message);
        }
        assert_eq!(
            subscription_of("arn:aws:sns:eu-west-1:123456789012:alerts:abc", account).ok(),
            Some(("alerts", "abc"))
        );
        assert!(subscription_of("PendingConfirmation", account).is_err());
        assert!(subscription_of("arn:aws:sns:eu-west-1:123456789012:alerts", account).is_err());
    }
}
