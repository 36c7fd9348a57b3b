//! Who is asking and what they may do: a [`Principal`] (a user, a token or
//! anonymous) with its [`Permissions`]: topic rules, the streams it may
//! read (records API and SQL), and whether it may administer (create and
//! delete streams, queries, and later queues, topics, rules and exports).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::acl::{Acl, Rules};

/// The streams a principal may read, or the queues it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAccess {
    /// Every stream (`sql = ["*"]`).
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl StreamAccess {
    /// May the principal read the stream `name`?
    pub fn allows(&self, name: &str) -> bool {
        match self {
            StreamAccess::All => true,
            StreamAccess::Only(names) => names.contains(name),
        }
    }
}

/// What a user, token or anonymous client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Topic rules.
    pub rules: Rules,
    /// Streams it may read.
    pub sql: StreamAccess,
    /// Queues it may send to and receive from.
    pub queues: StreamAccess,
    /// Fan-out topics it may publish to directly.
    pub topics: StreamAccess,
    /// May create and delete streams, queries, queues, topics, rules and
    /// exports.
    pub admin: bool,
}

impl Permissions {
    /// Everything: every topic, every stream, admin.
    pub fn all() -> Permissions {
        let every = ["#".to_owned()];
        Permissions {
            rules: Rules::parse(&every, &every, &[], "").unwrap_or_default(),
            sql: StreamAccess::All,
            queues: StreamAccess::All,
            topics: StreamAccess::All,
            admin: true,
        }
    }

    /// Nothing at all: what a user or token removed by a reload keeps.
    pub fn none() -> Permissions {
        Permissions {
            rules: Rules::default(),
            sql: StreamAccess::Only(BTreeSet::new()),
            queues: StreamAccess::Only(BTreeSet::new()),
            topics: StreamAccess::Only(BTreeSet::new()),
            admin: false,
        }
    }
}

/// Who a principal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// A `[[users]]` entry, by username.
    User(String),
    /// A `[[tokens]]` entry, by name.
    Token(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub identity: Identity,
    /// What they may do.
    pub permissions: Arc<Permissions>,
}

impl Principal {
    /// The username that `%u` stands for (none for anonymous; a token's
    /// name for a token).
    pub fn username(&self) -> Option<&str> {
        match &self.identity {
            Identity::Anonymous => None,
            Identity::User(name) | Identity::Token(name) => Some(name),
        }
    }

    /// The topic ACL of this principal as client `client_id`.
    pub fn acl(&self, client_id: &str) -> Acl {
        self.permissions.rules.resolve(self.username(), client_id)
    }

    /// May it read the stream `name` (records API, SQL)?
    pub fn may_read(&self, stream: &str) -> bool {
        self.permissions.sql.allows(stream)
    }

    /// May it send to and receive from the queue `name`?
    pub fn may_use_queue(&self, name: &str) -> bool {
        self.permissions.queues.allows(name)
    }

    /// May it publish to the fan-out topic `name` directly?
    pub fn may_publish_topic(&self, name: &str) -> bool {
        self.permissions.topics.allows(name)
    }

    /// May it administer?
    pub fn is_admin(&self) -> bool {
        self.permissions.admin
    }
}

/// Where a request came from, as the listener that accepted it saw it:
/// the client's address (failed logins are counted per address) and
/// whether the listener is on a loopback address (where anonymous access
/// is on by default). Front doors put it beside each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub address: std::net::IpAddr,
    /// The listener is bound to a loopback address.
    pub listener_on_loopback: bool,
}
