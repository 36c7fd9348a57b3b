//! The `/ws` JSON protocol's frames: what clients send ([`Request`]) and
//! the frames the server answers with. Every request may carry an `id`,
//! which the answers to it echo; `query`, `watch` and the queue ops
//! require one. Queue messages have the shapes `/api/v1/queues` uses
//! ([`tidewire_queues::json`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tidewire_core::Stored;
use tidewire_core::payload::JsonPayload;
use tidewire_queues::json::{MessageView, ReceiveRequest, SendRequest, SentView};
use tidewire_sql::output::JsonResult;
use tidewire_sql::{QueryConfig, WindowResult};

/// A request from a client.
#[derive(Debug)]
pub enum Request {
    /// Publish a message; QoS 1 is acknowledged once durable.
    Publish(Publish),
    /// Receive messages matching an MQTT filter (`$share/...` allowed).
    Subscribe(FilterRequest),
    /// Stop receiving messages matching a filter.
    Unsubscribe(FilterRequest),
    /// Run one SQL query.
    Query(QueryRequest),
    /// Receive a continuous query's results.
    Watch(WatchRequest),
    /// Stop a watch.
    Unwatch(IdRequest),
    /// Answered with `{"type":"pong"}`: a keepalive for clients (browsers)
    /// that cannot send WebSocket pings.
    Ping(PingRequest),
    /// Send a message to a queue; answered once durable.
    QueueSend(QueueSend),
    /// Receive messages from a queue, with a long poll.
    QueueReceive(QueueReceive),
    /// Delete a received message by its receipt handle.
    QueueDelete(QueueDelete),
    /// Publish to a fan-out topic directly; answered once durable.
    TopicPublish(TopicPublish),
}

/// `{"op":"publish",...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// Echoed in the ack or error.
    pub id: Option<Value>,
    /// The topic name.
    pub topic: String,
    /// Any JSON value; a string is sent as its text (or, with
    /// `"encoding":"base64"`, as the bytes it encodes), anything else byte
    /// for byte as written.
    pub payload: Box<RawValue>,
    /// 0 (default) or 1.
    #[serde(default)]
    pub qos: u8,
    /// Keep as the topic's retained message.
    #[serde(default)]
    pub retain: bool,
    /// `base64` for a binary payload given as a base64 string.
    pub encoding: Option<String>,
}

/// `{"op":"subscribe"|"unsubscribe","filter":F}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRequest {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// When given, the request is acknowledged.
    pub id: Option<Value>,
    /// The topic filter.
    pub filter: String,
}

/// `{"op":"query","id":ID,"sql":S}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// Names the result.
    pub id: Value,
    /// The statement.
    pub sql: String,
}

/// `{"op":"watch","id":ID,...}`: an existing continuous query by `query`,
/// or a new one for this socket from `sql` and a window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// Names the results.
    pub id: Value,
    /// A configured continuous query's id.
    pub query: Option<String>,
    /// Or: a `SELECT` over one stream, run once per window.
    pub sql: Option<String>,
    /// Window length for `sql` (default `"1s"`).
    pub window: Option<String>,
    /// Hop for hopping windows.
    pub hop: Option<String>,
    /// Allowed lateness.
    pub allowed_lateness: Option<String>,
    /// Event time expression (default `ts`).
    pub event_time: Option<String>,
}

/// A request that names only an id (`unwatch`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRequest {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// The id.
    pub id: Value,
}

/// `{"op":"ping"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// Echoed.
    pub id: Option<Value>,
}

/// `{"op":"queue_send","id":ID,"queue":Q,"body":ANY,...}`: the fields of
/// [`SendRequest`] beside the op, id and queue.
#[derive(Debug)]
pub struct QueueSend {
    /// Names the result.
    pub id: Value,
    /// The queue's name.
    pub queue: String,
    /// The message.
    pub message: SendRequest,
}

