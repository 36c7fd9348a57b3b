//! An export's definition: the `[[exports]]` shape (SPEC section 6's keys,
//! plus `select`, `where`, `row_group_rows` and `[exports.s3]`), also the
//! body of `POST /api/v1/exports` and what the catalog keeps, checked with
//! each bad field named. Whether the destination is writable and the
//! projection fits the stream is checked when the export starts
//! ([`crate::Exports`]).

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tidewire_core::ConfigError;

use crate::partition::Template;

/// Default bytes buffered before a flush, as Firehose's largest buffer.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest and largest `max_bytes`.
pub const MAX_BYTES_RANGE: (u64, u64) = (1024, 1024 * 1024 * 1024);
/// Default age of the oldest buffered record before a flush.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest and longest `max_interval`.
pub const MAX_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(24 * 3600));
/// The default partition template (SPEC section 6).
pub const DEFAULT_PARTITION: &str = "dt={ts:%Y-%m-%d}/hour={ts:%H}";
/// Default rows per Parquet row group: large enough to scan fast, small
/// enough that row-group statistics prune a time range.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Longest export name.
pub const MAX_NAME_LEN: usize = 128;

/// An export as written in the config file (`[[exports]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Letters, digits, `-` and `_`; names its files and its table.
    pub name: String,
    /// The stream exported.
    pub stream: String,
    /// `file:///dir` or `s3://bucket/prefix`.
    pub url: String,
    /// Flush when this much is buffered (default 64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// ... or when the oldest buffered record is this old (default 5 min).
    #[serde(default = "default_max_interval", with = "humantime_serde")]
    pub max_interval: Duration,
    /// Where a record's file goes under `url`, from its broker time:
    /// `{ts:FORMAT}` with strftime's `FORMAT` (default
    /// `dt={ts:%Y-%m-%d}/hour={ts:%H}`).
    #[serde(default = "default_partition")]
    pub partition: String,
    /// The columns, as a SQL `SELECT` list over the stream's columns
    /// (default every column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    /// Only the records this SQL condition holds for.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Rows per Parquet row group (default 131072).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// S3 settings for an `s3://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

/// `[exports.s3]`: where and as whom. Unset keys come from the usual AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, ...).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

fn default_max_bytes() -> ByteSize {
    ByteSize::b(DEFAULT_MAX_BYTES)
}
fn default_max_interval() -> Duration {
    DEFAULT_MAX_INTERVAL
}
fn default_partition() -> String {
    DEFAULT_PARTITION.to_owned()
}
fn default_row_group_rows() -> usize {
    DEFAULT_ROW_GROUP_ROWS
}

/// Where an export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(std::path::PathBuf),
    /// An S3 bucket and a key prefix (without slashes at its ends).
    S3 { bucket: String, prefix: String },
}

/// A checked export definition.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// As written.
    pub config: ExportConfig,
    /// Parsed `url`.
    pub location: Location,
    /// Parsed `partition`.
    pub partition: Template,
}

impl ExportSpec {
    /// The export's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True when it keeps every column of every record, so its files hold
    /// the stream's history as it was.
    pub fn is_full(&self) -> bool {
        self.config.select.is_none() && self.config.filter.is_none()
    }
}

impl ExportConfig {
    /// An export of `stream` to `url` with every default.
    pub fn new(name: &str, stream: &str, url: &str) -> ExportConfig {
        ExportConfig {
            name: name.to_owned(),
            stream: stream.to_owned(),
            url: url.to_owned(),
            max_bytes: default_max_bytes(),
            max_interval: DEFAULT_MAX_INTERVAL,
            partition: default_partition(),
            select: None,
            filter: None,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            s3: None,
        }
    }

