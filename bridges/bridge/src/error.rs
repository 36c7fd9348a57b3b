//! Why a bridge could not start, by who is at fault.

/// A bridge start failure.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The bridge's config does not fit this server, such as an outbound
    /// link naming a stream that does not exist (user input). `key` is the
    /// config path, such as `bridge.nats[0].outbound[1].stream`.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    /// The operating system refused something, such as creating the state
    /// directory (external).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