/// `{"op":"queue_receive","id":ID,"queue":Q,"max":N,"wait_ms":MS,
/// "visibility_ms":MS}`.
#[derive(Debug)]
pub struct QueueReceive {
    /// Names the result.
    pub id: Value,
    /// The queue's name.
    pub queue: String,
    /// How many, how long to wait, how long to hide them.
    pub receive: ReceiveRequest,
}

/// `{"op":"queue_delete","id":ID,"queue":Q,"receipt_handle":H}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDelete {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// Names the result.
    pub id: Value,
    /// The queue's name.
    pub queue: String,
    /// From the receive.
    pub receipt_handle: String,
}

/// `{"op":"topic_publish","id":ID,"topic":T,"message":ANY,"subject":S,
/// "attributes":{NAME:VALUE}}`: a message for a fan-out topic's
/// subscriptions, its body given as a publish's payload is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicPublish {
    #[serde(rename = "op")]
    _op: IgnoredAny,
    /// Names the result.
    pub id: Value,
    /// The fan-out topic's name.
    pub topic: String,
    /// The body: as a publish's payload.
    pub message: Box<RawValue>,
    /// `base64` for a binary body given as a base64 string.
    pub encoding: Option<String>,
    /// SNS `Subject`.
    pub subject: Option<String>,
    /// `String` message attributes.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// The op, id and queue of a queue op whose other fields are a shared
/// request shape.
#[derive(Debug, Deserialize)]
struct QueueOp {
    id: Value,
    queue: String,
}

impl QueueOp {
    /// Splits a frame into its id and queue, and the rest read as `T`
    /// (which refuses unknown fields; raw JSON values keep their text).
    fn parse<T: DeserializeOwned>(text: &str) -> Result<(QueueOp, T), String> {
        let bad = |e: serde_json::Error| format!("bad request: {e}");
        let op: QueueOp = serde_json::from_str(text).map_err(bad)?;
        let mut fields: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(text).map_err(bad)?;
        for envelope in ["op", "id", "queue"] {
            fields.remove(envelope);
        }
        let rest = serde_json::to_string(&fields).map_err(bad)?;
        let request = serde_json::from_str(&rest).map_err(bad)?;
        Ok((op, request))
    }
}

/// What every frame has: its op and maybe an id.
#[derive(Debug, Deserialize)]
struct Envelope {
    op: Option<String>,
    id: Option<Value>,
}

/// A frame that could not be understood, and its id if one was readable.
#[derive(Debug)]
pub struct BadRequest {
    /// The request's id, if any.
    pub id: Option<Value>,
    /// What is wrong.
    pub error: String,
}

impl Request {
    /// Parses a text frame: first its op, then the fields that op takes
    /// (in two passes, because a publish keeps its payload's raw text).
    pub fn parse(text: &str) -> Result<Request, BadRequest> {
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| BadRequest {
            id: None,
            error: format!("bad request: {e}"),
        })?;
        fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
            serde_json::from_str(text).map_err(|e| format!("bad request: {e}"))
        }
        let request = match envelope.op.as_deref() {
            Some("publish") => parse(text).map(Request::Publish),
            Some("subscribe") => parse(text).map(Request::Subscribe),
            Some("unsubscribe") => parse(text).map(Request::Unsubscribe),
            Some("query") => parse(text).map(Request::Query),
            Some("watch") => parse(text).map(Request::Watch),
            Some("unwatch") => parse(text).map(Request::Unwatch),
            Some("ping") => parse(text).map(Request::Ping),
            Some("queue_send") => QueueOp::parse(text).map(|(op, message)| {
                Request::QueueSend(QueueSend {
                    id: op.id,
                    queue: op.queue,
                    message,
                })
            }),
            Some("queue_receive") => QueueOp::parse(text).map(|(op, receive)| {
                Request::QueueReceive(QueueReceive {
                    id: op.id,
                    queue: op.queue,
                    receive,
                })
            }),
            Some("queue_delete") => parse(text).map(Request::QueueDelete),
            Some("topic_publish") => parse(text).map(Request::TopicPublish),
            Some(other) => Err(format!(
                "unknown op {other:?}: use publish, subscribe, unsubscribe, query, watch, unwatch, ping, queue_send, queue_receive, queue_delete or topic_publish"
            )),
            None => Err("bad request: missing field `op`".to_owned()),
        };
        request.map_err(|error| BadRequest {
            id: envelope.id,
            error,
        })
    }
}

