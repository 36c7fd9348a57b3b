//! The config that defines who may do what: `[auth]` (anonymous access),
//! `[[users]]` (also accepted as `[[mqtt.users]]`, the same list) and
//! `[[tokens]]`, validated into an [`AuthTable`].
//!
//! Defaults: a user may publish and subscribe to everything (as before
//! users could read SQL) and read no stream and not administer unless
//! given `sql`, `queues`, `topics` and `admin`; a token may do nothing it is not given.
//! Anonymous clients, when allowed, may do everything unless an
//! `anonymous` table says otherwise; given one, what it leaves out is
//! `publish`/`subscribe`, `queues` and `topics` everything, `sql` none, `admin`
//! false.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use tidewire_core::ConfigError;
use tidewire_core::stream_config::validate_stream_name;

use crate::acl::Rules;
use crate::principal::{Permissions, StreamAccess};

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Let clients without credentials in. Default: only on a listener
    /// bound to a loopback address.
    pub allow_anonymous: Option<bool>,
    /// What anonymous clients may do.
    pub anonymous: Option<PermissionsConfig>,
    /// Serve `/metrics` and `/healthz` without credentials (default true).
    pub open_metrics: Option<bool>,
}

/// What a principal may do, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsConfig {
    /// Topics it may publish to (`%u` username, `%c` client id).
    pub publish: Option<Vec<String>>,
    /// Filters it may subscribe within.
    pub subscribe: Option<Vec<String>>,
    /// Topics it may neither publish to nor receive; wins over the above.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Streams it may read (records API, SQL); `"*"` is every stream.
    pub sql: Option<Vec<String>>,
    /// Queues it may send to and receive from (SQS, `/api/v1/queues`,
    /// `/ws`); `"*"` is every queue.
    pub queues: Option<Vec<String>>,
    /// Fan-out topics it may publish to directly (SNS `Publish`,
    /// `/api/v1/topics/{name}/publish`, `/ws`); `"*"` is every topic.
    pub topics: Option<Vec<String>>,
    /// May create and delete streams, queries, queues, topics, rules and
    /// exports.
    pub admin: Option<bool>,
}

/// `[[users]]`: a username, an argon2 password hash (`tidewire
/// hash-password`), and its permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The username (MQTT, HTTP Basic, `/ws`).
    pub username: String,
    /// PHC string of an argon2 hash, `$argon2id$...`. Without one the
    /// user can only be named by a client certificate
    /// (`tls.identity_as_username`).
    pub password_hash: Option<String>,
    /// See [`PermissionsConfig::publish`].
    pub publish: Option<Vec<String>>,
    /// See [`PermissionsConfig::subscribe`].
    pub subscribe: Option<Vec<String>>,
    /// See [`PermissionsConfig::deny`].
    #[serde(default)]
    pub deny: Vec<String>,
    /// See [`PermissionsConfig::sql`].
    pub sql: Option<Vec<String>>,
    /// See [`PermissionsConfig::queues`].
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// See [`PermissionsConfig::topics`].
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// See [`PermissionsConfig::admin`].
    pub admin: Option<bool>,
}

/// `[[tokens]]`: an API token for HTTP (`Authorization: Bearer`) and
/// `/ws` (`?token=`), stored as an argon2 hash of the token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and `%u`.
    pub name: String,
    /// PHC string of an argon2 hash of the token.
    pub token_hash: String,
    /// See [`PermissionsConfig::publish`].
    pub publish: Option<Vec<String>>,
    /// See [`PermissionsConfig::subscribe`].
    pub subscribe: Option<Vec<String>>,
    /// See [`PermissionsConfig::deny`].
    #[serde(default)]
    pub deny: Vec<String>,
    /// See [`PermissionsConfig::sql`].
    pub sql: Option<Vec<String>>,
    /// See [`PermissionsConfig::queues`].
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// See [`PermissionsConfig::topics`].
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// See [`PermissionsConfig::admin`].
    pub admin: Option<bool>,
}

