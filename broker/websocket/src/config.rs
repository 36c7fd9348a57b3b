//! `[websocket]` configuration: limits of the `/mqtt` and `/ws` endpoints.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tidewire_core::ConfigError;

/// Default cap on open `/ws` sockets.
pub const DEFAULT_MAX_SOCKETS: usize = 10_000;
/// Default messages queued for one `/ws` socket before new ones are
/// dropped.
pub const DEFAULT_SEND_QUEUE: usize = 1024;
/// Default largest `/ws` frame accepted from a client.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 4 * 1024 * 1024;
/// Default interval between server pings; a peer silent for two intervals
/// is closed.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default time a frame may take to reach a slow peer before the socket is
/// closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default one-shot queries running at once per `/ws` socket.
pub const DEFAULT_MAX_QUERIES: usize = 4;
/// Default continuous-query watches per `/ws` socket.
pub const DEFAULT_MAX_WATCHES: usize = 16;
/// Default publishes a `/ws` socket may have waiting for durability.
pub const DEFAULT_MAX_INFLIGHT_PUBLISHES: usize = 1024;

/// `[websocket]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Most `/ws` sockets open at once (default 10000); more are refused
    /// with 503 before the upgrade. `/mqtt` connections count against
    /// `mqtt.max_connections` instead.
    pub max_sockets: Option<usize>,
    /// Messages queued per `/ws` socket (default 1024). When the queue is
    /// full, new messages for that socket are dropped and counted in
    /// `tidewire_mqtt_messages_dropped_total{transport="ws_json"}`.
    pub send_queue: Option<usize>,
    /// Largest `/ws` frame a client may send (default `"4MiB"`); larger
    /// frames close the socket with status 1009.
    pub max_frame_bytes: Option<ByteSize>,
    /// Interval between server pings (default `"20s"`); a peer that sends
    /// nothing, pongs included, for two intervals is closed.
    #[serde(default, with = "humantime_serde")]
    pub ping_interval: Option<Duration>,
    /// Longest a frame may take to reach the peer (default `"10s"`);
    /// past it the socket is closed as dead.
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    /// One-shot queries running at once per socket (default 4).
    pub max_queries: Option<usize>,
    /// Continuous-query watches per socket (default 16).
    pub max_watches: Option<usize>,
    /// Publishes per socket waiting for durability (default 1024); the
    /// socket stops reading until one completes.
    pub max_inflight_publishes: Option<usize>,
}

/// Validated `[websocket]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// Open `/ws` sockets allowed.
    pub max_sockets: usize,
    /// Messages queued per socket.
    pub send_queue: usize,
    /// Largest client frame, bytes.
    pub max_frame_bytes: usize,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Write deadline per frame.
    pub write_timeout: Duration,
    /// Concurrent one-shot queries per socket.
    pub max_queries: usize,
    /// Watches per socket.
    pub max_watches: usize,
    /// Publishes awaiting durability per socket.
    pub max_inflight_publishes: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketConfig::default()
            .validate()
            .expect("the defaults are valid")
    }
}

impl WebSocketConfig {
    /// Checks every value; errors name the key under `websocket.`.
    pub fn validate(&self) -> Result<WebSocketSettings, ConfigError> {
        let positive = |value: Option<usize>, default: usize, key: &str| match value {
            Some(0) => Err(ConfigError::new(
                format!("websocket.{key}"),
                "must be at least 1",
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let duration = |value: Option<Duration>, default: Duration, key: &str| match value {
            Some(d) if d.is_zero() => Err(ConfigError::new(
                format!("websocket.{key}"),
                "must be longer than 0s",
            )),
            Some(d) => Ok(d),
            None => Ok(default),
        };
        let max_frame = self
            .max_frame_bytes
            .map_or(DEFAULT_MAX_FRAME_BYTES, |b| b.as_u64());
        let max_frame_bytes = usize::try_from(max_frame)
            .ok()
            .filter(|&b| b >= 1024)
            .ok_or_else(|| {
                ConfigError::new("websocket.max_frame_bytes", "must be between 1KiB and 4GiB")
            })?;
        Ok(WebSocketSettings {
            max_sockets: positive(self.max_sockets, DEFAULT_MAX_SOCKETS, "max_sockets")?,
            send_queue: positive(self.send_queue, DEFAULT_SEND_QUEUE, "send_queue")?,
            max_frame_bytes,
            ping_interval: duration(self.ping_interval, DEFAULT_PING_INTERVAL, "ping_interval")?,
            write_timeout: duration(self.write_timeout, DEFAULT_WRITE_TIMEOUT, "write_timeout")?,
            max_queries: positive(self.max_queries, DEFAULT_MAX_QUERIES, "max_queries")?,
            max_watches: positive(self.max_watches, DEFAULT_MAX_WATCHES, "max_watches")?,
            max_inflight_publishes: positive(
                self.max_inflight_publishes,
                DEFAULT_MAX_INFLIGHT_PUBLISHES,
                "max_inflight_publishes",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let settings = WebSocketConfig::default().validate().expect("valid");
        assert_eq!(settings.send_queue, DEFAULT_SEND_QUEUE);
        assert_eq!(settings.ping_interval, DEFAULT_PING_INTERVAL);

        let zero = WebSocketConfig {
            send_queue: Some(0),
            ..WebSocketConfig::default()
        };
        let err = zero.validate().expect_err("0 is refused");
        assert!(err.to_string().contains("websocket.send_queue"), "{err}");

        let tiny = WebSocketConfig {
            max_frame_bytes: Some(ByteSize::b(10)),
            ..WebSocketConfig::default()
        };
        let err = tiny.validate().expect_err("10 bytes is refused");
        assert!(
            err.to_string().contains("websocket.max_frame_bytes"),
            "{err}"
        );
    }
}