/// Decodes a publish request's payload to the bytes to store.
pub fn payload_bytes(payload: &RawValue, encoding: Option<&str>) -> Result<Bytes, String> {
    let text = payload.get();
    let as_string = || serde_json::from_str::<String>(text).ok();
    match encoding {
        None | Some("json" | "utf8") => Ok(match as_string() {
            Some(s) => Bytes::from(s),
            None => Bytes::copy_from_slice(text.as_bytes()),
        }),
        Some("base64") => {
            let encoded = as_string().ok_or("a base64 payload must be a JSON string")?;
            BASE64
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|e| format!("payload is not valid base64: {e}"))
        }
        Some(other) => Err(format!(
            "unknown encoding {other:?}: use \"base64\", or leave it out"
        )),
    }
}

/// Builds a continuous query for a `watch` with `sql`.
pub fn watch_definition(
    query_id: String,
    sql: String,
    window: Option<&str>,
    hop: Option<&str>,
    allowed_lateness: Option<&str>,
    event_time: Option<String>,
) -> Result<QueryConfig, String> {
    let duration = |value: Option<&str>, name: &str| {
        value
            .map(|v| humantime::parse_duration(v).map_err(|e| format!("bad {name} {v:?}: {e}")))
            .transpose()
    };
    Ok(QueryConfig {
        id: query_id,
        sql,
        window: duration(window, "window")?.unwrap_or(DEFAULT_WATCH_WINDOW),
        hop: duration(hop, "hop")?,
        allowed_lateness: duration(allowed_lateness, "allowed_lateness")?,
        event_time,
        publish_topic: None,
    })
}

/// Window of a `watch` that names none.
pub const DEFAULT_WATCH_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// `{"type":"message",...}`: a message matching a subscription.
#[derive(Debug, Serialize)]
pub struct MessageFrame<'a> {
    r#type: &'static str,
    topic: &'a str,
    #[serde(flatten)]
    payload: JsonPayload,
    ts: i64,
    qos: u8,
    retain: bool,
}

impl<'a> MessageFrame<'a> {
    /// A message on `topic`, delivered at `ts` (ms since the epoch).
    pub fn new(topic: &'a str, payload: &[u8], ts: i64, qos: u8, retain: bool) -> Self {
        MessageFrame {
            r#type: "message",
            topic,
            payload: JsonPayload::new(payload, false),
            ts,
            qos,
            retain,
        }
    }
}

/// Where a durable publish was stored, in an ack.
#[derive(Debug, Serialize)]
pub struct StoredView {
    stream: String,
    offset: u64,
    ts: i64,
}

impl From<Stored> for StoredView {
    fn from(s: Stored) -> Self {
        StoredView {
            stream: s.stream.to_string(),
            offset: s.offset,
            ts: s.timestamp_ms,
        }
    }
}

/// Every frame the server sends besides messages.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    /// A request succeeded: a QoS 1 publish is durable; a subscription
    /// (or unsubscription) with an id is in place; a watch is stopped.
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        /// The request's op.
        op: &'static str,
        /// For publishes: where it was stored.
        #[serde(skip_serializing_if = "Option::is_none")]
        stored: Option<Vec<StoredView>>,
    },
    /// A query's rows.
    #[serde(rename = "result")]
    Result {
        id: Value,
        #[serde(flatten)]
        result: JsonResult,
    },
    /// A closed window of a watched continuous query (also type
    /// `result`).
    #[serde(rename = "result")]
    Window {
        id: Value,
        #[serde(flatten)]
        window: WindowView,
    },
    /// A queue op's answer (also type `result`).
    #[serde(rename = "result")]
    Queue {
        id: Value,
        #[serde(flatten)]
        answer: QueueAnswer,
    },
    /// A `topic_publish` answer: the message's id (also type `result`).
    #[serde(rename = "result")]
    Topic { id: Value, message_id: String },
    /// A request failed; the socket carries on.
    Error { id: Option<Value>, error: String },
    /// Answer to `ping`.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

