//! A subscription's attributes in SNS's words, both ways: the five that
//! `Subscribe` and `SetSubscriptionAttributes` may set (`FilterPolicy`,
//! `FilterPolicyScope`, `RawMessageDelivery`, `RedrivePolicy`,
//! `DeliveryPolicy`) applied to a [`SubscriptionConfig`], and what
//! `GetSubscriptionAttributes` answers of one, with the effective delivery
//! policy (tidewire's own when none is set: retries until the message
//! leaves the topic's retention, 1 s doubling to 20 s).
//!
//! SNS's `DeliveryPolicy` is `{"healthyRetryPolicy": {"numRetries",
//! "minDelayTarget", "maxDelayTarget", "backoffFunction"}}` in seconds;
//! `linear` and `arithmetic` back off linearly, `exponential` and
//! `geometric` exponentially. A policy that asks for phases tidewire does
//! not have (`numNoDelayRetries`, `numMinDelayRetries`,
//! `numMaxDelayRetries` above 0), a throttle or a request policy is
//! refused rather than ignored.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tidewire_targets::TargetSpec;
use tidewire_topics::config::{MAX_DELAY, MAX_RETRIES};
use tidewire_topics::subscription::{BACKOFF_MAX, BACKOFF_MIN};
use tidewire_topics::{Backoff, DeliveryPolicy, Naming, Scope, SubscriptionConfig};

use super::errors::invalid;
use super::form::parse_flag;
use crate::AwsError;

/// The attributes `Subscribe` and `SetSubscriptionAttributes` may set.
pub const SETTABLE: [&str; 5] = [
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "DeliveryPolicy",
];

/// SNS's retry policy defaults, for members a `DeliveryPolicy` leaves out.
const SNS_DEFAULT_RETRIES: u64 = 3;
const SNS_DEFAULT_DELAY_SECS: u64 = 20;

/// Sets attribute `name` of `config` to `value`; `account` is the account
/// whose queue ARNs a `RedrivePolicy` may name.
pub fn apply(
    config: &mut SubscriptionConfig,
    name: &str,
    value: &str,
    account: &str,
) -> Result<(), AwsError> {
    match name {
        "FilterPolicy" => config.filter = filter_policy(value)?,
        "FilterPolicyScope" => config.filter_scope = scope(value)?,
        "RawMessageDelivery" => config.raw = parse_flag(name, value)?,
        "RedrivePolicy" => config.dead_letter = redrive_policy(value, account)?,
        "DeliveryPolicy" => config.delivery = delivery_policy(value)?,
        other => {
            return Err(invalid(
                "AttributeName",
                format!(
                    "tidewire does not set the subscription attribute {other:?}; it sets {}",
                    SETTABLE.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A `FilterPolicy`: a JSON object; empty (`""` or `{}`) removes it. The
/// topic engine checks the pattern and names what is wrong with it.
fn filter_policy(value: &str) -> Result<Option<Value>, AwsError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let policy: Value = serde_json::from_str(value)
        .map_err(|e| invalid("FilterPolicy", format!("failed to parse JSON: {e}")))?;
    match &policy {
        Value::Object(members) if members.is_empty() => Ok(None),
        Value::Object(_) => Ok(Some(policy)),
        _ => Err(invalid("FilterPolicy", "must be a JSON object")),
    }
}

fn scope(value: &str) -> Result<Scope, AwsError> {
    match value {
        "MessageAttributes" => Ok(Scope::Attributes),
        "MessageBody" => Ok(Scope::Body),
        "envelope" => Ok(Scope::Envelope),
        other => Err(invalid(
            "FilterPolicyScope",
            format!(
                "must be MessageAttributes or MessageBody (or tidewire's envelope), not {other:?}"
            ),
        )),
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Attributes => "MessageAttributes",
        Scope::Body => "MessageBody",
        Scope::Envelope => "envelope",
    }
}

/// A JSON object's members, refusing any not in `known`.
fn members<'a>(
    value: &'a Value,
    param: &str,
    known: &[&str],
) -> Result<&'a Map<String, Value>, AwsError> {
    let object = value
        .as_object()
        .ok_or_else(|| invalid(param, "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(
            param,
            format!(
                "tidewire does not take {unknown:?} here (it takes {})",
                known.join(", ")
            ),
        ));
    }
    Ok(object)
}

/// A `RedrivePolicy`: `{"deadLetterTargetArn": ARN}` naming a queue of
/// this account (`arn:aws:sqs:REGION:ACCOUNT:QUEUE`) or a stream
/// (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`); empty removes it.
fn redrive_policy(value: &str, account: &str) -> Result<Option<TargetSpec>, AwsError> {
    const PARAM: &str = "RedrivePolicy";
    if value.trim().is_empty() {
        return Ok(None);
    }
    let policy: Value = serde_json::from_str(value)
        .map_err(|e| invalid(PARAM, format!("failed to parse JSON: {e}")))?;
    let arn = members(&policy, PARAM, &["deadLetterTargetArn"])?
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(PARAM, "deadLetterTargetArn is missing or not a string"))?;
    let not_here = || {
        invalid(
            PARAM,
            format!("deadLetterTargetArn {arn:?} names a resource of another account"),
        )
    };
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "sqs", _, owner, name] if !name.is_empty() => {
            if *owner != account {
                return Err(not_here());
            }
            Ok(Some(TargetSpec::Queue {
                name: (*name).to_owned(),
            }))
        }
        ["arn", _, "kinesis", _, owner, resource] => match resource.strip_prefix("stream/") {
            Some(name) if !name.is_empty() && *owner == account => Ok(Some(TargetSpec::Stream {
                name: name.to_owned(),
            })),
            Some(name) if !name.is_empty() => Err(not_here()),
            _ => Err(not_a_dead_letter_arn(arn)),
        },
        _ => Err(not_a_dead_letter_arn(arn)),
    }
}

