//! A `/ws` socket's fan-out op: `topic_publish` is answered in order with
//! the socket's publish acks, once the message is durable in the topic (it
//! counts towards `websocket.max_inflight_publishes`). The socket's
//! principal needs the `topics` permission for the topic, as over HTTP.

use tidewire_core::Properties;
use tidewire_queues::Attribute;
use tidewire_topics::Publication;

use super::Socket;
use crate::frames::{self, Reply, TopicPublish};
use crate::metrics::WsMetrics;

impl Socket {
    /// Publishes to a topic; its answer joins the acks.
    pub(super) fn topic_publish(&mut self, request: TopicPublish) -> Option<Reply> {
        let TopicPublish {
            id,
            topic,
            message,
            encoding,
            subject,
            attributes,
            ..
        } = request;
        if !self.acl.principal().may_publish_topic(&topic) {
            let e = format!(
                "forbidden: not allowed to publish to topic {topic:?} (the topics permission)"
            );
            return Some(self.error(Some(id), "topic_publish", e));
        }
        let body = match frames::payload_bytes(&message, encoding.as_deref()) {
            Ok(body) => body,
            Err(e) => return Some(self.error(Some(id), "bad_request", e)),
        };
        let publication = Publication {
            topic: topic.clone(),
            client_id: self.session.client_id.clone(),
            subject,
            body,
            attributes: attributes
                .into_iter()
                .map(|(name, value)| {
                    let attribute = Attribute {
                        data_type: "String".to_owned(),
                        string: Some(value),
                        binary: None,
                    };
                    (name, attribute)
                })
                .collect(),
            properties: Properties::default(),
        };
        let topics = self.gateway.topics.clone();
        let errors = self.gateway.metrics.errors.clone();
        self.acks.push_back(Box::pin(async move {
            Some(match topics.publish(&topic, publication).await {
                Ok(message_id) => Reply::Topic { id, message_id },
                Err(e) => {
                    WsMetrics::count(&errors, "topic_publish");
                    Reply::error(Some(id), e.to_string())
                }
            })
        }));
        None
    }
}
