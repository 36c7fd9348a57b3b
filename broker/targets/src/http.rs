//! [`WebhookTarget`]: one HTTP(S) POST per message, for SNS-style fan-out
//! to webhooks.
//!
//! - Every webhook shares one [`reqwest::Client`] ([`client`], held by
//!   [`crate::Targets`]), so connections are kept alive and reused per
//!   host; TLS is rustls over ring with the OS roots. Redirects are not
//!   followed: a 3xx is the webhook's answer.
//! - A request is started when [`Target::deliver`] is called, on a task of
//!   its own, so the pump keeps several in flight; at most
//!   [`MAX_IN_FLIGHT`] per target, the rest wait their turn. Dropping the
//!   returned future cancels the request.
//! - Each request has a deadline ([`TargetOptions::timeout`], default
//!   [`DEFAULT_TIMEOUT`]) covering connecting, sending and reading the
//!   answer, and at most [`MAX_RESPONSE_BYTES`] of an answer are read: a
//!   webhook that answers 500s, hangs or sends back 10 MB costs its own
//!   subscription a retry, never memory or the other subscriptions' time.
//! - 2xx is delivered; 429, 5xx, timeouts and connection errors are worth
//!   a retry; any other answer (3xx, 4xx) rejects the message for good, as
//!   SNS does.
//!
//! [`probe`] checks that a webhook's host takes TCP connections, for the
//! API to refuse a subscription to a URL that cannot work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use sha2::Sha256;
use tidewire_core::ConfigError;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{Delivery, SinkError, Target, TargetOptions};

/// How long one request may take, connecting, sending and reading the
/// answer included, when the target sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a connection (TCP and TLS) may take, whatever the
/// target's `timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle kept-alive connection stays open for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Requests one webhook target has in flight at most (a subscription's
/// `max_in_flight` bounds it further; each subscription builds its own
/// target). Measured with `benches/src/bin/fanout.rs`: 64 keeps a local
/// receiver busy.
pub const MAX_IN_FLIGHT: usize = 64;
/// The most of an answer's body that is read. A shorter body is read to
/// its end, so the connection goes back to the pool; from a longer one
/// this much is kept and the connection is dropped, never buffered.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024;
/// The most characters of an answer's body quoted in a failure reason.
pub const MAX_REASON_BODY_CHARS: usize = 200;
/// The header holding `sha256=HEX`, the HMAC-SHA256 of the body, when the
/// target has an `hmac_secret`.
pub const SIGNATURE_HEADER: &str = "x-tidewire-signature";
/// The content type of a delivery that has none (as SNS sends raw
/// messages).
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=UTF-8";
/// How long [`probe`] waits for the host to resolve and take a TCP
/// connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client every webhook shares: kept-alive, pooled connections,
/// [`CONNECT_TIMEOUT`], no redirects followed. Fails only when the OS
/// root certificate store holds no usable certificate.
pub fn client() -> Result<Client, reqwest::Error> {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tidewire/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs each message to a URL.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    hook: Arc<Webhook>,
}

#[derive(Debug)]
struct Webhook {
    client: Client,
    url: Url,
    timeout: Duration,
    /// `TargetOptions::headers`, checked; they win over a delivery's own.
    headers: HeaderMap,
    signer: Option<Signer>,
    slots: Semaphore,
}

/// The HMAC-SHA256 keyed with the target's secret, before any input;
/// cloned per request. Its `Debug` does not show the key.
#[derive(Clone)]
struct Signer(Hmac<Sha256>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(HMAC-SHA256)")
    }
}