fn not_a_dead_letter_arn(arn: &str) -> AwsError {
    invalid(
        "RedrivePolicy",
        format!(
            "deadLetterTargetArn {arn:?} is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:QUEUE)"
        ),
    )
}

/// A `DeliveryPolicy` in SNS's shape; empty removes it.
fn delivery_policy(value: &str) -> Result<Option<DeliveryPolicy>, AwsError> {
    const PARAM: &str = "DeliveryPolicy";
    if value.trim().is_empty() {
        return Ok(None);
    }
    let policy: Value = serde_json::from_str(value)
        .map_err(|e| invalid(PARAM, format!("failed to parse JSON: {e}")))?;
    let Some(retry) = members(&policy, PARAM, &["healthyRetryPolicy"])?.get("healthyRetryPolicy")
    else {
        return Ok(None);
    };
    let retry = members(
        retry,
        PARAM,
        &[
            "numRetries",
            "minDelayTarget",
            "maxDelayTarget",
            "backoffFunction",
            "numNoDelayRetries",
            "numMinDelayRetries",
            "numMaxDelayRetries",
        ],
    )?;
    let number = |name: &str, default: u64| -> Result<u64, AwsError> {
        match retry.get(name) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid(
                    PARAM,
                    format!("healthyRetryPolicy.{name} must be a whole number, not {v}"),
                )
            }),
        }
    };
    for phase in [
        "numNoDelayRetries",
        "numMinDelayRetries",
        "numMaxDelayRetries",
    ] {
        if number(phase, 0)? != 0 {
            return Err(invalid(
                PARAM,
                format!(
                    "healthyRetryPolicy.{phase} must be 0: tidewire backs off from minDelayTarget to maxDelayTarget over all of numRetries"
                ),
            ));
        }
    }
    let retries = number("numRetries", SNS_DEFAULT_RETRIES)?;
    let min = number("minDelayTarget", SNS_DEFAULT_DELAY_SECS)?;
    let max = number("maxDelayTarget", SNS_DEFAULT_DELAY_SECS)?;
    if retries > u64::from(MAX_RETRIES) {
        return Err(invalid(
            PARAM,
            format!("healthyRetryPolicy.numRetries must be from 0 to {MAX_RETRIES}"),
        ));
    }
    if min == 0 || min > max || max > MAX_DELAY.as_secs() {
        return Err(invalid(
            PARAM,
            format!(
                "healthyRetryPolicy needs 1 <= minDelayTarget <= maxDelayTarget <= {}",
                MAX_DELAY.as_secs()
            ),
        ));
    }
    let backoff = match retry.get("backoffFunction") {
        None => Backoff::Linear,
        Some(f) => match f.as_str() {
            Some("linear" | "arithmetic") => Backoff::Linear,
            Some("exponential" | "geometric") => Backoff::Exponential,
            _ => {
                return Err(invalid(
                    PARAM,
                    format!(
                        "healthyRetryPolicy.backoffFunction must be linear, arithmetic, exponential or geometric, not {f}"
                    ),
                ));
            }
        },
    };
    Ok(Some(DeliveryPolicy {
        retries: u32::try_from(retries).unwrap_or(MAX_RETRIES),
        min_delay: Duration::from_secs(min),
        max_delay: Duration::from_secs(max),
        backoff,
    }))
}

