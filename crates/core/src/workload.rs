//! Workload identities: CI jobs and services that sign in with the OpenID Connect token their
//! platform already gives them (GitHub Actions, GitLab CI, a Kubernetes service-account
//! issuer), exchanged for a short-lived pedm token (RFC 8693), instead of with a stored secret.
//!
//! The exchanged token carries what the platform asserted; every request made with it shows
//! it to policy as `principal.workload` (`trust`, `issuer`, `subject`, and where the token has
//! them `repository`, `git_ref`, `environment`, `workflow`, `namespace`, `service_account`).

use serde::{Deserialize, Serialize};

/// Longest claim value accepted into an identity.
pub const MAX_CLAIM_CHARS: usize = 256;

/// What a workload's platform asserted about it, as checked by pedmd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkloadIdentity {
    /// The `[[auth.workload]]` trust that accepted the token.
    pub trust: String,
    /// The token's issuer (`iss`).
    pub issuer: String,
    /// The token's subject (`sub`), e.g. `repo:org/app:ref:refs/heads/main`.
    pub subject: String,
    /// The source repository (GitHub `repository`, GitLab `project_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The git ref built (GitHub and GitLab `ref`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The deployment environment (`environment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The workflow (GitHub `workflow_ref` / `job_workflow_ref`, GitLab `ci_config_ref_uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Whether `v` may be kept as a claim value: a visible character at least, at most
/// [`MAX_CLAIM_CHARS`], no control characters (`pedm_core::syntax::LINE`).
pub fn valid_claim(v: &str) -> bool {
    !v.trim().is_empty() && v.chars().count() <= MAX_CLAIM_CHARS && !v.chars().any(char::is_control)
}
