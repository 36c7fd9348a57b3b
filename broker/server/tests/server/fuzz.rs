//! Fuzzed input, as property tests with a modest number of cases each:
//!
//! - the `/ws` JSON protocol's request parsing: random JSON-ish text and
//!   mutated valid requests parse to a request or to a clear error (which
//!   echoes only an id the frame really had), and the payloads and watch
//!   windows of the requests that parse decode or fail with a reason;
//! - the config file (`Config` loading) and `StreamConfig`, `UserConfig`
//!   and `AuthConfig` on their own: random and mutated TOML loads, or
//!   fails with an error naming the key that was changed;
//! - the real binary's HTTP API: random paths and query strings on the
//!   records API, random bodies to publish, to stream creation and to SQL,
//!   random and mutated SQL. Every answer is a 2xx or a JSON
//!   `{"error":...}` 4xx, or the documented 503 busy (with `Retry-After`),
//!   never another 5xx; afterwards a publish and a query still work and
//!   `/healthz` is ok;
//! - the real binary's `/ws` socket: random and mutated frames each get
//!   well-formed answers, and the socket stays open and usable;
//! - garbage and half-open connections on every listener of the real
//!   binary (MQTT over TCP, HTTP, `/ws`, `/mqtt`): random bytes, mutated
//!   and truncated packets, connections left idle, reset, or closed in
//!   the middle of a frame, while an MQTT client publishes at QoS 1. The
//!   server stays up, answers no garbage with a 5xx, and every
//!   acknowledged publish is in the stream afterwards.
//!
//! The tests against the binary draw their cases from a seeded generator:
//! a failure names its seed and case, and `TIDEWIRE_FUZZ_SEED=N` runs
//! another set.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, json};
use tidewire::{Config, ConfigLoadError};
use tidewire_auth::{AuthConfig, AuthTable, UserConfig};
use tidewire_core::StreamConfig;
use tidewire_websocket::frames::{Request, payload_bytes, watch_definition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// Cases of each in-process property test.
const PARSER_CASES: u32 = 256;
/// Requests sent to each HTTP endpoint of the binary.
const HTTP_CASES: usize = 200;
/// Frames sent to one `/ws` socket of the binary.
const WS_CASES: usize = 200;
/// Garbage connections, over all four listeners.
const GARBAGE_CASES: usize = 400;
/// Garbage connections open at once.
const GARBAGE_BATCH: usize = 8;
/// The seed of the cases sent to the binary unless `TIDEWIRE_FUZZ_SEED`
/// says otherwise.
const DEFAULT_SEED: u64 = 0x6675_7a7a_6564_0001;
/// Longest wait for one answer from the binary.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// `cases` cases, and no regression files written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn seed() -> u64 {
    std::env::var("TIDEWIRE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// `n` values of `strategy`, drawn from `seed`.
fn samples<S: Strategy>(strategy: S, n: usize, seed: u64) -> Vec<S::Value> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(config(1), rng);
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("a value from the strategy")
                .current()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Mutations shared by every target.
// ---------------------------------------------------------------------------

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        2 => (any::<Index>(), vec(any::<u8>(), 1..6)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => (any::<Index>(), 1usize..6).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => (any::<Index>(), 1usize..12).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        if len == 0 {
            if let Mutation::Insert(_, new) = m {
                bytes.extend_from_slice(new);
            }
            continue;
        }
        match m {
            Mutation::Flip(at, bit) => bytes[at.index(len)] ^= 1 << bit,
            Mutation::Set(at, byte) => bytes[at.index(len)] = *byte,
            Mutation::Insert(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove(at, n) => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(at, n) => {
                let at = at.index(len);
                let copy = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, copy);
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(len)),
        }
    }
    bytes
}

/// `text` mutated byte by byte, as text again (invalid UTF-8 replaced).
fn mutate_text(text: &str, mutations: &[Mutation]) -> String {
    String::from_utf8_lossy(&mutate(text.as_bytes().to_vec(), mutations)).into_owned()
}

/// JSON values that are wrong, odd or extreme in some way.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        select(vec![0i64, -1, 1, 2, 3, 255, 256, 65536, i64::MAX, i64::MIN]).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        select(vec![1.5f64, -0.0, 1e300, -1e300]).prop_map(Value::from),
        select(vec![
            "",
            "x",
            "1s",
            "0s",
            "-1s",
            "1ns",
            "99999999999999999999h",
            "1000000000y",
            "5s",
            "aGk=",
            "%%",
            "a/#/b",
            "#",
            "+",
            "$SYS/x",
            "fuzz/a",
            "base64",
            "json",
            "SELECT 1",
            "never",
            "always",
            "interval:0",
            "0B",
            "1TiB",
            "16EiB",
            "1MiB",
            "events",
            "é",
            "\u{0}",
            "\u{202e}",
        ])
        .prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A change to a JSON object.
#[derive(Debug, Clone)]
enum JsonEdit {
    /// Gives an existing field another value.
    Replace(Index, Value),
    /// Removes a field.
    Remove(Index),
    /// Adds a field, maybe one the object may not have.
    Add(String, Value),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        4 => (any::<Index>(), json_value()).prop_map(|(at, v)| JsonEdit::Replace(at, v)),
        2 => any::<Index>().prop_map(JsonEdit::Remove),
        1 => ("[a-z_]{1,10}", json_value()).prop_map(|(k, v)| JsonEdit::Add(k, v)),
    ]
}