/// A retry policy in SNS's shape. A constant backoff is a linear one from
/// the delay to itself.
fn retry_policy(policy: &DeliveryPolicy) -> Value {
    let (max, backoff) = match policy.backoff {
        Backoff::Exponential => (policy.max_delay, "exponential"),
        Backoff::Linear => (policy.max_delay, "linear"),
        Backoff::Constant => (policy.min_delay, "linear"),
    };
    json!({
        "numRetries": policy.retries,
        "minDelayTarget": policy.min_delay.as_secs(),
        "maxDelayTarget": max.as_secs(),
        "backoffFunction": backoff,
    })
}

/// What a subscription without a delivery policy does, as an SNS retry
/// policy: it retries until the message leaves the topic's `retention`,
/// waiting 1 s doubling to 20 s.
fn default_retry_policy(retention: Duration) -> Value {
    json!({
        "numRetries": retries_within(retention),
        "minDelayTarget": BACKOFF_MIN.as_secs(),
        "maxDelayTarget": BACKOFF_MAX.as_secs(),
        "backoffFunction": "exponential",
    })
}

/// How many waits of 1 s doubling to 20 s fit in `retention`.
fn retries_within(retention: Duration) -> u64 {
    let (mut waited, mut delay, mut n) = (Duration::ZERO, BACKOFF_MIN, 0u64);
    while delay < BACKOFF_MAX && waited + delay <= retention {
        waited += delay;
        delay = (delay * 2).min(BACKOFF_MAX);
        n += 1;
    }
    let rest = retention.saturating_sub(waited);
    n + (rest.as_millis() / BACKOFF_MAX.as_millis().max(1)) as u64
}

/// A topic's `EffectiveDeliveryPolicy`: what its subscriptions without a
/// policy of their own do.
pub fn topic_delivery_policy(retention: Duration) -> String {
    json!({
        "http": {
            "defaultHealthyRetryPolicy": default_retry_policy(retention),
            "disableSubscriptionOverrides": false,
        }
    })
    .to_string()
}

