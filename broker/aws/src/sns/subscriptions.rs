//! The subscription actions: `Subscribe`, `Unsubscribe` and
//! `SetSubscriptionAttributes` (which need the `admin` permission),
//! `ConfirmSubscription` (whose token is its credential),
//! `ListSubscriptions`, `ListSubscriptionsByTopic` and
//! `GetSubscriptionAttributes`.
//!
//! A subscription made here is named by a fresh random id, so its ARN is
//! `arn:aws:sns:REGION:ACCOUNT:TOPIC:ID`. `http` and `https` ones wait for
//! their endpoint to visit the `SubscribeURL` of the
//! `SubscriptionConfirmation` they are sent; `sqs` ones (a queue ARN) are
//! confirmed at once. The `UnsubscribeURL` of a notification
//! (`GET /?Action=Unsubscribe`) works for whoever holds it, but only for
//! subscriptions made here: their random id is what makes the link a
//! credential.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidewire_targets::TargetSpec;
use tidewire_topics::message::new_id;
use tidewire_topics::{Subscription, SubscriptionConfig, Topic, Via};

use super::attributes::{self, protocol_and_endpoint};
use super::context::{Context, is_made_by_sns};
use super::errors::{from_topic, invalid};
use super::form::Form;
use super::paging::page;
use super::xml::Answer;
use crate::AwsError;

/// What `Subscribe` answers for an HTTP(S) subscription until it is
/// confirmed, as SNS does.
const PENDING_ANSWER: &str = "pending confirmation";
/// The ARN lists show for a subscription waiting for confirmation.
const PENDING_ARN: &str = "PendingConfirmation";

/// The target of a `Subscribe`'s `Protocol` and `Endpoint`.
fn target(account: &str, protocol: &str, endpoint: &str) -> Result<TargetSpec, AwsError> {
    match protocol {
        "http" | "https" => {
            let scheme_matches = endpoint
                .split_once("://")
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(protocol));
            if !scheme_matches {
                return Err(invalid(
                    "Endpoint",
                    format!(
                        "an {protocol} subscription needs an {protocol}:// URL, not {endpoint:?}"
                    ),
                ));
            }
            endpoint
                .parse::<TargetSpec>()
                .map_err(|reason| invalid("Endpoint", reason))
        }
        "sqs" => match endpoint.split(':').collect::<Vec<_>>().as_slice() {
            ["arn", _, "sqs", _, owner, name] if !name.is_empty() => {
                if *owner != account {
                    return Err(invalid(
                        "Endpoint",
                        format!("{endpoint:?} names a queue of another account"),
                    ));
                }
                Ok(TargetSpec::Queue {
                    name: (*name).to_owned(),
                })
            }
            _ => Err(invalid(
                "Endpoint",
                format!(
                    "an sqs subscription needs a queue ARN (arn:aws:sqs:REGION:ACCOUNT:QUEUE), not {endpoint:?}"
                ),
            )),
        },
        other => Err(invalid(
            "Protocol",
            format!(
                "tidewire does not deliver to {other:?} endpoints through SNS; the protocols are http, https and sqs"
            ),
        )),
    }
}

/// The subscription an ARN names, with its topic.
fn find(ctx: &Context<'_>, arn: &str) -> Result<(Arc<Topic>, Arc<Subscription>), AwsError> {
    let (topic, name) = ctx.subscription_of(arn)?;
    let topic = ctx.topics.get(topic).map_err(from_topic)?;
    let sub = ctx
        .topics
        .subscription(&topic.name(), name)
        .map_err(from_topic)?;
    Ok((topic, sub))
}

