//! Who a `/ws` client is: the same users and ACLs as MQTT. Credentials come
//! from an `Authorization: Basic` header (scripts) or the `username` and
//! `password` query parameters (browsers, which cannot set headers on a
//! WebSocket). No credentials means anonymous, when anonymous access is on.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use tidewire_mqtt::auth::{Acl, Auth, AuthError};

/// Credentials in the query string.
#[derive(Debug, Default, Deserialize)]
pub struct Credentials {
    /// The MQTT username.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
}

impl Credentials {
    /// The credentials of a request: the `Authorization: Basic` header if
    /// present, else the query parameters.
    pub fn from_request(headers: &HeaderMap, query: Credentials) -> Result<Credentials, String> {
        let Some(header) = headers.get(AUTHORIZATION) else {
            return Ok(query);
        };
        let bad = || "malformed Authorization header: expected Basic credentials".to_owned();
        let value = header.to_str().map_err(|_| bad())?;
        let encoded = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
            .ok_or_else(bad)?;
        let decoded = BASE64.decode(encoded.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        Ok(Credentials {
            username: Some(username.to_owned()),
            password: Some(password.to_owned()),
        })
    }

    /// Checks them; argon2 runs on the blocking pool.
    pub async fn authenticate(self, auth: &Auth) -> Result<Arc<Acl>, AuthError> {
        let Credentials { username, password } = self;
        if username.as_deref().is_none_or(str::is_empty) {
            return auth.authenticate(None, &[]);
        }
        let auth = auth.clone();
        tokio::task::spawn_blocking(move || {
            auth.authenticate(username.as_deref(), password.unwrap_or_default().as_bytes())
        })
        .await
        .unwrap_or(Err(AuthError::BadCredentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_header_wins_over_the_query() {
        let mut headers = HeaderMap::new();
        let query = || Credentials {
            username: Some("q".into()),
            password: None,
        };
        let from_query = Credentials::from_request(&headers, query()).expect("no header");
        assert_eq!(from_query.username.as_deref(), Some("q"));

        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6czNjcjN0"),
        );
        let basic = Credentials::from_request(&headers, query()).expect("valid header");
        assert_eq!(basic.username.as_deref(), Some("alice"));
        assert_eq!(basic.password.as_deref(), Some("s3cr3t"));

        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(Credentials::from_request(&headers, query()).is_err());
    }
}
