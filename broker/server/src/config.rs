//! The server's configuration: the TOML file's shape, the defaults, and
//! the merge of file, environment and flags (flag > env > file > default)
//! into one validated [`Config`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tidewire_auth::{Auth, AuthConfig, AuthMetrics, AuthTable, TokenConfig, UserConfig};
use tidewire_aws::{AwsConfig, AwsSettings};
use tidewire_bridge::BridgeConfig;
use tidewire_core::{CatalogLimits, ConfigError, Limits, StreamConfig, StreamSpec};
use tidewire_dashboard::{Dashboard, definition as dashboard};
use tidewire_export::{DEFAULT_MAX_EXPORTS, ExportConfig};
use tidewire_mqtt::{MqttConfig, MqttSettings};
use tidewire_nats::NatsBridgeConfig;
use tidewire_queues::{DEFAULT_MAX_QUEUES, QueueConfig};
use tidewire_sql::{QueryConfig, SqlConfig, SqlLimits};
use tidewire_targets::NatsLink;
use tidewire_targets::email::SmtpConfig;
use tidewire_tls::{Tls, TlsConfig, TlsMetrics};
use tidewire_topics::{DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_TOPICS, TopicConfig, TopicLimits};
use tidewire_websocket::{WebSocketConfig, WebSocketSettings};

/// Default HTTP, WebSocket and dashboard listener.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./tidewire-data";
/// Default time a client has to send a request's headers, from the moment
/// the connection waits for them (hyper's own default).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest `limits.max_exports` accepted.
const MAX_EXPORTS_LIMIT: usize = 1000;
/// Highest `limits.max_topics` accepted.
const MAX_TOPICS_LIMIT: usize = 10_000;
/// Highest `limits.max_subscriptions` accepted.
const MAX_SUBSCRIPTIONS_LIMIT: usize = 10_000;
/// Highest `limits.max_queues` accepted.
const MAX_QUEUES_LIMIT: usize = 10_000;
/// Highest `limits.max_streams` accepted.
pub const MAX_STREAMS_LIMIT: usize = 10_000;
/// Default HTTP connections one client address may hold open at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// The config file, as written. Every key is optional.
/// `[bridge]`: the bridges to other systems, a list per kind. A new kind
/// is a field here and a line in [`BridgeSection::validate`]; its config,
/// validation and start live in its own crate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSection {
    /// `[[bridge.nats]]`.
    #[serde(default)]
    pub nats: Vec<NatsBridgeConfig>,
}

/// The validated bridges, and the NATS bridges' links for fan-out's
/// `nats:` targets, by bridge name.
type ValidatedBridges = (
    Vec<Arc<dyn BridgeConfig>>,
    BTreeMap<String, Arc<dyn NatsLink>>,
);

