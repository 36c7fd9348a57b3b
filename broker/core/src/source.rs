//! [`Source`]: where a message entered tidewire, as the publish path and
//! its metrics name it.

/// Where a message entered tidewire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/v1/publish`.
    Http,
    /// An MQTT client, over TCP or WebSocket.
    Mqtt,
    /// The WebSocket JSON protocol.
    WebSocket,
    /// The NATS bridge, inbound. Messages from here are never sent back to
    /// NATS.
    Nats,
    /// A continuous query's results.
    Query,
    /// A topic subscription republishing to MQTT. Messages from here are
    /// never fed into topics again, so subscriptions cannot form a loop.
    Topic,
}

impl Source {
    /// Every source, in declaration order.
    pub const ALL: [Source; 6] = [
        Source::Http,
        Source::Mqtt,
        Source::WebSocket,
        Source::Nats,
        Source::Query,
        Source::Topic,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Mqtt => "mqtt",
            Source::WebSocket => "websocket",
            Source::Nats => "nats",
            Source::Query => "query",
            Source::Topic => "topic",
        }
    }
}
