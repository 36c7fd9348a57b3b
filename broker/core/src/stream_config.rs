//! A stream's definition: the `[[streams]]` shape (also the body of
//! `POST /api/v1/streams` and what the catalog keeps), its validation into
//! a [`StreamSpec`], and the payload schema's typed fields.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize, Serializer};
use tidewire_storage::{FsyncPolicy, LogConfig, Retention};

use crate::error::ConfigError;
use crate::topic::TopicFilter;

/// Name of the stream that exists when the config defines none.
pub const DEFAULT_STREAM: &str = "events";
/// Retention age of streams that do not set one.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Longest stream name.
pub const MAX_STREAM_NAME: usize = 64;
/// Longest topic filter in a stream definition.
const MAX_FILTER_LEN: usize = 65535;

/// A stream as written in the config file (`[[streams]]`). It serializes
/// back to the same shape, with exact byte counts, for the catalog.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The stream's name; also its SQL table and directory name. A letter,
    /// then up to 63 letters, digits, `_` or `-`.
    pub name: String,
    /// MQTT topic filters; a message is kept when any of them matches its
    /// topic. Default: `["#"]`.
    #[serde(default = "all_topics")]
    pub filters: Vec<String>,
    /// `always` (default; group commit), `interval:MS` or `never`.
    #[serde(default = "always")]
    pub fsync: String,
    /// What is kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Seal the active segment at this size, e.g. `"64MiB"`.
    #[serde(default = "default_segment_bytes", serialize_with = "exact_bytes")]
    pub segment_bytes: ByteSize,
    /// Seal the active segment when its oldest record is this old, e.g. `"1h"`.
    #[serde(default = "default_segment_age", with = "humantime_serde")]
    pub segment_age: Duration,
    /// Optional payload schema (`[streams.schema]`): SQL column name ->
    /// type and JSON path. Each becomes a typed column after `payload`.
    #[serde(default)]
    pub schema: BTreeMap<String, FieldConfig>,
}

/// One typed payload field, e.g. `temp = { type = "double", path = "sensor.temp" }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// `bigint`, `double`, `varchar`, `boolean` or `timestamp` (epoch ms
    /// number or RFC 3339 string).
    #[serde(rename = "type")]
    pub kind: String,
    /// Dotted path of the JSON field in the payload. Default: the column name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The SQL type of a payload schema field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// 64-bit signed integer.
    BigInt,
    /// 64-bit float.
    Double,
    /// UTF-8 text.
    Varchar,
    /// true/false.
    Boolean,
    /// Millisecond UTC timestamp.
    Timestamp,
}

impl FieldType {
    /// The name a definition uses for it, e.g. `double`.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::BigInt => "bigint",
            FieldType::Double => "double",
            FieldType::Varchar => "varchar",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
        }
    }
}

impl std::str::FromStr for FieldType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bigint" => Ok(FieldType::BigInt),
            "double" => Ok(FieldType::Double),
            "varchar" => Ok(FieldType::Varchar),
            "boolean" => Ok(FieldType::Boolean),
            "timestamp" => Ok(FieldType::Timestamp),
            _ => Err(format!(
                "unknown type {s:?}: use bigint, double, varchar, boolean or timestamp"
            )),
        }
    }
}

/// A validated payload schema field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaField {
    /// SQL column name.
    pub name: String,
    /// SQL type.
    pub kind: FieldType,
    /// JSON object keys leading to the value.
    pub path: Vec<String>,
}

/// Columns every stream table has; schema fields may not reuse them.
pub const BUILTIN_COLUMNS: [&str; 8] = [
    "offset",
    "ts",
    "topic",
    "client_id",
    "qos",
    "retain",
    "payload",
    "payload_bytes",
];

impl FieldConfig {
    fn validate(&self, name: &str, key: &str) -> Result<SchemaField, ConfigError> {
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= MAX_STREAM_NAME;
        if !valid_name || BUILTIN_COLUMNS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::new(
                key,
                format!(
                    "invalid column name {name:?}: use a letter or '_', then letters, digits or '_', \
                     and not one of {BUILTIN_COLUMNS:?}"
                ),
            ));
        }
        let kind = self
            .kind
            .parse()
            .map_err(|e: String| ConfigError::new(field(key, "type"), e))?;
        let path: Vec<String> = self
            .path
            .as_deref()
            .unwrap_or(name)
            .split('.')
            .map(str::to_owned)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                field(key, "path"),
                "must be dot-separated non-empty keys, e.g. \"sensor.temp\"",
            ));
        }
        Ok(SchemaField {
            name: name.to_owned(),
            kind,
            path,
        })
    }
}

/// `[streams.retention]`: whole segments are dropped past either limit.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep records this long, e.g. `"24h"` (the default) or `"7d"`.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Keep at most this much data, e.g. `"10GiB"`. Default: no limit.
    #[serde(default, serialize_with = "exact_optional_bytes")]
    pub max_bytes: Option<ByteSize>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: default_max_age(),
            max_bytes: None,
        }
    }
}

