//! TLS for tidewire's listeners, with rustls and its `ring` provider:
//! MQTT over TLS on `[mqtt] tls_listen`, and HTTPS (so `wss://` for `/ws`
//! and `/mqtt`) on the HTTP listener with `[http] tls = true`.
//!
//! [`TlsConfig`] is `[tls]` as written; [`TlsConfig::load`] reads the PEM
//! files into a rustls `ServerConfig` (TLS 1.2 and 1.3 only; client
//! certificates verified against `client_ca` when given, and required
//! with `require_client_cert`), naming the key and the file on any
//! error. [`Tls`] accepts connections under a handshake deadline, and a
//! reload can replace its certificates without touching connections
//! already open. [`identity`] reads a client certificate's subject CN,
//! the username with `identity_as_username`.
//!
//! MQTT connections use [`stream::TlsStream`] ([`Tls::accept_stream`]),
//! whose buffers a quiet connection can give up while it is parked; HTTPS
//! ones use tokio-rustls ([`Tls::accept`]).

pub mod identity;
pub mod stream;

pub use stream::{ParkedTls, TlsStream};
/// The rustls and tokio-rustls this crate builds on, for clients in tests
/// and tools.
pub use {rustls, tokio_rustls};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use serde::Deserialize;
use tidewire_core::ConfigError;
use tokio::io::{AsyncRead, AsyncWrite};

/// Default time a client has to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert: Option<PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Verify client certificates against these CA certificates, PEM.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// A verified client certificate's subject CN is the MQTT username.
    #[serde(default)]
    pub identity_as_username: bool,
    /// Time a client has to finish the handshake (default `"10s"`).
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
}

/// A loaded `[tls]`: the rustls config and the settings around it.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    server: Arc<ServerConfig>,
    /// A client certificate's subject CN is the MQTT username.
    pub identity_as_username: bool,
    /// Deadline of a handshake.
    pub handshake_timeout: Duration,
}

impl TlsConfig {
    /// True when a certificate is configured.
    pub fn is_set(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Reads the files and builds the rustls config. Blocking file I/O.
    pub fn load(&self) -> Result<TlsSettings, ConfigError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            let missing = if self.cert.is_none() {
                "tls.cert"
            } else {
                "tls.key"
            };
            return Err(ConfigError::new(
                missing,
                "TLS needs both a certificate chain (tls.cert) and its key (tls.key)",
            ));
        };
        if self.require_client_cert && self.client_ca.is_none() {
            return Err(ConfigError::new(
                "tls.require_client_cert",
                "needs tls.client_ca to verify the certificates against",
            ));
        }
        if self.identity_as_username && self.client_ca.is_none() {
            return Err(ConfigError::new(
                "tls.identity_as_username",
                "needs tls.client_ca: only a verified certificate names a user",
            ));
        }
        let chain = certificates(cert, "tls.cert")?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| file_error("tls.key", key, &format!("no private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new("tls", e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates(ca, "tls.client_ca")? {
                    roots
                        .add(certificate)
                        .map_err(|e| file_error("tls.client_ca", ca, &e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| file_error("tls.client_ca", ca, &e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let server = builder
            .with_single_cert(chain, key_der)
            .map_err(|e| file_error("tls.key", key, &format!("does not fit tls.cert: {e}")))?;
        Ok(TlsSettings {
            server: Arc::new(server),
            identity_as_username: self.identity_as_username,
            handshake_timeout: self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        })
    }
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(key, path, &e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate"));
    }
    Ok(chain)
}

fn file_error(key: &str, path: &Path, reason: &str) -> ConfigError {
    ConfigError::new(key, format!("{}: {reason}", path.display()))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

/// Handshakes that failed (bad certificates, plain text on the TLS port,
/// timeouts), by listener.
#[derive(Debug, Clone, Default)]
pub struct TlsMetrics {
    failed: Family<ListenerLabel, Counter>,
}

impl TlsMetrics {
    /// Registers the metrics under `tidewire_tls_`.
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("tidewire_tls").register(
            "handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            self.failed.clone(),
        );
    }
}

/// A connection whose handshake finished.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The encrypted stream.
    pub stream: S,
    /// The verified client certificate's subject CN, if any.
    pub identity: Option<String>,
}

/// Accepts TLS connections with the certificates in force. Cheap to
/// clone; a [`Tls::replace`] reaches every clone.
#[derive(Debug, Clone)]
pub struct Tls {
    current: Arc<RwLock<TlsSettings>>,
    metrics: TlsMetrics,
}

impl Tls {
    /// An acceptor with `settings`.
    pub fn new(settings: TlsSettings, metrics: TlsMetrics) -> Tls {
        Tls {
            current: Arc::new(RwLock::new(settings)),
            metrics,
        }
    }

    /// The metrics, to register.
    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    /// New certificates for the handshakes from now on.
    pub fn replace(&self, settings: TlsSettings) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Whether a client certificate names the MQTT user.
    pub fn identity_as_username(&self) -> bool {
        self.settings().identity_as_username
    }

    /// The certificates and settings in force.
    pub fn settings(&self) -> TlsSettings {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs the server side of the handshake on `io` with tokio-rustls,
    /// within the deadline. A failure is counted for `listener` and the
    /// connection dropped.
    pub async fn accept<IO>(
        &self,
        io: IO,
        listener: &'static str,
    ) -> Option<Accepted<tokio_rustls::server::TlsStream<IO>>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let settings = self.settings();
        let acceptor = tokio_rustls::TlsAcceptor::from(settings.server);
        let handshake = async { acceptor.accept(io).await };
        let stream = self
            .within_deadline(handshake, settings.handshake_timeout, listener)
            .await?;
        let identity = client_identity(stream.get_ref().1.peer_certificates());
        Some(Accepted { stream, identity })
    }

    /// Runs the server side of the handshake on `io` into a
    /// [`TlsStream`], within the deadline. A failure is counted for
    /// `listener` and the connection dropped.
    pub async fn accept_stream<IO>(
        &self,
        io: IO,
        listener: &'static str,
    ) -> Option<Accepted<TlsStream<IO>>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let settings = self.settings();
        let handshake = TlsStream::accept(io, settings.server);
        let stream = self
            .within_deadline(handshake, settings.handshake_timeout, listener)
            .await?;
        let identity = client_identity(stream.peer_certificates());
        Some(Accepted { stream, identity })
    }

    /// Runs `handshake` within `deadline`, counting a failure.
    async fn within_deadline<S>(
        &self,
        handshake: impl Future<Output = std::io::Result<S>>,
        deadline: Duration,
        listener: &'static str,
    ) -> Option<S> {
        match tokio::time::timeout(deadline, handshake).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(listener, error = %e, "TLS handshake failed");
                self.count_failure(listener);
                None
            }
            Err(_) => {
                tracing::debug!(listener, "TLS handshake timed out");
                self.count_failure(listener);
                None
            }
        }
    }

    fn count_failure(&self, listener: &'static str) {
        self.metrics
            .failed
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }
}

/// The subject CN of a verified client certificate chain's leaf.
fn client_identity(chain: Option<&[CertificateDer<'static>]>) -> Option<String> {
    chain
        .and_then(|chain| chain.first())
        .and_then(|leaf| identity::subject_common_name(leaf))
}
