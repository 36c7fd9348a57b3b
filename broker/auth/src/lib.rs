//! tidewire's one auth model, shared by every front door (MQTT, `/mqtt`,
//! `/ws`, the HTTP API, and later SigV4): users with argon2 password
//! hashes, API tokens, anonymous access, topic ACLs with `%u`/`%c`
//! placeholders and deny rules, stream read permissions and admin.
//!
//! Layout: [`acl`] (rules and the resolved ACL of one client),
//! [`principal`] (who is asking and what they may do), [`config`] (the
//! `[auth]`, `[[users]]` and `[[tokens]]` sections), [`throttle`] (slowing
//! down repeated failures from one address), and [`Auth`] here: checking
//! credentials, at most one argon2 check per core at once, and remembering
//! credentials already verified so a client sending them on every request
//! pays for argon2 once.

pub mod acl;
pub mod config;
pub mod live;
pub mod principal;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub use acl::Acl;
pub use config::{AuthConfig, AuthTable, PermissionsConfig, TokenConfig, UserConfig};
pub use live::LiveAcl;
pub use principal::{Identity, Peer, Permissions, Principal, StreamAccess};

use throttle::Throttle;

/// Verified credentials remembered at most; past it the memory starts over.
const MAX_REMEMBERED: usize = 4096;

/// Why credentials were refused. The text never says whether a username
/// exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, and anonymous access is off here.
    #[error("anonymous access is not allowed")]
    AnonymousNotAllowed,
    /// Unknown user, wrong password or unknown token.
    #[error("bad credentials")]
    BadCredentials,
}

/// The front door credentials came through, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// MQTT over TCP or `/mqtt`.
    Mqtt,
    /// The HTTP API.
    Http,
    /// `/ws`.
    WebSocket,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Door::Mqtt => "mqtt",
            Door::Http => "http",
            Door::WebSocket => "websocket",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabel {
    door: &'static str,
}

/// Failed logins, by front door.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    failures: Family<DoorLabel, Counter>,
    throttled: Counter,
}

impl AuthMetrics {
    /// Registers these metrics under `tidewire_auth_` (they count from
    /// their creation, registered or not).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tidewire_auth");
        r.register(
            "failures",
            "Refused credentials, by front door",
            self.failures.clone(),
        );
        r.register(
            "throttled",
            "Logins slowed down because their address failed repeatedly",
            self.throttled.clone(),
        );
    }
}

/// Checks credentials against the current [`AuthTable`]. Cheap to clone;
/// every clone sees a [`Auth::replace`]d table.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: RwLock<Arc<AuthTable>>,
    /// Counts replacements, so connected clients can tell their rules
    /// changed.
    generation: AtomicU64,
    /// Credentials verified against the current table, by their digest.
    verified: Mutex<HashMap<[u8; 32], Principal>>,
    /// One argon2 check per core at once.
    checks: Semaphore,
    throttle: Throttle,
    metrics: AuthMetrics,
}

impl Auth {
    /// Checks credentials against `table`.
    pub fn new(table: AuthTable, metrics: AuthMetrics) -> Auth {
        Auth {
            inner: Arc::new(Inner {
                table: RwLock::new(Arc::new(table)),
                generation: AtomicU64::new(0),
                verified: Mutex::default(),
                checks: Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
                throttle: Throttle::default(),
                metrics,
            }),
        }
    }

    /// Everyone may do everything, as anonymous: no users, no tokens. For
    /// embedding a broker without access control, and tests.
    pub fn allow_all() -> Auth {
        let config = AuthConfig {
            allow_anonymous: Some(true),
            ..AuthConfig::default()
        };
        let table = AuthTable::validate(&config, (None, None), &[], &[])
            .expect("the default permissions are valid");
        Auth::new(table, AuthMetrics::default())
    }

    /// The metrics, to register with the server's registry.
    pub fn metrics(&self) -> &AuthMetrics {
        &self.inner.metrics
    }