/// `GetSubscriptionAttributes`' view of `config` (of a topic keeping
/// messages for `retention`): the attributes that are set, with
/// `EffectiveDeliveryPolicy` always.
pub fn values(
    config: &SubscriptionConfig,
    retention: Duration,
    naming: &Naming,
) -> Vec<(&'static str, String)> {
    let mut out = vec![("RawMessageDelivery", config.raw.to_string())];
    if let Some(filter) = &config.filter {
        let text = match filter {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        out.push(("FilterPolicy", text));
        out.push(("FilterPolicyScope", scope_name(config.filter_scope).into()));
    }
    if let Some(target) = &config.dead_letter {
        let arn = match target {
            TargetSpec::Queue { name } => {
                format!("arn:aws:sqs:{}:{}:{name}", naming.region, naming.account)
            }
            TargetSpec::Stream { name } => format!(
                "arn:aws:kinesis:{}:{}:stream/{name}",
                naming.region, naming.account
            ),
            other => other.to_string(),
        };
        out.push((
            "RedrivePolicy",
            json!({ "deadLetterTargetArn": arn }).to_string(),
        ));
    }
    let effective = match &config.delivery {
        Some(policy) => {
            let shaped = json!({ "healthyRetryPolicy": retry_policy(policy) }).to_string();
            out.push(("DeliveryPolicy", shaped.clone()));
            shaped
        }
        None => json!({ "healthyRetryPolicy": default_retry_policy(retention) }).to_string(),
    };
    out.push(("EffectiveDeliveryPolicy", effective));
    out
}

/// A target as SNS's `Protocol` and `Endpoint`: webhooks by their scheme
/// and URL, queues as `sqs` with the queue's ARN; tidewire's other
/// targets by their kind and as written.
pub fn protocol_and_endpoint(target: &TargetSpec, naming: &Naming) -> (String, String) {
    match target {
        TargetSpec::Http { url } => {
            let scheme = url.split_once(':').map_or("http", |(s, _)| s);
            (scheme.to_ascii_lowercase(), url.clone())
        }
        TargetSpec::Queue { name } => (
            "sqs".to_owned(),
            format!("arn:aws:sqs:{}:{}:{name}", naming.region, naming.account),
        ),
        TargetSpec::Email { to } => ("email".to_owned(), to.join(",")),
        other => (other.kind().to_owned(), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SubscriptionConfig {
        SubscriptionConfig::new("s", TargetSpec::Queue { name: "q".into() })
    }

    fn naming() -> Naming {
        Naming {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            endpoint: "http://h".into(),
        }
    }

    #[test]
    fn sns_delivery_policies_become_tidewires() {
        let policy = delivery_policy(
            r#"{"healthyRetryPolicy": {"numRetries": 5, "minDelayTarget": 2, "maxDelayTarget": 30, "backoffFunction": "geometric", "numNoDelayRetries": 0}}"#,
        )
        .expect("valid")
        .expect("set");
        assert_eq!(
            policy,
            DeliveryPolicy {
                retries: 5,
                min_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(30),
                backoff: Backoff::Exponential,
            }
        );
        for (function, backoff) in [
            ("linear", Backoff::Linear),
            ("arithmetic", Backoff::Linear),
            ("exponential", Backoff::Exponential),
        ] {
            let text = format!(r#"{{"healthyRetryPolicy": {{"backoffFunction": "{function}"}}}}"#);
            let policy = delivery_policy(&text).expect("valid").expect("set");
            assert_eq!(policy.backoff, backoff);
            // SNS's defaults fill what is left out.
            assert_eq!(policy.retries, 3);
            assert_eq!(policy.min_delay, Duration::from_secs(20));
        }
        assert_eq!(delivery_policy("").expect("empty"), None);
        for bad in [
            r#"{"healthyRetryPolicy": {"numRetries": 101}}"#,
            r#"{"healthyRetryPolicy": {"minDelayTarget": 10, "maxDelayTarget": 5}}"#,
            r#"{"healthyRetryPolicy": {"maxDelayTarget": 7200}}"#,
            r#"{"healthyRetryPolicy": {"backoffFunction": "random"}}"#,
            r#"{"healthyRetryPolicy": {"numMaxDelayRetries": 2}}"#,
            r#"{"healthyRetryPolicy": {"numRetries": "3"}}"#,
            r#"{"throttlePolicy": {"maxReceivesPerSecond": 1}}"#,
            "[1]",
            "{not json",
        ] {
            let error = delivery_policy(bad).expect_err(bad);
            assert_eq!(error.code, "InvalidParameter", "{bad}");
            assert!(
                error.message.contains("DeliveryPolicy"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn delivery_policies_answer_in_snss_shape() {
        let mut c = config();
        apply(
            &mut c,
            "DeliveryPolicy",
            r#"{"healthyRetryPolicy": {"numRetries": 4, "minDelayTarget": 1, "maxDelayTarget": 8, "backoffFunction": "exponential"}}"#,
            "123456789012",
        )
        .expect("applied");
        let values = values(&c, Duration::from_secs(3600), &naming());
        let get = |name: &str| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| serde_json::from_str::<Value>(v).expect("json"))
        };
        let expected = json!({"healthyRetryPolicy": {"numRetries": 4, "minDelayTarget": 1, "maxDelayTarget": 8, "backoffFunction": "exponential"}});
        assert_eq!(get("DeliveryPolicy"), Some(expected.clone()));
        assert_eq!(get("EffectiveDeliveryPolicy"), Some(expected));
        // A constant backoff is a linear one that stays put.
        let constant = DeliveryPolicy {
            retries: 2,
            min_delay: Duration::from_secs(3),
            max_delay: Duration::from_secs(9),
            backoff: Backoff::Constant,
        };
        assert_eq!(
            retry_policy(&constant),
            json!({"numRetries": 2, "minDelayTarget": 3, "maxDelayTarget": 3, "backoffFunction": "linear"})
        );
    }

    #[test]
    fn without_a_policy_retries_last_the_retention() {
        // 1 + 2 + 4 + 8 + 16 s, then every 20 s.
        assert_eq!(retries_within(Duration::from_secs(31)), 5);
        assert_eq!(retries_within(Duration::from_secs(71)), 7);
        assert_eq!(retries_within(Duration::from_secs(60)), 6);
        let c = config();
        let values = values(&c, Duration::from_secs(24 * 3600), &naming());
        let effective = &values
            .iter()
            .find(|(n, _)| *n == "EffectiveDeliveryPolicy")
            .expect("always there")
            .1;
        let effective: Value = serde_json::from_str(effective).expect("json");
        assert_eq!(
            effective["healthyRetryPolicy"]["backoffFunction"],
            "exponential"
        );
        assert_eq!(effective["healthyRetryPolicy"]["numRetries"], 5 + 4318);
        assert!(!values.iter().any(|(n, _)| *n == "DeliveryPolicy"));
        let topic: Value =
            serde_json::from_str(&topic_delivery_policy(Duration::from_secs(60))).expect("json");
        assert_eq!(topic["http"]["defaultHealthyRetryPolicy"]["numRetries"], 6);
    }

    #[test]
    fn redrive_policies_name_queues_of_this_account() {
        let account = "123456789012";
        let policy = r#"{"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:dlq"}"#;
        assert_eq!(
            redrive_policy(policy, account).expect("valid"),
            Some(TargetSpec::Queue { name: "dlq".into() })
        );
        assert_eq!(
            redrive_policy(
                r#"{"deadLetterTargetArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/dead"}"#,
                account
            )
            .expect("valid"),
            Some(TargetSpec::Stream {
                name: "dead".into()
            })
        );
        assert_eq!(redrive_policy("", account).expect("empty"), None);
        for bad in [
            r#"{"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:999999999999:dlq"}"#,
            r#"{"deadLetterTargetArn": "arn:aws:sns:eu-west-1:123456789012:t"}"#,
            r#"{"deadLetterTargetArn": 1}"#,
            r#"{"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:dlq", "x": 1}"#,
        ] {
            let error = redrive_policy(bad, account).expect_err(bad);
            assert!(error.message.contains("RedrivePolicy"), "{}", error.message);
        }
        // It answers as it was set.
        let mut c = config();
        apply(&mut c, "RedrivePolicy", policy, account).expect("applied");
        let values = values(&c, Duration::from_secs(60), &naming());
        let redrive = values
            .iter()
            .find(|(n, _)| *n == "RedrivePolicy")
            .expect("set");
        assert_eq!(
            serde_json::from_str::<Value>(&redrive.1).expect("json"),
            serde_json::from_str::<Value>(policy).expect("json")
        );
    }

    #[test]
    fn filters_scopes_and_raw_delivery() {
        let mut c = config();
        let account = "123456789012";
        apply(&mut c, "FilterPolicy", r#"{"kind": ["a"]}"#, account).expect("set");
        assert_eq!(c.filter, Some(json!({"kind": ["a"]})));
        apply(&mut c, "FilterPolicyScope", "MessageBody", account).expect("set");
        assert_eq!(c.filter_scope, Scope::Body);
        apply(&mut c, "RawMessageDelivery", "false", account).expect("set");
        assert!(!c.raw);
        let shown = values(&c, Duration::from_secs(60), &naming());
        assert!(shown.contains(&("FilterPolicy", r#"{"kind":["a"]}"#.to_owned())));
        assert!(shown.contains(&("FilterPolicyScope", "MessageBody".to_owned())));
        assert!(shown.contains(&("RawMessageDelivery", "false".to_owned())));
        apply(&mut c, "FilterPolicy", "{}", account).expect("removed");
        assert_eq!(c.filter, None);
        for (name, value) in [
            ("FilterPolicy", "{not json"),
            ("FilterPolicy", "[1]"),
            ("FilterPolicyScope", "Body"),
            ("RawMessageDelivery", "yes"),
            ("SubscriptionRoleArn", "arn:aws:iam::1:role/r"),
        ] {
            let error = apply(&mut c, name, value, account).expect_err(name);
            assert_eq!(error.code, "InvalidParameter", "{name}");
        }
    }

    #[test]
    fn targets_as_protocols_and_endpoints() {
        let n = naming();
        assert_eq!(
            protocol_and_endpoint(
                &TargetSpec::Http {
                    url: "https://x.example/h".into()
                },
                &n
            ),
            ("https".to_owned(), "https://x.example/h".to_owned())
        );
        assert_eq!(
            protocol_and_endpoint(&TargetSpec::Queue { name: "q".into() }, &n),
            (
                "sqs".to_owned(),
                "arn:aws:sqs:eu-west-1:123456789012:q".to_owned()
            )
        );
        assert_eq!(
            protocol_and_endpoint(&TargetSpec::Stream { name: "s".into() }, &n),
            ("stream".to_owned(), "stream:s".to_owned())
        );
    }
}
