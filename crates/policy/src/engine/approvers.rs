//! Which groups decide approvals (for two-person control of changes to who approves).

use super::Engine;
use crate::query::Action;
use std::collections::BTreeSet;

impl Engine {
    /// The groups that decide who approves: those named in `@approvals` tiers, and those any
    /// permit mentions (in its scope or its conditions) whose actions include `approve`,
    /// `manage_users` or `manage_policies` (or every action). Adding someone to one of these
    /// changes who may approve requests or policy changes.
    /// `None`: it cannot be told, so every group counts as one.
    pub fn approver_groups(&self) -> Option<BTreeSet<String>> {
        const DECIDING: [Action; 3] =
            [Action::Approve, Action::ManageUsers, Action::ManagePolicies];
        let mut groups = BTreeSet::new();
        for e in self.policies.iter().filter(|e| !e.forbid) {
            for t in e.terms.tiers.iter().flatten() {
                groups.extend(t.group.clone());
            }
            let deciding = e
                .actions
                .as_ref()
                .is_none_or(|a| a.iter().any(|a| DECIDING.contains(a)));
            if deciding {
                // A policy that cannot be read back as JSON could name any group: then every
                // group decides approvals (fail closed).
                let json = e.policy.to_json().ok()?;
                collect_groups(&json, &mut groups);
            }
        }
        Some(groups)
    }
}

/// Every `Group` entity a policy's JSON form names (`{"type": "Pedm::Group", "id": ...}`, in
/// its scope or as an `__entity` literal of a condition).
fn collect_groups(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(serde_json::Value::String(ty)), Some(serde_json::Value::String(id))) =
                (m.get("type"), m.get("id"))
                && (ty == "Group" || ty.ends_with("::Group"))
            {
                out.insert(id.clone());
            }
            m.values().for_each(|v| collect_groups(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_groups(v, out)),
        _ => {}
    }
}
