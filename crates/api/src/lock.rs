//! Wire types of locks (`/api/v1/locks`): see `pedm_core::lock`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use pedm_core::lock::{Lock, LockKind};

/// `POST /locks`: exactly one of `user` and `host`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How long it holds (`1h`, at most 30 days).
    pub duration: String,
    /// Why (shown to whoever is stopped, and in the audit log).
    pub reason: String,
}

/// `POST /sessions/{id}/kill`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSession {
    /// Why (shown on the session's terminal and in its record).
    pub reason: String,
}

/// `GET /locks?all=true`: lifted and expired ones too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LockQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}
