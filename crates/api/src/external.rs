//! Wire types of external (vendor) accounts.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use pedm_core::external::ExternalAccount;
pub use pedm_core::service::ExternalReportRow;

/// Create an external account: a user with a sponsor and an expiry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExternalUser {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// An enabled user who is not external and answers for the account.
    pub sponsor: String,
    /// How long from now the account lives (`7d`), at most `limits.external_max`.
    pub expires: String,
}

/// Move an external account's expiry to `expires` from now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendExternalUser {
    /// How long from now the account lives (`7d`), at most `limits.external_max`.
    pub expires: String,
}

/// The user and its external record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExternalUser {
    pub user: crate::User,
    pub external: ExternalAccount,
}