impl BridgeSection {
    /// Every bridge, validated; `key` is the section's path (`bridge`).
    pub fn validate(&self, key: &str) -> Result<ValidatedBridges, ConfigError> {
        let nats = NatsBridgeConfig::validate_all(&self.nats, &format!("{key}.nats"))?;
        let links = nats
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    Arc::clone(&b.publisher) as Arc<dyn NatsLink>,
                )
            })
            .collect();
        let bridges = nats
            .into_iter()
            .map(|b| Arc::new(b) as Arc<dyn BridgeConfig>)
            .collect();
        Ok((bridges, links))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where streams and broker state are kept.
    pub data_dir: Option<PathBuf>,
    /// `[http]`: the HTTP API, WebSocket and dashboard listener.
    #[serde(default)]
    pub http: HttpSection,
    /// `[mqtt]`: the MQTT listener and sessions (and, by their older names,
    /// users and anonymous access).
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `[aws]`: the account id and the access keys of the AWS endpoint.
    #[serde(default)]
    pub aws: AwsConfig,
    /// `[tls]`: the certificate for `mqtt.tls_listen` and `http.tls`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[auth]`: anonymous access and whether metrics need credentials.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[[users]]`: who may log in, and what they may do.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[[tokens]]`: API tokens for HTTP and `/ws`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// `[limits]`: input limits shared by every ingest.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[[streams]]`: when present, the complete list of streams (the
    /// default `events` stream is then not created).
    pub streams: Option<Vec<StreamConfig>>,
    /// `[bridge]`: bridges to other systems (`[[bridge.nats]]`).
    #[serde(default)]
    pub bridge: BridgeSection,
    /// `[sql]`: per-query memory limit and timeout.
    #[serde(default)]
    pub sql: SqlConfig,
    /// `[[queries]]`: continuous queries started with the server.
    #[serde(default)]
    pub queries: Vec<QueryConfig>,
    /// `[[queues]]`: durable work queues (SQS semantics).
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// `[[topics]]`: fan-out topics and their subscriptions (SNS
    /// semantics).
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// `[[exports]]`: streams exported to Parquet files.
    #[serde(default)]
    pub exports: Vec<ExportConfig>,
    /// `[smtp]`: the mail server `mailto:` subscriptions send through.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// `[websocket]`: limits of `/mqtt` and `/ws`.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// `[dashboards]`: where the dashboard definitions come from.
    #[serde(default)]
    pub dashboards: DashboardsSection,
}

/// `[dashboards]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardsSection {
    /// A folder of dashboard `*.toml` files, read at start-up; they replace
    /// the built-in example. A relative path is relative to the working
    /// directory.
    pub dir: Option<PathBuf>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on, e.g. `"0.0.0.0:8080"`; port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// Longest a client may take to send a request's headers (default
    /// `"30s"`); past it the connection is closed. The clock runs from when
    /// the connection starts waiting for a request, so an idle keep-alive
    /// connection is closed after this long too.
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Serve HTTPS (and so `wss://`) with the `[tls]` certificate.
    #[serde(default)]
    pub tls: bool,
    /// HTTP connections one client IP address may have open at once
    /// (default 256); more are closed at once and counted. A WebSocket
    /// stops counting once upgraded (`websocket.max_sockets` and
    /// `mqtt.max_connections` cap those).
    pub max_connections_per_ip: Option<usize>,
}

/// Validated limits of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Deadline for a request's headers.
    pub header_read_timeout: Duration,
    /// Open connections allowed per client IP address.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

impl HttpSection {
    fn limits(&self) -> Result<HttpLimits, ConfigError> {
        Ok(HttpLimits {
            header_read_timeout: match self.header_read_timeout {
                Some(d) if d.is_zero() => {
                    return Err(ConfigError::new(
                        "http.header_read_timeout",
                        "must be longer than 0s",
                    ));
                }
                Some(d) => d,
                None => DEFAULT_HEADER_READ_TIMEOUT,
            },
            max_connections_per_ip: match self.max_connections_per_ip {
                Some(0) => {
                    return Err(ConfigError::new(
                        "http.max_connections_per_ip",
                        "must be at least 1",
                    ));
                }
                Some(n) => n,
                None => DEFAULT_MAX_CONNECTIONS_PER_IP,
            },
        })
    }
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest payload accepted, e.g. `"1MiB"` (the default).
    pub max_payload_bytes: Option<ByteSize>,
    /// Longest topic name accepted, in bytes (default 4096).
    pub max_topic_bytes: Option<usize>,
    /// Most streams open at once, from the config file and the API
    /// together (default 256; each has a writer thread and open files).
    pub max_streams: Option<usize>,
    /// Most queues, from the config file and the API together (default
    /// 1000; each has two writer threads and open files).
    pub max_queues: Option<usize>,
    /// Most fan-out topics, from the config file and the API together
    /// (default 1000; each has a writer thread and open files).
    pub max_topics: Option<usize>,
    /// Most subscriptions per topic (default 1000; each is a task with a
    /// cursor file).
    pub max_subscriptions: Option<usize>,
    /// Most exports, from the config file and the API together (default
    /// 64; each buffers up to its `max_bytes`).
    pub max_exports: Option<usize>,
}