/// The path of `name` inside the key `key`; an empty `key` is the top (an
/// API body, whose fields are named bare).
fn field(key: &str, name: &str) -> String {
    if key.is_empty() {
        name.to_owned()
    } else {
        format!("{key}.{name}")
    }
}

/// A byte size as a plain number: `ByteSize`'s own text ("976.6 KiB") is
/// rounded, and the catalog must read back exactly what was written.
fn exact_bytes<S: Serializer>(size: &ByteSize, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(size.as_u64())
}

fn exact_optional_bytes<S: Serializer>(
    size: &Option<ByteSize>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    size.map(|s| s.as_u64()).serialize(serializer)
}

fn all_topics() -> Vec<String> {
    vec!["#".to_owned()]
}

fn always() -> String {
    FsyncPolicy::Always.to_string()
}

fn default_max_age() -> Option<Duration> {
    Some(DEFAULT_MAX_AGE)
}

fn default_segment_bytes() -> ByteSize {
    ByteSize::b(tidewire_storage::config::DEFAULT_SEGMENT_BYTES)
}

fn default_segment_age() -> Duration {
    tidewire_storage::config::DEFAULT_SEGMENT_AGE
}

impl StreamConfig {
    /// The stream that exists when the config defines none: `events` on
    /// `#`, kept 24 h.
    pub fn default_stream() -> StreamConfig {
        StreamConfig {
            name: DEFAULT_STREAM.to_owned(),
            filters: all_topics(),
            fsync: always(),
            retention: RetentionConfig::default(),
            segment_bytes: default_segment_bytes(),
            segment_age: default_segment_age(),
            schema: BTreeMap::new(),
        }
    }

