//! The brokers a benchmark compares, each started on free loopback ports
//! in its own temporary directory and killed when dropped: tidewire (with
//! an optional config) and Mosquitto (optionally with a WebSocket
//! listener, or an MQTT over TLS one); and the certificates ([`Pki`]) for
//! brokers serving TLS.

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
