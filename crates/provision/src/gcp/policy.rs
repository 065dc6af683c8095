//! Edits of an IAM policy as Google returns it (`{"version", "etag", "bindings": [{"role",
//! "members", "condition"}], …}`), kept as JSON so that fields pedm does not know survive a
//! read-modify-write untouched. Nothing here talks to Google.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// An IAM policy as Google returned it (a JSON object).
pub(super) type Policy = Map<String, Value>;

/// The CEL condition that ends a grant's binding at `end`: Google itself stops honouring the
/// binding then, even if pedm is down.
pub(super) fn expression(end: Timestamp) -> String {
    format!("request.time < timestamp(\"{}\")", rfc3339(end))
}

/// `end` in RFC 3339 with `Z` (fractional seconds only when there are any).
pub(super) fn rfc3339(end: Timestamp) -> String {
    end.to_string()
}

/// The end of a condition written by [`expression`] (or any `request.time <
/// timestamp("…")` in it); `None` when it has none.
pub(super) fn condition_end(condition: &Value) -> Option<Timestamp> {
    let expr = condition.get("expression")?.as_str()?;
    let rest = expr.split("request.time < timestamp(\"").nth(1)?;
    let (ts, _) = rest.split_once("\")")?;
    ts.parse().ok()
}

/// Whether a binding ends by itself: it has a condition on `request.time <`.
pub(super) fn expires(binding: &Value) -> bool {
    binding
        .get("condition")
        .and_then(|c| c.get("expression"))
        .and_then(Value::as_str)
        .is_some_and(|e| e.contains("request.time <"))
}

fn role_of(b: &Value) -> &str {
    b.get("role").and_then(Value::as_str).unwrap_or("")
}

fn title_of(b: &Value) -> Option<&str> {
    b.get("condition")?.get("title")?.as_str()
}

fn has_member(b: &Value, member: &str) -> bool {
    b.get("members")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x.as_str() == Some(member)))
}

fn bindings(policy: &Policy) -> &[Value] {
    policy
        .get("bindings")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The policy's bindings, made an empty list when it has none.
fn bindings_mut(policy: &mut Policy) -> &mut Vec<Value> {
    let entry = policy.entry("bindings").or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    match entry {
        Value::Array(b) => b,
        // Made an array just above.
        _ => unreachable!("bindings is an array"),
    }
}

/// A grant's conditional binding: `role`, holding `member`, its condition titled `title`.
pub(super) fn find_grant<'a>(
    policy: &'a Policy,
    role: &str,
    member: &str,
    title: &str,
) -> Option<&'a Value> {
    bindings(policy)
        .iter()
        .find(|b| role_of(b) == role && title_of(b) == Some(title) && has_member(b, member))
}

/// What a grant's binding says.
pub(super) struct GrantBinding<'a> {
    pub role: &'a str,
    pub member: &'a str,
    pub title: &'a str,
    pub description: String,
    pub expression: String,
}

/// Puts `want` in the policy, or brings an existing binding of the grant to `want`'s
/// condition; whether anything changed. Other bindings and members are left alone.
pub(super) fn put_grant(policy: &mut Policy, want: &GrantBinding<'_>) -> bool {
    let condition = json!({
        "title": want.title,
        "description": want.description,
        "expression": want.expression,
    });
    let existing = bindings_mut(policy).iter_mut().find(|b| {
        role_of(b) == want.role && title_of(b) == Some(want.title) && has_member(b, want.member)
    });
    let changed = match existing {
        Some(b) => {
            let same = b
                .get("condition")
                .and_then(|c| c.get("expression"))
                .and_then(Value::as_str)
                == Some(want.expression.as_str());
            if !same {
                b["condition"] = condition;
            }
            !same
        }
        None => {
            bindings_mut(policy).push(json!({
                "role": want.role,
                "members": [want.member],
                "condition": condition,
            }));
            true
        }
    };
    if changed {
        // Conditional bindings need policy version 3; Google refuses them otherwise.
        policy.insert("version".into(), json!(3));
    }
    changed
}

/// Removes `member` from the bindings `pick` selects, dropping bindings left without
/// members; whether anything changed.
fn remove_member(policy: &mut Policy, member: &str, pick: impl Fn(&Value) -> bool) -> bool {
    let list = bindings_mut(policy);
    let mut changed = false;
    for b in list.iter_mut().filter(|b| pick(b)) {
        if let Some(Value::Array(m)) = b.get_mut("members") {
            let before = m.len();
            m.retain(|x| x.as_str() != Some(member));
            changed |= m.len() != before;
        }
    }
    if changed {
        list.retain(|b| {
            b.get("members")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty())
        });
    }
    changed
}

/// Takes a grant's conditional binding away (only that one); whether it was there.
pub(super) fn remove_grant(policy: &mut Policy, role: &str, member: &str, title: &str) -> bool {
    remove_member(policy, member, |b| {
        role_of(b) == role && title_of(b) == Some(title)
    })
}