/// The validated users, tokens and anonymous policy.
#[derive(Debug, Clone)]
pub struct AuthTable {
    /// `Some` when set in the config; `None`: allowed on loopback only.
    pub allow_anonymous: Option<bool>,
    /// What anonymous clients may do.
    pub anonymous: Arc<Permissions>,
    /// Users by name: password hash (none: certificate only) and
    /// permissions.
    pub users: HashMap<String, (Option<String>, Arc<Permissions>)>,
    /// Tokens: name, token hash and permissions.
    pub tokens: Vec<(String, String, Arc<Permissions>)>,
    /// `/metrics` and `/healthz` without credentials.
    pub open_metrics: bool,
}

impl AuthTable {
    /// Validates the config. `users` lists every `[[users]]` entry with the
    /// key it was written under (`users[0]`, `mqtt.users[1]`);
    /// `legacy_anonymous` is `[mqtt] allow_anonymous` and `[mqtt.anonymous]`.
    pub fn validate(
        auth: &AuthConfig,
        legacy_anonymous: (Option<bool>, Option<&PermissionsConfig>),
        users: &[(String, &UserConfig)],
        tokens: &[TokenConfig],
    ) -> Result<AuthTable, ConfigError> {
        let allow_anonymous = match (auth.allow_anonymous, legacy_anonymous.0) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::new(
                    "auth.allow_anonymous",
                    "contradicts mqtt.allow_anonymous: set one of them",
                ));
            }
            (a, b) => a.or(b),
        };
        let anonymous = match (&auth.anonymous, legacy_anonymous.1) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "auth.anonymous",
                    "mqtt.anonymous is set too: set one of them",
                ));
            }
            (Some(given), None) => permissions(given, Kind::Anonymous, "auth.anonymous")?,
            (None, Some(given)) => permissions(given, Kind::Anonymous, "mqtt.anonymous")?,
            (None, None) => Permissions::all(),
        };
        let mut by_name = HashMap::with_capacity(users.len());
        for (key, user) in users {
            if user.username.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.username"),
                    "must not be empty",
                ));
            }
            let hash = user
                .password_hash
                .as_deref()
                .map(|h| phc(h, &format!("{key}.password_hash")))
                .transpose()?;
            let given = PermissionsConfig {
                publish: user.publish.clone(),
                subscribe: user.subscribe.clone(),
                deny: user.deny.clone(),
                sql: user.sql.clone(),
                queues: user.queues.clone(),
                topics: user.topics.clone(),
                admin: user.admin,
            };
            let permissions = permissions(&given, Kind::User, key)?;
            if by_name
                .insert(user.username.clone(), (hash, Arc::new(permissions)))
                .is_some()
            {
                return Err(ConfigError::new(
                    format!("{key}.username"),
                    format!("duplicate user {:?}", user.username),
                ));
            }
        }
        let mut token_list: Vec<(String, String, Arc<Permissions>)> =
            Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            let key = format!("tokens[{i}]");
            if token.name.is_empty() || token_list.iter().any(|(name, ..)| *name == token.name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    "must be non-empty and unique",
                ));
            }
            let hash = phc(&token.token_hash, &format!("{key}.token_hash"))?;
            let given = PermissionsConfig {
                publish: token.publish.clone(),
                subscribe: token.subscribe.clone(),
                deny: token.deny.clone(),
                sql: token.sql.clone(),
                queues: token.queues.clone(),
                topics: token.topics.clone(),
                admin: token.admin,
            };
            token_list.push((
                token.name.clone(),
                hash,
                Arc::new(permissions(&given, Kind::Token, &key)?),
            ));
        }
        Ok(AuthTable {
            allow_anonymous,
            anonymous: Arc::new(anonymous),
            users: by_name,
            tokens: token_list,
            open_metrics: auth.open_metrics.unwrap_or(true),
        })
    }
}

/// Whose defaults apply to what a table leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Token,
    Anonymous,
}

