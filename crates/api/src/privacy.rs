//! Wire types of data subjects' rights (`/api/v1/privacy/...`): see `pedm_core::privacy`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use pedm_core::privacy::{Erasure, LegalHold, PrivacyStatus};

/// `POST /privacy/erase` and `POST /privacy/hold`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectAct {
    /// The data subject (a user name).
    pub user: String,
    /// Why (the request or case this answers).
    pub reason: String,
}

/// `POST /privacy/release`: lifts a legal hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHold {
    pub user: String,
}
