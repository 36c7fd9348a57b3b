//! Test support: a real `nats-server -js` on a free port with its own
//! store directory, killed on drop, and restartable on the same port and
//! store (to test outages). Like nats.rs's own test harness. The binary
//! is `$NATS_SERVER`, else `nats-server` on `PATH`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) nats-server.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free port.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts it with extra arguments, e.g. `["--user", "u", "--pass", "p"]`.
    pub fn start_with(extra: &[&str]) -> NatsServer {
        NatsServer::start_on(free_port(), extra)
    }

    /// Starts it on `port`, with extra arguments.
    pub fn start_on(port: u16, extra: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            store: tempfile::tempdir().expect("store dir"),
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server at once (SIGKILL), keeping its port and store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (killing it
    /// first if it runs), and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (install nats-server)"));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