/// Settings given on the command line or in the environment; they win over
/// the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `TIDEWIRE_CONFIG`.
    pub config_file: Option<PathBuf>,
    /// `--data-dir` / `TIDEWIRE_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--http-listen` / `TIDEWIRE_HTTP_LISTEN`.
    pub http_listen: Option<SocketAddr>,
    /// `--mqtt-listen` / `TIDEWIRE_MQTT_LISTEN`.
    pub mqtt_listen: Option<SocketAddr>,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where streams and broker state are kept.
    pub data_dir: PathBuf,
    /// HTTP listener address.
    pub http_listen: SocketAddr,
    /// Limits of the HTTP listener.
    pub http: HttpLimits,
    /// MQTT settings, listener included.
    pub mqtt: MqttSettings,
    /// Who may do what, at every front door (also in `mqtt.auth`).
    pub auth: Auth,
    /// The TLS acceptor, when `[tls]` is set (also in `mqtt.tls`).
    pub tls: Option<Tls>,
    /// Serve HTTPS on the HTTP listener.
    pub http_tls: bool,
    /// The AWS endpoint's account id and access keys.
    pub aws: AwsSettings,
    /// The file and overrides this was loaded from, to load again on a
    /// reload.
    pub source: Overrides,
    /// Input limits.
    pub limits: Limits,
    /// The streams, in config order.
    pub streams: Vec<StreamSpec>,
    /// Limits of the run-time catalog.
    pub catalog: CatalogLimits,
    /// The queues of the config file (each already validated).
    pub queues: Vec<QueueConfig>,
    /// Most queues, config and API together.
    pub max_queues: usize,
    /// The fan-out topics of the config file (each already validated,
    /// with its subscriptions).
    pub topics: Vec<TopicConfig>,
    /// Limits on topics and subscriptions.
    pub topic_limits: TopicLimits,
    /// `[smtp]`, validated.
    pub smtp: Option<SmtpConfig>,
    /// The exports of the config file (each checked on its own).
    pub exports: Vec<ExportConfig>,
    /// Most exports, config and API together.
    pub max_exports: usize,
    /// The bridges, of every kind.
    pub bridges: Vec<Arc<dyn BridgeConfig>>,
    /// The NATS bridges' links, for `nats:` subscription targets.
    pub nats_links: BTreeMap<String, Arc<dyn NatsLink>>,
    /// SQL limits.
    pub sql: SqlLimits,
    /// Continuous queries to start (each already validated).
    pub queries: Vec<QueryConfig>,
    /// WebSocket limits.
    pub websocket: WebSocketSettings,
    /// Dashboards the app offers.
    pub dashboards: Vec<Dashboard>,
}

/// Why a configuration could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a mistyped value.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range or inconsistent.
    #[error("{}{error}", origin(path.as_deref()))]
    Invalid {
        path: Option<PathBuf>,
        error: ConfigError,
    },
}

fn origin(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| format!("config file {}: ", p.display()))
}