impl WebhookTarget {
    /// POSTs to `url` through `client` (the shared one, [`client`]) with
    /// `options`' timeout, headers and secret; `key` names the target in
    /// errors (a header that is not valid HTTP, an empty secret, a zero
    /// timeout).
    pub fn new(
        client: Client,
        url: &str,
        options: &TargetOptions,
        key: &str,
    ) -> Result<WebhookTarget, ConfigError> {
        let error = |message: String| ConfigError::new(key, message);
        let url = Url::parse(url).map_err(|e| error(format!("{url:?}: {e}")))?;
        let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(error("timeout: must be more than 0".to_owned()));
        }
        let mut headers = HeaderMap::with_capacity(options.headers.len());
        for (name, value) in &options.headers {
            let (name, value) = header(name, value).map_err(|m| error(format!("headers: {m}")))?;
            headers.insert(name, value);
        }
        let signer = match options.hmac_secret.as_deref() {
            None => None,
            Some("") => return Err(error("hmac_secret: must not be empty".to_owned())),
            Some(secret) => Some(Signer(
                Hmac::new_from_slice(secret.as_bytes())
                    .map_err(|e| error(format!("hmac_secret: {e}")))?,
            )),
        };
        Ok(WebhookTarget {
            hook: Arc::new(Webhook {
                client,
                url,
                timeout,
                headers,
                signer,
                slots: Semaphore::new(MAX_IN_FLIGHT),
            }),
        })
    }

    /// The URL POSTed to.
    pub fn url(&self) -> &Url {
        &self.hook.url
    }
}

impl Target for WebhookTarget {
    /// Starts the request at once on a task of its own (so call it inside
    /// the tokio runtime, as the pump does); the future answers its
    /// outcome, and dropping it cancels the request.
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), SinkError>> {
        let hook = Arc::clone(&self.hook);
        let task = AbortOnDrop(tokio::spawn(async move { hook.post(delivery).await }));
        Box::pin(async move {
            let mut task = task;
            match (&mut task.0).await {
                Ok(outcome) => outcome,
                Err(e) => Err(SinkError::retry(format!("webhook request task: {e}"))),
            }
        })
    }
}

/// Aborts the request's task when the pump drops its acknowledgement.
struct AbortOnDrop(JoinHandle<Result<(), SinkError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Webhook {
    async fn post(&self, delivery: Delivery) -> Result<(), SinkError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| SinkError::retry(format!("POST {}: {e}", self.url)))?;
        let headers = self
            .headers_for(&delivery)
            .map_err(|m| SinkError::rejected(format!("POST {}: {m}", self.url)))?;
        let mut response = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(headers)
            .body(delivery.body)
            .send()
            .await
            .map_err(|e| self.unanswered(e))?;
        let status = response.status();
        // Read even a 2xx answer (up to the cap): a body read to its end
        // lets the connection be reused. An error while reading it changes
        // nothing: the status is the answer.
        let head = read_capped(&mut response).await;
        drop(response);
        if status.is_success() {
            return Ok(());
        }
        let reason = answered(&self.url, status, &head);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SinkError::retry(reason))
        } else {
            Err(SinkError::rejected(reason))
        }
    }

    /// The request's headers: the content type, the delivery's headers,
    /// the target's (which replace a delivery's of the same name), then
    /// the signature.
    fn headers_for(&self, delivery: &Delivery) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::with_capacity(delivery.headers.len() + self.headers.len() + 2);
        let content_type = delivery
            .content_type
            .as_deref()
            .unwrap_or(DEFAULT_CONTENT_TYPE);
        let content_type = HeaderValue::from_str(content_type)
            .map_err(|_| format!("content type {content_type:?} is not a valid header value"))?;
        headers.insert(CONTENT_TYPE, content_type);
        for (name, value) in &delivery.headers {
            let (name, value) = header(name, value)?;
            headers.append(name, value);
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(Signer(mac)) = &self.signer {
            let mut mac = mac.clone();
            mac.update(&delivery.body);
            let signature = format!("sha256={}", hex(&mac.finalize().into_bytes()));
            let value =
                HeaderValue::from_str(&signature).map_err(|e| format!("signature header: {e}"))?;
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), value);
        }
        Ok(headers)
    }

    /// A request that got no answer: worth a retry.
    fn unanswered(&self, e: reqwest::Error) -> SinkError {
        let why = if e.is_timeout() {
            format!("no answer within {:?}", self.timeout)
        } else if e.is_connect() {
            format!("cannot connect: {}", innermost(&e))
        } else {
            error_chain(&e.without_url())
        };
        SinkError::retry(format!("POST {}: {why}", self.url))
    }
}

