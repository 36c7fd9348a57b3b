//! How a payload travels inside JSON (HTTP records, WebSocket messages):
//! a JSON payload stays JSON, byte for byte; other UTF-8 travels as a
//! string; anything else as base64. `encoding` says which it was.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::value::RawValue;

/// A payload ready to serialise as `"payload": ..., "encoding": ...`.
#[derive(Debug, Serialize)]
pub struct JsonPayload {
    /// The payload: raw JSON, a string, or base64 text.
    pub payload: PayloadValue,
    /// `json`, `utf8` or `base64`.
    pub encoding: &'static str,
}

/// The three forms of a payload in JSON.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PayloadValue {
    /// A payload that was valid JSON, embedded as is.
    Json(Box<RawValue>),
    /// UTF-8 text, or base64 of binary data.
    Text(String),
}

impl JsonPayload {
    /// Chooses the form for `bytes`. With `force_base64`, always base64, so
    /// clients that need the exact bytes can ask for them.
    pub fn new(bytes: &[u8], force_base64: bool) -> JsonPayload {
        if !force_base64 && let Ok(text) = std::str::from_utf8(bytes) {
            return match serde_json::from_str::<Box<RawValue>>(text) {
                Ok(raw) => JsonPayload {
                    payload: PayloadValue::Json(raw),
                    encoding: "json",
                },
                Err(_) => JsonPayload {
                    payload: PayloadValue::Text(text.to_owned()),
                    encoding: "utf8",
                },
            };
        }
        JsonPayload {
            payload: PayloadValue::Text(BASE64.encode(bytes)),
            encoding: "base64",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(bytes: &[u8], force: bool) -> String {
        serde_json::to_string(&JsonPayload::new(bytes, force)).expect("serialise")
    }

    #[test]
    fn chooses_json_text_or_base64() {
        assert_eq!(
            render(br#"{"t": 21.5}"#, false),
            r#"{"payload":{"t": 21.5},"encoding":"json"}"#
        );
        assert_eq!(
            render(b"hello", false),
            r#"{"payload":"hello","encoding":"utf8"}"#
        );
        assert_eq!(render(b"42", false), r#"{"payload":42,"encoding":"json"}"#);
        assert_eq!(
            render(&[0xff, 0x00], false),
            r#"{"payload":"/wA=","encoding":"base64"}"#
        );
        assert_eq!(
            render(b"hi", true),
            r#"{"payload":"aGk=","encoding":"base64"}"#
        );
    }
}