impl Config {
    /// Loads the file named by the overrides (if any) and applies the
    /// overrides on top.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigLoadError> {
        let file = match &overrides.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(file, overrides).map_err(|error| ConfigLoadError::Invalid {
            path: overrides.config_file.clone(),
            error,
        })
    }

    /// Validates a config file on its own, as `tidewire check-config` does.
    pub fn check_file(path: &Path) -> Result<Config, ConfigLoadError> {
        Config::load(&Overrides {
            config_file: Some(path.to_owned()),
            ..Overrides::default()
        })
    }

    fn merge(file: FileConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let default_listen: SocketAddr = DEFAULT_HTTP_LISTEN
            .parse()
            .map_err(|_| ConfigError::new("http.listen", "bad built-in default"))?;
        let limits = Limits {
            max_payload_bytes: match file.limits.max_payload_bytes {
                Some(size) => usize::try_from(size.as_u64())
                    .ok()
                    .filter(|n| (1..=256 * 1024 * 1024).contains(n))
                    .ok_or_else(|| {
                        ConfigError::new("limits.max_payload_bytes", "must be 1B to 256MiB")
                    })?,
                None => Limits::default().max_payload_bytes,
            },
            max_topic_bytes: match file.limits.max_topic_bytes {
                Some(n) if (1..=65535).contains(&n) => n,
                Some(_) => {
                    return Err(ConfigError::new(
                        "limits.max_topic_bytes",
                        "must be 1 to 65535",
                    ));
                }
                None => Limits::default().max_topic_bytes,
            },
        };
        let auth = Auth::new(auth_table(&file)?, AuthMetrics::default());
        let (bridges, nats_links) = file.bridge.validate("bridge")?;
        let aws = {
            let table = auth.table();
            file.aws.validate(|user| table.users.contains_key(user))?
        };
        let tls = if file.tls.is_set() {
            Some(Tls::new(file.tls.load()?, TlsMetrics::default()))
        } else {
            None
        };
        if file.http.tls && tls.is_none() {
            return Err(ConfigError::new(
                "http.tls",
                "needs a certificate and key in [tls] (tls.cert, tls.key)",
            ));
        }
        let stream_configs = file
            .streams
            .unwrap_or_else(|| vec![StreamConfig::default_stream()]);
        let mut names = HashSet::new();
        let mut streams = Vec::with_capacity(stream_configs.len());
        for (i, stream) in stream_configs.iter().enumerate() {
            let key = format!("streams[{i}]");
            let spec = stream.validate(&key)?;
            if !names.insert(spec.name.to_ascii_lowercase()) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("duplicate stream name {:?}", spec.name),
                ));
            }
            streams.push(spec);
        }
        let catalog = CatalogLimits {
            max_streams: match file.limits.max_streams {
                Some(n) if (streams.len().max(1)..=MAX_STREAMS_LIMIT).contains(&n) => n,
                Some(_) => {
                    return Err(ConfigError::new(
                        "limits.max_streams",
                        format!(
                            "must be at least the {} stream(s) the file defines, and at most {MAX_STREAMS_LIMIT}",
                            streams.len()
                        ),
                    ));
                }
                None => CatalogLimits::default().max_streams.max(streams.len()),
            },
        };
        Ok(Config {
            data_dir: overrides
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            http_listen: overrides
                .http_listen
                .or(file.http.listen)
                .unwrap_or(default_listen),
            http: file.http.limits()?,
            mqtt: file
                .mqtt
                .validate(overrides.mqtt_listen, auth.clone(), tls.as_ref())?,
            auth,
            http_tls: file.http.tls,
            tls,
            aws,
            source: overrides.clone(),
            bridges,
            nats_links,
            sql: file.sql.validate("sql")?,
            queries: validated_queries(file.queries)?,
            max_queues: validated_max_queues(file.limits.max_queues, file.queues.len())?,
            queues: validated_queues(file.queues)?,
            topic_limits: validated_topic_limits(&file.limits, &file.topics)?,
            topics: validated_topics(file.topics)?,
            max_exports: validated_max_exports(file.limits.max_exports, file.exports.len())?,
            exports: validated_exports(file.exports)?,
            smtp: match file.smtp {
                Some(smtp) => {
                    smtp.validate("smtp")?;
                    Some(smtp)
                }
                None => None,
            },
            websocket: file.websocket.validate()?,
            dashboards: match &file.dashboards.dir {
                Some(dir) => dashboard::load_dir(dir),
                None => dashboard::built_in(),
            }
            .map_err(|e| ConfigError::new("dashboards.dir", e.to_string()))?,
            limits,
            streams,
            catalog,
        })
    }
}

/// `[[queues]]`, each checked on its own (references between them, such
/// as dead-letter queues, are checked when they open).
fn validated_queues(queues: Vec<QueueConfig>) -> Result<Vec<QueueConfig>, ConfigError> {
    for (i, queue) in queues.iter().enumerate() {
        queue.validate(&format!("queues[{i}]"))?;
    }
    Ok(queues)
}

