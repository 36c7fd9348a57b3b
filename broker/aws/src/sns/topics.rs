//! The topic actions: `CreateTopic` and `DeleteTopic` (which need the
//! `admin` permission), `ListTopics` and `GetTopicAttributes`.
//!
//! `CreateTopic` takes SNS's rules for names and is idempotent; its
//! `Attributes` and `Tags` are accepted and not kept (a topic here has no
//! display name, access policy or tags), except that a FIFO topic
//! (`.fifo`, `FifoTopic=true`) is refused: tidewire's topics are standard
//! ones. Deleting a topic that is not there succeeds, as in SNS.

use tidewire_topics::TopicConfig;

use super::attributes::topic_delivery_policy;
use super::context::Context;
use super::errors::{from_topic, invalid};
use super::form::Form;
use super::paging::page;
use super::xml::Answer;
use crate::AwsError;

/// Longest topic name, as in SNS.
const MAX_NAME_LEN: usize = 256;

/// Refuses a name SNS would refuse, and FIFO topics.
fn check_name(name: &str, fifo_attribute: bool) -> Result<(), AwsError> {
    if name.ends_with(".fifo") || fifo_attribute {
        return Err(invalid(
            "Name",
            "FIFO topics are not supported: tidewire's topics are standard topics (no .fifo name, no FifoTopic attribute)",
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        return Ok(());
    }
    Err(invalid(
        "Name",
        format!("a topic name is 1 to {MAX_NAME_LEN} letters, digits, '-' and '_', not {name:?}"),
    ))
}

/// `CreateTopic`: the topic's ARN, made or existing.
pub async fn create(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    ctx.must_be_admin("CreateTopic")?;
    let name = form.required("Name")?;
    let attributes = form.entries("Attributes")?;
    let fifo = attributes
        .get("FifoTopic")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    check_name(name, fifo)?;
    let topic = match ctx.topics.get(name) {
        Ok(existing) => existing,
        Err(_) => {
            let (topic, _) = ctx
                .topics
                .create(TopicConfig::named(name))
                .await
                .map_err(from_topic)?;
            topic
        }
    };
    let mut answer = Answer::new("CreateTopic");
    answer.field("TopicArn", &ctx.topic_arn(&topic.name()));
    Ok(answer)
}

/// `DeleteTopic`, with its subscriptions and messages.
pub async fn delete(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    ctx.must_be_admin("DeleteTopic")?;
    let name = ctx.topic_of(form.required("TopicArn")?, "TopicArn")?;
    if ctx.topics.get(name).is_ok() {
        ctx.topics.delete(name).await.map_err(from_topic)?;
    }
    Ok(Answer::new("DeleteTopic"))
}

/// `ListTopics`: every topic, 100 a page.
pub fn list(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let names: Vec<String> = ctx.topics.list().iter().map(|t| t.name()).collect();
    let after = form.get("NextToken").map(str::to_owned);
    let (names, next) = page(names, after.as_ref());
    let mut answer = Answer::new("ListTopics");
    answer.open("Topics");
    for name in &names {
        answer
            .open("member")
            .field("TopicArn", &ctx.topic_arn(name))
            .close("member");
    }
    answer.close("Topics");
    if let Some(next) = next {
        answer.field("NextToken", &next);
    }
    Ok(answer)
}

/// `GetTopicAttributes`.
pub fn get_attributes(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let name = ctx.topic_of(form.required("TopicArn")?, "TopicArn")?;
    let topic = ctx.topics.get(name).map_err(from_topic)?;
    let subscriptions = topic.subscriptions();
    let pending = subscriptions
        .iter()
        .filter(|s| s.pending_token().is_some())
        .count();
    let confirmed = subscriptions.len() - pending;
    let (arn, confirmed, pending) = (
        ctx.topic_arn(&topic.name()),
        confirmed.to_string(),
        pending.to_string(),
    );
    let policy = topic_delivery_policy(topic.spec().config.retention);
    let mut answer = Answer::new("GetTopicAttributes");
    answer.map(
        "Attributes",
        [
            ("TopicArn", arn.as_str()),
            ("Owner", ctx.account()),
            ("DisplayName", ""),
            ("SubscriptionsConfirmed", confirmed.as_str()),
            ("SubscriptionsPending", pending.as_str()),
            ("SubscriptionsDeleted", "0"),
            ("EffectiveDeliveryPolicy", policy.as_str()),
        ],
    );
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_snss_rules() {
        assert!(check_name("alerts_2-x", false).is_ok());
        assert!(check_name(&"a".repeat(256), false).is_ok());
        for bad in ["", "a.b", "a b", "ü", &"a".repeat(257)] {
            let error = check_name(bad, false).expect_err(bad);
            assert_eq!(error.code, "InvalidParameter");
        }
        let fifo = check_name("orders.fifo", false).expect_err("fifo");
        assert!(fifo.message.contains("FIFO topics are not supported"));
        assert!(check_name("orders", true).is_err());
    }
}
