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

/// A filter the endpoint understands: `<attribute> eq "<value>"` (RFC 7644 §3.4.2.2; the
/// one form identity providers send to find a resource before creating it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EqFilter {
    /// Lower-cased attribute name (`username`, `externalid`, `displayname`, `id`).
    pub attribute: String,
    pub value: String,
}

/// Parses a filter; anything but `attr eq "value"` on one of `allowed` is `invalidFilter`.
pub fn parse_filter(filter: &str, allowed: &[&str]) -> Result<EqFilter, ScimError> {
    let bad = |why: &str| ScimError::InvalidFilter(format!("filter {filter:?}: {why}"));
    let f = filter.trim();
    let (attr, rest) = f
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected: attribute eq \"value\""))?;
    let rest = rest.trim_start();
    let (op, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected: attribute eq \"value\""))?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad("only the eq operator is supported"));
    }
    let attribute = attr
        .strip_prefix("urn:ietf:params:scim:schemas:core:2.0:User:")
        .or_else(|| attr.strip_prefix("urn:ietf:params:scim:schemas:core:2.0:Group:"))
        .unwrap_or(attr)
        .to_ascii_lowercase();
    if !allowed.contains(&attribute.as_str()) {
        return Err(bad(&format!(
            "attribute {attr:?} cannot be filtered on (use one of {})",
            allowed.join(", ")
        )));
    }
    let value: String =
        serde_json::from_str(value.trim()).map_err(|_| bad("the value must be a JSON string"))?;
    Ok(EqFilter { attribute, value })
}

/// One PATCH operation (RFC 7644 §3.5.2), as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct PatchOperation {
    pub op: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

fn opt_string(v: &serde_json::Value, what: &str) -> Result<Option<String>, ScimError> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ScimError::InvalidValue(format!("{what} must be a string"))),
    }
}

fn bool_value(v: &serde_json::Value) -> Result<bool, ScimError> {
    match v {
        serde_json::Value::Bool(b) => Ok(*b),
        // Some providers (Azure AD) send "True"/"False".
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::InvalidValue("active must be a boolean".into())),
    }
}

fn user_attr(
    change: &mut UserChange,
    attr: &str,
    v: &serde_json::Value,
    remove: bool,
) -> Result<(), ScimError> {
    match attr.to_ascii_lowercase().as_str() {
        "active" if remove => Err(ScimError::Mutability("active cannot be removed".into())),
        "active" => {
            change.active = Some(bool_value(v)?);
            Ok(())
        }
        "displayname" => {
            change.display_name = Some(if remove {
                None
            } else {
                opt_string(v, "displayName")?
            });
            Ok(())
        }
        "externalid" => {
            change.external_id = Some(if remove {
                None
            } else {
                opt_string(v, "externalId")?
            });
            Ok(())
        }
        "username" => Err(ScimError::Mutability(
            "userName cannot change (pedm does not rename users)".into(),
        )),
        // Attributes pedm does not keep (name, emails, ...) are accepted and ignored.
        _ => Ok(()),
    }
}

/// What a user PATCH asks for.
pub fn user_patch(ops: &[PatchOperation]) -> Result<UserChange, ScimError> {
    let mut change = UserChange::default();
    for o in ops {
        let op = o.op.to_ascii_lowercase();
        let remove = match op.as_str() {
            "add" | "replace" => false,
            "remove" => true,
            _ => {
                return Err(ScimError::InvalidSyntax(format!(
                    "unknown PATCH op {:?}",
                    o.op
                )));
            }
        };
        let null = serde_json::Value::Null;
        match (&o.path, &o.value) {
            (Some(p), v) => {
                let p = p
                    .strip_prefix("urn:ietf:params:scim:schemas:core:2.0:User:")
                    .unwrap_or(p);
                user_attr(&mut change, p, v.as_ref().unwrap_or(&null), remove)?;
            }
            (None, Some(serde_json::Value::Object(m))) if !remove => {
                for (k, v) in m {
                    user_attr(&mut change, k, v, false)?;
                }
            }
            _ => {
                return Err(ScimError::InvalidPath(
                    "a PATCH operation needs a path or an object value".into(),
                ));
            }
        }
    }
    Ok(change)
}

