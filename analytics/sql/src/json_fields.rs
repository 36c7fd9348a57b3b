//! Typed schema columns from JSON payloads, without parsing what no
//! column needs: a [`FieldPicker`] walks a payload once with jiter (the
//! parser `datafusion-functions-json` uses), keeps the raw bytes of the
//! fields on the selected columns' paths, skips every other field, and
//! stops once it has them all.
//! Leaves convert to column types on demand; a missing field, or one of
//! another type, is `None` (SQL NULL).

use jiter::{Jiter, NumberInt, Peek};
use serde_json::Value;

/// A JSON value's raw bytes inside a payload.
pub(crate) type Raw<'a> = &'a [u8];

/// Finds the values at a set of JSON paths (`["meta", "device"]` for
/// `meta.device`).
#[derive(Debug)]
pub(crate) struct FieldPicker {
    /// Distinct first keys of the paths.
    first_keys: Vec<String>,
    /// Per path: its first key's index in `first_keys`, and the rest.
    paths: Vec<(usize, Vec<String>)>,
}

impl FieldPicker {
    /// A picker for `paths`, in order.
    pub(crate) fn new<'p>(paths: impl IntoIterator<Item = &'p [String]>) -> FieldPicker {
        let mut first_keys: Vec<String> = Vec::new();
        let paths = paths
            .into_iter()
            .map(|path| {
                let (first, rest) = path
                    .split_first()
                    .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
                let index = first_keys
                    .iter()
                    .position(|k| k == first)
                    .unwrap_or_else(|| {
                        first_keys.push(first.to_owned());
                        first_keys.len() - 1
                    });
                (index, rest.to_vec())
            })
            .collect();
        FieldPicker { first_keys, paths }
    }

    /// The raw value at each path in `payload` (`None` where it is absent
    /// or the payload is not a JSON object).
    pub(crate) fn pick<'a>(&self, payload: &'a [u8]) -> Vec<Option<Raw<'a>>> {
        let top = pick_keys(payload, &self.first_keys);
        self.paths
            .iter()
            .map(|(first, rest)| {
                rest.iter().try_fold(top[*first]?, |value, key| {
                    pick_keys(value, std::slice::from_ref(key))[0]
                })
            })
            .collect()
    }
}

/// The raw values of `keys` in the JSON object `json`. Reading stops once
/// every key is found, so with duplicate keys the first wins (as in
/// `json_get_*`); the rest of the object is not validated.
fn pick_keys<'a>(json: &'a [u8], keys: &[String]) -> Vec<Option<Raw<'a>>> {
    let mut found = vec![None; keys.len()];
    let mut jiter = Jiter::new(json);
    let mut key = match jiter.next_object() {
        Ok(Some(key)) => key,
        _ => return found,
    };
    loop {
        let slot = keys.iter().position(|k| k == key);
        let start = jiter.current_index();
        if jiter.next_skip().is_err() {
            return vec![None; keys.len()];
        }
        if let Some(i) = slot
            && found[i].is_none()
        {
            found[i] = Some(jiter.slice_to_current(start));
            if found.iter().all(Option::is_some) {
                return found;
            }
        }
        key = match jiter.next_key() {
            Ok(Some(key)) => key,
            Ok(None) => return found,
            Err(_) => return vec![None; keys.len()],
        };
    }
}

/// An integer, or a float without a fractional part.
pub(crate) fn as_i64(raw: Raw<'_>) -> Option<i64> {
    match Jiter::new(raw).next_int() {
        Ok(NumberInt::Int(i)) => Some(i),
        _ => as_f64(raw)
            .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
            .map(|f| f as i64),
    }
}

/// Any JSON number.
pub(crate) fn as_f64(raw: Raw<'_>) -> Option<f64> {
    Jiter::new(raw).next_float().ok()
}

/// `true` or `false`.
pub(crate) fn as_bool(raw: Raw<'_>) -> Option<bool> {
    Jiter::new(raw).next_bool().ok()
}

/// A string's text; other values (but `null`) as compact JSON.
pub(crate) fn as_text(raw: Raw<'_>) -> Option<String> {
    let mut jiter = Jiter::new(raw);
    match jiter.peek().ok()? {
        Peek::String => jiter.known_str().ok().map(str::to_owned),
        Peek::Null => None,
        _ => serde_json::from_slice::<Value>(raw)
            .ok()
            .map(|v| v.to_string()),
    }
}

/// Epoch milliseconds, or an RFC 3339 string.
pub(crate) fn as_timestamp_ms(raw: Raw<'_>) -> Option<i64> {
    let mut jiter = Jiter::new(raw);
    match jiter.peek().ok()? {
        Peek::String => chrono::DateTime::parse_from_rfc3339(jiter.known_str().ok()?)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => match jiter.next_int() {
            Ok(NumberInt::Int(i)) => Some(i),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    fn text(raw: Option<Raw<'_>>) -> Option<&str> {
        raw.map(|r| std::str::from_utf8(r).expect("utf-8").trim())
    }

    #[test]
    fn picks_top_level_and_nested_fields_and_skips_the_rest() {
        let paths = [
            path("temp"),
            path("meta.device"),
            path("meta.rack.slot"),
            path("missing"),
            path("temp"),
        ];
        let picker = FieldPicker::new(paths.iter().map(Vec::as_slice));
        let payload = br#"{"noise":[1,{"x":"y"}],"temp":21.5,"meta": {"device":"d\"1","rack":{"slot":4}},"temp":22}"#;
        let picked = picker.pick(payload);
        let texts: Vec<Option<&str>> = picked.iter().map(|v| text(*v)).collect();
        assert_eq!(
            texts,
            [
                Some("21.5"),
                Some(r#""d\"1""#),
                Some("4"),
                None,
                Some("21.5")
            ],
            "the first duplicate wins"
        );
        assert_eq!(picked[1].and_then(as_text).as_deref(), Some("d\"1"));
        assert_eq!(picked[2].and_then(as_i64), Some(4));
    }

    #[test]
    fn anything_but_an_object_gives_nulls() {
        let paths = [path("a")];
        let picker = FieldPicker::new(paths.iter().map(Vec::as_slice));
        for payload in [
            &b"[1,2]"[..],
            b"42",
            b"not json",
            b"",
            b"{\"a\":",
            b"{\"b\":1,",
        ] {
            assert!(picker.pick(payload)[0].is_none(), "{payload:?}");
        }
        // What follows the last wanted field is not read.
        assert_eq!(text(picker.pick(b"{\"a\":1,")[0]), Some("1"));
    }

    #[test]
    fn leaves_convert_only_to_their_own_type() {
        assert_eq!(as_i64(b"7"), Some(7));
        assert_eq!(as_i64(b"7.0"), Some(7));
        assert_eq!(as_i64(b"7.5"), None);
        assert_eq!(as_f64(b"7"), Some(7.0));
        assert_eq!(as_f64(b"\"7\""), None);
        assert_eq!(as_bool(b"true"), Some(true));
        assert_eq!(as_bool(b"1"), None);
        assert_eq!(as_text(b"null"), None);
        assert_eq!(as_text(b"{\"a\": 1}").as_deref(), Some("{\"a\":1}"));
        assert_eq!(as_text(b" \"x\"").as_deref(), Some("x"));
        assert_eq!(as_timestamp_ms(b"\"1970-01-01T00:00:01Z\""), Some(1000));
        assert_eq!(as_timestamp_ms(b"1500"), Some(1500));
    }
}