fn permissions(
    given: &PermissionsConfig,
    kind: Kind,
    key: &str,
) -> Result<Permissions, ConfigError> {
    let topics_by_default = if kind == Kind::Token {
        Vec::new()
    } else {
        vec!["#".to_owned()]
    };
    let publish = given
        .publish
        .clone()
        .unwrap_or_else(|| topics_by_default.clone());
    let subscribe = given.subscribe.clone().unwrap_or(topics_by_default);
    let rules = Rules::parse(&publish, &subscribe, &given.deny, key)?;
    let sql = match given.sql.as_deref() {
        None => StreamAccess::Only(BTreeSet::new()),
        Some(names) if names.iter().any(|n| n == "*") => StreamAccess::All,
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                validate_stream_name(name)
                    .map_err(|m| ConfigError::new(format!("{key}.sql[{i}]"), m))?;
            }
            StreamAccess::Only(names.iter().cloned().collect())
        }
    };
    let queues = named_access(given.queues.as_deref(), kind, &format!("{key}.queues"), 80)?;
    let topics = named_access(given.topics.as_deref(), kind, &format!("{key}.topics"), 256)?;
    Ok(Permissions {
        rules,
        sql,
        queues,
        topics,
        admin: given.admin.unwrap_or(false),
    })
}

/// Access to queues or topics by name: anonymous clients, when allowed,
/// may use every one unless told otherwise; users and tokens only those
/// they are given.
fn named_access(
    names: Option<&[String]>,
    kind: Kind,
    key: &str,
    max_len: usize,
) -> Result<StreamAccess, ConfigError> {
    Ok(match names {
        None if kind == Kind::Anonymous => StreamAccess::All,
        None => StreamAccess::Only(BTreeSet::new()),
        Some(names) if names.iter().any(|n| n == "*") => StreamAccess::All,
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() || name.len() > max_len {
                    return Err(ConfigError::new(
                        format!("{key}[{i}]"),
                        format!("a name is 1 to {max_len} characters"),
                    ));
                }
            }
            StreamAccess::Only(names.iter().cloned().collect())
        }
    })
}

fn phc(hash: &str, key: &str) -> Result<String, ConfigError> {
    argon2::PasswordHash::new(hash)
        .map(|h| h.to_string())
        .map_err(|e| ConfigError::new(key, format!("not an argon2 PHC string: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    fn user(text: &str) -> UserConfig {
        toml::from_str(&format!(
            "username = \"u\"\npassword_hash = \"{HASH}\"\n{text}"
        ))
        .expect("parse")
    }

    fn table(users: &[UserConfig], auth: &str) -> Result<AuthTable, ConfigError> {
        let auth: AuthConfig = toml::from_str(auth).expect("parse");
        let keyed: Vec<(String, &UserConfig)> = users
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("users[{i}]"), u))
            .collect();
        AuthTable::validate(&auth, (None, None), &keyed, &[])
    }

    #[test]
    fn defaults_follow_the_kind() {
        let t = table(&[user("")], "").expect("valid");
        let (_, u) = &t.users["u"];
        assert_eq!(u.sql, StreamAccess::Only(BTreeSet::new()));
        assert!(!u.admin);
        assert!(u.rules.resolve(Some("u"), "c").may_publish("any/topic"));
        assert!(t.anonymous.admin, "no anonymous table: everything");
        assert_eq!(t.anonymous.sql, StreamAccess::All);

        let t = table(&[], "anonymous = { publish = [\"public/#\"] }").expect("valid");
        assert!(!t.anonymous.admin);
        let acl = t.anonymous.rules.resolve(None, "c");
        assert!(acl.may_publish("public/x") && !acl.may_publish("private/x"));
        assert!(
            acl.may_subscribe("private/x"),
            "subscribe left out: everything"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (user("sql = [\"9x\"]"), "", "users[0].sql[0]"),
            (user("deny = [\"a/#/b\"]"), "", "users[0].deny[0]"),
            (
                UserConfig {
                    password_hash: Some("plain".into()),
                    ..user("")
                },
                "",
                "users[0].password_hash",
            ),
        ];
        for (u, auth, key) in cases {
            assert_eq!(table(&[u], auth).expect_err(key).key, key);
        }
        let err = table(&[user(""), user("")], "").expect_err("duplicate");
        assert_eq!(err.key, "users[1].username");
        let auth: AuthConfig = toml::from_str("allow_anonymous = true").expect("parse");
        let err = AuthTable::validate(&auth, (Some(false), None), &[], &[]).expect_err("both");
        assert_eq!(err.key, "auth.allow_anonymous");
    }
}
