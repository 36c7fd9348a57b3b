//! `[mqtt]` configuration: listener, limits and queues. The users, ACLs
//! and anonymous policy once written here (`[[mqtt.users]]`,
//! `allow_anonymous`, `[mqtt.anonymous]`) are still accepted; the server
//! merges them into the one auth model (`tidewire-auth`).

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tidewire_auth::{Auth, AuthConfig, AuthMetrics, AuthTable, PermissionsConfig, UserConfig};
use tidewire_core::ConfigError;
use tidewire_tls::Tls;

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
    /// A second listener for MQTT over TLS (certificates from `[tls]`),
    /// e.g. `"0.0.0.0:8883"`.
    pub tls_listen: Option<SocketAddr>,
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
    /// `[auth] allow_anonymous`, by its older name.
    pub allow_anonymous: Option<bool>,
    /// `[auth] anonymous`, by its older name.
    pub anonymous: Option<PermissionsConfig>,
    /// `[[users]]`, by its older name: the same list.
    #[serde(default)]
    pub users: Vec<UserConfig>,
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
    /// Who may connect and what they may do.
    pub auth: Auth,
    /// The TLS listener's address and acceptor, when configured.
    pub tls: Option<(SocketAddr, Tls)>,
}

impl MqttConfig {
    /// Validates the section; `listen_override` wins over the file, and
    /// `auth` is the one auth model (built from `[auth]`, `[[users]]` and
    /// this section's older keys).
    pub fn validate(
        &self,
        listen_override: Option<SocketAddr>,
        auth: Auth,
        tls: Option<&Tls>,
    ) -> Result<MqttSettings, ConfigError> {
        let tls = match (self.tls_listen, tls) {
            (Some(addr), Some(tls)) => Some((addr, tls.clone())),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "mqtt.tls_listen",
                    "needs a certificate and key in [tls] (tls.cert, tls.key)",
                ));
            }
            (None, _) => None,
        };
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
            auth,
            tls,
        })
    }

    /// The auth model of this section alone (its older auth keys, no
    /// `[auth]`, `[[users]]` or `[[tokens]]`), for embedding and tests;
    /// the server merges every section instead.
    pub fn standalone_auth(&self) -> Result<Auth, ConfigError> {
        let table = AuthTable::validate(
            &AuthConfig::default(),
            (self.allow_anonymous, self.anonymous.as_ref()),
            &self.keyed_users(),
            &[],
        )?;
        Ok(Auth::new(table, AuthMetrics::default()))
    }

    /// The `[[mqtt.users]]` entries, each with the key it was written
    /// under.
    pub fn keyed_users(&self) -> Vec<(String, &UserConfig)> {
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("mqtt.users[{i}]"), u))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MqttConfig {
        toml::from_str(text).expect("parse")
    }

    fn validate(text: &str) -> Result<MqttSettings, ConfigError> {
        let config = parse(text);
        config.validate(None, config.standalone_auth()?, None)
    }

    fn anonymous_allowed(settings: &MqttSettings) -> bool {
        settings
            .auth
            .allows_anonymous(settings.listen.ip().is_loopback())
    }

    #[test]
    fn defaults_allow_anonymous_only_on_loopback() {
        let settings = validate("").expect("valid");
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert!(anonymous_allowed(&settings));
        let open = validate("listen = \"0.0.0.0:1883\"").expect("valid");
        assert!(!anonymous_allowed(&open));
        let forced = validate("listen = \"0.0.0.0:1883\"\nallow_anonymous = true").expect("valid");
        assert!(anonymous_allowed(&forced));
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
            let err = validate(text).expect_err(text);
            assert_eq!(err.key, key, "{text}");
        }
        assert!(toml::from_str::<MqttConfig>("max_inflite = 3").is_err());
    }
}
