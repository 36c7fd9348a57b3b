//! Who an HTTP request comes from: [`authenticate`] runs before every
//! route, takes `Authorization: Basic` (a user) or `Authorization: Bearer`
//! (an API token), or lets the request in as anonymous where anonymous
//! access is on, and puts the [`Principal`] beside the request for the
//! handlers, which check what it may do ([`forbidden`]).
//!
//! Missing or bad credentials get 401 with `WWW-Authenticate`; a denied
//! action gets 403 naming the missing permission, never whether a user
//! exists. Open without credentials: the dashboard's page and assets (it
//! asks for credentials itself), `/ws` and `/mqtt` (they authenticate at
//! the upgrade and in CONNECT), and `/healthz` and `/metrics` unless
//! `auth.open_metrics = false`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tidewire_auth::{Auth, AuthError, Door, Peer, Principal};

use super::ApiError;

/// The challenges a 401 carries: a user's password or an API token.
const CHALLENGES: [&str; 2] = ["Basic realm=\"tidewire\"", "Bearer realm=\"tidewire\""];

/// Finds the caller of every request, or answers 401.
pub async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let metrics_path = path == "/metrics" || path == "/healthz";
    let open = path == "/"
        || path.starts_with("/assets/")
        || path == "/ws"
        || path == "/mqtt"
        || (metrics_path && auth.table().open_metrics);
    if open {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<Peer>().copied();
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().map(str::to_owned));
    match caller(&auth, credentials, peer).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(message) => unauthorized(message),
    }
}

/// The principal of a request's `Authorization` header (none: anonymous;
/// `Err`: not text).
async fn caller(
    auth: &Auth,
    credentials: Option<Result<String, header::ToStrError>>,
    peer: Option<Peer>,
) -> Result<Principal, String> {
    let address = peer.map(|p| p.address);
    let Some(value) = credentials else {
        let on_loopback = peer.is_some_and(|p| p.listener_on_loopback);
        return auth
            .anonymous(on_loopback, Door::Http)
            .map_err(|e| match e {
                AuthError::AnonymousNotAllowed => {
                    "credentials required: Basic (user) or Bearer (API token)".to_owned()
                }
                other => other.to_string(),
            });
    };
    let malformed = || "malformed Authorization header: use Basic or Bearer".to_owned();
    let value = value.map_err(|_| malformed())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
    let verdict = if scheme.eq_ignore_ascii_case("bearer") {
        auth.token(rest.trim(), address, Door::Http).await
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64.decode(rest.trim()).map_err(|_| malformed())?;
        let text = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (username, password) = text.split_once(':').ok_or_else(malformed)?;
        auth.login(username, password.as_bytes(), address, Door::Http)
            .await
    } else {
        return Err(malformed());
    };
    verdict.map_err(|e| e.to_string())
}

fn unauthorized(message: String) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    for challenge in CHALLENGES {
        response.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// A 403 for an action that needs `permission`.
pub fn forbidden(what: impl std::fmt::Display, permission: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("not allowed to {what} (the {permission} permission)"),
    )
}

/// Refuses a caller without the admin permission.
pub fn require_admin(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(forbidden(what, "admin"))
    }
}