/// Takes `member` out of the bindings of `role` that do not expire (what discovery reports);
/// whether it was in one.
pub(super) fn remove_standing(policy: &mut Policy, role: &str, member: &str) -> bool {
    remove_member(policy, member, |b| role_of(b) == role && !expires(b))
}

/// `(member, role)` of every binding of a role `privileged` selects that does not expire.
pub(super) fn standing(
    policy: &Policy,
    privileged: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for b in bindings(policy) {
        let role = role_of(b);
        if role.is_empty() || !privileged(role) || expires(b) {
            continue;
        }
        for m in b
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            found.push((m.to_string(), role.to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Policy {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn want<'a>(member: &'a str, title: &'a str, end: Timestamp) -> GrantBinding<'a> {
        GrantBinding {
            role: "roles/compute.admin",
            member,
            title,
            description: "pedm grant".into(),
            expression: expression(end),
        }
    }

    #[test]
    fn the_condition_ends_at_the_grant_end() {
        let end: Timestamp = "2027-03-04T05:06:07Z".parse().unwrap();
        assert_eq!(
            expression(end),
            "request.time < timestamp(\"2027-03-04T05:06:07Z\")"
        );
        let precise: Timestamp = "2027-03-04T05:06:07.25Z".parse().unwrap();
        let cond = json!({"expression": expression(precise)});
        assert_eq!(condition_end(&cond), Some(precise));
        assert_eq!(condition_end(&json!({"expression": "true"})), None);
        assert!(expires(&json!({"condition": cond})));
        assert!(!expires(&json!({"role": "roles/owner"})));
        assert!(!expires(
            &json!({"condition": {"expression": "resource.name.startsWith(\"x\")"}})
        ));
    }

    #[test]
    fn edits_keep_everything_else() {
        let end: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let mut p = obj(json!({
            "version": 1,
            "etag": "BwX1",
            "auditConfigs": [{"service": "allServices"}],
            "bindings": [
                {"role": "roles/owner", "members": ["user:eve@example.com", "user:ops@example.com"]},
                {"role": "roles/compute.admin", "members": ["group:sre@example.com"]},
            ]
        }));
        assert!(put_grant(
            &mut p,
            &want("user:alice@example.com", "g1", end)
        ));
        assert!(!put_grant(
            &mut p,
            &want("user:alice@example.com", "g1", end)
        ));
        assert_eq!(p["version"], 3);
        assert!(find_grant(&p, "roles/compute.admin", "user:alice@example.com", "g1").is_some());
        // Extending rewrites the condition in place.
        let later: Timestamp = "2027-01-02T00:00:00Z".parse().unwrap();
        assert!(put_grant(
            &mut p,
            &want("user:alice@example.com", "g1", later)
        ));
        let b = find_grant(&p, "roles/compute.admin", "user:alice@example.com", "g1").unwrap();
        assert_eq!(condition_end(&b["condition"]), Some(later));
        assert_eq!(p["bindings"].as_array().unwrap().len(), 3);
        // Removing the grant leaves the unconditional binding of the same role alone.
        assert!(remove_grant(
            &mut p,
            "roles/compute.admin",
            "user:alice@example.com",
            "g1"
        ));
        assert!(!remove_grant(
            &mut p,
            "roles/compute.admin",
            "user:alice@example.com",
            "g1"
        ));
        assert_eq!(p["bindings"].as_array().unwrap().len(), 2);
        assert_eq!(p["auditConfigs"][0]["service"], "allServices");
        assert_eq!(p["etag"], "BwX1");
        // Standing removal takes one member out; the binding stays for the other.
        assert!(remove_standing(
            &mut p,
            "roles/owner",
            "user:eve@example.com"
        ));
        assert_eq!(p["bindings"][0]["members"], json!(["user:ops@example.com"]));
        assert!(remove_standing(
            &mut p,
            "roles/compute.admin",
            "group:sre@example.com"
        ));
        assert_eq!(p["bindings"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn discovery_reports_only_bindings_that_do_not_expire() {
        let end: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let p = obj(json!({"bindings": [
            {"role": "roles/owner", "members": ["user:eve@example.com"]},
            {"role": "roles/viewer", "members": ["user:vic@example.com"]},
            {"role": "roles/iam.securityAdmin", "members": ["user:sam@example.com"],
             "condition": {"title": "x", "expression": "resource.type == \"x\""}},
            {"role": "roles/editor", "members": ["user:alice@example.com"],
             "condition": {"title": "g1", "expression": expression(end)}},
        ]}));
        let found = standing(&p, |r| r != "roles/viewer");
        assert_eq!(
            found,
            vec![
                (
                    "user:eve@example.com".to_string(),
                    "roles/owner".to_string()
                ),
                (
                    "user:sam@example.com".to_string(),
                    "roles/iam.securityAdmin".to_string()
                ),
            ]
        );
        assert!(standing(&obj(json!({"etag": "x"})), |_| true).is_empty());
    }
}
