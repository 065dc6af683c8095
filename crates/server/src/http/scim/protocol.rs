//! The SCIM protocol's own syntax (RFC 7644), parsed here at the edge: the filters identity
//! providers send, and PATCH operations turned into the changes the control plane applies
//! (`pedm_core::scim::{UserChange, MemberChange}`).

use pedm_api::scim::PatchOperation;
use pedm_core::scim::{MemberChange, ScimError, UserChange};

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
