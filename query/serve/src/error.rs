//! Errors as HTTP answers: RFC 9457 problem documents (`type`, `title`, `status`, `detail`) that
//! also carry infini-gram's `error` field, so both kinds of client read them.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The error's type, in the response's extensions (for the metrics and the log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorKind(pub &'static str);

/// An error answer: a status, a short machine-readable type and a message in words.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The problem type (`bad-request`, `not-found`, `server-overloaded`, `timeout`, …).
    pub kind: &'static str,
    /// What went wrong, in words.
    pub message: String,
}

impl ApiError {
    /// An error of any status.
    pub fn new(status: StatusCode, kind: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            kind,
            message,
        }
    }

    /// 400: the request cannot be answered as written.
    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// 404: no such index, document or endpoint.
    pub fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 503: too many requests running and waiting.
    pub fn overloaded(message: String) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server-overloaded",
            message,
        )
    }

    /// 503: the request ran past the time limit.
    pub fn timeout(message: String) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
    }

    /// 500: the server's fault.
    pub fn internal(message: String) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 500: a query run without a budget (see `App::run_within`) gave no answer.
    pub fn no_answer() -> ApiError {
        ApiError::internal("a query without a budget gave no answer (a bug in familiar)".into())
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<familiar::Error> for ApiError {
    fn from(e: familiar::Error) -> ApiError {
        use familiar::Error as E;
        let message = e.to_string();
        match e {
            E::Query(_) | E::Config(_) | E::Input { .. } => ApiError::bad_request(message),
            E::Magic { .. }
            | E::Version { .. }
            | E::Size { .. }
            | E::Checksum { .. }
            | E::Corrupt { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt-index", message)
            }
            _ => ApiError::internal(message),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "request-too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            _ => "bad-request",
        };
        let message = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "expected a JSON body with the header Content-Type: application/json".to_string()
            }
            _ => format!("the request body is not valid JSON: {}", r.body_text()),
        };
        ApiError::new(status, kind, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("bad query string: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": self.kind,
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.message,
            "error": self.message,
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r.extensions_mut().insert(ErrorKind(self.kind));
        r
    }
}