    /// Checks every field that needs nothing else; `key` is where the
    /// definition is (e.g. `exports[0]`).
    pub fn validate(&self, key: &str) -> Result<ExportSpec, ConfigError> {
        let field = |name: &str| format!("{key}.{name}");
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                field("name"),
                format!(
                    "an export name is 1 to {MAX_NAME_LEN} letters, digits, '-' and '_', not {:?}",
                    self.name
                ),
            ));
        }
        if self.stream.is_empty() {
            return Err(ConfigError::new(field("stream"), "names a stream"));
        }
        let location = parse_url(&self.url).map_err(|m| ConfigError::new(field("url"), m))?;
        if matches!(location, Location::Local(_)) && self.s3.is_some() {
            return Err(ConfigError::new(
                field("s3"),
                "only an s3:// url takes S3 settings",
            ));
        }
        let bytes = self.max_bytes.as_u64();
        if bytes < MAX_BYTES_RANGE.0 || bytes > MAX_BYTES_RANGE.1 {
            return Err(ConfigError::new(
                field("max_bytes"),
                "must be from 1 KiB to 1 GiB",
            ));
        }
        if self.max_interval < MAX_INTERVAL_RANGE.0 || self.max_interval > MAX_INTERVAL_RANGE.1 {
            return Err(ConfigError::new(
                field("max_interval"),
                "must be from 100ms to 24h",
            ));
        }
        if self.row_group_rows == 0 || self.row_group_rows > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                field("row_group_rows"),
                "must be from 1 to 16777216",
            ));
        }
        let partition = Template::parse(&self.partition)
            .map_err(|m| ConfigError::new(field("partition"), m))?;
        Ok(ExportSpec {
            config: self.clone(),
            location,
            partition,
        })
    }
}

/// `file:///abs/dir` or `s3://bucket/prefix`.
fn parse_url(text: &str) -> Result<Location, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| format!("{text:?} is not an absolute local path"))?;
            Ok(Location::Local(path))
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| format!("{text:?} names no bucket (s3://bucket/prefix)"))?;
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: url.path().trim_matches('/').to_owned(),
            })
        }
        other => Err(format!(
            "unknown scheme {other:?}: write file:///dir or s3://bucket/prefix"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_parses() {
        let config: ExportConfig = toml::from_str(
            r#"
            name = "lake"
            stream = "events"
            url = "file:///var/lib/tidewire-lake"
            max_bytes = "64MiB"
            max_interval = "5m"
            partition = "dt={ts:%Y-%m-%d}/hour={ts:%H}"
            "#,
        )
        .expect("parses");
        let spec = config.validate("exports[0]").expect("valid");
        assert_eq!(
            spec.location,
            Location::Local("/var/lib/tidewire-lake".into())
        );
        assert!(spec.is_full());
        let s3 = ExportConfig::new("l", "events", "s3://bucket/a/b/")
            .validate("e")
            .expect("s3");
        assert_eq!(
            s3.location,
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let base = ExportConfig::new("lake", "events", "file:///tmp/x");
        let cases = [
            (
                ExportConfig {
                    name: "a b".into(),
                    ..base.clone()
                },
                "e.name",
            ),
            (
                ExportConfig {
                    url: "ftp://x/y".into(),
                    ..base.clone()
                },
                "e.url",
            ),
            (
                ExportConfig {
                    url: "s3:///nobucket".into(),
                    ..base.clone()
                },
                "e.url",
            ),
            (
                ExportConfig {
                    partition: "dt={day}".into(),
                    ..base.clone()
                },
                "e.partition",
            ),
            (
                ExportConfig {
                    max_bytes: ByteSize::b(10),
                    ..base.clone()
                },
                "e.max_bytes",
            ),
            (
                ExportConfig {
                    max_interval: Duration::ZERO,
                    ..base.clone()
                },
                "e.max_interval",
            ),
            (
                ExportConfig {
                    s3: Some(S3Config::default()),
                    ..base.clone()
                },
                "e.s3",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate("e").expect_err(key);
            assert_eq!(error.key, key, "{error}");
        }
    }
}
