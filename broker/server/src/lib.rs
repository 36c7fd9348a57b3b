//! The tidewire server as a library: configuration, the HTTP API and the
//! start/serve/stop life cycle. `main.rs` only parses the command line and
//! calls [`Server::start`] and [`Server::run`], so tests can run the same
//! server in-process.

pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod http;
pub mod reload;
pub mod server;
pub mod time;

pub use config::{Config, ConfigLoadError, Overrides};
pub use server::{Server, ServerError};
