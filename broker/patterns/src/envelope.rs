//! The envelope of a tidewire message as event fields, so that a pattern
//! can look at where a message came from beside what it says. The fan-out
//! and rules layers build a message's event with these, and their patterns
//! address the fields by these names:
//!
//! | path | value |
//! |---|---|
//! | `topic` | the MQTT topic, `sensors/plant-3/temp` |
//! | `topic_levels` | each level, as an array: `["sensors", "plant-3", "temp"]` |
//! | `level.0`, `level.1`, ... | one level each: `level.1` is `"plant-3"` |
//! | `client_id` | the publisher's client id |
//! | `content_type` | the MQTT 5 content type |
//! | `user_properties.<name>` | each MQTT 5 user property (a repeated name has several values) |
//! | `payload` | the payload: JSON flattened under it (`payload.temp`), other UTF-8 text as one string |
//!
//! For example `{"level": {"0": ["sensors"]}, "payload": {"temp":
//! [{"numeric": [">", 30]}]}}` matches hot readings under `sensors/`.

use serde_json::Value;

use crate::event::{EventBuilder, Leaf};

/// The full topic.
pub const TOPIC: &str = "topic";
/// Every topic level, as an array.
pub const TOPIC_LEVELS: &str = "topic_levels";
/// Level `N` of the topic is at `level.N`.
pub const LEVEL: &str = "level";
/// The publisher's client id.
pub const CLIENT_ID: &str = "client_id";
/// The MQTT 5 content type.
pub const CONTENT_TYPE: &str = "content_type";
/// MQTT 5 user property `name` is at `user_properties.name`.
pub const USER_PROPERTIES: &str = "user_properties";
/// The payload.
pub const PAYLOAD: &str = "payload";

impl EventBuilder {
    /// Adds `topic`, `topic_levels` and `level.N`.
    pub fn topic(&mut self, topic: &str) -> &mut Self {
        self.string(TOPIC, topic);
        let mut path = format!("{LEVEL}.");
        let base = path.len();
        for (n, level) in topic.split('/').enumerate() {
            self.string(TOPIC_LEVELS, level);
            path.truncate(base);
            path.push_str(&n.to_string());
            self.string(&path, level);
        }
        self
    }

    /// Adds `client_id`.
    pub fn client_id(&mut self, client_id: &str) -> &mut Self {
        self.string(CLIENT_ID, client_id)
    }

    /// Adds `content_type`.
    pub fn content_type(&mut self, content_type: &str) -> &mut Self {
        self.string(CONTENT_TYPE, content_type)
    }

    /// Adds `user_properties.<name>`.
    pub fn user_property(&mut self, name: &str, value: &str) -> &mut Self {
        self.string(&format!("{USER_PROPERTIES}.{name}"), value)
    }

    /// Adds the payload under `payload`: flattened if it is JSON, as one
    /// string if it is other UTF-8 text, not at all otherwise (so
    /// `{"payload": [{"exists": false}]}` matches binary payloads).
    pub fn payload(&mut self, payload: &[u8]) -> &mut Self {
        if let Ok(json) = serde_json::from_slice::<Value>(payload) {
            self.json(PAYLOAD, &json)
        } else if let Ok(text) = std::str::from_utf8(payload) {
            self.leaf(PAYLOAD, Leaf::String(text))
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{Event, Leaf, Pattern};

    fn event() -> Event {
        let mut builder = Event::builder();
        builder
            .topic("sensors/plant-3/temp")
            .client_id("dev-42")
            .content_type("application/json")
            .user_property("unit", "C")
            .user_property("unit", "K")
            .payload(br#"{"temp": 31.5}"#);
        builder.build()
    }

    #[test]
    fn fields() {
        let event = event();
        let values = |path| event.values(path).collect::<Vec<_>>();
        assert_eq!(values("topic"), [Leaf::String("sensors/plant-3/temp")]);
        assert_eq!(
            values("topic_levels"),
            [
                Leaf::String("sensors"),
                Leaf::String("plant-3"),
                Leaf::String("temp")
            ]
        );
        assert_eq!(values("level.1"), [Leaf::String("plant-3")]);
        assert_eq!(values("client_id"), [Leaf::String("dev-42")]);
        assert_eq!(
            values("user_properties.unit"),
            [Leaf::String("C"), Leaf::String("K")]
        );
        assert_eq!(values("payload.temp"), [Leaf::Number(31.5)]);
    }

    #[test]
    fn patterns_see_the_envelope() {
        let pattern = |p| Pattern::parse(&p).expect("valid");
        let event = event();
        assert!(
            pattern(json!({
                "level": {"0": ["sensors"]},
                "payload": {"temp": [{"numeric": [">", 30]}]},
            }))
            .matches(&event)
        );
        assert!(pattern(json!({"topic": [{"wildcard": "sensors/*/temp"}]})).matches(&event));
        assert!(pattern(json!({"topic_levels": ["plant-3"]})).matches(&event));
        assert!(pattern(json!({"user_properties": {"unit": ["K"]}})).matches(&event));
        assert!(!pattern(json!({"client_id": [{"prefix": "gw-"}]})).matches(&event));

        let mut text = Event::builder();
        text.payload(b"plain text");
        assert!(pattern(json!({"payload": [{"prefix": "plain"}]})).matches(&text.build()));
        let mut binary = Event::builder();
        binary.payload(&[0xff, 0xfe]);
        assert!(pattern(json!({"payload": [{"exists": false}]})).matches(&binary.build()));
    }
}
