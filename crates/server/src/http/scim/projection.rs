//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5): which attributes a response
//! carries. Names are case-insensitive, may carry their schema URN
//! (`urn:ietf:params:scim:schemas:core:2.0:User:userName`) and may name a sub-attribute
//! (`members.value`). `id` and `schemas` are always returned (RFC 7643 §2.4, §7).

use pedm_api::scim::{GROUP_SCHEMA, USER_SCHEMA};
use pedm_core::scim::ScimError;
use serde_json::Value;

/// One attribute path: a top-level name and, optionally, a sub-attribute (both lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AttrPath {
    name: String,
    sub: Option<String>,
}

const ALWAYS: &[&str] = &["id", "schemas"];

/// What to keep of each resource in a response.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    include: Vec<AttrPath>,
    exclude: Vec<AttrPath>,
}

fn parse_path(raw: &str) -> Result<AttrPath, ScimError> {
    let t = raw.trim();
    let bare = [USER_SCHEMA, GROUP_SCHEMA]
        .iter()
        .find_map(|urn| {
            t.get(..urn.len())
                .filter(|head| head.eq_ignore_ascii_case(urn))
                .and_then(|_| t[urn.len()..].strip_prefix(':'))
        })
        .unwrap_or(t)
        .to_ascii_lowercase();
    let (name, sub) = match bare.split_once('.') {
        Some((n, s)) => (n.to_string(), Some(s.to_string())),
        None => (bare, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$')
    };
    if !valid(&name) || sub.as_deref().is_some_and(|s| !valid(s)) {
        return Err(ScimError::InvalidValue(format!(
            "{raw:?} is not an attribute name"
        )));
    }
    Ok(AttrPath { name, sub })
}

fn parse_list<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<AttrPath>, ScimError> {
    items
        .filter(|s| !s.trim().is_empty())
        .map(parse_path)
        .collect()
}

impl Projection {
    /// From query parameters: comma-separated lists.
    pub fn from_query(
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Projection, ScimError> {
        Self::new(
            attributes
                .map(|a| a.split(',').collect())
                .unwrap_or_default(),
            excluded.map(|e| e.split(',').collect()).unwrap_or_default(),
        )
    }

    /// From a `/.search` body: arrays of names.
    pub fn new(attributes: Vec<&str>, excluded: Vec<&str>) -> Result<Projection, ScimError> {
        let p = Projection {
            include: parse_list(attributes.into_iter())?,
            exclude: parse_list(excluded.into_iter())?,
        };
        if !p.include.is_empty() && !p.exclude.is_empty() {
            return Err(ScimError::InvalidValue(
                "attributes and excludedAttributes cannot be given together".into(),
            ));
        }
        Ok(p)
    }

    /// Applies the projection to one resource (a JSON object).
    pub fn apply(&self, resource: &mut Value) {
        let Some(obj) = resource.as_object_mut() else {
            return;
        };
        let keys: Vec<String> = obj.keys().cloned().collect();
        for key in keys {
            let lower = key.to_ascii_lowercase();
            if ALWAYS.contains(&lower.as_str()) {
                continue;
            }
            if !self.include.is_empty() {
                let named: Vec<&AttrPath> =
                    self.include.iter().filter(|p| p.name == lower).collect();
                if named.is_empty() {
                    obj.remove(&key);
                } else if named.iter().all(|p| p.sub.is_some()) {
                    let keep: Vec<&str> = named.iter().filter_map(|p| p.sub.as_deref()).collect();
                    if let Some(v) = obj.get_mut(&key) {
                        retain_subs(v, |s| keep.contains(&s));
                    }
                }
            } else {
                for p in self.exclude.iter().filter(|p| p.name == lower) {
                    match &p.sub {
                        None => {
                            obj.remove(&key);
                        }
                        Some(sub) => {
                            if let Some(v) = obj.get_mut(&key) {
                                retain_subs(v, |s| s != sub);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Keeps, in a complex value or in each element of a multi-valued one, the sub-attributes
/// whose lowercase name passes `keep`.
fn retain_subs(v: &mut Value, keep: impl Fn(&str) -> bool) {
    let one = |o: &mut serde_json::Map<String, Value>| {
        o.retain(|k, _| keep(&k.to_ascii_lowercase()));
    };
    match v {
        Value::Object(o) => one(o),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(one),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group() -> Value {
        json!({
            "schemas": [GROUP_SCHEMA], "id": "ops", "displayName": "ops",
            "externalId": "x1",
            "members": [{"value": "alice", "$ref": "/scim/v2/Users/alice"}],
            "meta": {"resourceType": "Group"},
        })
    }

    #[test]
    fn attributes_keep_only_what_is_named_and_the_always_returned() {
        let mut g = group();
        Projection::from_query(
            Some("urn:ietf:params:scim:schemas:core:2.0:Group:DISPLAYNAME"),
            None,
        )
        .unwrap()
        .apply(&mut g);
        assert_eq!(
            g,
            json!({"schemas": [GROUP_SCHEMA], "id": "ops", "displayName": "ops"})
        );
        let mut g = group();
        Projection::from_query(Some("members.value"), None)
            .unwrap()
            .apply(&mut g);
        assert_eq!(g["members"], json!([{"value": "alice"}]));
        assert!(g.get("externalId").is_none());
    }

    #[test]
    fn excluded_attributes_drop_what_is_named_but_never_id() {
        let mut g = group();
        Projection::from_query(None, Some("members,id,externalId"))
            .unwrap()
            .apply(&mut g);
        assert!(g.get("members").is_none() && g.get("externalId").is_none());
        assert_eq!(g["id"], "ops");
        let mut g = group();
        Projection::from_query(None, Some("members.$ref"))
            .unwrap()
            .apply(&mut g);
        assert_eq!(g["members"], json!([{"value": "alice"}]));
    }

    #[test]
    fn bad_names_and_both_lists_are_refused() {
        assert!(Projection::from_query(Some("a b"), None).is_err());
        assert!(Projection::from_query(Some("members."), None).is_err());
        assert!(Projection::from_query(Some("id"), Some("members")).is_err());
    }
}
