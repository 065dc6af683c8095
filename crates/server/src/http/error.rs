//! Every failure leaves as `{"error": {"code", "message"}}` with a fitting status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pedm_api::{ErrorBody, ErrorDetail};
use pedm_core::Error;

#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
}

impl From<Error> for ApiErr {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Conflict(_) | Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        };
        let message = match &e {
            // Storage details can name tables or hosts; log them, don't show them.
            Error::Store(inner) => {
                tracing::error!(error = %inner, "storage failure");
                "storage is unavailable; try again".to_string()
            }
            Error::Internal(inner) => {
                tracing::error!(error = %inner, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        ApiErr::new(status, e.code(), message)
    }
}

impl From<JsonRejection> for ApiErr {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiErr::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid",
                "request body must be JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiErr::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is larger than the server accepts",
                )
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiErr::invalid(format!("malformed JSON: {}", inner_message(&e.body_text())))
            }
            JsonRejection::JsonDataError(e) => ApiErr::invalid(format!(
                "invalid request body: {}",
                inner_message(&e.body_text())
            )),
            other => ApiErr::new(other.status(), "invalid", other.body_text()),
        }
    }
}

/// axum prefixes serde's message with its own sentence; keep the part that names the field.
fn inner_message(s: &str) -> String {
    s.split_once(": ")
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| s.to_string())
}

impl From<QueryRejection> for ApiErr {
    fn from(r: QueryRejection) -> Self {
        ApiErr::invalid(format!("invalid query: {}", inner_message(&r.body_text())))
    }
}

impl From<PathRejection> for ApiErr {
    fn from(r: PathRejection) -> Self {
        ApiErr::invalid(format!("invalid path: {}", inner_message(&r.body_text())))
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Storage or a dependency is away for now (a database failing over, a restart):
            // clients should come back rather than give up.
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiErr>;
