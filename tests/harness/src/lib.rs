//! Test harness: runs the real `tidewire` binary on free ports in a
//! temporary data directory, with helpers to talk to it, kill it and
//! restart it. A process is killed when its handle is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a start may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop may take before the harness gives up.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a broker.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `tidewire` binary.
    pub bin: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Extra arguments after `serve` and the listener flags.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// Defaults: `serve --data-dir DIR --http-listen 127.0.0.1:0
    /// --mqtt-listen 127.0.0.1:0`.
    pub fn new(bin: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Launch {
        Launch {
            bin: bin.into(),
            data_dir: data_dir.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Launch {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts the broker and waits until it prints its listeners.
    pub async fn start(&self) -> Result<Broker> {
        Broker::start(self.clone()).await
    }

    /// Runs the binary to completion with these settings (for start-up
    /// errors): exit status and stderr.
    pub async fn run_to_exit(&self) -> Result<(ExitStatus, String)> {
        let out = tokio::time::timeout(START_TIMEOUT, self.command().output())
            .await
            .context("tidewire did not exit")??;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .arg("--mqtt-listen")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .env_remove("TIDEWIRE_CONFIG")
            .env_remove("TIDEWIRE_DATA_DIR")
            .env_remove("TIDEWIRE_HTTP_LISTEN")
            .env_remove("TIDEWIRE_MQTT_LISTEN")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// A running broker process.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    launch: Launch,
    /// Listener addresses by name (`http`, ...), from its stdout.
    pub listeners: HashMap<String, SocketAddr>,
    log: PathBuf,
}

impl Broker {
    async fn start(launch: Launch) -> Result<Broker> {
        std::fs::create_dir_all(&launch.data_dir)?;
        let log = log_path(&launch.data_dir);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = launch
            .command()
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", launch.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut listeners = HashMap::new();
        let waited = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some((name, addr)) = line.split_once(" listening on ") {
                    listeners.insert(name.to_owned(), addr.parse()?);
                    if name == "http" {
                        return Ok(());
                    }
                }
            }
            Err(anyhow!("tidewire exited before listening"))
        })
        .await;
        let started = waited.unwrap_or_else(|_| Err(anyhow!("timed out waiting for listeners")));
        if let Err(e) = started {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e}; its log:\n{log}");
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Broker {
            child,
            launch,
            listeners,
            log,
        })
    }

    /// The MQTT listener address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.listeners["mqtt"]
    }

    /// The base URL of the HTTP API, e.g. `http://127.0.0.1:43123`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.listeners["http"])
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub async fn kill(mut self) -> Result<Launch> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(self.launch.clone())
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn terminate(mut self) -> Result<(ExitStatus, Launch)> {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let exit = tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .context("tidewire did not stop after SIGTERM")??;
        Ok((exit, self.launch.clone()))
    }
}

fn log_path(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map_or_else(|| "tidewire".into(), |n| n.to_string_lossy().into_owned());
    data_dir.with_file_name(format!("{name}.log"))
}

/// A small client for the HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for the broker at `base` (e.g. [`Broker::http_url`]).
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            client: reqwest::Client::new(),
        }
    }

    /// The underlying client, for requests the helpers do not cover.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /api/v1/publish/{topic}?query` with `body`: status and JSON.
    pub async fn publish(
        &self,
        topic: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<(u16, Value)> {
        let url = self.url(&format!("/api/v1/publish/{topic}?{query}"));
        let response = self.client.post(url).body(body).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// `POST path` with a JSON body: status and JSON.
    pub async fn post_json(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let response = self.client.post(self.url(path)).json(&body).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// `GET path`: status and JSON.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let response = self.client.get(self.url(path)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let response = self.client.get(self.url("/metrics")).send().await?;
        Ok(response.error_for_status()?.text().await?)
    }

    /// Reads every record of `stream` from `earliest`, following
    /// `next_offset`, with payloads as base64.
    pub async fn read_all(&self, stream: &str) -> Result<Vec<Value>> {
        let mut from = "earliest".to_owned();
        let mut all = Vec::new();
        loop {
            let path =
                format!("/api/v1/streams/{stream}/records?from={from}&limit=1000&encoding=base64");
            let (status, body) = self.get(&path).await?;
            if status != 200 {
                bail!("reading {stream}: {status} {body}");
            }
            let records = body["records"].as_array().context("records")?;
            if records.is_empty() {
                return Ok(all);
            }
            all.extend(records.iter().cloned());
            from = format!("offset:{}", body["next_offset"]);
        }
    }
}
