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

/// A group that a SCIM client manages: its membership is the identity provider's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimGroupLink {
    pub group: String,
    pub client: String,
    pub external_id: Option<String>,
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
    /// Creates or replaces the link of a group (NotFound if the group is absent).
    LinkGroup(ScimGroupLink),
    /// Releases a group from its client (no-op if not linked).
    UnlinkGroup { group: String },
}

/// The prefix of a SCIM client's bearer token: `pedmscim_<id>_<secret>`. An API token
/// (`pedm_…`) never parses as one, nor this as an API token.
pub const TOKEN_PREFIX: &str = "pedmscim_";

/// A freshly minted SCIM token (shown once).
pub fn mint_token() -> crate::token::MintedToken {
    let m = crate::token::mint();
    let token = m.token.replacen(crate::token::PREFIX, TOKEN_PREFIX, 1);
    crate::token::MintedToken { token, ..m }
}

/// Splits a presented SCIM token into (id, secret); `None` if it is not of that form.
pub fn parse_token(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty()).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_and_api_tokens_do_not_mix() {
        let t = mint_token();
        let (id, secret) = parse_token(&t.token).expect("parses");
        assert_eq!(id, t.id);
        assert!(crate::token::verify(secret, &t.secret_hash));
        assert!(crate::token::parse(&t.token).is_none());
        let api = crate::token::mint();
        assert!(parse_token(&api.token).is_none());
    }
}

/// An authenticated SCIM client (the name its token was created with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimClient {
    pub token_id: String,
    pub name: String,
}

impl ScimClient {
    /// The actor its changes are recorded under: `scim:<name>`, holding no rights.
    pub fn actor(&self) -> crate::model::Actor {
        crate::model::Actor {
            user: format!("scim:{}", self.name),
            admin: false,
            groups: vec![],
            token_id: None,
            external: false,
            sponsor: None,
            workload: None,
            via_agent: false,
        }
    }
}

/// What the SCIM endpoint refuses, with the RFC 7644 `scimType` each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    #[error("{0}")]
    Uniqueness(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    InvalidFilter(String),
    #[error("{0}")]
    InvalidSyntax(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    Mutability(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid SCIM token")]
    Unauthenticated,
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error(transparent)]
    Core(#[from] crate::Error),
}

impl ScimError {
    /// HTTP status and `scimType` (RFC 7644 §3.12).
    pub fn status(&self) -> (u16, Option<&'static str>) {
        match self {
            ScimError::Uniqueness(_) => (409, Some("uniqueness")),
            ScimError::InvalidValue(_) => (400, Some("invalidValue")),
            ScimError::InvalidFilter(_) => (400, Some("invalidFilter")),
            ScimError::InvalidSyntax(_) => (400, Some("invalidSyntax")),
            ScimError::InvalidPath(_) => (400, Some("invalidPath")),
            ScimError::Mutability(_) => (400, Some("mutability")),
            ScimError::NotFound(_) => (404, None),
            ScimError::Unauthenticated => (401, None),
            ScimError::NotImplemented(_) => (501, None),
            ScimError::Core(e) => match e {
                crate::Error::Invalid { .. } | crate::Error::Unprocessable { .. } => {
                    (400, Some("invalidValue"))
                }
                crate::Error::NotFound(_) => (404, None),
                crate::Error::AlreadyExists(_) => (409, Some("uniqueness")),
                crate::Error::Conflict(_) => (409, None),
                crate::Error::Unauthenticated(_) => (401, None),
                crate::Error::Forbidden(_) => (403, None),
                crate::Error::Store(_) | crate::Error::Internal(_) => (500, None),
                crate::Error::Upstream(_) => (502, None),
            },
        }
    }
}

/// A managed user as the SCIM endpoint shows it.
#[derive(Debug, Clone)]
pub struct ScimUserView {
    pub user: crate::model::User,
    pub link: ScimLink,
    pub groups: Vec<String>,
}

/// A managed group as the SCIM endpoint shows it.
#[derive(Debug, Clone)]
pub struct ScimGroupView {
    pub group: crate::model::Group,
    pub link: ScimGroupLink,
}

/// What a PUT or PATCH changes on a user: `None` leaves a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    pub display_name: Option<Option<String>>,
    pub external_id: Option<Option<String>>,
    pub active: Option<bool>,
}

/// What a PUT or PATCH changes on a group's members (ids = user names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Replace(Vec<String>),
    Edit {
        add: Vec<String>,
        remove: Vec<String>,
    },
}
