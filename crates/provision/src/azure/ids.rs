//! Azure ids: ARM scopes, role definition ids, GUIDs, built-in role names.

use uuid::Uuid;

use crate::ProvisionError;

pub(super) const ASSIGNMENTS: &str = "/providers/Microsoft.Authorization/roleAssignments";
pub(super) const DEFINITIONS: &str = "/providers/Microsoft.Authorization/roleDefinitions/";

/// Built-in role names `privileged_roles` may use instead of their GUIDs.
pub(super) const BUILT_IN: &[(&str, &str)] = &[
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
    (
        "User Access Administrator",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    ),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
    (
        "Role Based Access Control Administrator",
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
    ),
    ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
];

/// A GUID, lower-cased (ARM and Graph ids compare case-insensitively).
pub(super) fn guid(what: &str, s: &str) -> Result<String, ProvisionError> {
    // Uuid::parse_str also takes braces and URNs; Azure's ids are the 36-character form.
    match Uuid::parse_str(s) {
        Ok(u) if s.len() == 36 => Ok(u.hyphenated().to_string()),
        _ => Err(ProvisionError::invalid(format!(
            "{what} {s:?} is not a GUID"
        ))),
    }
}

/// A role definition GUID from a GUID or a full role definition id
/// (`[/subscriptions/<id>]/providers/Microsoft.Authorization/roleDefinitions/<guid>`).
pub(super) fn role_definition(s: &str) -> Result<String, ProvisionError> {
    let bad = || {
        ProvisionError::invalid(format!(
            "role definition {s:?} is neither a GUID nor \
             /subscriptions/<id>/providers/Microsoft.Authorization/roleDefinitions/<guid>"
        ))
    };
    if !s.starts_with('/') {
        return guid("role definition", s);
    }
    let lower = s.to_ascii_lowercase();
    let at = lower
        .find(&DEFINITIONS.to_ascii_lowercase())
        .ok_or_else(bad)?;
    let (prefix, id) = (&s[..at], &s[at + DEFINITIONS.len()..]);
    if !prefix.is_empty() {
        let scope = Scope::parse(prefix).map_err(|_| bad())?;
        if scope.0.split('/').count() != 3 {
            return Err(bad());
        }
    }
    guid("role definition", id).map_err(|_| bad())
}

/// A `privileged_roles` entry: a GUID, a full id, or a built-in role name.
pub(super) fn privileged_role(s: &str) -> Result<String, String> {
    if let Some((_, id)) = BUILT_IN.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok(id.to_string());
    }
    role_definition(s).map_err(|_| {
        format!(
            "{s:?} is not a role definition GUID, a role definition id or a built-in role \
             name ({})",
            BUILT_IN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// An ARM scope, canonical: `/subscriptions/<guid>[/resourceGroups/<name>[/providers/…]]`
/// with the keywords and the subscription id in ARM's casing, so a scope compares equal
/// however it was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Scope(pub(super) String);

impl Scope {
    pub(super) fn parse(s: &str) -> Result<Scope, ProvisionError> {
        let bad = |why: &str| {
            ProvisionError::invalid(format!(
                "scope {s:?} is not /subscriptions/<id>[/resourceGroups/<name>[/providers/\
                 <namespace>/<type>/<name>]]: {why}"
            ))
        };
        let Some(rest) = s.strip_prefix('/') else {
            return Err(bad("it must start with /"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || s.len() > 1024 {
            return Err(bad("empty segment"));
        }
        if !parts[0].eq_ignore_ascii_case("subscriptions") || parts.len() < 2 {
            return Err(bad("no subscription"));
        }
        let mut out = format!("/subscriptions/{}", guid("subscription", parts[1])?);
        if parts.len() == 2 {
            return Ok(Scope(out));
        }
        if !parts[2].eq_ignore_ascii_case("resourceGroups") || parts.len() < 4 {
            return Err(bad("expected resourceGroups/<name>"));
        }
        let rg_ok = parts[3].len() <= 90
            && parts[3]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
            && !parts[3].ends_with('.');
        if !rg_ok {
            return Err(bad("not a resource group name"));
        }
        out.push_str("/resourceGroups/");
        out.push_str(parts[3]);
        if parts.len() == 4 {
            return Ok(Scope(out));
        }
        // providers/<namespace>/<type>/<name>[/<type>/<name>…]
        if !parts[4].eq_ignore_ascii_case("providers")
            || parts.len() < 8
            || !parts.len().is_multiple_of(2)
        {
            return Err(bad("expected providers/<namespace>/<type>/<name>"));
        }
        if parts[5..].iter().any(|p| {
            !p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        }) || parts[5..]
            .iter()
            .any(|p| p.eq_ignore_ascii_case("providers"))
        {
            return Err(bad("not a resource"));
        }
        out.push_str("/providers/");
        out.push_str(&parts[5..].join("/"));
        Ok(Scope(out))
    }

    /// The subscription part, `/subscriptions/<guid>`.
    pub(super) fn subscription(&self) -> &str {
        // parse() always starts with "/subscriptions/" + 36 characters.
        &self.0[..51]
    }

    /// The full role definition id ARM takes in a PUT.
    pub(super) fn role_definition_id(&self, role: &str) -> String {
        format!("{}{DEFINITIONS}{role}", self.subscription())
    }

    pub(super) fn assignments_path(&self) -> String {
        format!("{}{ASSIGNMENTS}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";
    const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

    #[test]
    fn scopes_are_checked_and_canonical() {
        let s = Scope::parse(&format!(
            "/SUBSCRIPTIONS/{}/resourcegroups/rg-App",
            SUB.to_uppercase()
        ))
        .unwrap();
        assert_eq!(s.0, format!("/subscriptions/{SUB}/resourceGroups/rg-App"));
        assert_eq!(s.subscription(), format!("/subscriptions/{SUB}"));
        let vm = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        );
        assert_eq!(Scope::parse(&vm).unwrap().0, vm);
        for bad in [
            "subscriptions/x".to_string(),
            "/subscriptions/not-a-guid".into(),
            format!("/subscriptions/{SUB}/"),
            format!("/subscriptions/{SUB}/resourceGroups"),
            format!("/subscriptions/{SUB}/resourceGroups/a b"),
            format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute"),
            format!("/subscriptions/{SUB}/resourceGroups/rg/../x"),
            format!("/subscriptions/{SUB}/resourceGroups/rg?x=1"),
            "/providers/Microsoft.Management/managementGroups/mg".into(),
        ] {
            assert!(Scope::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_definitions_are_guids_or_ids() {
        assert_eq!(role_definition(&OWNER.to_uppercase()).unwrap(), OWNER);
        assert_eq!(
            role_definition(&format!("/subscriptions/{SUB}{DEFINITIONS}{OWNER}")).unwrap(),
            OWNER
        );
        assert_eq!(
            role_definition(&format!("{DEFINITIONS}{OWNER}")).unwrap(),
            OWNER
        );
        for bad in [
            "Owner".to_string(),
            format!("{{{OWNER}}}"),
            format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{OWNER}"
            ),
            format!("/subscriptions/{SUB}/resourceGroups/rg{DEFINITIONS}{OWNER}"),
        ] {
            assert!(role_definition(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            privileged_role("user access administrator").unwrap(),
            "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
        );
        assert!(privileged_role("Global Administrator").is_err());
    }
}