/// What a queue op answers, inside a [`Reply::Queue`] frame.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum QueueAnswer {
    /// `queue_send`: the message's id (and FIFO sequence number).
    Sent(SentView),
    /// `queue_receive`: the messages, as `/api/v1/queues` gives them.
    Received { messages: Vec<MessageView> },
    /// `queue_delete`: nothing more than the id.
    Deleted {},
}

/// A window result inside a [`Reply::Window`] frame.
#[derive(Debug, Serialize)]
pub struct WindowView {
    query: String,
    window_start: i64,
    window_end: i64,
    rows: Vec<Map<String, Value>>,
    late_records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<&WindowResult> for WindowView {
    fn from(w: &WindowResult) -> Self {
        WindowView {
            query: w.query.clone(),
            window_start: w.window_start,
            window_end: w.window_end,
            rows: w.rows.clone(),
            late_records: w.late_records,
            error: w.error.clone(),
        }
    }
}

impl Reply {
    /// An error answer.
    pub fn error(id: Option<Value>, error: impl Into<String>) -> Reply {
        Reply::Error {
            id,
            error: error.into(),
        }
    }

    /// The id of the request it answers, if any.
    pub fn id(&self) -> Option<Value> {
        match self {
            Reply::Ack { id, .. } | Reply::Error { id, .. } | Reply::Pong { id } => id.clone(),
            Reply::Result { id, .. }
            | Reply::Window { id, .. }
            | Reply::Queue { id, .. }
            | Reply::Topic { id, .. } => Some(id.clone()),
        }
    }

