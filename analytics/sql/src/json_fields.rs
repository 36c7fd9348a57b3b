//! Typed schema columns from JSON payloads, without parsing what no
//! column needs: a [`FieldPicker`] walks a payload once, keeps the raw
//! text of the fields on the selected columns' paths, and skips every
//! other field unparsed. Leaves convert to column types on demand; a
//! missing field, or one of another type, is `None` (SQL NULL).

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

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
    pub(crate) fn pick<'a>(&self, payload: &'a [u8]) -> Vec<Option<&'a RawValue>> {
        let top = pick_keys(payload, &self.first_keys);
        self.paths
            .iter()
            .map(|(first, rest)| {
                rest.iter().try_fold(top[*first]?, |value, key| {
                    pick_keys(value.get().as_bytes(), std::slice::from_ref(key))[0]
                })
            })
            .collect()
    }
}

/// The raw values of `keys` in the JSON object `json`.
fn pick_keys<'a>(json: &'a [u8], keys: &[String]) -> Vec<Option<&'a RawValue>> {
    let mut de = serde_json::Deserializer::from_slice(json);
    (&mut de)
        .deserialize_map(PickKeys { keys })
        .unwrap_or_else(|_| vec![None; keys.len()])
}

struct PickKeys<'k> {
    keys: &'k [String],
}

impl<'de> Visitor<'de> for PickKeys<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.keys.len()];
        while let Some(slot) = map.next_key_seed(KeySlot { keys: self.keys })? {
            match slot {
                Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A key's index among the wanted keys, compared without allocating.
struct KeySlot<'k> {
    keys: &'k [String],
}

impl<'de> DeserializeSeed<'de> for KeySlot<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySlot<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.keys.iter().position(|k| k == key))
    }
}

/// An integer, or a float without a fractional part.
pub(crate) fn as_i64(raw: &RawValue) -> Option<i64> {
    serde_json::from_str::<i64>(raw.get()).ok().or_else(|| {
        as_f64(raw)
            .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
            .map(|f| f as i64)
    })
}

/// Any JSON number.
pub(crate) fn as_f64(raw: &RawValue) -> Option<f64> {
    serde_json::from_str::<f64>(raw.get()).ok()
}

/// `true` or `false`.
pub(crate) fn as_bool(raw: &RawValue) -> Option<bool> {
    serde_json::from_str::<bool>(raw.get()).ok()
}

/// A string's text; other values (but `null`) as compact JSON.
pub(crate) fn as_text(raw: &RawValue) -> Option<String> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Epoch milliseconds, or an RFC 3339 string.
pub(crate) fn as_timestamp_ms(raw: &RawValue) -> Option<i64> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis()),
        Err(_) => serde_json::from_str::<i64>(raw.get()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
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
        let payload = br#"{"noise":[1,{"x":"y"}],"temp":21.5,"meta":{"device":"d\"1","rack":{"slot":4}},"temp":22}"#;
        let picked = picker.pick(payload);
        let texts: Vec<Option<&str>> = picked.iter().map(|v| v.map(RawValue::get)).collect();
        assert_eq!(
            texts,
            [Some("22"), Some(r#""d\"1""#), Some("4"), None, Some("22")],
            "last duplicate wins"
        );
        assert_eq!(picked[1].and_then(as_text).as_deref(), Some("d\"1"));
        assert_eq!(picked[2].and_then(as_i64), Some(4));
    }

    #[test]
    fn anything_but_an_object_gives_nulls() {
        let paths = [path("a")];
        let picker = FieldPicker::new(paths.iter().map(Vec::as_slice));
        for payload in [&b"[1,2]"[..], b"42", b"not json", b"", b"{\"a\":"] {
            assert!(picker.pick(payload)[0].is_none(), "{payload:?}");
        }
    }

    #[test]
    fn leaves_convert_only_to_their_own_type() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("raw");
        assert_eq!(as_i64(&raw("7")), Some(7));
        assert_eq!(as_i64(&raw("7.0")), Some(7));
        assert_eq!(as_i64(&raw("7.5")), None);
        assert_eq!(as_f64(&raw("7")), Some(7.0));
        assert_eq!(as_f64(&raw("\"7\"")), None);
        assert_eq!(as_bool(&raw("true")), Some(true));
        assert_eq!(as_text(&raw("null")), None);
        assert_eq!(as_text(&raw("{\"a\": 1}")).as_deref(), Some("{\"a\":1}"));
        assert_eq!(
            as_timestamp_ms(&raw("\"1970-01-01T00:00:01Z\"")),
            Some(1000)
        );
        assert_eq!(as_timestamp_ms(&raw("1500")), Some(1500));
    }
}
