//! Compliance evidence bundles (`GET /api/v1/reports/evidence`): the files, written to a
//! directory by `pedm report evidence` and checked offline by `pedm report verify-bundle`
//! (`pedm_audit::bundle`).

use crate::client::{ApiError, Client};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /reports/evidence?framework=soc2&period=2026-Q3`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvidenceQuery {
    /// `soc2`, `hipaa` or `gdpr`.
    pub framework: String,
    /// A quarter (`2026-Q3`), a month (`2026-07`) or a year (`2026`), UTC.
    pub period: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BundleFile {
    /// A plain file name (never a path).
    pub name: String,
    pub content: String,
}

/// Every file of a bundle; `manifest.json` and `manifest.sig` among them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceBundle {
    pub files: Vec<BundleFile>,
}

impl Client {
    pub async fn evidence_bundle(&self, q: &EvidenceQuery) -> Result<EvidenceBundle, ApiError> {
        self.get_q("/reports/evidence", q).await
    }
}