/// `Subscribe`: an endpoint already subscribed with the same attributes
/// answers its subscription, as SNS does; with others it is refused.
pub async fn subscribe(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    ctx.must_be_admin("Subscribe")?;
    let topic_name = ctx.topic_of(form.required("TopicArn")?, "TopicArn")?;
    let protocol = form.required("Protocol")?;
    let target = target(
        ctx.account(),
        protocol,
        form.get("Endpoint").unwrap_or_default(),
    )?;
    let return_arn = form.flag("ReturnSubscriptionArn", false)?;
    let mut config = SubscriptionConfig::new(&new_id(), target);
    config.raw = false;
    for (name, value) in form.entries("Attributes")? {
        attributes::apply(&mut config, &name, &value, ctx.account())?;
    }
    let topic = ctx.topics.get(topic_name).map_err(from_topic)?;
    let existing = topic
        .subscriptions()
        .into_iter()
        .find(|s| s.spec().config.target == config.target);
    let sub = match existing {
        Some(existing) => {
            let same = SubscriptionConfig {
                name: existing.name(),
                ..config
            };
            if existing.spec().config != same {
                return Err(invalid(
                    "Attributes",
                    "Subscription already exists with different attributes",
                ));
            }
            existing
        }
        None => {
            let via = Via::Sns {
                endpoint: ctx.naming.endpoint.clone(),
            };
            let (sub, _) = ctx
                .topics
                .subscribe(&topic.name(), config, via)
                .await
                .map_err(from_topic)?;
            sub
        }
    };
    let arn = if sub.pending_token().is_some() && !return_arn {
        PENDING_ANSWER.to_owned()
    } else {
        ctx.subscription_arn(&topic.name(), &sub.name())
    };
    let mut answer = Answer::new("Subscribe");
    answer.field("SubscriptionArn", &arn);
    Ok(answer)
}

/// `ConfirmSubscription` (also the `SubscribeURL` link): the token sent to
/// the endpoint confirms its subscription.
pub async fn confirm(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let topic = ctx.topic_of(form.required("TopicArn")?, "TopicArn")?;
    let token = form.required("Token")?;
    if form.flag("AuthenticateOnUnsubscribe", false)? {
        return Err(invalid(
            "AuthenticateOnUnsubscribe",
            "tidewire does not keep it: a subscription made through SNS can always be removed with its UnsubscribeURL, and otherwise by an admin",
        ));
    }
    let sub = ctx.topics.confirm(topic, token).await.map_err(from_topic)?;
    let mut answer = Answer::new("ConfirmSubscription");
    answer.field(
        "SubscriptionArn",
        &ctx.subscription_arn(sub.topic(), &sub.name()),
    );
    Ok(answer)
}

/// `Unsubscribe` (also the `UnsubscribeURL` link).
pub async fn unsubscribe(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let arn = form.required("SubscriptionArn")?;
    let (topic, name) = ctx.subscription_of(arn)?;
    if !(ctx.link && is_made_by_sns(name)) {
        ctx.must_be_admin("Unsubscribe")?;
    }
    ctx.topics
        .unsubscribe(topic, name)
        .await
        .map_err(from_topic)?;
    Ok(Answer::new("Unsubscribe"))
}

/// A list's member for `sub` of `topic`.
fn member(ctx: &Context<'_>, answer: &mut Answer, topic: &str, sub: &Subscription) {
    let spec = sub.spec();
    let (protocol, endpoint) = protocol_and_endpoint(&spec.config.target, &ctx.naming);
    let arn = match sub.pending_token() {
        Some(_) => PENDING_ARN.to_owned(),
        None => ctx.subscription_arn(topic, &spec.config.name),
    };
    answer
        .open("member")
        .field("SubscriptionArn", &arn)
        .field("Owner", ctx.account())
        .field("Protocol", &protocol)
        .field("Endpoint", &endpoint)
        .field("TopicArn", &ctx.topic_arn(topic))
        .close("member");
}

/// Subscriptions by topic and name.
type Listed = BTreeMap<(String, String), Arc<Subscription>>;

/// Answers one page of `subs`.
fn list_answer(
    ctx: &Context<'_>,
    action: &'static str,
    subs: &Listed,
    after: Option<(String, String)>,
) -> Answer {
    let (keys, next) = page(subs.keys().cloned().collect(), after.as_ref());
    let mut answer = Answer::new(action);
    answer.open("Subscriptions");
    for key in &keys {
        member(ctx, &mut answer, &key.0, &subs[key]);
    }
    answer.close("Subscriptions");
    if let Some((topic, name)) = next {
        answer.field("NextToken", &format!("{topic}:{name}"));
    }
    answer
}

/// The position a `NextToken` of a subscription list names.
fn after(form: &Form) -> Option<(String, String)> {
    form.get("NextToken")
        .and_then(|token| token.split_once(':'))
        .map(|(topic, name)| (topic.to_owned(), name.to_owned()))
}

/// `ListSubscriptions`: every topic's subscriptions, 100 a page.
pub fn list(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let subs = ctx
        .topics
        .list()
        .iter()
        .flat_map(|topic| {
            let name = topic.name();
            topic
                .subscriptions()
                .into_iter()
                .map(move |sub| ((name.clone(), sub.name()), sub))
        })
        .collect();
    Ok(list_answer(ctx, "ListSubscriptions", &subs, after(form)))
}