/// A header from configuration or a delivery, checked.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("{name}: {value:?} is not a valid header value"))?;
    Ok((name, value))
}

/// Reads the body until its end or past [`MAX_RESPONSE_BYTES`], keeping at
/// most that much; stops quietly on an error (a timeout included).
async fn read_capped(response: &mut reqwest::Response) -> Vec<u8> {
    let mut head = Vec::new();
    let mut read = 0;
    while read <= MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = MAX_RESPONSE_BYTES - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    head
}

/// `POST URL: STATUS: BODY`, the body cut to [`MAX_REASON_BODY_CHARS`]
/// with its whitespace and control characters folded into single spaces.
fn answered(url: &Url, status: StatusCode, head: &[u8]) -> String {
    let mut reason = format!("POST {url}: {status}");
    let text = String::from_utf8_lossy(head);
    let folded = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !folded.is_empty() {
        reason.push_str(": ");
        let mut chars = folded.chars();
        reason.extend(chars.by_ref().take(MAX_REASON_BODY_CHARS));
        if chars.next().is_some() {
            reason.push('…');
        }
    }
    reason
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The deepest source of an error (for a refused connection, the OS's
/// word for it).
fn innermost(e: &dyn std::error::Error) -> String {
    let mut deepest = e;
    while let Some(s) = deepest.source() {
        deepest = s;
    }
    deepest.to_string()
}

/// Checks that the webhook `url`'s host resolves and takes a TCP
/// connection on its port (80 or 443 unless given), within
/// [`PROBE_TIMEOUT`]. Errors read `URL is unreachable: WHY`. Proxies are
/// not consulted: the check is of the host itself.
pub async fn probe(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{url} is unreachable: no port"))?;
    let connect = async {
        let addresses: Vec<SocketAddr> = match parsed.host() {
            Some(url::Host::Domain(domain)) => tokio::net::lookup_host((domain, port))
                .await
                .map_err(|e| format!("cannot resolve {domain}: {}", io_reason(&e)))?
                .collect(),
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::from((ip, port))],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::from((ip, port))],
            None => return Err("no host".to_owned()),
        };
        let mut last = "the host resolves to no address".to_owned();
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(_) => return Ok(()),
                Err(e) => last = io_reason(&e),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(format!("{url} is unreachable: {why}")),
        Err(_) => Err(format!(
            "{url} is unreachable: no connection within {PROBE_TIMEOUT:?}"
        )),
    }
}

/// An I/O error as a phrase: `connection refused`, without the OS's
/// `(os error 111)`.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn a_failure_reason_quotes_a_short_folded_body() {
        let url = Url::parse("https://x/hook").expect("url");
        assert_eq!(
            answered(&url, StatusCode::INTERNAL_SERVER_ERROR, b""),
            "POST https://x/hook: 500 Internal Server Error"
        );
        assert_eq!(
            answered(&url, StatusCode::NOT_FOUND, b"  no\r\n\tsuch\x00hook "),
            "POST https://x/hook: 404 Not Found: no such hook"
        );
        let long = "é".repeat(10 * MAX_REASON_BODY_CHARS);
        let reason = answered(&url, StatusCode::BAD_REQUEST, long.as_bytes());
        let quoted = reason
            .strip_prefix("POST https://x/hook: 400 Bad Request: ")
            .expect("prefix");
        assert_eq!(quoted.chars().count(), MAX_REASON_BODY_CHARS + 1);
        assert!(quoted.ends_with('…'));
    }
}
