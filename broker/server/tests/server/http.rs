//! The HTTP listener against the real binary: every error answer in the
//! API's JSON shape.

use super::*;

/// axum's default body limit, which `POST /api/v1/sql` keeps.
const SQL_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Asserts a JSON error answer: `status`, `application/json` and an
/// `error` text containing `text`.
async fn assert_json_error(response: reqwest::Response, status: u16, text: &str) {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json", "status {status}");
    let body: Value = response.json().await.expect("a JSON body");
    let error = body["error"].as_str().expect("an error text");
    assert!(
        error.to_lowercase().contains(text),
        "status {status}: {body}"
    );
}

#[tokio::test]
async fn every_error_answer_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), "").await;
    let api = Api::new(broker.http_url());

    // A body over the SQL route's limit: axum's own 413. Exactly one byte
    // over, so the server reads everything sent and the answer arrives
    // cleanly.
    let filler = "x".repeat(SQL_BODY_LIMIT + 1 - r#"{"sql":"SELECT ''"}"#.len());
    let body = format!(r#"{{"sql":"SELECT '{filler}'"}}"#);
    assert_eq!(body.len(), SQL_BODY_LIMIT + 1);
    let response = api
        .client()
        .post(api.url("/api/v1/sql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /api/v1/sql");
    assert_json_error(response, 413, "length limit").await;

    // A wrong method on a route of another crate's router: axum's empty
    // 405, which keeps its Allow header.
    let response = api
        .client()
        .put(api.url("/api/v1/sql"))
        .send()
        .await
        .expect("PUT /api/v1/sql");
    let allow = response.headers().get("allow").cloned();
    assert!(
        allow.is_some_and(|a| a.to_str().is_ok_and(|a| a.contains("POST"))),
        "405 keeps Allow"
    );
    assert_json_error(response, 405, "method not allowed").await;

    // A query string the records route cannot parse, and a missing route.
    let response = api
        .client()
        .get(api.url("/api/v1/streams/events/records?limit=x"))
        .send()
        .await
        .expect("GET records");
    assert_json_error(response, 400, "limit").await;
    let response = api
        .client()
        .delete(api.url("/api/v1/nothing"))
        .send()
        .await
        .expect("DELETE");
    assert_json_error(response, 404, "no such endpoint").await;

    // Answers that are not errors keep their own format.
    let response = api
        .client()
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"text/plain"))
    );
}
