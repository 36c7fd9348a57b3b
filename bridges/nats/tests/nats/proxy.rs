//! A TCP proxy in front of a nats-server, to put the network between the
//! bridge and the server under the test's control: it can cut every
//! connection (as a network failure or a server-side kick would), and
//! hold back what the server sends (PubAcks among it) while the client's
//! publishes still get through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// The proxy; dropping it closes everything.
pub struct Proxy {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    held: watch::Sender<bool>,
    acceptor: AbortHandle,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`nats://host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .strip_prefix("nats://")
            .expect("nats:// URL")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicU64::new(0));
        let links = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let (held, _) = watch::channel(false);
        let acceptor = tokio::spawn({
            let accepted = Arc::clone(&accepted);
            let links = Arc::clone(&links);
            let held = held.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let link = tokio::spawn(forward(client, upstream.clone(), held.subscribe()));
                    let mut links = links.lock().expect("links");
                    links.retain(|l| !l.is_finished());
                    links.push(link.abort_handle());
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .abort_handle();
        Proxy {
            addr,
            accepted,
            links,
            held,
            acceptor,
        }
    }

    /// `nats://` and the proxy's address.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection through the proxy, both ways.
    pub fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// From now on, what servers send waits in the proxy (clients' bytes
    /// still go through), until [`Proxy::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets what servers send through again.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Copies bytes both ways between `client` and a new connection to
/// `upstream` until either side closes; server bytes wait while `held`.
async fn forward(client: TcpStream, upstream: String, mut held: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let down = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if held.wait_for(|held| !held).await.is_err()
                || client_write.write_all(&buffer[..n]).await.is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
