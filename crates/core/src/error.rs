//! The errors the domain reports. Transports map each kind to their own status codes.

use crate::store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that can never succeed as given: names the field and what is wrong.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// Well-formed input the server cannot act on, for a reason no schema can state: a policy
    /// that does not parse, a template naming an unknown parameter, a duration beyond a limit
    /// that is configured or depends on the object.
    #[error("unprocessable {field}: {message}")]
    Unprocessable { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    /// No or bad credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed. Always recorded in the audit log.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The thing is not in a state that allows this (already decided, already ended...).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("storage: {0}")]
    Store(#[source] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    /// A system pedm depends on (a target's API) failed or refused: says which and why.
    #[error("upstream: {0}")]
    Upstream(String),
}

impl Error {
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unprocessable {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A stable, machine-readable name for the kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::Unprocessable { .. } => "unprocessable",
            Error::NotFound(_) => "not_found",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::AlreadyExists(_) => "already_exists",
            Error::Store(_) => "storage",
            Error::Internal(_) => "internal",
            Error::Upstream(_) => "upstream",
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::AlreadyExists(m) => Error::AlreadyExists(m),
            StoreError::NotFound(m) => Error::NotFound(m),
            other => Error::Store(other),
        }
    }
}