    /// The frame's `type`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Ack { .. } => "ack",
            Reply::Result { .. }
            | Reply::Window { .. }
            | Reply::Queue { .. }
            | Reply::Topic { .. } => "result",
            Reply::Error { .. } => "error",
            Reply::Pong { .. } => "pong",
        }
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"type": "error", "error": format!("encoding a reply: {e}")})
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_op_and_refuses_unknown_fields() {
        let publish = Request::parse(r#"{"op":"publish","topic":"a/b","payload":{"t":1},"qos":1}"#)
            .expect("valid publish");
        let Request::Publish(publish) = publish else {
            panic!("not a publish: {publish:?}");
        };
        assert_eq!((publish.payload.get(), publish.qos), (r#"{"t":1}"#, 1));
        assert!(matches!(
            Request::parse(r#"{"op":"subscribe","filter":"a/#"}"#),
            Ok(Request::Subscribe(_))
        ));
        assert!(matches!(
            Request::parse(r#"{"op":"watch","id":1,"sql":"SELECT 1","window":"5s"}"#),
            Ok(Request::Watch(_))
        ));

        let typo = Request::parse(r#"{"op":"subscribe","id":"s1","fliter":"a"}"#)
            .expect_err("unknown field");
        assert_eq!(typo.id, Some(Value::from("s1")));
        assert!(typo.error.contains("fliter"), "{}", typo.error);
        let unknown = Request::parse(r#"{"op":"launch","id":7}"#).expect_err("unknown op");
        assert_eq!(unknown.id, Some(Value::from(7)));
        let garbage = Request::parse("not json").expect_err("not JSON");
        assert_eq!(garbage.id, None);
        let no_op = Request::parse(r#"{"id":"x"}"#).expect_err("no op");
        assert_eq!(no_op.id, Some(Value::from("x")));
    }

    #[test]
    fn queue_ops_parse_and_answer_as_results() {
        let Ok(Request::QueueSend(send)) = Request::parse(
            r#"{"op":"queue_send","id":1,"queue":"jobs","body":{"a": [1, 2]},"delay_ms":5}"#,
        ) else {
            panic!("a queue_send");
        };
        assert_eq!((send.id, send.queue.as_str()), (Value::from(1), "jobs"));
        assert_eq!(
            send.message.body.as_deref().map(RawValue::get),
            Some(r#"{"a": [1, 2]}"#),
            "a JSON body keeps its text"
        );
        assert_eq!(send.message.delay_ms, Some(5));
        let Ok(Request::QueueReceive(receive)) = Request::parse(
            r#"{"op":"queue_receive","id":"r","queue":"jobs","max":3,"wait_ms":100}"#,
        ) else {
            panic!("a queue_receive");
        };
        assert_eq!(
            (receive.receive.max, receive.receive.wait_ms),
            (Some(3), Some(100))
        );
        assert!(matches!(
            Request::parse(r#"{"op":"queue_delete","id":2,"queue":"jobs","receipt_handle":"h"}"#),
            Ok(Request::QueueDelete(_))
        ));
        for (bad, needle) in [
            (
                r#"{"op":"queue_send","id":1,"queue":"q","bdoy":"x"}"#,
                "bdoy",
            ),
            (r#"{"op":"queue_send","id":1,"body":"x"}"#, "queue"),
            (r#"{"op":"queue_receive","queue":"q"}"#, "id"),
            (
                r#"{"op":"queue_receive","id":1,"queue":"q","max":"ten"}"#,
                "invalid type",
            ),
            (
                r#"{"op":"queue_delete","id":1,"queue":"q"}"#,
                "receipt_handle",
            ),
        ] {
            let err = Request::parse(bad).expect_err(bad);
            assert!(err.error.contains(needle), "{bad}: {}", err.error);
        }

        let deleted = Reply::Queue {
            id: Value::from(2),
            answer: QueueAnswer::Deleted {},
        };
        assert_eq!(
            serde_json::from_str::<Value>(&deleted.to_text()).expect("JSON"),
            serde_json::json!({"type":"result","id":2})
        );
        let received = Reply::Queue {
            id: Value::from("r"),
            answer: QueueAnswer::Received { messages: vec![] },
        };
        assert_eq!(
            serde_json::from_str::<Value>(&received.to_text()).expect("JSON"),
            serde_json::json!({"type":"result","id":"r","messages":[]})
        );
    }

    #[test]
    fn payloads_decode_to_bytes() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("raw JSON");
        let decode = |s: &str, enc| payload_bytes(&raw(s), enc).expect("decodes");
        assert_eq!(decode(r#"{"a": 1}"#, None), Bytes::from(r#"{"a": 1}"#));
        assert_eq!(decode(r#""hello""#, None), Bytes::from("hello"));
        assert_eq!(decode("42", None), Bytes::from("42"));
        assert_eq!(
            decode(r#""/wA=""#, Some("base64")),
            Bytes::from(vec![0xff, 0])
        );
        assert!(payload_bytes(&raw("1"), Some("base64")).is_err());
        assert!(payload_bytes(&raw(r#""%%""#), Some("base64")).is_err());
        assert!(payload_bytes(&raw(r#""x""#), Some("rot13")).is_err());
    }

    #[test]
    fn frames_have_the_spec_shape() {
        let message = serde_json::to_value(MessageFrame::new("a/b", br#"{"t":1}"#, 5, 1, false))
            .expect("serialise");
        assert_eq!(
            message,
            serde_json::json!({"type":"message","topic":"a/b","payload":{"t":1},
                "encoding":"json","ts":5,"qos":1,"retain":false})
        );
        let error: Value =
            serde_json::from_str(&Reply::error(Some(Value::from("q1")), "boom").to_text())
                .expect("JSON");
        assert_eq!(
            error,
            serde_json::json!({"type":"error","id":"q1","error":"boom"})
        );
        let window = WindowResult {
            query: "q".into(),
            window_start: 0,
            window_end: 1000,
            rows: vec![],
            late_records: 0,
            error: None,
        };
        let frame: Value = serde_json::from_str(
            &Reply::Window {
                id: Value::from("w"),
                window: (&window).into(),
            }
            .to_text(),
        )
        .expect("JSON");
        assert_eq!(frame["type"], "result");
        assert_eq!(frame["window_end"], 1000);
    }
}
