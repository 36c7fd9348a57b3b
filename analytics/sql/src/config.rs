//! Typed config: the `[sql]` section (limits) and `[[queries]]`
//! (continuous queries), validated once into types that cannot be invalid.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tidewire_core::ConfigError;

/// Default per-query memory limit.
pub const DEFAULT_MEMORY_LIMIT: ByteSize = ByteSize::mib(256);
/// Default per-query timeout.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default memory all queries together may use.
pub const DEFAULT_TOTAL_MEMORY_LIMIT: ByteSize = ByteSize::mib(1024);
/// Default number of queries that run at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;
/// Default number of queries that wait for a turn; more get "busy" at once.
pub const DEFAULT_MAX_QUEUED: usize = 32;
/// Most threads, running or queued queries a setting may ask for.
pub const MAX_SQL_SETTING: usize = 1024;
/// Longest continuous query id.
pub const MAX_QUERY_ID: usize = 64;

/// `[sql]`: limits every query runs under.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Memory one query may use (operators plus its result), e.g.
    /// `"256MiB"` (the default). Over it, the query fails; the server
    /// does not.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// How long one query may plan and run, e.g. `"30s"` (the default).
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Memory all running queries together may use, e.g. `"1GiB"` (the
    /// default); at least `memory_limit`. A query that would pass it fails
    /// as if over its own limit.
    #[serde(default = "default_total_memory_limit")]
    pub total_memory_limit: ByteSize,
    /// Threads of the SQL executor, the runtime queries run on apart from
    /// the one serving MQTT, WebSocket and HTTP. Default: one fewer than
    /// the cores, at least 1, so busy queries always leave a core to MQTT.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Queries (ad hoc and continuous windows) that run at once
    /// (default 4).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_queries: usize,
    /// Queries that wait for a turn (default 32); past it a query is
    /// refused at once as busy (HTTP 503).
    #[serde(default = "default_max_queued")]
    pub max_queued_queries: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            memory_limit: DEFAULT_MEMORY_LIMIT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            total_memory_limit: DEFAULT_TOTAL_MEMORY_LIMIT,
            threads: None,
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT,
            max_queued_queries: DEFAULT_MAX_QUEUED,
        }
    }
}

fn default_total_memory_limit() -> ByteSize {
    DEFAULT_TOTAL_MEMORY_LIMIT
}

fn default_max_concurrent() -> usize {
    DEFAULT_MAX_CONCURRENT
}

fn default_max_queued() -> usize {
    DEFAULT_MAX_QUEUED
}

fn default_memory_limit() -> ByteSize {
    DEFAULT_MEMORY_LIMIT
}

fn default_query_timeout() -> Duration {
    DEFAULT_QUERY_TIMEOUT
}

/// Validated query limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Bytes one query may use.
    pub memory_limit: usize,
    /// How long one query may take, waiting for its turn included.
    pub query_timeout: Duration,
    /// Bytes all queries together may use.
    pub total_memory_limit: usize,
    /// Threads of the SQL executor.
    pub threads: usize,
    /// Queries that run at once.
    pub max_concurrent: usize,
    /// Queries that wait for a turn.
    pub max_queued: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            memory_limit: DEFAULT_MEMORY_LIMIT.as_u64() as usize,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            total_memory_limit: DEFAULT_TOTAL_MEMORY_LIMIT.as_u64() as usize,
            threads: default_threads(),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

/// One executor thread per core but one (at least 1). With a thread on
/// every core, busy queries make the threads that answer a publish wait
/// behind them for whole scheduler slices: on 2 cores, 4 runaway queries
/// took the QoS 1 publish-to-ack p99 from 0.12-0.2 ms to 3.2-3.4 ms; with
/// one executor thread it stayed within 0.1-0.2 ms (the `sql-isolation`
/// bench).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl SqlConfig {
    /// Validates the section; `key` names it in errors (e.g. `sql`).
    pub fn validate(&self, key: &str) -> Result<SqlLimits, ConfigError> {
        let memory_limit = usize::try_from(self.memory_limit.as_u64())
            .ok()
            .filter(|&m| m >= 1024 * 1024)
            .ok_or_else(|| {
                ConfigError::new(format!("{key}.memory_limit"), "must be at least 1MiB")
            })?;
        if self.query_timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.query_timeout"),
                "must be more than 0",
            ));
        }
        let total_memory_limit = usize::try_from(self.total_memory_limit.as_u64())
            .ok()
            .filter(|&m| m >= memory_limit)
            .ok_or_else(|| {
                ConfigError::new(
                    format!("{key}.total_memory_limit"),
                    "must be at least sql.memory_limit",
                )
            })?;
        let within = |value: usize, least: usize, name: &str| {
            (least..=MAX_SQL_SETTING)
                .contains(&value)
                .then_some(value)
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{key}.{name}"),
                        format!("must be between {least} and {MAX_SQL_SETTING}"),
                    )
                })
        };
        Ok(SqlLimits {
            memory_limit,
            query_timeout: self.query_timeout,
            total_memory_limit,
            threads: within(self.threads.unwrap_or_else(default_threads), 1, "threads")?,
            max_concurrent: within(self.max_concurrent_queries, 1, "max_concurrent_queries")?,
            max_queued: within(self.max_queued_queries, 0, "max_queued_queries")?,
        })
    }
}