    /// Validates this stream; `key` names it in errors (e.g. `streams[2]`;
    /// empty for a definition that is a whole request body).
    pub fn validate(&self, key: &str) -> Result<StreamSpec, ConfigError> {
        validate_stream_name(&self.name).map_err(|m| ConfigError::new(field(key, "name"), m))?;
        if self.filters.is_empty() {
            return Err(ConfigError::new(
                field(key, "filters"),
                "needs at least one topic filter",
            ));
        }
        let filters = self
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                TopicFilter::new(f, MAX_FILTER_LEN).map_err(|e| {
                    ConfigError::new(field(key, &format!("filters[{i}]")), e.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fsync = self
            .fsync
            .parse()
            .map_err(|e: String| ConfigError::new(field(key, "fsync"), e))?;
        if self.segment_bytes.as_u64() < 4096 {
            return Err(ConfigError::new(
                field(key, "segment_bytes"),
                "must be at least 4KiB",
            ));
        }
        if self.segment_age.is_zero() {
            return Err(ConfigError::new(
                field(key, "segment_age"),
                "must be more than 0",
            ));
        }
        if self.retention.max_age.is_some_and(|a| a.is_zero()) {
            return Err(ConfigError::new(
                field(key, "retention.max_age"),
                "must be more than 0",
            ));
        }
        if self.retention.max_bytes.is_some_and(|b| b.as_u64() == 0) {
            return Err(ConfigError::new(
                field(key, "retention.max_bytes"),
                "must be more than 0",
            ));
        }
        let schema = self
            .schema
            .iter()
            .map(|(name, definition)| {
                definition.validate(name, &field(key, &format!("schema.{name}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StreamSpec {
            name: self.name.clone(),
            filters,
            schema,
            log: LogConfig {
                fsync,
                retention: Retention {
                    max_age: self.retention.max_age,
                    max_bytes: self.retention.max_bytes.map(|b| b.as_u64()),
                },
                segment_bytes: self.segment_bytes.as_u64(),
                segment_age: self.segment_age,
                ..LogConfig::default()
            },
        })
    }
}

/// Checks a stream name: a letter, then letters, digits, `_` or `-`, at
/// most [`MAX_STREAM_NAME`] bytes. So it is safe as a directory name.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= MAX_STREAM_NAME;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid stream name {name:?}: use a letter, then up to {} letters, digits, '_' or '-'",
            MAX_STREAM_NAME - 1
        ))
    }
}

/// A validated stream definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Its name.
    pub name: String,
    /// Which topics it keeps.
    pub filters: Vec<TopicFilter>,
    /// Typed payload columns, in column order (sorted by name).
    pub schema: Vec<SchemaField>,
    /// How it keeps them.
    pub log: LogConfig,
}

impl StreamSpec {
    /// True when the stream keeps messages published to `topic`.
    pub fn keeps(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| f.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_a_full_definition() {
        let config: StreamConfig = toml::from_str(
            r#"
            name = "sensors"
            filters = ["sensors/#", "alerts/+"]
            fsync = "interval:50"
            segment_bytes = "8MiB"
            segment_age = "10m"
            retention = { max_age = "7d", max_bytes = "1GiB" }
            "#,
        )
        .expect("parse");
        let spec = config.validate("streams[0]").expect("valid");
        assert_eq!(spec.name, "sensors");
        assert!(spec.keeps("sensors/a/temp"));
        assert!(spec.keeps("alerts/x"));
        assert!(!spec.keeps("other"));
        assert_eq!(
            spec.log.fsync,
            FsyncPolicy::Interval(Duration::from_millis(50))
        );
        assert_eq!(spec.log.segment_bytes, 8 * 1024 * 1024);
        assert_eq!(spec.log.segment_age, Duration::from_secs(600));
        assert_eq!(
            spec.log.retention.max_age,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(spec.log.retention.max_bytes, Some(1 << 30));
    }

    #[test]
    fn schema_fields_become_typed_columns() {
        let config: StreamConfig = toml::from_str(
            r#"
            name = "sensors"
            [schema]
            temp = { type = "double", path = "sensor.temp" }
            device = { type = "VARCHAR" }
            "#,
        )
        .expect("parse");
        let spec = config.validate("streams[0]").expect("valid");
        assert_eq!(
            spec.schema,
            vec![
                SchemaField {
                    name: "device".into(),
                    kind: FieldType::Varchar,
                    path: vec!["device".into()],
                },
                SchemaField {
                    name: "temp".into(),
                    kind: FieldType::Double,
                    path: vec!["sensor".into(), "temp".into()],
                },
            ]
        );
        let typo = toml::from_str::<StreamConfig>(
            "name = \"s\"\nschema = { t = { type = \"double\", pth = \"x\" } }",
        )
        .expect_err("unknown key");
        assert!(typo.to_string().contains("pth"), "{typo}");
    }

    #[test]
    fn defaults_match_the_default_stream() {
        let config: StreamConfig = toml::from_str("name = \"events\"").expect("parse");
        assert_eq!(config, StreamConfig::default_stream());
        let spec = config.validate("streams[0]").expect("valid");
        assert_eq!(spec.log.fsync, FsyncPolicy::Always);
        assert_eq!(spec.log.retention.max_age, Some(DEFAULT_MAX_AGE));
    }

    #[test]
    fn serializes_back_to_the_same_definition() {
        let config: StreamConfig = toml::from_str(
            r#"
            name = "sensors"
            filters = ["sensors/#"]
            fsync = "interval:50"
            segment_bytes = 1000001
            segment_age = "90m 30s"
            retention = { max_age = "7d 1ms", max_bytes = "1GiB" }
            schema = { temp = { type = "double", path = "a.b" }, id = { type = "varchar" } }
            "#,
        )
        .expect("parse");
        let json = serde_json::to_string(&config).expect("serialize");
        let back: StreamConfig = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, config, "{json}");
        let unlimited = StreamConfig {
            retention: RetentionConfig {
                max_age: None,
                max_bytes: None,
            },
            ..config
        };
        let json = serde_json::to_string(&unlimited).expect("serialize");
        let back: StreamConfig = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, unlimited, "{json}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("name = \"../etc\"", "streams[1].name"),
            ("name = \"\"", "streams[1].name"),
            ("name = \"a b\"", "streams[1].name"),
            ("name = \"s\"\nfilters = []", "streams[1].filters"),
            (
                "name = \"s\"\nfilters = [\"a/#/b\"]",
                "streams[1].filters[0]",
            ),
            ("name = \"s\"\nfsync = \"sometimes\"", "streams[1].fsync"),
            (
                "name = \"s\"\nsegment_bytes = 10",
                "streams[1].segment_bytes",
            ),
            (
                "name = \"s\"\nretention = { max_age = \"0s\" }",
                "streams[1].retention.max_age",
            ),
            (
                "name = \"s\"\nschema = { temp = { type = \"float8\" } }",
                "streams[1].schema.temp.type",
            ),
            (
                "name = \"s\"\nschema = { temp = { type = \"double\", path = \"a..b\" } }",
                "streams[1].schema.temp.path",
            ),
            (
                "name = \"s\"\nschema = { ts = { type = \"bigint\" } }",
                "streams[1].schema.ts",
            ),
            (
                "name = \"s\"\nschema = { \"a-b\" = { type = \"bigint\" } }",
                "streams[1].schema.a-b",
            ),
        ];
        for (text, key) in cases {
            let config: StreamConfig = toml::from_str(text).expect(text);
            let err = config.validate("streams[1]").expect_err(text);
            assert_eq!(err.key, key, "{text}");
        }
        let typo = toml::from_str::<StreamConfig>("name = \"s\"\nfsnyc = \"always\"")
            .expect_err("unknown key");
        assert!(typo.to_string().contains("fsnyc"), "{typo}");
    }
}