    /// The table in force.
    pub fn table(&self) -> Arc<AuthTable> {
        Arc::clone(&self.inner.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts a new table in force (a reload); credentials verified against
    /// the old one are checked again.
    pub fn replace(&self, table: AuthTable) {
        *self.inner.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.remembered().clear();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts [`Auth::replace`]s.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// `principal` under the table in force: a user or token with the
    /// permissions it has now (none if it is gone), anonymous with the
    /// anonymous permissions.
    pub fn refresh(&self, principal: &Principal) -> Principal {
        let table = self.table();
        let permissions = match &principal.identity {
            Identity::Anonymous => Some(Arc::clone(&table.anonymous)),
            Identity::User(name) => table.users.get(name).map(|(_, p)| Arc::clone(p)),
            Identity::Token(name) => table
                .tokens
                .iter()
                .find(|(token, ..)| token == name)
                .map(|(.., p)| Arc::clone(p)),
        };
        Principal {
            identity: principal.identity.clone(),
            permissions: permissions.unwrap_or_else(|| Arc::new(Permissions::none())),
        }
    }

    /// Whether anonymous clients are let in on a listener that is (or is
    /// not) on a loopback address.
    pub fn allows_anonymous(&self, on_loopback: bool) -> bool {
        self.table().allow_anonymous.unwrap_or(on_loopback)
    }

    /// The anonymous principal, if allowed on this listener.
    pub fn anonymous(&self, on_loopback: bool, door: Door) -> Result<Principal, AuthError> {
        if self.allows_anonymous(on_loopback) {
            Ok(Principal {
                identity: Identity::Anonymous,
                permissions: Arc::clone(&self.table().anonymous),
            })
        } else {
            self.count_failure(door);
            Err(AuthError::AnonymousNotAllowed)
        }
    }

    /// Checks a username and password.
    pub async fn login(
        &self,
        username: &str,
        password: &[u8],
        from: Option<IpAddr>,
        door: Door,
    ) -> Result<Principal, AuthError> {
        let digest = digest(&[b"user", username.as_bytes(), password]);
        let (username, password) = (username.to_owned(), password.to_vec());
        self.verify(digest, from, door, move |table| {
            let (hash, permissions) = table.users.get(&username)?;
            verifies(&password, hash.as_deref()?).then(|| Principal {
                identity: Identity::User(username.clone()),
                permissions: Arc::clone(permissions),
            })
        })
        .await
    }

    /// The user a verified client certificate names (its subject CN):
    /// the `[[users]]` entry of that name; an unknown name is refused.
    pub fn certificate_user(&self, name: &str, door: Door) -> Result<Principal, AuthError> {
        self.user(name).ok_or_else(|| {
            self.count_failure(door);
            AuthError::BadCredentials
        })
    }

    /// The `[[users]]` entry called `name`, without a password: for what
    /// the broker does on a configured user's behalf (a bridge's inbound
    /// messages, a verified certificate).
    pub fn user(&self, name: &str) -> Option<Principal> {
        let table = self.table();
        let (_, permissions) = table.users.get(name)?;
        Some(Principal {
            identity: Identity::User(name.to_owned()),
            permissions: Arc::clone(permissions),
        })
    }

    /// Checks an API token.
    pub async fn token(
        &self,
        token: &str,
        from: Option<IpAddr>,
        door: Door,
    ) -> Result<Principal, AuthError> {
        let digest = digest(&[b"token", token.as_bytes()]);
        let token = token.to_owned();
        self.verify(digest, from, door, move |table| {
            table
                .tokens
                .iter()
                .find(|(_, hash, _)| verifies(token.as_bytes(), hash))
                .map(|(name, _, permissions)| Principal {
                    identity: Identity::Token(name.clone()),
                    permissions: Arc::clone(permissions),
                })
        })
        .await
    }

    /// Remembered credentials answer at once; others wait for their
    /// address's penalty, then for a free core to check argon2 hashes on.
    async fn verify(
        &self,
        digest: [u8; 32],
        from: Option<IpAddr>,
        door: Door,
        check: impl FnOnce(&AuthTable) -> Option<Principal> + Send + 'static,
    ) -> Result<Principal, AuthError> {
        if let Some(principal) = self.remembered().get(&digest) {
            return Ok(principal.clone());
        }
        if let Some(delay) = from.and_then(|ip| self.inner.throttle.penalty(ip)) {
            self.inner.metrics.throttled.inc();
            tokio::time::sleep(delay).await;
        }
        let _permit = self
            .inner
            .checks
            .acquire()
            .await
            .map_err(|_| AuthError::BadCredentials)?;
        let table = self.table();
        let found = tokio::task::spawn_blocking(move || check(&table))
            .await
            .ok()
            .flatten();
        match found {
            Some(principal) => {
                let mut remembered = self.remembered();
                if remembered.len() >= MAX_REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(digest, principal.clone());
                Ok(principal)
            }
            None => {
                if let Some(ip) = from {
                    self.inner.throttle.failed(ip);
                }
                self.count_failure(door);
                Err(AuthError::BadCredentials)
            }
        }
    }

    fn count_failure(&self, door: Door) {
        self.inner
            .metrics
            .failures
            .get_or_create(&DoorLabel { door: door.label() })
            .inc();
    }

    fn remembered(&self) -> MutexGuard<'_, HashMap<[u8; 32], Principal>> {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn verifies(secret: &[u8], hash: &str) -> bool {
    argon2::PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(secret, &parsed).is_ok())
}

/// A digest of length-prefixed parts, so that no two different
/// credentials share one.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Hashes a password or token with argon2id and a random salt, for the
/// config file.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(allow_anonymous: Option<bool>) -> Auth {
        let user = UserConfig {
            username: "dev".into(),
            password_hash: Some(hash_password("s3cret").expect("hash")),
            publish: None,
            subscribe: None,
            deny: Vec::new(),
            sql: Some(vec!["events".into()]),
            queues: None,
            topics: None,
            admin: None,
        };
        let token = TokenConfig {
            name: "grafana".into(),
            token_hash: hash_password("tok-123").expect("hash"),
            publish: None,
            subscribe: None,
            deny: Vec::new(),
            sql: Some(vec!["*".into()]),
            queues: None,
            topics: None,
            admin: None,
        };
        let config = AuthConfig {
            allow_anonymous,
            ..AuthConfig::default()
        };
        let table = AuthTable::validate(
            &config,
            (None, None),
            &[("users[0]".to_owned(), &user)],
            &[token],
        )
        .expect("valid");
        Auth::new(table, AuthMetrics::default())
    }

