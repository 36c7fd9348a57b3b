//! `[mqtt]` configuration: listener, limits, queues, users and ACLs.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tidewire_core::ConfigError;
use tidewire_core::topic::TopicFilter;

use crate::auth::{Acl, Auth, User};

/// Default MQTT listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";
/// Default cap on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default largest MQTT packet accepted.
pub const DEFAULT_MAX_PACKET_BYTES: u64 = 2 * 1024 * 1024;
/// Default QoS 1/2 publishes a client may have unacknowledged towards us.
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 1024;
/// Default QoS 1/2 messages we keep unacknowledged towards one client.
pub const DEFAULT_MAX_INFLIGHT: u16 = 1024;
/// Default messages queued per session (online or offline).
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 10_000;
/// Default time a new connection has to send CONNECT.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval at which changed persistent sessions are saved.
pub const DEFAULT_SESSION_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// `[mqtt]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Listener address (default `127.0.0.1:1883`); port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// Most concurrent connections; more are refused (CONNACK "server
    /// unavailable"/"server busy") and counted.
    pub max_connections: Option<usize>,
    /// Largest packet accepted, e.g. `"2MiB"` (default). Larger packets
    /// disconnect the client (MQTT 5 reason 0x95).
    pub max_packet_bytes: Option<ByteSize>,
    /// QoS 1/2 publishes a client may send before waiting for our acks
    /// (MQTT 5 Receive Maximum; default 1024).
    pub receive_maximum: Option<u16>,
    /// QoS 1/2 messages in flight to one client (default 1024; a client's
    /// own Receive Maximum lowers it).
    pub max_inflight: Option<u16>,
    /// Messages queued per session; see the overflow policy in the README
    /// (default 10000).
    pub max_queued_messages: Option<usize>,
    /// Longest keepalive accepted, in seconds; a client asking for more (or
    /// for none) is told this value as Server Keep Alive (MQTT 5).
    pub max_keepalive: Option<u16>,
    /// Time a new connection has to send CONNECT (default `"10s"`).
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How often changed persistent sessions are saved (default `"1s"`).
    #[serde(default, with = "humantime_serde")]
    pub session_save_interval: Option<Duration>,
    /// Allow clients without a username. Default: only when the listener is
    /// on a loopback address (as Mosquitto 2 does).
    pub allow_anonymous: Option<bool>,
    /// What anonymous clients may do (default: everything).
    #[serde(default)]
    pub anonymous: AclConfig,
    /// `[[mqtt.users]]`.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// Topic filters a client may publish and subscribe to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Filters of topics it may publish to (default `["#"]`; in an ACL a
    /// wildcard covers `$` topics too).
    #[serde(default = "everything")]
    pub publish: Vec<String>,
    /// Filters it may subscribe to; a subscription must lie inside one of
    /// them (default `["#"]`).
    #[serde(default = "everything")]
    pub subscribe: Vec<String>,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            publish: everything(),
            subscribe: everything(),
        }
    }
}

fn everything() -> Vec<String> {
    vec!["#".to_owned()]
}

/// `[[mqtt.users]]`: a username with an argon2 password hash (make one
/// with `tidewire hash-password`) and its ACL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The MQTT username.
    pub username: String,
    /// PHC string of an argon2 hash, `$argon2id$...`.
    pub password_hash: String,
    /// What this user may publish and subscribe to.
    #[serde(flatten)]
    pub acl: AclConfig,
}

/// Validated MQTT settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Listener address.
    pub listen: SocketAddr,
    /// Connection cap.
    pub max_connections: usize,
    /// Largest packet, in bytes.
    pub max_packet_bytes: usize,
    /// Our Receive Maximum.
    pub receive_maximum: u16,
    /// Our cap on outbound in-flight messages per client.
    pub max_inflight: u16,
    /// Session queue bound.
    pub max_queued_messages: usize,
    /// Keepalive cap, if any.
    pub max_keepalive: Option<u16>,
    /// CONNECT deadline.
    pub connect_timeout: Duration,
    /// Session save interval.
    pub session_save_interval: Duration,
    /// Users and ACLs.
    pub auth: Auth,
}