fn edit_json(mut object: Map<String, Value>, edits: &[JsonEdit]) -> Value {
    for edit in edits {
        let keys: Vec<String> = object.keys().cloned().collect();
        match edit {
            JsonEdit::Replace(at, value) if !keys.is_empty() => {
                object.insert(keys[at.index(keys.len())].clone(), value.clone());
            }
            JsonEdit::Remove(at) if !keys.is_empty() => {
                object.remove(&keys[at.index(keys.len())]);
            }
            JsonEdit::Add(key, value) => {
                object.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(object)
}

/// `valid` (a JSON object) changed field by field, or byte by byte.
fn mutated_json(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    let chosen = select(valid.to_vec());
    prop_oneof![
        (chosen.clone(), vec(json_edit(), 1..4)).prop_map(|(text, edits)| {
            let Ok(Value::Object(object)) = serde_json::from_str(text) else {
                panic!("not a JSON object: {text}");
            };
            edit_json(object, &edits).to_string()
        }),
        (chosen, mutations()).prop_map(|(text, m)| mutate_text(text, &m)),
    ]
}

// ---------------------------------------------------------------------------
// The `/ws` JSON protocol's parser.
// ---------------------------------------------------------------------------

/// Requests of every op, valid as they are.
const VALID_REQUESTS: &[&str] = &[
    r#"{"op":"publish","id":1,"topic":"fuzz/ws","payload":{"t":21.5},"qos":1,"retain":false}"#,
    r#"{"op":"publish","topic":"fuzz/ws","payload":"aGVsbG8=","encoding":"base64"}"#,
    r#"{"op":"publish","id":"p","topic":"fuzz/ws","payload":"text","encoding":"utf8"}"#,
    r#"{"op":"publish","topic":"fuzz/ws","payload":[1,2,3],"qos":0,"retain":true}"#,
    r#"{"op":"subscribe","id":"s","filter":"fuzz/#"}"#,
    r#"{"op":"unsubscribe","id":"u","filter":"fuzz/#"}"#,
    r#"{"op":"query","id":"q","sql":"SELECT count(*) AS n FROM events"}"#,
    r#"{"op":"watch","id":"w","sql":"SELECT count(*) AS n FROM events","window":"5s","hop":"1s","allowed_lateness":"1s","event_time":"ts"}"#,
    r#"{"op":"watch","id":"w2","query":"configured"}"#,
    r#"{"op":"unwatch","id":"w"}"#,
    r#"{"op":"ping","id":[1,{"a":null}]}"#,
    r#"{"op":"queue_send","id":"qs","queue":"jobs","body":{"t":1},"attributes":{"a":{"type":"String","value":"v"}},"delay_ms":5}"#,
    r#"{"op":"queue_send","id":2,"queue":"jobs.fifo","body_base64":"aGk=","group":"g","dedup_id":"d"}"#,
    r#"{"op":"queue_receive","id":"qr","queue":"jobs","max":10,"wait_ms":100,"visibility_ms":1000}"#,
    r#"{"op":"queue_delete","id":"qd","queue":"jobs","receipt_handle":"h"}"#,
];

/// Pieces of JSON text: punctuation, the protocol's names, odd values.
fn json_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "{", "}", "[", "]", ":", ",", "\"op\"", "\"id\"", "\"topic\"", "\"payload\"",
            "\"qos\"", "\"retain\"", "\"encoding\"", "\"filter\"", "\"sql\"", "\"query\"",
            "\"window\"", "\"hop\"", "\"allowed_lateness\"", "\"event_time\"", "\"publish\"",
            "\"subscribe\"", "\"unsubscribe\"", "\"watch\"", "\"unwatch\"", "\"ping\"",
            "\"queue_send\"", "\"queue_receive\"", "\"queue_delete\"", "\"queue\"",
            "\"body\"", "\"body_base64\"", "\"receipt_handle\"", "\"max\"",
            "\"base64\"", "null", "true", "false", "0", "-1", "1e999", "18446744073709551616",
            "\"\\u0000\"", "\"\\ud800\"", "\"", "\\", " ",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{1,6}",
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Text that looks like JSON, mostly.
fn json_ish() -> impl Strategy<Value = String> {
    vec(json_piece(), 0..24).prop_map(|pieces| pieces.concat())
}

/// A frame parses to a request (whose payload and window then decode or
/// fail with a reason) or to an error that says "bad request" or names
/// the unknown op, and echoes an id only when the frame has that id.
fn check_ws_frame(text: &str) -> Result<(), TestCaseError> {
    match Request::parse(text) {
        Ok(Request::Publish(publish)) => {
            if let Err(e) = payload_bytes(&publish.payload, publish.encoding.as_deref()) {
                prop_assert!(!e.is_empty(), "an empty payload error for {}", text);
            }
        }
        Ok(Request::QueueSend(send)) => {
            if let Err(e) = send.message.into_outgoing(String::new()) {
                prop_assert!(
                    !e.to_string().is_empty(),
                    "an empty send error for {}",
                    text
                );
            }
        }
        Ok(Request::QueueReceive(receive)) => {
            if let Err(e) = receive.receive.options() {
                prop_assert!(
                    !e.to_string().is_empty(),
                    "an empty receive error for {}",
                    text
                );
            }
        }
        Ok(Request::Watch(w)) => {
            if let Some(sql) = w.sql {
                let defined = watch_definition(
                    "fuzz".into(),
                    sql,
                    w.window.as_deref(),
                    w.hop.as_deref(),
                    w.allowed_lateness.as_deref(),
                    w.event_time,
                );
                if let Err(e) = defined {
                    prop_assert!(!e.is_empty(), "an empty watch error for {}", text);
                }
            }
        }
        Ok(_) => {}
        Err(bad) => {
            prop_assert!(
                bad.error.starts_with("bad request: ") || bad.error.starts_with("unknown op "),
                "unclear error {:?} for {}",
                bad.error,
                text
            );
            if let Some(id) = &bad.id {
                let frame: Value = serde_json::from_str(text).map_err(|e| {
                    TestCaseError::fail(format!("echoed id {id} of a frame that is not JSON: {e}"))
                })?;
                prop_assert_eq!(frame.get("id"), Some(id), "echoed an id the frame lacks");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(PARSER_CASES))]

    #[test]
    fn ws_json_ish_frames_parse_or_fail_clearly(text in json_ish()) {
        check_ws_frame(&text)?;
    }

    #[test]
    fn ws_mutated_requests_parse_or_fail_clearly(text in mutated_json(VALID_REQUESTS)) {
        check_ws_frame(&text)?;
    }
}

// ---------------------------------------------------------------------------
// Config: the file, and streams, users and `[auth]` on their own.
// ---------------------------------------------------------------------------

/// A config that sets (nearly) every key, valid as it is. One key a
/// line, so a mutation of a line changes one key.
const CONFIG: &str = r##"data_dir = "/nonexistent/tidewire-fuzz"

[http]
listen = "127.0.0.1:0"
header_read_timeout = "5s"
max_connections_per_ip = 64

[mqtt]
listen = "127.0.0.1:0"
max_connections = 100
max_packet_bytes = "256KiB"
receive_maximum = 32
max_inflight = 16
max_queued_messages = 1000
max_keepalive = 600
connect_timeout = "5s"
session_save_interval = "30s"

[auth]
allow_anonymous = true
open_metrics = true

[auth.anonymous]
publish = ["public/#"]
subscribe = ["public/#", "sensors/+/temp"]
deny = ["public/secret"]
sql = ["events"]
admin = false

[[users]]
username = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
publish = ["sensors/%u/#"]
subscribe = ["sensors/#"]
deny = ["sensors/private/#"]
sql = ["*"]
admin = true

[[tokens]]
name = "dashboard"
token_hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
subscribe = ["sensors/#"]
sql = ["events"]

[limits]
max_payload_bytes = "1MiB"
max_topic_bytes = 1024
max_streams = 16

[[streams]]
name = "events"
filters = ["sensors/#", "public/#"]
fsync = "interval:100"
segment_bytes = "1MiB"
segment_age = "1h"

[streams.retention]
max_age = "7d"
max_bytes = "1GiB"

[streams.schema]
temp = { type = "double", path = "sensor.temp" }
device = { type = "varchar", path = "device" }

[sql]
memory_limit = "64MiB"
query_timeout = "10s"
total_memory_limit = "256MiB"
threads = 2
max_concurrent_queries = 4
max_queued_queries = 8

[[queries]]
id = "per_minute"
sql = "SELECT count(*) AS n FROM events"
window = "1m"
hop = "10s"
allowed_lateness = "5s"
event_time = "ts"
publish_topic = "stats/per_minute"

[websocket]
max_sockets = 100
send_queue = 64
max_frame_bytes = "64KiB"
ping_interval = "20s"
write_timeout = "5s"
max_queries = 2
max_watches = 2
max_inflight_publishes = 64
"##;

/// `[[streams]]` on its own.
const STREAM: &str = r#"name = "events"
filters = ["sensors/#", "public/+/x"]
fsync = "always"
segment_bytes = "1MiB"
segment_age = "1h"

[retention]
max_age = "7d"
max_bytes = "1GiB"

[schema]
temp = { type = "double", path = "sensor.temp" }
seen = { type = "timestamp", path = "seen" }
"#;

/// `[[users]]` on its own.
const USER: &str = r#"username = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
publish = ["sensors/%u/#", "%c/out"]
subscribe = ["sensors/#"]
deny = ["sensors/private/#"]
sql = ["events", "other"]
admin = true
"#;

/// `[auth]` on its own.
const AUTH: &str = r#"allow_anonymous = true
open_metrics = false

[anonymous]
publish = ["public/#"]
subscribe = ["public/#"]
deny = ["public/secret"]
sql = ["*"]
admin = false
"#;

/// TOML values that are wrong, odd or extreme for some key.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "0", "-1", "1", "2", "65535", "65536", "4294967296", "9223372036854775807",
            "-9223372036854775808", "1e308", "nan", "inf", "-0.0", "1.5", "true", "false",
            "\"\"", "\"x\"", "\"0s\"", "\"-1s\"", "\"1ns\"", "\"18446744073709551615s\"",
            "\"99999999999999999999h\"", "\"1000000000y\"", "\"584942417356y\"", "\"0B\"",
            "\"1TiB\"", "\"16EiB\"", "\"18446744073709551615B\"",
            "\"99999999999999999999999B\"", "\"1.5MiB\"", "\"-1MiB\"", "\"a/#/b\"", "\"#\"",
            "\"+\"", "\"$SYS/#\"", "\"interval:0\"", "\"interval:-1\"",
            "\"interval:18446744073709551616\"", "\"never\"", "\"always\"",
            "\"127.0.0.1:99999\"", "\"[::1]:0\"", "\"localhost:80\"", "\"%u\"", "\"*\"",
            "\"\\u0000\"", "\"é\"", "[]", "[1]", "[\"#\"]", "[\"\"]", "[\"a/#/b\"]", "[[]]",
            "{}", "{ a = 1 }", "{ type = \"double\" }", "{ type = \"float\", path = \"\" }",
            "1979-05-27T07:32:00Z", "\"SELECT\"", "\"SELECT * FROM nowhere\"",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{0,70}".prop_map(|s| format!("{:?}", s)),
        1 => "[a-z_0-9]{1,70}".prop_map(|s| format!("{s:?}")),
    ]
}

/// A change to one line of a TOML document: a key's value, the key
/// itself, or a key added.
#[derive(Debug, Clone)]
enum TomlEdit {
    /// The `n`th `key = value` line gets another value.
    Value(Index, String),
    /// The `n`th `key = value` line goes.
    Remove(Index),
    /// The `n`th key gets another name.
    Rename(Index, String),
    /// A key is added after the `n`th `key = value` line.
    Add(Index, String, String),
}

fn toml_edit() -> impl Strategy<Value = TomlEdit> {
    prop_oneof![
        6 => (any::<Index>(), toml_value()).prop_map(|(at, v)| TomlEdit::Value(at, v)),
        1 => any::<Index>().prop_map(TomlEdit::Remove),
        1 => (any::<Index>(), "[a-z_]{1,3}").prop_map(|(at, s)| TomlEdit::Rename(at, s)),
        1 => (any::<Index>(), "[a-z_]{3,14}", toml_value()).prop_map(|(at, k, v)| TomlEdit::Add(at, k, v)),
    ]
}

/// Applies `edit` to `document`; returns the text and the key an error
/// must name (the changed one).
fn edit_toml(document: &str, edit: &TomlEdit) -> (String, String) {
    let mut lines: Vec<String> = document.lines().map(str::to_owned).collect();
    let keyed: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('['))
        .collect();
    let key_of = |line: &str| line.split(" = ").next().unwrap_or_default().to_owned();
    let key = match edit {
        TomlEdit::Value(at, value) => {
            let i = keyed[at.index(keyed.len())];
            let key = key_of(&lines[i]);
            lines[i] = format!("{key} = {value}");
            key
        }
        TomlEdit::Remove(at) => {
            let i = keyed[at.index(keyed.len())];
            key_of(&lines.remove(i))
        }
        TomlEdit::Rename(at, suffix) => {
            let i = keyed[at.index(keyed.len())];
            let key = format!("{}{suffix}", key_of(&lines[i]));
            let value = lines[i].split_once(" = ").map(|(_, v)| v.to_owned());
            lines[i] = format!("{key} = {}", value.unwrap_or_default());
            key
        }
        TomlEdit::Add(at, key, value) => {
            let i = keyed[at.index(keyed.len())];
            lines.insert(i + 1, format!("{key} = {value}"));
            key.clone()
        }
    };
    (lines.join("\n") + "\n", key)
}

/// Pieces of TOML text: headers, keys the config knows, values.
fn toml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "\n", "[", "]", "[[", "]]", " = ", "=", ".", ",", "\"", "'", "#", "{", "}",
            "http", "mqtt", "auth", "users", "tokens", "limits", "streams", "sql", "queries",
            "websocket", "dashboards", "bridge", "nats", "tls", "listen", "name", "filters",
            "schema", "retention", "max_age", "window", "username", "password_hash",
        ])
        .prop_map(str::to_owned),
        2 => toml_value(),
        1 => any::<char>().prop_map(String::from),
    ]
}

