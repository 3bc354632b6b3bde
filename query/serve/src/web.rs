//! The web page: HTML, script and style embedded in the binary (no build step, no CDN).

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
pub(crate) async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /static/{file}`: its script and style.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file("text/javascript; charset=utf-8", APP_JS),
        "style.css" => file("text/css; charset=utf-8", STYLE_CSS),
        _ => ApiError::not_found(format!("no file {name:?}")).into_response(),
    }
}
