//! [`LiveAcl`]: a connected client's permissions that follow a reload.
//! Resolved at connect; after [`crate::Auth::replace`], resolved again
//! from the new table at the client's next check, so a revoked permission
//! takes effect from its next packet without dropping the connection.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::Auth;
use crate::acl::Acl;
use crate::principal::Principal;

/// One client's principal and topic ACL, kept current.
#[derive(Debug)]
pub struct LiveAcl {
    auth: Auth,
    client_id: String,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    generation: u64,
    principal: Principal,
    acl: Arc<Acl>,
}

impl LiveAcl {
    /// The permissions of `principal` as client `client_id`.
    pub fn new(auth: Auth, principal: Principal, client_id: &str) -> LiveAcl {
        let current = Current {
            generation: auth.generation(),
            acl: Arc::new(principal.acl(client_id)),
            principal,
        };
        LiveAcl {
            auth,
            client_id: client_id.to_owned(),
            current: Mutex::new(current),
        }
    }

    /// The topic ACL in force now.
    pub fn acl(&self) -> Arc<Acl> {
        Arc::clone(&self.now().acl)
    }

    /// The principal with its permissions in force now.
    pub fn principal(&self) -> Principal {
        self.now().principal.clone()
    }

    fn now(&self) -> MutexGuard<'_, Current> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.auth.generation();
        if current.generation != generation {
            let principal = self.auth.refresh(&current.principal);
            *current = Current {
                generation,
                acl: Arc::new(principal.acl(&self.client_id)),
                principal,
            };
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthConfig, AuthMetrics, AuthTable, Door, UserConfig, hash_password};

    fn table(publish: &str) -> AuthTable {
        let user = UserConfig {
            username: "dev".into(),
            password_hash: Some(hash_password("pw").expect("hash")),
            publish: Some(vec![publish.to_owned()]),
            subscribe: None,
            deny: Vec::new(),
            sql: None,
            queues: None,
            topics: None,
            admin: None,
        };
        AuthTable::validate(
            &AuthConfig::default(),
            (None, None),
            &[("users[0]".to_owned(), &user)],
            &[],
        )
        .expect("valid")
    }

    #[tokio::test]
    async fn a_reload_reaches_a_connected_client_at_its_next_check() {
        let auth = Auth::new(table("a/#"), AuthMetrics::default());
        let principal = auth
            .login("dev", b"pw", None, Door::Mqtt)
            .await
            .expect("login");
        let live = LiveAcl::new(auth.clone(), principal, "c1");
        assert!(live.acl().may_publish("a/1"));
        auth.replace(table("b/#"));
        assert!(!live.acl().may_publish("a/1"));
        assert!(live.acl().may_publish("b/1"));
        let gone =
            AuthTable::validate(&AuthConfig::default(), (None, None), &[], &[]).expect("valid");
        auth.replace(gone);
        assert!(
            !live.acl().may_publish("b/1"),
            "a removed user may do nothing"
        );
    }
}
