//! Who may connect (username + argon2 password hash, or anonymous) and
//! what they may publish and subscribe to (topic-filter ACLs).

use std::collections::HashMap;
use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tidewire_core::topic::TopicFilter;

/// Topic filters one client may publish and subscribe to. In an ACL, `#`
/// means everything: unlike in a subscription, a wildcard at the first
/// level covers `$` topics too.
#[derive(Debug, Clone)]
pub struct Acl {
    /// A publish is allowed when one of these covers its topic.
    pub publish: Vec<TopicFilter>,
    /// A subscription is allowed when one of these covers every topic it
    /// could match.
    pub subscribe: Vec<TopicFilter>,
}

impl Acl {
    /// May the client publish to `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        // A topic name is a filter that matches only itself.
        self.publish.iter().any(|f| covers(f.as_str(), topic))
    }

    /// May the client subscribe to `filter` (without any `$share/` prefix)?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| covers(f.as_str(), filter))
    }
}

/// True when every topic matched by `requested` is matched by `allowed`.
fn covers(allowed: &str, requested: &str) -> bool {
    let mut asked = requested.split('/');
    for level in allowed.split('/') {
        match (level, asked.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some("#")) => return false,
            ("+", Some(_)) => {}
            (exact, Some(other)) => {
                if exact != other {
                    return false;
                }
            }
        }
    }
    asked.next().is_none()
}

/// A configured user.
#[derive(Debug, Clone)]
pub struct User {
    /// Username.
    pub username: String,
    /// argon2 PHC hash of the password.
    pub password_hash: String,
    /// What the user may do.
    pub acl: Acl,
}

/// Why a CONNECT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No username and anonymous access is off.
    #[error("anonymous access is not allowed")]
    AnonymousNotAllowed,
    /// Unknown user or wrong password (deliberately indistinguishable).
    #[error("bad username or password")]
    BadCredentials,
}

/// The users and the anonymous policy.
#[derive(Debug, Clone)]
pub struct Auth {
    allow_anonymous: bool,
    anonymous: Arc<Acl>,
    users: Arc<HashMap<String, (String, Arc<Acl>)>>,
}

impl Auth {
    /// Builds the user table.
    pub fn new(allow_anonymous: bool, anonymous: Acl, users: Vec<User>) -> Auth {
        Auth {
            allow_anonymous,
            anonymous: Arc::new(anonymous),
            users: Arc::new(
                users
                    .into_iter()
                    .map(|u| (u.username, (u.password_hash, Arc::new(u.acl))))
                    .collect(),
            ),
        }
    }

    /// Whether clients without a username are let in.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// Checks credentials and returns the client's ACL. Verifying an argon2
    /// hash takes milliseconds of CPU: call this from a blocking task.
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: &[u8],
    ) -> Result<Arc<Acl>, AuthError> {
        let Some(username) = username.filter(|u| !u.is_empty()) else {
            return if self.allow_anonymous {
                Ok(Arc::clone(&self.anonymous))
            } else {
                Err(AuthError::AnonymousNotAllowed)
            };
        };
        let (hash, acl) = self.users.get(username).ok_or(AuthError::BadCredentials)?;
        Argon2::default()
            .verify_password(password, hash.as_str())
            .map_err(|_| AuthError::BadCredentials)?;
        Ok(Arc::clone(acl))
    }
}

/// Hashes a password with argon2id and a random salt, for the config file.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(list: &[&str]) -> Vec<TopicFilter> {
        list.iter()
            .map(|f| TopicFilter::new(f, 1024).expect("filter"))
            .collect()
    }

    #[test]
    fn subscribe_acl_requires_coverage() {
        let acl = Acl {
            publish: filters(&["sensors/+/data"]),
            subscribe: filters(&["cmd/dev1/#", "status/+"]),
        };
        assert!(acl.may_publish("sensors/a/data"));
        assert!(!acl.may_publish("sensors/a/other"));
        assert!(acl.may_subscribe("cmd/dev1/#"));
        assert!(acl.may_subscribe("cmd/dev1/reboot"));
        assert!(acl.may_subscribe("cmd/dev1/+/x"));
        assert!(acl.may_subscribe("status/a"));
        assert!(acl.may_subscribe("status/+"));
        assert!(!acl.may_subscribe("status/#"));
        assert!(!acl.may_subscribe("cmd/#"));
        assert!(!acl.may_subscribe("#"));
        assert!(!acl.may_subscribe("cmd/+/reboot"));
    }

    #[test]
    fn a_wildcard_acl_covers_dollar_topics() {
        let all = Acl {
            publish: filters(&["#"]),
            subscribe: filters(&["#"]),
        };
        assert!(all.may_publish("$app/status"));
        assert!(all.may_subscribe("$app/#"));
        let some = Acl {
            publish: filters(&["+/status"]),
            subscribe: filters(&["+/status"]),
        };
        assert!(some.may_publish("$app/status"));
        assert!(some.may_subscribe("$app/status"));
        assert!(!some.may_publish("$app/other"));
    }

    #[test]
    fn passwords_verify_against_argon2_hashes() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let all = || Acl {
            publish: filters(&["#"]),
            subscribe: filters(&["#"]),
        };
        let auth = Auth::new(
            false,
            all(),
            vec![User {
                username: "dev".into(),
                password_hash: hash,
                acl: all(),
            }],
        );
        assert!(auth.authenticate(Some("dev"), b"s3cret").is_ok());
        assert_eq!(
            auth.authenticate(Some("dev"), b"wrong").err(),
            Some(AuthError::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(Some("nobody"), b"s3cret").err(),
            Some(AuthError::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(None, b"").err(),
            Some(AuthError::AnonymousNotAllowed)
        );
    }
}