impl MqttConfig {
    /// Validates the section; `listen_override` wins over the file.
    pub fn validate(
        &self,
        listen_override: Option<SocketAddr>,
    ) -> Result<MqttSettings, ConfigError> {
        let listen = match listen_override.or(self.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| ConfigError::new("mqtt.listen", "bad built-in default"))?,
        };
        let positive = |key: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(ConfigError::new(
                format!("mqtt.{key}"),
                "must be more than 0",
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let max_packet_bytes = match self.max_packet_bytes {
            Some(size) => usize::try_from(size.as_u64())
                .ok()
                .filter(|n| (64..=256 * 1024 * 1024).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("mqtt.max_packet_bytes", "must be 64B to 256MiB")
                })?,
            None => DEFAULT_MAX_PACKET_BYTES as usize,
        };
        let receive_maximum = positive(
            "receive_maximum",
            self.receive_maximum.map(usize::from),
            usize::from(DEFAULT_RECEIVE_MAXIMUM),
        )?;
        let max_inflight = positive(
            "max_inflight",
            self.max_inflight.map(usize::from),
            usize::from(DEFAULT_MAX_INFLIGHT),
        )?;
        let allow_anonymous = self.allow_anonymous.unwrap_or(listen.ip().is_loopback());
        let mut users = Vec::with_capacity(self.users.len());
        for (i, user) in self.users.iter().enumerate() {
            let key = format!("mqtt.users[{i}]");
            if user.username.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.username"),
                    "must not be empty",
                ));
            }
            if users.iter().any(|u: &User| u.username == user.username) {
                return Err(ConfigError::new(
                    format!("{key}.username"),
                    format!("duplicate user {:?}", user.username),
                ));
            }
            let hash = argon2::PasswordHash::new(&user.password_hash).map_err(|e| {
                ConfigError::new(
                    format!("{key}.password_hash"),
                    format!("not an argon2 PHC string: {e}"),
                )
            })?;
            users.push(User {
                username: user.username.clone(),
                password_hash: hash.to_string(),
                acl: acl(&user.acl, &key)?,
            });
        }
        Ok(MqttSettings {
            listen,
            max_connections: positive(
                "max_connections",
                self.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_packet_bytes,
            receive_maximum: u16::try_from(receive_maximum).unwrap_or(u16::MAX),
            max_inflight: u16::try_from(max_inflight).unwrap_or(u16::MAX),
            max_queued_messages: positive(
                "max_queued_messages",
                self.max_queued_messages,
                DEFAULT_MAX_QUEUED_MESSAGES,
            )?,
            max_keepalive: self.max_keepalive,
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            session_save_interval: self
                .session_save_interval
                .unwrap_or(DEFAULT_SESSION_SAVE_INTERVAL),
            auth: Auth::new(
                allow_anonymous,
                acl(&self.anonymous, "mqtt.anonymous")?,
                users,
            ),
        })
    }
}

fn acl(config: &AclConfig, key: &str) -> Result<Acl, ConfigError> {
    let filters = |list: &[String], what: &str| {
        list.iter()
            .enumerate()
            .map(|(i, f)| {
                TopicFilter::new(f, 65535)
                    .map_err(|e| ConfigError::new(format!("{key}.{what}[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Acl {
        publish: filters(&config.publish, "publish")?,
        subscribe: filters(&config.subscribe, "subscribe")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MqttConfig {
        toml::from_str(text).expect("parse")
    }

    #[test]
    fn defaults_allow_anonymous_only_on_loopback() {
        let settings = parse("").validate(None).expect("valid");
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert!(settings.auth.allows_anonymous());
        let open = parse("listen = \"0.0.0.0:1883\"")
            .validate(None)
            .expect("valid");
        assert!(!open.auth.allows_anonymous());
        let forced = parse("listen = \"0.0.0.0:1883\"\nallow_anonymous = true")
            .validate(None)
            .expect("valid");
        assert!(forced.auth.allows_anonymous());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("max_inflight = 0", "mqtt.max_inflight"),
            ("max_packet_bytes = 10", "mqtt.max_packet_bytes"),
            (
                "[[users]]\nusername = \"a\"\npassword_hash = \"plain\"",
                "mqtt.users[0].password_hash",
            ),
            (
                "[anonymous]\npublish = [\"a/#/b\"]",
                "mqtt.anonymous.publish[0]",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).validate(None).expect_err(text);
            assert_eq!(err.key, key, "{text}");
        }
        assert!(toml::from_str::<MqttConfig>("max_inflite = 3").is_err());
    }
}