fn toml_ish() -> impl Strategy<Value = String> {
    vec(toml_piece(), 0..40).prop_map(|pieces| pieces.concat())
}

/// Loads `text` as the config file, as `check-config` does.
fn load_config(text: &str) -> Result<Config, ConfigLoadError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzzed.toml");
    std::fs::write(&path, text).expect("write the config");
    Config::check_file(&path)
}

/// An error loading the file names the file.
fn check_config_error(err: &ConfigLoadError) -> Result<String, TestCaseError> {
    let text = err.to_string();
    prop_assert!(text.starts_with("config file "), "{}", text);
    prop_assert!(text.contains("fuzzed.toml"), "{}", text);
    Ok(text)
}

/// The last dotted part of `key`, without an index: what a message must
/// name.
fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// `message` names `key` (a TOML parse error shows the line, a
/// validation error the dotted path).
fn names_key(message: &str, key: &str, document: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        message.contains(leaf(key)),
        "the error does not name {:?}: {}\n--- document ---\n{}",
        key,
        message,
        document
    );
    Ok(())
}

#[test]
fn the_config_templates_are_valid() {
    load_config(CONFIG).expect("the full config loads");
    let stream: StreamConfig = toml::from_str(STREAM).expect("stream parses");
    stream.validate("streams[0]").expect("stream is valid");
    let user: UserConfig = toml::from_str(USER).expect("user parses");
    AuthTable::validate(
        &AuthConfig::default(),
        (None, None),
        &[("users[0]".to_owned(), &user)],
        &[],
    )
    .expect("user is valid");
    let auth: AuthConfig = toml::from_str(AUTH).expect("auth parses");
    AuthTable::validate(&auth, (None, None), &[], &[]).expect("auth is valid");
}

proptest! {
    #![proptest_config(config(PARSER_CASES))]

    #[test]
    fn random_toml_loads_or_fails_naming_the_file_or_the_problem(text in toml_ish()) {
        if let Err(e) = load_config(&text) {
            check_config_error(&e)?;
        }
        match toml::from_str::<StreamConfig>(&text) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(stream) => {
                if let Err(e) = stream.validate("streams[0]") {
                    prop_assert!(e.key.starts_with("streams[0]."), "{:?}", e);
                }
            }
        }
        match toml::from_str::<UserConfig>(&text) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(user) => {
                let users = [("users[0]".to_owned(), &user)];
                if let Err(e) = AuthTable::validate(&AuthConfig::default(), (None, None), &users, &[]) {
                    prop_assert!(e.key.starts_with("users[0]."), "{:?}", e);
                }
            }
        }
        match toml::from_str::<AuthConfig>(&text) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(auth) => {
                if let Err(e) = AuthTable::validate(&auth, (None, None), &[], &[]) {
                    prop_assert!(!e.key.is_empty() && !e.message.is_empty(), "{:?}", e);
                }
            }
        }
    }

    #[test]
    fn config_files_with_a_key_changed_load_or_name_the_key(edit in toml_edit()) {
        let (text, key) = edit_toml(CONFIG, &edit);
        if let Err(e) = load_config(&text) {
            let message = check_config_error(&e)?;
            names_key(&message, &key, &text)?;
        }
    }

    #[test]
    fn config_files_mutated_byte_by_byte_load_or_fail_naming_the_file(m in mutations()) {
        if let Err(e) = load_config(&mutate_text(CONFIG, &m)) {
            check_config_error(&e)?;
        }
    }

    #[test]
    fn streams_with_a_key_changed_parse_and_validate_or_name_the_key(edit in toml_edit()) {
        let (text, key) = edit_toml(STREAM, &edit);
        match toml::from_str::<StreamConfig>(&text) {
            Err(e) => names_key(&e.to_string(), &key, &text)?,
            Ok(stream) => {
                if let Err(e) = stream.validate("streams[0]") {
                    prop_assert!(e.key.starts_with("streams[0]."), "{:?}", e);
                    names_key(&e.key, &key, &text)?;
                }
            }
        }
    }

    #[test]
    fn users_with_a_key_changed_parse_and_validate_or_name_the_key(edit in toml_edit()) {
        let (text, key) = edit_toml(USER, &edit);
        match toml::from_str::<UserConfig>(&text) {
            Err(e) => names_key(&e.to_string(), &key, &text)?,
            Ok(user) => {
                let users = [("users[0]".to_owned(), &user)];
                if let Err(e) = AuthTable::validate(&AuthConfig::default(), (None, None), &users, &[]) {
                    prop_assert!(e.key.starts_with("users[0]."), "{:?}", e);
                    names_key(&e.key, &key, &text)?;
                }
            }
        }
    }

    #[test]
    fn auth_with_a_key_changed_parses_and_validates_or_names_the_key(edit in toml_edit()) {
        let (text, key) = edit_toml(AUTH, &edit);
        match toml::from_str::<AuthConfig>(&text) {
            Err(e) => names_key(&e.to_string(), &key, &text)?,
            Ok(auth) => {
                if let Err(e) = AuthTable::validate(&auth, (None, None), &[], &[]) {
                    names_key(&e.key, &key, &text)?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Talking raw HTTP/1.1 to the binary.
// ---------------------------------------------------------------------------

/// An answer read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The text of a JSON `{"error": TEXT}` body, when it is one.
    fn error_text(&self) -> Option<String> {
        let text = self.json()?.get("error")?.as_str()?.to_owned();
        (!text.is_empty()).then_some(text)
    }
}

/// The start of `bytes`, as text, for a failure message.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if bytes.len() > 300 {
        format!("{text}...")
    } else {
        text
    }
}

/// Sends one request on a connection of its own (`Connection: close`)
/// and reads the answer. `target` goes on the request line as it is.
async fn send_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> Result<Reply, String> {
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let exchange = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.write_all(&request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut received = Vec::new();
        tcp.read_to_end(&mut received)
            .await
            .map_err(|e| format!("read: {e}"))?;
        parse_reply(&received)
    };
    tokio::time::timeout(ANSWER_LIMIT, exchange)
        .await
        .map_err(|_| format!("no answer within {ANSWER_LIMIT:?}"))?
}

fn parse_reply(bytes: &[u8]) -> Result<Reply, String> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no whole answer: {:?}", preview(bytes)))?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &bytes[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size without a line end")?;
        let line = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("a bad chunk size {line:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or("a chunk cut short")?;
        body.extend_from_slice(chunk);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// What is wrong with the answer to a fuzzed request: anything but a 2xx,
/// a 4xx with a JSON error, or a 503 busy (JSON error and `Retry-After`).
fn judge(reply: &Result<Reply, String>) -> Option<String> {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return Some(e.clone()),
    };
    match reply.status {
        200..=299 => None,
        400..=499 if reply.error_text().is_some() => None,
        503 if reply.error_text().is_some() && reply.header("retry-after").is_some() => None,
        status => Some(format!("{status}: {}", preview(&reply.body))),
    }
}

