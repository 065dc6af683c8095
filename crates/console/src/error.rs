//! What a page answers when it cannot do what was asked: a redirect to sign in, or a page
//! naming the problem with the status the API would give.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub enum PageError {
    /// No session, or it ended: go and sign in.
    SignIn,
    /// A malformed form or query.
    Invalid(String),
    /// Something this needs cannot be reached now (why).
    Unavailable(String),
    Core(pedm_core::Error),
}

impl From<pedm_core::Error> for PageError {
    fn from(e: pedm_core::Error) -> Self {
        PageError::Core(e)
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Core(pedm_core::Error::Internal(format!("template: {e}")))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// The status of a core error, as the API gives it.
pub fn status_of(e: &pedm_core::Error) -> StatusCode {
    use pedm_core::Error as E;
    match e {
        E::Invalid { .. } => StatusCode::BAD_REQUEST,
        E::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        E::Forbidden(_) => StatusCode::FORBIDDEN,
        E::Conflict(_) | E::AlreadyExists(_) => StatusCode::CONFLICT,
        E::Store(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::Upstream(_) => StatusCode::BAD_GATEWAY,
    }
}

/// What a person may read of a core error: never storage internals.
pub fn message_of(e: &pedm_core::Error) -> String {
    match e {
        pedm_core::Error::Store(_) | pedm_core::Error::Internal(_) => {
            tracing::error!(error = %e, "console: internal error");
            "something went wrong on the server; it has been logged".into()
        }
        e => e.to_string(),
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::SignIn => {
                return (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/sign-in")])
                    .into_response();
            }
            PageError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
            PageError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            PageError::Core(e) => (status_of(&e), message_of(&e)),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: &message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

pub type PageResult<T> = Result<T, PageError>;