/// `[[topics]]` and their subscriptions, each checked on its own (what
/// a target names is checked when the topics open).
fn validated_topics(topics: Vec<TopicConfig>) -> Result<Vec<TopicConfig>, ConfigError> {
    for (i, topic) in topics.iter().enumerate() {
        topic.validate(&format!("topics[{i}]"))?;
        for (j, sub) in topic.subscriptions.iter().enumerate() {
            sub.validate(&format!("topics[{i}].subscriptions[{j}]"))?;
        }
    }
    Ok(topics)
}

fn validated_topic_limits(
    limits: &LimitsSection,
    topics: &[TopicConfig],
) -> Result<TopicLimits, ConfigError> {
    let defined = topics.len();
    let max_topics = match limits.max_topics {
        Some(n) if (defined.max(1)..=MAX_TOPICS_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ConfigError::new(
                "limits.max_topics",
                format!(
                    "must be at least the {defined} topic(s) the file defines, and at most {MAX_TOPICS_LIMIT}"
                ),
            ));
        }
        None => DEFAULT_MAX_TOPICS.max(defined),
    };
    let most = topics
        .iter()
        .map(|t| t.subscriptions.len())
        .max()
        .unwrap_or(0);
    let max_subscriptions = match limits.max_subscriptions {
        Some(n) if (most.max(1)..=MAX_SUBSCRIPTIONS_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ConfigError::new(
                "limits.max_subscriptions",
                format!(
                    "must be at least the {most} subscription(s) a topic of the file has, and at most {MAX_SUBSCRIPTIONS_LIMIT}"
                ),
            ));
        }
        None => DEFAULT_MAX_SUBSCRIPTIONS.max(most),
    };
    Ok(TopicLimits {
        max_topics,
        max_subscriptions,
    })
}

/// `[[exports]]`, each checked on its own (its stream, destination and
/// projection are checked when it starts).
fn validated_exports(exports: Vec<ExportConfig>) -> Result<Vec<ExportConfig>, ConfigError> {
    for (i, export) in exports.iter().enumerate() {
        export.validate(&format!("exports[{i}]"))?;
    }
    Ok(exports)
}

fn validated_max_exports(max: Option<usize>, defined: usize) -> Result<usize, ConfigError> {
    match max {
        Some(n) if (defined.max(1)..=MAX_EXPORTS_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ConfigError::new(
            "limits.max_exports",
            format!(
                "must be at least the {defined} export(s) the file defines, and at most {MAX_EXPORTS_LIMIT}"
            ),
        )),
        None => Ok(DEFAULT_MAX_EXPORTS.max(defined)),
    }
}

fn validated_max_queues(max: Option<usize>, defined: usize) -> Result<usize, ConfigError> {
    match max {
        Some(n) if (defined.max(1)..=MAX_QUEUES_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ConfigError::new(
            "limits.max_queues",
            format!(
                "must be at least the {defined} queue(s) the file defines, and at most {MAX_QUEUES_LIMIT}"
            ),
        )),
        None => Ok(DEFAULT_MAX_QUEUES.max(defined)),
    }
}

/// The one auth model, from `[auth]`, `[[users]]` and `[[tokens]]`, with
/// `[mqtt]`'s older keys for the same things.
fn auth_table(file: &FileConfig) -> Result<AuthTable, ConfigError> {
    let mut users: Vec<(String, &UserConfig)> = file
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("users[{i}]"), u))
        .collect();
    users.extend(file.mqtt.keyed_users());
    AuthTable::validate(
        &file.auth,
        (file.mqtt.allow_anonymous, file.mqtt.anonymous.as_ref()),
        &users,
        &file.tokens,
    )
}