// ---------------------------------------------------------------------------
// The HTTP API of the binary.
// ---------------------------------------------------------------------------

/// Streams with a schema, and SQL limits small enough that no query can
/// run long.
const HTTP_CONFIG: &str = r##"
[sql]
memory_limit = "64MiB"
total_memory_limit = "128MiB"
query_timeout = "2s"
max_concurrent_queries = 2
max_queued_queries = 4

[[streams]]
name = "events"
filters = ["#"]

[streams.schema]
temp = { type = "double", path = "t" }
device = { type = "varchar", path = "d" }

[[queues]]
name = "jobs"
from = ["fuzz/#"]
"##;

/// Text a request target may carry: the characters allowed as they are,
/// percent-escapes of any byte, and broken escapes.
fn uri_text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            6 => "[A-Za-z0-9._~!$&'()*+,;=:@/-]",
            2 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
            1 => select(vec![
                "%", "%zz", "%4", "%C3%28", "%FF", "%00", "%2F", "%25", "..", "//", "?",
            ])
            .prop_map(str::to_owned),
        ],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

/// `name=value`, or a bare name, or junk.
fn query_param(values: Vec<(&'static str, Vec<&'static str>)>) -> impl Strategy<Value = String> {
    let known = select(values).prop_flat_map(|(name, values)| {
        prop_oneof![
            3 => select(values).prop_map(str::to_owned),
            1 => uri_text(),
        ]
        .prop_map(move |value| format!("{name}={value}"))
    });
    prop_oneof![
        6 => known,
        1 => ("[a-z_]{1,8}", uri_text()).prop_map(|(k, v)| format!("{k}={v}")),
        1 => uri_text(),
    ]
}

/// `GET /api/v1/streams/{name}/records?...` targets. `wait_ms` is only
/// ever short or invalid, so no read waits long.
fn records_target() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => Just("events".to_owned()),
        1 => Just("nope".to_owned()),
        2 => uri_text().prop_filter("not a slash", |t| !t.contains('/') && !t.contains('?')),
    ];
    let time = "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{1,12})?(Z|%2B[0-9]{2}:[0-9]{2}|-[0-9]{2}:[0-9]{2})"
        .prop_map(|t| format!("from=time:{t}"));
    let params = vec(
        prop_oneof![
            5 => query_param(vec![
                ("from", vec![
                    "earliest", "latest", "offset:0", "offset:5", "offset:999999999",
                    "offset:-1", "offset:18446744073709551616", "offset:", "time:",
                    "time:2020-01-01T00:00:00Z", "time:9999-12-31T23:59:59Z",
                    "time:0000-01-01T00:00:00Z", "time:2020-13-45T25:61:61Z",
                    "time:%2B275760-09-13T00:00:00Z", "time:2020-01-01T00:00:00%2B99:99",
                ]),
                ("limit", vec!["0", "1", "100", "10000", "10001", "-1", "18446744073709551616", "1e3", ""]),
                ("wait_ms", vec!["0", "1", "50", "30001", "-1", "18446744073709551616", "x", ""]),
                ("encoding", vec!["base64", "json", "", "BASE64"]),
            ]),
            1 => time,
        ],
        0..5,
    );
    (name, params, any::<bool>()).prop_map(|(name, params, question)| {
        let query = params
            .into_iter()
            .filter(|p| !wait_is_long(p))
            .collect::<Vec<_>>()
            .join("&");
        let separator = if question || !query.is_empty() {
            "?"
        } else {
            ""
        };
        format!("/api/v1/streams/{name}/records{separator}{query}")
    })
}

/// A `wait_ms` that would hold the read open for more than 100 ms.
fn wait_is_long(param: &str) -> bool {
    param
        .strip_prefix("wait_ms=")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|ms| (101..=30_000).contains(&ms))
}

/// `POST /api/v1/publish/...` targets and bodies.
fn publish_request() -> impl Strategy<Value = (String, Vec<u8>)> {
    let topic = prop_oneof![
        3 => "fuzz/[a-z0-9/]{0,12}",
        3 => uri_text(),
        1 => Just("%24SYS/x".to_owned()),
        1 => Just(String::new()),
    ];
    let query = vec(
        query_param(vec![
            ("qos", vec!["0", "1", "2", "3", "-1", "256", "x", ""]),
            ("retain", vec!["true", "false", "1", "yes", ""]),
        ]),
        0..3,
    )
    .prop_map(|p| p.join("&"));
    let body = prop_oneof![
        vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ];
    (topic, query, body)
        .prop_map(|(topic, query, body)| (format!("/api/v1/publish/{topic}?{query}"), body))
}

/// Stream definitions, valid as they are.
const VALID_STREAMS: &[&str] = &[
    r#"{"name":"fz","filters":["fuzz/#"],"fsync":"never","segment_bytes":"64KiB","segment_age":"1h","retention":{"max_age":"1h","max_bytes":"1MiB"},"schema":{"t":{"type":"double","path":"t"}}}"#,
    r#"{"name":"fz2","filters":["fuzz/+/x","other"],"fsync":"interval:50"}"#,
];

fn stream_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => mutated_json(VALID_STREAMS).prop_map(String::into_bytes),
        1 => json_ish().prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..256),
    ]
}

/// Sends to the `jobs` queue, valid as they are.
const VALID_QUEUE_SENDS: &[&str] = &[
    r#"{"body":"hello","attributes":{"n":{"type":"Number","value":"1.5"}},"delay_ms":0}"#,
    r#"{"body_base64":"aGk=","attributes":{"b":{"type":"Binary","value":"AAE="}}}"#,
    r#"{"messages":[{"body":{"t":1}},{"body":"x","attributes":{"s":{"type":"String.x","value":"v"}}}]}"#,
];

/// Queue definitions, valid as they are.
const VALID_QUEUES: &[&str] = &[
    r#"{"name":"fz","from":["fuzz/#"],"visibility_timeout":"5s","retention":"1h","delay":"0s","max_message_bytes":"64KiB","receive_wait":"1s","dead_letter":{"queue":"jobs","max_receive_count":3}}"#,
    r#"{"name":"fz.fifo","content_based_dedup":true,"group":"{1}","fsync":"never"}"#,
];

/// `POST /api/v1/queues/jobs/messages` and `POST /api/v1/queues`.
fn queue_request() -> impl Strategy<Value = (String, Vec<u8>)> {
    let send = |body: Vec<u8>| ("/api/v1/queues/jobs/messages".to_owned(), body);
    let define = |body: Vec<u8>| ("/api/v1/queues".to_owned(), body);
    prop_oneof![
        4 => mutated_json(VALID_QUEUE_SENDS).prop_map(move |b| send(b.into_bytes())),
        1 => json_ish().prop_map(move |b| send(b.into_bytes())),
        3 => mutated_json(VALID_QUEUES).prop_map(move |b| define(b.into_bytes())),
        1 => vec(any::<u8>(), 0..256).prop_map(define),
    ]
}

