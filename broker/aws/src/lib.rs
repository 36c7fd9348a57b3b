//! The AWS protocol layer every AWS-compatible service plugs into (SPEC
//! section 5): `POST /` on the HTTP listener, routed by protocol — a JSON
//! protocol when `X-Amz-Target: Service.Action` is set (SQS JSON 1.0,
//! EventBridge and Kinesis JSON 1.1), else the Query protocol (a form
//! with `Action=...`: STS, SNS) — after the caller is found: a SigV4
//! signature ([`sigv4`]) over an access key of `[aws]` ([`config`]),
//! mapped to a tidewire user whose permissions apply, or anonymous where
//! anonymous access is allowed. Errors take each protocol's own shape
//! ([`error`]). STS `GetCallerIdentity` ([`sts`]), SQS ([`sqs`]) and SNS
//! ([`sns`]) answer; a new service is a module and a line in
//! [`AwsApi::query`] or [`AwsApi::json`].
//!
//! `GET /?Action=...` serves only the links SNS's documents carry
//! (`SubscribeURL`: `ConfirmSubscription`, `UnsubscribeURL`:
//! `Unsubscribe`), with the form in the query string. Unsigned, they are
//! let in even where anonymous access is off, with no permissions: the
//! confirmation token, or the random id of a subscription made through
//! SNS, is their credential.

pub mod config;
pub mod error;
pub mod sigv4;
pub mod sns;
pub mod sqs;
pub mod sts;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tidewire_auth::{Auth, Door, Identity, Peer, Permissions, Principal};
use tidewire_queues::Queues;
use tidewire_topics::Topics;

pub use config::{AwsConfig, AwsSettings};
pub use error::AwsError;
use error::with_request_id;

/// The region when `[aws] region` is not set: of unsigned requests, and of
/// ARNs made outside a request.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Who made an AWS request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its permissions.
    pub principal: Principal,
    /// The access key that signed it; none when unsigned (anonymous).
    pub access_key_id: Option<String>,
    /// True when the access key maps to a `[[users]]` entry.
    pub mapped_user: bool,
    /// The region of the signature's credential scope; `[aws] region`
    /// when unsigned.
    pub region: Option<String>,
}

impl Caller {
    /// Who sends or publishes, as messages record it: the username, or
    /// `anonymous`.
    pub fn sender(&self) -> String {
        self.principal
            .username()
            .map_or_else(|| "anonymous".to_owned(), str::to_owned)
    }

    /// Who it is, for error messages.
    pub fn who(&self) -> String {
        match self.principal.username() {
            Some(name) => format!("the user {name:?}"),
            None => "an anonymous caller".to_owned(),
        }
    }
}

/// The AWS endpoint: settings, the auth model, and its services.
#[derive(Debug, Clone)]
pub struct AwsApi {
    settings: Arc<AwsSettings>,
    auth: Auth,
    queues: Queues,
    topics: Topics,
}

/// Where an AWS request's answer goes: which error shape it needs.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Query,
    Json(&'static str),
}

impl AwsApi {
    /// The endpoint for `settings`, checking callers against `auth`,
    /// serving `queues` over SQS and `topics` over SNS.
    pub fn new(settings: AwsSettings, auth: Auth, queues: Queues, topics: Topics) -> AwsApi {
        AwsApi {
            settings: Arc::new(settings),
            auth,
            queues,
            topics,
        }
    }

    /// Finds the caller: a valid SigV4 signature, or anonymous. An
    /// unsigned `link` (an SNS link followed with `GET`) where anonymous
    /// access is off gets a caller with no permissions: the link's token
    /// is checked by the action.
    fn caller(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        peer: Option<Peer>,
        link: bool,
    ) -> Result<Caller, AwsError> {
        let forbidden =
            |code: &str, message: String| AwsError::sender(StatusCode::FORBIDDEN, code, message);
        if !headers.contains_key("authorization") {
            let on_loopback = peer.is_some_and(|p| p.listener_on_loopback);
            let principal = match self.auth.anonymous(on_loopback, Door::Http) {
                Ok(principal) => principal,
                Err(_) if link => Principal {
                    identity: Identity::Anonymous,
                    permissions: Arc::new(Permissions::none()),
                },
                Err(_) => {
                    return Err(forbidden(
                        "MissingAuthenticationToken",
                        "requests must be signed with an access key of [aws.credentials]".into(),
                    ));
                }
            };
            return Ok(Caller {
                principal,
                access_key_id: None,
                mapped_user: false,
                region: Some(self.settings.region.clone()),
            });
        }
        let request = sigv4::Request {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers,
            body,
        };
        let credentials = &self.settings.credentials;
        let signed = sigv4::verify(&request, |key| {
            credentials.get(key).map(|c| c.secret.as_str())
        })
        .map_err(|e| forbidden(e.code(), e.to_string()))?;
        let credential = &credentials[&signed.access_key_id];
        let (principal, mapped_user) = match &credential.user {
            Some(user) => (
                self.auth.user(user).ok_or_else(|| {
                    forbidden(
                        "InvalidClientTokenId",
                        "the access key's user no longer exists".into(),
                    )
                })?,
                true,
            ),
            None => (
                Principal {
                    identity: Identity::User(signed.access_key_id.clone()),
                    permissions: Arc::new(Permissions::all()),
                },
                false,
            ),
        };
        Ok(Caller {
            principal,
            access_key_id: Some(signed.access_key_id),
            mapped_user,
            region: Some(signed.region),
        })
    }

