//! Who a `/ws` client is, in the one auth model every front door shares.
//! Credentials come from an `Authorization` header (`Basic` for a user,
//! `Bearer` for an API token; scripts), or from the `username` and
//! `password`, or `token`, query parameters (browsers, which cannot set
//! headers on a WebSocket). No credentials means anonymous, when anonymous
//! access is on for the HTTP listener.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use tidewire_auth::{Auth, AuthError, Door, Peer, Principal};

/// Credentials in the query string.
#[derive(Debug, Default, Deserialize)]
pub struct Credentials {
    /// A username.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// An API token.
    pub token: Option<String>,
}

impl Credentials {
    /// The credentials of a request: the `Authorization` header if
    /// present, else the query parameters.
    pub fn from_request(headers: &HeaderMap, query: Credentials) -> Result<Credentials, String> {
        let Some(header) = headers.get(AUTHORIZATION) else {
            return Ok(query);
        };
        let bad = || {
            "malformed Authorization header: expected Basic credentials or a Bearer token"
                .to_owned()
        };
        let value = header.to_str().map_err(|_| bad())?;
        let (scheme, rest) = value.split_once(' ').ok_or_else(bad)?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credentials {
                token: Some(rest.trim().to_owned()),
                ..Credentials::default()
            });
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad());
        }
        let decoded = BASE64.decode(rest.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        Ok(Credentials {
            username: Some(username.to_owned()),
            password: Some(password.to_owned()),
            token: None,
        })
    }

    /// Checks them against `auth`; `peer` is where the request came from
    /// (none known: treated as not on loopback).
    pub async fn authenticate(
        self,
        auth: &Auth,
        peer: Option<Peer>,
        door: Door,
    ) -> Result<Principal, AuthError> {
        let address = peer.map(|p| p.address);
        match self {
            Credentials {
                token: Some(token), ..
            } => auth.token(&token, address, door).await,
            Credentials {
                username: Some(username),
                password,
                ..
            } if !username.is_empty() => {
                let password = password.unwrap_or_default();
                auth.login(&username, password.as_bytes(), address, door)
                    .await
            }
            _ => auth.anonymous(peer.is_some_and(|p| p.listener_on_loopback), door),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_header_wins_over_the_query() {
        let mut headers = HeaderMap::new();
        let query = || Credentials {
            username: Some("q".into()),
            ..Credentials::default()
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
        let bearer = Credentials::from_request(&headers, query()).expect("bearer");
        assert_eq!(bearer.token.as_deref(), Some("abc"));
        assert_eq!(bearer.username, None);

        headers.insert(AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert!(Credentials::from_request(&headers, query()).is_err());
    }
}