/// Statements that run, over the `events` table above.
const VALID_SQL: &[&str] = &[
    "SELECT count(*) AS n FROM events",
    "SELECT topic, count(*) AS n FROM events GROUP BY topic ORDER BY n DESC",
    "SELECT \"offset\", ts, topic, temp FROM events WHERE temp > 3 ORDER BY \"offset\" LIMIT 5",
    "SELECT avg(temp) AS a, min(temp) AS lo, max(temp) AS hi FROM events",
    "SELECT date_trunc('minute', ts) AS m, count(*) AS n FROM events GROUP BY m",
    "SELECT json_get_str(payload, 'd') AS d, json_get_float(payload, 't') AS t FROM events LIMIT 3",
    "SELECT upper(topic) AS u, length(payload) AS l FROM events WHERE topic LIKE 'fuzz/%'",
    "SELECT * FROM events ORDER BY \"offset\" DESC LIMIT 1",
    "SELECT 1 + 1 AS two",
    "SELECT CAST(temp AS BIGINT) AS t FROM events WHERE device = 'd1'",
    "WITH r AS (SELECT temp FROM events) SELECT sum(temp) AS s FROM r",
    "SELECT topic FROM events UNION ALL SELECT 'x' AS topic",
    "SELECT substr(topic, 2, 3) AS s, coalesce(temp, 0) AS t FROM events",
    "SELECT count(DISTINCT topic) AS n FROM events WHERE ts >= now() - INTERVAL '1 hour'",
    "SELECT temp, row_number() OVER (ORDER BY \"offset\") AS r FROM events",
    "SELECT CASE WHEN temp > 5 THEN 'hot' ELSE 'cold' END AS c FROM events",
];

/// Words and punctuation SQL is made of, with odd values among them.
fn sql_token() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => select(vec![
            "SELECT", "FROM", "WHERE", "GROUP", "BY", "ORDER", "LIMIT", "OFFSET", "JOIN", "ON",
            "UNION", "ALL", "DISTINCT", "AS", "AND", "OR", "NOT", "NULL", "IS", "IN", "LIKE",
            "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "(", ")", ",", "*", "+", "-", "/",
            "%", "=", "<", ">", "<>", "||", "'x'", "''", "'%'", "0", "1", "-1", "1.5", "1e308",
            "9223372036854775807", "-9223372036854775808", "18446744073709551616", "events",
            "nope", "topic", "payload", "payload_bytes", "ts", "\"offset\"", "temp", "device",
            "count(*)", "sum(", "avg(", "min(", "max(", "now()", "INTERVAL", "'1 hour'", "CAST(",
            "BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMP", "json_get_str(payload,", "'t')",
            "upper(", "substr(", "date_trunc('day',", ";", "EXPLAIN", "WITH", "OVER",
            "(PARTITION", "row_number()", "NULLS", "FIRST", "DESC", "ASC", "HAVING",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
        1 => "[ -~]{1,3}",
    ]
}

/// A change to a statement, token by token.
#[derive(Debug, Clone)]
enum SqlEdit {
    Replace(Index, String),
    Insert(Index, String),
    Remove(Index),
    Duplicate(Index),
}

fn sql_edit() -> impl Strategy<Value = SqlEdit> {
    prop_oneof![
        3 => (any::<Index>(), sql_token()).prop_map(|(at, t)| SqlEdit::Replace(at, t)),
        2 => (any::<Index>(), sql_token()).prop_map(|(at, t)| SqlEdit::Insert(at, t)),
        2 => any::<Index>().prop_map(SqlEdit::Remove),
        1 => any::<Index>().prop_map(SqlEdit::Duplicate),
    ]
}

fn edit_sql(sql: &str, edits: &[SqlEdit]) -> String {
    let mut tokens: Vec<String> = sql.split_whitespace().map(str::to_owned).collect();
    for edit in edits {
        let len = tokens.len();
        match edit {
            SqlEdit::Insert(at, token) => tokens.insert(at.index(len + 1), token.clone()),
            _ if len == 0 => {}
            SqlEdit::Replace(at, token) => tokens[at.index(len)] = token.clone(),
            SqlEdit::Remove(at) => {
                tokens.remove(at.index(len));
            }
            SqlEdit::Duplicate(at) => {
                let at = at.index(len);
                tokens.insert(at, tokens[at].clone());
            }
        }
    }
    tokens.join(" ")
}

/// Statements that parse, with a place for a value marked `{}`.
const SQL_TEMPLATES: &[&str] = &[
    "SELECT {} AS v",
    "SELECT {} AS a, {} AS b FROM events LIMIT 3",
    "SELECT count(*) AS n FROM events WHERE temp > {}",
    "SELECT substr(topic, {}, {}) AS s FROM events",
    "SELECT * FROM events LIMIT {}",
    "SELECT * FROM events ORDER BY \"offset\" LIMIT 2 OFFSET {}",
    "SELECT CAST({} AS BIGINT) AS v",
    "SELECT CAST({} AS DOUBLE) AS v",
    "SELECT CAST({} AS TIMESTAMP) AS v",
    "SELECT CAST({} AS VARCHAR) AS v",
    "SELECT date_trunc({}, ts) AS d FROM events LIMIT 2",
    "SELECT json_get_str(payload, {}) AS v FROM events LIMIT 2",
    "SELECT json_get_float({}, 't') AS v",
    "SELECT upper({}) AS u, lower({}) AS l",
    "SELECT {} + {} AS s",
    "SELECT {} * {} AS p",
    "SELECT {} / {} AS q",
    "SELECT {} % {} AS r",
    "SELECT abs({}) AS a, round({}, {}) AS r",
    "SELECT to_timestamp({}) AS t",
    "SELECT now() - INTERVAL {} AS t",
    "SELECT * FROM events WHERE ts > {} LIMIT 2",
    "SELECT \"offset\" FROM events WHERE \"offset\" BETWEEN {} AND {}",
    "SELECT coalesce({}, {}) AS c",
    "SELECT {} IN ({}, {}) AS i",
    "SELECT topic FROM events WHERE topic LIKE {} LIMIT 3",
    "SELECT left(topic, {}) AS l, right(topic, {}) AS r FROM events LIMIT 2",
    "SELECT date_bin(INTERVAL {}, ts) AS b, count(*) AS n FROM events GROUP BY b",
    "SELECT temp FROM events ORDER BY temp LIMIT {}",
];

/// Values for [`SQL_TEMPLATES`]: extremes, wrong types, columns.
fn sql_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "0", "1", "-1", "2147483647", "-2147483648", "9223372036854775807",
            "-9223372036854775808", "18446744073709551616", "1e308", "-1e308", "1.5", "0.0",
            "NULL", "'x'", "''", "'%'", "'_%'", "'1 hour'", "'1000000 years'", "'second'",
            "'quarter'", "'nope'", "'{\"t\":1}'", "'[1,2]'", "TRUE", "FALSE", "ts", "temp",
            "topic", "payload", "device", "\"offset\"", "CAST(NULL AS INT)", "'NaN'", "'inf'",
            "'2020-01-01T00:00:00Z'", "'99999-01-01'", "'-1 day'", "'0 seconds'",
        ])
        .prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[ -&(-~]{0,8}".prop_map(|s| format!("'{s}'")),
    ]
}

fn sql_with_odd_values() -> impl Strategy<Value = String> {
    (select(SQL_TEMPLATES.to_vec()), vec(sql_literal(), 3)).prop_map(|(template, values)| {
        values.iter().fold(template.to_owned(), |sql, value| {
            sql.replacen("{}", value, 1)
        })
    })
}

fn sql_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => sql_with_odd_values(),
        4 => (select(VALID_SQL.to_vec()), vec(sql_edit(), 1..4))
            .prop_map(|(sql, edits)| edit_sql(sql, &edits)),
        1 => (select(VALID_SQL.to_vec()), mutations()).prop_map(|(sql, m)| mutate_text(sql, &m)),
        1 => vec(sql_token(), 1..20).prop_map(|tokens| tokens.join(" ")),
    ]
}

/// `POST /api/v1/sql` bodies: mostly `{"sql": S}` with fuzzed SQL.
fn sql_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => sql_text().prop_map(|sql| json!({ "sql": sql }).to_string().into_bytes()),
        1 => json_value().prop_map(|v| json!({ "sql": v }).to_string().into_bytes()),
        1 => mutated_json(&[r#"{"sql":"SELECT count(*) AS n FROM events"}"#])
            .prop_map(String::into_bytes),
        1 => json_ish().prop_map(String::into_bytes),
    ]
}

/// One fuzzed request, and what it is.
#[derive(Debug, Clone)]
struct Fuzzed {
    method: &'static str,
    target: String,
    body: Vec<u8>,
}