/// A continuous query, as written in `[[queries]]` or posted to
/// `POST /api/v1/queries`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Its id: letters, digits, `_` or `-`, at most 64.
    pub id: String,
    /// A `SELECT` over exactly one stream. Each window runs it with that
    /// stream narrowed to the window's records.
    pub sql: String,
    /// Window length, e.g. `"1m"`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Hop between window starts, e.g. `"10s"`, for hopping windows.
    /// Default: the window length (tumbling windows).
    #[serde(default, with = "humantime_serde")]
    pub hop: Option<Duration>,
    /// How long after its end a window waits for late records before it
    /// closes. Default `"0s"`.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Option<Duration>,
    /// SQL expression giving a record's event time as a timestamp, e.g.
    /// `to_timestamp_millis(json_get_int(payload, 't'))`. Default: `ts`.
    #[serde(default)]
    pub event_time: Option<String>,
    /// Publish each result row as JSON to this MQTT topic.
    #[serde(default)]
    pub publish_topic: Option<String>,
}

/// A validated continuous query definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySpec {
    /// Its id.
    pub id: String,
    /// The per-window SELECT.
    pub sql: String,
    /// Window length, ms.
    pub window_ms: i64,
    /// Hop between window starts, ms; equal to `window_ms` when tumbling.
    pub hop_ms: i64,
    /// Allowed lateness, ms.
    pub lateness_ms: i64,
    /// Event time expression; `None` means `ts`.
    pub event_time: Option<String>,
    /// Where result rows are published.
    pub publish_topic: Option<String>,
}

impl QueryConfig {
    /// Validates a definition; `key` names it in errors (e.g. `queries[0]`).
    pub fn validate(&self, key: &str) -> Result<QuerySpec, ConfigError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_QUERY_ID
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !id_ok {
            return Err(ConfigError::new(
                format!("{key}.id"),
                format!(
                    "invalid id {:?}: use 1 to {MAX_QUERY_ID} letters, digits, '_' or '-'",
                    self.id
                ),
            ));
        }
        if self.sql.trim().is_empty() {
            return Err(ConfigError::new(format!("{key}.sql"), "must not be empty"));
        }
        let ms = |d: Duration, name: &str| {
            i64::try_from(d.as_millis())
                .ok()
                .filter(|&m| m > 0)
                .ok_or_else(|| {
                    ConfigError::new(format!("{key}.{name}"), "must be at least 1ms and finite")
                })
        };
        let window_ms = ms(self.window, "window")?;
        let hop_ms = match self.hop {
            Some(hop) => ms(hop, "hop")?,
            None => window_ms,
        };
        if hop_ms > window_ms {
            return Err(ConfigError::new(
                format!("{key}.hop"),
                "must not be longer than the window",
            ));
        }
        let lateness_ms = i64::try_from(self.allowed_lateness.unwrap_or_default().as_millis())
            .map_err(|_| ConfigError::new(format!("{key}.allowed_lateness"), "too long"))?;
        if let Some(topic) = &self.publish_topic {
            tidewire_core::topic::validate_name(
                topic,
                tidewire_core::publish::DEFAULT_MAX_TOPIC_BYTES,
            )
            .map_err(|e| ConfigError::new(format!("{key}.publish_topic"), e.to_string()))?;
        }
        Ok(QuerySpec {
            id: self.id.clone(),
            sql: self.sql.clone(),
            window_ms,
            hop_ms,
            lateness_ms,
            event_time: self.event_time.clone().filter(|e| !e.trim().is_empty()),
            publish_topic: self.publish_topic.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits_and_queries() {
        let sql: SqlConfig =
            toml::from_str("memory_limit = \"64MiB\"\nquery_timeout = \"2s\"").expect("parse");
        let limits = sql.validate("sql").expect("valid");
        assert_eq!(limits.memory_limit, 64 << 20);
        assert_eq!(limits.query_timeout, Duration::from_secs(2));
        let q: QueryConfig = toml::from_str(
            r#"
            id = "avg-temp"
            sql = "SELECT topic, count(*) AS n FROM events GROUP BY topic"
            window = "1m"
            hop = "10s"
            allowed_lateness = "5s"
            publish_topic = "results/avg"
            "#,
        )
        .expect("parse");
        let spec = q.validate("queries[0]").expect("valid");
        assert_eq!(
            (spec.window_ms, spec.hop_ms, spec.lateness_ms),
            (60_000, 10_000, 5_000)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let base = "sql = \"SELECT 1 FROM events\"\nwindow = \"1m\"\n";
        let cases = [
            ("id = \"a b\"\n", "queries[3].id"),
            ("id = \"q\"\nhop = \"2m\"\n", "queries[3].hop"),
            (
                "id = \"q\"\npublish_topic = \"a/#\"\n",
                "queries[3].publish_topic",
            ),
        ];
        for (extra, key) in cases {
            let text = format!("{extra}{base}");
            let q: QueryConfig = toml::from_str(&text).expect(&text);
            assert_eq!(q.validate("queries[3]").expect_err(&text).key, key);
        }
        let zero: QueryConfig =
            toml::from_str("id = \"q\"\nsql = \"SELECT 1\"\nwindow = \"0s\"").expect("parse");
        assert_eq!(
            zero.validate("queries[0]").expect_err("zero").key,
            "queries[0].window"
        );
        let sql: SqlConfig = toml::from_str("query_timeout = \"0s\"").expect("parse");
        assert_eq!(
            sql.validate("sql").expect_err("zero").key,
            "sql.query_timeout"
        );
        assert!(toml::from_str::<SqlConfig>("memroy_limit = 1").is_err());
    }
}