/// The member ids in a `members` value: `[{"value": "id"}, ...]`.
pub fn member_ids(v: &serde_json::Value) -> Result<Vec<String>, ScimError> {
    let bad = || ScimError::InvalidValue("members must be a list of {\"value\": id}".into());
    let list = match v {
        serde_json::Value::Array(a) => a.as_slice(),
        serde_json::Value::Null => &[],
        _ => return Err(bad()),
    };
    list.iter()
        .map(|m| {
            m.get("value")
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(bad)
        })
        .collect()
}

/// What a group PATCH asks for: the member change, and a new external id if any.
pub type GroupPatch = (MemberChange, Option<Option<String>>, Option<String>);

/// Interprets a group PATCH: members added, removed (`members[value eq "id"]` or a value
/// list) or replaced; `externalId`; `displayName` (returned for the rename check).
pub fn group_patch(ops: &[PatchOperation]) -> Result<GroupPatch, ScimError> {
    let mut add = vec![];
    let mut remove = vec![];
    let mut replace: Option<Vec<String>> = None;
    let mut external_id = None;
    let mut display_name = None;
    let null = serde_json::Value::Null;
    for o in ops {
        let op = o.op.to_ascii_lowercase();
        let value = o.value.as_ref().unwrap_or(&null);
        let path = o.path.as_deref().map(|p| {
            p.strip_prefix("urn:ietf:params:scim:schemas:core:2.0:Group:")
                .unwrap_or(p)
        });
        match (op.as_str(), path) {
            (_, Some(p)) if p.to_ascii_lowercase().starts_with("members[") => {
                if op != "remove" {
                    return Err(ScimError::InvalidPath(format!(
                        "{p:?}: only remove takes a member filter"
                    )));
                }
                let inner = p
                    .get(8..p.len().saturating_sub(1))
                    .filter(|_| p.ends_with(']'))
                    .ok_or_else(|| ScimError::InvalidPath(format!("{p:?}")))?;
                let f = parse_filter(inner, &["value"])?;
                remove.push(f.value);
            }
            ("add", Some(p)) if p.eq_ignore_ascii_case("members") => add.extend(member_ids(value)?),
            ("remove", Some(p)) if p.eq_ignore_ascii_case("members") => {
                if value.is_null() {
                    replace = Some(vec![]);
                } else {
                    remove.extend(member_ids(value)?)
                }
            }
            ("replace", Some(p)) if p.eq_ignore_ascii_case("members") => {
                replace = Some(member_ids(value)?);
                add.clear();
                remove.clear();
            }
            ("add" | "replace", Some(p)) if p.eq_ignore_ascii_case("externalId") => {
                external_id = Some(opt_string(value, "externalId")?)
            }
            ("remove", Some(p)) if p.eq_ignore_ascii_case("externalId") => external_id = Some(None),
            ("add" | "replace", Some(p)) if p.eq_ignore_ascii_case("displayName") => {
                display_name = opt_string(value, "displayName")?
            }
            ("add" | "replace", None) => {
                let Some(m) = value.as_object() else {
                    return Err(ScimError::InvalidPath(
                        "a PATCH operation needs a path or an object value".into(),
                    ));
                };
                for (k, v) in m {
                    match k.to_ascii_lowercase().as_str() {
                        "members" if op == "add" => add.extend(member_ids(v)?),
                        "members" => {
                            replace = Some(member_ids(v)?);
                            add.clear();
                            remove.clear();
                        }
                        "externalid" => external_id = Some(opt_string(v, "externalId")?),
                        "displayname" => display_name = opt_string(v, "displayName")?,
                        _ => {}
                    }
                }
            }
            ("add" | "remove" | "replace", Some(p)) => {
                return Err(ScimError::InvalidPath(format!(
                    "{p:?} cannot be changed on a group"
                )));
            }
            _ => {
                return Err(ScimError::InvalidSyntax(format!(
                    "unknown PATCH op {:?} or missing path",
                    o.op
                )));
            }
        }
    }
    let change = match replace {
        Some(mut r) => {
            r.retain(|m| !remove.iter().any(|x| x.eq_ignore_ascii_case(m)));
            r.extend(add);
            MemberChange::Replace(r)
        }
        None => MemberChange::Edit { add, remove },
    };
    Ok((change, external_id, display_name))
}
