//! The app's files, embedded in the binary. The charting library (uPlot,
//! MIT) is vendored minified under `assets/vendor/` with its licence.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("cards.js", "text/javascript; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("topics.js", "text/javascript; charset=utf-8"),
    asset!("topics.css", "text/css; charset=utf-8"),
    asset!("exports.js", "text/javascript; charset=utf-8"),
    asset!("exports.css", "text/css; charset=utf-8"),
    asset!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
];

fn respond(path: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                // The files change only with the binary.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no asset {path:?}") })),
        )
            .into_response(),
    }
}

/// `GET /`: the app.
pub async fn index() -> Response {
    respond("index.html")
}

/// `GET /assets/{path}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    respond(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_unknown_ones_are_404() {
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            assert_eq!(respond(asset.path).status(), StatusCode::OK);
        }
        assert_eq!(respond("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
