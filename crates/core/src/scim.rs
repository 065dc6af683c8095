//! SCIM provisioning (RFC 7643/7644): the clients (identity providers) that push users, with
//! their own token kind, and the users they manage.
//!
//! A SCIM token lives in its own table: the normal API never finds it (it authenticates
//! nothing there), and `/scim` accepts nothing else. A user pushed by SCIM is an ordinary
//! user with a link (`ScimLink`) naming the client; users are matched by `userName` = pedm
//! user name, so a user first created by OIDC login or by an admin is adopted by the first
//! SCIM create of that name (admins excepted). Deprovisioning (`active: false`, DELETE)
//! disables the user and revokes their live grants.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A SCIM client's token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScimToken {
    pub id: String,
    /// The client's name (`okta`): events it causes are by `scim:<name>`.
    pub name: String,
    #[serde(skip)]
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
    pub created_by: String,
    pub revoked_at: Option<Timestamp>,
}

/// A user that a SCIM client manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimLink {
    pub user: String,
    pub client: String,
    pub external_id: Option<String>,
    /// Set by a SCIM DELETE: the user is disabled and no longer listed.
    pub deleted_at: Option<Timestamp>,
}

/// Row changes about SCIM clients and their users (see [`crate::store::Write::Scim`]).
#[derive(Debug, Clone)]
pub enum ScimWrite {
    /// Fails with AlreadyExists if the id is taken.
    InsertToken(ScimToken),
    /// Fails with Conflict if already revoked, NotFound if absent.
    RevokeToken { id: String, at: Timestamp },
    /// Creates or replaces the link of a user (NotFound if the user is absent).
    Link(ScimLink),
}