/// The failures of `requests`, each named with its request.
async fn send_all(addr: SocketAddr, requests: &[Fuzzed], failures: &mut Vec<String>) {
    for (i, request) in requests.iter().enumerate() {
        let headers = if request.target == "/api/v1/sql" || request.target == "/api/v1/streams" {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        let reply = send_http(
            addr,
            request.method,
            &request.target,
            headers,
            &request.body,
        )
        .await;
        let mut problem = judge(&reply);
        if let Ok(reply) = &reply {
            problem = problem.or_else(|| shape_problem(request, reply));
            if reply.status == 201 {
                problem = problem.or(delete_created(addr, &request.target, reply).await);
            }
        }
        if let Some(problem) = problem {
            failures.push(format!(
                "case {i}: {} {} with {:?}: {problem}",
                request.method,
                request.target,
                preview(&request.body)
            ));
        }
    }
}

/// What is wrong with a 2xx answer's shape for `request`.
fn shape_problem(request: &Fuzzed, reply: &Reply) -> Option<String> {
    if !(200..300).contains(&reply.status) {
        return None;
    }
    let body = reply.json();
    let ok = match request.target.as_str() {
        "/api/v1/sql" => body
            .as_ref()
            .is_some_and(|b| b["columns"].is_array() && b["rows"].is_array()),
        "/api/v1/streams" | "/api/v1/queues" => {
            body.as_ref().is_some_and(|b| b["name"].is_string())
        }
        "/api/v1/queues/jobs/messages" => body
            .as_ref()
            .is_some_and(|b| b["message_id"].is_string() || b["results"].is_array()),
        target if target.starts_with("/api/v1/publish/") => {
            body.as_ref().is_some_and(|b| b["stored"].is_array())
        }
        _ => body
            .as_ref()
            .is_some_and(|b| b["records"].is_array() && b["next_offset"].is_u64()),
    };
    (!ok).then(|| {
        format!(
            "{} of an unexpected shape: {}",
            reply.status,
            preview(&reply.body)
        )
    })
}

/// Deletes the stream or queue a fuzzed definition posted to `collection`
/// created (204 expected).
async fn delete_created(addr: SocketAddr, collection: &str, created: &Reply) -> Option<String> {
    let name = created.json()?["name"].as_str()?.to_owned();
    let reply = send_http(addr, "DELETE", &format!("{collection}/{name}"), "", b"").await;
    match reply {
        Ok(reply) if reply.status == 204 => None,
        Ok(reply) => Some(format!(
            "deleting what it created: {} {}",
            reply.status,
            preview(&reply.body)
        )),
        Err(e) => Some(format!("deleting what it created: {e}")),
    }
}

/// Statements the fuzzing found answered with a 500 (DataFusion calls
/// these type mismatches internal errors); each is the query's fault: a
/// 400.
const SQL_REGRESSIONS: &[&str] = &[
    "SELECT \"offset\" FROM events WHERE \"offset\" BETWEEN TRUE AND 'inf'",
    "SELECT \"offset\" FROM events WHERE \"offset\" BETWEEN '0 seconds' AND ts",
    "SELECT \"offset\" FROM events WHERE \"offset\" BETWEEN 18446744073709551616 AND ts",
];

/// After the fuzzing: `/healthz` is ok, a publish is stored and a query
/// sees it.
async fn still_serves(api: &Api) {
    let (status, health) = api.get("/healthz").await.expect("GET /healthz");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let (status, body) = api
        .publish("after/fuzz", "qos=1", r#"{"t":99}"#)
        .await
        .expect("publish");
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .post_json(
            "/api/v1/sql",
            json_sql("SELECT count(*) AS n FROM events WHERE topic = 'after/fuzz'"),
        )
        .await
        .expect("query");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0][0], 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_http_requests_get_json_answers_and_no_5xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), HTTP_CONFIG).await;
    let api = Api::new(broker.http_url());
    for i in 0..20 {
        let body = format!(r#"{{"t":{i},"d":"d{}"}}"#, i % 3);
        let (status, reply) = api
            .publish(&format!("fuzz/{}", i % 4), "qos=1", body)
            .await
            .expect("publish");
        assert_eq!(status, 200, "{reply}");
    }
    let addr = broker.listeners["http"];
    let seed = seed();
    let targets: [(&str, Vec<Fuzzed>); 5] = [
        (
            "records",
            samples(records_target(), HTTP_CASES, seed)
                .into_iter()
                .map(|target| Fuzzed {
                    method: "GET",
                    target,
                    body: Vec::new(),
                })
                .collect(),
        ),
        (
            "publish",
            samples(publish_request(), HTTP_CASES, seed)
                .into_iter()
                .map(|(target, body)| Fuzzed {
                    method: "POST",
                    target,
                    body,
                })
                .collect(),
        ),
        (
            "streams",
            samples(stream_body(), HTTP_CASES, seed)
                .into_iter()
                .map(|body| Fuzzed {
                    method: "POST",
                    target: "/api/v1/streams".into(),
                    body,
                })
                .collect(),
        ),
        (
            "queues",
            samples(queue_request(), HTTP_CASES, seed)
                .into_iter()
                .map(|(target, body)| Fuzzed {
                    method: "POST",
                    target,
                    body,
                })
                .collect(),
        ),
        (
            "sql",
            samples(sql_body(), HTTP_CASES, seed)
                .into_iter()
                .map(|body| Fuzzed {
                    method: "POST",
                    target: "/api/v1/sql".into(),
                    body,
                })
                .collect(),
        ),
    ];
    let mut failures = Vec::new();
    for sql in SQL_REGRESSIONS {
        let body = json_sql(sql).to_string();
        let reply = send_http(addr, "POST", "/api/v1/sql", "", body.as_bytes()).await;
        match &reply {
            Ok(reply) if reply.status == 400 && reply.error_text().is_some() => {}
            other => failures.push(format!("{sql}: not a 400 with an error: {other:?}")),
        }
    }
    for (what, requests) in &targets {
        let started = Instant::now();
        send_all(addr, requests, &mut failures).await;
        eprintln!(
            "{what}: {} requests in {:?}",
            requests.len(),
            started.elapsed()
        );
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {} fuzzed requests got a wrong answer:\n{}\n--- log ---\n{}",
        failures.len(),
        targets.len() * HTTP_CASES,
        failures.join("\n"),
        broker.log()
    );
    still_serves(&api).await;
}

// ---------------------------------------------------------------------------
// The `/ws` socket of the binary.
// ---------------------------------------------------------------------------

/// One fuzzed `/ws` message.
#[derive(Debug, Clone)]
enum WsInput {
    Text(String),
    Binary(Vec<u8>),
}

fn ws_input() -> impl Strategy<Value = WsInput> {
    prop_oneof![
        6 => mutated_json(VALID_REQUESTS).prop_map(WsInput::Text),
        2 => json_ish().prop_map(WsInput::Text),
        1 => select(VALID_REQUESTS.to_vec()).prop_map(|t| WsInput::Text(t.to_owned())),
        1 => vec(any::<u8>(), 0..64).prop_map(WsInput::Binary),
    ]
}

/// What is wrong with a frame from the server: it must be JSON with a
/// known `type`, and an error must say what went wrong.
fn ws_frame_problem(frame: &Message) -> Option<String> {
    let text = match frame {
        Message::Text(text) => text.as_str(),
        Message::Ping(_) | Message::Pong(_) => return None,
        other => return Some(format!("an unexpected frame {other:?}")),
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Some(format!(
            "a frame that is not JSON: {}",
            preview(text.as_bytes())
        ));
    };
    match value["type"].as_str() {
        Some("ack" | "result" | "pong" | "message") => None,
        Some("error") if value["error"].as_str().is_some_and(|e| !e.is_empty()) => None,
        _ => Some(format!(
            "a frame of an unknown shape: {}",
            preview(text.as_bytes())
        )),
    }
}

