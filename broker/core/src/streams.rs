//! The configured set of streams: their typed config, validation, and the
//! open logs that published messages are routed into by topic filter.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tidewire_storage::{
    FsyncPolicy, LogConfig, OnFatal, Retention, StorageError, StorageMetrics, StreamLog,
};

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

/// A stream as written in the config file (`[[streams]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    #[serde(default = "default_segment_bytes")]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// `bigint`, `double`, `varchar`, `boolean` or `timestamp` (epoch ms
    /// number or RFC 3339 string).
    #[serde(rename = "type")]
    pub kind: String,
    /// Dotted path of the JSON field in the payload. Default: the column name.
    #[serde(default)]
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
            .map_err(|e: String| ConfigError::new(format!("{key}.type"), e))?;
        let path: Vec<String> = self
            .path
            .as_deref()
            .unwrap_or(name)
            .split('.')
            .map(str::to_owned)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                format!("{key}.path"),
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep records this long, e.g. `"24h"` (the default) or `"7d"`.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Keep at most this much data, e.g. `"10GiB"`. Default: no limit.
    #[serde(default)]
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

    /// Validates this stream; `key` names it in errors (e.g. `streams[2]`).
    pub fn validate(&self, key: &str) -> Result<StreamSpec, ConfigError> {
        validate_stream_name(&self.name).map_err(|m| ConfigError::new(format!("{key}.name"), m))?;
        if self.filters.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.filters"),
                "needs at least one topic filter",
            ));
        }
        let filters = self
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                TopicFilter::new(f, MAX_FILTER_LEN)
                    .map_err(|e| ConfigError::new(format!("{key}.filters[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fsync = self
            .fsync
            .parse()
            .map_err(|e: String| ConfigError::new(format!("{key}.fsync"), e))?;
        if self.segment_bytes.as_u64() < 4096 {
            return Err(ConfigError::new(
                format!("{key}.segment_bytes"),
                "must be at least 4KiB",
            ));
        }
        if self.segment_age.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.segment_age"),
                "must be more than 0",
            ));
        }
        if self.retention.max_age.is_some_and(|a| a.is_zero()) {
            return Err(ConfigError::new(
                format!("{key}.retention.max_age"),
                "must be more than 0",
            ));
        }
        let schema = self
            .schema
            .iter()
            .map(|(name, field)| field.validate(name, &format!("{key}.schema.{name}")))
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

/// One open stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Its definition.
    pub spec: StreamSpec,
    /// Its log.
    pub log: StreamLog,
}

/// All open streams, and the lock that keeps a second process off the
/// data directory.
#[derive(Debug)]
pub struct Streams {
    streams: Vec<Stream>,
    _lock: File,
}

impl Streams {
    /// Locks `data_dir` (creating it if needed) and opens every stream under
    /// `data_dir/streams/<name>`, recovering each. Blocking.
    pub fn open(
        data_dir: &Path,
        specs: Vec<StreamSpec>,
        metrics: &StorageMetrics,
        on_fatal: OnFatal,
    ) -> Result<Streams, StorageError> {
        let lock = lock_data_dir(data_dir)?;
        let mut streams = Vec::with_capacity(specs.len());
        for spec in specs {
            let dir = data_dir.join("streams").join(&spec.name);
            let log = StreamLog::open(
                &dir,
                &spec.name,
                spec.log.clone(),
                metrics,
                on_fatal.clone(),
            )?;
            streams.push(Stream { spec, log });
        }
        Ok(Streams {
            streams,
            _lock: lock,
        })
    }

    /// Every stream, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter()
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.spec.name == name)
    }

    /// The streams that keep messages published to `topic`.
    pub fn keeping<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a Stream> + 'a {
        self.streams.iter().filter(move |s| s.spec.keeps(topic))
    }

    /// Syncs and stops every stream's writer.
    pub async fn close(&self) {
        for stream in &self.streams {
            stream.log.close().await;
        }
    }
}

/// Creates `dir` if missing, checks it is a writable directory, and takes an
/// exclusive lock on `dir/LOCK` for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<File, StorageError> {
    let data_dir_error = |reason: String| {
        StorageError::io(
            "use data directory",
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
        )
    };
    if dir.as_os_str().is_empty() {
        return Err(data_dir_error("the path is empty".into()));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(data_dir_error("it exists and is not a directory".into()));
    }
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create data directory", dir, e))?;
    let lock_path: PathBuf = dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StorageError::io("write to data directory", dir, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(data_dir_error(
            "it is in use by another tidewire process".into(),
        )),
        Err(TryLockError::Error(e)) => Err(StorageError::io("lock", lock_path, e)),
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

    #[test]
    fn data_dir_is_locked_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = StorageMetrics::register(&mut Default::default());
        let on_fatal: OnFatal = std::sync::Arc::new(|_| {});
        let spec = StreamConfig::default_stream()
            .validate("streams[0]")
            .expect("valid");
        let first = Streams::open(dir.path(), vec![spec.clone()], &metrics, on_fatal.clone())
            .expect("open");
        let second = Streams::open(dir.path(), vec![spec.clone()], &metrics, on_fatal.clone())
            .expect_err("locked");
        assert!(
            second
                .to_string()
                .contains("in use by another tidewire process"),
            "{second}"
        );
        drop(first);

        let file = dir.path().join("plain-file");
        fs::write(&file, "x").expect("write");
        let err = Streams::open(&file, vec![spec.clone()], &metrics, on_fatal.clone())
            .expect_err("not a dir");
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = Streams::open(Path::new(""), vec![spec], &metrics, on_fatal).expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