    #[tokio::test]
    async fn users_tokens_and_anonymous_are_told_apart() {
        let auth = auth(None);
        let dev = auth
            .login("dev", b"s3cret", None, Door::Http)
            .await
            .expect("login");
        assert_eq!(dev.identity, Identity::User("dev".into()));
        assert!(dev.may_read("events") && !dev.may_read("other"));
        // Remembered: the same answer again, and a wrong one still refused.
        assert_eq!(
            auth.login("dev", b"s3cret", None, Door::Http).await,
            Ok(dev)
        );
        for (user, password) in [("dev", &b"wrong"[..]), ("nobody", b"s3cret")] {
            assert_eq!(
                auth.login(user, password, None, Door::Http).await,
                Err(AuthError::BadCredentials)
            );
        }
        let grafana = auth
            .token("tok-123", None, Door::Http)
            .await
            .expect("token");
        assert_eq!(grafana.identity, Identity::Token("grafana".into()));
        assert!(grafana.may_read("anything"));
        assert!(
            !grafana.acl("c").may_publish("x"),
            "tokens publish nothing unless told"
        );
        assert_eq!(
            auth.token("tok-124", None, Door::Http).await,
            Err(AuthError::BadCredentials)
        );

        assert!(auth.anonymous(true, Door::Http).is_ok());
        assert_eq!(
            auth.anonymous(false, Door::Mqtt),
            Err(AuthError::AnonymousNotAllowed)
        );
        assert!(self::auth(Some(true)).anonymous(false, Door::Mqtt).is_ok());
    }

    #[tokio::test]
    async fn a_replaced_table_forgets_what_was_verified() {
        let auth = auth(None);
        auth.login("dev", b"s3cret", None, Door::Mqtt)
            .await
            .expect("login");
        let empty =
            AuthTable::validate(&AuthConfig::default(), (None, None), &[], &[]).expect("valid");
        auth.replace(empty);
        assert_eq!(
            auth.login("dev", b"s3cret", None, Door::Mqtt).await,
            Err(AuthError::BadCredentials)
        );
    }
}