/// `ListSubscriptionsByTopic`: one topic's subscriptions, 100 a page.
pub fn list_by_topic(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let name = ctx.topic_of(form.required("TopicArn")?, "TopicArn")?;
    let topic = ctx.topics.get(name).map_err(from_topic)?;
    let topic_name = topic.name();
    let subs = topic
        .subscriptions()
        .into_iter()
        .map(|sub| ((topic_name.clone(), sub.name()), sub))
        .collect();
    Ok(list_answer(
        ctx,
        "ListSubscriptionsByTopic",
        &subs,
        after(form),
    ))
}

/// `GetSubscriptionAttributes`.
pub fn get_attributes(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let arn = form.required("SubscriptionArn")?;
    let (topic, sub) = find(ctx, arn)?;
    let spec = sub.spec();
    let topic_name = topic.name();
    let (protocol, endpoint) = protocol_and_endpoint(&spec.config.target, &ctx.naming);
    let pending = sub.pending_token().is_some();
    // Confirmed by an authenticated call: made so (not HTTP through SNS,
    // which a token from the endpoint confirms).
    let by_token =
        matches!(spec.config.target, TargetSpec::Http { .. }) && is_made_by_sns(&spec.config.name);
    let mut values: Vec<(&str, String)> = vec![
        (
            "SubscriptionArn",
            ctx.subscription_arn(&topic_name, &spec.config.name),
        ),
        ("TopicArn", ctx.topic_arn(&topic_name)),
        ("Owner", ctx.account().to_owned()),
        ("Protocol", protocol),
        ("Endpoint", endpoint),
        (
            "ConfirmationWasAuthenticated",
            (!pending && !by_token).to_string(),
        ),
        ("PendingConfirmation", pending.to_string()),
    ];
    values.extend(attributes::values(
        &spec.config,
        topic.spec().config.retention,
        &ctx.naming,
    ));
    let mut answer = Answer::new("GetSubscriptionAttributes");
    answer.map(
        "Attributes",
        values.iter().map(|(name, value)| (*name, value.as_str())),
    );
    Ok(answer)
}

/// `SetSubscriptionAttributes`: one attribute; delivery goes on from the
/// subscription's cursor under the new definition.
pub async fn set_attributes(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    ctx.must_be_admin("SetSubscriptionAttributes")?;
    let arn = form.required("SubscriptionArn")?;
    let name = form.required("AttributeName")?;
    let value = form.get("AttributeValue").unwrap_or_default();
    let (topic, sub) = find(ctx, arn)?;
    let mut config = sub.spec().config.clone();
    attributes::apply(&mut config, name, value, ctx.account())?;
    ctx.topics
        .update_subscription(&topic.name(), config)
        .await
        .map_err(from_topic)?;
    Ok(Answer::new("SetSubscriptionAttributes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tokens_name_a_topic_and_a_subscription() {
        let form = Form::new(vec![("NextToken".into(), "alerts:abc-1".into())]);
        assert_eq!(
            after(&form),
            Some(("alerts".to_owned(), "abc-1".to_owned()))
        );
        assert_eq!(after(&Form::default()), None);
    }

    #[test]
    fn protocols_and_endpoints_become_targets() {
        let account = "123456789012";
        assert_eq!(
            target(account, "sqs", "arn:aws:sqs:eu-west-1:123456789012:jobs").ok(),
            Some(TargetSpec::Queue {
                name: "jobs".into()
            })
        );
        assert!(matches!(
            target(account, "https", "https://hooks.example/in"),
            Ok(TargetSpec::Http { .. })
        ));
        for (protocol, endpoint, param) in [
            ("http", "https://hooks.example/in", "Endpoint"),
            ("https", "hooks.example", "Endpoint"),
            ("sqs", "arn:aws:sqs:eu-west-1:999999999999:jobs", "Endpoint"),
            ("sqs", "http://127.0.0.1/123456789012/jobs", "Endpoint"),
            ("email", "ops@example.com", "Protocol"),
            (
                "lambda",
                "arn:aws:lambda:eu-west-1:123456789012:function:f",
                "Protocol",
            ),
        ] {
            let error = target(account, protocol, endpoint).expect_err(protocol);
            assert_eq!(error.code, "InvalidParameter");
            assert!(
                error
                    .message
                    .starts_with(&format!("Invalid parameter: {param}")),
                "{}",
                error.message
            );
        }
        let email = target(account, "email", "ops@example.com").expect_err("email");
        assert!(email.message.contains("\"email\""), "{}", email.message);
    }
}
