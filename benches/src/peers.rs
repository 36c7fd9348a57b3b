//! The brokers a benchmark compares, each started on free loopback ports
//! in its own temporary directory and killed when dropped: tidewire (with
//! an optional config) and Mosquitto (optionally with a WebSocket
//! listener).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running broker.
#[derive(Debug)]
pub struct Peer {
    /// `tidewire` or `mosquitto`.
    pub name: &'static str,
    /// The process.
    pub child: Child,
    /// Its MQTT (TCP) listener.
    pub mqtt: SocketAddr,
    /// tidewire's HTTP listener (`/ws`, `/mqtt`), or Mosquitto's
    /// WebSocket listener.
    pub websocket: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The tidewire binary: `explicit`, or the one next to this program.
pub fn tidewire_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(path) => Ok(path.to_owned()),
        None => Ok(std::env::current_exe()?.with_file_name("tidewire")),
    }
}

/// Starts tidewire with `config` (TOML) on port 0 listeners.
pub async fn start_tidewire(bin: &Path, config: &str) -> Result<Peer> {
    let dir = tempfile::tempdir()?;
    let config_file = dir.path().join("bench.toml");
    std::fs::write(&config_file, config)?;
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let (mut mqtt, mut http) = (None, None);
    while let Some(line) = lines.next_line().await? {
        if let Some(a) = line.strip_prefix("mqtt listening on ") {
            mqtt = Some(a.parse()?);
        }
        if let Some(a) = line.strip_prefix("http listening on ") {
            http = Some(a.parse()?);
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Peer {
        name: "tidewire",
        child,
        mqtt: mqtt.context("no mqtt listener line")?,
        websocket: Some(http.context("no http listener line")?),
        _dir: dir,
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts Mosquitto without persistence, with `settings` (config lines)
/// and, when asked, a WebSocket listener.
pub async fn start_mosquitto(bin: &Path, settings: &str, websockets: bool) -> Result<Peer> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut config =
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{settings}\n");
    let websocket = if websockets {
        // Mosquitto's WebSocket listener binds every address.
        let ws_port = free_port()?;
        config.push_str(&format!(
            "listener {ws_port}\nprotocol websockets\nsocket_domain ipv4\n"
        ));
        Some(format!("127.0.0.1:{ws_port}").parse()?)
    } else {
        None
    };
    let config_file = dir.path().join("mosquitto.conf");
    std::fs::write(&config_file, config)?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mqtt: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    for _ in 0..100 {
        let ws_up = match websocket {
            Some(addr) => TcpStream::connect(addr).await.is_ok(),
            None => true,
        };
        if ws_up && TcpStream::connect(mqtt).await.is_ok() {
            return Ok(Peer {
                name: "mosquitto",
                child,
                mqtt,
                websocket,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("mosquitto did not start")
}