type WsClient = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Reads frames until the pong answering ping `id`; returns what was
/// wrong with any frame on the way, or with the socket.
async fn until_pong(ws: &mut WsClient, id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    loop {
        let frame = match tokio::time::timeout(ANSWER_LIMIT, ws.next()).await {
            Err(_) => {
                problems.push(format!("no pong {id} within {ANSWER_LIMIT:?}"));
                return problems;
            }
            Ok(None) => {
                problems.push("the socket closed".into());
                return problems;
            }
            Ok(Some(Err(e))) => {
                problems.push(format!("the socket failed: {e}"));
                return problems;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Message::Close(close) = &frame {
            problems.push(format!("the server closed the socket: {close:?}"));
            return problems;
        }
        problems.extend(ws_frame_problem(&frame));
        if let Message::Text(text) = &frame
            && serde_json::from_str::<Value>(text)
                .is_ok_and(|v| v["type"] == "pong" && v["id"] == id)
        {
            return problems;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_ws_frames_get_clear_answers_and_the_socket_stays_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), HTTP_CONFIG).await;
    let url = format!("{}/ws", broker.http_url().replacen("http://", "ws://", 1));
    let seed = seed();
    let inputs = samples(ws_input(), WS_CASES, seed);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect /ws");
    let mut failures = Vec::new();
    let started = Instant::now();
    for (i, input) in inputs.iter().enumerate() {
        let message = match input {
            WsInput::Text(text) => Message::Text(text.clone().into()),
            WsInput::Binary(bytes) => Message::Binary(bytes.clone().into()),
        };
        let id = format!("sync-{i}");
        let sent = async {
            ws.send(message).await?;
            ws.send(Message::Text(
                json!({"op": "ping", "id": id}).to_string().into(),
            ))
            .await
        }
        .await;
        let problems = match sent {
            Ok(()) => until_pong(&mut ws, &id).await,
            Err(e) => vec![format!("sending failed: {e}")],
        };
        if !problems.is_empty() {
            failures.push(format!("case {i}: {input:?}: {}", problems.join("; ")));
            // Go on with a new socket.
            ws = tokio_tungstenite::connect_async(&url)
                .await
                .expect("connect /ws again")
                .0;
        }
    }
    eprintln!("/ws: {} frames in {:?}", inputs.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {} fuzzed frames went wrong:\n{}\n--- log ---\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n"),
        broker.log()
    );

    // The same socket still publishes, acknowledged once durable.
    let publish =
        json!({"op": "publish", "id": "last", "topic": "after/ws", "payload": {"t": 1}, "qos": 1});
    ws.send(Message::Text(publish.to_string().into()))
        .await
        .expect("publish over /ws");
    let acked = tokio::time::timeout(ANSWER_LIMIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(text) = frame
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["id"] == "last"
            {
                return v;
            }
        }
        Value::Null
    })
    .await
    .expect("an answer to the last publish");
    assert_eq!(
        (&acked["type"], &acked["op"]),
        (&json!("ack"), &json!("publish")),
        "{acked}"
    );
    still_serves(&Api::new(broker.http_url())).await;
}

// ---------------------------------------------------------------------------
// Garbage and half-open connections on every listener.
// ---------------------------------------------------------------------------

/// Streams for the publisher's acked messages and for everything else.
const GARBAGE_CONFIG: &str = r##"
[[streams]]
name = "acked"
filters = ["acked/#"]

[[streams]]
name = "events"
filters = ["#"]
"##;

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A packet: its first byte, the Remaining Length, the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed MQTT string.
fn mqtt_string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

fn mqtt_connect(v5: bool, client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = mqtt_string(b"MQTT");
    body.push(if v5 { 5 } else { 4 });
    body.push(0x02);
    body.extend(keep_alive.to_be_bytes());
    if v5 {
        body.push(0);
    }
    body.extend(mqtt_string(client_id.as_bytes()));
    packet(0x10, &body)
}

fn mqtt_publish(v5: bool, topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_string(topic.as_bytes());
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

fn mqtt_subscribe(v5: bool, pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend(mqtt_string(filter.as_bytes()));
    body.push(qos);
    packet(0x82, &body)
}

/// A client's session as bytes: CONNECT, then subscriptions, publishes
/// at every QoS, acks, pings and maybe a goodbye, all on `garbage/...`.
fn mqtt_session() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), "[a-z]{1,6}", vec(0u8..7, 0..8)).prop_map(|(v5, id, kinds)| {
        let mut bytes = mqtt_connect(v5, &format!("garbage-{id}"), 30);
        for (i, kind) in kinds.into_iter().enumerate() {
            let pkid = i as u16 + 1;
            bytes.extend(match kind {
                0 => mqtt_subscribe(v5, pkid, "garbage/#", 1),
                1..=3 => mqtt_publish(v5, "garbage/mqtt", kind - 1, pkid, b"garbage"),
                4 => packet(0x40, &pkid.to_be_bytes()),
                5 => packet(0xC0, &[]),
                _ => packet(0xE0, &[]),
            });
        }
        bytes
    })
}

/// HTTP requests a client might send, valid as they are.
const HTTP_REQUESTS: &[&str] = &[
    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /api/v1/streams/events/records?from=earliest&limit=5 HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /api/v1/publish/garbage/http?qos=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\ngarbage",
    "POST /api/v1/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 41\r\n\r\n{\"sql\":\"SELECT count(*) AS n FROM events\"}",
    "POST /api/v1/publish/garbage/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ngarbage\r\n0\r\n\r\n",
];

/// A WebSocket frame as a client sends it (masked).
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len if len < 126 => frame.push(0x80 | len as u8),
        len if len < 65536 => {
            frame.push(0x80 | 126);
            frame.extend((len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend((len as u64).to_be_bytes());
        }
    }
    let mask = [0x1F, 0x2E, 0x3D, 0x4C];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Which listener, or which WebSocket endpoint behind the HTTP one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Mqtt,
    Http,
    /// `/ws`: the garbage follows a successful upgrade.
    Ws,
    /// `/mqtt`: the garbage follows a successful upgrade.
    MqttWs,
}

/// How a garbage connection ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Everything sent, then FIN, and whatever the server says is read.
    Close,
    /// Everything sent, then a reset.
    Reset,
    /// Part sent, then left open until the end of the test.
    Idle,
    /// Part sent (cut inside a frame), then FIN or a reset.
    MidFrame { reset: bool },
}

#[derive(Debug, Clone)]
struct Garbage {
    door: Door,
    bytes: Vec<u8>,
    ending: Ending,
    /// Where `Idle` and `MidFrame` stop sending.
    cut: Index,
}

fn garbage() -> impl Strategy<Value = Garbage> {
    let random = vec(any::<u8>(), 1..2048);
    let mqtt = prop_oneof![
        1 => random.clone(),
        1 => mqtt_session(),
        2 => (mqtt_session(), mutations()).prop_map(|(b, m)| mutate(b, &m)),
    ]
    .prop_map(|bytes| (Door::Mqtt, bytes));
    let http_request = select(HTTP_REQUESTS.to_vec()).prop_map(|r| r.as_bytes().to_vec());
    let http = prop_oneof![
        1 => random.clone(),
        1 => http_request.clone(),
        2 => (http_request, mutations()).prop_map(|(b, m)| mutate(b, &m)),
    ]
    .prop_map(|bytes| (Door::Http, bytes));
    let ws_text = select(VALID_REQUESTS.to_vec()).prop_map(|r| ws_frame(0x1, r.as_bytes()));
    let ws = prop_oneof![
        1 => random.clone(),
        1 => vec(ws_text.clone(), 1..4).prop_map(|frames| frames.concat()),
        2 => (vec(ws_text, 1..4), mutations()).prop_map(|(f, m)| mutate(f.concat(), &m)),
    ]
    .prop_map(|bytes| (Door::Ws, bytes));
    let mqtt_ws = prop_oneof![
        1 => random,
        1 => mqtt_session().prop_map(|b| ws_frame(0x2, &b)),
        2 => (mqtt_session(), mutations()).prop_map(|(b, m)| mutate(ws_frame(0x2, &b), &m)),
        1 => (mqtt_session(), mutations()).prop_map(|(b, m)| ws_frame(0x2, &mutate(b, &m))),
    ]
    .prop_map(|bytes| (Door::MqttWs, bytes));
    let ending = prop_oneof![
        4 => Just(Ending::Close),
        2 => Just(Ending::Reset),
        1 => Just(Ending::Idle),
        2 => any::<bool>().prop_map(|reset| Ending::MidFrame { reset }),
    ];
    (prop_oneof![mqtt, http, ws, mqtt_ws], ending, any::<Index>()).prop_map(
        |((door, bytes), ending, cut)| Garbage {
            door,
            bytes,
            ending,
            cut,
        },
    )
}

/// Reads until the server closes the connection or `wait` passes; what
/// it sent.
async fn read_for(tcp: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(wait, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    received
}

/// Upgrades a new connection to `path` as a WebSocket (with the `mqtt`
/// subprotocol for `/mqtt`).
async fn upgraded(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let protocol = if path == "/mqtt" {
        "Sec-WebSocket-Protocol: mqtt\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocol}\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send the upgrade: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    };
    let complete = tokio::time::timeout(ANSWER_LIMIT, read_head)
        .await
        .unwrap_or(false);
    if !complete || !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("upgrade of {path} refused: {:?}", preview(&head)));
    }
    Ok(tcp)
}

