//! SNS's JSON documents: the `Notification` envelope a subscription with
//! `raw = false` delivers, the `SubscriptionConfirmation` an HTTP
//! subscription made through SNS receives, and the ARNs and URLs they
//! carry ([`Naming`]). The fields and their order follow the SNS
//! developer guide's HTTP/HTTPS notification JSON; `Signature` and
//! `SigningCertURL` are left out (tidewire signs with the subscription's
//! HMAC secret instead).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::message::Stored;

/// What names and links in the documents are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// The AWS account id (`[aws] account_id`).
    pub account: String,
    /// The region in ARNs made outside an AWS request.
    pub region: String,
    /// The broker's HTTP base URL, for `UnsubscribeURL` and
    /// `SubscribeURL`, e.g. `http://10.0.0.5:8080`.
    pub endpoint: String,
}

impl Default for Naming {
    fn default() -> Naming {
        Naming {
            account: "000000000000".to_owned(),
            region: "us-east-1".to_owned(),
            endpoint: "http://127.0.0.1:8080".to_owned(),
        }
    }
}

impl Naming {
    /// `arn:aws:sns:REGION:ACCOUNT:TOPIC`.
    pub fn topic_arn(&self, topic: &str) -> String {
        format!("arn:aws:sns:{}:{}:{topic}", self.region, self.account)
    }

    /// `arn:aws:sns:REGION:ACCOUNT:TOPIC:SUBSCRIPTION`.
    pub fn subscription_arn(&self, topic: &str, subscription: &str) -> String {
        format!("{}:{subscription}", self.topic_arn(topic))
    }

    /// The link that unsubscribes a subscription.
    pub fn unsubscribe_url(&self, topic: &str, subscription: &str) -> String {
        format!(
            "{}/?Action=Unsubscribe&SubscriptionArn={}",
            self.endpoint.trim_end_matches('/'),
            percent(&self.subscription_arn(topic, subscription))
        )
    }

    /// The link that confirms a pending subscription.
    pub fn subscribe_url(&self, topic: &str, token: &str) -> String {
        format!(
            "{}/?Action=ConfirmSubscription&TopicArn={}&Token={}",
            self.endpoint.trim_end_matches('/'),
            percent(&self.topic_arn(topic)),
            percent(token)
        )
    }
}

/// Percent-encodes everything but unreserved characters.
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// SNS's timestamp: RFC 3339 in UTC with milliseconds.
pub fn timestamp(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// The body as the envelope's `Message` string: UTF-8 as is, anything
/// else in base64.
fn message_text(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => text.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(body),
    }
}

/// The `Notification` document for `message`, published at
/// `timestamp_ms` to `topic`, for subscription `subscription`.
pub fn notification(
    naming: &Naming,
    topic: &str,
    subscription: &str,
    message: &Stored,
    timestamp_ms: i64,
) -> Bytes {
    let mut doc = Map::new();
    doc.insert("Type".into(), json!("Notification"));
    doc.insert("MessageId".into(), json!(message.header.id));
    doc.insert("TopicArn".into(), json!(naming.topic_arn(topic)));
    if let Some(subject) = &message.header.subject {
        doc.insert("Subject".into(), json!(subject));
    }
    doc.insert("Message".into(), json!(message_text(&message.body)));
    doc.insert("Timestamp".into(), json!(timestamp(timestamp_ms)));
    doc.insert("SignatureVersion".into(), json!("1"));
    doc.insert(
        "UnsubscribeURL".into(),
        json!(naming.unsubscribe_url(topic, subscription)),
    );
    if !message.header.attributes.is_empty() {
        let attributes: Map<String, Value> = message
            .header
            .attributes
            .iter()
            .map(|(name, a)| {
                let value = match (&a.string, &a.binary) {
                    (Some(s), _) => s.clone(),
                    (None, Some(b)) => base64::engine::general_purpose::STANDARD.encode(b),
                    (None, None) => String::new(),
                };
                (name.clone(), json!({"Type": a.data_type, "Value": value}))
            })
            .collect();
        doc.insert("MessageAttributes".into(), Value::Object(attributes));
    }
    Bytes::from(Value::Object(doc).to_string())
}

/// The `SubscriptionConfirmation` document sent to a new HTTP(S)
/// subscription made through SNS.
pub fn confirmation(naming: &Naming, topic: &str, token: &str, now_ms: i64) -> Bytes {
    let topic_arn = naming.topic_arn(topic);
    let subscribe_url = naming.subscribe_url(topic, token);
    Bytes::from(
        json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": crate::message::new_id(),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": format!(
                "You have chosen to subscribe to the topic {topic_arn}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
            ),
            "SubscribeURL": subscribe_url,
            "Timestamp": timestamp(now_ms),
            "SignatureVersion": "1",
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tidewire_queues::Attribute;

    use super::*;
    use crate::message::Header;

    #[test]
    fn a_notification_in_snss_shape() {
        let naming = Naming::default();
        let message = Stored {
            matched: Vec::new(),
            header: Header {
                id: "m-1".into(),
                subject: Some("Alarm".into()),
                attributes: BTreeMap::from([(
                    "severity".to_owned(),
                    Attribute {
                        data_type: "String".into(),
                        string: Some("high".into()),
                        binary: None,
                    },
                )]),
            },
            body: Bytes::from_static(b"{\"temp\":91}"),
        };
        let doc: Value = serde_json::from_slice(&notification(
            &naming,
            "alerts",
            "ops",
            &message,
            1_700_000_000_123,
        ))
        .expect("json");
        assert_eq!(doc["Type"], "Notification");
        assert_eq!(doc["TopicArn"], "arn:aws:sns:us-east-1:000000000000:alerts");
        assert_eq!(doc["Message"], "{\"temp\":91}");
        assert_eq!(doc["Subject"], "Alarm");
        assert_eq!(doc["Timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(doc["MessageAttributes"]["severity"]["Value"], "high");
        assert!(doc["UnsubscribeURL"].as_str().is_some_and(|u| u.ends_with(
            "SubscriptionArn=arn%3Aaws%3Asns%3Aus-east-1%3A000000000000%3Aalerts%3Aops"
        )));
    }

    #[test]
    fn a_confirmation_links_back() {
        let doc: Value =
            serde_json::from_slice(&confirmation(&Naming::default(), "alerts", "t0k", 0))
                .expect("json");
        assert_eq!(doc["Type"], "SubscriptionConfirmation");
        assert_eq!(
            doc["SubscribeURL"],
            "http://127.0.0.1:8080/?Action=ConfirmSubscription&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A000000000000%3Aalerts&Token=t0k"
        );
    }
}
