//! Reloading the config file while serving: on SIGHUP and on
//! `POST /api/v1/admin/reload`. The file is loaded and validated exactly as
//! `check-config` does; a bad file changes nothing and the error says why.
//! What a reload changes: the users, tokens, ACLs and anonymous policy
//! (connected clients follow the new rules from their next packet) and
//! the TLS certificates (new handshakes use them; open connections keep
//! theirs). What it cannot change while running (the data directory, the
//! listen addresses, turning TLS on or off) refuses the reload, named in
//! the error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tidewire_auth::Auth;
use tidewire_tls::Tls;

use crate::config::{Config, Overrides};

/// Loads the config again and puts what may change in force. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Overrides,
    fixed: Fixed,
    auth: Auth,
    tls: Option<Tls>,
    /// One reload at a time.
    running: Mutex<()>,
}

/// What only a restart changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixed {
    data_dir: PathBuf,
    http_listen: SocketAddr,
    mqtt_listen: SocketAddr,
    mqtt_tls_listen: Option<SocketAddr>,
    http_tls: bool,
    tls: bool,
}

impl Fixed {
    fn of(config: &Config) -> Fixed {
        Fixed {
            data_dir: config.data_dir.clone(),
            http_listen: config.http_listen,
            mqtt_listen: config.mqtt.listen,
            mqtt_tls_listen: config.mqtt.tls.as_ref().map(|(addr, _)| *addr),
            http_tls: config.http_tls,
            tls: config.tls.is_some(),
        }
    }

    /// The keys that differ from `self` in `new`.
    fn changed(&self, new: &Fixed) -> Vec<&'static str> {
        [
            ("data_dir", self.data_dir != new.data_dir),
            ("http.listen", self.http_listen != new.http_listen),
            ("mqtt.listen", self.mqtt_listen != new.mqtt_listen),
            (
                "mqtt.tls_listen",
                self.mqtt_tls_listen != new.mqtt_tls_listen,
            ),
            ("http.tls", self.http_tls != new.http_tls),
            ("[tls] on or off", self.tls != new.tls),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server runs without a config file.
    #[error("no config file to reload: the server was started without --config")]
    NoFile,
    /// The file is bad, as `check-config` would say (user input).
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigLoadError),
    /// The file changes what only a restart can (user input).
    #[error("the config file changes {}, which only a restart can change; nothing was reloaded", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
}

impl Reloader {
    /// A reloader for a server started with `config`.
    pub fn new(config: &Config) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                source: config.source.clone(),
                fixed: Fixed::of(config),
                auth: config.auth.clone(),
                tls: config.tls.clone(),
                running: Mutex::new(()),
            }),
        }
    }

    /// Loads and checks the file, then puts the new users, tokens and
    /// rules in force. Blocking file I/O.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.source.config_file.is_none() {
            return Err(ReloadError::NoFile);
        }
        let config = Config::load(&self.inner.source)?;
        let changed = self.inner.fixed.changed(&Fixed::of(&config));
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart(changed));
        }
        let table = config.auth.table().as_ref().clone();
        self.inner.auth.replace(table);
        if let (Some(old), Some(new)) = (&self.inner.tls, &config.tls) {
            old.replace(new.settings());
        }
        tracing::info!("config reloaded: users, tokens, ACLs and certificates are in force");
        Ok(())
    }

    /// [`Reloader::reload`], logging the outcome; for signals.
    pub fn reload_logged(&self) {
        if let Err(e) = self.reload() {
            tracing::error!("config not reloaded: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_addresses_and_data_dir_are_named() {
        let before = Fixed {
            data_dir: "/a".into(),
            http_listen: "127.0.0.1:8080".parse().expect("addr"),
            mqtt_listen: "127.0.0.1:1883".parse().expect("addr"),
            mqtt_tls_listen: None,
            http_tls: false,
            tls: false,
        };
        assert!(before.changed(&before.clone()).is_empty());
        let after = Fixed {
            data_dir: "/b".into(),
            mqtt_listen: "0.0.0.0:1883".parse().expect("addr"),
            ..before.clone()
        };
        assert_eq!(before.changed(&after), ["data_dir", "mqtt.listen"]);
        let error = ReloadError::NeedsRestart(before.changed(&after));
        assert!(
            error.to_string().contains("data_dir, mqtt.listen"),
            "{error}"
        );
    }
}
