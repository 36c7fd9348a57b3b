//! AWS Signature Version 4, as the AWS SDKs and CLI sign requests
//! (`Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
//! Signature=...`): the canonical request, the string to sign, the signing
//! key derived from the secret, and a constant-time comparison. Requests
//! older or newer than [`MAX_SKEW_SECS`] are refused, as AWS does.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// How far a request's `X-Amz-Date` may be from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// What a verified signature says about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The access key id that signed it.
    pub access_key_id: String,
    /// The region in its credential scope (any is accepted).
    pub region: String,
    /// The service in its credential scope.
    pub service: String,
}

/// Why a signature was refused, with AWS's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `Authorization` header is not a SigV4 one, or lacks a part.
    #[error("IncompleteSignature: {0}")]
    Incomplete(String),
    /// No such access key.
    #[error("InvalidClientTokenId: the access key id is not known")]
    UnknownKey,
    /// The signature does not match the request.
    #[error("SignatureDoesNotMatch: the request signature does not match")]
    Mismatch,
    /// The request's time is too far from now.
    #[error("RequestTimeTooSkewed: the request time is more than 15 minutes from the server's")]
    Skewed,
}

impl SignatureError {
    /// The AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Incomplete(_) => "IncompleteSignature",
            SignatureError::UnknownKey => "InvalidClientTokenId",
            SignatureError::Mismatch => "SignatureDoesNotMatch",
            SignatureError::Skewed => "RequestTimeTooSkewed",
        }
    }
}

/// A request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `POST`, `GET`, ...
    pub method: &'a str,
    /// The path, as sent (already percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// Its body.
    pub body: &'a [u8],
}

/// Verifies `request`'s SigV4 signature with the secret `secret_of` gives
/// for its access key id.
pub fn verify<'s>(
    request: &Request<'_>,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<Signed, SignatureError> {
    let header = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SignatureError::Incomplete("no Authorization header".into()))?;
    let parts = parse_authorization(header)?;
    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SignatureError::Incomplete("no X-Amz-Date header".into()))?;
    let request_secs = parse_amz_date(amz_date)
        .ok_or_else(|| SignatureError::Incomplete(format!("bad X-Amz-Date {amz_date:?}")))?;
    if (now_secs() - request_secs).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Skewed);
    }
    let [key, date, region, service, terminal] = parts.scope.as_slice() else {
        return Err(SignatureError::Incomplete(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request".into(),
        ));
    };
    if *terminal != "aws4_request" || !amz_date.starts_with(date) {
        return Err(SignatureError::Incomplete("bad credential scope".into()));
    }
    let secret = secret_of(key).ok_or(SignatureError::UnknownKey)?;
    let string_to_sign = string_to_sign(request, &parts.signed_headers, amz_date, &parts.scope)?;
    let signing_key = [date, region, service, "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac_sha256(&key, part.as_bytes()).to_vec()
        });
    let expected = hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), parts.signature.as_bytes()) {
        return Err(SignatureError::Mismatch);
    }
    Ok(Signed {
        access_key_id: (*key).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
    })
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
struct Authorization<'a> {
    scope: Vec<&'a str>,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, SignatureError> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        SignatureError::Incomplete("only AWS4-HMAC-SHA256 signatures are accepted".into())
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| SignatureError::Incomplete(format!("no {what} in Authorization"));
    Ok(Authorization {
        scope: credential
            .ok_or_else(|| missing("Credential"))?
            .split('/')
            .collect(),
        signed_headers: signed
            .ok_or_else(|| missing("SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| missing("Signature"))?,
    })
}

fn string_to_sign(
    request: &Request<'_>,
    signed_headers: &[&str],
    amz_date: &str,
    scope: &[&str],
) -> Result<String, SignatureError> {
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<&str> = request
            .headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(SignatureError::Incomplete(format!(
                "signed header {name:?} is missing"
            )));
        }
        let value = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(",");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let payload_hash = request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| hex::encode(Sha256::digest(request.body)), str::to_owned);
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query),
        canonical_headers,
        signed_headers.join(";"),
        payload_hash
    );
    Ok(format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        scope[1..].join("/"),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    ))
}

/// The path with every byte outside the unreserved set encoded (what is
/// already encoded is decoded first, so it is encoded once).
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| encode(&decode(segment)))
        .collect::<Vec<_>>()
        .join("/")
}

/// The query's parameters, each name and value encoded, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_pair = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex_pair) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the epoch of `20150830T123600Z`.
fn parse_amz_date(text: &str) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    if text.len() != 16 || &text[8..9] != "T" || &text[15..] != "Z" {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_aws_get_vanilla_example_has_the_documented_string_to_sign() {
        // From the AWS SigV4 test suite ("get-vanilla").
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().expect("value"));
        headers.insert("x-amz-date", "20150830T123600Z".parse().expect("value"));
        let request = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let scope = [
            "AKIDEXAMPLE",
            "20150830",
            "us-east-1",
            "service",
            "aws4_request",
        ];
        let sts = string_to_sign(
            &request,
            &["host", "x-amz-date"],
            "20150830T123600Z",
            &scope,
        )
        .expect("string to sign");
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        let key = ["20150830", "us-east-1", "service", "aws4_request"]
            .iter()
            .fold(
                b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_vec(),
                |key, part| hmac_sha256(&key, part.as_bytes()).to_vec(),
            );
        assert_eq!(
            hex::encode(hmac_sha256(&key, sts.as_bytes())),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn dates_parse_and_bad_headers_are_incomplete() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("2015-08-30"), None);
        let headers = HeaderMap::new();
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        assert!(matches!(
            verify(&request, |_| Some("s")),
            Err(SignatureError::Incomplete(_))
        ));
    }

    #[test]
    fn paths_and_queries_are_canonical() {
        assert_eq!(canonical_path("/a b/%7E"), "/a%20b/~");
        assert_eq!(canonical_query("b=2&a=1&c"), "a=1&b=2&c=");
    }
}