    /// A Query-protocol action sent to `host` (`link`: an SNS link
    /// followed with `GET`).
    async fn query(
        &self,
        caller: &Caller,
        form: &sns::Form,
        host: &str,
        link: bool,
        request_id: &str,
    ) -> Response {
        let action = form.get("Action");
        if let Some(action) = action.and_then(sns::Action::named) {
            let account = &self.settings.account_id;
            let ctx = sns::Context::new(&self.topics, caller, account, host, link);
            return sns::handle(&ctx, action, form, request_id).await;
        }
        match action {
            Some("GetCallerIdentity") => {
                sts::get_caller_identity(caller, &self.settings.account_id, request_id)
            }
            Some(other) => AwsError::sender(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("the action {other} is not valid for this endpoint"),
            )
            .to_query_xml(request_id),
            None => AwsError::sender(
                StatusCode::BAD_REQUEST,
                "MissingAction",
                "the request has no Action",
            )
            .to_query_xml(request_id),
        }
    }

    /// A JSON-protocol action (`X-Amz-Target: Service.Action`) sent to
    /// `host`.
    async fn json(
        &self,
        caller: &Caller,
        target: &str,
        host: &str,
        body: &[u8],
        content_type: &'static str,
        request_id: &str,
    ) -> Response {
        let answered = match target.split_once('.') {
            Some(("AmazonSQS", action)) => {
                let ctx = sqs::Context {
                    queues: &self.queues,
                    caller,
                    account: &self.settings.account_id,
                    host,
                };
                sqs::handle(&ctx, action, body).await
            }
            _ => Err(AwsError::sender(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                format!("{target} is not served by this endpoint"),
            )),
        };
        match answered {
            Ok(answer) => with_request_id(
                ([(header::CONTENT_TYPE, content_type)], answer.to_string()).into_response(),
                request_id,
            ),
            Err(error) => error.to_json(content_type, request_id),
        }
    }
}

/// `POST /`: an AWS SDK request; `GET /?Action=...`: an SNS link.
pub async fn handle(
    State(api): State<AwsApi>,
    peer: Option<Extension<Peer>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = request_id();
    let link = method == Method::GET;
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .filter(|_| !link)
        .map(str::to_owned);
    let protocol = match &target {
        Some(target) if target.starts_with("AmazonSQS.") => {
            Protocol::Json("application/x-amz-json-1.0")
        }
        Some(_) => Protocol::Json("application/x-amz-json-1.1"),
        None => Protocol::Query,
    };
    let fail = |error: AwsError| match protocol {
        Protocol::Query => error.to_query_xml(&request_id),
        Protocol::Json(content_type) => error.to_json(content_type, &request_id),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let peer = peer.map(|Extension(p)| p);
    if link && let Err(error) = query_form(link, &uri, &body) {
        return fail(error);
    }
    let caller = match api.caller(&method, &uri, &headers, &body, peer, link) {
        Ok(caller) => caller,
        Err(e) => return fail(e),
    };
    if let (Protocol::Json(content_type), Some(target)) = (protocol, &target) {
        return api
            .json(&caller, target, &host, &body, content_type, &request_id)
            .await;
    }
    match query_form(link, &uri, &body) {
        Ok(form) => api.query(&caller, &form, &host, link, &request_id).await,
        Err(error) => fail(error),
    }
}

/// The Query protocol's form: a `POST`'s body, or the query string of a
/// `GET`, which may only follow an SNS link.
fn query_form(link: bool, uri: &Uri, body: &[u8]) -> Result<sns::Form, AwsError> {
    let raw = if link {
        uri.query().unwrap_or_default().as_bytes()
    } else {
        body
    };
    let pairs = serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw).map_err(|e| {
        AwsError::sender(
            StatusCode::BAD_REQUEST,
            "MalformedQueryString",
            format!("the request is not a form: {e}"),
        )
    })?;
    let form = sns::Form::new(pairs);
    if link
        && !form
            .get("Action")
            .and_then(sns::Action::named)
            .is_some_and(sns::Action::is_link)
    {
        return Err(AwsError::sender(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "GET / only follows the links of SNS messages (Action=ConfirmSubscription, Action=Unsubscribe); every other action is a POST",
        ));
    }
    Ok(form)
}

/// A request id, unique in this process and unlikely to repeat across
/// restarts, in the UUID shape the SDKs log.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let a = nanos ^ n.rotate_left(32);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        n & 0xfff,
        (nanos.rotate_left(17) ^ n) & 0xffff_ffff_ffff
    )
}
