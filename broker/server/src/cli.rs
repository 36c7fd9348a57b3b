//! The command line: `tidewire [serve] [flags]` and `tidewire check-config
//! FILE`. Each serve flag can also come from a `TIDEWIRE_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

/// tidewire: an edge broker for IoT and real-time analytics.
#[derive(Debug, Parser)]
#[command(name = "tidewire", version)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags for `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default).
    Serve,
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The TOML file to check (or give it with `--config`).
        file: Option<PathBuf>,
    },
    /// Publish one message over MQTT, like mosquitto_pub.
    Pub(PubArgs),
    /// Print messages from an MQTT subscription, like mosquitto_sub.
    Sub(SubArgs),
    /// Hash a password (read from standard input) for `[[mqtt.users]]`.
    HashPassword,
    /// Run a SQL query against a running server and print the result.
    Sql(SqlArgs),
    /// Run simulated sensors that publish to a running broker over MQTT.
    Demo(DemoArgs),
}

/// `tidewire demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Broker host.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// Number of simulated devices.
    #[arg(long, default_value_t = crate::demo::DEFAULT_DEVICES)]
    pub devices: usize,
    /// Interval between one device's readings, e.g. `500ms`.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
}

impl DemoArgs {
    /// The devices' settings.
    pub fn settings(&self) -> crate::demo::DemoSettings {
        crate::demo::DemoSettings {
            host: self.host.clone(),
            port: self.port,
            devices: self.devices,
            interval: self.interval,
            credentials: self
                .username
                .clone()
                .map(|u| (u, self.password.clone().unwrap_or_default())),
        }
    }
}

/// `tidewire sql`.
#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = tidewire_sql::cli::DEFAULT_URL)]
    pub url: String,
    /// Output: table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: tidewire_sql::cli::OutputFormat,
    /// The query.
    pub sql: String,
}

/// Where and as whom the MQTT clients connect.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Broker host.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// QoS, 0 to 2.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Client id (default: generated).
    #[arg(short = 'i', long)]
    pub client_id: Option<String>,
}

/// `tidewire pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Connection settings.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep as the topic's retained message.
    #[arg(short, long)]
    pub retain: bool,
    /// Topic to publish to.
    pub topic: String,
    /// The payload.
    pub message: String,
}

/// `tidewire sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    /// Connection settings.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the topic before each payload.
    #[arg(short, long)]
    pub verbose: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    pub count: Option<u64>,
    /// Topic filter to subscribe to.
    pub filter: String,
}

/// Settings for `serve`, accepted before or after the word `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, global = true, env = "TIDEWIRE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./tidewire-data).
    #[arg(long, global = true, env = "TIDEWIRE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP, WebSocket and dashboard address (default 127.0.0.1:8080).
    #[arg(long, global = true, env = "TIDEWIRE_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// MQTT address (default 127.0.0.1:1883).
    #[arg(long, global = true, env = "TIDEWIRE_MQTT_LISTEN", value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Also run simulated sensors that publish to this server, so the
    /// dashboard has something to show.
    #[arg(long, global = true)]
    pub demo: bool,
}

impl ServeArgs {
    /// The settings that override the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            http_listen: self.http_listen,
            mqtt_listen: self.mqtt_listen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_work_with_and_without_the_word() {
        let bare = Cli::try_parse_from(["tidewire", "--data-dir", "/d"]).expect("parse");
        assert!(bare.command.is_none());
        assert_eq!(bare.serve.data_dir, Some(PathBuf::from("/d")));
        let explicit = Cli::try_parse_from(["tidewire", "serve", "--http-listen", "127.0.0.1:0"])
            .expect("parse");
        assert!(matches!(explicit.command, Some(Command::Serve)));
        assert_eq!(explicit.serve.http_listen.map(|a| a.port()), Some(0));
        assert!(Cli::try_parse_from(["tidewire", "--http-listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["tidewire", "--bogus"]).is_err());
        for args in [
            &["tidewire", "--demo"][..],
            &["tidewire", "serve", "--demo"],
        ] {
            assert!(Cli::try_parse_from(args).expect("parse").serve.demo);
        }
        let demo = Cli::try_parse_from(["tidewire", "demo", "--devices", "3", "--interval", "2s"])
            .expect("parse");
        let Some(Command::Demo(demo)) = demo.command else {
            panic!("not demo");
        };
        assert_eq!(demo.settings().interval, std::time::Duration::from_secs(2));
    }
}