/// Sends one garbage connection; returns it when it is to be held open,
/// and what was wrong.
async fn send_garbage(
    mqtt: SocketAddr,
    http: SocketAddr,
    case: &Garbage,
) -> (Option<TcpStream>, Option<String>) {
    let connected = match case.door {
        Door::Mqtt => TcpStream::connect(mqtt).await.map_err(|e| e.to_string()),
        Door::Http => TcpStream::connect(http).await.map_err(|e| e.to_string()),
        Door::Ws => upgraded(http, "/ws").await,
        Door::MqttWs => upgraded(http, "/mqtt").await,
    };
    let mut tcp = match connected {
        Ok(tcp) => tcp,
        Err(e) => return (None, Some(e)),
    };
    let cut = case.cut.index(case.bytes.len().max(1));
    match case.ending {
        Ending::Close => {
            let _ = tcp.write_all(&case.bytes).await;
            let _ = tcp.shutdown().await;
            let received = read_for(&mut tcp, Duration::from_millis(500)).await;
            // Every answer, pipelined ones too: none is a 5xx.
            let text = String::from_utf8_lossy(&received);
            if let Some(line) = text
                .split("\r\n")
                .find(|line| line.starts_with("HTTP/1.1 5") || line.starts_with("HTTP/1.0 5"))
                && case.door == Door::Http
            {
                return (None, Some(format!("answered with {line}")));
            }
            (None, None)
        }
        Ending::Reset => {
            let _ = tcp.write_all(&case.bytes).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = tcp.set_zero_linger();
            (None, None)
        }
        Ending::Idle => {
            let _ = tcp.write_all(&case.bytes[..cut]).await;
            (Some(tcp), None)
        }
        Ending::MidFrame { reset } => {
            let _ = tcp.write_all(&case.bytes[..cut]).await;
            if reset {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = tcp.set_zero_linger();
            } else {
                let _ = tcp.shutdown().await;
                let _ = read_for(&mut tcp, Duration::from_millis(300)).await;
            }
            (None, None)
        }
    }
}

/// What the QoS 1 publisher saw.
#[derive(Debug, Default)]
struct Published {
    /// Publishes sent, numbered from 0.
    sent: u64,
    /// The numbers whose PUBACK came.
    acked: Vec<u64>,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

/// Takes the whole packets off the front of `buf`: (first byte, body).
fn take_packets(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut packets = Vec::new();
    loop {
        let (mut len, mut at) = (0usize, 1);
        let complete = loop {
            let Some(&byte) = buf.get(at) else {
                break false;
            };
            len |= usize::from(byte & 0x7F) << (7 * (at - 1));
            at += 1;
            if byte & 0x80 == 0 {
                break true;
            }
        };
        if !complete || buf.len() < at + len {
            return packets;
        }
        let frame: Vec<u8> = buf.drain(..at + len).collect();
        packets.push((frame[0], frame[at..].to_vec()));
    }
}

/// Publishes `0`, `1`, ... at QoS 1 to `acked/mqtt` over MQTT 3.1.1 as
/// `client_id`, one at a time, each once the last is acked, until `stop`
/// (or `limit` publishes).
async fn publish_acked(
    addr: SocketAddr,
    client_id: &str,
    mut stop: watch::Receiver<bool>,
    limit: u64,
) -> Published {
    let mut published = Published::default();
    let run = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.write_all(&mqtt_connect(false, client_id, 60))
            .await
            .map_err(|e| format!("CONNECT: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        // CONNACK.
        let connack = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some((first, body)) = take_packets(&mut buf).into_iter().next() {
                    return Ok((first, body));
                }
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Err("closed before CONNACK".to_owned()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK".to_owned())??;
        if connack != (0x20, vec![0, 0]) {
            return Err(format!("refused: {connack:?}"));
        }
        while !*stop.borrow() && published.sent < limit {
            let seq = published.sent;
            let pkid = (seq % 65535) as u16 + 1;
            let payload = seq.to_string();
            tcp.write_all(&mqtt_publish(
                false,
                "acked/mqtt",
                1,
                pkid,
                payload.as_bytes(),
            ))
            .await
            .map_err(|e| format!("PUBLISH {seq}: {e}"))?;
            published.sent += 1;
            let acked = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    for (first, body) in take_packets(&mut buf) {
                        if first == 0x40 && body.starts_with(&pkid.to_be_bytes()) {
                            return Ok(());
                        }
                    }
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return Err(format!("closed before the PUBACK of {seq}")),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await
            .map_err(|_| format!("no PUBACK for {seq} within 10 s"))?;
            acked?;
            published.acked.push(seq);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = stop.changed() => {}
            }
        }
        let _ = tcp.write_all(&packet(0xE0, &[])).await;
        Ok(())
    };
    if let Err(e) = run.await {
        published.error = Some(e);
    }
    published
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_half_open_connections_on_every_listener_lose_no_acked_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), GARBAGE_CONFIG).await;
    let api = Api::new(broker.http_url());
    let (mqtt, http) = (broker.mqtt_addr(), broker.listeners["http"]);

    // Before: acked publishes over HTTP, and an MQTT publisher that goes
    // on throughout.
    let mut over_http = BTreeSet::new();
    for i in 0..10 {
        let payload = format!("http-{i}");
        let (status, body) = api
            .publish("acked/http", "qos=1", payload.clone())
            .await
            .expect("publish");
        assert_eq!(status, 200, "{body}");
        over_http.insert(payload);
    }
    let (stop, stopped) = watch::channel(false);
    let publisher = tokio::spawn(publish_acked(mqtt, "fuzz-acked", stopped, u64::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seed = seed();
    let cases = samples(garbage(), GARBAGE_CASES, seed);
    let mut failures = Vec::new();
    let mut held = Vec::new();
    let started = Instant::now();
    for (n, batch) in cases.chunks(GARBAGE_BATCH).enumerate() {
        let sent =
            futures_util::future::join_all(batch.iter().map(|c| send_garbage(mqtt, http, c))).await;
        for (i, (open, problem)) in sent.into_iter().enumerate() {
            held.extend(open);
            if let Some(problem) = problem {
                let case = &batch[i];
                failures.push(format!(
                    "case {}: {:?} {:?} {:?}: {problem}",
                    n * GARBAGE_BATCH + i,
                    case.door,
                    case.ending,
                    preview(&case.bytes)
                ));
            }
        }
    }
    eprintln!(
        "garbage: {} connections in {:?}, {} held open",
        cases.len(),
        started.elapsed(),
        held.len()
    );
    // Publishing goes on with the idle connections held, then without.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send_replace(true);
    let published = publisher.await.expect("publisher task");
    if let Some(e) = &published.error {
        failures.push(format!("the QoS 1 publisher: {e}"));
    }
    assert!(
        failures.is_empty(),
        "seed {seed}:\n{}\n--- log ---\n{}",
        failures.join("\n"),
        broker.log()
    );
    assert!(
        published.acked.len() >= 20,
        "only {} acked publishes",
        published.acked.len()
    );

    // Everything acked is in the stream, and nothing else.
    let (status, health) = api.get("/healthz").await.expect("GET /healthz");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let records = api.read_all("acked").await.expect("read acked");
    let stored_mqtt: BTreeSet<u64> = records
        .iter()
        .filter(|r| r["topic"] == "acked/mqtt")
        .map(|r| {
            String::from_utf8_lossy(&decoded(r))
                .parse()
                .expect("a number")
        })
        .collect();
    let stored_http: BTreeSet<String> = records
        .iter()
        .filter(|r| r["topic"] == "acked/http")
        .map(|r| String::from_utf8_lossy(&decoded(r)).into_owned())
        .collect();
    let lost: Vec<u64> = published
        .acked
        .iter()
        .filter(|seq| !stored_mqtt.contains(seq))
        .copied()
        .collect();
    assert!(lost.is_empty(), "acked over MQTT but not stored: {lost:?}");
    assert_eq!(stored_http, over_http, "acked over HTTP");
    assert!(
        stored_mqtt.iter().all(|&seq| seq < published.sent)
            && records.len() == stored_mqtt.len() + stored_http.len(),
        "records nobody published: {records:?}"
    );

    // New clients are served: MQTT, HTTP and SQL.
    let (_, stopped) = watch::channel(false);
    let again = publish_acked(mqtt, "fuzz-acked-after", stopped, 3).await;
    assert_eq!(
        (again.acked.len(), again.error),
        (3, None),
        "a new MQTT client"
    );
    still_serves(&api).await;
}