fn validated_queries(queries: Vec<QueryConfig>) -> Result<Vec<QueryConfig>, ConfigError> {
    for (i, query) in queries.iter().enumerate() {
        query.validate(&format!("queries[{i}]"))?;
    }
    Ok(queries)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigLoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigLoadError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, overrides: Overrides) -> Result<Config, ConfigLoadError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tidewire.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&Overrides {
            config_file: Some(path),
            ..overrides
        })
    }

    #[test]
    fn defaults_without_a_file() {
        let config = Config::load(&Overrides::default()).expect("defaults");
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(config.mqtt.listen.to_string(), "127.0.0.1:1883");
        assert_eq!(config.streams.len(), 1);
        assert_eq!(config.streams[0].name, "events");
        assert!(config.streams[0].keeps("any/topic"));
        assert_eq!(config.http, HttpLimits::default());
    }

    #[test]
    fn http_limits_from_the_file() {
        let text = "[http]\nheader_read_timeout = \"2s\"\nmax_connections_per_ip = 3\n";
        let config = load_text(text, Overrides::default()).expect("valid");
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(2));
        assert_eq!(config.http.max_connections_per_ip, 3);
    }

    #[test]
    fn flags_win_over_the_file() {
        let text = "data_dir = \"/from/file\"\n[http]\nlisten = \"127.0.0.1:9000\"\n";
        let config = load_text(text, Overrides::default()).expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.http_listen.port(), 9000);
        let config = load_text(
            text,
            Overrides {
                data_dir: Some("/from/flag".into()),
                http_listen: Some("127.0.0.1:0".parse().expect("addr")),
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.http_listen.port(), 0);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let cases = [
            ("data_dirr = \"x\"", "data_dirr"),
            ("[http]\nlisten = \"nowhere\"", "listen"),
            (
                "[http]\nheader_read_timeout = \"0s\"",
                "http.header_read_timeout",
            ),
            (
                "[http]\nheader_read_timeout = \"soon\"",
                "header_read_timeout",
            ),
            (
                "[http]\nmax_connections_per_ip = 0",
                "http.max_connections_per_ip",
            ),
            ("[limits]\nmax_topic_bytes = 0", "limits.max_topic_bytes"),
            ("[limits]\nmax_streams = 0", "limits.max_streams"),
            (
                "[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"",
                "tls.cert",
            ),
            ("[tls]\ncert = \"c.pem\"", "tls.key"),
            ("[mqtt]\ntls_listen = \"127.0.0.1:0\"", "mqtt.tls_listen"),
            ("[http]\ntls = true", "http.tls"),
            (
                "[[users]]\nusername = \"a\"\ndeny = [\"a/#/b\"]",
                "users[0].deny[0]",
            ),
            (
                "[[tokens]]\nname = \"t\"\ntoken_hash = \"x\"",
                "tokens[0].token_hash",
            ),
            ("[mqtt]\nmax_inflight = 0", "mqtt.max_inflight"),
            ("[mqtt]\nlisten = \"x\"", "listen"),
            (
                "[limits]\nmax_payload_bytes = \"1TiB\"",
                "limits.max_payload_bytes",
            ),
            (
                "[[streams]]\nname = \"a\"\n[[streams]]\nname = \"A\"",
                "streams[1].name",
            ),
            ("[[streams]]\nname = \"a/b\"", "streams[0].name"),
            (
                "[[streams]]\nname = \"a\"\nfsync = \"sometimes\"",
                "streams[0].fsync",
            ),
            (
                "[[streams]]\nname = \"a\"\nretention = { max_agee = \"1h\" }",
                "max_agee",
            ),
        ];
        for (text, key) in cases {
            let err = load_text(text, Overrides::default())
                .expect_err(text)
                .to_string();
            assert!(err.starts_with("config file "), "{err}");
            assert!(err.contains("tidewire.toml"), "{err}");
            assert!(err.contains(key), "{text}: {err}");
        }
        let missing = Config::check_file(Path::new("/nonexistent/tidewire.toml"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("/nonexistent/tidewire.toml"), "{missing}");
    }
}
